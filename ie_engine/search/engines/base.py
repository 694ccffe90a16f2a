"""What every web engine adapter shares: the polite HTTP loop, paging, the cache, the license
filter and the health figures.

An adapter only says how to ask for one page (:meth:`WebEngine.build_request`) and how to read
the answer (:meth:`WebEngine.parse_page`). :meth:`WebEngine.search` then fetches pages 1, 2 ...
(each from the cache when it holds it, else through the rate limiter with retries) until it has
``limit`` results that pass the license filter, the engine says there are no more, or
``max_pages`` pages were read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, ClassVar

import aiohttp

from ie_engine.download import parse_retry_after
from ie_engine.errors import SearchError
from ie_engine.search.engines.cache import CacheMode, Page, ResponseCache
from ie_engine.search.engines.health import EngineHealth, HealthCounters
from ie_engine.search.engines.licenses import LicenseFilter, normalise_license
from ie_engine.search.engines.politeness import Politeness, RateLimiter, Sleep, backoff_delay
from ie_engine.types import SearchResult

DEFAULT_USER_AGENT = (
    "internet-explorer/0.1 (+https://github.com/internet-explorer-ssl; targeted representation "
    "learning research; set user_agent to your contact address)"
)
MAX_BODY_BYTES = 16 * 1024 * 1024
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpRequest:
    """One request to an engine's API."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    json_body: Any = None


class RetryableAnswer(Exception):
    """An answer that says "try again later" although its status is 200 (Wikimedia's
    ``maxlag``, Flickr's "service unavailable")."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass
class EngineSettings:
    """Options every adapter takes (the factory fills them from configuration)."""

    name: str
    base_url: str
    api_key: str = ""
    page_size: int = 20
    max_pages: int = 3
    politeness: Politeness = field(default_factory=Politeness)
    user_agent: str = DEFAULT_USER_AGENT
    timeout_s: float = 30.0
    options: dict[str, str] = field(default_factory=dict)


class WebEngine:
    """Base class of the adapters (a :class:`~ie_engine.types.SearchEngine`)."""

    kind: ClassVar[str] = "web"
    max_page_size: ClassVar[int] = 100
    needs_key: ClassVar[bool] = False

    def __init__(
        self,
        settings: EngineSettings,
        *,
        cache: ResponseCache | None = None,
        license_filter: LicenseFilter | None = None,
        limiter: RateLimiter | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        if self.needs_key and not settings.api_key:
            raise SearchError(f"search engine {settings.name!r} ({self.kind}) needs an API key")
        self.settings = replace(settings, page_size=max(1, min(settings.page_size,
                                                                self.max_page_size)))
        self.name = settings.name
        self.cache = cache
        self.license_filter = license_filter or LicenseFilter()
        pol = settings.politeness
        self.limiter = limiter or RateLimiter(
            self.name, pol.requests_per_minute, pol.requests_per_day, sleep=sleep
        )
        self.counters = HealthCounters()
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._slots = asyncio.Semaphore(max(1, pol.max_concurrency))
        self._session = session
        self._owns_session = session is None

    # -- what adapters provide ------------------------------------------------------------------

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        raise NotImplementedError

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        """Read one answer; raise KeyError/TypeError/ValueError when it is malformed,
        :class:`SearchError` when it reports an error, :class:`RetryableAnswer` for "later"."""
        raise NotImplementedError

    def variant(self) -> str:
        """Everything besides (engine, query, page) that changes the answer (cache key)."""
        return f"{self.kind};ps={self.settings.page_size}"

    # -- the common record ----------------------------------------------------------------------

    def make_result(self, *, image_url: str, rank: int, license: str = "",
                    license_url: str = "", extra: dict[str, str] | None = None,
                    **fields: Any) -> SearchResult:
        code = normalise_license(license, license_url)
        ex = {k: v for k, v in (extra or {}).items() if v}
        if code:
            ex["license_code"] = code
        return SearchResult(image_url=image_url, rank=rank, license=license,
                            license_url=license_url, engine=self.name, extra=ex, **fields)

    # -- searching ------------------------------------------------------------------------------

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        """At most ``limit`` results passing the license filter, best first (rank 1 first)."""
        if limit < 1:
            return []
        out: list[SearchResult] = []
        seen: set[str] = set()
        for page in range(1, self.settings.max_pages + 1):
            try:
                got = await self.fetch_page(query, page)
            except SearchError:
                if page == 1:
                    raise
                # Keep the pages already read; record where this answer ended so that a replay
                # gives the same results.
                if self.cache is not None:
                    self.cache.put(self.name, self.variant(), query, page, Page([], False))
                break
            for r in got.results:
                if r.image_url in seen:
                    continue
                seen.add(r.image_url)
                if not self.license_filter.allows(r):
                    self.counters.filtered_out += 1
                    continue
                out.append(replace(r, rank=len(out) + 1))
            if len(out) >= limit or not got.has_more or not got.results:
                break
        self.counters.results += min(len(out), limit)
        return out[:limit]

    def cached_only(self, query: str, limit: int) -> list[SearchResult] | None:
        """The answer :meth:`search` would give if it can come wholly from the cache, else
        None. Touches neither the network nor the counters."""
        if self.cache is None or not self.cache.readable:
            return None
        out: list[SearchResult] = []
        seen: set[str] = set()
        for page in range(1, self.settings.max_pages + 1):
            path = self.cache.path(self.name, self.variant(), query, page)
            if not path.exists():
                return None
            got = self.cache.get(self.name, self.variant(), query, page)
            if got is None:
                return None
            for r in got.results:
                if r.image_url not in seen:
                    seen.add(r.image_url)
                    if self.license_filter.allows(r):
                        out.append(replace(r, rank=len(out) + 1))
            if len(out) >= limit or not got.has_more or not got.results:
                return out[:limit]
        return out[:limit]

    async def fetch_page(self, query: str, page: int) -> Page:
        """One page: from the cache, or from the network (then stored)."""
        variant = self.variant()
        if self.cache is not None:
            hit = self.cache.get(self.name, variant, query, page)
            if hit is not None:
                self.counters.cache_hits += 1
                return hit
            if self.cache.mode is CacheMode.REPLAY:
                raise self.cache.miss_error(self.name, variant, query, page)
        got = await self._fetch(query, page)
        if self.cache is not None:
            self.cache.put(self.name, variant, query, page, got)
        return got

    async def _fetch(self, query: str, page: int) -> Page:
        ps = self.settings.page_size
        req = self.build_request(query, page, ps)
        where = f"search engine {self.name!r}"
        pol = self.settings.politeness
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                async with self._slots:
                    await self.limiter.acquire()
                    payload = await self._call(req, where, query)
                    got = self.parse_page(payload, page, ps)
                self.counters.success()
                return got
            except _Transient as t:
                problem, retry_after = t.detail, t.retry_after
            except RetryableAnswer as r:
                problem, retry_after = f"{where}: {r}", r.retry_after
            except SearchError as exc:
                self.counters.error(str(exc))
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                msg = f"{where} sent a malformed answer for {query!r}: {type(exc).__name__}: {exc}"
                self.counters.error(msg)
                raise SearchError(msg) from exc
            if retry_after is not None and retry_after > pol.max_retry_after_s:
                self.limiter.pause_for(retry_after)
                self.counters.rate_limited += 1
                msg = f"{problem}; asked to wait {retry_after:.0f} s (cooling down)"
                self.counters.error(msg)
                raise SearchError(msg)
            if attempt >= pol.retries:
                msg = f"{problem} (after {attempt + 1} attempts)"
                self.counters.error(msg)
                raise SearchError(msg)
            self.counters.retries += 1
            await self._sleep(backoff_delay(attempt, pol.backoff_s, pol.backoff_cap_s,
                                            self._rng, retry_after))
            attempt += 1

    async def _call(self, req: HttpRequest, where: str, query: str) -> Any:
        """Send ``req``; the parsed JSON of a 200, or raise."""
        t0 = time.perf_counter()
        self.counters.requests += 1
        try:
            async with self._get_session().request(
                req.method, req.url, params=req.params or None, json=req.json_body,
                headers=req.headers or None,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as resp:
                if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
                    raise SearchError(f"{where}: answer of {resp.content_length:,} bytes")
                body = await resp.content.read(MAX_BODY_BYTES + 1)
                status, headers = resp.status, resp.headers
        except TimeoutError as exc:
            raise _Transient(f"{where} did not answer within {self.settings.timeout_s:g} s",
                             None) from exc
        except aiohttp.ClientError as exc:
            raise _Transient(f"{where} is unreachable: {exc}", None) from exc
        finally:
            self.counters.latency((time.perf_counter() - t0) * 1000)
        text = body.decode("utf-8", "replace")
        if status in _RETRY_STATUSES:
            if status == 429:
                self.counters.rate_limited += 1
            raise _Transient(f"{where} answered HTTP {status} for {query!r}",
                             parse_retry_after(headers.get("Retry-After")))
        if status != 200:
            raise SearchError(f"{where} answered HTTP {status} for {query!r}: "
                              f"{_detail(text, self.settings.api_key)}")
        if len(body) > MAX_BODY_BYTES:
            raise SearchError(f"{where}: answer larger than {MAX_BODY_BYTES:,} bytes")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise SearchError(f"{where} sent a malformed answer for {query!r}: not JSON "
                              f"({exc})") from exc
        self.check_payload(payload, parse_retry_after(headers.get("Retry-After")))
        return payload

    def check_payload(self, payload: Any, retry_after: float | None) -> None:
        """Adapters override to turn an error reported inside a 200 into an exception."""

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> EngineHealth:
        replaying = self.cache is not None and self.cache.mode is CacheMode.REPLAY
        return self.counters.snapshot(
            name=self.name, kind=self.kind, limiter=self.limiter, replaying=replaying
        )

    # -- session --------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise SearchError(f"{self.name}: the session it was given is closed")
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.settings.user_agent, "Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)

    async def __aenter__(self) -> WebEngine:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class _Transient(Exception):
    def __init__(self, detail: str, retry_after: float | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def _detail(text: str, secret: str) -> str:
    """A short, key-free excerpt of an error answer."""
    detail = text[:300]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(text)
        for k in ("detail", "message", "error", "info"):
            if isinstance(data, dict) and data.get(k):
                detail = str(data[k])[:300]
                break
    return detail.replace(secret, "***") if secret else detail


def json_list(value: Any, where: str) -> list[Any]:
    """``value`` if it is a JSON array; TypeError naming ``where`` otherwise (a malformed
    answer, reported as such)."""
    if not isinstance(value, list):
        raise TypeError(f"'{where}' is not a list")
    return value


def json_objects(value: Any, where: str) -> list[dict[str, Any]]:
    """``value`` if it is a JSON array of objects; TypeError otherwise."""
    items = json_list(value, where)
    if not all(isinstance(r, dict) for r in items):
        raise TypeError("a result is not an object")
    return items


def opt_int(value: Any) -> int | None:
    """An int from an int, float or digit string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def text_of(value: Any) -> str:
    return "" if value is None else str(value).strip()


__all__ = [
    "DEFAULT_USER_AGENT",
    "EngineSettings",
    "HttpRequest",
    "RetryableAnswer",
    "WebEngine",
    "opt_int",
    "text_of",
]
