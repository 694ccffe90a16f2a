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
``replay-miss``       replaying: the download cache holds no usable outcome for this URL
``internal``          an unexpected error (a bug): recorded, not raised
===================== =======================================================================

Scheduling. Each request first takes a per-host slot (``per_host``, keyed by the requested
URL's host and port), then a global slot (``concurrency``). The host slot is given back once the
body is read; the global slot only once a CPU slot is free, so that when decoding is the
bottleneck downloads pause instead of piling bodies up in memory (at most ``concurrency`` bodies
wait). Slots are not held during retry back-off. ``timeout_s`` bounds each attempt from the
first connection to the last body byte, redirects included, and starts only when the slots are
held (queueing does not count).

Address guard (:mod:`ie_engine.netguard`). URLs whose host is an IP literal are checked before
anything is sent; host names are checked on the addresses they resolve to, inside aiohttp's
connector (no gap for DNS rebinding). Redirects are followed by hand (at most
:data:`MAX_REDIRECTS`, :mod:`ie_engine.download_http`) and every hop is checked the same way.
Proxies from the environment are ignored (``trust_env=False``): they would bypass the check.

CPU work (decode, resize, JPEG encode, hashes, the leak check) runs in a thread pool, one call
per image; once the batch is fetched, duplicates are checked in request order (so a batch keeps
the same images whatever order its downloads finished in) and the kept files are written, again
in the pool: Pillow releases the GIL while decoding
and resizing, so the event loop keeps streaming other downloads meanwhile (measured with
:mod:`ie_engine.download_bench`; see :func:`default_cpu_workers`). Pixel budget, duplicate
checks and the leakage guard: :mod:`ie_engine.download_cpu`.

Content cache (optional, :mod:`ie_engine.download_cache`). Each URL's outcome is recorded: the
body it served, or the refusal it ended in. A URL the cache answers costs no request; its bytes
go through decoding and every guard again, as fresh ones would. In replay mode no session is
opened at all: each URL is answered from the cache, or ends as ``replay-miss``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from ie_engine.config import DownloadConfig
from ie_engine.download_cache import (
    CachedBody,
    CachedRefusal,
    DamagedBodyError,
    DownloadCache,
    write_atomic,
)
from ie_engine.download_cpu import (
    PixelBudget,
    _deduplicate,
    _Prepared,
    _process,
    _store_prepared,
    default_cpu_workers,
)
from ie_engine.download_http import (
    MAX_REDIRECTS,
    MAX_RETRY_AFTER_S,
    _classify,
    _Fail,
    _get_body,
    _session,
    parse_retry_after,
)
from ie_engine.imaging import DedupIndex, HashIndex, ImageRejected
from ie_engine.netguard import (
    BlockedAddressError,
    GuardedResolver,
    IPAddress,
    check_url,
    host_is_allowed,
    is_blocked_address,
)
from ie_engine.types import (
    DownloadedImage,
    DownloadFailure,
    DownloadReport,
    DownloadRequest,
    ProgressSink,
)

PROGRESS_PHASE: Final = "download"
"""Phase name reported to the progress sink."""
_STOP_POLL_S: Final = 0.2

_T = TypeVar("_T")


@dataclass
class _Batch:
    """Per-``fetch_all`` state: the session, slots and the CPU pool."""

    session: aiohttp.ClientSession | None
    """None when replaying from the download cache (nothing goes to the network)."""
    global_slots: asyncio.Semaphore
    cpu_slots: asyncio.Semaphore
    executor: Executor | None
    host_slots: dict[tuple[str, int | None], asyncio.Semaphore] = field(default_factory=dict)
    stopping: bool = False
    """Set when ``should_stop`` fired; read by worker threads."""


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
    a thread). ``cache``: the content cache that records each URL's outcome, and answers from it
    (see the module docstring).
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
        cache: DownloadCache | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
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
                    url, "duplicate", f"same URL as request #{first_by_url[url]}", req,
                    duplicate_of=f"url:{url}",
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
            async with contextlib.AsyncExitStack() as stack:
                replaying = self.cache is not None and self.cache.replaying
                session = None if replaying else await stack.enter_async_context(
                    _session(self.config, self._resolver))
                batch = _Batch(
                    session=session,
                    global_slots=asyncio.Semaphore(self.config.concurrency),
                    cpu_slots=asyncio.Semaphore(max(1, 2 * self.cpu_workers)),
                    executor=executor,
                )
                await self._run(batch, requests, todo, outcomes, progress, should_stop)

            # Duplicate checks in request order, whatever order the downloads finished in: the
            # same batch always keeps the same images (an exact resume depends on it).
            final = _deduplicate(self.dedup, self.config.dhash_threshold, requests, outcomes)
            stored = [i for i, o in enumerate(final) if isinstance(o, _Prepared)]
            store = functools.partial(_store_prepared, image_dir=self.image_dir, write=self._store)
            results = (
                list(executor.map(lambda i: store(final[i]), stored))
                if executor is not None
                else [store(final[i]) for i in stored]
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
            if self.cache is not None:
                cached = await self._from_cache(batch, req)
                if cached is not None:
                    return cached
            data = await self._fetch_bytes(batch, parsed)  # returns holding a global slot
            try:
                await batch.cpu_slots.acquire()
            finally:
                batch.global_slots.release()
            try:
                return await self._in_pool(batch, functools.partial(self._fresh, data, req, batch))
            finally:
                batch.cpu_slots.release()
        except _Fail as f:
            if self.cache is not None and f.reason != "internal":
                self.cache.put_refusal(url, f.reason, f.detail, transient=f.retry)
            return DownloadFailure(url, f.reason, f.detail, req)
        except ImageRejected as r:
            return DownloadFailure(url, r.reason, r.detail, req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: record it, keep the batch going
            return DownloadFailure(url, "internal", f"{type(exc).__name__}: {exc}", req)

    def _fresh(
        self, data: bytes, req: DownloadRequest, batch: _Batch
    ) -> _Prepared | DownloadFailure:
        """A body just fetched: recorded in the cache (if any), then decoded and guarded."""
        if self.cache is not None:
            self.cache.put_body(req.result.image_url, data)
        return _process(data, req, self.config, self._pixels, self.targets,
                        lambda: batch.stopping)

    # -- the content cache ------------------------------------------------------------------------

    async def _from_cache(
        self, batch: _Batch, req: DownloadRequest
    ) -> _Prepared | DownloadFailure | None:
        """The cache's answer for ``req``: its recorded refusal, or its recorded body through
        every guard; a ``replay-miss`` failure when replaying a URL it cannot answer; None when
        the network is to be asked."""
        cache = self.cache
        assert cache is not None
        url = req.result.image_url
        entry = cache.lookup(url)  # one small file: read on the loop
        if isinstance(entry, CachedRefusal):
            return DownloadFailure(url, entry.reason, entry.detail, req)
        problem = "no outcome recorded for this URL"
        if isinstance(entry, CachedBody):
            await batch.cpu_slots.acquire()
            try:
                return await self._in_pool(
                    batch, functools.partial(self._cached, cache, entry, req, batch))
            except DamagedBodyError as exc:
                problem = str(exc)
            finally:
                batch.cpu_slots.release()
        if cache.replaying:
            return DownloadFailure(url, "replay-miss", f"{problem} (download cache {cache.root})",
                                   req)
        return None

    def _cached(
        self, cache: DownloadCache, entry: CachedBody, req: DownloadRequest, batch: _Batch
    ) -> _Prepared | DownloadFailure:
        """A recorded body, read back and checked, under the same guards as a fresh one (in a
        worker thread); raises :class:`DamagedBodyError`."""
        data = cache.read_body(entry)
        if len(data) > self.config.max_bytes:
            return DownloadFailure(req.result.image_url, "too-large",
                                   f"cached body of {len(data):,} bytes exceeds "
                                   f"{self.config.max_bytes:,}", req)
        return _process(data, req, self.config, self._pixels, self.targets,
                        lambda: batch.stopping)

    async def _in_pool(self, batch: _Batch, fn: Callable[[], _T]) -> _T:
        if batch.executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(batch.executor, fn)

    # -- network --------------------------------------------------------------------------------

    async def _fetch_bytes(self, batch: _Batch, url: URL) -> bytes:
        """The body of ``url``, with retries. Returns HOLDING a global slot (the caller gives it
        back); raises :class:`_Fail` holding nothing."""
        cfg = self.config
        assert batch.session is not None, "no session: replaying from the download cache"
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
                        return await _get_body(batch.session, url, cfg)
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

    # -- storing --------------------------------------------------------------------------------

    def _store(self, path: Path, data: bytes) -> None:
        """Write atomically: a temporary file renamed into place (readers never see half a file;
        a file left by an earlier run under the same name holds the same bytes)."""
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        write_atomic(path, data, make_folder=False)


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
    "MAX_RETRY_AFTER_S",
    "PROGRESS_PHASE",
    "BlockedAddressError",
    "Downloader",
    "GuardedResolver",
    "IPAddress",
    "PixelBudget",
    "check_url",
    "default_cpu_workers",
    "download_all",
    "host_is_allowed",
    "is_blocked_address",
    "parse_retry_after",
]
