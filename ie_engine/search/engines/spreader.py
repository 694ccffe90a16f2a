"""Several engines at once: each query goes to one engine, chosen within the engines' quotas.

The order in which engines are tried for a query is fixed by the query itself (weighted
rendezvous hashing over the engines' names and ``weight``): the same query goes to the same
engine run after run, queries spread over engines in proportion to their weights, and adding
an engine moves only its share. Before anything else, every engine's cache is asked: a query
one engine already answered costs nothing again, whichever engine would now come first.

An engine is skipped while it cools down (a ``Retry-After`` longer than we wait) or when its
daily quota is spent; a query whose engine fails falls over to the next one. When every engine
is out of quota, :class:`~ie_engine.search.engines.politeness.QuotaExhaustedError` stops the
run; when they all fail otherwise, the query is empty (a ``SearchError``, as the explorer
expects). In replay mode no engine touches the network: a query no cache holds raises
:class:`~ie_engine.search.engines.cache.ReplayMissError`.

``download_cache`` is the image download cache that goes with the engines' response cache (same
folder, same mode), for the explorer's downloader; the engines themselves never use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ie_engine.download_cache import DownloadCache
from ie_engine.errors import SearchError
from ie_engine.search.engines.base import WebEngine
from ie_engine.search.engines.cache import CacheMode, ReplayMissError
from ie_engine.search.engines.health import SpreadHealth
from ie_engine.search.engines.licenses import LicenseFilter
from ie_engine.search.engines.politeness import QuotaExhaustedError
from ie_engine.types import SearchResult


def preference(query: str, engines: Sequence[WebEngine],
               weights: Sequence[float]) -> list[WebEngine]:
    """Engines in the order they are tried for ``query`` (weighted rendezvous hashing)."""

    def score(i: int) -> float:
        digest = hashlib.sha256(f"{engines[i].name}\x00{query}".encode()).digest()
        u = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64  # uniform in (0, 1)
        return -weights[i] / math.log(u)

    order = sorted(range(len(engines)), key=lambda i: -score(i))
    return [engines[i] for i in order]


class MultiEngine:
    """A :class:`~ie_engine.types.SearchEngine` over several :class:`WebEngine` adapters.

    ``health_path``: where :meth:`close` writes the final health (JSON), e.g. in a run folder.
    """

    def __init__(
        self,
        engines: Sequence[WebEngine],
        *,
        weights: Sequence[float] | None = None,
        license_filter: LicenseFilter | None = None,
        replay: bool = False,
        health_path: Path | None = None,
        download_cache: DownloadCache | None = None,
    ) -> None:
        if not engines:
            raise SearchError("a spread needs at least one engine")
        names = [e.name for e in engines]
        if len(set(names)) != len(names):
            raise SearchError(f"engine names must be unique, got {names}")
        self.engines = list(engines)
        self.weights = list(weights) if weights is not None else [1.0] * len(engines)
        if len(self.weights) != len(self.engines) or any(w <= 0 for w in self.weights):
            raise SearchError("one positive weight per engine is needed")
        self.name = "+".join(names)
        self.license_filter = license_filter or LicenseFilter()
        self.replay = replay
        self.health_path = health_path
        self.download_cache = download_cache
        self.queries = 0
        self.failovers = 0
        self.cached_answers = 0

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        if limit < 1:
            return []
        self.queries += 1
        order = preference(query, self.engines, self.weights)
        for engine in order:  # a cached answer from any engine first
            cached = engine.cached_only(query, limit)
            if cached is not None:
                engine.counters.cache_hits += 1
                self.cached_answers += 1
                return cached
        if self.replay:
            raise ReplayMissError(
                f"replay: no engine of {self.name!r} has a cached answer for {query!r}; "
                "replay runs only what was recorded"
            )
        problems: list[str] = []
        exhausted = 0
        tried = 0
        for engine in order:
            if engine.limiter.exhausted():
                exhausted += 1
                problems.append(f"{engine.name}: daily quota spent")
                continue
            if engine.limiter.cooldown_left() > 0:
                problems.append(f"{engine.name}: cooling down")
                continue
            if tried:
                self.failovers += 1
            tried += 1
            try:
                return await engine.search(query, limit=limit)
            except QuotaExhaustedError as exc:
                exhausted += 1
                problems.append(str(exc))
            except SearchError as exc:
                problems.append(str(exc))
        if exhausted == len(self.engines):
            raise QuotaExhaustedError(
                f"every engine of {self.name!r} has spent its daily quota: " + "; ".join(problems)
            )
        raise SearchError(f"no engine of {self.name!r} answered {query!r}: " + "; ".join(problems))

    def health(self) -> SpreadHealth:
        return SpreadHealth(
            engines=tuple(e.health() for e in self.engines),
            queries=self.queries,
            failovers=self.failovers,
            cached_answers=self.cached_answers,
            license_filter=self.license_filter.describe(),
        )

    def write_health(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.health().as_dict(), indent=1))
        os.replace(tmp, path)

    async def close(self) -> None:
        if self.health_path is not None:
            self.write_health(self.health_path)
        for e in self.engines:
            await e.close()

    async def __aenter__(self) -> MultiEngine:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def replaying(engines: Sequence[WebEngine]) -> bool:
    return any(e.cache is not None and e.cache.mode is CacheMode.REPLAY for e in engines)


__all__ = ["MultiEngine", "preference", "replaying"]
