"""One image body over HTTP, and how each way a request can fail becomes a reason code.

:func:`_session` opens the aiohttp session of a batch: no connection limits of its own (the
downloader's slots bound concurrency), names resolved through
:class:`~ie_engine.netguard.GuardedResolver`, no cookies, no proxies from the environment.
:func:`_get_body` follows redirects by hand (at most :data:`MAX_REDIRECTS`, every hop checked by
:func:`~ie_engine.netguard.check_url`), turns non-2xx answers into ``http-<status>`` failures
(408, 429 and 5xx marked retryable, with their ``Retry-After``: :func:`parse_retry_after`),
refuses ``X-Robots-Tag: noai`` answers when ``honour_noai`` is on, and streams the body under the
byte cap, giving up as soon as its first bytes are no image format (:func:`_read_capped`).
:func:`_classify` maps the exceptions raised on the way to the same :class:`_Fail` outcomes.
Slots, retries and timeouts are the :class:`~ie_engine.download.Downloader`'s business.
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from ie_engine.config import DownloadConfig
from ie_engine.imaging import sniff_format
from ie_engine.netguard import BlockedAddressError, GuardedResolver, check_url
from ie_engine.robots import noai_directive

MAX_REDIRECTS: Final = 5
"""Redirects followed per request; one more is ``too-many-redirects``."""
MAX_RETRY_AFTER_S: Final = 10.0
"""A 429/503 ``Retry-After`` up to this many seconds is honoured; a longer one ends the request."""
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES: Final = frozenset({408, 429})


class _Fail(Exception):
    """A request outcome that is a failure: reason code, detail, whether a retry may help."""

    def __init__(
        self, reason: str, detail: str, *, retry: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ref = time.time() if now is None else now
    return max(0.0, when.timestamp() - ref)


def _classify(exc: BaseException, timeout_s: float) -> _Fail:
    """Map an exception raised while fetching to a failure."""
    if isinstance(exc, _Fail):
        return exc
    if isinstance(exc, TimeoutError):
        return _Fail("timeout", f"no complete answer within {timeout_s:g} s", retry=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause: BaseException | None = exc.os_error
        if isinstance(cause, BlockedAddressError) or isinstance(exc.__cause__, BlockedAddressError):
            return _Fail("blocked-address", str(cause))
        if isinstance(exc, aiohttp.ClientSSLError):
            return _Fail("connection", f"TLS failure: {exc}")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return _Fail("connection", f"name resolution failed: {exc}")  # not worth retrying
        return _Fail("connection", str(exc) or type(exc).__name__, retry=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return _Fail("bad-url", f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _Fail("connection", f"broken response body: {exc}", retry=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return _Fail("connection", f"malformed response: {exc.message}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return _Fail("connection", str(exc) or type(exc).__name__, retry=True)
    if isinstance(exc, ValueError):
        return _Fail("bad-url", f"unusable URL: {exc}")
    return _Fail("internal", f"{type(exc).__name__}: {exc}")


def _session(cfg: DownloadConfig, resolver: AbstractResolver | None) -> aiohttp.ClientSession:
    """The aiohttp session of one batch (see the module docstring)."""
    connector = aiohttp.TCPConnector(
        limit=0,  # our own slots bound concurrency (queueing in the connector would eat
        limit_per_host=0,  # into the per-attempt timeout)
        resolver=GuardedResolver(cfg.allowed_private_hosts, resolver),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": cfg.user_agent, "Accept": "image/*,*/*;q=0.5"},
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


async def _get_body(session: aiohttp.ClientSession, url: URL, cfg: DownloadConfig) -> bytes:
    """Follow up to MAX_REDIRECTS redirects by hand (checking each hop); stream the body."""
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        async with session.get(current, allow_redirects=False) as resp:
            status = resp.status
            if status in _REDIRECT_STATUSES:
                location = resp.headers.get("Location")
                if not location:
                    raise _Fail(f"http-{status}", "redirect without a Location header")
                try:
                    target = resp.url.join(URL(location))
                except ValueError as exc:
                    raise _Fail("bad-url", f"unusable redirect {location!r}: {exc}") from exc
                current, failure = check_url(target, cfg.allowed_private_hosts)
                if failure is not None:
                    raise _Fail(failure.reason, f"redirect to {target}: {failure.detail}")
                continue
            if status in _RETRY_STATUSES or status >= 500:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                    raise _Fail(
                        f"http-{status}",
                        f"{resp.reason}; server asks to retry after {retry_after:.0f} s",
                    )
                raise _Fail(
                    f"http-{status}", str(resp.reason), retry=True, retry_after=retry_after
                )
            if not 200 <= status < 300:
                raise _Fail(f"http-{status}", str(resp.reason))
            if cfg.honour_noai:
                opt_out = noai_directive(resp.headers.getall("X-Robots-Tag", ()),
                                         cfg.user_agent)
                if opt_out is not None:
                    resp.close()
                    raise _Fail("robots-noai",
                                f"X-Robots-Tag {opt_out}: the publisher opts out of AI use")
            return await _read_capped(resp, cfg.max_bytes)
    raise _Fail("too-many-redirects", f"more than {MAX_REDIRECTS} redirects")


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """Stream the body, aborting as soon as it exceeds the byte cap or is clearly no image."""
    length = resp.content_length
    if length is not None and length > cap:
        resp.close()
        raise _Fail("too-large", f"Content-Length {length:,} bytes exceeds {cap:,}")
    buf = bytearray()
    sniffed = False
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > cap:
            resp.close()
            raise _Fail("too-large", f"body exceeds {cap:,} bytes (aborted while streaming)")
        if not sniffed and len(buf) >= 32:
            sniffed = True
            if sniff_format(bytes(buf[:32])) is None:
                resp.close()
                ctype = resp.headers.get("Content-Type", "no Content-Type")
                raise _Fail("not-an-image", f"not an image format ({ctype})")
    return bytes(buf)


__all__ = ["MAX_REDIRECTS", "MAX_RETRY_AFTER_S", "parse_retry_after"]
