"""The benchmark of issue 3: targeted exploration against random exploration, side by side.

``ie bench`` runs it (see :mod:`ie_engine.bench.suite`); the parts:

* :mod:`~ie_engine.bench.targets`: the targets (clip-art halves, Tux Paint photos, your own) with
  their relevance maps and held-out corpus ids;
* :mod:`~ie_engine.bench.arms`: one arm (explore, random, target-only, label-set) on one target
  with one seed, and its measurements;
* :mod:`~ie_engine.bench.metrics`: precision, reward AUROC, LOO kNN predictions, McNemar's
  exact test, first-found iterations;
* :mod:`~ie_engine.bench.throughput`: trainer and downloader against bare loops;
* :mod:`~ie_engine.bench.report`: ``summary.json``, the issue's target checks, plots, the
  README table.

Submodules are imported on use (this package's import stays light: ``ie --help`` does not load
torch).
"""
