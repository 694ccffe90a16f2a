"""The benchmark's measurements, each a small pure function checked against hand computations.

* :func:`relevant_precision`: share of images that are relevant to any target class;
* :func:`reward_auroc`: how well the image reward ranks relevant web images above the others;
* :func:`knn_loo_predictions`: leave-one-out kNN predictions (the rule of
  :func:`ie_engine.evaluate.knn_accuracy`, which returns only the accuracy), for paired tests;
* :func:`mcnemar_exact`: McNemar's exact test on paired right/wrong outcomes;
* :func:`first_found`: the first iteration at which each class had a relevant download;
* :func:`mean_sd`: mean and sample standard deviation that tolerate missing values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score


def relevant_precision(relevant: Sequence[bool]) -> float | None:
    """Share of ``True`` in ``relevant``; None for an empty sequence (nothing downloaded)."""
    if len(relevant) == 0:
        return None
    return float(np.mean(np.asarray(relevant, dtype=bool)))


def reward_auroc(rewards: Sequence[float], relevant: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``rewards`` as a score for ``relevant`` (ties count half).

    None when undefined: fewer than one relevant and one irrelevant image, or no finite reward.
    Non-finite rewards are dropped with their labels.
    """
    r = np.asarray(rewards, dtype=np.float64)
    y = np.asarray(relevant, dtype=bool)
    if r.shape != y.shape:
        raise ValueError(f"{r.shape[0]} rewards but {y.shape[0]} relevance labels")
    keep = np.isfinite(r)
    r, y = r[keep], y[keep]
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, r))


def knn_loo_predictions(
    features: NDArray[np.floating], labels: Sequence[str], *, k: int
) -> list[str]:
    """Leave-one-out cosine kNN prediction for every row of ``features`` ``(N, D)``.

    Same rule as :func:`ie_engine.evaluate.knn_accuracy`: the ``k`` most similar *other* rows
    vote (equal similarities ranked by lower index); a tie between labels goes to the tied label
    whose best-ranked voter is nearest. ``k`` is capped at ``N - 1``.
    """
    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if n < 2 or len(labels) != n:
        raise ValueError("need at least 2 rows and one label per row")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = (x / np.where(norms > 0, norms, np.float32(1.0))).astype(np.float32)
    kk = min(k, n - 1)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    # Rank by similarity (descending), then by index: lexsort's last key is the primary one.
    idx = np.broadcast_to(np.arange(n), (n, n))
    order = np.lexsort((idx, -sims), axis=1)[:, :kk]
    out: list[str] = []
    for row in order:
        votes: dict[str, int] = {}
        for j in row:
            votes[labels[int(j)]] = votes.get(labels[int(j)], 0) + 1
        best = max(votes.values())
        out.append(next(labels[int(j)] for j in row if votes[labels[int(j)]] == best))
    return out


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of arm A against arm B on the same images.

    ``a_only``: images A gets right and B wrong; ``b_only``: the reverse; ``p_value``: two-sided
    exact binomial test of ``a_only`` out of ``a_only + b_only`` at 1/2 (1.0 when there is no
    discordant pair).
    """

    a_only: int
    b_only: int
    both: int
    neither: int
    p_value: float


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Paired right/wrong outcomes of two arms on the same images (pool seeds by concatenating
    the per-seed pairs)."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("the two arms must be scored on the same images")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return McNemar(a_only, b_only, int(np.sum(a & b)), int(np.sum(~a & ~b)), p)


def first_found(
    iterations: Sequence[int], classes_of_image: Sequence[Iterable[str]], class_names: Iterable[str]
) -> dict[str, int | None]:
    """For each class, the first iteration with a download relevant to it (None if never).

    ``iterations[i]`` is image ``i``'s iteration and ``classes_of_image[i]`` the classes it is
    relevant to.
    """
    found: dict[str, int | None] = {c: None for c in class_names}
    for it, classes in zip(iterations, classes_of_image, strict=True):
        for c in classes:
            if c in found:
                prev = found[c]
                found[c] = it if prev is None else min(prev, it)
    return found


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; 0.0 for one value) of the finite values;
    ``(None, None)`` when there is none."""
    arr = np.array(
        [v for v in values if v is not None and math.isfinite(v)], dtype=np.float64
    )
    if arr.size == 0:
        return None, None
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


__all__ = [
    "McNemar",
    "first_found",
    "knn_loo_predictions",
    "mcnemar_exact",
    "mean_sd",
    "relevant_precision",
    "reward_auroc",
]
