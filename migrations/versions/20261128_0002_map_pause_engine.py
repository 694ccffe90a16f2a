"""Concept-map coordinates, the pause request and the run's search engine.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

* ``concepts.map_x``, ``concepts.map_y``: where the concept sits on the dashboard's 2-D concept
  map (a projection of its text embedding); NULL until the worker writes them.
* ``runs.pause_requested``: a person asked a running run to pause. The worker finishes the
  iteration in progress, then moves the run to ``paused`` (which clears the flag). A flag rather
  than a ``pausing`` status: the run *is* still running until the iteration boundary, so every
  rule about running runs (leases, heartbeats, transitions) keeps holding.
* ``runs.search_engine``: which image web the worker searches (``offline`` = the built-in corpus).
  Not part of the engine's ``ExplorerConfig``, which takes the engine as an argument.

Written by hand; plain SQLAlchemy types, as in 0001. Every change is an in-place ``ALTER TABLE``
(``recreate="never"``), also on SQLite (3.35+ drops columns natively): batch mode's copy-and-move
would drop ``runs``, and with foreign keys on, SQLite's implicit ``DELETE`` of a dropped table
cascades into every child table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("concepts", recreate="never") as batch:
        batch.add_column(sa.Column("map_x", sa.Float(), nullable=True))
        batch.add_column(sa.Column("map_y", sa.Float(), nullable=True))
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.add_column(
            sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column(
                "search_engine", sa.String(32), nullable=False, server_default="offline"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.drop_column("search_engine")
        batch.drop_column("pause_requested")
    with op.batch_alter_table("concepts", recreate="never") as batch:
        batch.drop_column("map_y")
        batch.drop_column("map_x")
