"""Plain records passed between the engine's parts.

They hold no tensors and no open files, so they can be written to JSON, stored in a database row
or sent to another process as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Concept:
    """One entry of the concept vocabulary.

    ``text`` is what the sentence embedder sees (``"{lemma} ({hypernym}): {definition}"`` for a
    WordNet noun); ``lemma`` is what is sent to a search engine (with an optional descriptor).
    """

    index: int
    lemma: str
    text: str
    source: str = "wordnet"  # "wordnet", "user" or "class-name"
    synset: str | None = None


@dataclass(frozen=True)
class Query:
    """One search query of an iteration: ``descriptor + concept lemma``."""

    concept_index: int
    text: str
    descriptor: str | None = None
    predicted_mu: float = 0.0
    predicted_sigma: float = 0.0
    probability: float = 0.0
    tier: int = 0  # 0 = top tier, 1 = middle, 2 = rest; -1 = a class-name query (label-set mode)


@dataclass(frozen=True)
class SearchResult:
    """One ranked result of an image search engine."""

    image_url: str
    page_url: str = ""
    title: str = ""
    license: str = ""
    license_url: str = ""
    creator: str = ""
    rank: int = 0
    score: float | None = None  # engine-side relevance, when the engine reports one
    thumbnail_url: str = ""
    width: int | None = None
    height: int | None = None
    engine: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the offline corpus' category
    attribution: str = ""  # the credit line to publish with the image, when the engine has one


class SearchEngine(Protocol):
    """What every search engine (offline corpus, real web engines) offers the explorer."""

    name: str

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        """Return at most ``limit`` results, best first. Raise ``SearchError`` on total failure."""
        ...


@dataclass(frozen=True)
class DownloadRequest:
    """An image to fetch, with where it came from (kept as provenance)."""

    result: SearchResult
    query: str
    concept_index: int


@dataclass(frozen=True)
class DownloadedImage:
    """An image that passed every guard and was stored on disk, resized, as RGB."""

    path: str  # stored file, relative to the downloader's image folder
    sha256: str  # of the stored (normalised) image bytes
    dhash: int  # 64-bit difference hash of the image
    width: int  # of the original image
    height: int
    request: DownloadRequest


@dataclass(frozen=True)
class DownloadFailure:
    """A result that did not become a training image, and why.

    ``reason`` is a short stable code (``timeout``, ``http-404``, ``too-large``, ``not-an-image``,
    ``decompression-bomb``, ``duplicate``, ``near-duplicate``, ``target-leak``, ``corrupt`` ...);
    ``detail`` is a human sentence.
    """

    url: str
    reason: str
    detail: str
    request: DownloadRequest | None = None
    duplicate_of: str | None = None
    """For ``duplicate`` and ``near-duplicate``: the earlier image this one repeats, as
    ``url:<image url>``, ``sha256:<hex>`` or ``dhash:<16 hex digits>``."""


@dataclass
class DownloadReport:
    """Everything one batch of downloads produced."""

    images: list[DownloadedImage] = field(default_factory=list)
    failures: list[DownloadFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def leaked(self) -> int:
        """How many results were refused because they near-duplicate a target image."""
        return sum(1 for f in self.failures if f.reason == "target-leak")


class ProgressSink(Protocol):
    """Receives progress of a long phase; the CLI draws bars, the worker writes events."""

    def start(self, phase: str, total: int | None) -> None: ...

    def advance(self, phase: str, n: int = 1) -> None: ...

    def finish(self, phase: str) -> None: ...


class NullProgress:
    """A progress sink that ignores everything."""

    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass

    def finish(self, phase: str) -> None:
        pass


class TextEmbedder(Protocol):
    """Turns short texts into L2-normalised vectors (concepts, queries, corpus captions)."""

    name: str
    dim: int

    def embed(self, texts: list[str], *, progress: ProgressSink | None = None) -> Any:
        """Return a float32 array of shape (len(texts), dim), each row of unit norm."""
        ...
