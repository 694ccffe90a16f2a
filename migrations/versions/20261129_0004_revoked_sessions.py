"""Browser sessions ended by logging out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

* ``revoked_sessions``: one row per session ended on ``POST /logout``, keyed by ``token_hash``
  (hex SHA-256 of the session's CSRF token), with the cookie's ``issued_at`` and ``revoked_at``.
  A signed cookie stays valid until it expires, so the access check refuses a session found
  here; rows whose cookie has expired (``issued_at`` older than ``IE_SESSION_HOURS``) are
  deleted at a later logout, hence the index on ``issued_at``.

Written by hand, as 0002; plain SQLAlchemy types, as in 0001. A new table only: no existing
table is touched on the way up or down.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_revoked_sessions")),
    )
    op.create_index("ix_revoked_sessions_issued_at", "revoked_sessions", ["issued_at"])


def downgrade() -> None:
    op.drop_table("revoked_sessions")  # drops its index too
