"""Paths a client gives us: which are acceptable, what they mean, and the names we store.

A browser sends each file of a picked folder with its relative path (``webkitRelativePath``,
e.g. ``photos/birds/parrot.png``); a zip archive names its entries the same way. Both are
untrusted: a crafted request or archive can say ``../../etc/cron.d/x`` or ``/etc/passwd``.
So a given path is only ever *read* (for its label and a readable name) and never used to
build a file system path: stored names are rebuilt from a safe alphabet, and the final path is
checked to lie inside the upload's folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from app.services.staging import FileRefused

UNLABELLED_DIR: Final = "_"
"""Folder of the files of an unlabelled upload."""

MAX_STEM: Final = 100
"""Longest stored file name, without its extension (file systems allow 255 bytes)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DRIVE = re.compile(r"^[A-Za-z]:")


def split_given_path(given: str) -> list[str]:
    """The components of a client-given relative path, or :class:`FileRefused` why not.

    Backslashes count as separators (some Windows tools write them in zip archives). Refused:
    absolute paths (``/x``, ``C:x``), any ``..`` component (zip slip), NUL bytes, and hidden
    files or folders (a component starting with ``.``, or macOS's ``__MACOSX``).
    """
    path = given.replace("\\", "/")
    if "\x00" in path:
        raise FileRefused("path-traversal", "the name contains a NUL byte")
    if path.startswith("/") or _DRIVE.match(path):
        raise FileRefused("absolute-path", "the path is absolute; only relative paths are kept")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FileRefused("path-traversal", "the path climbs out of its folder with '..'")
    if not parts:
        raise FileRefused("path-traversal", "the path names no file")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        raise FileRefused("hidden", "hidden files and folders are skipped")
    return parts


def path_key(parts: Sequence[str]) -> str:
    """A key under which two spellings of the same path collide (case and Unicode form)."""
    return unicodedata.normalize("NFC", "/".join(parts)).casefold()


def safe_component(text: str, *, fallback: str) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (accents dropped), never empty, ``.`` or ``..``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", ascii_text).strip("._")
    return cleaned[:MAX_STEM] or fallback


def stored_name(parts: Sequence[str], extension: str) -> str:
    """The file name to store: the remaining path components joined with ``_``, made safe,
    with the extension of the *detected* format (``x.png`` holding a JPEG becomes ``x.jpg``)."""
    *folders, name = parts
    stem = PurePosixPath(name).stem if "." in name.strip(".") else name
    joined = "_".join([*folders, stem])
    return f"{safe_component(joined, fallback='image')}.{extension}"


def strip_common_root(paths: Sequence[Sequence[str]]) -> list[list[str]]:
    """Drop leading folders that every path shares while each path keeps a file name.

    A picked folder ``photos`` gives ``photos/birds/a.png``: ``photos`` says nothing about
    the images, so it goes. So does a single class folder: ``birds/a.png``, ``birds/b.png``
    become ``a.png``, ``b.png``.
    """
    current = [list(p) for p in paths]
    while current and all(len(p) >= 2 for p in current) and len({p[0] for p in current}) == 1:
        current = [p[1:] for p in current]
    return current


def infer_labels(paths: Sequence[Sequence[str]]) -> tuple[list[str | None], list[list[str]]]:
    """Each path's label and the rest of its path.

    After :func:`strip_common_root`, the first folder is the label when *every* path has one
    and there are at least two different ones (a labelled dataset: ``birds/``, ``cats/``).
    Otherwise there are no labels.
    """
    stripped = strip_common_root(paths)
    has_labels = (
        bool(stripped)
        and all(len(p) >= 2 for p in stripped)
        and len({p[0] for p in stripped}) >= 2
    )
    if not has_labels:
        return [None] * len(stripped), stripped
    return [p[0] for p in stripped], [p[1:] for p in stripped]


def label_dirs(labels: Sequence[str | None]) -> dict[str | None, str]:
    """A distinct, safe folder name for each label (``None`` -> :data:`UNLABELLED_DIR`)."""
    dirs: dict[str | None, str] = {}
    used: set[str] = set()
    for label in labels:
        if label in dirs:
            continue
        base = UNLABELLED_DIR if label is None else safe_component(label, fallback="label")
        name, n = base, 2
        while name.casefold() in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name.casefold())
        dirs[label] = name
    return dirs


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext`` ... when it is in ``taken``; records it."""
    candidate, n = name, 2
    stem, dot, ext = name.rpartition(".")
    while candidate.casefold() in taken:
        candidate, n = f"{stem}-{n}{dot}{ext}", n + 1
    taken.add(candidate.casefold())
    return candidate


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves to a place inside ``folder`` (links followed)."""
    return path.resolve().is_relative_to(folder.resolve())
