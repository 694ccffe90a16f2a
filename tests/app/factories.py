"""Builders of test data: real image bytes, hostile files, zip archives, store rows."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from app.store.models import Run, Upload
from app.store.runs import create_run
from app.store.uploads import create_upload


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), seed: int = 0) -> bytes:
    """A small real image of random pixels in ``fmt`` (PNG, JPEG, GIF, WEBP, BMP)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(size[0] * size[1])
        ]
    )
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming ``width`` x ``height`` with almost no pixel data.

    Decoding it would allocate width*height*3 bytes: a decompression bomb's signature.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """The first half of a real PNG of noise (a download cut short)."""
    data = image_bytes("PNG", size=(64, 64), seed=7)
    return data[: len(data) // 2]


HTML_PAGE = b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"


@dataclass(frozen=True)
class ZipEntry:
    """One entry of a test archive; ``symlink`` marks it as a Unix symbolic link."""

    name: str
    data: bytes
    symlink: bool = False


def zip_bytes(entries: Iterable[ZipEntry]) -> bytes:
    """A zip archive (deflated) of ``entries``, names written exactly as given."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # a repeated name is on purpose here
        for entry in entries:
            info = zipfile.ZipInfo(entry.name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the mode bits mean what they say
            mode = 0o120777 if entry.symlink else 0o100644
            info.external_attr = mode << 16
            zf.writestr(info, entry.data)
    return out.getvalue()


def make_upload(session: Session, **overrides: Any) -> Upload:
    """An upload row (no files on disk)."""
    return create_upload(session, name=overrides.pop("name", "test upload"), **overrides)


def make_run(session: Session, *, name: str = "run", with_upload: bool = True) -> Run:
    """A draft run, on a fresh upload unless ``with_upload`` is False."""
    upload_id = make_upload(session).id if with_upload else None
    return create_run(session, name=name, config={"iterations": 3, "seed": 0}, upload_id=upload_id)
