"""Exports from a real finished tiny run: the model loads and embeds as the run did, the dataset's
manifest says what the run recorded image by image, the license filter holds, the report and
the comparison are self-contained pages, and ``ie export`` writes all four.

The run is real: the tiny preset against the worker tests' loopback offline web, a labelled
photo target, two iterations with a veto between them (and a random-arm run to compare with).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ie_engine.bases import named_base_config, packaged_base
from ie_engine.config import make_config
from ie_engine.evaluate import knn_accuracy
from ie_engine.explorer import Explorer
from ie_engine.export.compare import build_comparison
from ie_engine.export.dataset import MANIFEST_FIELDS, DatasetOptions, export_dataset
from ie_engine.export.model import export_model
from ie_engine.export.records import load_run
from ie_engine.export.report import build_report
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.plots import plot_curves
from ie_engine.search import HttpSearchEngine
from ie_engine.ssl.augment import eval_transform
from ie_engine.ssl.model import backbone_digest
from ie_engine.target import load_target
from ie_engine.vocabulary import (
    build_vocabulary,
    load_or_compute_embeddings,
    make_descriptor_source,
)
from tests.worker.conftest import world
from tests.worker.world import VOCAB

pytestmark = pytest.mark.slow
__all__ = ["world"]
ROOT = Path(__file__).resolve().parents[2]


def _explore(world, run_dir: Path, mode: str, veto_after_first: bool, base: str | None = None,
             iterations: int = 2):
    cfg = make_config("tiny", seed=3, iterations=iterations, vocabulary=VOCAB, mode=mode)
    if base is not None:
        cfg = named_base_config(cfg, base)
    host = world["url"].split("//", 1)[1]
    cfg = replace(cfg, download=replace(cfg.download, allowed_private_hosts=(host,)))
    vocab = build_vocabulary(VOCAB, data_dir=world["cache"])
    emb = np.asarray(load_or_compute_embeddings(vocab.texts(), world["embedder"],
                                                world["cache"] / "embeddings"))
    target = load_target(world["target"], max_pixels=cfg.download.max_pixels,
                         size=cfg.download.stored_size)
    pixels = to_uint8_tensor_batch(target.images, cfg.download.stored_size)
    holder: dict[str, Explorer] = {}

    def evaluate(_feats: torch.Tensor, _it: int) -> dict[str, float]:
        feats = holder["ex"].trainer.embed(torch.from_numpy(pixels)).numpy()
        return {"knn_accuracy": knn_accuracy(feats, target.labels, k=cfg.eval_knn_k)}

    ex = Explorer(config=cfg, run_dir=run_dir, vocabulary=vocab, concept_embeddings=emb,
                  target_images=pixels, target_hashes=target.dhashes,
                  engine=HttpSearchEngine(world["url"]),
                  descriptors=make_descriptor_source(cfg.vocabulary), evaluate=evaluate)
    holder["ex"] = ex
    vetoed = None
    with ex:
        ex.run(1)
        if veto_after_first:
            kept = [i for i in ex.images if i.kept]
            vetoed = kept[0].concept_index  # the concept of the best kept image
            ex.veto([vetoed])
        if iterations > 1:
            ex.run(2)
    (run_dir / "final.json").write_text(json.dumps({"iterations": iterations,
                                                    "images": len(ex.images)}))
    plot_curves(ex.history, run_dir / "plots" / "curves.png")
    return ex, target, vetoed


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    ex, target, vetoed = _explore(world, root / "explore", "explore", True)
    _explore(world, root / "random", "random", False)
    return {"dir": root / "explore", "random": root / "random", "explorer": ex,
            "target": target, "target_dir": world["target"], "vetoed": vetoed}


def test_exported_model_loads_and_embeds_as_the_run_did(finished, tmp_path):
    out = export_model(finished["dir"], tmp_path / "model")
    trainer = finished["explorer"].trainer
    image = next(i for i in finished["explorer"].images if i.kept)
    with Image.open(finished["dir"] / image.path) as im:
        pixels = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None]
    expected = trainer.embed(pixels)

    scripted = torch.jit.load(str(out / "embedder.torchscript.pt"))
    got = scripted(pixels)
    assert got.shape == (1, trainer.feature_dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scripted(pixels.float() / 255), expected, atol=1e-5, rtol=1e-4)

    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.conv1 = torch.nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.load_state_dict(torch.load(out / "backbone.pt", map_location="cpu"))
    net.eval()
    with torch.no_grad():
        feats = net(eval_transform(pixels, trainer.config.image_size))
    torch.testing.assert_close(torch.nn.functional.normalize(feats, dim=1), expected,
                               atol=1e-5, rtol=1e-4)

    info = json.loads((out / "model.json").read_text())
    assert info["preset"] == "tiny" and info["seed"] == 3 and info["iterations"] == 2
    assert info["images_downloaded"] == len(finished["explorer"].images)
    assert 0.0 <= info["figures"]["knn_accuracy"] <= 1.0
    card = (out / "MODEL_CARD.md").read_text()
    for text in ("preset `tiny`", "seed 3", "2 iterations", "knn accuracy", "backbone.pt"):
        assert text in card


def test_the_model_cards_snippet_runs_as_written(finished, tmp_path):
    out = export_model(finished["dir"], tmp_path / "model")
    card = (out / "MODEL_CARD.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    image = next(i for i in finished["explorer"].images if i.kept)
    Image.open(finished["dir"] / image.path).save(out / "photo.jpg")
    check = snippet + "print(tuple(features.shape), round(float(features.norm()), 4))\n"
    done = subprocess.run([sys.executable, "-c", check], cwd=out, capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout.split("\n")[0] == "(1, 512) 1.0"


def _manifest(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["images"]


def test_dataset_manifest_matches_the_run_records_row_by_row(finished, tmp_path):
    ex = finished["explorer"]
    out = export_dataset(load_run(finished["dir"]).images, tmp_path / "ds", DatasetOptions(),
                         meta={"name": "tiny"}, target_hashes=finished["target"].dhashes)
    rows = _manifest(out)
    kept = sorted((r for r in ex.images if r.kept), key=lambda r: (-r.reward, r.sha256))
    assert [r["sha256"] for r in rows] == [k.sha256 for k in kept]
    assert rows, "the run kept no image"
    for row, rec in zip(rows, kept, strict=True):
        assert list(row) == list(MANIFEST_FIELDS)
        assert (row["source_url"], row["page_url"], row["engine"], row["query"]) == (
            rec.image_url, rec.page_url, rec.engine, rec.query)
        assert (row["concept"], row["concept_index"], row["iteration"]) == (
            rec.concept, rec.concept_index, rec.iteration)
        assert row["relevance"] == pytest.approx(rec.reward)
        assert (row["license"], row["creator"], row["dhash"]) == (
            rec.license, rec.creator, rec.dhash)
        assert row["license_url"].startswith("https://")
        assert rec.license in row["attribution"]
        assert row["leak_verdict"] in ("clear", "not-comparable")
        data = (out / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert finished["vetoed"] not in {r["concept_index"] for r in rows}
    with (out / "manifest.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["sha256"] for r in table] == [r["sha256"] for r in rows]
    assert table[0]["source_url"] == rows[0]["source_url"]
    sheet = (out / "DATASHEET.md").read_text()
    assert f"images: **{len(rows)}**" in sheet
    for lic in {r["license"] for r in rows}:
        assert f"| {lic} |" in sheet


def test_license_filter_top_n_and_archive(finished, tmp_path):
    images = load_run(finished["dir"]).images
    licenses = sorted({i.license for i in images})
    assert licenses, "no image"
    pick = licenses[0]
    out = export_dataset(images, tmp_path / "pd",
                         DatasetOptions(selection="all", licenses=frozenset({pick})))
    rows = _manifest(out)
    assert len(rows) == sum(1 for i in images if i.license == pick)
    assert {r["license"] for r in rows} == {pick}
    assert len(list((out / "images").iterdir())) == len(rows)

    path = export_dataset(images, tmp_path / "top", DatasetOptions(selection="top", top_n=5,
                                                                   archive=True))
    assert path.name == "top.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        rows = json.loads(zf.read("manifest.json"))["images"]
        assert {"manifest.csv", "manifest.json", "DATASHEET.md"} <= names
        assert {r["file"] for r in rows} <= names
        assert len(list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))) == 5
    rewards = [r["relevance"] for r in rows]
    assert len(rows) == 5 and rewards == sorted(rewards, reverse=True)
    assert rewards[0] == pytest.approx(max(i.relevance for i in images if i.relevance is not None))
    assert {r["leak_verdict"] for r in rows} == {"not-checked"}  # no target given


def _assert_self_contained(html: str) -> None:
    assert not re.search(r"https?://", html)
    for attr in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html):
        assert attr.startswith(("data:", "#")), attr
    assert "<script" not in html and "<link" not in html and "url(" not in html


def test_report_is_one_self_contained_page(finished):
    run = load_run(finished["dir"])
    html = build_report(run)
    _assert_self_contained(html)
    assert html.count("data:image/png;base64,") >= 3  # curves, discovery, heat map
    assert "data:image/jpeg;base64," in html  # sample images
    vetoed = next(v for v in run.vetoes)
    assert vetoed.concept_index == finished["vetoed"]
    section = html.split('id="vetoes"')[1].split("</section>")[0]
    assert vetoed.concept in section
    for heading in ("Curves", "Concepts found over time", "Vetoes and their effect",
                    "Sample images of the best concepts"):
        assert heading in html


def test_comparison_overlays_the_runs(finished):
    runs = [load_run(finished["dir"]), load_run(finished["random"])]
    html = build_comparison(runs)
    _assert_self_contained(html)
    assert "explore" in html and "random" in html
    assert html.count("data:image/png;base64,") == 1
    with pytest.raises(ValueError):
        build_comparison(runs[:1])


def test_ie_export_writes_all_four(finished, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished["dir"]), str(run_dir)], check=True)

    def ie(*args: str) -> Path:
        done = subprocess.run([sys.executable, "-m", "ie_engine.cli", "export", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return Path(done.stdout.strip().splitlines()[-1])

    model = ie("model", "--run-dir", str(run_dir), "--target", str(finished["target_dir"]))
    assert model == run_dir / "exports" / "model"
    assert "target: target" in (model / "MODEL_CARD.md").read_text()
    ds = ie("dataset", "--run-dir", str(run_dir), "--zip", "--license", "public-domain",
            "--target", str(finished["target_dir"]))
    with zipfile.ZipFile(ds) as zf:
        rows = json.loads(zf.read("manifest.json"))["images"]
    assert all(r["license"] == "public-domain" for r in rows)
    assert all(r["leak_verdict"] in ("clear", "not-comparable") for r in rows)
    report = ie("report", "--run-dir", str(run_dir))
    _assert_self_contained(report.read_text())
    compared = ie("compare", str(run_dir), str(finished["random"]), "--out",
                  str(tmp_path / "cmp.html"))
    _assert_self_contained(compared.read_text())


def test_records_from_iteration_files_equal_the_checkpoints_before_a_veto(finished):
    from_ckpt = {i.sha256: i for i in load_run(finished["dir"]).images}
    from_files = load_run(finished["dir"], read_checkpoint=False).images
    assert {i.sha256 for i in from_files} == set(from_ckpt)
    for img in from_files:
        other = from_ckpt[img.sha256]
        assert asdict(img) | {"kept": other.kept} == asdict(other)


CHROMIUM = Path("/usr/bin/chromium")


def test_report_renders_in_chromium_without_a_request(finished, tmp_path):
    """The page loads from a file with no request beyond itself and its data URIs; its
    screenshot is ``test-artifacts/report.png`` (the README's)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: run IE_WITH_BROWSER=1 bash scripts/setup.sh")
    from playwright.sync_api import sync_playwright

    from ie_engine.export.report import write_report

    run = load_run(finished["dir"], name="tiny run: Tux Paint photos, explore")
    target = finished["target"]
    run.target = {"name": "Tux Paint photos", "images": len(target.images),
                  "classes": target.class_names}
    path = write_report(run, tmp_path / "report.html")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            loaded = page.evaluate(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            artifacts = ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "report.png"))
        finally:
            browser.close()
    assert loaded
    assert [u for u in requests if not u.startswith("data:")] == [path.as_uri()]


def test_a_run_from_the_packaged_imagenet_base_exports_and_says_so(world, tmp_path):
    """EfficientNet-Lite0 from its packaged weights: the TorchScript file embeds as the run did,
    the model card's snippet (timm) runs as written, and model.json names the base and the
    digest of its weights."""
    ex, _target, _ = _explore(world, tmp_path / "run", "explore", False,
                              base="imagenet-effnet-lite0", iterations=1)
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    digest = backbone_digest(packaged_base("imagenet-effnet-lite0").checkpoint)
    assert run_json["base"] == {"name": "imagenet-effnet-lite0", "digest": digest}
    out = export_model(tmp_path / "run", tmp_path / "model")
    info = json.loads((out / "model.json").read_text())
    assert (info["arch"], info["base"], info["base_digest"]) == (
        "effnet-lite0", "imagenet-effnet-lite0", digest)
    image = next(i for i in ex.images if i.kept)
    with Image.open(tmp_path / "run" / image.path) as im:
        im.convert("RGB").save(out / "photo.jpg")
        pixels = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None]
    scripted = torch.jit.load(str(out / "embedder.torchscript.pt"))
    torch.testing.assert_close(scripted(pixels), ex.trainer.embed(pixels), atol=1e-5, rtol=1e-4)
    card = (out / "MODEL_CARD.md").read_text()
    assert "started from the base `imagenet-effnet-lite0`" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    check = snippet + "print(tuple(features.shape), round(float(features.norm()), 4))\n"
    done = subprocess.run([sys.executable, "-c", check], cwd=out, capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout.split("\n")[0] == "(1, 1280) 1.0"
