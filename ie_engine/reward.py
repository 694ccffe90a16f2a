"""Image and concept rewards, and the replay buffer (METHOD.md, steps 4-6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def image_rewards(
    web: torch.Tensor, target: torch.Tensor, *, k: int, chunk: int = 4096
) -> torch.Tensor:
    """Mean cosine similarity of each web image to its ``k`` nearest target images.

    web: (M, D) and target: (T, D) L2-normalised features -> (M,) float32 rewards.
    ``k`` is capped at T. k = 1 would reward outliers that sit next to a single target image;
    the paper uses 15.
    """
    if web.shape[0] == 0:
        return torch.zeros(0)
    kk = min(k, target.shape[0])
    out = torch.empty(web.shape[0], dtype=torch.float32)
    tgt = target.float()
    for start in range(0, web.shape[0], chunk):
        sims = web[start : start + chunk].float() @ tgt.T  # (c, T)
        out[start : start + chunk] = sims.topk(kk, dim=1).values.mean(1)
    return out


def whitener(reference: torch.Tensor, *, shrink: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """PCA whitening fitted on ``reference`` (R, D) features: returns a map from (N, D) features
    to (N, min(R, D)) unit rows, centred on the reference mean and with each principal direction
    divided by its singular value plus ``shrink`` times their mean.

    Backbone features after a ReLU and pooling are all positive and share a large common
    direction, so plain cosine similarity is high between any two images; centred and whitened
    on a sample of the web, similarity measures what two images share *beyond* what every web
    image shares. Shrinkage keeps directions the reference barely spans from being blown up."""
    ref = reference.float()
    mean = ref.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    scale = vh.T / (s + shrink * s.mean()).clamp_min(1e-12)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.normalize((x.float() - mean) @ scale, dim=1)

    return apply


def concept_rewards(
    concept_of_image: list[int],
    rewards: np.ndarray,
    queried: list[int],
    *,
    top: int,
    min_results: int,
) -> dict[int, float]:
    """Reward of each queried concept: the mean of its ``top`` best image rewards.

    concept_of_image: (M,) concept index per image; rewards: (M,) image rewards; queried: every
    concept queried this iteration. A concept whose query yielded fewer than ``min_results``
    usable images scores as *empty*: it gets the lowest reward of this iteration's non-empty
    concepts (0.0 if none), so the policy learns to avoid it without an off-scale outlier.
    """
    per: dict[int, list[float]] = {}
    for c, r in zip(concept_of_image, rewards.tolist(), strict=True):
        per.setdefault(int(c), []).append(float(r))
    out: dict[int, float] = {}
    for c, rs in per.items():
        if len(rs) >= min_results:
            out[c] = float(np.mean(sorted(rs, reverse=True)[:top]))
    floor = min(out.values()) if out else 0.0
    for c in queried:
        out.setdefault(int(c), floor)
    return out


@dataclass
class ReplayEntry:
    """One web image kept for later iterations."""

    image_id: int  # index into the run's image table
    concept_index: int
    iteration: int
    reward: float


class ReplayBuffer:
    """The top share of each iteration's images, by reward; vetoed concepts' images leave it."""

    def __init__(self, keep_fraction: float) -> None:
        self.keep_fraction = keep_fraction
        self.entries: list[ReplayEntry] = []

    def add_iteration(self, entries: list[ReplayEntry]) -> list[ReplayEntry]:
        """Keep the best ``keep_fraction`` of ``entries`` (at least one if any); return them."""
        if not entries:
            return []
        n_keep = max(1, round(len(entries) * self.keep_fraction))
        # Ties broken by image id so the buffer is deterministic.
        kept = sorted(entries, key=lambda e: (-e.reward, e.image_id))[:n_keep]
        self.entries.extend(kept)
        return kept

    def remove_concepts(self, concepts: set[int]) -> int:
        """Drop every entry of these concepts (a veto); return how many left."""
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.concept_index not in concepts]
        return before - len(self.entries)

    def image_ids(self) -> list[int]:
        return [e.image_id for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def state_dict(self) -> dict[str, Any]:
        return {"keep_fraction": self.keep_fraction, "entries": [asdict(e) for e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keep_fraction = float(state["keep_fraction"])
        self.entries = [ReplayEntry(**e) for e in state["entries"]]
