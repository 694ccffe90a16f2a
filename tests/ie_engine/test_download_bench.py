"""The downloader's throughput check (``ie_engine.download_bench``) on a few generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ie_engine.download_bench import _on_white, compare_with_minimal


def _transparent_red_square(size: int = 64) -> Image.Image:
    """A red square in the middle; everything around it transparent black."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return img


def test_on_white_puts_transparent_pixels_on_white_where_convert_leaves_them_black() -> None:
    img = _transparent_red_square()
    assert img.convert("RGB").getpixel((0, 0)) == (0, 0, 0)
    flat = _on_white(img)
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (255, 255, 255)
    assert flat.getpixel((32, 32)) == (255, 0, 0)
    keyed = Image.new("P", (8, 8), 1)
    keyed.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    keyed.info["transparency"] = 1
    assert _on_white(keyed).getpixel((0, 0)) == (255, 255, 255)
    plain = Image.new("RGB", (8, 8), (10, 20, 30))
    assert _on_white(plain).getpixel((3, 3)) == (10, 20, 30)


def test_compare_with_minimal_measures_every_loop_on_the_same_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        if i % 3 == 0:
            img = _transparent_red_square(48)
        else:
            img = Image.fromarray(rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8))
        path = tmp_path / f"{i:02d}.png"
        img.save(path)
        paths.append(path)
    result = compare_with_minimal(paths, concurrency=4, stored_size=32, repeats=1)
    assert result["count"] == 12
    for key in ("minimal_ips", "minimal_on_white_ips", "downloader_ips",
                "downloader_inline_ips"):
        assert result[key] > 0, key
    assert abs(result["ratio"] - result["downloader_ips"] / result["minimal_ips"]) < 0.01
    assert abs(result["on_white_ratio"]
               - result["downloader_ips"] / result["minimal_on_white_ips"]) < 0.01
    # The four transparent squares are the same image: the downloader keeps the first and drops
    # the rest as duplicates; every noise image is kept.
    assert result["outcomes"] == {"images": 9, "duplicate": 3}
    assert set(result["client_cpu_ms_per_image"]) == {"minimal", "flat", "downloader", "inline"}
