"""The launch form: sensible defaults, an engine-shaped config, and refusals that say why."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from app.main import create_app
from app.settings import Settings
from app.store.db import make_session_factory, session_scope
from app.store.events import events_after
from app.store.models import Run, RunStatus
from ie_engine.config import ExplorerConfig, make_config
from ie_engine.vocabulary import DEFAULT_WORDNET_DIR
from tests.app.auth import logged_in
from tests.app.factories import make_upload


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url))
    with logged_in(app) as client:
        yield client


def _upload(engine: Engine, *, accepted: int = 12, name: str = "birds") -> int:
    with session_scope(make_session_factory(engine)) as session:
        upload = make_upload(session, name=name, class_names=["parrot", "finch"], labelled=True)
        upload.n_accepted = accepted
        return upload.id


def _runs(engine: Engine) -> list[Run]:
    with make_session_factory(engine)() as session:
        return list(session.scalars(select(Run).order_by(Run.id)))


def test_the_form_offers_uploads_with_images_and_preset_defaults(
    client: TestClient, engine: Engine
) -> None:
    chosen = _upload(engine, name="birds")
    _upload(engine, accepted=0, name="all refused")
    page = client.get("/runs/new", params={"upload": chosen})
    assert page.status_code == 200
    assert f'<option value="{chosen}" selected>' in page.text.replace("\n      ", "")
    assert "birds" in page.text and "all refused" not in page.text
    cpu = make_config("cpu-small")
    queries = cpu.policy.queries_per_iteration
    assert f"cpu-small: {cpu.iterations} iterations, {queries} queries" in page.text
    assert 'name="seed"' in page.text and 'value="0"' in page.text


def test_launching_queues_a_run_with_an_engine_config(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    upload_id = _upload(engine)
    # gpu-paper starts from the paper's MoCo v3 weights: the file must be where the workers look.
    weights = tmp_path / "data" / "bases" / "r-50-1000ep.pth.tar"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"placed by hand")
    form = {
        "upload_id": str(upload_id),
        "name": "  my   run ",
        "search_engine": "offline",
        "preset": "gpu-paper",
        "iterations": "2",
        "queries_per_iteration": "7",
        "images_per_query": "9",
        "seed": "5",
        "class_names": "parrot, finch\nparrot",
    }
    reply = client.post("/runs/new", data=form, follow_redirects=False)
    assert reply.status_code == 303
    (run,) = _runs(engine)
    assert reply.headers["location"].endswith(f"/runs/{run.id}")
    assert (run.name, run.status, run.upload_id, run.search_engine) == (
        "my run",
        RunStatus.QUEUED,
        upload_id,
        "offline",
    )
    config = ExplorerConfig.from_dict(run.config)  # the worker can rebuild it
    assert (config.preset, config.seed, config.iterations) == ("gpu-paper", 5, 2)
    assert config.policy.queries_per_iteration == 7
    assert config.search.results_per_query == 9
    assert config.vocabulary.class_names == ("parrot", "finch")
    assert config.train == make_config("gpu-paper").train
    with make_session_factory(engine)() as session:
        assert [e.payload["status"] for e in events_after(session, run.id)] == ["queued"]
    dashboard = client.get(reply.headers["location"])
    assert dashboard.status_code == 200 and "my run" in dashboard.text


def test_empty_numbers_take_the_presets_values(client: TestClient, engine: Engine) -> None:
    upload_id = _upload(engine)
    reply = client.post("/runs/new", data={"upload_id": str(upload_id)}, follow_redirects=False)
    assert reply.status_code == 303
    (run,) = _runs(engine)
    assert ExplorerConfig.from_dict(run.config) == make_config("cpu-small", seed=0)
    assert run.name == "birds (cpu-small)"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"iterations": "abc"}, "iterations: 'abc' is not a whole number"),
        ({"iterations": "2.5"}, "is not a whole number"),
        ({"iterations": "0"}, "iterations: 0 is out of range (1 to 1000)"),
        ({"queries_per_iteration": "-3"}, "queries per iteration: -3 is out of range"),
        ({"images_per_query": "100000"}, "images per query: 100000 is out of range"),
        ({"seed": "-1"}, "seed: -1 is out of range"),
        ({"preset": "tiny"}, "preset: 'tiny' is not one of cpu-small, gpu-paper"),
        ({"search_engine": "google"}, "search engine: 'google' is not one of offline"),
        ({"upload_id": ""}, "upload: choose the images"),
        ({"upload_id": "²"}, "upload: '²' is not an upload number"),
        ({"upload_id": "9" * 5000}, "is not an upload number"),
        ({"upload_id": str(2**31)}, f"upload: '{2**31}' is not an upload number"),
        ({"name": "x" * 300}, "name: at most 255 characters"),
    ],
)
def test_unusable_fields_are_a_400_that_says_which(
    client: TestClient, engine: Engine, fields: dict[str, str], message: str
) -> None:
    form: dict[str, Any] = {"upload_id": str(_upload(engine)), "iterations": "3", **fields}
    reply = client.post("/runs/new", data=form)
    assert reply.status_code == 400
    text = html.unescape(reply.text)
    assert "the run was not launched" in text and message in text
    assert 'data-testid="launch-form"' in reply.text  # the form again, to fix
    assert _runs(engine) == []


needs_wordnet = pytest.mark.skipif(
    not (DEFAULT_WORDNET_DIR / "index.noun").is_file(),
    reason="apt-get install wordnet-base wordnet-sense-index",
)


@needs_wordnet
def test_roots_restrict_the_vocabulary_to_known_synsets(client: TestClient, engine: Engine) -> None:
    upload_id = _upload(engine)
    assert 'name="roots"' in client.get("/runs/new").text
    form = {"upload_id": str(upload_id), "roots": " bird.n.01, Fruit.n.01\nbird.n.01 ,"}
    reply = client.post("/runs/new", data=form, follow_redirects=False)
    assert reply.status_code == 303
    (run,) = _runs(engine)
    config = ExplorerConfig.from_dict(run.config)
    assert config.vocabulary.roots == ("bird.n.01", "fruit.n.01")


@needs_wordnet
@pytest.mark.parametrize(
    ("roots", "message"),
    [
        ("bird.n.01, birb.n.01", "only concepts under: WordNet has no noun synset 'birb.n.01'"),
        ("bird.n.99", "WordNet has no noun synset 'bird.n.99'"),
        ("bird", "only concepts under: 'bird' is not a WordNet noun synset name (like bird.n.01)"),
        ("fly.v.01", "'fly.v.01' is not a WordNet noun synset name"),
        ("bird.n.01," * 300, "only concepts under: at most 2,000 characters"),
        (" ".join(f"bird.n.{i:02d}" for i in range(1, 60)), "only concepts under: at most 50"),
    ],
)
def test_unusable_roots_are_a_400_that_names_them(
    client: TestClient, engine: Engine, roots: str, message: str
) -> None:
    reply = client.post("/runs/new", data={"upload_id": str(_upload(engine)), "roots": roots})
    assert reply.status_code == 400
    text = html.unescape(reply.text)
    assert "the run was not launched" in text and message in text
    assert _runs(engine) == []


def test_an_upload_without_images_cannot_be_explored(client: TestClient, engine: Engine) -> None:
    empty = _upload(engine, accepted=0)
    reply = client.post("/runs/new", data={"upload_id": str(empty)})
    assert reply.status_code == 400 and "has no accepted images" in reply.text
    assert client.post("/runs/new", data={"upload_id": "4242"}).status_code == 404
    assert _runs(engine) == []
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_the_form_offers_the_bases_and_the_run_keeps_the_chosen_one(
    client: TestClient, engine: Engine
) -> None:
    upload_id = _upload(engine)
    page = client.get("/runs/new", params={"upload": upload_id})
    text = html.unescape(page.text)
    assert 'value="imagenet-effnet-lite0"' in text
    # Offline and never fetched: offered, disabled, and the reason says what to put where.
    moco = text.split('value="moco-v3-resnet50"', 1)[1].split("</label>", 1)[0]
    assert "disabled" in moco and "r-50-1000ep.pth.tar" in moco
    reply = client.post("/runs/new", data={"upload_id": str(upload_id),
                                           "base": "imagenet-effnet-lite0"},
                        follow_redirects=False)
    assert reply.status_code == 303
    (run,) = _runs(engine)
    train = ExplorerConfig.from_dict(run.config).train
    assert (train.base, train.arch, train.init_checkpoint) == (
        "imagenet-effnet-lite0", "effnet-lite0", None)  # resolved by the worker, not here
    assert train.input_mean == (0.5, 0.5, 0.5)
    dashboard = client.get(reply.headers["location"])
    assert "base imagenet-effnet-lite0" in dashboard.text


def test_a_preset_whose_base_is_not_here_is_refused_saying_where_it_goes(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    upload_id = _upload(engine)
    reply = client.post("/runs/new", data={"upload_id": str(upload_id), "preset": "gpu-paper"})
    assert reply.status_code == 400
    text = html.unescape(reply.text)
    assert "the gpu-paper preset starts from moco-v3-resnet50, which is not here" in text
    assert str(tmp_path / "data" / "bases" / "r-50-1000ep.pth.tar") in text
    assert _runs(engine) == []


@pytest.mark.parametrize(
    ("base", "message"),
    [("moco-v3-resnet50", "base: moco-v3-resnet50 is not available here: needs the weights"),
     ("imagenet", "base: 'imagenet' is not one of"),
     ("file:/etc/passwd", "is not one of")],
)
def test_a_base_that_is_not_here_is_refused_saying_why(
    client: TestClient, engine: Engine, base: str, message: str
) -> None:
    upload_id = _upload(engine)
    reply = client.post("/runs/new", data={"upload_id": str(upload_id), "base": base})
    assert reply.status_code == 400
    assert message in html.unescape(reply.text)
    assert _runs(engine) == []
