"""A :class:`~ie_engine.types.SearchEngine` that asks the offline web's search service over HTTP.

The explorer talks to the offline corpus exactly as it would to a web engine: a request per
query, JSON back, image URLs to download. Any failure of the service as a whole (unreachable,
non-200, malformed answer) becomes a :class:`~ie_engine.errors.SearchError` with a message that
says which service and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any

import aiohttp

from ie_engine.errors import SearchError
from ie_engine.types import SearchResult


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class HttpSearchEngine:
    """Client of ``ie_engine.search.server`` (or any service answering the same JSON).

    ``session``: an aiohttp session to reuse (left open by :meth:`close`); without one the
    engine opens its own on first use and closes it in :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "offline",
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.timeout_s = timeout_s
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise SearchError(f"{self.name}: the session it was given is closed")
            # trust_env=False: a proxy from the environment must never capture loopback calls.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        """At most ``limit`` results for ``query``, best first (``rank`` 1 is the best)."""
        if limit < 1:
            return []
        url = f"{self.base_url}/search"
        where = f"search engine {self.name!r} at {self.base_url}"
        try:
            async with self._get_session().get(
                url,
                params={"q": query, "limit": str(limit)},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                body = await resp.text()
                status = resp.status
        except TimeoutError as exc:
            raise SearchError(f"{where} did not answer within {self.timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            raise SearchError(f"{where} is unreachable: {exc}") from exc
        if status != 200:
            detail = body[:300]
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(body).get("error", detail))
            raise SearchError(f"{where} answered HTTP {status} for {query!r}: {detail}")
        try:
            payload = json.loads(body)
            raw_results = payload["results"]
            if not isinstance(raw_results, list):
                raise TypeError("'results' is not a list")
            return [self._result(r) for r in raw_results[:limit]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SearchError(f"{where} sent a malformed answer for {query!r}: {exc}") from exc

    def _result(self, raw: Any) -> SearchResult:
        if not isinstance(raw, dict) or not isinstance(raw.get("image_url"), str):
            raise TypeError(f"result without an image_url: {str(raw)[:200]}")
        extra = raw.get("extra") or {}
        if not isinstance(extra, dict):
            raise TypeError("'extra' is not an object")
        return SearchResult(
            image_url=raw["image_url"],
            page_url=str(raw.get("page_url") or ""),
            title=str(raw.get("title") or ""),
            license=str(raw.get("license") or ""),
            license_url=str(raw.get("license_url") or ""),
            creator=str(raw.get("creator") or ""),
            rank=_opt_int(raw.get("rank")) or 0,
            score=_opt_float(raw.get("score")),
            thumbnail_url=str(raw.get("thumbnail_url") or ""),
            width=_opt_int(raw.get("width")),
            height=_opt_int(raw.get("height")),
            engine=self.name,
            extra={str(k): str(v) for k, v in extra.items()},
        )

    async def close(self) -> None:
        """Close the engine's own session (a session passed in is left to its owner)."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector finish closing its transports

    async def __aenter__(self) -> HttpSearchEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
