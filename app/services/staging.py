"""Files received but not yet judged: the staging area of an upload, and why a file is refused.

Every byte a person sends lands first in a staging folder of its own
(``{data_dir}/uploads/.incoming/{random}/``) under a name we make up (``000001.part``), never
under a name the client chose. Only files that pass every check move into the upload's folder.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

COPY_CHUNK: Final = 1024 * 1024
"""Bytes read at a time when copying (a large file never sits in memory whole)."""


class FileRefused(Exception):
    """One file will not be kept; ``reason`` is a short stable code, ``detail`` a sentence.

    Codes: ``hidden``, ``absolute-path``, ``path-traversal``, ``symlink``, ``encrypted``,
    ``duplicate-path``, ``too-large``, ``zip-bomb``, ``empty``,
    ``not-an-image``, ``decompression-bomb``, ``corrupt``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class StagedFile:
    """A file of an upload as received: the path the client gave and where its bytes are.

    ``staged`` is None when the file was refused before its bytes were kept (``refusal`` says
    why).
    """

    given: str
    staged: Path | None
    size: int = 0
    field: str = "files"
    refusal: FileRefused | None = None


def new_staging_dir(uploads_dir: Path) -> Path:
    """A fresh, empty staging folder under ``uploads_dir/.incoming``."""
    folder = uploads_dir / ".incoming" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def remove_tree(folder: Path) -> None:
    """Remove ``folder`` and everything in it, if it exists."""
    shutil.rmtree(folder, ignore_errors=True)


def copy_capped(source: IO[bytes], destination: Path, cap: int) -> int:
    """Copy ``source`` into a new file ``destination``, at most ``cap`` bytes; return the size.

    Raises :class:`FileRefused` (``too-large``) as soon as more than ``cap`` bytes come, and
    leaves no partial file behind.
    """
    size = 0
    with destination.open("xb") as out:
        while chunk := source.read(COPY_CHUNK):
            size += len(chunk)
            if size > cap:
                break
            out.write(chunk)
    if size > cap:
        destination.unlink(missing_ok=True)
        raise FileRefused("too-large", f"the file is larger than the limit of {cap:,} bytes")
    return size
