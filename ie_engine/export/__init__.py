"""Take-aways of a run: the trained encoder, the curated dataset with provenance, a report.

* :mod:`ie_engine.export.model`: the backbone as a state dict and as TorchScript, with a model
  card (needs torch; imported on use);
* :mod:`ie_engine.export.dataset`: the kept (or top-N) images with a CSV and JSON manifest, a
  license filter and a datasheet;
* :mod:`ie_engine.export.report`: one self-contained HTML page of a run;
* :mod:`ie_engine.export.compare`: several runs' curves overlaid on one page;
* :mod:`ie_engine.export.command`: ``ie export ...``.

Nothing here imports torch at import time except :mod:`~ie_engine.export.model`, so the web
app can build datasets and reports without loading it.
"""
