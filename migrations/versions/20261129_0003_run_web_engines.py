"""A run's web engines, license filter and engine health.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

* ``runs.engine_config``: the chosen web engines' configuration (``EnginesConfig.to_dict()``,
  names of key variables only, never keys); NULL for a run on the offline web. A snapshot, so
  editing the engine configuration file changes no run already launched.
* ``runs.licenses``: the license codes a web result must carry to be downloaded (``[]``: any).
* ``runs.engine_health``: each engine's health as the worker last recorded it (requests,
  errors, latency, quota left, status); NULL until the first fetch.

``runs.search_engine`` (0002) says which of the two applies: ``offline`` or ``web``.

Written by hand, as 0002: in-place ``ALTER TABLE`` (``recreate="never"``) on every database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.add_column(sa.Column("engine_config", _json(), nullable=True))
        batch.add_column(
            sa.Column("licenses", _json(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(sa.Column("engine_health", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.drop_column("engine_health")
        batch.drop_column("licenses")
        batch.drop_column("engine_config")
