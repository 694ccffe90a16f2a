"""Image decoding with guards, normalisation, perceptual hashing and de-duplication.

Everything the engine learns from passes through here, whether it came from the web
(:mod:`ie_engine.download`) or from the user's target folder (:mod:`ie_engine.target`), so both
see exactly the same guards and the same normalisation:

* **magic bytes first** - only PNG, JPEG, GIF, WebP and BMP are accepted, whatever the URL or the
  ``Content-Type`` claims; an HTML error page named ``.png`` is ``not-an-image``;
* **decompression bombs are refused before decoding** - the dimensions are read from the file
  header by :func:`image_header` (a few bytes, no Pillow involved) and checked against
  ``max_pixels``; Pillow's size is checked again after it parsed the header, and Pillow's own
  ``DecompressionBombError`` maps to the same code. No global Pillow setting is changed: in
  particular ``PIL.Image.MAX_IMAGE_PIXELS`` is left alone, because our own check runs first with
  the caller's limit;
* **full decode** - truncated or corrupt data is ``corrupt`` (Pillow is lazy: without ``load()``
  a broken tail would only surface later, in the trainer);
* **first frame, transparency on white, RGB** - animated images keep their first frame, alpha
  (RGBA, LA, PA, palette or RGB/L with a ``tRNS`` colour key) is composited onto white, 16-bit and
  float images are scaled to 8 bits.

Stored images (:func:`encode_stored`) are JPEG, quality 95 with 4:4:4 chroma (no subsampling):

* roughly 10x faster to encode than PNG and several times smaller for photographs at 96-224 px
  (the web is mostly photographs; at paper scale, a million stored images), similar in size to PNG
  for clip-art;
* at quality 95 without chroma subsampling the error is far below what the trainer's own
  augmentations (crops, colour jitter, blur) do to every image;
* JPEG decodes fast in data loaders (and on the GPU with ``torchvision.io.decode_jpeg``);
* encoding is deterministic for a given libjpeg, so identical pixels give identical bytes and
  the sha256 of stored bytes still finds exact duplicates.

Resizing (:func:`normalise`) never upscales: enlarging adds no information, only bytes; the
trainer's random-resized crop rescales anyway, and :func:`to_uint8_tensor_batch` (used to feed
fixed-size batches) does scale up.

Near-duplicates use a 64-bit dHash (``imagehash.dhash``, 8x8) and :class:`DedupIndex`, which
finds any stored hash within a small Hamming distance without a linear scan.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import imagehash
import numpy as np
from PIL import Image, ImageOps

WHITE: Final = (255, 255, 255)
"""Background that transparent pixels are composited onto."""

STORED_FORMAT: Final = "JPEG"
STORED_EXT: Final = "jpg"
STORED_QUALITY: Final = 95

IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".bmp"}
)
"""File suffixes of the formats :func:`decode_image` accepts."""

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"

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


# ---------------------------------------------------------------------------------------------
# Format sniffing


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


# ---------------------------------------------------------------------------------------------
# Decoding


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


# ---------------------------------------------------------------------------------------------
# Normalisation, encoding, hashing


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


def encode_stored(img: Image.Image) -> bytes:
    """The bytes stored on disk for an RGB image: JPEG, quality 95, 4:4:4 (module docstring)."""
    buf = io.BytesIO()
    img.save(buf, format=STORED_FORMAT, quality=STORED_QUALITY, subsampling=0)
    return buf.getvalue()


def dhash64(img: Image.Image) -> int:
    """64-bit difference hash (``imagehash.dhash``, 8x8) as an unsigned int, row-major bits."""
    bits = imagehash.dhash(img, hash_size=8).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


MIN_INFORMATIVE_BITS = 8
"""A dHash with fewer set bits than this (or fewer clear bits) comes from a nearly blank image:
unrelated blank-ish clip-art on white then lies within a few bits of each other. About 3% of
OpenClipart's images (measured on 300). Such hashes are not used for near-duplicate or leak
matching; exact duplicates are still caught by sha256."""


def is_informative(h: int) -> bool:
    """Whether a dHash carries enough structure for near-duplicate matching."""
    bits = h.bit_count()
    return MIN_INFORMATIVE_BITS <= bits <= 64 - MIN_INFORMATIVE_BITS


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class PreparedImage:
    """An image decoded, normalised, encoded and hashed: what the downloader stores."""

    data: bytes
    """Stored bytes (:func:`encode_stored`)."""
    sha256: str
    """Hex sha256 of ``data``."""
    dhash: int
    width: int
    """Original width (before normalisation)."""
    height: int
    ext: str = STORED_EXT


def prepare_image(data: bytes, *, max_pixels: int, size: int) -> PreparedImage:
    """Decode with every guard, normalise to ``size``, encode, hash. Raises ImageRejected.

    The whole CPU part of one download, in one call, so that it can run in a worker thread.
    The dHash is taken from the normalised image (before JPEG encoding).
    """
    small, width, height = decode_normalised(data, max_pixels=max_pixels, size=size)
    stored = encode_stored(small)
    return PreparedImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        dhash=dhash64(small),
        width=width,
        height=height,
    )


def to_uint8_tensor_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Stack HWC uint8 RGB arrays into an ``(N, 3, size, size)`` uint8 array.

    Each image is resized so that its longest side is exactly ``size`` (up or down: the batch has
    a fixed shape) and centred on a white square. Used to feed target images to the trainer.
    """
    out = np.full((len(images), 3, size, size), 255, dtype=np.uint8)
    for i, arr in enumerate(images):
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"image {i}: expected uint8 HxWx3, got {arr.dtype} {arr.shape}")
        h, w = arr.shape[:2]
        nw, nh = fit_size(w, h, size, upscale=True)
        if (nw, nh) != (w, h):
            pil = Image.fromarray(arr, mode="RGB")
            arr = np.asarray(pil.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0))
        top, left = (size - nh) // 2, (size - nw) // 2
        out[i, :, top : top + nh, left : left + nw] = arr.transpose(2, 0, 1)
    return out


# ---------------------------------------------------------------------------------------------
# De-duplication


class HashIndex:
    """A set of 64-bit hashes answering "is any within Hamming distance t of h?" quickly.

    The 64 bits are split into ``bands`` contiguous bands. If two hashes differ in at most
    ``bands - 1`` bits, at least one band is identical (pigeonhole), so only hashes sharing a band
    value with the query need an exact Hamming check - a handful even among 100k hashes. Queries
    with a larger threshold fall back to a vectorised scan of all hashes (still exact).
    """

    def __init__(self, hashes: Iterable[int] = (), *, bands: int = 5) -> None:
        if not 1 <= bands <= 64:
            raise ValueError("bands must be between 1 and 64")
        self.bands = bands
        edges = [round(i * 64 / bands) for i in range(bands + 1)]
        self._spans = [(edges[i], edges[i + 1] - edges[i]) for i in range(bands)]
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        self._hashes: list[int] = []
        self._members: set[int] = set()
        self._array: np.ndarray | None = None
        for h in hashes:
            self.add(h)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, h: object) -> bool:
        return h in self._members

    def _keys(self, h: int) -> list[int]:
        return [(h >> start) & ((1 << width) - 1) for start, width in self._spans]

    def add(self, h: int) -> None:
        """Add a hash (adding one already present does nothing)."""
        if not 0 <= h < 1 << 64:
            raise ValueError(f"not a 64-bit hash: {h!r}")
        if h in self._members:
            return
        self._members.add(h)
        self._hashes.append(h)
        self._array = None
        for table, key in zip(self._tables, self._keys(h), strict=True):
            table.setdefault(key, []).append(h)

    def find_near(self, h: int, threshold: int) -> int | None:
        """The stored hash nearest to ``h`` within ``threshold`` bits, or None.

        Note that 0 is a valid hash: compare the result with ``None``.
        """
        if h in self._members:
            return h
        if threshold <= 0 or not self._hashes:
            return None
        if threshold < self.bands:
            best: int | None = None
            best_d = threshold + 1
            seen: set[int] = set()
            for table, key in zip(self._tables, self._keys(h), strict=True):
                for cand in table.get(key, ()):
                    if cand in seen:
                        continue
                    seen.add(cand)
                    d = (cand ^ h).bit_count()
                    if d < best_d:
                        best, best_d = cand, d
            return best
        return self._scan(h, threshold)

    def _scan(self, h: int, threshold: int) -> int | None:
        if self._array is None:
            self._array = np.array(self._hashes, dtype=np.uint64)
        x = np.bitwise_xor(self._array, np.uint64(h))
        dist = np.bitwise_count(x)
        i = int(np.argmin(dist))
        return int(self._array[i]) if int(dist[i]) <= threshold else None

    def hashes(self) -> list[int]:
        """The stored hashes, in insertion order."""
        return list(self._hashes)


class DedupIndex:
    """Exact (sha256 of stored bytes) and near (dHash) duplicate detection across iterations.

    One instance lives for a whole exploration run so that an image seen in iteration 1 is not
    added again in iteration 5. :meth:`to_state`/:meth:`from_state` give a JSON-ready plain list
    for checkpoints.
    """

    def __init__(self, *, bands: int = 5) -> None:
        self._sha: dict[str, int] = {}
        self._hashes = HashIndex(bands=bands)

    def __len__(self) -> int:
        return len(self._sha)

    def has_sha(self, sha256: str) -> bool:
        """Whether an image with exactly these stored bytes was added."""
        return sha256 in self._sha

    def add(self, sha256: str, dhash: int) -> None:
        """Record an accepted image."""
        if sha256 not in self._sha:
            self._sha[sha256] = dhash
        self._hashes.add(dhash)

    def find_near(self, h: int, threshold: int) -> int | None:
        """The nearest recorded dHash within ``threshold`` bits of ``h``, or None."""
        return self._hashes.find_near(h, threshold)

    def to_state(self) -> list[list[str]]:
        """``[[sha256_hex, dhash_as_16_hex_digits], ...]`` in insertion order."""
        return [[sha, f"{h:016x}"] for sha, h in self._sha.items()]

    @classmethod
    def from_state(cls, state: Iterable[Sequence[str | int]], *, bands: int = 5) -> DedupIndex:
        """Rebuild from :meth:`to_state` (the dHash may also be given as an int)."""
        index = cls(bands=bands)
        index._load(state)
        return index

    def state_dict(self) -> dict[str, Any]:
        """``{"entries": to_state(), "bands": n}``: the checkpoint convention of the engine."""
        return {"entries": self.to_state(), "bands": self._hashes.bands}

    def load_state_dict(self, state: dict[str, Any] | list[Any]) -> None:
        """Replace the contents with a :meth:`state_dict` (or a :meth:`to_state` list)."""
        if isinstance(state, dict):
            bands = int(state.get("bands", self._hashes.bands))
            entries = state["entries"]
        else:
            bands, entries = self._hashes.bands, state
        self._sha = {}
        self._hashes = HashIndex(bands=bands)
        self._load(entries)

    def _load(self, entries: Iterable[Sequence[str | int]]) -> None:
        for sha, h in entries:
            self.add(str(sha), h if isinstance(h, int) else int(h, 16))
