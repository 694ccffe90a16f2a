"""The ``ie pretrain`` and ``ie bench`` subcommands (argument parsing and dispatch only).

    ie pretrain [--steps N] [--max-images N] [--include-targets]
    ie bench [--quick] [--target NAME|DIR [--relevance-map FILE]] [--out DIR] [--seeds N]
             [--no-scratch] [--jobs N] [--base NAME] [--base-checkpoint FILE] [--base-steps N]
             [--readme README.md] [--report-only]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ie_engine.errors import ConfigError


def add_parsers(sub: Any) -> None:
    """Add ``pretrain`` and ``bench`` to the ``ie`` command's subparsers."""
    p = sub.add_parser("pretrain", help="train the generic base model on the offline corpus")
    p.add_argument("--steps", type=int, default=400, help="optimiser steps (default: 400)")
    p.add_argument("--max-images", type=int, default=None,
                   help="a seeded random subset of the corpus (default: all of it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--include-targets", action="store_true",
                   help="also train on the benchmark targets' own images (default: held out)")
    p.add_argument("--quiet", action="store_true")

    b = sub.add_parser("bench", help="benchmark: explore vs random vs target-only vs label-set")
    b.add_argument("--quick", action="store_true",
                   help="one target, 2 seeds, 3 short iterations (under 10 minutes on 2 cores "
                        "once the base model is cached)")
    b.add_argument("--target", default=None,
                   help="clipart-heldout, tuxpaint-photos, or a folder (one subfolder per class)"
                        " with --relevance-map (default: both built-in targets)")
    b.add_argument("--relevance-map", type=Path, default=None,
                   help="JSON: class name -> list of corpus category prefixes (custom --target)")
    b.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/bench, or runs/bench-quick)")
    b.add_argument("--seeds", type=int, default=None, help="seeds per target (0..N-1)")
    b.add_argument("--iterations", type=int, default=None)
    b.add_argument("--steps", type=int, default=None,
                   help="training steps per iteration (0: the base model stays frozen, so the "
                        "arms differ only in what the policy queries)")
    b.add_argument("--queries", type=int, default=None, help="queries per iteration (M)")
    b.add_argument("--per-query", type=int, default=None, help="results kept per query (Q)")
    b.add_argument("--max-concepts", type=int, default=None,
                   help="N WordNet nouns spread evenly (default: all of them)")
    b.add_argument("--no-scratch", action="store_true", help="skip the arms from scratch")
    b.add_argument("--base", default=None, metavar="NAME",
                   help="the base every arm starts from (`ie bases`; default: offline-ssl, "
                        "`ie pretrain`'s)")
    b.add_argument("--base-checkpoint", type=Path, default=None,
                   help="backbone weights every arm starts from (default: `ie pretrain`'s)")
    b.add_argument("--base-steps", type=int, default=None,
                   help="steps of `ie pretrain`'s base model the arms start from (default: 400; "
                        "a longer base continues a shorter cached one)")
    b.add_argument("--jobs", type=int, default=None,
                   help="runs at a time, each in its own process with one torch thread "
                        "(default: one per core, at most 4)")
    b.add_argument("--keep-runs", action="store_true",
                   help="keep each run's images and checkpoint (large)")
    b.add_argument("--readme", type=Path, default=None,
                   help="rewrite the generated block of this README's Benchmark section")
    b.add_argument("--report-only", action="store_true",
                   help="only rebuild summary.json, plots (and --readme) from finished runs")
    b.add_argument("--carry", type=Path, default=None, metavar="SUMMARY",
                   help="with --report-only: carry into the report the targets of an earlier "
                        "summary.json that have no runs in --out (same run settings only; the "
                        "table says which)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_pretrain(args: argparse.Namespace) -> int:
    from ie_engine.bench.targets import BUILTIN_TARGETS, build_builtin_target
    from ie_engine.cli import ensure_corpus
    from ie_engine.pretrain import PretrainSettings, pretrain_base
    from ie_engine.progress import TqdmProgress
    from ie_engine.search import CorpusIndex

    corpus_dir = args.data_dir / "corpus"
    ensure_corpus(corpus_dir)
    held: frozenset[str] = frozenset()
    if not args.include_targets:
        items = CorpusIndex.load(corpus_dir).items
        for name in BUILTIN_TARGETS:
            spec = build_builtin_target(name, items, args.data_dir / "bench-targets" / name)
            held = held | spec.heldout_ids
    settings = PretrainSettings(steps=args.steps, max_images=args.max_images, seed=args.seed,
                                num_threads=args.threads)
    path = pretrain_base(corpus_dir=corpus_dir, data_dir=args.data_dir, settings=settings,
                         exclude_ids=held, progress=TqdmProgress(quiet=args.quiet), say=_say)
    print(path)
    return 0


def run_bench_command(args: argparse.Namespace) -> int:
    from ie_engine.bench.pool import default_jobs
    from ie_engine.bench.suite import BenchPlan, quick_plan, run_bench, write_report
    from ie_engine.bench.targets import BUILTIN_TARGETS
    from ie_engine.cli import ensure_corpus
    from ie_engine.progress import TqdmProgress

    out: Path = args.out or Path("runs") / ("bench-quick" if args.quick else "bench")
    if args.carry is not None and not args.report_only:
        raise ConfigError("--carry goes with --report-only")
    if args.report_only:
        write_report(out, readme=args.readme, say=_say, carry=args.carry)
        print(out / "summary.json")
        return 0
    plan = quick_plan() if args.quick else BenchPlan()
    custom = None
    if args.target is not None:
        if args.target in BUILTIN_TARGETS:
            plan = replace(plan, targets=(args.target,))
        else:
            if args.relevance_map is None:
                raise ConfigError("a custom --target folder needs --relevance-map FILE")
            custom = (Path(args.target), args.relevance_map)
    if args.seeds is not None:
        seeds = tuple(range(args.seeds))
        plan = replace(plan, seeds={t: seeds for t in plan.seeds}, default_seeds=seeds,
                       scratch_seeds=seeds[: len(plan.scratch_seeds)] or plan.scratch_seeds)
    arm = plan.arm
    arm = replace(
        arm,
        iterations=args.iterations or arm.iterations,
        steps=args.steps if args.steps is not None else arm.steps,
        queries=args.queries or arm.queries,
        per_query=args.per_query or arm.per_query,
        max_concepts=args.max_concepts if args.max_concepts is not None else arm.max_concepts,
        base=args.base or arm.base,
    )
    plan = replace(plan, arm=arm)
    if args.base_steps is not None:
        plan = replace(plan, pretrain=replace(plan.pretrain, steps=args.base_steps))
    if args.no_scratch:
        plan = replace(plan, scratch_arms=(), scratch_seeds=())
    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {args.jobs}")
    corpus_dir = args.data_dir / "corpus"
    ensure_corpus(corpus_dir)
    run_bench(data_dir=args.data_dir, corpus_dir=corpus_dir, out_dir=out, plan=plan,
              custom=custom, base_checkpoint=args.base_checkpoint, keep_runs=args.keep_runs,
              jobs=jobs, readme=args.readme, progress=TqdmProgress(quiet=args.quiet), say=_say)
    print(out / "summary.json")
    return 0


__all__ = ["add_parsers", "run_bench_command", "run_pretrain"]
