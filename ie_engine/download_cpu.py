"""The downloader's CPU side: worker threads, the decoded-pixel budget, the leakage guard and
duplicate checks.

:func:`_process` runs in the :class:`~ie_engine.download.Downloader`'s thread pool, one call per
image: decoding (:func:`~ie_engine.imaging.prepare_image`) under a :class:`PixelBudget`, then
the leakage guard against the target images' hashes. Once a batch is fetched,
:func:`_deduplicate` checks exact and near duplicates in request order, and
:func:`_store_prepared` writes each kept image as ``image_dir/{sha256[:2]}/{sha256}.jpg``
with the writer it is given (the downloader's atomic ``_store``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ie_engine.config import DownloadConfig
from ie_engine.imaging import (
    DedupIndex,
    HashIndex,
    ImageRejected,
    PreparedImage,
    image_header,
    is_informative,
    prepare_image,
)
from ie_engine.types import DownloadedImage, DownloadFailure, DownloadRequest


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


def _process(
    data: bytes,
    req: DownloadRequest,
    cfg: DownloadConfig,
    pixels: PixelBudget,
    targets: HashIndex,
    stopping: Callable[[], bool],
) -> _Prepared | DownloadFailure:
    """CPU part, in a worker thread: decode and normalise, then the leakage guard.

    Duplicate checks come later, in request order (:func:`_deduplicate`).
    """
    url = req.result.image_url
    header = image_header(data)
    weight = header[1] * header[2] if header is not None else 0
    if weight > cfg.max_pixels:
        weight = 0  # refused from its header at once: no need to wait for room
    try:
        with pixels.hold(weight):
            p = prepare_image(data, max_pixels=cfg.max_pixels, size=cfg.stored_size)
    except ImageRejected as r:
        return DownloadFailure(url, r.reason, r.detail, req)
    if stopping():
        return DownloadFailure(url, "cancelled", "stopped before this image was kept", req)
    informative = is_informative(p.dhash)
    leak = targets.find_near(p.dhash, cfg.dhash_threshold) if informative else None
    if leak is not None:
        d = (leak ^ p.dhash).bit_count()
        return DownloadFailure(
            url, "target-leak", f"dHash {p.dhash:016x} is {d} bits from a target image", req
        )
    return _Prepared(p, req)


def _deduplicate(
    dedup: DedupIndex,
    threshold: int,
    requests: Sequence[DownloadRequest],
    outcomes: list[_Prepared | DownloadFailure | None],
) -> list[_Prepared | DownloadedImage | DownloadFailure]:
    """Exact and near-duplicate checks against the shared index, in request order.

    Requests that never finished (a stop) become ``cancelled`` and leave no trace in the
    index.
    """
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
        if dedup.has_sha(p.sha256):
            final.append(DownloadFailure(
                url, "duplicate", f"same image as an earlier one ({p.sha256[:12]})", req,
                duplicate_of=f"sha256:{p.sha256}",
            ))
            continue
        near = dedup.find_near(p.dhash, threshold) if is_informative(p.dhash) else None
        if near is not None:
            d = (near ^ p.dhash).bit_count()
            detail = f"dHash {p.dhash:016x} is {d} bits from an earlier image"
            final.append(DownloadFailure(url, "near-duplicate", detail, req,
                                         duplicate_of=f"dhash:{near:016x}"))
            continue
        dedup.add(p.sha256, p.dhash)
        final.append(out)
    return final


def _store_prepared(
    item: _Prepared | DownloadedImage | DownloadFailure,
    image_dir: Path,
    write: Callable[[Path, bytes], None],
) -> DownloadedImage | DownloadFailure:
    """Write an accepted image to ``image_dir`` with ``write`` (in a worker thread)."""
    assert isinstance(item, _Prepared)
    p, req = item.image, item.request
    rel = f"{p.sha256[:2]}/{p.sha256}.{p.ext}"
    try:
        write(image_dir / rel, p.data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the disk is full: no image of this batch can be kept, stop the fetch
        return DownloadFailure(req.result.image_url, "io-error", f"cannot write {rel}: {exc}",
                               req)
    return DownloadedImage(
        path=rel, sha256=p.sha256, dhash=p.dhash, width=p.width, height=p.height, request=req
    )


__all__ = ["PixelBudget", "default_cpu_workers"]
