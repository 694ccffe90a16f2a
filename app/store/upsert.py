"""``INSERT ... ON CONFLICT`` for the two databases the store runs on.

SQLite and PostgreSQL spell the upsert the same way, but SQLAlchemy builds it from each
dialect's own ``insert``; :func:`dialect_insert` picks the one of the session's database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store.models import Base

CHUNK_ROWS: Final = 500
"""Rows per statement: well under SQLite's limit of 32,766 bound parameters at ~20 columns."""

T = TypeVar("T")


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """An ``insert(model)`` that has ``on_conflict_do_nothing/do_update`` for this database."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {name}")


def chunks(rows: Sequence[T], size: int = CHUNK_ROWS) -> Iterator[Sequence[T]]:
    """``rows`` in consecutive slices of at most ``size``."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
