"""Scanning the Debian clip-art packages into :class:`CorpusItem` records.

Sources (Debian packages)::

    openclipart-png + openclipart-svg   /usr/share/openclipart/{png,svg}/<category...>/<name>.*
        The PNG is served; its SVG twin (same relative path) carries the Dublin Core metadata:
        title, description, keywords (``rdf:li``), creator, licence. Public domain.
    tuxpaint-stamps-default             /usr/share/tuxpaint/stamps/<category...>/<name>.png
        ``<name>.txt`` next to it: first line is the English description. GPL-2.0.

Images are never decoded while scanning (some PNGs are decompression bombs of 600 Mpx); only the
24-byte PNG header is read, for the size. Captions come from
:mod:`ie_engine.search.corpus_captions`.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ie_engine.errors import CorpusError
from ie_engine.search.corpus_captions import (
    MAX_DESCRIPTION_CHARS,
    _category_terms,
    _clean_description,
    _clean_keywords,
    _clean_text,
    humanize_name,
    make_caption,
)

SOURCES = ("openclipart", "tuxpaint")
DEFAULT_OPENCLIPART_ROOT = Path("/usr/share/openclipart")
DEFAULT_TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")

OPENCLIPART_LICENSE = "public-domain"
OPENCLIPART_LICENSE_URL = "https://creativecommons.org/publicdomain/mark/1.0/"
TUXPAINT_LICENSE = "GPL-2.0"
TUXPAINT_LICENSE_URL = "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"

GENERIC_TITLE_MIN_COUNT = 10
"""An openclipart title shared by this many images is a collection name ("gramastar", "Part of the
Flat Icon Collection ...", "Lemon SVG theme"); the file name is used instead."""
STOP_KEYWORD_SHARE = 0.15
STOP_KEYWORD_MIN_COUNT = 50
"""A keyword on more than this share (and count) of openclipart images ("hash", "magick", "icons",
"theme") says nothing about any one of them and is left out of captions."""

FILES_MISSING_HELP = {
    "openclipart": "sudo apt-get install openclipart-png openclipart-svg",
    "tuxpaint": "sudo apt-get install tuxpaint-stamps-default",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


__all__ = [
    "DEFAULT_OPENCLIPART_ROOT",
    "DEFAULT_TUXPAINT_ROOT",
    "FILES_MISSING_HELP",
    "GENERIC_TITLE_MIN_COUNT",
    "OPENCLIPART_LICENSE",
    "OPENCLIPART_LICENSE_URL",
    "SOURCES",
    "STOP_KEYWORD_MIN_COUNT",
    "STOP_KEYWORD_SHARE",
    "TUXPAINT_LICENSE",
    "TUXPAINT_LICENSE_URL",
    "CorpusItem",
    "item_id",
    "png_size",
    "scan_sources",
]
