"""From predicted scores to a sampling distribution: softmax range, then tiers (METHOD.md, 8)."""

from __future__ import annotations

import numpy as np

from ie_engine.config import PolicyConfig


def scaled_tier_sizes(config: PolicyConfig, n_concepts: int) -> tuple[int, int]:
    """The top two tier sizes for a vocabulary of ``n_concepts``, scaled from the paper's.

    The paper's 250 and 750 (of 146,347 concepts, 256 queries an iteration) are scaled by the
    larger of two shares: the vocabulary's (``n_concepts`` / 146,347) and the queries' (M / 256).
    Both are 1 at the paper's setting. The second keeps the top tier about M concepts wide in a
    small vocabulary: scaled by the vocabulary alone, 150 concepts left a top tier of one
    concept holding 80% of the mass, so a veto of it handed that share to whichever concept came
    next - typically its nearest neighbour (measured). At least one concept each, never more
    than the vocabulary holds.
    """
    share = max(n_concepts / config.reference_vocabulary_size,
                config.queries_per_iteration / config.reference_queries_per_iteration)
    top = max(1, round(config.tier_sizes[0] * share))
    middle = max(1, round(config.tier_sizes[1] * share))
    top = min(top, n_concepts)
    middle = min(middle, n_concepts - top)
    return top, middle


def softmax_range(scores: np.ndarray, smr: float) -> np.ndarray:
    """Softmax whose temperature makes max(p) / min(p) = e^smr exactly (uniform if flat).

    scores: (N,) -> probabilities (N,), float64, summing to 1.
    """
    s = scores.astype(np.float64)
    spread = float(s.max() - s.min()) if s.size else 0.0
    if s.size == 0:
        return s
    if spread <= 1e-12:
        return np.full(s.shape, 1.0 / s.size)
    logits = (s - s.max()) * (smr / spread)
    p = np.exp(logits)
    return p / p.sum()


def concept_distribution(
    scores: np.ndarray, allowed: np.ndarray, config: PolicyConfig,
    tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling probabilities over all concepts and each concept's tier.

    scores: (N,) predicted scores (mu + sigma); allowed: (N,) bool, False for vetoed concepts.
    Returns (probabilities (N,) float64 summing to 1 with zeros where not allowed,
    tiers (N,) int8: 0 top, 1 middle, 2 rest, -1 not allowed).

    ``tiebreak``: (N,) keys that order concepts whose scores are equal (to one part in 10^6 of
    the spread), lowest first; by default the vocabulary order. Far from every observation an RBF
    GP predicts its prior for thousands of concepts at once; ordered by the vocabulary, the top
    tier then filled with one contiguous block of it (numbers, ferns: measured), so the policy
    passes seeded random keys.

    Within a tier, probabilities follow the softmax-range weights; tiers then receive their mass
    (80/10/10). A tier that is empty gives its mass to the tiers that are not, pro rata. When all
    allowed scores are equal the distribution is uniform (and every concept is in tier 2).
    """
    n = scores.shape[0]
    probs = np.zeros(n, dtype=np.float64)
    tiers = np.full(n, -1, dtype=np.int8)
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        return probs, tiers
    sub = scores[idx]
    flat = float(sub.max() - sub.min()) <= 1e-12
    weights = softmax_range(sub, config.softmax_range)
    # Scores equal to within 1e-6 of the spread tie (float32 round-off separates many of the
    # GP's prior-level predictions by a few ulps); ties go by ``tiebreak``, then vocabulary order.
    spread = float(sub.max() - sub.min())
    level = np.floor((sub.astype(np.float64) - float(sub.min())) / max(spread * 1e-6, 1e-300))
    keys = np.zeros(idx.size) if tiebreak is None else tiebreak[idx]
    order = idx[np.lexsort((keys, -level))]
    top, middle = scaled_tier_sizes(config, idx.size)
    groups = [order[:top], order[top : top + middle], order[top + middle :]]
    masses = np.array(config.tier_mass, dtype=np.float64)
    present = np.array([g.size > 0 for g in groups])
    masses = np.where(present, masses, 0.0)
    masses /= masses.sum()
    w_full = np.zeros(n, dtype=np.float64)
    w_full[idx] = weights
    for tier, (group, mass) in enumerate(zip(groups, masses, strict=True)):
        if group.size == 0:
            continue
        w = w_full[group]
        probs[group] = mass * w / w.sum()
        tiers[group] = tier
    if flat:
        # Nothing tells concepts apart yet (first iteration): tiers would favour whatever comes
        # first in the vocabulary, so sample uniformly instead.
        probs[idx] = 1.0 / idx.size
        tiers[idx] = 2
    return probs / probs.sum(), tiers


def sample_concepts(probs: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``m`` distinct concepts (fewer if fewer have non-zero probability), in draw order."""
    available = int((probs > 0).sum())
    m = min(m, available)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(probs.shape[0], size=m, replace=False, p=probs)
