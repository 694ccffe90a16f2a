"""Perceptual hashes and duplicate detection.

Near-duplicates use a 64-bit dHash (``imagehash.dhash``, 8x8, :func:`dhash64`) and
:class:`HashIndex`, which finds any stored hash within a small Hamming distance without a linear
scan. :class:`DedupIndex` adds exact duplicates (sha256 of the stored bytes) and lives for a
whole exploration run; the downloader's leakage guard is a :class:`HashIndex` of the target
images' hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import imagehash
import numpy as np
from PIL import Image


def dhash64(img: Image.Image) -> int:
    """64-bit difference hash (``imagehash.dhash``, 8x8) as an unsigned int, row-major bits."""
    bits = imagehash.dhash(img, hash_size=8).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


MIN_INFORMATIVE_BITS = 8
"""A dHash with fewer set bits than this (or fewer clear bits) comes from a nearly blank image:
unrelated blank-ish clip-art on white then lies within a few bits of each other. About 3% of
OpenClipart's images (measured on 300). Such hashes are not used for near-duplicate or leak
matching; exact duplicates are still caught by sha256."""


def is_informative(h: int) -> bool:
    """Whether a dHash carries enough structure for near-duplicate matching."""
    bits = h.bit_count()
    return MIN_INFORMATIVE_BITS <= bits <= 64 - MIN_INFORMATIVE_BITS


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


class HashIndex:
    """A set of 64-bit hashes answering "is any within Hamming distance t of h?" quickly.

    The 64 bits are split into ``bands`` contiguous bands. If two hashes differ in at most
    ``bands - 1`` bits, at least one band is identical (pigeonhole), so only hashes sharing a band
    value with the query need an exact Hamming check - a handful even among 100k hashes. Queries
    with a larger threshold fall back to a vectorised scan of all hashes (still exact).
    """

    def __init__(self, hashes: Iterable[int] = (), *, bands: int = 5) -> None:
        if not 1 <= bands <= 64:
            raise ValueError("bands must be between 1 and 64")
        self.bands = bands
        edges = [round(i * 64 / bands) for i in range(bands + 1)]
        self._spans = [(edges[i], edges[i + 1] - edges[i]) for i in range(bands)]
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        self._hashes: list[int] = []
        self._members: set[int] = set()
        self._array: np.ndarray | None = None
        for h in hashes:
            self.add(h)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, h: object) -> bool:
        return h in self._members

    def _keys(self, h: int) -> list[int]:
        return [(h >> start) & ((1 << width) - 1) for start, width in self._spans]

    def add(self, h: int) -> None:
        """Add a hash (adding one already present does nothing)."""
        if not 0 <= h < 1 << 64:
            raise ValueError(f"not a 64-bit hash: {h!r}")
        if h in self._members:
            return
        self._members.add(h)
        self._hashes.append(h)
        self._array = None
        for table, key in zip(self._tables, self._keys(h), strict=True):
            table.setdefault(key, []).append(h)

    def find_near(self, h: int, threshold: int) -> int | None:
        """The stored hash nearest to ``h`` within ``threshold`` bits, or None.

        Note that 0 is a valid hash: compare the result with ``None``.
        """
        if h in self._members:
            return h
        if threshold <= 0 or not self._hashes:
            return None
        if threshold < self.bands:
            best: int | None = None
            best_d = threshold + 1
            seen: set[int] = set()
            for table, key in zip(self._tables, self._keys(h), strict=True):
                for cand in table.get(key, ()):
                    if cand in seen:
                        continue
                    seen.add(cand)
                    d = (cand ^ h).bit_count()
                    if d < best_d:
                        best, best_d = cand, d
            return best
        return self._scan(h, threshold)

    def _scan(self, h: int, threshold: int) -> int | None:
        if self._array is None:
            self._array = np.array(self._hashes, dtype=np.uint64)
        x = np.bitwise_xor(self._array, np.uint64(h))
        dist = np.bitwise_count(x)
        i = int(np.argmin(dist))
        return int(self._array[i]) if int(dist[i]) <= threshold else None

    def hashes(self) -> list[int]:
        """The stored hashes, in insertion order."""
        return list(self._hashes)


class DedupIndex:
    """Exact (sha256 of stored bytes) and near (dHash) duplicate detection across iterations.

    One instance lives for a whole exploration run so that an image seen in iteration 1 is not
    added again in iteration 5. :meth:`to_state`/:meth:`from_state` give a JSON-ready plain list
    for checkpoints.
    """

    def __init__(self, *, bands: int = 5) -> None:
        self._sha: dict[str, int] = {}
        self._hashes = HashIndex(bands=bands)

    def __len__(self) -> int:
        return len(self._sha)

    def has_sha(self, sha256: str) -> bool:
        """Whether an image with exactly these stored bytes was added."""
        return sha256 in self._sha

    def add(self, sha256: str, dhash: int) -> None:
        """Record an accepted image."""
        if sha256 not in self._sha:
            self._sha[sha256] = dhash
        self._hashes.add(dhash)

    def find_near(self, h: int, threshold: int) -> int | None:
        """The nearest recorded dHash within ``threshold`` bits of ``h``, or None."""
        return self._hashes.find_near(h, threshold)

    def to_state(self) -> list[list[str]]:
        """``[[sha256_hex, dhash_as_16_hex_digits], ...]`` in insertion order."""
        return [[sha, f"{h:016x}"] for sha, h in self._sha.items()]

    @classmethod
    def from_state(cls, state: Iterable[Sequence[str | int]], *, bands: int = 5) -> DedupIndex:
        """Rebuild from :meth:`to_state` (the dHash may also be given as an int)."""
        index = cls(bands=bands)
        index._load(state)
        return index

    def state_dict(self) -> dict[str, Any]:
        """``{"entries": to_state(), "bands": n}``: the checkpoint convention of the engine."""
        return {"entries": self.to_state(), "bands": self._hashes.bands}

    def load_state_dict(self, state: dict[str, Any] | list[Any]) -> None:
        """Replace the contents with a :meth:`state_dict` (or a :meth:`to_state` list)."""
        if isinstance(state, dict):
            bands = int(state.get("bands", self._hashes.bands))
            entries = state["entries"]
        else:
            bands, entries = self._hashes.bands, state
        self._sha = {}
        self._hashes = HashIndex(bands=bands)
        self._load(entries)

    def _load(self, entries: Iterable[Sequence[str | int]]) -> None:
        for sha, h in entries:
            self.add(str(sha), h if isinstance(h, int) else int(h, 16))


__all__ = [
    "MIN_INFORMATIVE_BITS",
    "DedupIndex",
    "HashIndex",
    "dhash64",
    "hamming",
    "is_informative",
]
