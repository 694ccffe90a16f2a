"""Fixtures of the worker tests: the world (session-wide) and a store per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from ie_engine.demo_targets import make_tuxpaint_target
from ie_engine.search import CorpusIndex, build_corpus, serve_in_background
from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary, load_or_compute_embeddings
from tests.worker.world import VOCAB, WEB_CATEGORIES

POSTGRES_URL = os.environ.get("IE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("IE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Caches (WordNet, embeddings, a small corpus), a corpus server and a labelled target."""
    root = tmp_path_factory.mktemp("worker-world")
    cache = root / "cache"
    embedder = MiniLMEmbedder()
    build_corpus(cache / "corpus", embedder=embedder,
                 exclude=lambda item: not item.category.startswith(WEB_CATEGORIES))
    vocab = build_vocabulary(VOCAB, data_dir=cache)
    load_or_compute_embeddings(vocab.texts(), embedder, cache / "embeddings")
    handle = serve_in_background(CorpusIndex.load(cache / "corpus"), embedder)
    target = root / "target"
    make_tuxpaint_target(target, classes={"bird": ("animals/birds",), "fruit": ("food/fruit",)})
    yield {"cache": cache, "url": handle.url, "target": target, "embedder": embedder}
    handle.stop()


def make_data_dir(world: dict[str, Any], folder: Path) -> Path:
    """A data folder holding the world's caches (WordNet, embeddings), as ``setup`` leaves."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in world["cache"].iterdir():
        if entry.name == "corpus":
            continue
        dest = folder / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dest)
        else:
            shutil.copy2(entry, dest)
    return folder


def postgres_schema() -> tuple[str, str] | None:
    """A fresh schema on the PostgreSQL server and a URL using it; None when it does not answer."""
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT",
                        connect_args={"connect_timeout": 3})
    schema = f"test_worker_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception:
        return None
    finally:
        admin.dispose()
    return schema, f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def redis_unavailable() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


@pytest.fixture(params=["embedded", "redis-postgresql"])
def setup(request: pytest.FixtureRequest, world: dict[str, Any],
          tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    """Settings and sessions of a migrated store: the embedded default (SQLite + filesystem
    broker), or the scaled one (PostgreSQL + Redis, with a key prefix of this test's own)."""
    data_dir = make_data_dir(world, tmp_path / "data")
    schema = None
    if request.param == "embedded":
        settings = Settings(data_dir=data_dir, search_url=world["url"])
    else:
        reason = redis_unavailable()
        if reason:
            pytest.skip(reason)
        made = postgres_schema()
        if made is None:
            pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer")
        schema, url = made
        settings = Settings(data_dir=data_dir, search_url=world["url"], database_url=url,
                            broker_url=REDIS_URL,
                            broker_key_prefix=f"ie-test-{uuid.uuid4().hex[:8]}:")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        yield settings, make_session_factory(engine)
    finally:
        engine.dispose()
        if schema:
            drop_schema(schema)
