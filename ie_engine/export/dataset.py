"""The curated dataset: the images a run kept, with provenance, as a folder or a zip archive.

Layout (the same inside the archive)::

    images/<sha256>.<ext>    the stored images (RGB, resized), named by content
    manifest.csv             one row per image, the columns of MANIFEST_FIELDS
    manifest.json            {"dataset": what was selected and how, "images": the same rows}
    DATASHEET.md             sources, licenses, counts, how the images were collected

Selection: ``kept`` (the replay buffer: the top share of each iteration by relevance, vetoed
concepts' images removed), ``top`` (the ``top_n`` most relevant of all downloads) or ``all``;
then the license filter. Rows are ordered by relevance, best first (ties by sha256).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ie_engine.export.records import ExportImage, attribution, leak_check

Selection = Literal["kept", "top", "all"]

MANIFEST_FIELDS = (
    "file", "sha256", "dhash", "source_url", "page_url", "title", "engine", "query", "concept",
    "concept_index", "iteration", "relevance", "kept", "license", "license_url", "creator",
    "attribution", "leak_distance", "leak_verdict",
)
"""Manifest columns, in order. ``source_url`` is the image's own URL, ``page_url`` the page
that showed it; ``relevance`` is the image's reward (mean cosine similarity to its nearest
target images, under the final model for the last iteration's images and under the model of
their iteration for the others); ``leak_*`` compare its dHash with the target's."""


@dataclass(frozen=True)
class DatasetOptions:
    selection: Selection = "kept"
    top_n: int = 500
    licenses: frozenset[str] | None = None
    """Keep only these licenses (None: any; ``""``: the images without a license)."""
    archive: bool = False
    """Write ``<out>.zip`` instead of a folder."""
    leak_threshold: int = 4


def select_images(images: Iterable[ExportImage], options: DatasetOptions) -> list[ExportImage]:
    """The images of ``options.selection`` that pass the license filter, best first."""
    ranked = sorted(images, key=lambda i: (-(i.relevance if i.relevance is not None
                                             else float("-inf")), i.sha256))
    if options.selection == "kept":
        chosen = [i for i in ranked if i.kept]
    elif options.selection == "top":
        chosen = ranked[: max(0, options.top_n)]
    elif options.selection == "all":
        chosen = ranked
    else:
        raise ValueError(f"unknown selection {options.selection!r}; choose kept, top or all")
    if options.licenses is not None:
        chosen = [i for i in chosen if i.license in options.licenses]
    return chosen


def manifest_rows(images: list[ExportImage], target_hashes: list[int] | None,
                  threshold: int) -> list[dict[str, Any]]:
    """One manifest row per image, keys in :data:`MANIFEST_FIELDS` order."""
    rows = []
    for img in images:
        distance, verdict = leak_check(img.dhash, target_hashes, threshold)
        rows.append({
            "file": f"images/{img.sha256}{img.file.suffix or '.jpg'}",
            "sha256": img.sha256,
            "dhash": img.dhash,
            "source_url": img.image_url,
            "page_url": img.page_url,
            "title": img.title,
            "engine": img.engine,
            "query": img.query,
            "concept": img.concept,
            "concept_index": img.concept_index,
            "iteration": img.iteration,
            "relevance": img.relevance,
            "kept": img.kept,
            "license": img.license,
            "license_url": img.license_url,
            "creator": img.creator,
            "attribution": attribution(img),
            "leak_distance": distance,
            "leak_verdict": verdict,
        })
    return rows


def manifest_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(MANIFEST_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in MANIFEST_FIELDS})
    return out.getvalue()


def _count_table(counter: Counter[str], head: str, limit: int | None = None) -> list[str]:
    lines = [f"| {head} | images |", "|---|---|"]
    for key, n in counter.most_common(limit):
        lines.append(f"| {key.replace('|', '/') or '(none)'} | {n} |")
    return lines


def _license_filter(licenses: Iterable[str] | None) -> str:
    """The datasheet's words for the license filter (``""``: images without a license)."""
    if licenses is None:
        return "none (every license)"
    kept = [lic or "no license" for lic in sorted(licenses)]
    return ", ".join(kept) if kept else "no license chosen (no image)"


def datasheet(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """``DATASHEET.md``: what the dataset is, where each part came from, under which terms."""
    licenses: Counter[str] = Counter(r["license"] for r in rows)
    urls = {r["license"]: r["license_url"] for r in rows}
    engines: Counter[str] = Counter(r["engine"] for r in rows)
    concepts: Counter[str] = Counter(r["concept"] for r in rows)
    iterations: Counter[str] = Counter(str(r["iteration"]) for r in rows)
    verdicts: Counter[str] = Counter(r["leak_verdict"] for r in rows)
    hosts: Counter[str] = Counter(r["source_url"].split("/")[2] if "//" in r["source_url"]
                                  else "" for r in rows)
    filt = meta.get("licenses")
    lines = [
        f"# Datasheet: {meta.get('name', 'dataset')}",
        "",
        "## Motivation",
        "",
        "Web images collected by an Internet Explorer run: a self-supervised model searched an "
        "image web for concepts it predicted to be useful for a small target image set, and "
        "scored every download by its similarity to the target. This dataset is the "
        f"`{meta.get('selection')}` selection of that run"
        + (f" (the {meta.get('top_n')} most relevant images)" if meta.get("selection") == "top"
           else "") + ".",
        "",
        "## Composition",
        "",
        f"- images: **{len(rows)}** (of {meta.get('images_in_run', '?')} downloaded by the run)",
        f"- target: {meta.get('target', 'unknown')}",
        f"- run: {meta.get('iterations', '?')} iterations, preset `{meta.get('preset', '?')}`, "
        f"mode `{meta.get('mode', '?')}`, seed {meta.get('seed', '?')}",
        f"- license filter: {_license_filter(filt)}",
        "- one row per image in `manifest.csv` / `manifest.json`: source and page URL, engine, "
        "query, concept, iteration, relevance, license, license URL, creator, attribution, "
        "sha256, dHash and the leakage check against the target",
        "",
        "### Licenses",
        "",
        "| license | images | terms |",
        "|---|---|---|",
        *[f"| {lic or '(none)'} | {n} | {urls.get(lic) or '-'} |"
          for lic, n in licenses.most_common()],
        "",
        "### Sources",
        "",
        *_count_table(engines, "engine"),
        "",
        *_count_table(hosts, "host"),
        "",
        "### Concepts (most images first)",
        "",
        *_count_table(concepts, "concept", 30),
        "",
        "### Iterations",
        "",
        *_count_table(iterations, "iteration"),
        "",
        "## Collection process",
        "",
        "Each iteration sampled concepts from the run's policy, sent one text query per concept "
        "to the engine, downloaded the results through a guarded downloader (size and pixel "
        "caps, magic bytes, decompression-bomb guard, address guard), normalised them to RGB "
        "and removed exact (sha256) and near (dHash) duplicates. Relevance is the mean cosine "
        "similarity of an image's features to its nearest target images under the model being "
        "trained. The run keeps the most relevant share of each iteration; a vetoed concept's "
        "images leave the kept set.",
        "",
        "## Leakage check",
        "",
        "Every image's dHash is compared with the target images' (Hamming distance; "
        f"near-duplicates at {meta.get('leak_threshold', 4)} bits or less). The downloader "
        "already refused such images, so `near-target` should not occur.",
        "",
        *_count_table(verdicts, "verdict"),
        "",
        "## Uses and distribution",
        "",
        "Keep each image's license and attribution with it: the `attribution` column is a "
        "ready-made credit line. Images under copyleft licenses (for example GPL-2.0) bind "
        "whatever redistributes them; filter them out at export if that does not suit.",
        "",
    ]
    return "\n".join(lines)


def export_dataset(images: list[ExportImage], out: Path, options: DatasetOptions, *,
                   meta: dict[str, Any] | None = None,
                   target_hashes: list[int] | None = None) -> Path:
    """Select, then write the dataset to ``out`` (a folder) or ``out.zip``; return the path.

    The archive is written to a temporary file and renamed into place; a folder that holds an
    earlier export loses that export's images first.

    ``meta``: what the datasheet says of the run (``name``, ``target``, ``iterations``,
    ``preset``, ``mode``, ``seed``). A missing image file raises FileNotFoundError.
    """
    chosen = select_images(images, options)
    rows = manifest_rows(chosen, target_hashes, options.leak_threshold)
    info = {
        **(meta or {}),
        "selection": options.selection,
        "top_n": options.top_n if options.selection == "top" else None,
        "licenses": sorted(options.licenses) if options.licenses is not None else None,
        "images_in_run": len(images),
        "images": len(rows),
        "leak_threshold": options.leak_threshold,
    }
    files = {
        "manifest.csv": manifest_csv(rows).encode(),
        "manifest.json": json.dumps({"dataset": info, "images": rows}, indent=1).encode(),
        "DATASHEET.md": datasheet(rows, info).encode(),
    }
    for img in chosen:
        if not img.file.is_file():
            raise FileNotFoundError(f"image {img.sha256} is missing: {img.file}")
    out = Path(out)
    if options.archive:
        path = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
            for img, row in zip(chosen, rows, strict=True):
                zf.write(img.file, row["file"], compress_type=zipfile.ZIP_STORED)
        tmp.replace(path)
        return path
    if (out / "manifest.json").is_file():  # an earlier export here: its images go
        shutil.rmtree(out / "images", ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for img, row in zip(chosen, rows, strict=True):
        (out / row["file"]).write_bytes(img.file.read_bytes())
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out
