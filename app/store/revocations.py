"""Browser sessions ended by logging out (:class:`~app.store.models.RevokedSession`).

A session cookie is signed, not stored, so it stays valid until it expires; logging out records
the session here, and :mod:`app.access` refuses a recorded session like an expired one. Rows are
keyed by a hash of the session's CSRF token. Store functions flush but never commit.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.store.models import RevokedSession, utcnow
from app.store.upsert import dialect_insert


def session_key(csrf: str) -> str:
    """The row key of the session whose CSRF token is ``csrf`` (hex SHA-256)."""
    return hashlib.sha256(csrf.encode("utf-8")).hexdigest()


def revoke_session(
    session: Session, csrf: str, issued_at: datetime, *, now: datetime | None = None
) -> None:
    """Record the session of CSRF token ``csrf``, issued at ``issued_at``, as ended.

    Recording it twice (two logouts racing with the same cookie) keeps the first row.
    """
    stmt = dialect_insert(session, RevokedSession).values(
        token_hash=session_key(csrf), issued_at=issued_at, revoked_at=now or utcnow()
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["token_hash"]))
    session.flush()


def is_revoked(session: Session, csrf: str) -> bool:
    """Whether the session of CSRF token ``csrf`` was ended by logging out."""
    stmt = select(RevokedSession.token_hash).where(RevokedSession.token_hash == session_key(csrf))
    return session.execute(stmt).first() is not None


def purge_revocations(session: Session, issued_before: datetime) -> int:
    """Forget ended sessions issued before ``issued_before`` (their cookies have expired anyway);
    return how many."""
    stmt = delete(RevokedSession).where(RevokedSession.issued_at < issued_before)
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)
