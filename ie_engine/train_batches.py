"""What the trainer sees in an iteration: the web pool (new images plus replay) and batches
that mix a fixed share of target images with web images, from pixels read once per run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ie_engine.imaging import to_uint8_tensor_batch

BatchSampler = Callable[[int, torch.Generator], torch.Tensor]


def training_pool(new_ids: list[int], replay_ids: list[int], *, pcr: float,
                  rng: np.random.Generator) -> list[int]:
    """This iteration's web images: all ``new_ids`` plus ``replay_ids`` (earlier iterations'
    kept images) sampled at ``pcr`` times the number of new ones."""
    n_old = min(len(replay_ids), round(pcr * max(1, len(new_ids))))
    old = rng.choice(replay_ids, size=n_old, replace=False).tolist() if n_old else []
    return new_ids + [int(i) for i in old]


def batch_sampler(target: torch.Tensor, pool_pixels: torch.Tensor | None, *, batch_size: int,
                  target_fraction: float) -> BatchSampler:
    """A batch maker: ``target_fraction`` of each batch (at least 2) from ``target`` (uint8
    (T, 3, S, S)), the rest from ``pool_pixels``; without a pool (target-only) the batch is
    the target share alone."""
    n_target = max(2, round(batch_size * target_fraction))
    n_web = batch_size - n_target if pool_pixels is not None and len(pool_pixels) else 0

    def sample(step: int, gen: torch.Generator) -> torch.Tensor:
        t_idx = torch.randint(len(target), (n_target,), generator=gen)
        parts = [target[t_idx]]
        if n_web and pool_pixels is not None:
            w_idx = torch.randint(len(pool_pixels), (n_web,), generator=gen)
            parts.append(pool_pixels[w_idx])
        return torch.cat(parts)

    return sample


class PixelCache:
    """uint8 (3, S, S) pixels of a run's stored images by image id, each read from disk once."""

    def __init__(self, run_dir: Path, size: int) -> None:
        self.run_dir = run_dir
        self.size = size
        self._pixels: dict[int, np.ndarray] = {}

    def stack(self, ids: list[int], paths: Callable[[int], str]) -> torch.Tensor:
        """(len(ids), 3, S, S) uint8; ``paths(id)``: the image's path in the run folder."""
        for i in ids:
            if i not in self._pixels:
                with Image.open(self.run_dir / paths(i)) as im:
                    arr = np.asarray(im.convert("RGB"))
                self._pixels[i] = to_uint8_tensor_batch([arr], self.size)[0]
        return torch.from_numpy(np.stack([self._pixels[i] for i in ids]))

    def clear(self) -> None:
        self._pixels.clear()
