"""Loading the target folder: labels from class folders, guards, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ie_engine.errors import TargetError
from ie_engine.imaging import dhash64, hamming, to_uint8_tensor_batch
from ie_engine.target import load_target


def photo(seed: int, w: int = 120, h: int = 90) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def write(path: Path, img: Image.Image, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    return path


def test_class_folders_give_labels(tmp_path: Path) -> None:
    write(tmp_path / "cats" / "1.png", photo(1))
    write(tmp_path / "cats" / "sub" / "2.jpg", photo(2), "JPEG")  # deeper: still "cats"
    write(tmp_path / "dogs" / "3.png", photo(3, 40, 200))
    target = load_target(tmp_path, max_pixels=10_000_000, size=64)
    assert len(target) == 3 and target.labelled
    assert target.class_names == ["cats", "dogs"]
    assert target.labels == ["cats", "cats", "dogs"]
    assert target.label_indices().tolist() == [0, 0, 1]
    assert [p.name for p in target.paths] == ["1.png", "2.jpg", "3.png"]
    assert target.images[0].shape == (48, 64, 3) and target.images[0].dtype == np.uint8
    assert target.images[2].shape == (64, 13, 3)
    assert target.rejected == []
    assert hamming(target.dhashes[0], dhash64(Image.fromarray(target.images[0]))) == 0
    assert to_uint8_tensor_batch(target.images, 32).shape == (3, 3, 32, 32)


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / f"{i}.png", photo(i))
    target = load_target(tmp_path, max_pixels=10_000_000, size=64)
    assert target.labels is None and target.class_names == [] and not target.labelled
    with pytest.raises(TargetError):
        target.label_indices()
    with pytest.raises(TargetError, match="directly in the folder"):
        load_target(tmp_path, max_pixels=10_000_000, size=64, labelled="yes")


def test_labels_need_two_classes_and_no_loose_images(tmp_path: Path) -> None:
    write(tmp_path / "only" / "1.png", photo(1))
    write(tmp_path / "only" / "2.png", photo(2))
    assert load_target(tmp_path, max_pixels=10_000_000, size=64).labels is None
    with pytest.raises(TargetError, match="at least 2"):
        load_target(tmp_path, max_pixels=10_000_000, size=64, labelled="yes")
    write(tmp_path / "other" / "3.png", photo(3))
    assert load_target(tmp_path, max_pixels=10_000_000, size=64).labels is not None
    assert load_target(tmp_path, max_pixels=10_000_000, size=64, labelled="no").labels is None
    write(tmp_path / "loose.png", photo(4))
    assert load_target(tmp_path, max_pixels=10_000_000, size=64).labels is None


def test_corrupt_and_bomb_reported_hidden_and_text_ignored(tmp_path: Path) -> None:
    write(tmp_path / "good.png", photo(1))
    write(tmp_path / "big.png", photo(2, 400, 300))
    good = write(tmp_path / "trunc.png", photo(3))
    good.write_bytes(good.read_bytes()[:300])
    (tmp_path / "page.jpg").write_text("<html>not an image</html>")
    (tmp_path / "README.txt").write_text("notes")
    write(tmp_path / ".hidden.png", photo(4))
    write(tmp_path / ".cache" / "x.png", photo(5))
    write(tmp_path / "no_extension", photo(6))  # sniffed by magic bytes
    target = load_target(tmp_path, max_pixels=100_000, size=64)
    assert sorted(p.name for p in target.paths) == ["good.png", "no_extension"]
    rejected = {p.name: reason for p, reason, _ in target.rejected}
    assert rejected == {
        "big.png": "decompression-bomb",
        "trunc.png": "corrupt",
        "page.jpg": "not-an-image",
    }
    assert all(detail for _, _, detail in target.rejected)


def test_transparency_on_white(tmp_path: Path) -> None:
    write(tmp_path / "t.png", Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    target = load_target(tmp_path, max_pixels=10_000_000, size=64, workers=1)
    assert (target.images[0] == 255).all()


def test_empty_missing_and_unusable_folders(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        load_target(tmp_path / "nope", max_pixels=10_000_000, size=64)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetError, match="not a folder"):
        load_target(tmp_path / "file", max_pixels=10_000_000, size=64)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(TargetError, match="no image file"):
        load_target(empty, max_pixels=10_000_000, size=64)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(TargetError, match="no usable image"):
        load_target(bad, max_pixels=10_000_000, size=64)
