"""The downloader's content cache: what each image URL answered, so that a run's downloads can be
replayed with no image host reachable.

It lives beside the search engines' response cache (``{cache root}/downloads``, the cache root
being a run's ``search-cache/``) and takes the same mode. Layout::

    urls/{k[:2]}/{k}.json    one record per URL the downloader was asked for (k: the sha256 of
                             the URL): the sha256 and size of its body, or the refusal it ended in
    bodies/{s[:2]}/{s}       a body as it was served, named by its sha256 s (stored once, however
                             many URLs served it)

What is recorded is the outcome of the network part of a download, under the URL that was asked
for (a redirect's body is recorded under the URL that led to it):

* a body that passed the byte cap and the format sniff while streaming (so at most
  ``DownloadConfig.max_bytes``);
* a refusal, with its reason code and detail (``http-404``, ``robots-noai``, ``too-large``,
  ``blocked-address`` ...). Refusals a later try might not repeat (``timeout``, ``connection``,
  408, 429, 5xx) are marked transient.

Bodies are checked again when read: one whose sha256 no longer matches its name is never used,
and decoding and every content guard (magic bytes, decompression bombs, the byte cap) run on
cached bytes exactly as on fresh ones.

=========== ==================================================================================
``use``     read, and write what the network answers; a transient refusal is not read (the URL
            is asked again, and the new outcome replaces it)
``refresh`` never read; write what the network answers
``replay``  read only; the downloader opens no connection at all, and a URL without a usable
            record is a ``replay-miss`` failure
=========== ==================================================================================

(Mode ``off`` has no cache object.) Every file is written to a temporary name and renamed into
place, the body before the record naming it: a killed process leaves no half file, at most a
body no record names yet. A cache that cannot be written (a read-only or full disk) never fails
a download; :attr:`DownloadCache.write_errors` counts what was lost.

Size: the raw bytes of every distinct image the run fetched (the run's ``images/`` only holds
small re-encodes of the kept ones), plus about 200 bytes a URL. Nothing is evicted: deleting
the folder is always safe, the run then just cannot be replayed offline any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ie_engine.errors import ConfigError, ExplorerError

DOWNLOADS_FOLDER: Final = "downloads"
"""The download cache's folder inside a response cache's root."""
CACHE_FORMAT: Final = 1
MODES: Final = ("use", "refresh", "replay")


@dataclass(frozen=True)
class CachedBody:
    """A URL that answered with a body (stored under its sha256)."""

    sha256: str
    size: int


@dataclass(frozen=True)
class CachedRefusal:
    """A URL whose download ended in a refusal."""

    reason: str
    detail: str
    transient: bool


class DamagedBodyError(ExplorerError):
    """A cached body that is missing, or no longer matches its sha256."""


class DownloadCache:
    """Image download outcomes on disk under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, mode: str = "use") -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown download cache mode {mode!r}; use one of "
                              f"{', '.join(MODES)}")
        self.root = Path(root)
        self.mode = mode
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.write_errors = 0
        self._lock = threading.Lock()

    @property
    def readable(self) -> bool:
        return self.mode in ("use", "replay")

    @property
    def writable(self) -> bool:
        return self.mode in ("use", "refresh")

    @property
    def replaying(self) -> bool:
        return self.mode == "replay"

    def record_path(self, url: str) -> Path:
        k = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / "urls" / k[:2] / f"{k}.json"

    def body_path(self, sha256: str) -> Path:
        return self.root / "bodies" / sha256[:2] / sha256

    # -- reading --------------------------------------------------------------------------------

    def lookup(self, url: str) -> CachedBody | CachedRefusal | None:
        """What ``url`` answered last time, or None: no (readable) record, or a transient
        refusal outside replay (that URL is worth asking again)."""
        if not self.readable:
            return None
        out: CachedBody | CachedRefusal | None = None
        try:
            data = json.loads(self.record_path(url).read_text())
            if data["url"] != url:
                raise ValueError("record of another URL")
            if "sha256" in data:
                out = CachedBody(str(data["sha256"]), int(data["size"]))
            else:
                out = CachedRefusal(str(data["reason"]), str(data["detail"]),
                                    bool(data["transient"]))
        except (OSError, ValueError, TypeError, KeyError):
            out = None
        if isinstance(out, CachedRefusal) and out.transient and not self.replaying:
            out = None
        with self._lock:
            if out is None:
                self.misses += 1
            else:
                self.hits += 1
        return out

    def read_body(self, entry: CachedBody) -> bytes:
        """The body ``entry`` names, checked against its sha256; :class:`DamagedBodyError` when
        it is missing or its bytes changed."""
        path = self.body_path(entry.sha256)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DamagedBodyError(f"cached body {entry.sha256[:12]} unreadable: "
                                   f"{exc.strerror or exc}") from exc
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise DamagedBodyError(f"cached body {entry.sha256[:12]} is damaged (its sha256 "
                                   "no longer matches)")
        return data

    # -- writing --------------------------------------------------------------------------------

    def put_body(self, url: str, data: bytes) -> bool:
        """Record that ``url`` answered ``data``; False when not written (mode, disk)."""
        if not self.writable:
            return False
        sha = hashlib.sha256(data).hexdigest()
        try:
            write_atomic(self.body_path(sha), data)  # again if present: it may be damaged
        except OSError:
            return self._lost()
        return self._put_record(url, {"sha256": sha, "size": len(data)})

    def put_refusal(self, url: str, reason: str, detail: str, *, transient: bool) -> bool:
        """Record that the download of ``url`` was refused (``reason``, ``detail``)."""
        if not self.writable:
            return False
        return self._put_record(url, {"reason": reason, "detail": detail,
                                      "transient": transient})

    def _put_record(self, url: str, fields: dict[str, object]) -> bool:
        record = {"format": CACHE_FORMAT, "url": url,
                  "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        try:
            write_atomic(self.record_path(url), json.dumps(record, ensure_ascii=False).encode())
        except OSError:
            return self._lost()
        with self._lock:
            self.writes += 1
        return True

    def _lost(self) -> bool:
        with self._lock:
            self.write_errors += 1
        return False


def write_atomic(path: Path, data: bytes, *, make_folder: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a killed process
    never leaves a half file; the temporary file is removed when the write fails."""
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


__all__ = [
    "DOWNLOADS_FOLDER",
    "CachedBody",
    "CachedRefusal",
    "DamagedBodyError",
    "DownloadCache",
    "write_atomic",
]
