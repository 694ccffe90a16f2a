"""The offline web's image corpus: built from Debian clip-art packages, searched by embedding.

Why this exists: the explorer needs a search engine that answers *any* WordNet noun with a graded
list of images, without a network. Keyword search over clip-art titles finds almost nothing for
most nouns, so every image gets one caption (title, description, keywords, category words) that is
embedded once with the same sentence embedder the explorer uses; a query is then answered by
cosine similarity, which always returns a ranked, graded list.

This module holds :class:`CorpusIndex`, a built corpus loaded and searched. Building is split
by step, and every public name of those modules is importable from here too:

* :mod:`ie_engine.search.corpus_scan` - the package trees read into :class:`CorpusItem` records
  (sources, licences, SVG metadata, PNG sizes);
* :mod:`ie_engine.search.corpus_captions` - the caption each image is embedded by;
* :mod:`ie_engine.search.corpus_build` - embedding the captions and writing the corpus folder
  (its on-disk format, :class:`CorpusInfo`, :data:`CORPUS_VERSION`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ie_engine.errors import CorpusError
from ie_engine.search.corpus_build import CORPUS_VERSION, CorpusInfo, build_corpus, write_corpus
from ie_engine.search.corpus_captions import (
    MAX_CAPTION_CHARS,
    MAX_DESCRIPTION_CHARS,
    NOISE_CATEGORY_WORDS,
    humanize_name,
    make_caption,
)
from ie_engine.search.corpus_scan import (
    DEFAULT_OPENCLIPART_ROOT,
    DEFAULT_TUXPAINT_ROOT,
    FILES_MISSING_HELP,
    GENERIC_TITLE_MIN_COUNT,
    OPENCLIPART_LICENSE,
    OPENCLIPART_LICENSE_URL,
    SOURCES,
    STOP_KEYWORD_MIN_COUNT,
    STOP_KEYWORD_SHARE,
    TUXPAINT_LICENSE,
    TUXPAINT_LICENSE_URL,
    CorpusItem,
    item_id,
    png_size,
    scan_sources,
)


class CorpusIndex:
    """A loaded corpus: its items and their caption embeddings, searchable by cosine similarity.

    The full embedding matrix is memory-mapped (loading is fast and shared between processes);
    a filtered view (held-out items removed) copies only the rows it keeps.
    """

    def __init__(
        self, info: CorpusInfo, items: list[CorpusItem], embeddings: np.ndarray
    ) -> None:
        if embeddings.shape != (len(items), info.dim):
            raise CorpusError(
                f"embeddings have shape {embeddings.shape}, expected ({len(items)}, {info.dim})"
            )
        self.info = info
        self.items = items
        self.embeddings = embeddings
        self._by_id = {it.id: it for it in items}

    @classmethod
    def load(
        cls,
        corpus_dir: Path | str,
        *,
        exclude_ids: set[str] | frozenset[str] | None = None,
        exclude: Callable[[CorpusItem], bool] | None = None,
    ) -> CorpusIndex:
        """Open a built corpus; items whose id is in ``exclude_ids`` (or that ``exclude``
        accepts) are left out of every search and cannot be served.

        Raises :class:`CorpusError` if the folder is missing, from another format version, or
        its files disagree with each other.
        """
        folder = Path(corpus_dir)
        hint = "rebuild it with `ie corpus build`"
        meta_path = folder / "corpus.json"
        if not meta_path.is_file():
            raise CorpusError(f"no corpus at {folder} (corpus.json missing); {hint}")
        try:
            info = CorpusInfo.from_dict(
                json.loads(meta_path.read_text(encoding="utf-8")), path=str(folder.resolve())
            )
        except (ValueError, TypeError) as exc:
            raise CorpusError(f"corpus.json at {folder} is malformed ({exc}); {hint}") from exc
        if info.version != CORPUS_VERSION:
            raise CorpusError(
                f"corpus at {folder} has format version {info.version}, this engine reads "
                f"{CORPUS_VERSION}; {hint}"
            )
        try:
            with (folder / "items.jsonl").open(encoding="utf-8") as fh:
                items = [CorpusItem.from_dict(json.loads(line)) for line in fh if line.strip()]
            embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
        except (OSError, ValueError, TypeError) as exc:
            raise CorpusError(f"corpus at {folder} is unreadable ({exc}); {hint}") from exc
        if len(items) != info.count or embeddings.dtype != np.float32:
            raise CorpusError(
                f"corpus at {folder} is inconsistent: {len(items)} items, corpus.json says "
                f"{info.count}, embeddings {embeddings.shape} {embeddings.dtype}; {hint}"
            )
        index = cls(info, items, embeddings)
        if exclude_ids or exclude is not None:
            ids = frozenset(exclude_ids or ())
            return index.filter(lambda it: it.id in ids or (exclude is not None and exclude(it)))
        return index

    def filter(self, exclude: Callable[[CorpusItem], bool]) -> CorpusIndex:
        """A view without the items ``exclude`` accepts (the original is left unchanged)."""
        rows = [i for i, it in enumerate(self.items) if not exclude(it)]
        items = [self.items[i] for i in rows]
        vecs = np.ascontiguousarray(self.embeddings[np.asarray(rows, dtype=np.int64)])
        return CorpusIndex(replace(self.info, count=len(items)), items, vecs)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, item_id: str) -> CorpusItem | None:
        """The item with this id, or None (also None for excluded items)."""
        return self._by_id.get(item_id)

    def search(self, query_vec: np.ndarray, limit: int) -> list[tuple[CorpusItem, float]]:
        """The ``limit`` items whose captions are most similar to ``query_vec`` (cosine), best
        first, with their similarity in [-1, 1]."""
        if limit <= 0 or not self.items:
            return []
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.info.dim:
            raise CorpusError(
                f"query vector has {q.shape[0]} dimensions, the corpus {self.info.dim} "
                f"(built with {self.info.embedder})"
            )
        norm = float(np.linalg.norm(q))
        if norm == 0 or not np.isfinite(norm):
            return []
        scores = np.asarray(self.embeddings @ (q / norm))
        k = min(limit, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = top[np.lexsort((top, -scores[top]))]  # by score, ties by row: deterministic
        return [(self.items[i], float(scores[i])) for i in order]


__all__ = [
    "CORPUS_VERSION",
    "DEFAULT_OPENCLIPART_ROOT",
    "DEFAULT_TUXPAINT_ROOT",
    "FILES_MISSING_HELP",
    "GENERIC_TITLE_MIN_COUNT",
    "MAX_CAPTION_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "NOISE_CATEGORY_WORDS",
    "OPENCLIPART_LICENSE",
    "OPENCLIPART_LICENSE_URL",
    "SOURCES",
    "STOP_KEYWORD_MIN_COUNT",
    "STOP_KEYWORD_SHARE",
    "TUXPAINT_LICENSE",
    "TUXPAINT_LICENSE_URL",
    "CorpusIndex",
    "CorpusInfo",
    "CorpusItem",
    "build_corpus",
    "humanize_name",
    "item_id",
    "make_caption",
    "png_size",
    "scan_sources",
    "write_corpus",
]
