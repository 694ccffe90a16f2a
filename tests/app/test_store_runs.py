"""Runs and their events, on SQLite and PostgreSQL after the real migrations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from app.errors import Conflict, IllegalTransition, NotFound
from app.store.events import add_event, events_after
from app.store.models import RunStatus
from app.store.runs import (
    TRANSITIONS,
    create_run,
    get_run,
    list_runs,
    set_run_progress,
    set_run_status,
)
from tests.app.factories import make_run


def test_create_and_get_run_round_trips_config_and_times(session: Session) -> None:
    run = make_run(session, name="birds")
    session.commit()
    session.expire_all()

    stored = get_run(session, run.id)
    assert stored.status == RunStatus.DRAFT
    assert stored.name == "birds"
    assert stored.config == {"iterations": 3, "seed": 0}
    assert stored.created_at.tzinfo is not None  # UTC-aware on both databases
    assert abs((datetime.now(UTC) - stored.created_at).total_seconds()) < 60


def test_create_run_refuses_an_unknown_upload(session: Session) -> None:
    with pytest.raises(NotFound, match="upload 999"):
        create_run(session, name="x", config={}, upload_id=999)


def test_get_run_of_unknown_id_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="run 42 does not exist"):
        get_run(session, 42)


def test_list_runs_newest_first_and_by_status(session: Session) -> None:
    first = make_run(session, name="a")
    second = make_run(session, name="b")
    set_run_status(session, second.id, "queued")
    session.commit()

    assert [r.id for r in list_runs(session)] == [second.id, first.id]
    assert [r.id for r in list_runs(session, status=RunStatus.QUEUED)] == [second.id]
    assert [r.id for r in list_runs(session, limit=1)] == [second.id]


def test_a_run_goes_through_its_life_and_stamps_times(session: Session) -> None:
    run = make_run(session)
    for status in ("queued", "running", "paused", "queued", "running", "finished"):
        set_run_status(session, run.id, status)
    session.commit()

    assert run.status == RunStatus.FINISHED
    assert run.started_at is not None and run.finished_at is not None
    assert run.started_at <= run.finished_at
    kinds = [
        (e.kind, e.payload["previous"], e.payload["status"]) for e in events_after(session, run.id)
    ]
    assert kinds == [
        ("status", "draft", "queued"),
        ("status", "queued", "running"),
        ("status", "running", "paused"),
        ("status", "paused", "queued"),
        ("status", "queued", "running"),
        ("status", "running", "finished"),
    ]


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), "running"),  # draft cannot run before it is queued
        (("queued", "running", "finished"), "queued"),  # finished is final
        (("cancelled",), "queued"),
        (("queued", "cancelling"), "running"),
    ],
)
def test_illegal_transitions_are_refused_with_the_allowed_ones(
    session: Session, path: tuple[str, ...], illegal: str
) -> None:
    run = make_run(session)
    for status in path:
        set_run_status(session, run.id, status)
    before = run.status

    with pytest.raises(IllegalTransition) as caught:
        set_run_status(session, run.id, illegal)

    assert f"to {illegal!r}" in caught.value.message
    assert caught.value.status_code == 409
    assert run.status == before  # nothing changed


def test_every_status_has_a_rule_and_ended_runs_are_final() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    assert TRANSITIONS[RunStatus.FINISHED] == frozenset()
    assert TRANSITIONS[RunStatus.CANCELLED] == frozenset()


def test_setting_the_same_status_again_is_a_no_op(session: Session) -> None:
    run = make_run(session)
    set_run_status(session, run.id, "queued")
    set_run_status(session, run.id, "queued")  # a redelivered message
    assert len(events_after(session, run.id)) == 1


def test_queueing_a_run_without_target_images_is_a_conflict(session: Session) -> None:
    run = make_run(session, with_upload=False)
    with pytest.raises(Conflict, match="no target images"):
        set_run_status(session, run.id, "queued")


def test_failure_keeps_the_error_and_a_requeue_clears_it(session: Session) -> None:
    run = make_run(session)
    set_run_status(session, run.id, "queued")
    set_run_status(session, run.id, "running")
    set_run_status(session, run.id, "failed", error="non-finite loss at step 12")
    assert run.error == "non-finite loss at step 12"
    assert events_after(session, run.id)[-1].payload["error"] == "non-finite loss at step 12"

    set_run_status(session, run.id, "queued")  # resume from the checkpoint
    assert run.error is None and run.finished_at is None


def test_progress_is_recorded_and_reset_with_each_phase(session: Session) -> None:
    run = make_run(session)
    set_run_progress(session, run.id, iteration=2, phase="download", done=3, total=10)
    assert (run.iteration, run.phase, run.phase_done, run.phase_total) == (2, "download", 3, 10)
    set_run_progress(session, run.id, phase="train")
    assert (run.phase, run.phase_done, run.phase_total) == ("train", None, None)
    assert run.heartbeat_at is not None


def test_events_after_returns_later_events_in_order_and_pages(session: Session) -> None:
    run = make_run(session)
    other = make_run(session)
    ids = []
    for n in range(5):
        ids.append(add_event(session, run.id, "progress", {"n": n}).id)
        add_event(session, other.id, "progress", {"n": n})  # another run's events are not ours
    session.commit()

    assert ids == sorted(ids)
    assert [e.payload["n"] for e in events_after(session, run.id)] == [0, 1, 2, 3, 4]
    assert [e.id for e in events_after(session, run.id, ids[1])] == ids[2:]
    assert [e.id for e in events_after(session, run.id, ids[1], limit=2)] == ids[2:4]
    assert events_after(session, run.id, ids[-1]) == []


def test_event_payloads_lose_nan_not_the_event(session: Session) -> None:
    run = make_run(session)
    event = add_event(
        session, run.id, "iteration", {"reward": float("nan"), "ok": [1.5, float("inf")]}
    )
    session.commit()
    session.expire_all()
    assert events_after(session, run.id)[0].payload == {"reward": None, "ok": [1.5, None]}
    assert event.id > 0
