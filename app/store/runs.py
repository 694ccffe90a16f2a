"""Runs: creation, reading, and the status state machine.

Store functions flush but never commit; the caller owns the transaction.

The run state machine (:data:`TRANSITIONS`)::

    from        to
    draft       queued, cancelled
    queued      running, paused, cancelling, cancelled, failed
    running     queued (the worker lost its lease), paused, cancelling, finished, failed
    paused      queued (resume), cancelled, failed
    cancelling  cancelled, failed
    failed      queued (resume from the last checkpoint)
    cancelled   -  (final)
    finished    -  (final)

Setting the status a run already has is a no-op, so a redelivered worker message cannot fail.

Pausing is asked, not imposed: :func:`request_pause` raises ``pause_requested`` on a running run,
and the worker moves it to ``paused`` at the next iteration boundary. ``paused``, ``cancelling``
and the ended statuses clear the flag; :func:`withdraw_pause` clears it while the run is still
running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, IllegalTransition, NotFound
from app.store.events import add_event
from app.store.models import Run, RunStatus, Upload, utcnow
from app.store.values import clean_json

S = RunStatus
TRANSITIONS: Final[Mapping[RunStatus, frozenset[RunStatus]]] = {
    S.DRAFT: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.CANCELLING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.QUEUED, S.PAUSED, S.CANCELLING, S.FINISHED, S.FAILED}),
    S.PAUSED: frozenset({S.QUEUED, S.CANCELLED, S.FAILED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED}),
    S.CANCELLED: frozenset(),
    S.FINISHED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
}
"""Allowed status changes: ``TRANSITIONS[current]`` is the set of statuses it may go to."""

ENDED: Final = frozenset({S.CANCELLED, S.FINISHED, S.FAILED})
"""Statuses in which no worker holds the run."""


def create_run(
    session: Session,
    *,
    name: str,
    config: Mapping[str, Any],
    upload_id: int | None = None,
    search_engine: str = "offline",
    engine_config: Mapping[str, Any] | None = None,
    licenses: Sequence[str] = (),
) -> Run:
    """A new draft run. ``config`` is an ``ExplorerConfig.to_dict()``; ``upload_id`` must exist.
    ``engine_config`` (web engines, an ``EnginesConfig.to_dict()``) and ``licenses`` (license
    codes, empty: any) apply when ``search_engine`` is ``web``."""
    if upload_id is not None and session.get(Upload, upload_id) is None:
        raise NotFound(f"upload {upload_id} does not exist")
    run = Run(
        name=name,
        config=clean_json(dict(config)),
        upload_id=upload_id,
        search_engine=search_engine,
        engine_config=clean_json(dict(engine_config)) if engine_config is not None else None,
        licenses=list(licenses),
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: int, *, for_update: bool = False) -> Run:
    """The run ``run_id``; :class:`NotFound` when there is none.

    ``for_update`` locks the row until the transaction ends (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite has one writer at a time anyway), so a check-then-change cannot race
    another writer's.
    """
    run = session.get(Run, run_id, with_for_update=for_update or None)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


def list_runs(
    session: Session,
    *,
    status: RunStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Run]:
    """Runs, newest first, optionally only those with ``status``."""
    stmt = select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)
    if status is not None:
        stmt = stmt.where(Run.status == status)
    return list(session.scalars(stmt))


def set_run_status(
    session: Session,
    run_id: int,
    status: RunStatus | str,
    *,
    error: str | None = None,
    now: datetime | None = None,
) -> Run:
    """Move run ``run_id`` to ``status`` if :data:`TRANSITIONS` allows it, and record an event.

    Raises :class:`IllegalTransition` otherwise, and :class:`Conflict` when a run without target
    images is queued. Side effects: ``running`` stamps ``started_at`` (first time only); an
    ended status stamps ``finished_at`` and drops the lease; ``failed`` stores ``error``;
    ``queued`` clears the error of an earlier failure. A ``status`` event carries the change.
    """
    run = get_run(session, run_id)
    new = RunStatus(status)
    current = RunStatus(run.status)
    if new == current:
        return run
    if new not in TRANSITIONS[current]:
        allowed = sorted(s.value for s in TRANSITIONS[current])
        raise IllegalTransition(run_id, current.value, new.value, allowed)
    if new == S.QUEUED and run.upload_id is None:
        raise Conflict(f"run {run_id} has no target images: choose an upload before starting it")
    now = now or utcnow()
    run.status = new
    run.updated_at = now
    if new == S.RUNNING and run.started_at is None:
        run.started_at = now
    if new in ENDED:
        run.finished_at = now
        run.worker_id = None
        run.lease_until = None
    if new in (S.PAUSED, S.CANCELLING) or new in ENDED:
        run.pause_requested = False  # done, or overtaken by a cancel
    if new == S.FAILED:
        run.error = error or "the run failed (no reason given)"
    elif new == S.QUEUED:
        run.error = None
        run.finished_at = None
    payload: dict[str, Any] = {"status": new.value, "previous": current.value}
    if new == S.FAILED:
        payload["error"] = run.error
    add_event(session, run_id, "status", payload)
    session.flush()
    return run


def set_run_progress(
    session: Session,
    run_id: int,
    *,
    iteration: int | None = None,
    phase: str | None = None,
    done: int | None = None,
    total: int | None = None,
    now: datetime | None = None,
) -> Run:
    """Record where a running run is (for the dashboard); also counts as a heartbeat.

    Arguments left None keep their stored value, except ``done`` and ``total``, which are reset
    whenever ``phase`` changes.
    """
    run = get_run(session, run_id)
    now = now or utcnow()
    if iteration is not None:
        run.iteration = iteration
    if phase is not None and phase != run.phase:
        run.phase = phase
        run.phase_done = None
        run.phase_total = None
    if done is not None:
        run.phase_done = done
    if total is not None:
        run.phase_total = total
    run.heartbeat_at = now
    run.updated_at = now
    session.flush()
    return run


def request_pause(session: Session, run_id: int, *, now: datetime | None = None) -> Run:
    """Ask running run ``run_id`` to pause at its next iteration boundary; add a ``control``
    event. A no-op when already asked. Raises :class:`IllegalTransition` unless it is running."""
    run = get_run(session, run_id)
    if run.status != S.RUNNING:
        allowed = sorted(s.value for s in TRANSITIONS[RunStatus(run.status)])
        raise IllegalTransition(run_id, run.status.value, "pause-requested", allowed)
    if not run.pause_requested:
        run.pause_requested = True
        run.updated_at = now or utcnow()
        add_event(session, run_id, "control", {"request": "pause", "status": run.status.value})
    session.flush()
    return run


def withdraw_pause(session: Session, run_id: int, *, now: datetime | None = None) -> Run:
    """Take back a pause request of run ``run_id`` that has not taken effect; add a ``control``
    event. A no-op when none is pending."""
    run = get_run(session, run_id)
    if run.pause_requested:
        run.pause_requested = False
        run.updated_at = now or utcnow()
        add_event(session, run_id, "control", {"request": "resume", "status": run.status.value})
    session.flush()
    return run


def set_engine_health(
    session: Session, run_id: int, health: Mapping[str, Any], *, event: bool = True
) -> Run:
    """Store the run's web engines' health (``SpreadHealth.as_dict()``) and, with ``event``, add
    an ``engines`` event summing it up (each engine's status, requests, errors, quota left)."""
    run = get_run(session, run_id)
    run.engine_health = clean_json(dict(health))
    if event:
        engines = [
            {k: e.get(k) for k in ("name", "status", "requests", "errors", "quota_left_today",
                                   "latency_ms_mean")}
            for e in health.get("engines") or [] if isinstance(e, Mapping)
        ]
        add_event(session, run_id, "engines", {"engines": engines,
                                               "queries": health.get("queries")})
    session.flush()
    return run
