"""Being a good client: request spacing, daily quotas, back-off with jitter.

A :class:`RateLimiter` spaces one engine's requests ``60 / requests_per_minute`` seconds apart
and counts them against ``requests_per_day`` (a UTC calendar day). The day's count can be kept
in a small JSON file so that the quota holds across processes run one after another (the
worker runs each iteration as a separate task); two processes running *at once* may each spend
the last requests (best effort, no file locking).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
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
    """Requests spent today, optionally persisted as ``{"day": ..., "used": ...}``."""

    def __init__(self, path: Path | None = None, wall: Clock = time.time) -> None:
        self.path = path
        self._wall = wall
        self.day = utc_day(wall())
        self.used = 0
        if path is not None and path.exists():
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                state = json.loads(path.read_text())
                if state["day"] == self.day:
                    self.used = int(state["used"])

    def _roll(self) -> None:
        today = utc_day(self._wall())
        if today != self.day:
            self.day, self.used = today, 0

    def spent(self) -> int:
        self._roll()
        return self.used

    def add(self, n: int = 1) -> None:
        self._roll()
        self.used += n
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"day": self.day, "used": self.used}))
            os.replace(tmp, self.path)


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
                raise QuotaExhaustedError(
                    f"search engine {self.name!r} has spent its {self.per_day} requests for "
                    f"{self.counter.day} (UTC)"
                )
            wait = self._next_at - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._next_at = max(self._clock(), self._next_at) + self.interval
            self.counter.add()


__all__ = [
    "DayCounter",
    "Politeness",
    "QuotaExhaustedError",
    "RateLimiter",
    "backoff_delay",
    "utc_day",
]
