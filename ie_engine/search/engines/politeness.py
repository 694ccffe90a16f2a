"""Being a good client: request spacing, daily quotas, back-off with jitter.

A :class:`RateLimiter` spaces one engine's requests ``60 / requests_per_minute`` seconds apart
and counts them against ``requests_per_day`` (a UTC calendar day). The day's count can be kept
in a small JSON file so that the quota holds across processes, one after another (the worker
runs each iteration as a separate task) or at the same time on one machine (several workers):
the check and the count are one read-modify-write of the file under an advisory ``flock`` on a
sidecar lock file, and the file is replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ie_engine.errors import ExplorerError

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class QuotaExhaustedError(ExplorerError):
    """An engine (or every engine of a spread) has spent its daily quota.

    Deliberately not a :class:`~ie_engine.errors.SearchError`: the explorer treats those as
    "no results for this query", and a run that goes on without any search budget would learn
    from empty queries. The run stops instead and can be resumed once quota is back (every
    query already answered is in the response cache and costs nothing again).
    """


@dataclass(frozen=True)
class Politeness:
    """One engine's manners (see the README's "Real web engines" for each engine's default)."""

    requests_per_minute: float | None = 60.0
    """Request starts are spaced ``60 / requests_per_minute`` s apart; None: no spacing."""
    requests_per_day: int | None = None
    """Requests allowed per UTC day (retries included); None: unlimited."""
    max_concurrency: int = 4
    """Requests in flight at once (1: strictly one after another)."""
    retries: int = 3
    """Extra attempts after a 429, a 5xx, a timeout or a connection error."""
    backoff_s: float = 1.0
    """First retry delay; doubled at each further attempt, with jitter."""
    backoff_cap_s: float = 60.0
    """Longest back-off delay (before honouring a longer ``Retry-After``)."""
    max_retry_after_s: float = 120.0
    """A longer ``Retry-After`` is not waited for: the engine cools down for that long and the
    query fails over (to another engine of a spread, or as an empty query)."""


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Delay before retry number ``attempt + 1``: exponential, with "equal jitter" (half fixed,
    half random), never shorter than the server's ``Retry-After``."""
    step = min(cap_s, base_s * (2**attempt))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, retry_after + rng.uniform(0, min(1.0, base_s)))
    return delay


def utc_day(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))


class DayCounter:
    """Requests spent today, optionally persisted as ``{"day": ..., "used": ...}``.

    With a path, the file holds the count: :meth:`spent` reads it, and :meth:`take` and
    :meth:`add` read, update and replace it (temporary file and ``os.replace``) while holding an
    exclusive ``flock`` on the sidecar ``<name>.lock``, so counters of several processes (or
    several counters of one process) sharing the file neither lose requests nor overspend.
    """

    def __init__(self, path: Path | None = None, wall: Clock = time.time) -> None:
        self.path = path
        self._wall = wall
        self.day = utc_day(wall())
        self.used = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """Today's count from the file: 0 when it is missing, unreadable or of another day."""
        self.day = utc_day(self._wall())
        used = 0
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            state = json.loads(path.read_text())
            if state["day"] == self.day:
                used = int(state["used"])
        self.used = used

    def _store(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"day": self.day, "used": self.used}))
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive advisory lock on the sidecar ``<name>.lock`` of ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    def _roll(self) -> None:
        today = utc_day(self._wall())
        if today != self.day:
            self.day, self.used = today, 0

    def spent(self) -> int:
        if self.path is None:
            self._roll()
        else:
            self._load(self.path)
        return self.used

    def take(self, n: int = 1, limit: int | None = None) -> bool:
        """Count ``n`` requests unless today's count would then exceed ``limit`` (None: no
        limit). True when counted. Check and count are one step under the file lock."""
        if self.path is None:
            self._roll()
            if limit is not None and self.used + n > limit:
                return False
            self.used += n
            return True
        with self._locked(self.path):
            self._load(self.path)
            if limit is not None and self.used + n > limit:
                return False
            self.used += n
            self._store(self.path)
        return True

    def add(self, n: int = 1) -> None:
        self.take(n)


class RateLimiter:
    """Spacing between request starts and a daily quota, for one engine."""

    def __init__(
        self,
        name: str,
        per_minute: float | None,
        per_day: int | None,
        *,
        counter: DayCounter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.per_minute = per_minute
        self.per_day = per_day
        self.counter = counter or DayCounter()
        self._clock = clock
        self._sleep = sleep
        self._next_at = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def left_today(self) -> int | None:
        return None if self.per_day is None else max(0, self.per_day - self.counter.spent())

    def exhausted(self) -> bool:
        left = self.left_today()
        return left is not None and left <= 0

    def cooldown_left(self) -> float:
        """Seconds until a ``Retry-After`` the engine could not wait for has passed."""
        return max(0.0, self._paused_until - self._clock())

    def pause_for(self, seconds: float) -> None:
        """The server asked us to stay away for ``seconds``."""
        until = self._clock() + seconds
        self._paused_until = max(self._paused_until, until)
        self._next_at = max(self._next_at, until)

    async def acquire(self) -> None:
        """Wait for the next slot, then count one request. Raise :class:`QuotaExhaustedError`
        when today's quota is spent."""
        async with self._lock:
            if self.exhausted():
                raise self._exhausted_error()
            wait = self._next_at - self._clock()
            if wait > 0:
                await self._sleep(wait)
            if not self.counter.take(1, self.per_day):  # spent meanwhile by another process
                raise self._exhausted_error()
            self._next_at = max(self._clock(), self._next_at) + self.interval

    def _exhausted_error(self) -> QuotaExhaustedError:
        return QuotaExhaustedError(
            f"search engine {self.name!r} has spent its {self.per_day} requests for "
            f"{self.counter.day} (UTC)"
        )


__all__ = [
    "DayCounter",
    "Politeness",
    "QuotaExhaustedError",
    "RateLimiter",
    "backoff_delay",
    "utc_day",
]
