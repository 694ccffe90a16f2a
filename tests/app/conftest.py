"""Databases for the app's tests: a real SQLite file, or a real PostgreSQL schema.

Every database here was brought to ``head`` by the real migrations (never ``create_all``),
and every test starts with no rows:

* SQLite: the migrations run once into a template file, and each test gets its own copy;
* PostgreSQL (``IE_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``):
  the migrations run once into a schema of this test session, whose tables are emptied before
  each test; the schema is dropped at the end. Skipped, saying why, when the server does not
  answer.

Migration tests ask for ``empty_db_url`` instead: a new empty file or schema of their own.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Base

POSTGRES_URL = os.environ.get("IE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_postgres_error: str | None = None
_postgres_checked = False


def postgres_unavailable() -> str | None:
    """Why the PostgreSQL server cannot be used (None when it can); asked once per session."""
    global _postgres_checked, _postgres_error
    if not _postgres_checked:
        _postgres_checked = True
        engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:
            _postgres_error = f"PostgreSQL at {POSTGRES_URL} does not answer: {exc}"
        finally:
            engine.dispose()
    return _postgres_error


@pytest.fixture(autouse=True)
def _no_ie_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings: IE_* variables of the calling shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("IE_") and name != "IE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def sqlite_url(folder: Path) -> str:
    """The URL of a new SQLite file in ``folder``."""
    return f"sqlite:///{folder / 'ie.db'}"


def _create_schema() -> tuple[str, str]:
    """A new empty schema on the PostgreSQL server: its name and a URL that uses it."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def _admin_execute(sql: str) -> None:
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema (dropped after the test)."""
    schema, url = _create_schema()
    try:
        yield url
    finally:
        _admin_execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def _postgres_migrated() -> Iterator[str]:
    """This test session's schema at ``head`` (made once, dropped at the end)."""
    schema, url = _create_schema()
    try:
        upgrade(url)
        yield url
    finally:
        _admin_execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at ``head``, copied for each test."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    upgrade(sqlite_url(folder))
    return folder / "ie.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables yet), on each of the two backends."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at ``head`` with no rows, on each of the two backends."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), tmp_path / "ie.db")
        return sqlite_url(tmp_path)
    url = str(request.getfixturevalue("_postgres_migrated"))
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # DELETE: far faster than TRUNCATE on tables this small
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on a migrated database; the test commits when it wants to."""
    with make_session_factory(engine)() as session:
        yield session
