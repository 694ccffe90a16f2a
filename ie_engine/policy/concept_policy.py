"""The concept policy: observed rewards in, a sampling distribution over the vocabulary out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ie_engine.config import PolicyConfig
from ie_engine.policy.gp import (
    Prediction,
    default_kernel,
    fit_gp,
    fit_predict_ridge,
    nearest_neighbour_distance,
    predict_gp,
)
from ie_engine.policy.sampler import concept_distribution, sample_concepts


@dataclass
class Distribution:
    """The policy's view at one moment, per concept (all arrays of shape (N,))."""

    mu: np.ndarray
    sigma: np.ndarray
    probability: np.ndarray
    tier: np.ndarray
    model: str  # "prior", "gp" or "ridge"


class ConceptPolicy:
    """Predicts each concept's reward from the rewards observed so far and samples queries.

    Observations are kept per concept; a concept queried several times is fitted on its mean
    reward (its noise shrinks with the count), so the GP's size is the number of distinct
    concepts observed. A vetoed concept gets probability zero and, as a negative observation
    (the lowest reward seen, unless ``veto_reward`` is set), pulls its neighbours down too.
    """

    def __init__(self, embeddings: np.ndarray, config: PolicyConfig, *, seed: int = 0) -> None:
        """embeddings: (N, D) unit rows, one per concept of the vocabulary."""
        self.embeddings = embeddings
        self.config = config
        self.seed = seed
        self.observations: dict[int, list[float]] = {}
        self.vetoed: set[int] = set()
        self.allowed_mask: np.ndarray | None = None  # label-set restriction, (N,) bool
        self._kernel: Any = None  # the last fitted GP kernel: the next fit starts from it
        self._kernel_n = 0  # how many live observed concepts it was fitted on
        self._min_length: float | None = None  # the length-scale floor, once computed

    # ------------------------------------------------------------------ observations and vetoes
    def observe(self, concept_indices: list[int], rewards: list[float]) -> None:
        for i, r in zip(concept_indices, rewards, strict=True):
            if not np.isfinite(r):
                continue
            self.observations.setdefault(int(i), []).append(float(r))

    def veto(self, indices: list[int]) -> None:
        self.vetoed.update(int(i) for i in indices)

    def unveto(self, indices: list[int]) -> None:
        self.vetoed.difference_update(int(i) for i in indices)

    def extend(self, embeddings: np.ndarray) -> None:
        """Append concepts (their embeddings, (n, D)) to the end of the vocabulary."""
        self.embeddings = np.concatenate([np.asarray(self.embeddings), embeddings.astype(
            np.float32)])
        if self.allowed_mask is not None:
            self.allowed_mask = np.concatenate(
                [self.allowed_mask, np.ones(len(embeddings), dtype=bool)])

    def restrict(self, allowed: np.ndarray) -> None:
        """Only these concept indices may be sampled (label-set mode)."""
        mask = np.zeros(self.embeddings.shape[0], dtype=bool)
        mask[allowed] = True
        self.allowed_mask = mask

    @property
    def n_observations(self) -> int:
        return sum(len(v) for v in self.observations.values())

    def _training_set(self, negatives: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct observed concepts (and vetoed ones as negatives, if ``negatives``) with their
        mean rewards, and a mask of the rows that are real observations (False for the vetoes'
        floors). Without ``negatives``, vetoed concepts keep what was observed of them."""
        rewards = {i: float(np.mean(v)) for i, v in self.observations.items()}
        vetoed = self.vetoed if negatives else set()
        real = {i for i in rewards if i not in vetoed}
        if vetoed and real:
            # The lowest reward observed among the live concepts.
            floor = (
                self.config.veto_reward
                if self.config.veto_reward is not None
                else min(rewards[i] for i in real)
            )
            for i in vetoed:
                rewards[i] = floor
        idx = np.array(sorted(rewards), dtype=np.int64)
        y = np.array([rewards[int(i)] for i in idx], dtype=np.float64)
        mask = np.array([int(i) in real for i in idx], dtype=bool)
        return idx, y, mask

    # ------------------------------------------------------------------ prediction
    def predict(self, *, negatives: bool = True) -> tuple[Prediction, str]:
        """Predicted (mu, sigma) for every concept, and which model produced it.

        ``negatives=False``: as if the vetoes had not been fed to the policy as observations
        (with the last fitted hyper-parameters, which this does not change): what a veto's
        negative observation did is the difference."""
        n = self.embeddings.shape[0]
        idx, y, real = self._training_set(negatives)
        if not real.any():
            # No live observation (none yet, or only vetoed ones): nothing to regress on.
            idx, y = idx[:0], y[:0]
        if idx.size == 0:
            prior = self.config.prior_reward
            return Prediction(np.full(n, prior, np.float32), np.ones(n, np.float32)), "prior"
        x_train = np.asarray(self.embeddings[idx], dtype=np.float32)
        if idx.size > self.config.gp_max_observations:
            pred = fit_predict_ridge(x_train, y, self.embeddings, alpha=self.config.ridge_alpha)
            return pred, "ridge"
        if real.sum() == 1 or float(np.ptp(y[real])) == 0.0:
            # Nothing to regress on yet: a flat prior at the observed level, uncertainty 1.
            pred = Prediction(np.full(n, y[real].mean(), np.float32), np.ones(n, np.float32))
            pred.sigma[idx] = 0.0
            return pred, "prior"
        # The hyper-parameters depend on the live observations only, and are fitted again once
        # those have grown enough: a veto, or the dashboard asking again, reuses them.
        n_live = int(real.sum())
        grown = max(self._kernel_n * (1.0 + self.config.gp_refit_growth), self._kernel_n + 1)
        refit = self._kernel is None or (n_live >= grown and negatives)
        gp = fit_gp(x_train, y, noise=self.config.gp_noise, seed=self.seed, init=self._kernel,
                    fit_rows=np.flatnonzero(real), fixed=None if refit else self._kernel,
                    min_length=self.min_length_scale())
        if refit and negatives:
            self._kernel, self._kernel_n = gp.kernel, n_live
        pred = predict_gp(
            gp, self.embeddings, exact_variance_max=self.config.gp_exact_variance_max,
            seed=self.seed,
        )
        return pred, "gp"

    def min_length_scale(self) -> float:
        """The lower bound of the GP's fitted RBF length-scale: ``gp_min_length_scale``, or
        when that is None, the median distance from a concept to its nearest neighbour in the
        vocabulary (computed once). Below it a concept's reward says nothing about any other
        concept, and the GP predicts its prior for everything unqueried."""
        if self._min_length is None:
            floor = self.config.gp_min_length_scale
            self._min_length = float(floor) if floor is not None else (
                nearest_neighbour_distance(np.asarray(self.embeddings), seed=self.seed))
        return self._min_length

    def distribution(self, *, negatives: bool = True) -> Distribution:
        """The current sampling distribution (vetoed and restricted concepts at zero).

        ``negatives=False``: vetoed concepts are left out, but not fed to the policy as negative
        observations (see :meth:`predict`)."""
        pred, model = self.predict(negatives=negatives)
        allowed = np.ones(self.embeddings.shape[0], dtype=bool)
        if self.allowed_mask is not None:
            allowed &= self.allowed_mask
        if self.vetoed:
            allowed[list(self.vetoed)] = False
        # Seeded keys that order tied scores (a prefix of the same stream for every size, so
        # concepts added mid-run keep the others' keys).
        tiebreak = np.random.default_rng([self.seed, 1]).random(allowed.size)
        probs, tiers = concept_distribution(pred.mu + pred.sigma, allowed, self.config,
                                            tiebreak=tiebreak)
        return Distribution(pred.mu, pred.sigma, probs, tiers, model)

    def sample(self, dist: Distribution, m: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``m`` distinct concepts from ``dist``."""
        return sample_concepts(dist.probability, m, rng)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "observations": {str(k): list(v) for k, v in self.observations.items()},
            "vetoed": sorted(self.vetoed),
            "allowed": None if self.allowed_mask is None else np.flatnonzero(self.allowed_mask),
            "gp_theta": None if self._kernel is None else self._kernel.theta.tolist(),
            "gp_fitted_on": self._kernel_n,
            # The floor costs seconds to compute over a large vocabulary: kept, not recomputed.
            "gp_min_length": self._min_length,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.observations = {int(k): list(v) for k, v in state["observations"].items()}
        self.vetoed = set(int(i) for i in state["vetoed"])
        allowed = state.get("allowed")
        self.allowed_mask = None
        if allowed is not None:
            self.restrict(np.asarray(allowed, dtype=np.int64))
        floor = state.get("gp_min_length")  # absent in checkpoints of earlier versions
        if floor is not None and self.config.gp_min_length_scale is None:
            self._min_length = float(floor)
        theta = state.get("gp_theta")  # absent in checkpoints of earlier versions: refitted
        if theta is None:
            self._kernel = None
        else:  # within the bounds (a checkpoint of a version without the floor may be below)
            template = default_kernel(self.config.gp_noise, self.min_length_scale())
            bounds = template.bounds
            self._kernel = template.clone_with_theta(
                np.clip(np.asarray(theta, dtype=np.float64), bounds[:, 0], bounds[:, 1]))
        self._kernel_n = int(state.get("gp_fitted_on", 0)) if theta is not None else 0
