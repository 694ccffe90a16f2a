"""``ie export``: take the model, the dataset, a report or a comparison out of run folders.

    ie export model   --run-dir DIR [--out DIR] [--target DIR]
    ie export dataset --run-dir DIR [--out PATH] [--select kept|top|all] [--top N]
                      [--license NAME ...] [--zip] [--target DIR]
    ie export report  --run-dir DIR [--out FILE] [--target DIR]
    ie export compare RUN_DIR RUN_DIR [...] [--out FILE] [--title TEXT]

Outputs go to ``<run-dir>/exports/`` unless ``--out`` says otherwise. ``--target`` (the run's
target folder) names the target in the cards and lets the dataset's leakage check compare every
image with the target's dHashes; without it the verdict is ``not-checked``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ie_engine.export.records import RunData, load_run


def add_parsers(sub: Any) -> None:
    """Add ``export`` (with its four subcommands) to the ``ie`` command's subparsers."""
    x = sub.add_parser("export", help="take-aways: model, dataset, report, comparison")
    xsub = x.add_subparsers(dest="export_command", required=True)

    def with_run(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = xsub.add_parser(name, help=help_text)
        p.add_argument("--run-dir", type=Path, required=True, help="the run folder")
        p.add_argument("--out", type=Path, default=None, help="where to write it")
        p.add_argument("--target", type=Path, default=None,
                       help="the run's target folder (its name in the cards; leakage check)")
        return p

    with_run("model", "the encoder: state dict, TorchScript, model card")
    d = with_run("dataset", "the kept images with a manifest and a datasheet")
    d.add_argument("--select", choices=["kept", "top", "all"], default="kept",
                   help="kept: the replay buffer (default); top: the --top most relevant")
    d.add_argument("--top", type=int, default=500, help="how many for --select top")
    d.add_argument("--license", action="append", default=None,
                   help="keep only this license (repeatable), e.g. public-domain; "
                        "'' for the images without a license")
    d.add_argument("--zip", action="store_true", help="write a zip archive instead of a folder")
    with_run("report", "one self-contained HTML page of the run")
    c = xsub.add_parser("compare", help="overlay two or more runs' curves on one page")
    c.add_argument("run_dirs", type=Path, nargs="+", help="run folders (two or more)")
    c.add_argument("--out", type=Path, default=Path("comparison.html"))
    c.add_argument("--title", default="Runs compared")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _target_info(target: Path | None, run: RunData, size: int) -> list[int] | None:
    """Fill ``run.target`` from the target folder; return its dHashes (None without one)."""
    if target is None:
        return None
    from ie_engine.target import load_target

    loaded = load_target(target, max_pixels=40_000_000, size=size)
    run.target = {"name": target.resolve().name, "images": len(loaded.images),
                  "classes": list(loaded.class_names)}
    return list(loaded.dhashes)


def run_export_command(args: argparse.Namespace) -> int:
    """Dispatch ``ie export ...``; prints the written path on stdout."""
    from ie_engine.export.dataset import DatasetOptions, export_dataset

    cmd = args.export_command
    if cmd == "compare":
        from ie_engine.export.compare import write_comparison

        if len(args.run_dirs) < 2:
            _say("ie export compare: give two or more run folders")
            return 2
        runs = [load_run(d) for d in args.run_dirs]
        print(write_comparison(runs, args.out, title=args.title))
        return 0

    run_dir: Path = args.run_dir
    run = load_run(run_dir)
    download = run.config.get("download", {})
    hashes = _target_info(args.target, run, int(download.get("stored_size", 128)))
    exports = run_dir / "exports"
    if cmd == "model":
        from ie_engine.export.model import export_model

        out = export_model(run_dir, args.out or exports / "model", run=run)
    elif cmd == "dataset":
        options = DatasetOptions(
            selection=args.select, top_n=args.top,
            licenses=frozenset(args.license) if args.license else None, archive=args.zip,
            leak_threshold=int(download.get("dhash_threshold", 4)),
        )
        out = export_dataset(run.images, args.out or exports / "dataset", options,
                             meta=dataset_meta(run), target_hashes=hashes)
    elif cmd == "report":
        from ie_engine.export.report import write_report

        out = write_report(run, args.out or exports / "report.html")
    else:  # argparse allows no other
        raise ValueError(cmd)
    _say(f"ie export {cmd}: wrote {out}")
    print(out)
    return 0


def dataset_meta(run: RunData) -> dict[str, Any]:
    """What the datasheet says of the run."""
    target = run.target
    return {
        "name": run.name,
        "target": (f"{target['name']} ({target.get('images', '?')} images)" if target
                   else "not given"),
        "iterations": run.iterations_done,
        "preset": run.config.get("preset"),
        "mode": run.config.get("mode"),
        "seed": run.config.get("seed"),
    }
