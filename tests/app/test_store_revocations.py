"""Ended browser sessions in the store, on SQLite and PostgreSQL: recorded once, found by their
CSRF token, forgotten once their cookies have expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.models import RevokedSession
from app.store.revocations import is_revoked, purge_revocations, revoke_session, session_key


def test_a_revoked_session_is_found_by_its_token_only(session: Session) -> None:
    issued = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    revoke_session(session, "token-a", issued)
    revoke_session(session, "token-a", issued + timedelta(hours=1))  # a racing second logout
    session.commit()
    assert is_revoked(session, "token-a")
    assert not is_revoked(session, "token-b") and not is_revoked(session, session_key("token-a"))
    row = session.scalars(select(RevokedSession)).one()
    assert row.token_hash == session_key("token-a") and len(row.token_hash) == 64
    assert row.issued_at == issued and row.revoked_at.tzinfo is not None


def test_purging_forgets_only_sessions_issued_before_the_limit(session: Session) -> None:
    limit = datetime(2026, 11, 15, tzinfo=UTC)
    for name, issued in [("old", limit - timedelta(days=1)), ("edge", limit),
                         ("new", limit + timedelta(days=1))]:
        revoke_session(session, name, issued)
    session.commit()
    assert purge_revocations(session, issued_before=limit) == 1
    session.commit()
    assert session.scalar(select(func.count()).select_from(RevokedSession)) == 2
    assert not is_revoked(session, "old") and is_revoked(session, "edge")
    assert is_revoked(session, "new")
