"""Building a corpus: scan the packages, embed one caption per image, write the folder.

On-disk format of a built corpus (one folder, written to a temporary sibling then renamed)::

    corpus.json       CorpusInfo: version, counts, embedder name and dimension, creation time
    items.jsonl       one CorpusItem per line, in row order
    embeddings.npy    float32 (count, dim), unit rows, row i = caption of line i

:class:`~ie_engine.search.corpus.CorpusIndex` reads it back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ie_engine.errors import CorpusError
from ie_engine.search.corpus_scan import (
    DEFAULT_OPENCLIPART_ROOT,
    DEFAULT_TUXPAINT_ROOT,
    SOURCES,
    CorpusItem,
    scan_sources,
)
from ie_engine.types import ProgressSink, TextEmbedder

CORPUS_VERSION = 1
"""Bumped whenever the on-disk format or the caption recipe changes (old corpora are refused)."""


@dataclass(frozen=True)
class CorpusInfo:
    """What ``corpus.json`` says about a built corpus."""

    version: int
    count: int
    counts: dict[str, int]  # items per source
    embedder: str
    dim: int
    created: str  # ISO 8601, UTC
    build_seconds: float = 0.0
    excluded: int = 0  # items dropped by the ``exclude`` predicate at build time
    sources: tuple[str, ...] = SOURCES
    path: str = ""  # folder of the corpus (not stored; filled when loaded or built)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = list(self.sources)
        d.pop("path")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str = "") -> CorpusInfo:
        d = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        d["sources"] = tuple(d.get("sources", SOURCES))
        d["path"] = path
        return cls(**d)


def _unit_rows(vecs: Any, n: int) -> np.ndarray:
    arr = np.asarray(vecs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise CorpusError(f"the embedder returned shape {arr.shape} for {n} captions")
    if not np.all(np.isfinite(arr)):
        raise CorpusError("the embedder returned non-finite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def write_corpus(
    out_dir: Path,
    items: Sequence[CorpusItem],
    embeddings: np.ndarray,
    info: CorpusInfo,
) -> None:
    """Write the three corpus files into ``out_dir`` atomically.

    Everything goes to a temporary sibling folder first, which is then renamed into place (a
    previous corpus there is replaced), so a reader never sees half a corpus.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as fh:
            for it in items:
                fh.write(json.dumps(it.to_dict(), ensure_ascii=False) + "\n")
        np.save(tmp / "embeddings.npy", embeddings.astype(np.float32, copy=False))
        (tmp / "corpus.json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
        old: Path | None = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            old.rmdir()
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_corpus(
    out_dir: Path,
    *,
    embedder: TextEmbedder,
    sources: Sequence[str] = SOURCES,
    exclude: Callable[[CorpusItem], bool] | None = None,
    openclipart_root: Path = DEFAULT_OPENCLIPART_ROOT,
    tuxpaint_root: Path = DEFAULT_TUXPAINT_ROOT,
    progress: ProgressSink | None = None,
) -> CorpusInfo:
    """Scan the package trees, embed one caption per image and write the corpus to ``out_dir``.

    ``exclude`` drops items before embedding (their ids never appear in the corpus); to hold
    items out of a corpus that is already built, use ``CorpusIndex.load(..., exclude_ids=...)``.
    Returns the :class:`CorpusInfo` that was written (counts per source, build time).
    """
    started = time.perf_counter()
    if progress is not None:
        progress.start("scan", None)
    items = scan_sources(
        sources, openclipart_root=openclipart_root, tuxpaint_root=tuxpaint_root
    )
    if progress is not None:
        progress.advance("scan", len(items))
        progress.finish("scan")
    excluded = 0
    if exclude is not None:
        kept = [it for it in items if not exclude(it)]
        excluded = len(items) - len(kept)
        items = kept
    if not items:
        raise CorpusError("no images left to index (all sources empty or excluded)")
    vecs = _unit_rows(embedder.embed([it.text for it in items], progress=progress), len(items))
    counts = dict(Counter(it.source for it in items))
    info = CorpusInfo(
        version=CORPUS_VERSION,
        count=len(items),
        counts={s: counts.get(s, 0) for s in sources},
        embedder=embedder.name,
        dim=int(vecs.shape[1]),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        excluded=excluded,
        sources=tuple(sources),
    )
    info = replace(info, build_seconds=round(time.perf_counter() - started, 3))
    write_corpus(out_dir, items, vecs, info)
    return replace(info, path=str(Path(out_dir).resolve()))


__all__ = ["CORPUS_VERSION", "CorpusInfo", "build_corpus", "write_corpus"]
