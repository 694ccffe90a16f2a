"""What images become: the stored bytes of a download, and fixed-size batches for the trainer.

:func:`prepare_image` is the whole CPU part of one download: decode with every guard and
normalise (:mod:`ie_engine.image_decode`), encode (:func:`encode_stored`), hash
(:mod:`ie_engine.image_hash`). :func:`to_uint8_tensor_batch` stacks target images into one
fixed-size uint8 batch. Format sniffing lives in :mod:`ie_engine.image_formats`; every public
name of those three modules is importable from here too.

Stored images (:func:`encode_stored`) are JPEG, quality 95 with 4:4:4 chroma (no subsampling):

* roughly 10x faster to encode than PNG and several times smaller for photographs at 96-224 px
  (the web is mostly photographs; at paper scale, a million stored images), similar in size to PNG
  for clip-art;
* at quality 95 without chroma subsampling the error is far below what the trainer's own
  augmentations (crops, colour jitter, blur) do to every image;
* JPEG decodes fast in data loaders (and on the GPU with ``torchvision.io.decode_jpeg``);
* encoding is deterministic for a given libjpeg, so identical pixels give identical bytes and
  the sha256 of stored bytes still finds exact duplicates.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from ie_engine.image_decode import (
    CORRUPT,
    DECOMPRESSION_BOMB,
    NOT_AN_IMAGE,
    WHITE,
    ImageRejected,
    decode_image,
    decode_image_sized,
    decode_normalised,
    fit_size,
    flatten_mode,
    normalise,
    on_white,
    to_rgb,
)
from ie_engine.image_formats import IMAGE_SUFFIXES, image_header, sniff_format
from ie_engine.image_hash import (
    MIN_INFORMATIVE_BITS,
    DedupIndex,
    HashIndex,
    dhash64,
    hamming,
    is_informative,
)

STORED_FORMAT: Final = "JPEG"
STORED_EXT: Final = "jpg"
STORED_QUALITY: Final = 95


def encode_stored(img: Image.Image) -> bytes:
    """The bytes stored on disk for an RGB image: JPEG, quality 95, 4:4:4 (module docstring)."""
    buf = io.BytesIO()
    img.save(buf, format=STORED_FORMAT, quality=STORED_QUALITY, subsampling=0)
    return buf.getvalue()


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


__all__ = [
    "CORRUPT",
    "DECOMPRESSION_BOMB",
    "IMAGE_SUFFIXES",
    "MIN_INFORMATIVE_BITS",
    "NOT_AN_IMAGE",
    "STORED_EXT",
    "STORED_FORMAT",
    "STORED_QUALITY",
    "WHITE",
    "DedupIndex",
    "HashIndex",
    "ImageRejected",
    "PreparedImage",
    "decode_image",
    "decode_image_sized",
    "decode_normalised",
    "dhash64",
    "encode_stored",
    "fit_size",
    "flatten_mode",
    "hamming",
    "image_header",
    "is_informative",
    "normalise",
    "on_white",
    "prepare_image",
    "sniff_format",
    "to_rgb",
    "to_uint8_tensor_batch",
]
