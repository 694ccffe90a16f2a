"""Image formats from their first bytes: which format, and how large, before any decoder runs.

:func:`sniff_format` accepts PNG, JPEG, GIF, WebP and BMP by their magic bytes, whatever the URL
or the ``Content-Type`` claims. :func:`image_header` reads the dimensions straight from the
header bytes (no Pillow involved), so that :mod:`ie_engine.image_decode` can refuse a
decompression bomb before decoding it, and the downloader can weigh an image against its pixel
budget.
"""

from __future__ import annotations

import struct
from typing import Final

IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".bmp"}
)
"""File suffixes of the formats :func:`decode_image` accepts."""

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of ``data`` from its magic bytes, or None if not one we accept.

    Accepted: PNG, JPEG, GIF, WEBP, BMP. Only the first 16 bytes are looked at, so this also
    works on the first chunk of a download.
    """
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    # "BM" alone is too weak (any text starting with "BM"); the DIB header size at offset 14 is
    # one of a handful of known values.
    if len(data) >= 18 and data.startswith(b"BM"):
        (dib_size,) = struct.unpack_from("<I", data, 14)
        if dib_size in (12, 40, 52, 56, 64, 108, 124):
            return "BMP"
    return None


def image_header(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read straight from the header bytes, or None.

    Returns None when the magic bytes are not one of the accepted formats or the header is too
    short or malformed to hold dimensions (Pillow then decides: usually ``corrupt``). This runs
    before Pillow sees the data, so an image claiming absurd dimensions is refused without any
    decoder being involved.
    """
    fmt = sniff_format(data)
    if fmt is None:
        return None
    try:
        dims = _HEADER_READERS[fmt](data)
    except (struct.error, IndexError, ValueError):
        return None
    if dims is None:
        return None
    return fmt, dims[0], dims[1]


def _png_dims(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack_from(">II", data, 16)
    return w, h


def _gif_dims(data: bytes) -> tuple[int, int] | None:
    w, h = struct.unpack_from("<HH", data, 6)
    return w, h


def _bmp_dims(data: bytes) -> tuple[int, int] | None:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:
        w, h = struct.unpack_from("<HH", data, 18)
        return w, h
    w, h = struct.unpack_from("<ii", data, 18)
    return abs(w), abs(h)  # negative height = top-down rows


def _webp_dims(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def _jpeg_dims(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _JPEG_SOF:
            h, w = struct.unpack_from(">HH", data, i + 5)
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


_HEADER_READERS: Final = {
    "PNG": _png_dims,
    "JPEG": _jpeg_dims,
    "GIF": _gif_dims,
    "WEBP": _webp_dims,
    "BMP": _bmp_dims,
}


__all__ = [
    "IMAGE_SUFFIXES",
    "image_header",
    "sniff_format",
]
