"""Take-aways from the web app, for runs the worker's own steps really ran (tiny preset, the
loopback offline web, a veto between the two iterations): the dataset's manifest equals the
store's image rows row by row, the license filter holds, the model downloads and embeds, the
report is self-contained, files are served only from the run's exports folder, and two runs
compare on one page."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import func, select, update

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Concept, Image, Run, RunStatus
from app.store.vetoes import record_veto
from ie_engine.export.dataset import MANIFEST_FIELDS
from tests.app.auth import logged_in
from tests.worker.conftest import make_data_dir, world
from tests.worker.world import queue_run
from worker.runtime import Runtime
from worker.steps import fetch_step, learn_step

pytestmark = pytest.mark.slow
__all__ = ["world"]


@pytest.fixture(scope="module")
def app_runs(world, tmp_path_factory):
    """Settings, a session factory, a finished 2-iteration run with a veto and a finished
    1-iteration run (both through the worker's steps, in this process)."""
    data_dir = make_data_dir(world, tmp_path_factory.mktemp("exports") / "data")
    settings = Settings(data_dir=data_dir, search_url=world["url"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    rt = Runtime(settings)
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=2).id
        other_id = queue_run(session, settings, world["target"], iterations=1).id
    assert fetch_step(rt, run_id, None).action == "fetched iteration 1"
    assert learn_step(rt, run_id, 1).action == "learned iteration 1"
    with factory() as session:
        best = session.scalars(select(Image).where(Image.run_id == run_id, Image.kept)
                               .order_by(Image.reward.desc())).first()
        record_veto(session, run_id, "veto", concept_index=best.concept_index)
        session.commit()
        vetoed = session.scalars(select(Concept).where(
            Concept.run_id == run_id, Concept.concept_index == best.concept_index)).one()
    assert fetch_step(rt, run_id, 2).action == "fetched iteration 2"
    assert learn_step(rt, run_id, 2).action == "finished"
    assert fetch_step(rt, other_id, None).action == "fetched iteration 1"
    assert learn_step(rt, other_id, 1).action == "finished"
    with factory() as session:
        assert session.get(Run, run_id).status == RunStatus.FINISHED
    yield {"settings": settings, "factory": factory, "run": run_id, "other": other_id,
           "vetoed": vetoed}
    engine.dispose()


@pytest.fixture
def client(app_runs):
    with logged_in(create_app(app_runs["settings"])) as c:
        yield c


def _zip_json(data: bytes, name: str) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read(name))


def _export(client, run_id: int, kind: str, data: dict | None = None) -> bytes:
    made = client.post(f"/runs/{run_id}/exports/{kind}", data=data or {},
                       follow_redirects=False)
    assert made.status_code == 303, made.text
    got = client.get(made.headers["location"])
    assert got.status_code == 200
    return got.content


def test_dataset_manifest_matches_the_database_row_by_row(app_runs, client):
    run_id = app_runs["run"]
    manifest = _zip_json(_export(client, run_id, "dataset"), "manifest.json")
    rows = manifest["images"]
    with app_runs["factory"]() as session:
        db = list(session.scalars(select(Image).where(Image.run_id == run_id, Image.kept)
                                  .order_by(Image.reward.desc(), Image.sha256)))
        lemmas = dict(session.execute(select(Concept.concept_index, Concept.lemma)
                                      .where(Concept.run_id == run_id)).all())
    assert len(rows) == len(db) > 0
    for row, image in zip(rows, db, strict=True):
        assert list(row) == list(MANIFEST_FIELDS)
        assert row["file"] == f"images/{image.sha256}.jpg"
        assert (row["sha256"], row["dhash"], row["source_url"], row["page_url"]) == (
            image.sha256, image.dhash, image.image_url, image.page_url)
        assert (row["title"], row["engine"], row["query"], row["concept_index"]) == (
            image.title, image.engine, image.query, image.concept_index)
        assert (row["concept"], row["iteration"], row["kept"]) == (
            lemmas[image.concept_index], image.iteration, True)
        assert row["relevance"] == pytest.approx(image.reward)
        assert (row["license"], row["creator"]) == (image.license, image.creator)
        assert row["leak_verdict"] in ("clear", "not-comparable")
        assert isinstance(row["leak_distance"], int)
    assert app_runs["vetoed"].concept_index not in {r["concept_index"] for r in rows}
    with app_runs["factory"]() as session:
        stored = session.scalars(select(func.count()).select_from(Image)
                                 .where(Image.run_id == run_id)).one()
    assert manifest["dataset"]["images_in_run"] == stored


def test_license_filter_keeps_only_the_ticked_licenses(app_runs, client):
    run_id = app_runs["run"]
    fragment = client.get(f"/runs/{run_id}/exports", headers={"HX-Request": "true"}).text
    licenses = re.findall(r'name="license" value="([^"]*)"', fragment)
    assert licenses
    pick = licenses[0]
    data = _export(client, run_id, "dataset", {"select": "all", "license": pick})
    rows = _zip_json(data, "manifest.json")["images"]
    with app_runs["factory"]() as session:
        expected = sorted(session.scalars(select(Image.sha256).where(
            Image.run_id == run_id, Image.license == pick)))
    assert sorted(r["sha256"] for r in rows) == expected
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert f"| {pick} |" in zf.read("DATASHEET.md").decode()
    bad = client.post(f"/runs/{run_id}/exports/dataset", data={"select": "best"})
    assert bad.status_code == 400


@contextmanager
def _half_without_license(factory, run_id: int) -> Iterator[int]:
    """Every other image of the run (by id) stored without a license, as some web engines
    return them; the licenses come back afterwards. Yields how many lost theirs."""
    with factory() as session:
        before = dict(session.execute(select(Image.id, Image.license).where(
            Image.run_id == run_id).order_by(Image.id)).all())
        blanked = list(before)[::2]
        session.execute(update(Image).where(Image.id.in_(blanked)).values(license=""))
        session.commit()
    try:
        yield len(blanked)
    finally:
        with factory() as session:
            for image_id in blanked:
                session.execute(update(Image).where(Image.id == image_id)
                                .values(license=before[image_id]))
            session.commit()


def _license_boxes(client, run_id: int) -> tuple[str, list[str]]:
    fragment = client.get(f"/runs/{run_id}/exports", headers={"HX-Request": "true"}).text
    return fragment, re.findall(r'name="license" value="([^"]*)"', fragment)


def test_the_no_license_box_alone_exports_exactly_the_unlicensed_images(app_runs, client):
    run_id = app_runs["run"]
    with _half_without_license(app_runs["factory"], run_id) as blanked:
        fragment, boxes = _license_boxes(client, run_id)
        assert "" in boxes and f"no license ({blanked})" in fragment
        assert 'name="license_boxes"' in fragment
        data = _export(client, run_id, "dataset",
                       {"select": "all", "license_boxes": "1", "license": ""})
        rows = _zip_json(data, "manifest.json")["images"]
        with app_runs["factory"]() as session:
            db = sorted(session.scalars(select(Image).where(Image.run_id == run_id,
                                                            Image.license == "")),
                        key=lambda i: (-(i.reward if i.reward is not None else float("-inf")),
                                       i.sha256))
        assert len(rows) == len(db) == blanked > 0
        for row, image in zip(rows, db, strict=True):
            assert (row["sha256"], row["source_url"], row["iteration"], row["kept"]) == (
                image.sha256, image.image_url, image.iteration, image.kept)
            assert (row["license"], row["license_url"]) == ("", "")
            assert row["relevance"] == pytest.approx(image.reward)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert len([n for n in zf.namelist() if n.startswith("images/")]) == blanked
            assert "- license filter: no license\n" in zf.read("DATASHEET.md").decode()

        other = next(b for b in boxes if b)
        rows = _zip_json(_export(client, run_id, "dataset", {
            "select": "all", "license_boxes": "1", "license": ["", other]}),
            "manifest.json")["images"]
        with app_runs["factory"]() as session:
            both = sorted(session.scalars(select(Image.sha256).where(
                Image.run_id == run_id, Image.license.in_(["", other]))))
        assert sorted(r["sha256"] for r in rows) == both
        assert len(both) > blanked


def test_no_box_ticked_is_a_400_and_writes_nothing(app_runs, client):
    run_id = app_runs["run"]
    folder = app_runs["settings"].runs_dir / str(run_id) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    for headers in ({}, {"HX-Request": "true"}):
        refused = client.post(f"/runs/{run_id}/exports/dataset", headers=headers,
                              data={"select": "all", "top": "500", "license_boxes": "1"})
        assert refused.status_code == 400
        assert "choose at least one license, or tick them all" in refused.text
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_model_export_downloads_and_embeds(app_runs, client, tmp_path):
    run_id = app_runs["run"]
    made = client.post(f"/runs/{run_id}/exports/model", headers={"HX-Request": "true"})
    assert made.status_code == 200 and "model.zip" in made.text
    got = client.get(f"/runs/{run_id}/exports/files/model.zip")
    assert got.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        zf.extractall(tmp_path)
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert "target: target" in card and "preset `tiny`" in card
    embedder = torch.jit.load(str(tmp_path / "model" / "embedder.torchscript.pt"))
    with app_runs["factory"]() as session:
        path = session.scalars(select(Image.path).where(Image.run_id == run_id)).first()
    with PILImage.open(app_runs["settings"].data_dir / path) as im:
        pixels = torch.tensor(list(im.convert("RGB").getdata()), dtype=torch.uint8)
        pixels = pixels.view(im.height, im.width, 3).permute(2, 0, 1)[None]
    with torch.no_grad():
        feats = embedder(pixels)
    assert feats.shape == (1, 512)
    assert float(feats.norm()) == pytest.approx(1.0, abs=1e-5)
    state = torch.load(tmp_path / "model" / "backbone.pt", map_location="cpu")
    assert "layer4.1.bn2.running_var" in state


def test_report_is_self_contained_and_shows_the_veto(app_runs, client):
    html = _export(client, app_runs["run"], "report").decode()
    assert not re.search(r"https?://", html)
    for attr in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html):
        assert attr.startswith(("data:", "#")), attr
    vetoes = html.split('id="vetoes"')[1].split("</section>")[0]
    assert app_runs["vetoed"].lemma in vetoes
    assert "applied from iteration 2" in vetoes


def test_files_are_served_only_from_the_exports_folder(app_runs, client):
    settings: Settings = app_runs["settings"]
    run_id = app_runs["run"]
    folder = settings.runs_dir / str(run_id) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "escape.html").unlink(missing_ok=True)
    (folder / "escape.html").symlink_to(settings.runs_dir / str(run_id) / "run.json")
    for name in ("checkpoint.pt", "..%2Fcheckpoint.pt", "%2E%2E", "escape.html", ".hidden"):
        assert client.get(f"/runs/{run_id}/exports/files/{name}").status_code == 404, name
    assert client.get("/runs/999/exports/files/report.html").status_code == 404
    (folder / "escape.html").unlink()


def test_dashboard_has_the_take_aways_and_runs_compare(app_runs, client):
    run_id, other = app_runs["run"], app_runs["other"]
    page = client.get(f"/runs/{run_id}").text
    assert 'data-testid="exports"' in page
    assert f'/runs/{run_id}/exports/model"' in page
    html = client.get(f"/compare?run={run_id}&run={other}")
    assert html.status_code == 200
    assert f"#{run_id}" in html.text and f"#{other}" in html.text
    assert "data:image/png;base64," in html.text
    assert not re.search(r"https?://", html.text)
    assert client.get(f"/compare?run={run_id}&run={run_id}").status_code == 400
    assert client.get(f"/compare?run={run_id}&run=999").status_code == 404


def test_export_before_the_run_has_a_folder_is_refused(app_runs, client):
    with app_runs["factory"]() as session:
        run = Run(name="draft", config={}, status=RunStatus.DRAFT)
        session.add(run)
        session.commit()
        run_id = run.id
    assert client.post(f"/runs/{run_id}/exports/report").status_code == 409
    assert client.post(f"/runs/{run_id}/exports/nothing").status_code == 422
    assert not Path(app_runs["settings"].runs_dir / str(run_id) / "exports").exists()
