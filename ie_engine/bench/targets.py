"""Benchmark targets: labelled folders built from the offline corpus, with their ground truth.

A benchmark target is a folder of images in one subfolder per class (the labels are for reporting
only: the loop never sees them) plus two things the benchmark needs and the loop never sees:

* a **relevance map**, class name -> corpus category path prefixes: a downloaded web image is
  relevant to a class when its corpus category, or one of the categories that also hold it
  (``CorpusItem.also_in``), lies under one of the class's prefixes;
* the **held-out ids**: the corpus items that *are* the target's images, removed from the web
  (``CorpusIndex.load(..., exclude_ids=...)``) so that no arm can download its own target.

Built-in targets (both from Debian packages, so any fresh machine rebuilds the same folders):

``clipart-heldout``
    OpenClipart classes, each split 50/50 with a fixed seed: one half is the target, the other
    half stays in the web (same style as the web).
``tuxpaint-photos``
    Tux Paint's photo stamps in 12 coarse classes, ``cartoon/`` folders left out (a style shift:
    photographs against a clip-art web).

The image files are copied as ``<dir>/images/<class>/<corpus id>.png`` and a ``target.json``
beside ``images/`` records classes, ids and the relevance map.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ie_engine.errors import TargetError
from ie_engine.search.corpus import CorpusItem

SPLIT_SEED = 20230228
"""Seed of the clipart-heldout 50/50 split (the paper's arXiv date); fixed so targets agree."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Items above this many pixels are decompression bombs that the target loader would refuse:
they never enter a target (they stay in the web, where the downloader refuses them too)."""

CLIPART_CLASSES: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "insect": ("animals/bugs",),
    "mammal": ("animals/mammals",),
    "fruit": ("food/fruit",),
    "dessert": ("food/desserts",),
    "beverage": ("food/beverages",),
    "flower": ("plants/flowers",),
    "music": ("recreation/music",),
    "vehicle": ("transportation/vehicles", "transportation/boating"),
}
"""clipart-heldout: class -> OpenClipart category prefixes (also its relevance map)."""


@dataclass(frozen=True)
class StampClass:
    """One Tux Paint class: stamp folders to take (minus ``exclude``), and what counts as
    relevant in the web (the corpus has no finer category than these folders)."""

    include: tuple[str, ...]
    relevant: tuple[str, ...]
    exclude: tuple[str, ...] = ()


TUXPAINT_CLASSES: dict[str, StampClass] = {
    "bird": StampClass(("animals/birds",), ("animals/birds",)),
    "mammal": StampClass(
        ("animals/mammals", "animals/marsupials"),
        ("animals/mammals", "animals/marsupials"),
        exclude=("animals/mammals/bovines", "animals/mammals/bears/toys"),
    ),
    # OpenClipart files its few cows under animals/mammals: no finer category exists.
    "bovine": StampClass(("animals/mammals/bovines",), ("animals/mammals",)),
    "fruit": StampClass(("food/fruit",), ("food/fruit",)),
    "vegetable": StampClass(("food/vegetables",), ("food/vegetables",)),
    "flower": StampClass(("plants/flowers",), ("plants/flowers",),
                         exclude=("plants/flowers/plastic",)),
    "musical instrument": StampClass(("hobbies/music",), ("hobbies/music", "recreation/music")),
    "tool": StampClass(("household/tools",), ("household/tools", "tools")),
    "road sign": StampClass(("town/roadsigns",), ("town/roadsigns", "transportation/roadsigns")),
    "money": StampClass(("symbols/money",), ("symbols/money", "signs_and_symbols/money")),
    "chess piece": StampClass(("symbols/chess",), ("symbols/chess", "recreation/games/chess")),
    "halloween": StampClass(("seasonal/halloween",), ("seasonal/halloween",)),
}
"""tuxpaint-photos: class -> stamp folders and relevance prefixes."""

BUILTIN_TARGETS = ("clipart-heldout", "tuxpaint-photos")


@dataclass(frozen=True)
class BenchTarget:
    """A target ready for the benchmark: a labelled folder and its ground truth."""

    name: str
    image_dir: Path
    """Folder with one subfolder per class (what ``load_target`` reads)."""
    class_names: tuple[str, ...]
    relevance: dict[str, tuple[str, ...]]
    """Class -> corpus category prefixes that count as relevant (reporting only)."""
    heldout_ids: frozenset[str]
    """Corpus ids of the target's own images, removed from the web."""
    members: dict[str, tuple[str, ...]]
    """Class -> corpus ids of its target images (empty for a custom target's unmatched files)."""


# --------------------------------------------------------------------------------------------
# Relevance
# --------------------------------------------------------------------------------------------


def under(category: str, prefix: str) -> bool:
    """Whether ``category`` is ``prefix`` or a folder below it (whole path components only:
    ``tools`` covers ``tools/weapons`` but not ``toolsets``)."""
    prefix = prefix.strip("/")
    return bool(prefix) and (category == prefix or category.startswith(prefix + "/"))


def relevant_classes(
    category: str, also_in: Iterable[str], relevance: dict[str, tuple[str, ...]]
) -> list[str]:
    """The classes (in ``relevance`` order) that an image in ``category`` (and ``also_in``) is
    relevant to; empty when it is relevant to none."""
    cats = [category, *also_in]
    return [
        name for name, prefixes in relevance.items()
        if any(under(c, p) for c in cats for p in prefixes)
    ]


def item_id_from_url(url: str) -> str | None:
    """The corpus id of an offline-web image URL (``.../images/{id}``), else None."""
    _head, sep, tail = url.rstrip("/").rpartition("/images/")
    if not sep or not tail or "/" in tail:
        return None
    return tail.split("?", 1)[0]


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _fits(item: CorpusItem, max_pixels: int) -> bool:
    return item.width is not None and item.height is not None and (
        item.width * item.height <= max_pixels
    )


def _write_target(
    out: Path, name: str, members: dict[str, list[CorpusItem]],
    relevance: dict[str, tuple[str, ...]], spec: dict[str, Any],
) -> BenchTarget:
    """Copy the members' files into ``out/images/<class>/<id>.png`` and write ``target.json``.

    Idempotent: when ``target.json`` already records the same spec digest and every file is
    there, nothing is copied again.
    """
    digest = _spec_digest(spec)
    meta_path = out / "target.json"
    class_ids = {c: tuple(sorted(it.id for it in items)) for c, items in members.items()}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        files_ok = all(
            (out / "images" / c / f"{i}.png").is_file() for c, ids in class_ids.items() for i in ids
        )
        if meta.get("digest") == digest and meta.get("classes") == {
            c: list(v) for c, v in class_ids.items()
        } and files_ok:
            return _from_meta(out, meta)
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    for cls, items in members.items():
        folder = images / cls
        folder.mkdir(parents=True, exist_ok=True)
        for it in items:
            shutil.copyfile(it.path, folder / f"{it.id}.png")
    meta = {
        "name": name,
        "digest": digest,
        "spec": spec,
        "classes": {c: list(v) for c, v in class_ids.items()},
        "relevance": {c: list(v) for c, v in relevance.items()},
    }
    tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return _from_meta(out, meta)


def _from_meta(out: Path, meta: dict[str, Any]) -> BenchTarget:
    members = {c: tuple(ids) for c, ids in meta["classes"].items()}
    return BenchTarget(
        name=str(meta["name"]),
        image_dir=out / "images",
        class_names=tuple(sorted(members)),
        relevance={c: tuple(v) for c, v in meta["relevance"].items()},
        heldout_ids=frozenset(i for ids in members.values() for i in ids),
        members=members,
    )


def split_clipart(
    items: Sequence[CorpusItem],
    *,
    classes: dict[str, tuple[str, ...]] = CLIPART_CLASSES,
    seed: int = SPLIT_SEED,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[dict[str, list[CorpusItem]], dict[str, list[CorpusItem]]]:
    """The clipart-heldout split: ``(target halves, web halves)``, class -> items.

    An OpenClipart item belongs to a class when its category or one of its ``also_in``
    categories lies under the class's prefixes; an item that would belong to two classes is
    ambiguous and left in the web (in neither half). Decompression bombs stay in the web. Each
    class's items, sorted by id, are shuffled with ``random.Random(f"{seed}:{class}")`` (so one
    class's split does not depend on the others) and the first ``n // 2`` form the target.
    """
    target: dict[str, list[CorpusItem]] = {}
    web: dict[str, list[CorpusItem]] = {}
    for cls in classes:
        pool = []
        for it in items:
            if it.source != "openclipart" or not _fits(it, max_pixels):
                continue
            hits = relevant_classes(it.category, it.also_in, classes)
            if hits == [cls]:
                pool.append(it)
        pool.sort(key=lambda it: it.id)
        random.Random(f"{seed}:{cls}").shuffle(pool)
        half = len(pool) // 2
        target[cls] = sorted(pool[:half], key=lambda it: it.id)
        web[cls] = sorted(pool[half:], key=lambda it: it.id)
    return target, web


def build_clipart_heldout(
    items: Sequence[CorpusItem], out: Path, *, seed: int = SPLIT_SEED,
    max_pixels: int = DEFAULT_MAX_PIXELS, classes: dict[str, tuple[str, ...]] = CLIPART_CLASSES,
) -> BenchTarget:
    """Write the clipart-heldout target (the target halves of :func:`split_clipart`);
    ``classes`` defaults to the issue's nine (a subset serves tests)."""
    target, _web = split_clipart(items, classes=classes, seed=seed, max_pixels=max_pixels)
    if any(not v for v in target.values()):
        empty = [c for c, v in target.items() if not v]
        raise TargetError(f"clipart-heldout: no OpenClipart images for {empty} in the corpus")
    spec = {"kind": "clipart-heldout", "seed": seed, "classes": classes}
    return _write_target(out, "clipart-heldout", target, classes, spec)


def tuxpaint_members(
    items: Sequence[CorpusItem], *, classes: dict[str, StampClass] = TUXPAINT_CLASSES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, list[CorpusItem]]:
    """Class -> Tux Paint items of the tuxpaint-photos target (``cartoon`` folders left out)."""
    out: dict[str, list[CorpusItem]] = {}
    for cls, spec in classes.items():
        chosen = [
            it for it in items
            if it.source == "tuxpaint" and _fits(it, max_pixels)
            and "cartoon" not in it.category.split("/")
            and any(under(it.category, p) for p in spec.include)
            and not any(under(it.category, p) for p in spec.exclude)
        ]
        out[cls] = sorted(chosen, key=lambda it: it.id)
    return out


def build_tuxpaint_photos(
    items: Sequence[CorpusItem], out: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> BenchTarget:
    """Write the tuxpaint-photos target."""
    members = tuxpaint_members(items, max_pixels=max_pixels)
    if any(not v for v in members.values()):
        empty = [c for c, v in members.items() if not v]
        raise TargetError(
            f"tuxpaint-photos: no stamps for {empty} (apt-get install tuxpaint-stamps-default)"
        )
    relevance = {c: s.relevant for c, s in TUXPAINT_CLASSES.items()}
    spec = {
        "kind": "tuxpaint-photos",
        "classes": {c: [list(s.include), list(s.exclude)] for c, s in TUXPAINT_CLASSES.items()},
    }
    return _write_target(out, "tuxpaint-photos", members, relevance, spec)


def build_builtin_target(name: str, items: Sequence[CorpusItem], out: Path) -> BenchTarget:
    """``clipart-heldout`` or ``tuxpaint-photos``, written to ``out``."""
    if name == "clipart-heldout":
        return build_clipart_heldout(items, out)
    if name == "tuxpaint-photos":
        return build_tuxpaint_photos(items, out)
    raise TargetError(f"unknown benchmark target {name!r}; choose {', '.join(BUILTIN_TARGETS)}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_custom_target(
    image_dir: Path, relevance_map: Path, items: Sequence[CorpusItem], *, name: str | None = None
) -> BenchTarget:
    """A user's target: ``image_dir`` (a folder per class) and a JSON relevance map (class name
    -> list of corpus category prefixes).

    Held-out ids: corpus items whose file has exactly the bytes of a target file (matched by size,
    then sha256); near-copies are left to the downloader's dHash leakage guard.
    """
    if not image_dir.is_dir():
        raise TargetError(f"target folder {image_dir} does not exist")
    try:
        raw = json.loads(relevance_map.read_text())
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot read the relevance map {relevance_map}: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in raw.values()
    ):
        raise TargetError("the relevance map must be a JSON object: class -> list of prefixes")
    classes = sorted(p.name for p in image_dir.iterdir() if p.is_dir() and not
                     p.name.startswith("."))
    missing = [c for c in classes if c not in raw]
    if missing:
        raise TargetError(f"the relevance map has no entry for classes {missing}")
    files = [p for p in image_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    by_size: dict[int, list[Path]] = {}
    for p in files:
        by_size.setdefault(p.stat().st_size, []).append(p)
    target_hashes: dict[str, str] = {}  # sha256 -> class
    for size_files in by_size.values():
        for p in size_files:
            rel = p.relative_to(image_dir).parts
            target_hashes[_sha256_file(p)] = rel[0] if len(rel) > 1 else ""
    members: dict[str, list[str]] = {c: [] for c in classes}
    for it in items:
        try:
            size = os.stat(it.path).st_size
        except OSError:
            continue
        if size in by_size:
            cls = target_hashes.get(_sha256_file(Path(it.path)))
            if cls is not None:
                members.setdefault(cls, []).append(it.id)
    return BenchTarget(
        name=name or image_dir.name,
        image_dir=image_dir,
        class_names=tuple(classes),
        relevance={c: tuple(raw[c]) for c in classes},
        heldout_ids=frozenset(i for ids in members.values() for i in ids),
        members={c: tuple(sorted(v)) for c, v in members.items() if c},
    )


__all__ = [
    "BUILTIN_TARGETS",
    "CLIPART_CLASSES",
    "SPLIT_SEED",
    "TUXPAINT_CLASSES",
    "BenchTarget",
    "StampClass",
    "build_builtin_target",
    "build_clipart_heldout",
    "build_tuxpaint_photos",
    "item_id_from_url",
    "load_custom_target",
    "relevant_classes",
    "split_clipart",
    "tuxpaint_members",
    "under",
]
