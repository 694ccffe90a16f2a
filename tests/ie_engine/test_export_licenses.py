"""The dataset's license filter, on a small run folder written here (no model): ``""`` is the
license of the images stored without one, and ``ie export dataset --license ''`` keeps exactly
those; several ``--license`` keep their union; none keeps every license; an empty filter keeps
nothing, and the datasheet says which filter was applied."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from ie_engine.cli import main
from ie_engine.export.dataset import DatasetOptions, export_dataset
from ie_engine.export.records import load_run

LICENSES = ["", "GPL-2.0", "", "public-domain", "GPL-2.0", "", "public-domain", "GPL-2.0"]
"""The license of each image of the run folder, in the order written."""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder of one iteration: eight images (three without a license) and their
    records, as the explorer writes them."""
    folder = tmp_path / "run"
    (folder / "iterations").mkdir(parents=True)
    (folder / "images").mkdir()
    records = []
    for i, lic in enumerate(LICENSES):
        path = folder / "images" / f"{i}.jpg"
        Image.new("RGB", (8, 8), (30 * i, 10, 200 - 20 * i)).save(path, "JPEG")
        records.append({
            "path": f"images/{i}.jpg", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "dhash": f"{i:016x}", "iteration": 1, "concept_index": i, "concept": f"thing{i}",
            "query": f"thing{i}", "image_url": f"http://127.0.0.1/{i}.jpg",
            "page_url": f"http://127.0.0.1/{i}", "title": f"image {i}", "license": lic,
            "creator": "someone" if lic else "", "engine": "offline", "reward": 0.9 - 0.1 * i,
            "kept": True,
        })
    (folder / "iterations" / "0001.json").write_text(json.dumps({"iteration": 1}))
    (folder / "iterations" / "0001-images.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    (folder / "config.json").write_text(json.dumps({"preset": "tiny", "seed": 0}))
    return folder


def _export(run_dir: Path, out: Path, *licenses: str) -> tuple[list[dict], str]:
    args = ["export", "dataset", "--run-dir", str(run_dir), "--out", str(out), "--select", "all"]
    for lic in licenses:
        args += ["--license", lic]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["images"], (out / "DATASHEET.md").read_text()


def _sha(indices: list[int], run_dir: Path) -> list[str]:
    images = load_run(run_dir).images
    return sorted(images[i].sha256 for i in indices)


def test_no_license_alone_keeps_exactly_the_images_without_one(run_dir, tmp_path):
    rows, sheet = _export(run_dir, tmp_path / "none", "")
    unlicensed = [i for i, lic in enumerate(LICENSES) if not lic]
    assert sorted(r["sha256"] for r in rows) == _sha(unlicensed, run_dir)
    assert {r["license"] for r in rows} == {""}
    assert "- license filter: no license\n" in sheet
    assert len(list((tmp_path / "none" / "images").iterdir())) == len(unlicensed) == 3


def test_no_license_with_another_keeps_both(run_dir, tmp_path):
    rows, sheet = _export(run_dir, tmp_path / "both", "", "public-domain")
    chosen = [i for i, lic in enumerate(LICENSES) if lic in ("", "public-domain")]
    assert sorted(r["sha256"] for r in rows) == _sha(chosen, run_dir)
    assert "- license filter: no license, public-domain\n" in sheet


def test_no_license_option_keeps_every_license(run_dir, tmp_path):
    rows, sheet = _export(run_dir, tmp_path / "all")
    assert sorted(r["sha256"] for r in rows) == _sha(list(range(len(LICENSES))), run_dir)
    assert "- license filter: none (every license)\n" in sheet


def test_an_empty_filter_keeps_nothing_and_says_so(run_dir, tmp_path):
    out = export_dataset(load_run(run_dir).images, tmp_path / "empty",
                         DatasetOptions(selection="all", licenses=frozenset()))
    assert json.loads((out / "manifest.json").read_text())["images"] == []
    assert "- license filter: no license chosen (no image)\n" in (out / "DATASHEET.md").read_text()
