"""The migrations make exactly the models' schema, and go down and up again cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.store.db import make_engine
from app.store.migrate import downgrade, upgrade
from app.store.models import Base

TABLES = {
    "uploads",
    "upload_files",
    "runs",
    "iterations",
    "concepts",
    "queries",
    "images",
    "vetoes",
    "events",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_round_trip(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == TABLES | {"alembic_version"}

    downgrade(empty_db_url)
    assert _tables(empty_db_url) == {"alembic_version"}

    upgrade(empty_db_url)
    assert _tables(empty_db_url) == TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"the models and the migrations disagree: {diff}"


def test_upgrade_is_idempotent(db_url: str) -> None:
    upgrade(db_url)  # already at head: nothing to do, nothing breaks
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0001"
    finally:
        engine.dispose()
