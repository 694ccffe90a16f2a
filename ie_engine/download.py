"""The image downloader: search results in, guarded, normalised, de-duplicated images out.

One :class:`Downloader` serves a whole exploration run; :meth:`Downloader.fetch_all` handles one
iteration's batch. Every request ends as exactly one :class:`~ie_engine.types.DownloadedImage` or
one :class:`~ie_engine.types.DownloadFailure` with a stable reason code - one bad image never
raises. Reason codes:

===================== =======================================================================
``bad-url``           not http(s), no host, or unparsable
``blocked-address``   the host is (or resolves to) a loopback, private, link-local, reserved,
                      multicast or metadata address and is not in ``allowed_private_hosts``
``http-<status>``     a non-2xx answer (after retries for 408, 429 and 5xx)
``timeout``           an attempt took longer than ``timeout_s`` (after retries)
``connection``        connection refused/reset, DNS failure, TLS error, broken body
``too-many-redirects`` more than :data:`MAX_REDIRECTS` redirects
``robots-noai``       the answer carries ``X-Robots-Tag: noai`` or ``noimageai`` (for every
                      crawler or for our User-Agent) and ``honour_noai`` is on: never read
``too-large``         ``Content-Length`` or the streamed body exceeds ``max_bytes``
``not-an-image``      magic bytes are not PNG, JPEG, GIF, WebP or BMP
``decompression-bomb`` more than ``max_pixels`` pixels (refused before decoding)
``corrupt``           truncated or undecodable image data
``target-leak``       dHash within ``dhash_threshold`` of a target image: never trained on
``duplicate``         same stored bytes (or same URL) as an earlier image
``near-duplicate``    dHash within ``dhash_threshold`` of an earlier image
``io-error``          the stored file could not be written (a full disk is not a failure of
                      one image: ``OSError(ENOSPC)`` is raised to the caller)
``cancelled``         ``should_stop`` asked to stop before this request finished
``internal``          an unexpected error (a bug): recorded, not raised
===================== =======================================================================

Scheduling. Each request first takes a per-host slot (``per_host``, keyed by the requested
URL's host and port), then a global slot (``concurrency``). The host slot is given back once the
body is read; the global slot only once a CPU slot is free, so that when decoding is the
bottleneck downloads pause instead of piling bodies up in memory (at most ``concurrency`` bodies
wait). Slots are not held during retry back-off. ``timeout_s`` bounds each attempt from the
first connection to the last body byte, redirects included, and starts only when the slots are
held (queueing does not count).

Address guard. URLs whose host is an IP literal are checked before anything is sent; host names
are checked on the addresses they resolve to, by :class:`GuardedResolver` inside aiohttp's
connector (so the check applies to the very address connected to - no gap for DNS rebinding).
Redirects are followed by hand (at most :data:`MAX_REDIRECTS`) and every hop is checked the same
way. Proxies from the environment are ignored (``trust_env=False``): they would bypass the check.

CPU work (decode, resize, JPEG encode, hashes, the leak check) runs in a thread pool, one call
per image; once the batch is fetched, duplicates are checked in request order (so a batch keeps
the same images whatever order its downloads finished in) and the kept files are written, again
in the pool: Pillow releases the GIL while decoding
and resizing, so the event loop keeps streaming other downloads meanwhile (measured with
:mod:`ie_engine.download_bench`; see :func:`default_cpu_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import functools
import ipaddress
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ie_engine.config import DownloadConfig
from ie_engine.imaging import (
    DedupIndex,
    HashIndex,
    ImageRejected,
    PreparedImage,
    image_header,
    is_informative,
    prepare_image,
    sniff_format,
)
from ie_engine.robots import noai_directive
from ie_engine.types import (
    DownloadedImage,
    DownloadFailure,
    DownloadReport,
    DownloadRequest,
    ProgressSink,
)

MAX_REDIRECTS: Final = 5
"""Redirects followed per request; one more is ``too-many-redirects``."""
MAX_RETRY_AFTER_S: Final = 10.0
"""A 429/503 ``Retry-After`` up to this many seconds is honoured; a longer one ends the request."""
PROGRESS_PHASE: Final = "download"
"""Phase name reported to the progress sink."""
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES: Final = frozenset({408, 429})
_METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_STOP_POLL_S: Final = 0.2

_T = TypeVar("_T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------------------------------------
# Address guard


class BlockedAddressError(OSError):
    """A host resolved to an address the downloader must not connect to."""


def is_blocked_address(ip: IPAddress) -> bool:
    """Whether connecting to ``ip`` could reach something other than the public internet.

    Blocks everything Python does not consider globally routable (loopback, RFC 1918 private,
    link-local including the 169.254.169.254 metadata service, shared/CGNAT, documentation,
    reserved, unspecified), multicast, known cloud metadata addresses, and IPv6 forms that embed
    an IPv4 address (mapped, 6to4, Teredo) whose IPv4 part is blocked.
    """
    if ip in _METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address | None] = [ip.ipv4_mapped, ip.sixtofour]
        if ip.teredo is not None:
            embedded.append(ip.teredo[1])
        if any(e is not None and is_blocked_address(e) for e in embedded):
            return True
    return ip.is_multicast or not ip.is_global


def host_is_allowed(host: str, port: int | None, allowed: Collection[str]) -> bool:
    """Whether ``host`` (or ``host:port``) is listed in ``allowed_private_hosts``."""
    if not allowed:
        return False
    h = host.lower().strip("[]").rstrip(".")
    names = {h, f"[{h}]"}
    if port is not None:
        names |= {f"{n}:{port}" for n in names}
    return any(entry.lower() in names for entry in allowed)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to blocked addresses.

    Wraps another resolver (aiohttp's threaded ``getaddrinfo`` by default). If *any* address of a
    name is blocked the whole name is refused - a name mixing public and private addresses is
    more likely an attack than a mistake. Names listed in ``allowed`` pass unchecked.
    """

    def __init__(
        self, allowed: Collection[str] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_is_allowed(host, port, self._allowed):
            return results
        for r in results:
            ip = _ip_literal(r["host"].split("%", 1)[0])
            if ip is None or is_blocked_address(ip):
                raise BlockedAddressError(f"{host} resolves to {r['host']}, a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str | URL, allowed: Collection[str] = ()) -> tuple[URL, DownloadFailure | None]:
    """Parse ``url`` and apply the checks possible without resolving it.

    Returns the parsed URL and None, or a ``bad-url``/``blocked-address`` failure (URL unusable).
    """
    raw = str(url)
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
        port = parsed.port
    except (ValueError, TypeError) as exc:
        return URL(), DownloadFailure(raw, "bad-url", f"unparsable URL: {exc}")
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "none"
        return parsed, DownloadFailure(raw, "bad-url", f"scheme {scheme!r} is not http or https")
    if not host:
        return parsed, DownloadFailure(raw, "bad-url", "URL has no host")
    ip = _ip_literal(host)
    if ip is not None and is_blocked_address(ip) and not host_is_allowed(host, port, allowed):
        return parsed, DownloadFailure(
            raw, "blocked-address", f"{host} is a non-public address (not in allowed hosts)"
        )
    return parsed, None


# ---------------------------------------------------------------------------------------------
# Failures inside one request


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


# ---------------------------------------------------------------------------------------------
# The downloader


def default_cpu_workers() -> int:
    """Worker threads for the CPU part: CPUs + 2, at most 6.

    More threads than cores because a worker also blocks on creating the stored file (about
    0.4 ms on the ext4 volume measured, against 2-3 ms of decoding) and Pillow releases the GIL
    while decoding and resizing; at most 6 because each worker may hold one image of up to
    ``max_pixels`` in memory (160 MB as RGBA at the default 40 Mpx). Measured with
    :mod:`ie_engine.download_bench` on 2 cores: 0 (inline) and 2 workers were clearly slower than
    4 and 8.
    """
    return min(6, (os.cpu_count() or 1) + 2)


@dataclass
class _Batch:
    """Per-``fetch_all`` state: the session, slots and the CPU pool."""

    session: aiohttp.ClientSession
    global_slots: asyncio.Semaphore
    cpu_slots: asyncio.Semaphore
    executor: Executor | None
    host_slots: dict[tuple[str, int | None], asyncio.Semaphore] = field(default_factory=dict)
    stopping: bool = False
    """Set when ``should_stop`` fired; read by worker threads."""


class PixelBudget:
    """A weighted semaphore on decoded pixels in flight across the decoding threads.

    A 40-megapixel RGBA PNG takes ~160 MB decoded and two or three times that while it is
    flattened onto white; six threads on such images at once pushed a cpu-small run past 4 GB.
    Each decode holds its pixel count (capped at the budget, so an image larger than the budget
    runs alone); small images still decode in parallel.
    """

    def __init__(self, budget: int) -> None:
        self.budget = max(1, budget)
        self.in_use = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        weight = min(max(0, pixels), self.budget)
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + weight <= self.budget)
            self.in_use += weight
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= weight
                self._cond.notify_all()


@dataclass(frozen=True)
class _Prepared:
    """A decoded, normalised image that passed the leakage guard, not yet de-duplicated."""

    image: PreparedImage
    request: DownloadRequest


class Downloader:
    """Fetches search results into ``image_dir`` as normalised JPEGs (see the module docstring).

    ``target_hashes`` are the dHashes of the target images: a download within
    ``config.dhash_threshold`` bits of one is refused as ``target-leak`` (the leakage guard).
    ``dedup`` is shared across iterations (and checkpointed by the caller) so that an image is
    only ever added once; a fresh one is made when omitted.

    Stored files: ``image_dir/{sha256[:2]}/{sha256}.jpg`` (sha256 of the stored bytes).

    ``cpu_workers``: threads for decoding and storing (default :func:`default_cpu_workers`); 0
    does that work on the event loop itself (only for measurements). ``resolver``: the name
    resolver wrapped by the address guard (tests inject a fake one; default: ``getaddrinfo`` in
    a thread).
    """

    def __init__(
        self,
        config: DownloadConfig,
        image_dir: Path,
        target_hashes: Sequence[int] = (),
        dedup: DedupIndex | None = None,
        *,
        cpu_workers: int | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.config = config
        self.image_dir = Path(image_dir)
        self.targets = HashIndex(target_hashes)
        self.dedup = dedup if dedup is not None else DedupIndex()
        self.cpu_workers = default_cpu_workers() if cpu_workers is None else cpu_workers
        self._resolver = resolver
        self._rng = random.Random()
        self._folders: set[Path] = set()
        self._pixels = PixelBudget(config.decode_pixel_budget)

    # -- public ---------------------------------------------------------------------------------

    async def fetch_all(
        self,
        requests: Sequence[DownloadRequest],
        *,
        progress: ProgressSink | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> DownloadReport:
        """Download every request; returns images and failures in request order.

        Every request yields exactly one image or one failure. When ``should_stop`` returns True
        (polled a few times a second) downloads in flight are abandoned and every unfinished
        request is recorded as ``cancelled``.
        """
        started = time.perf_counter()
        n = len(requests)
        if progress is not None:
            progress.start(PROGRESS_PHASE, n)
        outcomes: list[_Prepared | DownloadFailure | None] = [None] * n
        first_by_url: dict[str, int] = {}
        todo: list[int] = []
        for i, req in enumerate(requests):
            url = req.result.image_url
            if url in first_by_url:
                outcomes[i] = DownloadFailure(
                    url, "duplicate", f"same URL as request #{first_by_url[url]}", req
                )
                if progress is not None:
                    progress.advance(PROGRESS_PHASE)
            else:
                first_by_url[url] = i
                todo.append(i)

        executor = (
            ThreadPoolExecutor(max_workers=self.cpu_workers, thread_name_prefix="ie-decode")
            if self.cpu_workers > 0
            else None
        )
        try:
            async with self._session() as session:
                batch = _Batch(
                    session=session,
                    global_slots=asyncio.Semaphore(self.config.concurrency),
                    cpu_slots=asyncio.Semaphore(max(1, 2 * self.cpu_workers)),
                    executor=executor,
                )
                await self._run(batch, requests, todo, outcomes, progress, should_stop)

            # Duplicate checks in request order, whatever order the downloads finished in: the
            # same batch always keeps the same images (an exact resume depends on it).
            final = self._deduplicate(requests, outcomes)
            stored = [i for i, o in enumerate(final) if isinstance(o, _Prepared)]
            results = (
                list(executor.map(lambda i: self._store_prepared(final[i]), stored))
                if executor is not None
                else [self._store_prepared(final[i]) for i in stored]
            )
            for i, out in zip(stored, results, strict=True):
                final[i] = out
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

        report = DownloadReport(seconds=time.perf_counter() - started)
        for outcome in final:
            if isinstance(outcome, DownloadedImage):
                report.images.append(outcome)
            elif isinstance(outcome, DownloadFailure):
                report.failures.append(outcome)
        if progress is not None:
            progress.finish(PROGRESS_PHASE)
        return report

    # -- scheduling -------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # our own slots bound concurrency (queueing in the connector would eat
            limit_per_host=0,  # into the per-attempt timeout)
            resolver=GuardedResolver(self.config.allowed_private_hosts, self._resolver),
            ttl_dns_cache=300,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.config.user_agent, "Accept": "image/*,*/*;q=0.5"},
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def _run(
        self,
        batch: _Batch,
        requests: Sequence[DownloadRequest],
        todo: list[int],
        outcomes: list[_Prepared | DownloadFailure | None],
        progress: ProgressSink | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        # A bounded window of tasks: enough to keep every slot busy, few enough that 100k
        # requests do not become 100k coroutines at once.
        window = max(64, 8 * self.config.concurrency)
        pending: dict[asyncio.Task[_Prepared | DownloadFailure], int] = {}
        queue = iter(todo)
        while True:
            if not batch.stopping and should_stop is not None and should_stop():
                # Workers see the flag before touching the dedup index, so nothing cancelled
                # leaves a trace in it; fetch_all waits for them to finish.
                batch.stopping = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                for task, i in pending.items():
                    if not task.cancelled() and task.exception() is None:
                        outcomes[i] = task.result()
                pending.clear()
            while not batch.stopping and len(pending) < window:
                index = next(queue, None)
                if index is None:
                    break
                pending[asyncio.create_task(self._one(batch, requests[index]))] = index
            if not pending:
                return
            done, _ = await asyncio.wait(
                pending, timeout=_STOP_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                outcomes[pending.pop(task)] = task.result()
                if progress is not None:
                    progress.advance(PROGRESS_PHASE)

    async def _one(self, batch: _Batch, req: DownloadRequest) -> _Prepared | DownloadFailure:
        """One request, start to finish. Never raises (except cancellation)."""
        url = req.result.image_url
        try:
            parsed, failure = check_url(url, self.config.allowed_private_hosts)
            if failure is not None:
                return DownloadFailure(url, failure.reason, failure.detail, req)
            data = await self._fetch_bytes(batch, parsed)  # returns holding a global slot
            try:
                await batch.cpu_slots.acquire()
            finally:
                batch.global_slots.release()
            try:
                return await self._in_pool(
                    batch, functools.partial(self._process, batch, data, req)
                )
            finally:
                batch.cpu_slots.release()
        except _Fail as f:
            return DownloadFailure(url, f.reason, f.detail, req)
        except ImageRejected as r:
            return DownloadFailure(url, r.reason, r.detail, req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: record it, keep the batch going
            return DownloadFailure(url, "internal", f"{type(exc).__name__}: {exc}", req)

    async def _in_pool(self, batch: _Batch, fn: Callable[[], _T]) -> _T:
        if batch.executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(batch.executor, fn)

    # -- network --------------------------------------------------------------------------------

    async def _fetch_bytes(self, batch: _Batch, url: URL) -> bytes:
        """The body of ``url``, with retries. Returns HOLDING a global slot (the caller gives it
        back); raises :class:`_Fail` holding nothing."""
        cfg = self.config
        key = (url.host or "", url.port)
        host_slots = batch.host_slots.get(key)
        if host_slots is None:
            host_slots = batch.host_slots[key] = asyncio.Semaphore(cfg.per_host)
        attempt = 0
        while True:
            async with host_slots:
                await batch.global_slots.acquire()
                try:
                    async with asyncio.timeout(cfg.timeout_s):
                        return await self._get_body(batch.session, url)
                except BaseException as exc:
                    batch.global_slots.release()
                    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                        raise
                    failure = _classify(exc, cfg.timeout_s)
            if not failure.retry or attempt >= cfg.retries:
                if attempt:
                    failure.detail += f" (after {attempt + 1} attempts)"
                raise failure
            delay = cfg.backoff_s * (2**attempt) * self._rng.uniform(0.5, 1.5)
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            await asyncio.sleep(delay)
            attempt += 1

    async def _get_body(self, session: aiohttp.ClientSession, url: URL) -> bytes:
        """Follow up to MAX_REDIRECTS redirects by hand (checking each hop); stream the body."""
        cfg = self.config
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
                return await self._read_capped(resp)
        raise _Fail("too-many-redirects", f"more than {MAX_REDIRECTS} redirects")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """Stream the body, aborting as soon as it exceeds the byte cap or is clearly no image."""
        cap = self.config.max_bytes
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

    # -- acceptance -----------------------------------------------------------------------------

    def _process(
        self, batch: _Batch, data: bytes, req: DownloadRequest
    ) -> _Prepared | DownloadFailure:
        """CPU part, in a worker thread: decode and normalise, then the leakage guard.

        Duplicate checks come later, in request order (:meth:`_deduplicate`).
        """
        url = req.result.image_url
        cfg = self.config
        header = image_header(data)
        weight = header[1] * header[2] if header is not None else 0
        if weight > cfg.max_pixels:
            weight = 0  # refused from its header at once: no need to wait for room
        try:
            with self._pixels.hold(weight):
                p = prepare_image(data, max_pixels=cfg.max_pixels, size=cfg.stored_size)
        except ImageRejected as r:
            return DownloadFailure(url, r.reason, r.detail, req)
        if batch.stopping:
            return DownloadFailure(url, "cancelled", "stopped before this image was kept", req)
        informative = is_informative(p.dhash)
        leak = self.targets.find_near(p.dhash, cfg.dhash_threshold) if informative else None
        if leak is not None:
            d = (leak ^ p.dhash).bit_count()
            return DownloadFailure(
                url, "target-leak", f"dHash {p.dhash:016x} is {d} bits from a target image", req
            )
        return _Prepared(p, req)

    def _deduplicate(
        self,
        requests: Sequence[DownloadRequest],
        outcomes: list[_Prepared | DownloadFailure | None],
    ) -> list[_Prepared | DownloadedImage | DownloadFailure]:
        """Exact and near-duplicate checks against the shared index, in request order.

        Requests that never finished (a stop) become ``cancelled`` and leave no trace in the
        index.
        """
        thr = self.config.dhash_threshold
        final: list[_Prepared | DownloadedImage | DownloadFailure] = []
        for req, out in zip(requests, outcomes, strict=True):
            url = req.result.image_url
            if out is None:
                final.append(
                    DownloadFailure(url, "cancelled", "stopped before this download ended", req)
                )
                continue
            if isinstance(out, DownloadFailure):
                final.append(out)
                continue
            p = out.image
            if self.dedup.has_sha(p.sha256):
                final.append(DownloadFailure(
                    url, "duplicate", f"same image as an earlier one ({p.sha256[:12]})", req
                ))
                continue
            near = self.dedup.find_near(p.dhash, thr) if is_informative(p.dhash) else None
            if near is not None:
                d = (near ^ p.dhash).bit_count()
                detail = f"dHash {p.dhash:016x} is {d} bits from an earlier image"
                final.append(DownloadFailure(url, "near-duplicate", detail, req))
                continue
            self.dedup.add(p.sha256, p.dhash)
            final.append(out)
        return final

    def _store_prepared(self, item: _Prepared | DownloadedImage | DownloadFailure
                        ) -> DownloadedImage | DownloadFailure:
        """Write an accepted image to ``image_dir`` (in a worker thread)."""
        assert isinstance(item, _Prepared)
        p, req = item.image, item.request
        rel = f"{p.sha256[:2]}/{p.sha256}.{p.ext}"
        try:
            self._store(self.image_dir / rel, p.data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the disk is full: no image of this batch can be kept, stop the fetch
            return DownloadFailure(req.result.image_url, "io-error", f"cannot write {rel}: {exc}",
                                   req)
        return DownloadedImage(
            path=rel, sha256=p.sha256, dhash=p.dhash, width=p.width, height=p.height, request=req
        )

    def _store(self, path: Path, data: bytes) -> None:
        """Write atomically: a temporary file renamed into place (readers never see half a file;
        a file left by an earlier run under the same name holds the same bytes)."""
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        tmp = folder / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def download_all(
    requests: Sequence[DownloadRequest],
    *,
    config: DownloadConfig,
    image_dir: Path,
    target_hashes: Sequence[int] = (),
    dedup: DedupIndex | None = None,
    progress: ProgressSink | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DownloadReport:
    """Synchronous :meth:`Downloader.fetch_all` (runs its own event loop: not from async code)."""
    downloader = Downloader(config, image_dir, target_hashes, dedup)
    return asyncio.run(downloader.fetch_all(requests, progress=progress, should_stop=should_stop))


__all__ = [
    "MAX_REDIRECTS",
    "BlockedAddressError",
    "Downloader",
    "GuardedResolver",
    "check_url",
    "default_cpu_workers",
    "download_all",
    "host_is_allowed",
    "is_blocked_address",
    "parse_retry_after",
]
