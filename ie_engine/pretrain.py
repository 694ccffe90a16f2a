"""The generic base model: self-supervised training on the offline corpus, once, cached.

The paper starts every arm from MoCo v3 weights trained on ImageNet; no such weights can be
downloaded here, so ``ie pretrain`` trains the same trainer (:class:`~ie_engine.ssl.SSLTrainer`)
on the images of the offline corpus and saves the backbone as an ``init_checkpoint`` file
(``{"backbone": state_dict, "meta": {...}}``). Every benchmark arm loads it, so the arms differ
only in what they do after the start.

Cached under ``{data_dir}/pretrain/``: ``base-{key}-{steps}.pt`` (+ ``.json`` with the
settings and timings), where the key hashes the settings but the step count, the corpus
(creation time and size) and the ids held out of the pretraining set. While it trains,
``base-{key}-{steps}.partial.pt`` holds the whole trainer state every 25 steps, so a killed
pretraining resumes; once done, that state is kept as ``base-{key}-{steps}.state.pt``. The
learning rate is constant, so a longer base is exactly a shorter one trained on: ``ie pretrain
--steps 1200`` after ``--steps 400`` starts from the 400-step state and trains 800 more steps,
ending bit-exact where an uninterrupted 1,200-step run would (on CPU). The decoded pixels are
cached there too (``pixels-{key}.npy``), so a second pretraining with other settings skips the
decoding.

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

PRETRAIN_FORMAT = 2
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
    """Cache key of a base model's lineage: its settings but the step count, the corpus
    identity and the held-out ids (bases of one lineage differ only in their step count)."""
    return _digest({
        "format": PRETRAIN_FORMAT,
        "settings": asdict(replace(settings, num_threads=None, steps=0)),
        "corpus": [index.info.created, index.info.count],
        "exclude": _digest(sorted(exclude_ids)),
    })


def decode_item(item: CorpusItem, size: int, max_pixels: int) -> np.ndarray | None:
    """uint8 (S, S, 3) pixels of a corpus item through the downloader's decoding guards, or
    None when it cannot be read or is refused."""
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
        out = decode_item(it, size, max_pixels)
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
    start: Path | None = None,
    save_every: int = 25,
    progress: ProgressSink | None = None,
    say: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``trainer`` to ``steps`` optimiser steps in all, saving its whole state (weights,
    optimiser, generator) to ``partial`` every ``save_every`` steps. A training killed at any
    moment resumes from the last save, and ends exactly as an uninterrupted one (the trainer
    is bit-exact across a resume on CPU). Without a usable ``partial``, training begins from
    ``start`` (a state file of the same form, written by a shorter training of the same
    lineage) when given, else from step 0. An unreadable or mismatched file is ignored, and one
    already past ``steps`` is not used. Returns the loss of every step, from step 0."""
    losses: list[float] = []
    for source in (partial, start):
        if source is None or not source.is_file():
            continue
        try:
            state = load_checkpoint(source)
            if int(state["trainer"]["step"]) > steps:
                raise ValueError(f"it is at step {state['trainer']['step']}, past {steps}")
            trainer.load_state_dict(state["trainer"])
            losses = [float(x) for x in state["losses"]]
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            if say is not None:
                say(f"base model: ignoring {source} ({exc})")
            continue
        if say is not None:
            verb = "resuming" if source == partial else "continuing"
            say(f"base model: {verb} at step {trainer.global_step} from {source}")
        break
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


def _state_steps(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1].split(".", 1)[0])


def _shorter_states(folder: Path, key: str, steps: int) -> list[Path]:
    """The saved final states of this lineage's shorter bases, longest first."""
    found = [p for p in folder.glob(f"base-{key}-*.state.pt")
             if p.name.rsplit("-", 1)[1].split(".", 1)[0].isdigit()]
    return sorted((p for p in found if _state_steps(p) < steps), key=_state_steps, reverse=True)


def pretrain_base_path(
    *,
    corpus_dir: Path,
    data_dir: Path,
    settings: PretrainSettings = PretrainSettings(),
    exclude_ids: frozenset[str] = frozenset(),
) -> Path:
    """Where :func:`pretrain_base` keeps (or would keep) this base: the ``offline-ssl`` base's
    file, which exists once ``ie pretrain`` has made it. Trains nothing."""
    index = CorpusIndex.load(corpus_dir)
    key = pretrain_key(settings, index, exclude_ids)
    return data_dir / "pretrain" / f"base-{key}-{settings.steps}.pt"


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
    ckpt = folder / f"base-{key}-{settings.steps}.pt"
    if ckpt.is_file():
        if say is not None:
            say(f"base model: cached {ckpt}")
        return ckpt
    shorter = _shorter_states(folder, key, settings.steps)
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
    partial = folder / f"base-{key}-{settings.steps}.partial.pt"
    start = shorter[0] if shorter else None
    losses = train_resumable(trainer, sample, settings.steps, partial=partial, start=start,
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
        "continued_from_steps": _state_steps(start) if start is not None else None,
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
    if partial.is_file():  # its last save is the final state: kept, for a longer base later
        os.replace(partial, folder / f"base-{key}-{settings.steps}.state.pt")
    if say is not None:
        say(f"base model: saved {ckpt} ({meta['train_seconds']} s, loss "
            f"{meta['loss_first']:.3f} -> {meta['loss_last10']:.3f})")
    return ckpt


__all__ = ["PretrainSettings", "corpus_pixels", "decode_item", "pretrain_base",
           "pretrain_base_path", "pretrain_key", "train_resumable"]
