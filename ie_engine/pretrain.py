"""The generic base model: self-supervised training on the offline corpus, once, cached.

The paper starts every arm from MoCo v3 weights trained on ImageNet; no such weights can be
downloaded here, so ``ie pretrain`` trains the same trainer (:class:`~ie_engine.ssl.SSLTrainer`)
on the images of the offline corpus and saves the backbone as an ``init_checkpoint`` file
(``{"backbone": state_dict, "meta": {...}}``). Every benchmark arm loads it, so the arms differ
only in what they do after the start.

Cached under ``{data_dir}/pretrain/``: ``base-{key}.pt`` (+ ``.json`` with the settings and
timings; ``base-{key}.partial.pt`` while it trains, so a killed pretraining resumes), where
the key hashes the settings, the corpus (creation time and size) and the ids held out of the
pretraining set. The decoded pixels are cached there too (``pixels-{key}.npy``), so a
second pretraining with other settings skips the decoding.

Held out: the caller passes ``exclude_ids``; the benchmark passes the images of its built-in
targets, so the base never saw a target image (the loop itself then trains on them, as it must).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ie_engine.checkpoint import load_checkpoint, save_checkpoint
from ie_engine.config import Preset, train_preset
from ie_engine.errors import CheckpointError, CorpusError
from ie_engine.imaging import ImageRejected, decode_normalised, to_uint8_tensor_batch
from ie_engine.search.corpus import CorpusIndex, CorpusItem
from ie_engine.ssl.trainer import SSLTrainer
from ie_engine.types import ProgressSink

PRETRAIN_FORMAT = 1
"""Bumped when the recipe changes, so old cached bases are not reused."""
PRETRAIN_PHASE = "pretrain"
"""Progress phase of the base model's training."""


@dataclass(frozen=True)
class PretrainSettings:
    """What the base model is trained on, and for how long."""

    preset: Preset = "cpu-small"
    """Network and optimiser of this preset (the arms must use the same arch and image size)."""
    steps: int = 300
    """Optimiser steps."""
    batch_size: int | None = None
    """None: the preset's batch size."""
    seed: int = 0
    max_images: int | None = None
    """Train on a seeded random subset of this many corpus images (None: all of them)."""
    stored_size: int = 96
    """Images are decoded to this longest side first (the downloader's ``stored_size``), then
    cropped by the trainer's augmentation, exactly like downloaded images."""
    max_pixels: int = 40_000_000
    """Decompression-bomb guard (as the downloader's)."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _selected_items(
    index: CorpusIndex, settings: PretrainSettings, exclude_ids: frozenset[str]
) -> list[CorpusItem]:
    items = [it for it in index.items if it.id not in exclude_ids]
    if settings.max_images is not None and settings.max_images < len(items):
        rng = np.random.default_rng(settings.seed)
        pick = np.sort(rng.choice(len(items), settings.max_images, replace=False))
        items = [items[int(i)] for i in pick]
    return items


def pretrain_key(
    settings: PretrainSettings, index: CorpusIndex, exclude_ids: frozenset[str]
) -> str:
    """Cache key of a base model: settings, corpus identity and the held-out ids."""
    return _digest({
        "format": PRETRAIN_FORMAT,
        "settings": asdict(replace(settings, num_threads=None)),
        "corpus": [index.info.created, index.info.count],
        "exclude": _digest(sorted(exclude_ids)),
    })


def _decode_one(item: CorpusItem, size: int, max_pixels: int) -> np.ndarray | None:
    try:
        data = Path(item.path).read_bytes()
        img = decode_normalised(data, max_pixels=max_pixels, size=size)[0]
    except (OSError, ImageRejected):
        return None
    return np.asarray(img, dtype=np.uint8)


def corpus_pixels(
    items: list[CorpusItem],
    *,
    size: int,
    max_pixels: int,
    cache_file: Path | None = None,
    workers: int = 2,
    progress: ProgressSink | None = None,
) -> np.ndarray:
    """uint8 ``(N, 3, size, size)`` pixels of the ``items`` that decode (bombs and broken files
    are skipped), through the downloader's own decoding guards; cached in ``cache_file``."""
    if cache_file is not None and cache_file.is_file():
        return np.load(cache_file)
    if progress is not None:
        progress.start("decode", len(items))
    arrays: list[np.ndarray] = []

    def work(it: CorpusItem) -> np.ndarray | None:
        out = _decode_one(it, size, max_pixels)
        if progress is not None:
            progress.advance("decode")
        return out

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ie-decode") as pool:
        for arr in pool.map(work, items):
            if arr is not None:
                arrays.append(arr)
    if progress is not None:
        progress.finish("decode")
    if not arrays:
        raise CorpusError("no corpus image could be decoded for pretraining")
    pixels = to_uint8_tensor_batch(arrays, size)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, pixels)
        os.replace(tmp, cache_file)
    return pixels


class _Steps:
    """Forwards the trainer's per-step advances to one bar over all chunks of a resumable
    training (each chunk's own start/finish would restart the bar)."""

    def __init__(self, outer: ProgressSink) -> None:
        self.outer = outer

    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        self.outer.advance(PRETRAIN_PHASE, n)

    def finish(self, phase: str) -> None:
        pass


def train_resumable(
    trainer: SSLTrainer,
    sample: Callable[[int, torch.Generator], torch.Tensor],
    steps: int,
    *,
    partial: Path,
    save_every: int = 25,
    progress: ProgressSink | None = None,
    say: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``trainer`` to ``steps`` optimiser steps in all, saving its whole state (weights,
    optimiser, generator) to ``partial`` every ``save_every`` steps. A training killed at any
    moment resumes from the last save, and ends exactly as an uninterrupted one (the trainer
    is bit-exact across a resume on CPU). An unreadable or mismatched ``partial`` file is
    ignored (training starts over). Returns the loss of every step."""
    losses: list[float] = []
    if partial.is_file():
        try:
            state = load_checkpoint(partial)
            trainer.load_state_dict(state["trainer"])
            losses = [float(x) for x in state["losses"]]
            if say is not None:
                say(f"base model: resuming at step {trainer.global_step} from {partial}")
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            if say is not None:
                say(f"base model: ignoring {partial} ({exc}); starting over")
            losses = []
    if progress is not None:
        progress.start(PRETRAIN_PHASE, steps)
        progress.advance(PRETRAIN_PHASE, min(trainer.global_step, steps))
    try:
        while trainer.global_step < steps:
            n = min(save_every, steps - trainer.global_step)
            stats = trainer.train(sample, n, progress=None if progress is None
                                  else _Steps(progress))
            losses.extend(stats.losses)
            save_checkpoint(partial, {"format": "pretrain-partial", "losses": losses,
                                      "trainer": trainer.state_dict()})
    finally:
        if progress is not None:
            progress.finish(PRETRAIN_PHASE)
    return losses


def pretrain_base(
    *,
    corpus_dir: Path,
    data_dir: Path,
    settings: PretrainSettings = PretrainSettings(),
    exclude_ids: frozenset[str] = frozenset(),
    progress: ProgressSink | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Train (or find in the cache) the base model; return its checkpoint file."""
    index = CorpusIndex.load(corpus_dir)
    key = pretrain_key(settings, index, exclude_ids)
    folder = data_dir / "pretrain"
    ckpt = folder / f"base-{key}.pt"
    if ckpt.is_file():
        if say is not None:
            say(f"base model: cached {ckpt}")
        return ckpt
    items = _selected_items(index, settings, exclude_ids)
    t0 = time.perf_counter()
    pixel_key = _digest([index.info.created, settings.stored_size, settings.max_pixels,
                         _digest([it.id for it in items])])
    pixels = corpus_pixels(
        items, size=settings.stored_size, max_pixels=settings.max_pixels,
        cache_file=folder / f"pixels-{pixel_key}.npy", progress=progress,
    )
    decode_s = time.perf_counter() - t0
    cfg = train_preset(settings.preset)
    cfg = replace(
        cfg, batch_size=settings.batch_size or cfg.batch_size, num_threads=settings.num_threads,
        init_checkpoint=None,
    )
    if say is not None:
        say(f"base model: {settings.steps} steps on {len(pixels)} corpus images "
            f"({cfg.arch}, {cfg.image_size} px, batch {cfg.batch_size})")
    trainer = SSLTrainer(cfg, seed=settings.seed)
    data = torch.from_numpy(pixels)

    def sample(_step: int, gen: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]

    t1 = time.perf_counter()
    partial = folder / f"base-{key}.partial.pt"
    losses = train_resumable(trainer, sample, settings.steps, partial=partial,
                             progress=progress, say=say)
    meta: dict[str, Any] = {
        "key": key,
        "format": PRETRAIN_FORMAT,
        "settings": asdict(settings),
        "images": len(pixels),
        "excluded_ids": len(exclude_ids),
        "corpus_created": index.info.created,
        "decode_seconds": round(decode_s, 1),
        "train_seconds": round(time.perf_counter() - t1, 1),
        "loss_first": losses[0] if losses else None,
        "loss_last10": float(np.mean(losses[-10:])) if losses else None,
        "arch": cfg.arch,
        "image_size": cfg.image_size,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_name(f".{ckpt.name}.tmp-{os.getpid()}")
    torch.save({"backbone": trainer.backbone_state_dict(), "meta": meta}, tmp)
    os.replace(tmp, ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    partial.unlink(missing_ok=True)
    if say is not None:
        say(f"base model: saved {ckpt} ({meta['train_seconds']} s, loss "
            f"{meta['loss_first']:.3f} -> {meta['loss_last10']:.3f})")
    return ckpt


__all__ = ["PretrainSettings", "corpus_pixels", "pretrain_base", "pretrain_key",
           "train_resumable"]
