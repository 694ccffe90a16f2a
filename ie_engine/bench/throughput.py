"""Throughput checks: the trainer against a bare PyTorch loop, the downloader against a minimal
fetch-decode-resize loop. Both compare two loops measured alternately in the same process, so
that load from other programs hits both alike; the best run of each counts."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from ie_engine.config import DownloadConfig, TrainConfig
from ie_engine.download_bench import compare_with_minimal, openclipart_sample
from ie_engine.ssl.trainer import SSLTrainer, bare_train_throughput


def measure_train_ratio(
    config: TrainConfig,
    target_pixels: np.ndarray,
    web_pixels: np.ndarray,
    *,
    target_fraction: float,
    steps: int,
    rounds: int,
) -> dict[str, Any]:
    """Images/s of :class:`SSLTrainer` fed like the explorer feeds it (a ``target_fraction``
    share of each batch from the target, the rest from web images, both uint8
    ``(N, 3, S, S)``), against :func:`bare_train_throughput` on the same network and batch.

    ``rounds`` alternations of ``steps`` steps each, after one untimed warm-up step of each
    loop. Returns ``trainer_ips`` and ``bare_ips`` (best round), ``ratio`` (best / best),
    ``median_ratio`` (median of the per-round ratios) and the per-round figures.
    """
    target = torch.from_numpy(np.ascontiguousarray(target_pixels))
    web = torch.from_numpy(np.ascontiguousarray(web_pixels))
    n_target = max(2, round(config.batch_size * target_fraction))
    n_web = config.batch_size - n_target

    def sample(_step: int, gen: torch.Generator) -> torch.Tensor:
        parts = [target[torch.randint(len(target), (n_target,), generator=gen)]]
        if n_web:
            parts.append(web[torch.randint(len(web), (n_web,), generator=gen)])
        return torch.cat(parts)

    trainer = SSLTrainer(config, seed=0)
    trainer.train(sample, 1)  # warm-up: first-call allocations
    bare_images = sample(0, torch.Generator().manual_seed(1))
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        t = trainer.train(sample, steps).images_per_second
        b = bare_train_throughput(config, bare_images, steps, seed=0, warmup=1)
        per_round.append({"trainer_ips": t, "bare_ips": b, "ratio": t / b})
    best_t = max(r["trainer_ips"] for r in per_round)
    best_b = max(r["bare_ips"] for r in per_round)
    return {
        "trainer_ips": round(best_t, 2),
        "bare_ips": round(best_b, 2),
        "ratio": round(best_t / best_b, 3),
        "median_ratio": round(statistics.median(r["ratio"] for r in per_round), 3),
        "steps": steps,
        "rounds": per_round,
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "arch": config.arch,
        "num_threads": config.num_threads,
    }


def measure_download_ratio(
    config: DownloadConfig, *, count: int, repeats: int = 2
) -> dict[str, Any]:
    """:func:`~ie_engine.download_bench.compare_with_minimal` on ``count`` OpenClipart PNGs from
    a loopback server, at the explorer's concurrency and stored size."""
    paths = openclipart_sample(count, max_pixels=config.max_pixels)
    result = compare_with_minimal(
        paths, concurrency=config.concurrency, stored_size=config.stored_size, repeats=repeats
    )
    return dict(result)


__all__ = ["measure_download_ratio", "measure_train_ratio"]
