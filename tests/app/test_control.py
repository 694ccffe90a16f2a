"""Vetoes, added concepts and the run controls, through the real app on a real database."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.main import create_app
from app.services.runs import available_actions, control_run
from app.settings import Settings
from app.store.concepts import get_concept, list_concepts, upsert_concepts
from app.store.db import make_session_factory, session_scope
from app.store.events import events_after
from app.store.models import Concept, Run, RunStatus, Veto
from app.store.runs import set_run_progress, set_run_status
from tests.app.auth import logged_in
from tests.app.factories import concept_rows, make_run, make_running_run

HTMX = {"HX-Request": "true"}


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url))
    with logged_in(app) as client:
        yield client


def _read(engine: Engine) -> Session:
    return make_session_factory(engine)()


def _running_run_with_concepts(engine: Engine, n: int = 8) -> int:
    with session_scope(make_session_factory(engine)) as session:
        run = make_running_run(session)
        upsert_concepts(session, run.id, concept_rows(n))
        set_run_progress(session, run.id, iteration=2)
        return run.id


def _events(engine: Engine, run_id: int, after: int = 0) -> list[tuple[str, dict[str, object]]]:
    with _read(engine) as session:
        return [(e.kind, e.payload) for e in events_after(session, run_id, after, limit=1000)]


def _last_event_id(engine: Engine, run_id: int) -> int:
    with _read(engine) as session:
        events = events_after(session, run_id, 0, limit=1000)
        return events[-1].id if events else 0


def test_veto_many_at_once_then_unveto_one(client: TestClient, engine: Engine) -> None:
    run_id = _running_run_with_concepts(engine)
    before = _last_event_id(engine, run_id)

    reply = client.post(
        f"/runs/{run_id}/vetoes", data={"action": "veto", "pick": ["3", "1", "3"]}, headers=HTMX
    )
    assert reply.status_code == 200
    assert reply.headers["HX-Trigger"] == "ie:changed"
    assert "Vetoed 2 concept(s)" in reply.text
    with _read(engine) as session:
        assert [c.concept_index for c in _vetoed(session, run_id)] == [1, 3]
        vetoes = session.scalars(select(Veto).where(Veto.run_id == run_id)).all()
        assert [(v.action.value, v.concept_index, v.iteration) for v in vetoes] == [
            ("veto", 1, 2),
            ("veto", 3, 2),
        ]
        lemma = get_concept(session, run_id, 1).lemma  # type: ignore[union-attr]
    events = _events(engine, run_id, before)
    assert [(kind, payload["concept_index"]) for kind, payload in events] == [
        ("veto", 1),
        ("veto", 3),
    ]
    assert events[0][1]["lemma"] == lemma

    # the leaderboard shows it at once
    board = client.get(f"/runs/{run_id}/leaderboard", params={"sort": "index"}).text
    row = board.split('data-concept-index="1"', 1)[1].split("</tr>", 1)[0]
    assert 'data-testid="vetoed-badge"' in row and 'name="unveto_one"' in row

    # without JavaScript: a redirect back to the view the form came from
    reply = client.post(
        f"/runs/{run_id}/vetoes",
        data={"unveto_one": "3", "pick": ["1"], "back": "?sort=mu&page=2"},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"].endswith(f"/runs/{run_id}?sort=mu&page=2")
    with _read(engine) as session:
        assert [c.concept_index for c in _vetoed(session, run_id)] == [1]
    assert _events(engine, run_id)[-1][1]["action"] == "unveto"


def _vetoed(session: Session, run_id: int) -> list[Concept]:
    rows, _ = list_concepts(session, run_id, sort="index", vetoed=True)
    return rows


def test_a_hostile_back_link_is_dropped(client: TestClient, engine: Engine) -> None:
    run_id = _running_run_with_concepts(engine)
    reply = client.post(
        f"/runs/{run_id}/vetoes",
        data={"veto_one": "0", "back": "//evil.example/x"},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"].endswith(f"/runs/{run_id}")


def test_add_a_concept_mid_run(client: TestClient, engine: Engine) -> None:
    run_id = _running_run_with_concepts(engine)
    reply = client.post(f"/runs/{run_id}/concepts", data={"phrase": "  red   macaw "}, headers=HTMX)
    assert reply.status_code == 200 and "red macaw" in reply.text
    with _read(engine) as session:
        veto = session.scalars(select(Veto).where(Veto.run_id == run_id)).one()
        assert (veto.action.value, veto.phrase, veto.iteration) == ("add", "red macaw", 2)
    kind, payload = _events(engine, run_id)[-1]
    assert kind == "veto" and payload["phrase"] == "red macaw"


@pytest.mark.parametrize(
    ("path", "data", "status", "message"),
    [
        ("vetoes", {"action": "veto"}, 400, "tick at least one concept"),
        ("vetoes", {"action": "veto", "pick": ["x1"]}, 400, "is not a concept number"),
        ("vetoes", {"pick": ["1", "²"]}, 400, "pick: '²' is not a concept number"),
        ("vetoes", {"veto_one": "1" * 5000}, 400, "veto_one: '1111"),
        ("vetoes", {"unveto_one": str(2**31)}, 400, "is not a concept number"),
        ("vetoes", {"action": "explode", "pick": ["1"]}, 400, "neither veto nor unveto"),
        ("vetoes", {"veto_one": "99"}, 404, "has no concept 99"),
        ("concepts", {"phrase": "   "}, 400, "needs a phrase"),
    ],
)
def test_unusable_steering_is_refused_and_records_nothing(
    client: TestClient,
    engine: Engine,
    path: str,
    data: dict[str, object],
    status: int,
    message: str,
) -> None:
    run_id = _running_run_with_concepts(engine)
    before = _last_event_id(engine, run_id)
    reply = client.post(f"/runs/{run_id}/{path}", data=data, headers=HTMX)
    assert reply.status_code == status
    assert message in html.unescape(reply.text)
    assert _events(engine, run_id, before) == []


def test_steering_an_ended_run_is_a_conflict(client: TestClient, engine: Engine) -> None:
    run_id = _running_run_with_concepts(engine)
    with session_scope(make_session_factory(engine)) as session:
        set_run_status(session, run_id, "finished")
    reply = client.post(f"/runs/{run_id}/vetoes", data={"veto_one": "1"})
    assert reply.status_code == 409 and "has ended" in reply.text
    assert client.post("/runs/9999/vetoes", data={"veto_one": "1"}).status_code == 404


# -- pause, resume, cancel --------------------------------------------------------------------

RUNNING = ("queued", "running")


@pytest.mark.parametrize(
    ("path", "asked", "action", "status", "flag", "kinds"),
    [
        (RUNNING, False, "pause", "running", True, ["control"]),
        (RUNNING, True, "pause", "running", True, []),  # a second click
        (RUNNING, True, "resume", "running", False, ["control"]),  # the pause taken back
        (("queued",), False, "pause", "paused", False, ["status"]),
        ((*RUNNING, "paused"), False, "pause", "paused", False, []),
        ((*RUNNING, "paused"), False, "resume", "queued", False, ["status"]),
        (("queued", "running", "failed"), False, "resume", "queued", False, ["status"]),
        ((), False, "resume", "queued", False, ["status"]),  # a draft starts
        (("queued",), False, "resume", "queued", False, []),
        (RUNNING, False, "cancel", "cancelling", False, ["status"]),
        (RUNNING, True, "cancel", "cancelling", False, ["status"]),  # cancel wins
        (("queued",), False, "cancel", "cancelling", False, ["status"]),
        ((*RUNNING, "paused"), False, "cancel", "cancelled", False, ["status"]),
        ((), False, "cancel", "cancelled", False, ["status"]),
        ((*RUNNING, "cancelling"), False, "cancel", "cancelling", False, []),
    ],
)
def test_controls_change_the_store_and_emit_events(
    client: TestClient,
    engine: Engine,
    path: tuple[str, ...],
    asked: bool,
    action: str,
    status: str,
    flag: bool,
    kinds: list[str],
) -> None:
    run_id = _run_at(engine, path, pause_requested=asked)
    before = _last_event_id(engine, run_id)

    reply = client.post(f"/runs/{run_id}/{action}", headers=HTMX)

    assert reply.status_code == 200, reply.text
    assert reply.headers["HX-Trigger"] == "ie:changed"
    with _read(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert (run.status.value, run.pause_requested) == (status, flag)
    assert [kind for kind, _ in _events(engine, run_id, before)] == kinds


def _run_at(engine: Engine, path: tuple[str, ...], *, pause_requested: bool = False) -> int:
    with session_scope(make_session_factory(engine)) as session:
        run = make_run(session)
        for status in path:
            set_run_status(session, run.id, status)
        run.pause_requested = pause_requested
        return run.id


@pytest.mark.parametrize(
    ("path", "action", "message"),
    [
        (("queued", "running", "finished"), "pause", "cannot go from 'finished' to 'paused'"),
        (("queued", "running", "finished"), "resume", "cannot go from 'finished' to 'queued'"),
        (("queued", "running", "finished"), "cancel", "allowed from 'finished': none"),
        (("cancelled",), "resume", "cannot go from 'cancelled'"),
        (("queued", "running", "failed"), "cancel", "cannot go from 'failed' to 'cancelling'"),
        (("queued", "cancelling"), "pause", "cannot go from 'cancelling' to 'paused'"),
        (RUNNING, "resume", "is running: there is nothing to resume"),
    ],
)
def test_illegal_controls_are_a_clear_409(
    client: TestClient, engine: Engine, path: tuple[str, ...], action: str, message: str
) -> None:
    run_id = _run_at(engine, path)
    before = _last_event_id(engine, run_id)
    for headers in (HTMX, {}):
        reply = client.post(f"/runs/{run_id}/{action}", headers=headers)
        assert reply.status_code == 409
        assert message in html.unescape(reply.text)
    assert _events(engine, run_id, before) == []


def test_controls_without_javascript_redirect_to_the_dashboard(
    client: TestClient, engine: Engine
) -> None:
    run_id = _run_at(engine, RUNNING)
    reply = client.post(f"/runs/{run_id}/pause", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"].endswith(f"/runs/{run_id}")
    page = client.get(reply.headers["location"]).text
    assert 'data-testid="pause-requested"' in page
    assert client.post("/runs/9999/pause").status_code == 404
    assert client.post(f"/runs/{run_id}/explode").status_code == 422


def test_the_worker_pausing_clears_the_request(session: Session) -> None:
    run = make_running_run(session)
    run.pause_requested = True
    set_run_status(session, run.id, RunStatus.PAUSED)  # the worker, at the iteration boundary
    assert run.pause_requested is False
    set_run_status(session, run.id, RunStatus.QUEUED)
    set_run_status(session, run.id, RunStatus.RUNNING)
    run.pause_requested = True
    set_run_status(session, run.id, RunStatus.QUEUED)  # the worker lost its lease
    assert run.pause_requested is True  # still wanted when a worker picks it up again
    set_run_status(session, run.id, RunStatus.CANCELLING)
    assert run.pause_requested is False  # a cancel overtakes a pause


PATHS = {
    "draft": (),
    "queued": ("queued",),
    "running": RUNNING,
    "paused": (*RUNNING, "paused"),
    "cancelling": (*RUNNING, "cancelling"),
    "cancelled": ("cancelled",),
    "finished": (*RUNNING, "finished"),
    "failed": (*RUNNING, "failed"),
}


def test_enabled_controls_are_exactly_those_that_do_something(
    session: Session, tmp_path: Path
) -> None:
    """For every status (with and without a pending pause) and action: the dashboard enables
    the button exactly when the action changes the run; otherwise it is refused or a no-op."""
    settings = Settings(data_dir=tmp_path)
    assert set(PATHS) == {s.value for s in RunStatus}
    for status, path in PATHS.items():
        for asked in (False, True):
            for action in ("pause", "resume", "cancel"):
                run = make_run(session)
                for step in path:
                    set_run_status(session, run.id, step)
                run.pause_requested = asked and status in ("queued", "running")
                session.commit()
                enabled = action in available_actions(run)
                before = len(events_after(session, run.id, limit=1000))
                try:
                    control_run(session, settings, run.id, action)
                    changed = len(events_after(session, run.id, limit=1000)) > before
                except Conflict:
                    session.rollback()
                    changed = False
                assert enabled == changed, (status, asked, action)
