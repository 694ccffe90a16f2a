"""Image decoding with guards, and normalisation to the stored size.

Everything the engine learns from passes through here, whether it came from the web
(:mod:`ie_engine.download`) or from the user's target folder (:mod:`ie_engine.target`), so both
see exactly the same guards and the same normalisation:

* **magic bytes first** - only PNG, JPEG, GIF, WebP and BMP are accepted
  (:func:`~ie_engine.image_formats.sniff_format`), whatever the URL or the ``Content-Type``
  claims; an HTML error page named ``.png`` is ``not-an-image``;
* **decompression bombs are refused before decoding** - the dimensions are read from the file
  header by :func:`~ie_engine.image_formats.image_header` (a few bytes, no Pillow involved) and
  checked against ``max_pixels``; Pillow's size is checked again after it parsed the header, and
  Pillow's own ``DecompressionBombError`` maps to the same code. No global Pillow setting is
  changed: in particular ``PIL.Image.MAX_IMAGE_PIXELS`` is left alone, because our own check runs
  first with the caller's limit;
* **full decode** - truncated or corrupt data is ``corrupt`` (Pillow is lazy: without ``load()``
  a broken tail would only surface later, in the trainer);
* **first frame, transparency on white, RGB** - animated images keep their first frame, alpha
  (RGBA, LA, PA, palette or RGB/L with a ``tRNS`` colour key) is composited onto white, 16-bit and
  float images are scaled to 8 bits.

Resizing (:func:`normalise`) never upscales: enlarging adds no information, only bytes; the
trainer's random-resized crop rescales anyway, and
:func:`~ie_engine.imaging.to_uint8_tensor_batch` (used to feed fixed-size batches) does scale up.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from ie_engine.image_formats import image_header, sniff_format

WHITE: Final = (255, 255, 255)
"""Background that transparent pixels are composited onto."""

# Reason codes of ImageRejected (the downloader records them as DownloadFailure.reason).
NOT_AN_IMAGE: Final = "not-an-image"
DECOMPRESSION_BOMB: Final = "decompression-bomb"
CORRUPT: Final = "corrupt"


class ImageRejected(Exception):
    """An image that must not be used.

    ``reason`` is a short stable code (``not-an-image``, ``decompression-bomb``, ``corrupt``) that
    callers record and count; ``detail`` is a human sentence.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)
"""What Pillow raises on truncated or malformed image data."""


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open (lazily, header only) after the magic-byte and pixel-count guards."""
    fmt = sniff_format(data)
    if fmt is None:
        head = data[:16]
        raise ImageRejected(NOT_AN_IMAGE, f"not a PNG, JPEG, GIF, WebP or BMP (starts {head!r})")
    header = image_header(data)
    if header is not None:
        _check_pixels(header[1], header[2], max_pixels)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageRejected(CORRUPT, f"{fmt} header unreadable: {exc}") from exc
    _check_pixels(img.width, img.height, max_pixels)
    return img


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(CORRUPT, f"impossible dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            DECOMPRESSION_BOMB,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}",
        )


def decode_image(data: bytes, *, max_pixels: int, reduce_to: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image, refusing anything unsafe or broken.

    Raises :class:`ImageRejected` with ``not-an-image`` (magic bytes), ``decompression-bomb``
    (more than ``max_pixels`` pixels, checked before decoding) or ``corrupt`` (truncated or
    undecodable). Takes the first frame, applies the EXIF orientation, composites transparency
    onto white and converts to RGB.

    ``reduce_to``: when given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling, much faster) as long as both sides stay at least ``reduce_to`` pixels; the result is
    then only fit for :func:`normalise` to at most that size. Use :func:`decode_image_sized` to
    also learn the original dimensions, :func:`decode_normalised` to also resize (faster).
    """
    return decode_image_sized(data, max_pixels=max_pixels, reduce_to=reduce_to)[0]


def decode_image_sized(
    data: bytes, *, max_pixels: int, reduce_to: int | None = None
) -> tuple[Image.Image, int, int]:
    """:func:`decode_image`, also returning the original ``(width, height)`` (before any
    JPEG draft reduction and before EXIF rotation)."""
    img, width, height = _decode_flat(data, max_pixels, reduce_to)
    return on_white(img), width, height


def decode_normalised(data: bytes, *, max_pixels: int, size: int) -> tuple[Image.Image, int, int]:
    """``normalise(decode_image(data), size)`` and the original dimensions, computed faster.

    Grayscale (with or without alpha) is resized as one or two channels and composited onto
    white afterwards, at the small size (Pillow resizes alpha premultiplied, so the result is
    the same). RGBA is composited first: resizing four premultiplied channels costs more than
    the full-size composite it would save (measured on openclipart PNGs).
    """
    img, width, height = _decode_flat(data, max_pixels, size)
    if img.mode == "RGBA":
        img = on_white(img)
    return on_white(normalise(img, size)), width, height


def _decode_flat(
    data: bytes, max_pixels: int, reduce_to: int | None
) -> tuple[Image.Image, int, int]:
    """Guarded open, full decode of the first frame, orientation; mode L, LA, RGB or RGBA."""
    img = _open_checked(data, max_pixels)
    width, height = img.size
    try:
        if reduce_to is not None and img.format == "JPEG":
            img.draft("RGB", (reduce_to, reduce_to))
        img.load()
        if "exif" in img.info:
            img = _apply_orientation(img)
        flat = flatten_mode(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(CORRUPT, f"{img.format} data undecodable: {exc}") from exc
    except MemoryError as exc:
        raise ImageRejected(DECOMPRESSION_BOMB, "out of memory while decoding") from exc
    return flat, width, height


def _apply_orientation(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


_DEEP_MODES: Final = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def flatten_mode(img: Image.Image) -> Image.Image:
    """Convert a loaded image to L, LA, RGB or RGBA: 8 bits, alpha kept (``tRNS`` colour keys
    become an alpha band), 16-bit and float samples scaled to 8 bits. Palette images with
    transparency come out as RGB already composited onto white (exact, and much cheaper).

    Grayscale stays single-channel so that resizing it costs a third of RGB.
    """
    mode = img.mode
    if mode in _DEEP_MODES:
        arr = np.asarray(img)
        if mode == "F":
            arr8 = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            # I;16*: 16-bit samples. "I" (32-bit) is what Pillow makes of some 16-bit files:
            # treat it as 16-bit unless every value already fits in 8 bits.
            wide = mode.startswith("I;16") or int(arr.max(initial=0)) > 255
            top = 65535 if wide else 255
            arr8 = (np.clip(arr, 0, top).astype(np.float32) * (255.0 / top) + 0.5).astype(np.uint8)
        return Image.fromarray(arr8, mode="L")
    keyed = "transparency" in img.info
    if mode in ("RGBA", "LA"):
        return img
    if mode in ("RGB", "L"):
        return img.convert("RGBA") if keyed else img
    if mode == "P":
        return _palette_on_white(img) if keyed else img.convert("RGB")
    if mode in ("PA", "RGBa", "1"):
        return img.convert("RGBA") if keyed or mode in ("PA", "RGBa") else img.convert("RGB")
    if mode == "La":
        return img.convert("LA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _palette_on_white(img: Image.Image) -> Image.Image:
    """RGB of a palette image with transparency, composited onto white in the palette itself.

    Exact (alpha belongs to palette entries, so blending each entry with white is the same as
    blending every pixel) and as cheap as a plain palette lookup - many web PNGs and GIFs are
    palette images with a transparent entry. Falls back to a per-pixel composite otherwise.
    """
    trans = img.info.get("transparency")
    palette = img.getpalette("RGB")
    if palette is None or not isinstance(trans, int | bytes):
        return on_white(img.convert("RGBA"))
    pal = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    alpha = np.full((len(pal), 1), 255, dtype=np.int32)
    if isinstance(trans, int):
        if 0 <= trans < len(pal):
            alpha[trans] = 0
    else:
        given = np.frombuffer(trans[: len(pal)], dtype=np.uint8)
        alpha[: len(given), 0] = given
    blended = (pal * alpha + 255 * (255 - alpha) + 127) // 255
    out = img.copy()
    out.info.pop("transparency", None)
    out.putpalette(blended.astype(np.uint8).tobytes(), "RGB")
    return out.convert("RGB")


def on_white(img: Image.Image) -> Image.Image:
    """RGB image of an L, LA, RGB or RGBA one, alpha composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA"):
        out = Image.new("RGB", img.size, WHITE)
        out.paste(img, mask=img.getchannel("A"))
        return out
    return img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of a loaded image of any mode: alpha composited onto white, deep images
    scaled to 8 bits."""
    return on_white(flatten_mode(img))


def fit_size(width: int, height: int, size: int, *, upscale: bool = False) -> tuple[int, int]:
    """Dimensions with the longest side ``size`` (aspect kept, each side at least 1 pixel).

    Without ``upscale`` an image already no larger than ``size`` keeps its dimensions.
    """
    longest = max(width, height)
    if longest <= size and not upscale:
        return width, height
    scale = size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalise(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the longest side is ``size`` pixels, keeping the aspect ratio.

    Never upscales: an image whose longest side is already ``size`` or less is returned as it is
    (see the module docstring). Works on L, LA, RGB and RGBA images (alpha is resized
    premultiplied). Bicubic with ``reducing_gap=2`` - Pillow's own thumbnail settings: an integer
    box reduction first, then a bicubic pass; at the 64-224 px the trainer uses, visually the same
    as a full Lanczos resize at a fraction of the cost (resizing is a third of the CPU time of a
    download).
    """
    new = fit_size(img.width, img.height, size)
    if new == img.size:
        return img
    return img.resize(new, Image.Resampling.BICUBIC, reducing_gap=2.0)


__all__ = [
    "CORRUPT",
    "DECOMPRESSION_BOMB",
    "NOT_AN_IMAGE",
    "WHITE",
    "ImageRejected",
    "decode_image",
    "decode_image_sized",
    "decode_normalised",
    "fit_size",
    "flatten_mode",
    "normalise",
    "on_white",
    "to_rgb",
]
