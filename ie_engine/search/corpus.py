"""The offline web's image corpus: built from Debian clip-art packages, searched by embedding.

Why this exists: the explorer needs a search engine that answers *any* WordNet noun with a graded
list of images, without a network. Keyword search over clip-art titles finds almost nothing for
most nouns, so every image gets one caption (title, description, keywords, category words) that is
embedded once with the same sentence embedder the explorer uses; a query is then answered by
cosine similarity, which always returns a ranked, graded list.

Sources (Debian packages)::

    openclipart-png + openclipart-svg   /usr/share/openclipart/{png,svg}/<category...>/<name>.*
        The PNG is served; its SVG twin (same relative path) carries the Dublin Core metadata:
        title, description, keywords (``rdf:li``), creator, licence. Public domain.
    tuxpaint-stamps-default             /usr/share/tuxpaint/stamps/<category...>/<name>.png
        ``<name>.txt`` next to it: first line is the English description. GPL-2.0.

Images are never decoded while building (some PNGs are decompression bombs of 600 Mpx); only the
24-byte PNG header is read, for the size.

On-disk format of a built corpus (one folder, written to a temporary sibling then renamed)::

    corpus.json       CorpusInfo: version, counts, embedder name and dimension, creation time
    items.jsonl       one CorpusItem per line, in row order
    embeddings.npy    float32 (count, dim), unit rows, row i = caption of line i
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ie_engine.errors import CorpusError
from ie_engine.types import ProgressSink, TextEmbedder

CORPUS_VERSION = 1
"""Bumped whenever the on-disk format or the caption recipe changes (old corpora are refused)."""

SOURCES = ("openclipart", "tuxpaint")
DEFAULT_OPENCLIPART_ROOT = Path("/usr/share/openclipart")
DEFAULT_TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")

OPENCLIPART_LICENSE = "public-domain"
OPENCLIPART_LICENSE_URL = "https://creativecommons.org/publicdomain/mark/1.0/"
TUXPAINT_LICENSE = "GPL-2.0"
TUXPAINT_LICENSE_URL = "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"

MAX_CAPTION_CHARS = 300
"""Captions are cut (at a word boundary) to this length: the embedder truncates anyway, and long
flag histories would otherwise drown the title."""
MAX_DESCRIPTION_CHARS = 500

GENERIC_TITLE_MIN_COUNT = 10
"""An openclipart title shared by this many images is a collection name ("gramastar", "Part of the
Flat Icon Collection ...", "Lemon SVG theme"); the file name is used instead."""
STOP_KEYWORD_SHARE = 0.15
STOP_KEYWORD_MIN_COUNT = 50
"""A keyword on more than this share (and count) of openclipart images ("hash", "magick", "icons",
"theme") says nothing about any one of them and is left out of captions."""

NOISE_CATEGORY_WORDS = frozenset({"unsorted", "special", "misc"})

FILES_MISSING_HELP = {
    "openclipart": "sudo apt-get install openclipart-png openclipart-svg",
    "tuxpaint": "sudo apt-get install tuxpaint-stamps-default",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WORD_RE = re.compile(r"[0-9a-zà-ÿ]+")
_URL_RE = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_EMAIL_RE = re.compile(r"\S+@\S+")
_BOILERPLATE_RE = re.compile(r"\bconverted from\b", re.IGNORECASE)
_CLIPART_BY_RE = re.compile(r"^clipart by [^-]+ - ", re.IGNORECASE)
_TRANSLATION_LINE_RE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2,4})?(@\w+)?\.utf8=")


@dataclass(frozen=True)
class CorpusItem:
    """One image of the offline web, with the metadata a web search result would carry.

    ``id`` is a stable short hash of ``source`` and the path inside the source, so ids survive
    rebuilds and can be used to hold images out (benchmark target halves).
    """

    id: str
    source: str  # "openclipart" or "tuxpaint"
    path: str  # absolute path of the PNG that is served
    category: str  # folder path inside the source, e.g. "animals/birds"
    title: str
    text: str  # the caption that was embedded
    license: str
    license_url: str = ""
    creator: str = ""
    description: str = ""
    keywords: tuple[str, ...] = ()
    also_in: tuple[str, ...] = ()  # other categories holding a symlink to this image
    width: int | None = None  # from the PNG header; None if unreadable
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keywords"] = list(self.keywords)
        d["also_in"] = list(self.also_in)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusItem:
        d = dict(data)
        d["keywords"] = tuple(d.get("keywords", ()))
        d["also_in"] = tuple(d.get("also_in", ()))
        return cls(**d)


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


# --------------------------------------------------------------------------------------------
# Scanning the package trees
# --------------------------------------------------------------------------------------------


def item_id(source: str, relative_path: str) -> str:
    """Stable id of an image: 16 hex digits of SHA-1 over ``source:relative/path.png``."""
    return hashlib.sha1(f"{source}:{relative_path}".encode()).hexdigest()[:16]


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (24 bytes read, nothing decoded); None if the
    file is not a PNG."""
    try:
        with path.open("rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _clean_text(text: str) -> str:
    """Unescape XML entities, drop CDATA markers and collapse whitespace."""
    text = text.replace("<![CDATA[", "").replace("]]>", "")
    text = re.sub(r"<[^>]+>", " ", text)  # stray inner markup
    return " ".join(html.unescape(text).split())


def humanize_name(stem: str, creator: str = "") -> str:
    """Turn a file stem into words: ``acquila_architetto_franc_01`` by "Architetto Francesco
    Rollandin" becomes ``acquila``.

    Separators become spaces, trailing numbers go, and trailing tokens that abbreviate the
    creator's name (openclipart appends a truncated author name) are removed.
    """
    tokens = [t for t in re.split(r"[_\-\s.]+", stem) if t]
    creator_words = _words(creator)
    while len(tokens) > 1:
        last = tokens[-1].lower()
        if last.isdigit() or any(
            w == last or (len(last) >= 2 and w.startswith(last)) for w in creator_words
        ):
            tokens.pop()
        else:
            break
    # "home13" -> "home", but "30x20x100" and "m16" (too short to be a word) stay as they are.
    cleaned = [
        re.sub(r"\d+$", "", tok) if re.fullmatch(r"[^\W\d_]{3,}\d+", tok) else tok
        for tok in tokens
    ]
    return " ".join(cleaned).strip()


def _category_terms(category: str) -> list[str]:
    terms = []
    for part in category.split("/"):
        words = [w for w in _words(part.replace("_", " ")) if not w.isdigit()]
        phrase = " ".join(words)
        if phrase and phrase not in NOISE_CATEGORY_WORDS:
            terms.append(phrase)
    return terms


def make_caption(title: str, description: str, terms: Iterable[str]) -> str:
    """One caption for the embedder: title, description, then the extra terms (keywords, file
    name, category words) that add a word not seen yet; cut to :data:`MAX_CAPTION_CHARS`."""
    seen: set[str] = set()
    head: list[str] = []
    for part in (title, description):
        if part and not set(_words(part)) <= seen:
            head.append(part.rstrip(". "))
            seen.update(_words(part))
    tail: list[str] = []
    for term in terms:
        words = _words(term)
        if words and not set(words) <= seen:
            tail.append(term)
            seen.update(words)
    text = ". ".join(head)
    if tail:
        text = f"{text}. {', '.join(tail)}" if text else ", ".join(tail)
    if len(text) > MAX_CAPTION_CHARS:
        cut = text[:MAX_CAPTION_CHARS]
        text = cut[: cut.rfind(" ")] if " " in cut else cut
    return text.strip(" ,.")


@dataclass
class _SvgMeta:
    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    creator: str = ""
    license_url: str = ""


def _read_svg_metadata(path: Path) -> _SvgMeta:
    """Dublin Core fields from the ``<metadata>`` block of an openclipart SVG.

    Only the head of the file is read (the block sits in the first few kB; the drawing after it
    can be megabytes), and parsed with patterns rather than a full XML parser so one malformed
    drawing cannot lose its metadata.
    """
    meta = _SvgMeta()
    try:
        with path.open("rb") as fh:
            raw = b""
            while len(raw) < 4 * 1024 * 1024:
                chunk = fh.read(65536)
                if not chunk:
                    break
                raw += chunk
                if b"metadata>" in raw and re.search(rb"</(\w+:)?metadata>", raw):
                    break
    except OSError:
        return meta
    text = raw.decode("utf-8", errors="replace")
    block_match = re.search(r"<(?:\w+:)?metadata\b.*?</(?:\w+:)?metadata>", text, re.S)
    if block_match is None:
        return meta
    block = block_match.group(0)
    work = re.search(r"<(?:\w+:)?Work\b.*?</(?:\w+:)?Work>", block, re.S)
    if work is not None:
        block = work.group(0)

    def first(tag: str, where: str) -> str:
        m = re.search(rf"<(?:\w+:)?{tag}\b[^>]*?(?:/>|>(.*?)</(?:\w+:)?{tag}>)", where, re.S)
        return _clean_text(m.group(1) or "") if m else ""

    creator_block = re.search(r"<(?:\w+:)?creator\b.*?</(?:\w+:)?creator>", block, re.S)
    if creator_block is not None:
        meta.creator = first("title", creator_block.group(0))
    # Agents (publisher, creator, rights ...) have titles of their own: drop them first.
    own = re.sub(
        r"<(?:\w+:)?(publisher|creator|rights|contributor)\b.*?</(?:\w+:)?\1>", " ", block,
        flags=re.S,
    )
    meta.title = first("title", own)
    meta.description = first("description", own)
    subject = re.search(r"<(?:\w+:)?subject\b.*?</(?:\w+:)?subject>", own, re.S)
    if subject is not None:
        for li in re.findall(r"<(?:\w+:)?li\b[^>]*>(.*?)</(?:\w+:)?li>", subject.group(0), re.S):
            kw = _clean_text(li)
            if kw:
                meta.keywords.append(kw)
    lic = re.search(r"<(?:\w+:)?license\b[^>]*resource=\"([^\"]+)\"", own)
    if lic is not None:
        meta.license_url = html.unescape(lic.group(1))
    return meta


def _clean_description(text: str) -> str:
    text = _EMAIL_RE.sub(" ", _URL_RE.sub(" ", text))
    text = " ".join(text.split()).strip(" -,;:")
    if _BOILERPLATE_RE.search(text) or len(_words(text)) < 1:
        return ""
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "…"
    return text


def _clean_keywords(keywords: Iterable[str], creator: str) -> list[str]:
    creator_words = set(_words(creator))
    out: list[str] = []
    for kw in keywords:
        if "@" in kw or "http" in kw.lower():
            continue
        phrase = " ".join(kw.replace("_", " ").split()).lower()
        words = set(_words(phrase))
        if not words or (creator_words and words <= creator_words) or phrase in out:
            continue
        out.append(phrase)
    return out


def _require_dir(path: Path, source: str) -> Path:
    if not path.is_dir():
        raise CorpusError(
            f"{source} images not found at {path}; install them with: "
            f"{FILES_MISSING_HELP[source]}"
        )
    return path.resolve()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _scan_openclipart(root: Path) -> list[CorpusItem]:
    png_root = _require_dir(root / "png", "openclipart")
    svg_root = _require_dir(root / "svg", "openclipart")
    real_files: list[Path] = []
    aliases: dict[Path, list[str]] = {}
    for dirpath, _dirnames, filenames in os.walk(png_root):
        for name in filenames:
            if not name.lower().endswith(".png"):
                continue
            p = Path(dirpath) / name
            if p.is_symlink():
                # The package links some images into a second category: one item, both names.
                target = p.resolve()
                if target.is_file() and _inside(target, png_root):
                    rel_dir = p.parent.relative_to(png_root).as_posix()
                    aliases.setdefault(target, []).append(rel_dir)
                continue
            real_files.append(p)
    real_files.sort()

    raw: list[tuple[Path, str, _SvgMeta, tuple[int, int]]] = []
    for p in real_files:
        size = png_size(p)
        if size is None:
            continue  # not a PNG after all: a search result that can never download
        rel = p.relative_to(png_root).as_posix()
        meta = _read_svg_metadata(svg_root / Path(rel).with_suffix(".svg"))
        meta.title = _CLIPART_BY_RE.sub("", meta.title).strip()
        if "_" in meta.title and " " not in meta.title:
            meta.title = meta.title.replace("_", " ")
        raw.append((p, rel, meta, size))

    title_counts = Counter(m.title.lower() for _, _, m, _ in raw)
    kw_counts: Counter[str] = Counter()
    for _, _, m, _ in raw:
        kw_counts.update(set(_clean_keywords(m.keywords, m.creator)))
    stop_keywords = {
        kw for kw, n in kw_counts.items()
        if n >= STOP_KEYWORD_MIN_COUNT and n > STOP_KEYWORD_SHARE * len(raw)
    }

    items: list[CorpusItem] = []
    for p, rel, meta, (width, height) in raw:
        category = Path(rel).parent.as_posix()
        category = "" if category == "." else category
        name = humanize_name(p.stem, meta.creator)
        generic = not meta.title or title_counts[meta.title.lower()] >= GENERIC_TITLE_MIN_COUNT
        title = name if generic else meta.title
        description = _clean_description(meta.description)
        keywords = [k for k in _clean_keywords(meta.keywords, meta.creator)
                    if k not in stop_keywords]
        also_in = tuple(sorted({a for a in aliases.get(p, []) if a != category}))
        terms = [*keywords, name]
        for cat in (category, *also_in):
            terms.extend(_category_terms(cat))
        items.append(
            CorpusItem(
                id=item_id("openclipart", rel),
                source="openclipart",
                path=str(p),
                category=category,
                title=title or name,
                text=make_caption(title or name, description, terms),
                license=OPENCLIPART_LICENSE,
                license_url=OPENCLIPART_LICENSE_URL,
                creator=meta.creator,
                description=description,
                keywords=tuple(keywords),
                also_in=also_in,
                width=width,
                height=height,
            )
        )
    return items


def _read_stamp_description(txt: Path) -> str:
    """First line of a Tux Paint stamp's ``.txt``: the English description (the other lines are
    translations, ``xx.utf8=...``)."""
    try:
        with txt.open("r", encoding="utf-8", errors="replace") as fh:
            line = fh.readline()
    except OSError:
        return ""
    line = " ".join(line.split())
    if _TRANSLATION_LINE_RE.match(line):
        return ""
    return line[:MAX_DESCRIPTION_CHARS]


def _scan_tuxpaint(root: Path) -> list[CorpusItem]:
    stamps = _require_dir(root, "tuxpaint")
    paths: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(stamps):
        for name in filenames:
            # "_mirror" PNGs are pre-flipped copies of a stamp beside them: not new images.
            if name.lower().endswith(".png") and not name[:-4].endswith("_mirror"):
                paths.append(Path(dirpath) / name)
    paths.sort()
    items: list[CorpusItem] = []
    for p in paths:
        size = png_size(p)
        if size is None:
            continue
        rel = p.relative_to(stamps).as_posix()
        category = Path(rel).parent.as_posix()
        category = "" if category == "." else category
        name = humanize_name(p.stem)
        title = name[:1].upper() + name[1:]
        description = _read_stamp_description(p.with_suffix(".txt"))
        items.append(
            CorpusItem(
                id=item_id("tuxpaint", rel),
                source="tuxpaint",
                path=str(p.resolve()),
                category=category,
                title=title,
                text=make_caption(description, "", [name, *_category_terms(category)]),
                license=TUXPAINT_LICENSE,
                license_url=TUXPAINT_LICENSE_URL,
                description=description,
                width=size[0],
                height=size[1],
            )
        )
    return items


def scan_sources(
    sources: Sequence[str] = SOURCES,
    *,
    openclipart_root: Path = DEFAULT_OPENCLIPART_ROOT,
    tuxpaint_root: Path = DEFAULT_TUXPAINT_ROOT,
) -> list[CorpusItem]:
    """Read every image's metadata from the package trees (no embedding, no image decoding).

    Items come out in a deterministic order (source, then path). Raises :class:`CorpusError`
    naming the ``apt-get`` command when a package folder is missing.
    """
    items: list[CorpusItem] = []
    for source in sources:
        if source == "openclipart":
            items.extend(_scan_openclipart(Path(openclipart_root)))
        elif source == "tuxpaint":
            items.extend(_scan_tuxpaint(Path(tuxpaint_root)))
        else:
            raise CorpusError(f"unknown corpus source {source!r}; choose from {SOURCES}")
    return items


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Loading and searching
# --------------------------------------------------------------------------------------------


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
