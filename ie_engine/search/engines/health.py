"""Per-engine health as plain data: what a dashboard panel or a log line shows.

:class:`EngineHealth` and :class:`SpreadHealth` are frozen snapshots; ``as_dict()`` gives
JSON-ready dictionaries (numbers, strings, None, lists) to store or send as they are.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ie_engine.search.engines.politeness import RateLimiter

LAST_ERRORS_KEPT = 5


@dataclass(frozen=True)
class EngineHealth:
    """One engine, now.

    ``status``: ``ok``; ``degraded`` (the last request failed); ``cooling-down`` (the server
    asked for a pause longer than we wait); ``exhausted`` (the daily quota is spent);
    ``replay`` (answers come from the cache only).
    """

    name: str
    kind: str
    status: str
    requests: int
    cache_hits: int
    results: int
    filtered_out: int
    errors: int
    retries: int
    rate_limited: int
    latency_ms_mean: float | None
    latency_ms_last: float | None
    requests_per_minute: float | None
    quota_per_day: int | None
    quota_left_today: int | None
    cooldown_s: float
    last_error: str
    last_error_at: str | None
    recent_errors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recent_errors"] = list(self.recent_errors)
        return d


@dataclass(frozen=True)
class SpreadHealth:
    """Every engine of a spread, plus what the spread itself did (``cached_answers``: queries
    answered wholly from some engine's cache, without a request)."""

    engines: tuple[EngineHealth, ...]
    queries: int
    failovers: int
    cached_answers: int
    license_filter: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "engines": [e.as_dict() for e in self.engines],
            "queries": self.queries,
            "failovers": self.failovers,
            "cached_answers": self.cached_answers,
            "license_filter": self.license_filter,
        }


@dataclass
class HealthCounters:
    """Mutable counters an engine updates as it works."""

    requests: int = 0
    cache_hits: int = 0
    results: int = 0
    filtered_out: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    consecutive_errors: int = 0
    latency_total_ms: float = 0.0
    latency_n: int = 0
    latency_last_ms: float | None = None
    last_error: str = ""
    last_error_at: str | None = None
    recent_errors: list[str] = field(default_factory=list)

    def latency(self, ms: float) -> None:
        self.latency_total_ms += ms
        self.latency_n += 1
        self.latency_last_ms = ms

    def error(self, message: str) -> None:
        self.errors += 1
        self.consecutive_errors += 1
        self.last_error = message
        self.last_error_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.recent_errors = [*self.recent_errors, message][-LAST_ERRORS_KEPT:]

    def success(self) -> None:
        self.consecutive_errors = 0

    def snapshot(self, *, name: str, kind: str, limiter: RateLimiter,
                 replaying: bool) -> EngineHealth:
        cooldown = limiter.cooldown_left()
        if replaying:
            status = "replay"
        elif limiter.exhausted():
            status = "exhausted"
        elif cooldown > 0:
            status = "cooling-down"
        elif self.consecutive_errors:
            status = "degraded"
        else:
            status = "ok"
        mean = self.latency_total_ms / self.latency_n if self.latency_n else None
        return EngineHealth(
            name=name,
            kind=kind,
            status=status,
            requests=self.requests,
            cache_hits=self.cache_hits,
            results=self.results,
            filtered_out=self.filtered_out,
            errors=self.errors,
            retries=self.retries,
            rate_limited=self.rate_limited,
            latency_ms_mean=None if mean is None else round(mean, 1),
            latency_ms_last=None if self.latency_last_ms is None else round(self.latency_last_ms,
                                                                            1),
            requests_per_minute=limiter.per_minute,
            quota_per_day=limiter.per_day,
            quota_left_today=limiter.left_today(),
            cooldown_s=round(cooldown, 1),
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            recent_errors=tuple(self.recent_errors),
        )


__all__ = ["EngineHealth", "HealthCounters", "SpreadHealth"]
