"""The event stream (SSE) over a real HTTP server: order, ids, resuming, waking, holding back."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.main import create_app
from app.services.live import (
    PollWaker,
    StreamOptions,
    event_stream,
    format_message,
    hold_back,
    publish,
)
from app.settings import Settings
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.events import add_event
from tests.app.auth import bearer
from tests.app.factories import make_run
from tests.app.servers import SseReader, serve

REDIS_URL = "redis://127.0.0.1:6379/0"


def _settings(tmp_path: Path, db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": db_url,
        "sse_poll_seconds": 0.05,
        "sse_heartbeat_seconds": 0.5,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _add_events(engine: Engine, run_id: int, kinds: list[str]) -> list[int]:
    """Commit one event per kind; their ids."""
    with session_scope(make_session_factory(engine)) as session:
        return [add_event(session, run_id, kind, {"n": i}).id for i, kind in enumerate(kinds)]


def _new_run(engine: Engine) -> int:
    with session_scope(make_session_factory(engine)) as session:
        return make_run(session).id


def test_events_arrive_in_order_and_a_reconnect_resumes_without_loss(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    run_id = _new_run(engine)
    other = _new_run(engine)
    first, second = _add_events(engine, run_id, ["status", "phase"])
    app = create_app(_settings(tmp_path, db_url))
    with serve(app) as base, httpx.Client(base_url=base, timeout=5, headers=bearer(app)) as client:
        url = f"/runs/{run_id}/events"
        with client.stream("GET", url, params={"last_id": first}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            reader = SseReader(response)
            backlog = reader.next()  # the events past last_id first
            assert backlog is not None and (backlog.id, backlog.event) == (second, "phase")
            assert f'<li class="event kind-phase" id="event-{second}"' in backlog.data

            _add_events(engine, other, ["log"])  # another run's event never shows up here
            later = _add_events(engine, run_id, ["iteration", "log", "veto"])
            got = reader.take(3)
            assert [(m.id, m.event) for m in got] == list(
                zip(later, ["iteration", "log", "veto"], strict=True)
            )
            assert all(f'data-event-id="{m.id}"' in m.data for m in got)
            seen = later[1]  # the client saw up to "log", then the connection dropped

        missed = _add_events(engine, run_id, ["images", "status"])  # while disconnected
        headers = {"Last-Event-ID": str(seen)}
        with client.stream("GET", url, params={"last_id": first}, headers=headers) as response:
            reader = SseReader(response)  # Last-Event-ID wins over ?last_id
            got = reader.take(3)
            assert [m.id for m in got] == [later[2], *missed]
            assert reader.next(timeout=1.2) is None  # nothing twice, nothing more
            assert reader.comments >= 1  # heartbeats while idle


def test_a_stream_ends_when_its_client_goes_away(tmp_path: Path, _sqlite_template: Path) -> None:
    (tmp_path / "data").mkdir()
    shutil.copyfile(_sqlite_template, tmp_path / "data" / "ie.db")
    settings = Settings(data_dir=tmp_path / "data", sse_poll_seconds=0.05)
    engine = make_engine(settings.database_url)
    try:
        run_id = _new_run(engine)
        app = create_app(settings)
        with (
            serve(app) as base,
            httpx.Client(base_url=base, timeout=5, headers=bearer(app)) as client,
        ):
            with client.stream("GET", f"/runs/{run_id}/events") as response:
                SseReader(response).take(0)
                deadline = time.monotonic() + 5
                while app.state.open_streams != 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert app.state.open_streams == 1
            deadline = time.monotonic() + 5
            while app.state.open_streams and time.monotonic() < deadline:
                time.sleep(0.05)
            assert app.state.open_streams == 0

            missing = client.get("/runs/9999/events")
            assert missing.status_code == 404
    finally:
        engine.dispose()


def _redis_unavailable() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


def test_redis_wakes_the_stream_long_before_its_fallback_poll(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    reason = _redis_unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "data").mkdir()
    shutil.copyfile(_sqlite_template, tmp_path / "data" / "ie.db")
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=REDIS_URL,
        sse_fallback_poll_seconds=60,
        sse_heartbeat_seconds=0.5,
    )
    engine = make_engine(settings.database_url)
    try:
        run_id = _new_run(engine)
        app = create_app(settings)
        with (
            serve(app) as base,
            httpx.Client(base_url=base, timeout=5, headers=bearer(app)) as client,
            client.stream("GET", f"/runs/{run_id}/events") as response,
        ):
            reader = SseReader(response)
            reader.next(timeout=0.6)  # subscribed by now (the stream has started)
            (quiet,) = _add_events(engine, run_id, ["log"])
            assert reader.next(timeout=1.5) is None  # committed, not announced: no poll
            publish(run_id, settings=settings)
            started = time.monotonic()
            message = reader.next(timeout=5)
            assert message is not None and message.id == quiet
            assert time.monotonic() - started < 2
    finally:
        engine.dispose()


def test_a_dead_redis_falls_back_to_polling(tmp_path: Path, _sqlite_template: Path) -> None:
    (tmp_path / "data").mkdir()
    shutil.copyfile(_sqlite_template, tmp_path / "data" / "ie.db")
    settings = Settings(
        data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:9/0", sse_poll_seconds=0.05
    )
    engine = make_engine(settings.database_url)
    try:
        run_id = _new_run(engine)
        app = create_app(settings)
        with (
            serve(app) as base,
            httpx.Client(base_url=base, timeout=5, headers=bearer(app)) as client,
            client.stream("GET", f"/runs/{run_id}/events") as response,
        ):
            (event_id,) = _add_events(engine, run_id, ["log"])
            message = SseReader(response).next(timeout=5)
            assert message is not None and message.id == event_id
    finally:
        engine.dispose()


def test_publish_without_redis_does_nothing_and_a_dead_redis_is_only_logged(
    tmp_path: Path,
) -> None:
    publish(1, settings=Settings(data_dir=tmp_path))
    publish(1, settings=Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:9/0"))


def test_message_format_splits_lines_and_makes_the_kind_safe() -> None:
    text = format_message(7, "veto-applied", "<li>\n  a\r\n</li>")
    assert text == "id: 7\nevent: veto-applied\ndata: <li>\ndata:   a\ndata: </li>\n\n"
    assert format_message(8, "bad kind\nx", "y").startswith("id: 8\nevent: bad-kind-x\n")


def test_hold_back_stops_below_a_young_missing_id_only() -> None:
    messages = [(1, "a", ""), (3, "b", ""), (4, "c", "")]
    first_seen: dict[int, float] = {}
    kept, holding = hold_back(messages, [2], first_seen, now=10.0, holdback=2.0)
    assert (kept, holding) == ([(1, "a", "")], True)
    kept, holding = hold_back(messages, [2], first_seen, now=11.0, holdback=2.0)
    assert holding and kept == [(1, "a", "")]  # still young: noticed at 10.0
    kept, holding = hold_back(messages, [2], first_seen, now=12.5, holdback=2.0)
    assert (kept, holding) == (messages, False)  # given up on: rolled back
    assert hold_back(messages, [], {}, now=0.0, holdback=2.0) == (messages, False)


async def _collect(stream: object, into: list[str]) -> None:
    async for chunk in stream:  # type: ignore[attr-defined]
        into.append(chunk)


def _ids(chunks: list[str]) -> list[int]:
    return [int(c.split("\n", 1)[0][4:]) for c in chunks if c.startswith("id: ")]


async def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_postgresql_ids_committed_out_of_order_go_out_in_order(
    db_url: str, engine: Engine, outcome: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: its ids always appear in order")
    factory = make_session_factory(engine)
    run_id = _new_run(engine)
    slow: Session = factory()
    try:
        early = add_event(slow, run_id, "phase").id  # taken first, committed last (or never)
        (late,) = _add_events(engine, run_id, ["log"])
        assert early < late
        holdback = 30 if outcome == "commit" else 0.4
        options = StreamOptions(heartbeat=30, holdback=holdback, poll=0.02)
        received: list[str] = []
        # From just below: ids of rows deleted by earlier tests would be gaps that never fill.
        stream = event_stream(
            factory, run_id, early - 1, waker=PollWaker(0.02), options=options, render=lambda e: ""
        )
        task = asyncio.create_task(_collect(stream, received))
        try:
            await asyncio.sleep(0.3)
            if outcome == "commit":
                assert _ids(received) == []  # the late event waits for the early one
                await asyncio.to_thread(slow.commit)
                await _wait_for(lambda: len(_ids(received)) == 2)
                assert _ids(received) == [early, late]
            else:
                await asyncio.to_thread(slow.rollback)
                await _wait_for(lambda: len(_ids(received)) == 1)
                assert _ids(received) == [late]  # passed by once the hold-back ran out
        finally:
            task.cancel()
    finally:
        slow.close()
