"""Loading the user's target folder: the small, unlabelled (or labelled) set to specialise on.

Images go through exactly the guards of the downloader (:mod:`ie_engine.imaging`:
magic bytes, decompression bombs, truncation, first frame, transparency on white, RGB) and the
same normalisation (longest side ``size``, never upscaled). Their dHashes feed the downloader's
leakage guard, so a web copy of a target image never becomes training data.

Which files are read: every non-hidden file under the folder (recursively; hidden files and
hidden folders - names starting with ``.`` - are skipped). A file with an image suffix that
cannot be used is reported in ``rejected``; a file with another suffix is read only if its magic
bytes say it is an image (so ``README.txt`` or ``Thumbs.db`` is ignored silently, while an
extension-less JPEG is still used).

Labels: when ``labelled`` is not ``"no"``, every usable image lies in a first-level subfolder and
there are at least two such subfolders, the subfolder name is the image's class (the usual
``root/class/image.jpg`` layout). ``labelled="yes"`` turns a layout that does not qualify into
a :class:`~ie_engine.errors.TargetError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ie_engine.errors import TargetError
from ie_engine.imaging import (
    IMAGE_SUFFIXES,
    ImageRejected,
    decode_normalised,
    dhash64,
    sniff_format,
)

Labelled = Literal["auto", "yes", "no"]


@dataclass
class TargetSet:
    """The usable target images, in sorted path order.

    ``images[i]`` is a uint8 ``(H, W, 3)`` RGB array whose longest side is ``size`` (smaller
    images keep their size); ``paths[i]`` its file, ``dhashes[i]`` its 64-bit dHash,
    ``labels[i]`` its class name (None when unlabelled). ``class_names`` is sorted (empty when
    unlabelled). ``rejected`` lists ``(path, reason, detail)`` for image files that were refused.
    """

    images: list[np.ndarray]
    paths: list[Path]
    dhashes: list[int]
    labels: list[str] | None = None
    class_names: list[str] = field(default_factory=list)
    rejected: list[tuple[Path, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def label_indices(self) -> np.ndarray:
        """Labels as int64 indices into ``class_names`` (raises TargetError when unlabelled)."""
        if self.labels is None:
            raise TargetError("the target set has no labels")
        lookup = {name: i for i, name in enumerate(self.class_names)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)


def _walk(folder: Path) -> Iterator[Path]:
    """Every non-hidden regular file under ``folder``, in a stable sorted order."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(root) / name
                if path.is_file():
                    yield path


def _candidate(path: Path) -> bool:
    """Whether ``path`` should be read as an image (suffix, or magic bytes for other files)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return sniff_format(head) is not None


def _load_one(path: Path, max_pixels: int, size: int) -> tuple[np.ndarray, int] | ImageRejected:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageRejected("unreadable", f"cannot read the file: {exc}")
    try:
        img = decode_normalised(data, max_pixels=max_pixels, size=size)[0]
    except ImageRejected as exc:
        return exc
    return np.asarray(img, dtype=np.uint8).copy(), dhash64(img)


def load_target(
    folder: Path,
    *,
    max_pixels: int,
    size: int,
    labelled: Labelled = "auto",
    workers: int | None = None,
) -> TargetSet:
    """Read, check and normalise every image under ``folder`` (see the module docstring).

    ``workers``: decoding threads (default: CPUs, at most 4; Pillow decodes without the GIL).
    Raises :class:`TargetError` when the folder is missing or holds no usable image, or when
    ``labelled="yes"`` and the layout gives no labels.
    """
    folder = Path(folder)
    if not folder.exists():
        raise TargetError(f"target folder {folder} does not exist")
    if not folder.is_dir():
        raise TargetError(f"target {folder} is not a folder")
    candidates = [p for p in _walk(folder) if _candidate(p)]
    if not candidates:
        raise TargetError(
            f"target folder {folder} holds no image file "
            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}, hidden files skipped)"
        )
    n_workers = min(4, os.cpu_count() or 1) if workers is None else max(1, workers)
    if n_workers > 1 and len(candidates) > 1:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ie-target") as pool:
            loaded = list(pool.map(lambda p: _load_one(p, max_pixels, size), candidates))
    else:
        loaded = [_load_one(p, max_pixels, size) for p in candidates]

    images: list[np.ndarray] = []
    paths: list[Path] = []
    dhashes: list[int] = []
    rejected: list[tuple[Path, str, str]] = []
    for path, result in zip(candidates, loaded, strict=True):
        if isinstance(result, ImageRejected):
            rejected.append((path, result.reason, result.detail))
        else:
            images.append(result[0])
            dhashes.append(result[1])
            paths.append(path)
    if not images:
        examples = "; ".join(f"{p.name}: {reason}" for p, reason, _ in rejected[:3])
        raise TargetError(
            f"target folder {folder} has no usable image: all {len(rejected)} image files were "
            f"refused ({examples})"
        )

    labels, class_names = _labels(folder, paths, labelled)
    return TargetSet(
        images=images,
        paths=paths,
        dhashes=dhashes,
        labels=labels,
        class_names=class_names,
        rejected=rejected,
    )


def _labels(
    folder: Path, paths: list[Path], labelled: Labelled
) -> tuple[list[str] | None, list[str]]:
    if labelled == "no":
        return None, []
    rel = [p.relative_to(folder).parts for p in paths]
    loose = sum(1 for parts in rel if len(parts) < 2)
    names = [parts[0] for parts in rel if len(parts) >= 2]
    classes = sorted(set(names))
    if loose == 0 and len(classes) >= 2:
        return names, classes
    if labelled == "yes":
        why = (
            f"{loose} image(s) lie directly in the folder, not in a class subfolder"
            if loose
            else f"only {len(classes)} class subfolder found; labels need at least 2"
        )
        raise TargetError(f"labelled target requested but {why} ({folder})")
    return None, []


__all__ = ["Labelled", "TargetSet", "load_target"]
