"""Events: the rows the live dashboard streams (Server-Sent Events).

An event's ``id`` is its SSE ``Last-Event-ID``: a browser that reconnects asks for the events
after the last id it saw, so a reload loses nothing. Ids grow with insertion order; on
PostgreSQL two transactions that commit out of order can make a reader see a higher id before a
lower one, so the SSE endpoint should hold back events younger than a moment when it serves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.models import Event
from app.store.values import clean_json


def add_event(
    session: Session, run_id: int, kind: str, payload: Mapping[str, Any] | None = None
) -> Event:
    """Append an event of ``kind`` (``status``, ``progress``, ``iteration``, ``veto`` ...).

    The row is flushed, so its ``id`` is known when this returns.
    """
    event = Event(run_id=run_id, kind=kind, payload=clean_json(dict(payload or {})))
    session.add(event)
    session.flush()
    return event


def events_after(
    session: Session, run_id: int, last_id: int = 0, *, limit: int = 100
) -> list[Event]:
    """At most ``limit`` events of run ``run_id`` with an id above ``last_id``, oldest first."""
    stmt = (
        select(Event)
        .where(Event.run_id == run_id, Event.id > last_id)
        .order_by(Event.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def latest_event_id(session: Session, run_id: int) -> int:
    """The id of run ``run_id``'s newest event, or 0 when it has none.

    A page that renders the run's state reads this *first*: an event committed while the page
    is being rendered then comes again through the stream (a harmless second refresh) instead of
    being skipped.
    """
    stmt = select(func.max(Event.id)).where(Event.run_id == run_id)
    return int(session.scalar(stmt) or 0)


def recent_events(session: Session, run_id: int, *, limit: int = 50) -> list[Event]:
    """The newest ``limit`` events of run ``run_id``, newest first."""
    stmt = select(Event).where(Event.run_id == run_id).order_by(Event.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def latest_event_of_kind(session: Session, run_id: int, kind: str) -> Event | None:
    """Run ``run_id``'s newest event of ``kind``, or None."""
    stmt = (
        select(Event)
        .where(Event.run_id == run_id, Event.kind == kind)
        .order_by(Event.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def events_of_kind_after(
    session: Session, run_id: int, kind: str, after_id: int = 0, *, limit: int = 2000
) -> list[Event]:
    """The newest ``limit`` events of ``kind`` of run ``run_id`` past ``after_id``, oldest first."""
    stmt = (
        select(Event)
        .where(Event.run_id == run_id, Event.kind == kind, Event.id > after_id)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return list(reversed(list(session.scalars(stmt))))


def missing_event_ids(
    session: Session, after_id: int, upto_id: int, *, window: int = 5000
) -> list[int]:
    """Ids in ``(after_id, upto_id]`` that no visible event has, of any run, lowest first.

    On PostgreSQL an id is taken when a row is inserted but seen by others only when its
    transaction commits, so a missing id is either still in flight (it will appear) or was
    rolled back (it never will). Only the newest ``window`` ids of the range are checked: older
    ones have long been decided.
    """
    low = max(after_id, upto_id - window)
    if upto_id <= low:
        return []
    stmt = select(Event.id).where(Event.id > low, Event.id <= upto_id).order_by(Event.id)
    present = set(session.scalars(stmt))
    return [i for i in range(low + 1, upto_id + 1) if i not in present]
