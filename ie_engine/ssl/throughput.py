"""The trainer's yardstick: images per second of a minimal loop with the same network.

Measured, ``cpu-small`` preset (ResNet-18 with the stride-2 small stem, 64 px, batch 64) on 2
shared CPU cores that other jobs kept busy (load 4-6): 3.3 s per step at the quietest (an early
timing of the same network step), typically 7-12 s with one torch thread and 13-22 s with
torch's default two (thread oversubscription on a busy machine). Augmentation took 50-105 ms of
a step; against :func:`bare_train_throughput`, steps interleaved one by one, the ratio was 1.10
over 8 steps (load noise dominates; the trainer's own overhead - sampling, augmentation, the
loss check - is about 1% of a step).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ie_engine.config import TrainConfig
from ie_engine.ssl.augment import TwoViewAugment
from ie_engine.ssl.step import (
    _check_config,
    _loss,
    _Precision,
    build_model,
    build_optimizer,
    resolve_device,
)


def _repeat_to(images: Tensor, n: int) -> Tensor:
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n]


def bare_train_throughput(
    config: TrainConfig, images: Tensor, steps: int, *, seed: int = 0, warmup: int = 1
) -> float:
    """Images per second of a minimal PyTorch loop with the same network, loss and optimiser.

    ``images``: uint8 ``(N, 3, H, W)``, repeated or cut to ``config.batch_size``. Two views are
    augmented once, before timing, and reused at every step: the loop is forward, loss,
    backward, optimiser step and momentum update only - no data sampling, no augmentation, no
    loss check, no progress. Counts source images (``batch_size`` per step) like
    :attr:`TrainStats.images_per_second`. ``warmup`` untimed steps come first (first-call
    allocations, cuDNN autotuning), so compare with a :meth:`SSLTrainer.train` call made after a
    warm-up call: ``stats.images_per_second / bare_train_throughput(...)`` is then the trainer's
    steady-state efficiency.
    """
    _check_config(config)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    prec = _Precision(device, config)
    model = build_model(config, seed).to(device)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = build_optimizer(model, config)
    batch = _repeat_to(images, config.batch_size).to(device)
    generator = torch.Generator().manual_seed(seed)
    augment = TwoViewAugment(config.image_size, min_crop_area=config.min_crop_area,
                             mean=config.input_mean, std=config.input_std)
    v1, v2 = augment(batch, generator)
    views = (prec.prepare(v1), prec.prepare(v2))
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            prec.sync()
            start = time.perf_counter()
        with prec.autocast():
            loss = _loss(model, views[0], views[1], config.momentum_encoder, config.temperature)
        optimizer.zero_grad(set_to_none=True)
        prec.scaler.scale(loss).backward()
        prec.scaler.step(optimizer)
        prec.scaler.update()
    prec.sync()
    seconds = time.perf_counter() - start
    return steps * config.batch_size / seconds


__all__ = ["bare_train_throughput"]
