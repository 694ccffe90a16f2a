"""The run dashboard and its regions, rendered from a real store filled by factories."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.main import create_app
from app.services.dashboard import GALLERY_PAGE, phase_bars
from app.settings import Settings
from app.store.concepts import map_points, upsert_concepts
from app.store.db import make_session_factory, session_scope
from app.store.events import add_event
from app.store.images import add_images
from app.store.iterations import add_queries, record_iteration
from app.store.runs import set_run_progress, set_run_status
from app.store.vetoes import record_veto
from tests.app.auth import logged_in
from tests.app.factories import concept_rows, image_row, make_running_run, write_image

REGIONS = {
    "run-status": "status",
    "run-progress": "progress",
    "run-queries": "queries",
    "leaderboard": "leaderboard",
    "gallery": "gallery",
}
"""Region id -> its fragment's path under /runs/{id}/."""
TEST_IDS = [
    "dashboard", "run-status", "run-status-badge", "run-controls", "control-pause",
    "control-resume", "control-cancel", "run-progress", "progress-search", "progress-download",
    "progress-train", "progress-score", "queries", "queries-table", "leaderboard",
    "leaderboard-table", "leaderboard-search", "veto-selected", "add-concept", "gallery",
    "gallery-grid", "gallery-item", "charts", "chart-knn", "chart-reward", "chart-loss",
    "chart-kept", "concept-map", "event-log", "stream-state", "flash-area",
]


@dataclass(frozen=True)
class Filled:
    run_id: int
    last_event_id: int
    rewards: dict[int, list[float]]
    """Concept index -> rewards of its images in iteration 2."""


def _fill(session: Session, data_dir: Path) -> Filled:
    """A run in iteration 2: 30 concepts, iteration 1 recorded, iteration 2's queries sent and
    half their images in, phase events of both iterations."""
    run = make_running_run(session, name="parrots")
    upsert_concepts(session, run.id, concept_rows(30))
    add_event(session, run.id, "phase", {"phase": "train", "done": 60, "total": 60})  # old
    record_iteration(
        session, run.id, 1, model="uniform", mean_image_reward=0.25, mean_concept_reward=0.3,
        loss_mean=5.5, knn_accuracy=0.4,
    )
    add_event(session, run.id, "iteration", {"number": 1, "mean_image_reward": 0.25})
    set_run_progress(session, run.id, iteration=2, phase="download", done=3, total=10)
    add_event(session, run.id, "phase", {"phase": "search", "done": 4, "total": 4})
    add_event(session, run.id, "phase", {"phase": "download", "done": 1, "total": 10})
    queries = [
        {"concept_index": i, "text": f"query {i}", "predicted_mu": 0.1 * i,
         "predicted_sigma": 0.2, "probability": 0.25, "tier": 0}
        for i in (2, 5, 7, 11)
    ]
    add_queries(session, run.id, 2, queries)
    rewards = {2: [0.5, 0.7], 5: [0.2]}
    images = []
    for concept, values in rewards.items():
        for k, reward in enumerate(values):
            key = f"{concept}-{k}"
            row = image_row(run.id, key, iteration=2, concept_index=concept, reward=reward,
                            kept=k == 0)
            write_image(data_dir, row["path"], seed=k)
            images.append(row)
    images.append(image_row(run.id, "old", iteration=1, concept_index=9, reward=0.9, kept=True))
    images.append(image_row(run.id, "old2", iteration=1, concept_index=9, reward=0.1))
    add_images(session, run.id, images)
    last = add_event(session, run.id, "images", {"iteration": 2, "count": 3})
    return Filled(run.id, last.id, rewards)


@pytest.fixture
def filled(tmp_path: Path, db_url: str, engine: Engine) -> Iterator[tuple[TestClient, Filled]]:
    data_dir = tmp_path / "data"
    with session_scope(make_session_factory(engine)) as session:
        filled = _fill(session, data_dir)
    with logged_in(create_app(Settings(data_dir=data_dir, database_url=db_url))) as client:
        yield client, filled


def _row(html: str, concept: int, testid: str) -> str:
    """The text of the cell ``testid`` in the row of ``concept``."""
    row = html.split(f'data-concept-index="{concept}"', 1)[1].split("</tr>", 1)[0]
    match = re.search(rf'data-testid="{testid}">([^<]*)<', row)
    assert match, (concept, testid)
    return match.group(1).strip()


def test_the_dashboard_renders_every_region(filled: tuple[TestClient, Filled]) -> None:
    client, run = filled
    page = client.get(f"/runs/{run.run_id}")
    assert page.status_code == 200
    text = page.text
    for testid in TEST_IDS:
        assert f'data-testid="{testid}"' in text, testid
    stream = f"http://testserver/runs/{run.run_id}/events?last_id={run.last_event_id}"
    assert f'sse-connect="{stream}"' in text
    # the controls of a running run
    assert re.search(r'data-testid="control-pause"[^>]*>Pause', text)
    assert re.search(r'data-testid="control-resume"[^>]*disabled', text)
    # queries of iteration 2, with what their images brought so far
    assert 'data-testid="queries-iteration">2<' in text
    assert _row(text, 2, "query-images") == "2" and _row(text, 2, "query-reward") == "0.600"
    assert _row(text, 5, "query-images") == "1" and _row(text, 5, "query-reward") == "0.200"
    assert _row(text, 7, "query-images") == "0" and _row(text, 7, "query-reward") == "\u2013"
    # the event log, newest first
    ids = [int(i) for i in re.findall(r'<li class="event [^"]*" id="event-(\d+)"', text)]
    assert ids[0] == run.last_event_id and ids == sorted(ids, reverse=True)


def test_progress_shows_the_iteration_in_progress(filled: tuple[TestClient, Filled]) -> None:
    client, run = filled
    text = client.get(f"/runs/{run.run_id}/progress").text
    states = dict(re.findall(r'data-testid="progress-(\w+)" data-state="(\w+)"', text))
    assert states == {
        "search": "done", "download": "active", "train": "pending", "score": "pending"
    }
    assert re.search(r'progress-download-count">3/10<', text)  # the run row: freshest
    assert re.search(r'progress-search-count">4/4<', text)


def test_phase_bars_of_a_paused_run(session: Session) -> None:
    run = make_running_run(session)
    set_run_progress(session, run.id, phase="train", done=20, total=60)
    add_event(session, run.id, "phase", {"phase": "search", "done": 8, "total": 8})
    add_event(session, run.id, "phase", {"phase": "train", "done": 20, "total": 60})
    add_event(session, run.id, "phase", {"phase": "embed", "done": "x"})  # an odd payload
    set_run_status(session, run.id, "paused")
    bars = {bar.name: bar for bar in phase_bars(session, run)}
    assert list(bars) == ["search", "download", "train", "score", "embed"]
    assert (bars["search"].state, bars["search"].percent) == ("done", 100.0)
    assert (bars["train"].state, bars["train"].done, bars["train"].total) == ("partial", 20, 60)
    assert bars["download"].state == "pending" and bars["embed"].state == "partial"
    assert bars["embed"].percent is None


@pytest.mark.parametrize(("region", "path"), REGIONS.items())
def test_each_region_is_served_alone(
    filled: tuple[TestClient, Filled], region: str, path: str
) -> None:
    client, run = filled
    reply = client.get(f"/runs/{run.run_id}/{path}")
    assert reply.status_code == 200
    assert reply.text.lstrip().startswith(f'<section id="{region}"')
    assert "<html" not in reply.text
    assert client.get(f"/runs/9999/{path}").status_code == 404


def test_the_log_fragment_and_the_home_page(filled: tuple[TestClient, Filled]) -> None:
    client, run = filled
    log = client.get(f"/runs/{run.run_id}/log").text
    assert log.lstrip().startswith('<ol id="event-log"') and "sse-swap=" in log
    home = client.get("/").text
    assert f'href="http://testserver/runs/{run.run_id}"' in home and "parrots" in home


def test_the_gallery_filters_by_concept_and_iteration(filled: tuple[TestClient, Filled]) -> None:
    client, run = filled

    def shown(**params: int | str) -> list[tuple[int, str]]:
        text = client.get(f"/runs/{run.run_id}/gallery", params=params).text
        items = re.findall(r'data-image-id="(\d+)" data-concept-index="(\d+)"', text)
        rewards = re.findall(r'data-testid="image-reward"[^>]*>reward ([^<]+)<', text)
        return [(int(c), r) for (_, c), r in zip(items, rewards, strict=True)]

    assert shown(concept=2) == [(2, "0.700"), (2, "0.500")]  # best reward first
    assert shown(iteration=1) == [(9, "0.900"), (9, "0.100")]
    assert shown(concept=9, iteration=2) == []
    assert len(shown()) == 5 == len(shown(concept="", iteration=""))  # a blank field: no filter
    assert len(shown()) <= GALLERY_PAGE
    assert client.get(f"/runs/{run.run_id}/gallery", params={"concept": "x"}).status_code == 400
    assert client.get(f"/runs/{run.run_id}/gallery", params={"concept": "²"}).status_code == 400


def test_curves_and_map_json(filled: tuple[TestClient, Filled]) -> None:
    client, run = filled
    curves = client.get(f"/runs/{run.run_id}/curves.json").json()
    assert curves == {
        "iterations": [1],
        "knn_accuracy": [0.4],
        "has_knn": True,
        "mean_image_reward": [0.25],
        "mean_concept_reward": [0.3],
        "loss": [5.5],
        "kept_share": [0.5],  # one of iteration 1's two images was kept
    }
    client.post(f"/runs/{run.run_id}/vetoes", data={"veto_one": "4"})
    points = client.get(f"/runs/{run.run_id}/map.json").json()
    assert points["total"] == 30 == points["shown"]
    by_index = {p["index"]: p for p in points["points"]}
    assert by_index[4]["vetoed"] is True and by_index[3]["vetoed"] is False
    expected = concept_rows(30)
    assert by_index[7]["x"] == pytest.approx(expected[7]["map_x"])
    assert by_index[7]["queried"] == (expected[7]["times_queried"] > 0)
    assert client.get("/runs/9999/curves.json").status_code == 404


def test_the_map_is_thinned_but_keeps_queried_and_vetoed_concepts(session: Session) -> None:
    run = make_running_run(session)
    rows = concept_rows(100)
    for i, row in enumerate(rows):
        row["times_queried"] = 1 if i in (3, 57) else 0
    rows[1]["map_x"] = None  # not placed yet
    upsert_concepts(session, run.id, rows)
    session.flush()
    record_veto(session, run.id, "veto", concept_index=41)
    points, total = map_points(session, run.id, max_points=10)
    assert total == 99
    assert [c.concept_index for c in points] == sorted({*range(0, 100, 10), 3, 57, 41})
