"""On-disk caches of the vocabulary: atomic file writes and the concept-embedding cache.

Embedding the whole WordNet vocabulary takes minutes on a CPU, and every run needs the same
matrix, so it is computed once per (embedder, texts) pair and kept as a ``.npy`` file that is
memory-mapped on later runs (a fraction of a second instead of minutes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from ie_engine.errors import EmbeddingError
from ie_engine.types import ProgressSink, TextEmbedder

CACHE_FORMAT_VERSION = 1
"""Bumped when the layout of a cache file changes, so old files are simply not found."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and the file is
    then renamed over ``path`` (``os.replace`` is atomic on POSIX). A crash leaves at worst a
    stray ``.tmp`` file, never a half-written ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide a shared cache
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def embedding_cache_key(texts: list[str], embedder_name: str, dim: int) -> str:
    """sha256 (hex) over the embedder's name, its dimension and every text, in order.

    Each part is length-prefixed, so no two different lists of texts can hash alike by
    shifting characters between neighbours.
    """
    h = hashlib.sha256()
    h.update(f"ie-embeddings-v{CACHE_FORMAT_VERSION}".encode())
    for part in (embedder_name, str(dim), str(len(texts)), *texts):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def embedding_cache_path(texts: list[str], embedder: TextEmbedder, cache_dir: Path) -> Path:
    """Where the embeddings of ``texts`` by ``embedder`` are (or will be) cached."""
    key = embedding_cache_key(texts, embedder.name, int(embedder.dim))
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder.name).strip("._") or "embedder"
    return cache_dir / f"{safe_name}-{key}.npy"


def _load_cached(path: Path, n: int, dim: int) -> np.ndarray | None:
    """The cached matrix, memory-mapped read-only; None when absent, corrupt or mis-shaped."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.shape != (n, dim) or arr.dtype != np.float32:
        return None
    return np.asarray(arr)


def text_hashes(texts: list[str]) -> np.ndarray:
    """64-bit hashes of texts (the first 8 bytes of their sha1), as uint64 (len(texts),)."""
    return np.array(
        [int.from_bytes(hashlib.sha1(t.encode("utf-8")).digest()[:8], "little") for t in texts],
        dtype=np.uint64,
    )


def _keys_path(path: Path) -> Path:
    return path.with_name(path.stem + ".keys.npy")


def _write_keys(path: Path, texts: list[str]) -> None:
    """The sidecar listing which text each row of a cache file holds (for reuse by subsets)."""
    keys = text_hashes(texts)
    atomic_write(_keys_path(path), lambda fh: np.save(fh, keys, allow_pickle=False))


def _reuse_rows(
    texts: list[str], embedder: TextEmbedder, cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Rows already embedded in other cache files of the same embedder.

    Returns (vectors (len(texts), dim) float32, found (len(texts),) bool). A subset of a cached
    vocabulary (concrete nouns only, a spread sample, the full one plus a few user concepts)
    costs only its new texts.
    """
    dim = int(embedder.dim)
    wanted = text_hashes(texts)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    found = np.zeros(len(texts), dtype=bool)
    prefix = embedding_cache_path([], embedder, cache_dir).name.rsplit("-", 1)[0] + "-"
    for keys_file in sorted(cache_dir.glob(f"{prefix}*.keys.npy")):
        data_file = keys_file.with_name(keys_file.name[: -len(".keys.npy")] + ".npy")
        try:
            keys = np.load(keys_file, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            continue
        cached = _load_cached(data_file, len(keys), dim)
        if cached is None:
            continue
        order = np.argsort(keys, kind="stable")
        pos = np.searchsorted(keys[order], wanted)
        pos = np.minimum(pos, len(keys) - 1)
        hit = (keys[order][pos] == wanted) & ~found
        if hit.any():
            vectors[hit] = cached[order[pos[hit]]]
            found |= hit
        if found.all():
            break
    return vectors, found


def load_or_compute_embeddings(
    texts: list[str],
    embedder: TextEmbedder,
    cache_dir: Path,
    *,
    progress: ProgressSink | None = None,
) -> np.ndarray:
    """Embeddings of ``texts`` as a read-only float32 array (len(texts), embedder.dim).

    The first call embeds and saves ``{cache_dir}/{embedder}-{sha256}.npy`` atomically; later
    calls with the same embedder name and the same texts memory-map that file (fast, and the
    pages are shared between processes). Texts already embedded in another cache file of the
    same embedder (each file has a ``.keys.npy`` sidecar of text hashes) are copied from it, so
    a sub- or superset of a cached vocabulary only embeds its new texts. Texts are handed to the
    embedder shortest first (less padding); the result is in the order of ``texts``. A corrupt,
    truncated or mis-shaped file is recomputed and replaced, never fatal. Raises
    :class:`EmbeddingError` when the embedder returns an array of the wrong shape or with
    non-finite values.
    """
    dim = int(embedder.dim)
    if not texts:
        empty = np.zeros((0, dim), dtype=np.float32)
        empty.setflags(write=False)
        return empty
    path = embedding_cache_path(texts, embedder, cache_dir)
    cached = _load_cached(path, len(texts), dim)
    if cached is not None:
        if not _keys_path(path).is_file():
            _write_keys(path, texts)
        return cached

    # Rows embedded before (by any earlier vocabulary of this embedder) are reused.
    reused, found = _reuse_rows(texts, embedder, cache_dir) if cache_dir.is_dir() else (
        np.zeros((len(texts), dim), dtype=np.float32), np.zeros(len(texts), dtype=bool))
    missing = [i for i in range(len(texts)) if not found[i]]

    # Embed in order of length: a transformer pads each batch to its longest text, and WordNet
    # glosses vary from 10 to 500 characters, so sorted batches cost about half as much. Rows
    # are put back in the callers' order before saving.
    order = sorted(missing, key=lambda i: len(texts[i]))
    vectors = reused
    if order:
        raw = embedder.embed([texts[i] for i in order], progress=progress)
        sorted_vectors = np.asarray(raw, dtype=np.float32)
        if sorted_vectors.shape != (len(order), dim):
            raise EmbeddingError(
                f"embedder {embedder.name!r} returned shape {sorted_vectors.shape}, "
                f"expected {(len(order), dim)}"
            )
        vectors[np.asarray(order, dtype=np.int64)] = sorted_vectors
    if not np.isfinite(vectors).all():
        raise EmbeddingError(f"embedder {embedder.name!r} returned non-finite values")
    atomic_write(path, lambda fh: np.save(fh, vectors, allow_pickle=False))
    _write_keys(path, texts)
    vectors.setflags(write=False)
    return vectors
