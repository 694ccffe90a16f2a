"""Is an uploaded file an image we accept? Checked by content, never by name.

In order, cheapest first:

1. **magic bytes** - PNG, JPEG, GIF, WebP or BMP, whatever the file name says; an HTML page
   named ``.png`` is ``not-an-image``;
2. **pixel count from the header** - Pillow's ``Image.open`` reads the header only; a size over
   ``max_pixels`` is a ``decompression-bomb`` and is never decoded. Pillow's own bomb error
   (raised by ``open`` past twice its global limit) maps to the same code. No global Pillow or
   ``warnings`` setting is changed (uploads are checked in worker threads);
3. **full decode** - Pillow is lazy, so ``load()`` decodes every pixel: truncated or corrupt
   data is ``corrupt`` here rather than a crash in the trainer later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image, UnidentifiedImageError

from app.services.staging import FileRefused

PILLOW_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}
"""Accepted formats: our name -> Pillow's plugin name."""

EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "gif": "gif", "webp": "webp", "bmp": "bmp"}
"""The extension a stored file gets, from its detected format (not from its upload name)."""


@dataclass(frozen=True)
class ImageInfo:
    """What inspection learnt about an accepted image."""

    format: str
    width: int
    height: int


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes announce, or None (needs at least 12 bytes for WebP)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def describe_content(head: bytes) -> str:
    """A short guess at what a non-image file is, for the refusal's detail."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "it is an HTML page, not an image"
    if text.startswith((b"<?xml", b"<svg")):
        return "it is XML or SVG; only PNG, JPEG, GIF, WebP and BMP are accepted"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive; upload archives with the archive field"
    if head.startswith(b"%PDF"):
        return "it is a PDF document, not an image"
    return "its content is not PNG, JPEG, GIF, WebP or BMP"


def inspect_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """Check the file at ``path``; return its format and size or raise :class:`FileRefused`."""
    with path.open("rb") as f:
        head = f.read(32)
    if not head:
        raise FileRefused("empty", "the file is empty")
    fmt = sniff_format(head)
    if fmt is None:
        raise FileRefused("not-an-image", describe_content(head))
    try:
        with Image.open(path, formats=[PILLOW_FORMATS[fmt]]) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise FileRefused(
                    "decompression-bomb",
                    f"the header claims {width}x{height} = {width * height:,} pixels, over "
                    f"the limit of {max_pixels:,}; it was not decoded",
                )
            img.load()
    except Image.DecompressionBombError as exc:
        raise FileRefused("decompression-bomb", f"refused before decoding: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise FileRefused("corrupt", f"it starts like {fmt.upper()} but cannot be read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise FileRefused("corrupt", f"the {fmt.upper()} data cannot be decoded: {exc}") from exc
    return ImageInfo(format=fmt, width=width, height=height)

