"""Frozen-feature evaluation: cosine kNN accuracy and a logistic-regression linear probe.

Inputs are a float array ``features`` of shape ``(N, D)`` (one row per image, normally the unit
rows of :meth:`ie_engine.ssl.trainer.SSLTrainer.embed`; rows are L2-normalised again here, a
no-op for unit rows) and ``N`` labels (any hashable values: class names, integers).

kNN rule: the ``k`` most cosine-similar images vote, one vote each. A tie between labels is
broken in favour of the tied label whose best-ranked voter is nearest (so ``k = 1`` is the
nearest-neighbour rule, and when the nearest neighbour's label is among the tied ones, it wins).
Equal similarities are ranked by lower index.

Repeated splits are stratified: each class with ``n >= 2`` images puts
``min(n - 1, max(1, round(n * test_fraction)))`` of them in the test part, so every tested class
is also present in training; a class with a single image goes to training only (it can still be
predicted, wrongly, for other images). Means and standard deviations are over the repeats
(sample standard deviation, ``ddof=1``; 0.0 for a single repeat).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

_BLOCK = 1024  # query rows per similarity block (bounds memory at 1024 x N floats)


def _prepare(
    features: NDArray[np.floating] | Sequence[Sequence[float]], labels: Sequence[Hashable]
) -> tuple[NDArray[np.float32], NDArray[np.int64], int]:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    if len(labels) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} feature rows but {len(labels)} labels")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = (x / np.where(norms > 0, norms, np.float32(1.0))).astype(np.float32, copy=False)
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(label, len(index)) for label in labels], dtype=np.int64)
    return x, codes, len(index)


def _nearest(sims: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Column indices of the ``k`` largest entries of each row of ``sims`` ``(b, n)``, best
    first, equal values by lower index. Returns ``(b, k)``."""
    n = sims.shape[1]
    if k < n:
        cand = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(n), sims.shape).copy()
    vals = np.take_along_axis(sims, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)  # primary key: -similarity, then index
    return np.take_along_axis(cand, order, axis=1).astype(np.int64)


def _vote(neighbour_codes: NDArray[np.int64], n_classes: int) -> NDArray[np.int64]:
    """Majority label of each row of ``neighbour_codes`` ``(b, k)`` (best neighbour first);
    ties go to the tied label that appears first in the row. Returns ``(b,)``."""
    b, k = neighbour_codes.shape
    rows = np.arange(b)
    counts = np.zeros((b, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(rows, k), neighbour_codes.ravel()), 1)
    best = counts.max(axis=1, keepdims=True)
    is_top = (counts == best)[rows[:, None], neighbour_codes]  # (b, k)
    first = np.argmax(is_top, axis=1)
    result: NDArray[np.int64] = neighbour_codes[rows, first]
    return result


def _knn_predict(
    train_x: NDArray[np.float32],
    train_codes: NDArray[np.int64],
    query_x: NDArray[np.float32],
    n_classes: int,
    k: int,
    exclude_offset: int | None = None,
) -> NDArray[np.int64]:
    """Predicted codes for ``query_x`` ``(q, D)`` from ``train_x`` ``(n, D)``; with
    ``exclude_offset`` set, query ``i`` is train row ``exclude_offset + i`` and skips itself."""
    out = np.empty(query_x.shape[0], dtype=np.int64)
    for start in range(0, query_x.shape[0], _BLOCK):
        block = query_x[start : start + _BLOCK]
        sims = block @ train_x.T
        if exclude_offset is not None:
            rows = np.arange(block.shape[0])
            sims[rows, exclude_offset + start + rows] = -np.inf
        nbr = _nearest(sims, k)
        out[start : start + block.shape[0]] = _vote(train_codes[nbr], n_classes)
    return out


def knn_accuracy(
    features: NDArray[np.floating],
    labels: Sequence[str | int],
    *,
    k: int = 5,
    mode: Literal["loo"] = "loo",
) -> float:
    """Leave-one-out cosine kNN accuracy of ``features`` ``(N, D)`` with ``labels`` (``N``).

    Each image is classified by the majority label of its ``k`` nearest *other* images
    (``k`` is capped at ``N - 1``; tie rule in the module docstring). Needs ``N >= 2``.
    """
    if mode != "loo":
        raise ValueError(f"unknown mode {mode!r}; only 'loo' is supported")
    if k < 1:
        raise ValueError("k must be at least 1")
    x, codes, n_classes = _prepare(features, labels)
    n = x.shape[0]
    if n < 2:
        raise ValueError("leave-one-out kNN needs at least 2 images")
    pred = _knn_predict(x, codes, x, n_classes, min(k, n - 1), exclude_offset=0)
    return float(np.mean(pred == codes))


def stratified_split(
    codes: NDArray[np.int64], test_fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Random stratified ``(train_indices, test_indices)`` of integer class codes ``(N,)``.

    The per-class rule (singletons to training) is in the module docstring. Raises
    ``ValueError`` when no class has two images (nothing could be tested).
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    train: list[NDArray[np.int64]] = []
    test: list[NDArray[np.int64]] = []
    for c in np.unique(codes):
        idx = rng.permutation(np.flatnonzero(codes == c))
        n = idx.size
        n_test = 0 if n < 2 else min(n - 1, max(1, round(n * test_fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    test_idx = np.sort(np.concatenate(test)).astype(np.int64)
    if test_idx.size == 0:
        raise ValueError("every class has a single image: nothing to test")
    return np.sort(np.concatenate(train)).astype(np.int64), test_idx


def _mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd


def knn_accuracy_splits(
    features: NDArray[np.floating],
    labels: Sequence[str | int],
    *,
    k: int = 5,
    repeats: int = 10,
    test_fraction: float = 0.5,
    seed: int,
) -> tuple[float, float]:
    """Cosine kNN accuracy over ``repeats`` random stratified train/test splits.

    ``features`` ``(N, D)``, ``labels`` (``N``). Test images are classified by their ``k``
    nearest training images (``k`` capped at the training size). Returns ``(mean, sd)``.
    """
    if k < 1 or repeats < 1:
        raise ValueError("k and repeats must be at least 1")
    x, codes, n_classes = _prepare(features, labels)
    rng = np.random.default_rng(seed)
    accs: list[float] = []
    for _ in range(repeats):
        tr, te = stratified_split(codes, test_fraction, rng)
        pred = _knn_predict(x[tr], codes[tr], x[te], n_classes, min(k, tr.size))
        accs.append(float(np.mean(pred == codes[te])))
    return _mean_sd(accs)


def linear_probe_accuracy(
    features: NDArray[np.floating],
    labels: Sequence[str | int],
    *,
    seed: int,
    repeats: int = 5,
    test_fraction: float = 0.5,
    max_iter: int = 1000,
) -> tuple[float, float]:
    """Linear-probe accuracy over ``repeats`` random stratified splits; returns ``(mean, sd)``.

    Per split: features ``(N, D)`` are standardised with the training part's statistics, then a
    multinomial L2-regularised ``LogisticRegression`` (C = 1, lbfgs) is fitted. A training part
    with a single class predicts that class. Convergence warnings are silenced (the probe is
    a measurement, stopped after ``max_iter`` iterations).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    x, codes, _ = _prepare(features, labels)
    rng = np.random.default_rng(seed)
    accs: list[float] = []
    for r in range(repeats):
        tr, te = stratified_split(codes, test_fraction, rng)
        train_codes = codes[tr]
        if np.unique(train_codes).size == 1:
            pred = np.full(te.size, train_codes[0])
        else:
            scaler = StandardScaler().fit(x[tr])
            clf = LogisticRegression(max_iter=max_iter, random_state=seed + r)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(scaler.transform(x[tr]), train_codes)
            pred = clf.predict(scaler.transform(x[te]))
        accs.append(float(np.mean(pred == codes[te])))
    return _mean_sd(accs)


__all__ = ["knn_accuracy", "knn_accuracy_splits", "linear_probe_accuracy", "stratified_split"]
