"""The migrations make exactly the models' schema, and go down and up again cleanly."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

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
    "revoked_sessions",
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
            assert MigrationContext.configure(conn).get_current_revision() == "0004"
    finally:
        engine.dispose()


def _insert_old_run(conn: Connection) -> None:
    """Run 1, as an earlier version of the schema holds it."""
    conn.execute(
        text(
            "INSERT INTO runs (id, name, status, config, created_at, updated_at, "
            "iteration) VALUES (1, 'old', 'running', '{}', :t, :t, 2)"
        ),
        {"t": datetime(2026, 1, 1, tzinfo=UTC)},
    )


def test_0002_keeps_existing_rows_on_the_way_up_and_down(empty_db_url: str) -> None:
    """Rows written at 0001 get the new columns' defaults, and going back down to 0001 drops
    only the columns: no table is rebuilt, so nothing cascades away."""
    upgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            _insert_old_run(conn)
            conn.execute(
                text(
                    "INSERT INTO concepts (run_id, concept_index, lemma, text, source, "
                    "times_queried, vetoed) VALUES (1, 0, 'cat', '', 'wordnet', 0, false)"
                )
            )
        upgrade(empty_db_url)
        with engine.connect() as conn:
            run = conn.execute(text("SELECT pause_requested, search_engine FROM runs")).one()
            assert (bool(run[0]), run[1]) == (False, "offline")
            assert conn.execute(text("SELECT map_x, map_y FROM concepts")).one() == (None, None)
        downgrade(empty_db_url, "0001")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM concepts")).scalar() == 1
            columns = {c["name"] for c in inspect(conn).get_columns("runs")}
            assert "pause_requested" not in columns and "iteration" in columns
    finally:
        engine.dispose()


def test_0004_adds_and_drops_only_its_own_table(empty_db_url: str) -> None:
    """Going up to 0004 and back to 0003 leaves the other tables and their rows alone."""
    upgrade(empty_db_url, "0003")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            _insert_old_run(conn)
        upgrade(empty_db_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO revoked_sessions (token_hash, issued_at, revoked_at) "
                    "VALUES (:h, :t, :t)"
                ),
                {"h": "0" * 64, "t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
        downgrade(empty_db_url, "0003")
        assert _tables(empty_db_url) == TABLES - {"revoked_sessions"} | {"alembic_version"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM runs")).scalar() == "old"
    finally:
        engine.dispose()
