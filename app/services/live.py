"""Live updates: waking open dashboards when a run has new events, and streaming those events.

The store is the truth (DESIGN.md): events are rows, and a stream sends the rows past the
client's last event id. Nothing here carries state of its own, so a reload or a reconnect loses
nothing. Who writes events calls :func:`publish` *after committing*; with ``redis_url`` set that
wakes every stream of the run at once through Redis pub/sub (one channel per run), and without
it the streams find the rows by polling every ``sse_poll_seconds``. With Redis they still look
every ``sse_fallback_poll_seconds``, so a lost notification only delays an update.

One Server-Sent Events message per event row::

    id: 1234                          the event's id (the browser's Last-Event-ID)
    event: phase                      the event's kind
    data: <li class="event" ...>      the event's line of the dashboard's event log (HTML),
    data: ...                         one ``data:`` line per line of it

A stream starts with ``retry: 2000`` (the browser's reconnect delay in ms) and sends a comment
(``: keep-alive``) when it has been idle for ``sse_heartbeat_seconds``.

On PostgreSQL an event id is taken at insert but visible only at commit, so a reader can see id
11 before id 10 (two transactions committing out of order). A stream therefore stops short of an
id that is missing below newer ones for up to ``sse_holdback_seconds``: either it appears (and
goes out in order) or it was rolled back (and is passed by). SQLite has one writer at a time,
so ids appear in order there and nothing is held back.

This module imports no web framework: the worker imports :func:`publish`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Final, Protocol

import anyio
import anyio.to_thread
import redis
import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings
from app.store.events import events_after, missing_event_ids
from app.store.models import Event

log = logging.getLogger(__name__)

CHANNEL_PREFIX: Final = "ie:run-events:"
"""Redis channel of run ``N``: ``ie:run-events:N``. The message body means nothing."""
RETRY_MS: Final = 2000
"""The browser's delay before it reconnects a dropped stream (sent as ``retry:``)."""
BATCH: Final = 200
"""Events read from the store at a time; a longer backlog is sent in several reads."""


def channel(run_id: int) -> str:
    """The Redis channel that announces new events of run ``run_id``."""
    return f"{CHANNEL_PREFIX}{run_id}"


@cache
def _redis_client(url: str) -> redis.Redis:
    """One client (one connection pool) per URL and process; redis-py renews it after a fork."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def publish(run_id: int, *, settings: Settings | None = None) -> None:
    """Wake the open event streams of run ``run_id``. Call it after committing new events.

    Does nothing without ``redis_url`` (the streams poll). A Redis failure is logged, not
    raised: the events are committed, and the streams find them at their next fallback poll.
    """
    settings = settings or get_settings()
    if not settings.redis_url:
        return
    try:
        _redis_client(settings.redis_url).publish(channel(run_id), b"1")
    except redis.RedisError as exc:
        log.warning("could not announce new events of run %s on Redis: %s", run_id, exc)


# -- the message format --------------------------------------------------------------------

_KIND_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def format_message(event_id: int, kind: str, data: str) -> str:
    """One SSE message: ``id``, ``event`` (the kind, made safe) and ``data`` lines."""
    name = _KIND_UNSAFE.sub("-", kind) or "message"
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    body = "".join(f"data: {line}\n" for line in lines)
    return f"id: {event_id}\nevent: {name}\n{body}\n"


HEARTBEAT: Final = ": keep-alive\n\n"


# -- waking up -----------------------------------------------------------------------------


class Waker(Protocol):
    """Waits until there may be new events, or ``timeout`` seconds have passed."""

    interval: float
    """Seconds between looks at the store when nothing wakes the stream."""

    async def wait(self, timeout: float) -> bool:
        """True when woken by a notification, False when ``timeout`` ran out."""
        ...


@dataclass
class PollWaker:
    """No notifications: every wait is a plain sleep."""

    interval: float

    async def wait(self, timeout: float) -> bool:
        await anyio.sleep(max(timeout, 0.0))
        return False


@dataclass
class RedisWaker:
    """Wakes when a message arrives on the run's channel. If Redis fails mid-stream, the
    stream goes on at the fallback poll (``interval``)."""

    interval: float
    pubsub: Any  # redis.asyncio.client.PubSub (untyped upstream)
    broken: bool = False

    async def wait(self, timeout: float) -> bool:
        if self.broken:
            await anyio.sleep(max(timeout, 0.0))
            return False
        try:
            message = await self.pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(timeout, 0.0)
            )
            woken = message is not None
            while message is not None:  # several commits in a burst: one read serves them all
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis failed (%s); this event stream polls from now on", exc)
            self.broken = True
            return False
        return woken


@asynccontextmanager
async def open_waker(settings: Settings, run_id: int) -> AsyncIterator[Waker]:
    """A :class:`RedisWaker` subscribed to the run's channel when Redis is configured and
    answers, a :class:`PollWaker` otherwise. Subscribe *before* the first read of the store, so
    no announcement falls between the two."""
    if not settings.redis_url:
        yield PollWaker(settings.sse_poll_seconds)
        return
    client = redis.asyncio.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, health_check_interval=30
    )
    pubsub = client.pubsub()
    waker: Waker
    try:
        await pubsub.subscribe(channel(run_id))
        waker = RedisWaker(settings.sse_fallback_poll_seconds, pubsub)
    except (redis.RedisError, OSError) as exc:
        log.warning("Redis unavailable (%s); the event stream of run %s polls", exc, run_id)
        waker = PollWaker(settings.sse_poll_seconds)
    try:
        yield waker
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await pubsub.aclose()
                await client.aclose()
            except (redis.RedisError, OSError):
                pass


# -- the stream ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOptions:
    """How one event stream behaves (from the settings, see :meth:`from_settings`)."""

    heartbeat: float
    holdback: float
    """Seconds to wait for a missing id; 0 = never wait (SQLite)."""
    poll: float
    """Seconds between looks while an id is held back."""

    @classmethod
    def from_settings(cls, settings: Settings, *, dialect: str) -> StreamOptions:
        holdback = settings.sse_holdback_seconds if dialect == "postgresql" else 0.0
        return cls(
            heartbeat=settings.sse_heartbeat_seconds,
            holdback=holdback,
            poll=settings.sse_poll_seconds,
        )


RenderEvent = Callable[[Event], str]
"""Turns one event into the HTML of its ``data``."""


def _read(
    factory: sessionmaker[Session],
    run_id: int,
    last_id: int,
    *,
    render: RenderEvent,
    check_gaps: bool,
) -> tuple[list[tuple[int, str, str]], list[int], bool]:
    """(id, kind, data) of the events past ``last_id``, the ids missing among them, and
    whether the read was cut short by :data:`BATCH`. Runs in a worker thread.

    With ``check_gaps`` (PostgreSQL) both queries read one snapshot (REPEATABLE READ): under the
    default READ COMMITTED, an event committed between them was neither read nor missing, so it
    was skipped for good (seen once in the suite)."""
    with factory() as session:
        if check_gaps:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        events = events_after(session, run_id, last_id, limit=BATCH)
        missing = (
            missing_event_ids(session, last_id, events[-1].id) if check_gaps and events else []
        )
        return [(e.id, e.kind, render(e)) for e in events], missing, len(events) == BATCH


def hold_back(
    messages: list[tuple[int, str, str]],
    missing: list[int],
    first_seen: dict[int, float],
    *,
    now: float,
    holdback: float,
) -> tuple[list[tuple[int, str, str]], bool]:
    """The messages that may go out now, and whether some were held back.

    ``first_seen`` remembers when each missing id was first noticed; an id missing for less
    than ``holdback`` seconds stops the stream just below it.
    """
    for event_id in missing:
        first_seen.setdefault(event_id, now)
    young = [i for i in missing if now - first_seen[i] < holdback]
    if not young:
        return messages, False
    return [m for m in messages if m[0] < young[0]], True


async def event_stream(
    factory: sessionmaker[Session],
    run_id: int,
    last_id: int,
    *,
    waker: Waker,
    options: StreamOptions,
    render: RenderEvent,
) -> AsyncIterator[str]:
    """The SSE text of run ``run_id``'s events past ``last_id``, forever (until cancelled,
    which is how the server says the client has gone)."""
    yield f"retry: {RETRY_MS}\n\n"
    first_seen: dict[int, float] = {}
    last_sent = time.monotonic()
    read_due, next_read = True, 0.0
    while True:
        now = time.monotonic()
        if read_due or now >= next_read:
            read = partial(_read, render=render, check_gaps=options.holdback > 0)
            messages, missing, more = await anyio.to_thread.run_sync(read, factory, run_id, last_id)
            messages, holding = hold_back(
                messages, missing, first_seen, now=time.monotonic(), holdback=options.holdback
            )
            for event_id, kind, data in messages:
                yield format_message(event_id, kind, data)
                last_id = event_id
            for seen in [i for i in first_seen if i <= last_id]:
                del first_seen[seen]
            now = time.monotonic()
            if messages:
                last_sent = now
            if more and not holding:
                continue  # a backlog: read on at once
            read_due = False
            next_read = now + (options.poll if holding else waker.interval)
        if now - last_sent >= options.heartbeat:
            yield HEARTBEAT
            last_sent = now
        timeout = min(next_read, last_sent + options.heartbeat) - now
        read_due = await waker.wait(max(timeout, 0.0))
