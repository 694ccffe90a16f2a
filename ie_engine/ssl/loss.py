"""MoCo v3's symmetric contrastive loss.

lightly's ``NTXentLoss`` without a memory bank is SimCLR's loss: its negatives include the other
samples of the *same* view (a ``2B x (2B - 1)`` logit matrix), and it has no ``2T`` factor, so it
does not match MoCo v3, whose negatives are the keys of the other view only. Hence this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's ``ctr(q, k)``: InfoNCE of each query against all keys of the batch.

    ``q``, ``k``: ``(B, P)`` (any norm; both are L2-normalised here). Query ``i``'s positive is key
    ``i``; the other ``B - 1`` keys are its negatives. Returns a scalar:
    ``CrossEntropy(q_n @ k_n.T / T, arange(B)) * 2T`` (the ``2T`` factor, from MoCo v3, makes the
    gradient scale independent of the temperature). Computed in float32.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be (B, P); got {tuple(q.shape)} and {tuple(k.shape)}")
    qn = F.normalize(q.float(), dim=1)
    kn = F.normalize(k.float(), dim=1)
    logits = qn @ kn.T / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


def symmetric_loss(q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, temperature: float) -> Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``; all inputs ``(B, P)``, queries from the predictor of the
    online network, keys from the momentum encoder (no gradient). Returns a scalar."""
    return contrastive_loss(q1, k2, temperature) + contrastive_loss(q2, k1, temperature)


__all__ = ["contrastive_loss", "symmetric_loss"]
