"""Events: the rows the live dashboard streams (Server-Sent Events).

An event's ``id`` is its SSE ``Last-Event-ID``: a browser that reconnects asks for the events
after the last id it saw, so a reload loses nothing. Ids grow with insertion order; on
PostgreSQL two transactions that commit out of order can make a reader see a higher id before a
lower one, so the SSE endpoint should hold back events younger than a moment when it serves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
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
