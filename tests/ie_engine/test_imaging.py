"""Decoding guards, normalisation, hashing and the de-duplication index."""

from __future__ import annotations

import glob
import io
import json
import random
import struct
import zlib

import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from ie_engine.imaging import (
    DedupIndex,
    HashIndex,
    ImageRejected,
    decode_image,
    decode_image_sized,
    dhash64,
    encode_stored,
    fit_size,
    hamming,
    image_header,
    normalise,
    prepare_image,
    sniff_format,
    to_uint8_tensor_batch,
)

MAX_PIXELS = 40_000_000


def photo(seed: int, w: int = 240, h: int = 180) -> Image.Image:
    """A smooth random colour field: photo-like, with a stable dHash."""
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    px = img.getpixel((x, y))
    assert isinstance(px, tuple) and len(px) == 3
    return px[0], px[1], px[2]


def png_bomb(width: int, height: int) -> bytes:
    """A genuine PNG bomb: 1-bit grayscale, all zero, a few kB for a huge canvas."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    block = row * 256
    parts = [comp.compress(block) for _ in range(height // 256)]
    parts.append(comp.compress(row * (height % 256)))
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


# --- sniffing and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_header_dims_for_every_format(fmt: str, kw: dict[str, object]) -> None:
    data = encode(photo(1, 123, 77), fmt, **kw)
    assert sniff_format(data) == fmt
    assert image_header(data) == (fmt, 123, 77)
    assert decode_image(data, max_pixels=MAX_PIXELS).size == (123, 77)


def test_webp_extended_header() -> None:
    data = encode(photo(2, 50, 40).convert("RGBA"), "WEBP")
    assert image_header(data) == ("WEBP", 50, 40)


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><body>404</body></html>",
        b"",
        b"GIF",
        b"BMhello world, not a bmp",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"%PDF-1.7\n",
    ],
)
def test_non_images_are_refused(data: bytes) -> None:
    assert sniff_format(data) is None
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels=MAX_PIXELS)
    assert info.value.reason == "not-an-image"
    assert info.value.detail


# --- guards -----------------------------------------------------------------------------------


def test_crafted_png_bomb_refused_before_decoding() -> None:
    data = png_bomb(20000, 20000)  # 400 Mpx, 2.5 kB per row of bits: decoding would need 400 MB
    assert len(data) < 200_000
    assert image_header(data) == ("PNG", 20000, 20000)
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels=MAX_PIXELS)
    assert info.value.reason == "decompression-bomb"
    assert "400,000,000" in info.value.detail


def test_pillow_own_bomb_check_maps_to_same_code() -> None:
    # Our limit is above Pillow's (2 x 89 Mpx): Pillow's DecompressionBombError must be mapped.
    data = png_bomb(20000, 20000)
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels=10**9)
    assert info.value.reason == "decompression-bomb"
    assert Image.MAX_IMAGE_PIXELS is not None  # global Pillow state untouched


def test_small_limit_refuses_moderate_image() -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(encode(photo(3, 200, 100)), max_pixels=19_999)
    assert info.value.reason == "decompression-bomb"
    assert decode_image(encode(photo(3, 200, 100)), max_pixels=20_000).size == (200, 100)


def test_real_openclipart_bomb_if_present() -> None:
    bombs = []
    for path in sorted(glob.glob("/usr/share/openclipart/png/**/kansasflag*.png", recursive=True)):
        with open(path, "rb") as f:
            head = f.read(32)
        header = image_header(head)
        if header is not None and header[1] * header[2] > MAX_PIXELS:
            bombs.append(path)
    if not bombs:
        pytest.skip("no openclipart bomb installed")
    with open(bombs[0], "rb") as f:
        data = f.read()
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels=MAX_PIXELS)
    assert info.value.reason == "decompression-bomb"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_is_corrupt(fmt: str) -> None:
    data = encode(photo(4, 300, 200), fmt)
    with pytest.raises(ImageRejected) as info:
        decode_image(data[: len(data) // 2], max_pixels=MAX_PIXELS)
    assert info.value.reason == "corrupt"


def test_garbage_after_magic_is_corrupt() -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, max_pixels=MAX_PIXELS)
    assert info.value.reason == "corrupt"


# --- colour handling --------------------------------------------------------------------------


def test_rgba_composited_on_white() -> None:
    img = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red
    img.paste((0, 0, 255, 255), (0, 0, 10, 10))  # left half opaque blue
    img.putpixel((15, 5), (0, 0, 0, 128))  # one half-transparent black pixel
    out = decode_image(encode(img), max_pixels=MAX_PIXELS)
    assert out.mode == "RGB"
    assert out.getpixel((19, 0)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)
    assert all(abs(c - 127) <= 1 for c in rgb(out, 15, 5))


def test_la_and_palette_transparency_on_white() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    assert decode_image(encode(la), max_pixels=MAX_PIXELS).getpixel((1, 1)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 3)
    p.putpalette([0, 0, 0] * 256)
    for fmt in ("PNG", "GIF"):
        data = encode(p, fmt, transparency=3)
        assert decode_image(data, max_pixels=MAX_PIXELS).getpixel((2, 2)) == (255, 255, 255)


def test_palette_partial_alpha_composited_exactly() -> None:
    rng = np.random.default_rng(0)
    p = Image.fromarray(rng.integers(0, 16, (30, 40), dtype=np.uint8), mode="P")
    p.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
    alpha = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    out = decode_image(encode(p, transparency=alpha), max_pixels=MAX_PIXELS)
    reference = Image.open(io.BytesIO(encode(p, transparency=alpha))).convert("RGBA")
    want = Image.new("RGB", reference.size, (255, 255, 255))
    want.paste(reference, mask=reference.getchannel("A"))
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(want, dtype=int))
    assert diff.max() <= 1


def test_sixteen_bit_grayscale_scaled() -> None:
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    img = Image.fromarray(arr)
    out = decode_image(encode(img), max_pixels=MAX_PIXELS)
    assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg_and_grayscale() -> None:
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))
    assert decode_image(encode(cmyk, "JPEG"), max_pixels=MAX_PIXELS).mode == "RGB"
    gray = decode_image(encode(Image.new("L", (10, 10), 77), "JPEG"), max_pixels=MAX_PIXELS)
    assert gray.mode == "RGB" and gray.getpixel((5, 5)) == (77, 77, 77)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(buf.getvalue(), max_pixels=MAX_PIXELS)
    r, g, b = rgb(out, 5, 5)
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_applied() -> None:
    img = photo(5, 60, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out, w, h = decode_image_sized(encode(img, "JPEG", exif=exif), max_pixels=MAX_PIXELS)
    assert (w, h) == (60, 30)
    assert out.size == (30, 60)


def test_jpeg_draft_reduction_keeps_enough_pixels() -> None:
    data = encode(photo(6, 1600, 1200), "JPEG")
    img, w, h = decode_image_sized(data, max_pixels=MAX_PIXELS, reduce_to=128)
    assert (w, h) == (1600, 1200)
    assert min(img.size) >= 128 and img.size[0] < 1600  # decoded at a reduced DCT scale
    assert normalise(img, 128).size == (128, 96)


# --- normalisation, encoding, hashing ---------------------------------------------------------


def test_normalise_longest_side_and_no_upscale() -> None:
    assert normalise(photo(7, 400, 100), 128).size == (128, 32)
    assert normalise(photo(7, 100, 400), 128).size == (32, 128)
    small = photo(7, 50, 40)
    assert normalise(small, 128).size == (50, 40)
    assert normalise(photo(7, 1000, 1), 100).size == (100, 1)
    assert fit_size(50, 40, 100, upscale=True) == (100, 80)


def test_encode_stored_is_deterministic_jpeg() -> None:
    img = normalise(photo(8), 96)
    a, b = encode_stored(img), encode_stored(img.copy())
    assert a == b and sniff_format(a) == "JPEG"
    back = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.int16)
    assert np.abs(back - np.asarray(img, dtype=np.int16)).mean() < 2.0


def test_dhash64_matches_imagehash() -> None:
    img = photo(9)
    h = dhash64(img)
    assert 0 <= h < 1 << 64
    assert h == int(str(imagehash.dhash(img)), 16)
    assert hamming(h, h) == 0 and hamming(0, (1 << 64) - 1) == 64


def test_near_duplicates_within_threshold_and_distinct_images_apart() -> None:
    for seed in range(10):
        original = prepare_image(encode(photo(seed)), max_pixels=MAX_PIXELS, size=96)
        altered_img = ImageEnhance.Brightness(photo(seed)).enhance(1.06)
        altered_img = altered_img.resize((200, 150), Image.Resampling.BILINEAR)
        altered = prepare_image(
            encode(altered_img, "JPEG", quality=75), max_pixels=MAX_PIXELS, size=96
        )
        assert altered.sha256 != original.sha256
        assert hamming(original.dhash, altered.dhash) <= 4
        other = prepare_image(encode(photo(seed + 100)), max_pixels=MAX_PIXELS, size=96)
        assert hamming(original.dhash, other.dhash) > 4


def test_prepare_image_fields() -> None:
    p = prepare_image(encode(photo(10, 300, 200)), max_pixels=MAX_PIXELS, size=64)
    assert (p.width, p.height, p.ext) == (300, 200, "jpg")
    assert Image.open(io.BytesIO(p.data)).size == (64, 43)
    assert len(p.sha256) == 64


def test_to_uint8_tensor_batch_pads_white_and_upscales() -> None:
    wide = np.zeros((10, 40, 3), dtype=np.uint8)
    tall = np.zeros((64, 16, 3), dtype=np.uint8)
    batch = to_uint8_tensor_batch([wide, tall], 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.uint8
    assert (batch[0, :, 0, :] == 255).all() and (batch[0, :, 16, :] == 0).all()
    assert (batch[1, :, :, 0] == 255).all() and (batch[1, :, :, 16] == 0).all()
    assert to_uint8_tensor_batch([], 8).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError):
        to_uint8_tensor_batch([np.zeros((4, 4), dtype=np.uint8)], 8)


# --- de-duplication index ---------------------------------------------------------------------


def brute_force(stored: list[int], h: int, threshold: int) -> int | None:
    best = min(stored, key=lambda s: hamming(s, h), default=None)
    if best is None or hamming(best, h) > threshold:
        return None
    return best


def flip(h: int, bits: list[int]) -> int:
    for b in bits:
        h ^= 1 << b
    return h


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(st.integers(0, (1 << 64) - 1), max_size=60, unique=True),
    seed=st.integers(0, 2**32 - 1),
    threshold=st.integers(0, 8),
    bands=st.sampled_from([5, 3, 9]),
)
def test_hash_index_matches_brute_force(
    stored: list[int], seed: int, threshold: int, bands: int
) -> None:
    rng = random.Random(seed)
    index = HashIndex(stored, bands=bands)
    queries = [rng.getrandbits(64) for _ in range(10)]
    for s in stored[:10]:  # near every stored hash, at distances around the threshold
        queries.append(flip(s, rng.sample(range(64), rng.randint(0, threshold + 2))))
    for q in queries:
        got = index.find_near(q, threshold)
        want = brute_force(stored, q, threshold)
        if want is None:
            assert got is None
        else:
            assert got is not None and hamming(got, q) == hamming(want, q) <= threshold


def test_hash_index_many_hashes_fast_and_exact() -> None:
    rng = random.Random(0)
    stored = [rng.getrandbits(64) for _ in range(100_000)]
    index = HashIndex(stored)
    arr = np.array(stored, dtype=np.uint64)
    for i in range(50):
        q = flip(stored[i * 997], rng.sample(range(64), 3))
        got = index.find_near(q, 4)
        dist = np.bitwise_count(np.bitwise_xor(arr, np.uint64(q)))
        assert got is not None and hamming(got, q) == int(dist.min())
        q2 = rng.getrandbits(64)
        nearest = int(np.bitwise_count(np.bitwise_xor(arr, np.uint64(q2))).min())
        assert (index.find_near(q2, 4) is None) == (nearest > 4)


def test_dedup_index_state_round_trip() -> None:
    index = DedupIndex()
    index.add("a" * 64, 0)
    index.add("b" * 64, (1 << 64) - 1)
    index.add("c" * 64, 0x0123456789ABCDEF)
    state = index.to_state()
    assert state[1] == ["b" * 64, "ffffffffffffffff"]
    again = DedupIndex.from_state(json.loads(json.dumps(state)))
    assert len(again) == 3 and again.has_sha("c" * 64) and not again.has_sha("d" * 64)
    assert again.find_near(1, 1) == 0  # 0 is a real hash: compare with None
    assert again.find_near(0x0123456789ABCDEF ^ 0b111, 4) == 0x0123456789ABCDEF
    assert again.find_near(0x00FF00FF00FF00FF, 4) is None
    assert DedupIndex.from_state([["e" * 64, 5]]).find_near(5, 0) == 5
    other = DedupIndex()
    other.add("f" * 64, 7)
    other.load_state_dict(index.state_dict())
    assert other.to_state() == state and not other.has_sha("f" * 64)
    other.load_state_dict([["e" * 64, "0000000000000005"]])
    assert len(other) == 1 and other.find_near(4, 1) == 5
