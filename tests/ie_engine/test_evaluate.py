"""Tests of the kNN and linear-probe evaluation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from numpy.typing import NDArray

from ie_engine.evaluate import (
    knn_accuracy,
    knn_accuracy_splits,
    linear_probe_accuracy,
    stratified_split,
)


def unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def brute_force_loo(x: NDArray[np.float64], labels: list[str], k: int) -> float:
    """Leave-one-out kNN with plain loops: the documented rule, written naively."""
    n = len(labels)
    correct = 0
    for i in range(n):
        sims = [(float(np.dot(x[i], x[j])), j) for j in range(n) if j != i]
        sims.sort(key=lambda s: (-s[0], s[1]))
        voters = [labels[j] for _, j in sims[: min(k, n - 1)]]
        counts = Counter(voters)
        top = max(counts.values())
        pred = next(lab for lab in voters if counts[lab] == top)
        correct += pred == labels[i]
    return correct / n


def clusters(
    n_per_class: int, n_classes: int, dim: int, spread: float, seed: int
) -> tuple[NDArray[np.float64], list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 5
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    labels = [f"class-{c}" for c in range(n_classes) for _ in range(n_per_class)]
    return unit_rows(x), labels


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 200])
def test_knn_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    x = unit_rows(rng.normal(size=(60, 4)))
    labels = [str(v) for v in rng.integers(0, 3, size=60)]
    assert knn_accuracy(x, labels, k=k) == pytest.approx(brute_force_loo(x, labels, k))


def test_knn_tie_goes_to_the_nearest() -> None:
    # image 0's neighbours by similarity: 1 (label b), 2 (label a) -> a 1:1 tie, b is nearer
    x = unit_rows(np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [-1.0, 0.0]]))
    labels = ["a", "b", "a", "b"]
    # LOO with k=2: 0 -> {1:b, 2:a} -> b (wrong); 1 -> {0:a, 2:a} -> a (wrong);
    # 2 -> {1:b, 0:a} -> b (wrong); 3 -> {2:a, 1:b} -> a (wrong)
    assert knn_accuracy(x, labels, k=2) == 0.0
    assert knn_accuracy(x, labels, k=2) == brute_force_loo(x, labels, 2)


def test_knn_separable_is_perfect() -> None:
    x, labels = clusters(20, 4, 16, 0.1, seed=0)
    assert knn_accuracy(x, labels, k=5) == 1.0
    assert knn_accuracy_splits(x, labels, k=5, seed=0) == (1.0, 0.0)


def test_knn_random_labels_near_chance() -> None:
    rng = np.random.default_rng(1)
    x = unit_rows(rng.normal(size=(600, 16)))
    labels = list(rng.integers(0, 3, size=600))
    acc = knn_accuracy(x, labels, k=5)
    assert 0.25 < acc < 0.42
    mean, sd = knn_accuracy_splits(x, labels, k=5, repeats=5, seed=1)
    assert 0.25 < mean < 0.42 and sd >= 0


def test_knn_inputs_checked() -> None:
    x = unit_rows(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError):
        knn_accuracy(x, ["a"] * 4)
    with pytest.raises(ValueError):
        knn_accuracy(x[:1], ["a"])
    with pytest.raises(ValueError):
        knn_accuracy(x, ["a"] * 5, k=0)
    with pytest.raises(ValueError):
        knn_accuracy(x, ["a"] * 5, mode="bogus")  # type: ignore[arg-type]


def test_stratified_split_rules() -> None:
    codes = np.array([0] * 7 + [1] * 2 + [2])
    tr, te = stratified_split(codes, 0.5, np.random.default_rng(0))
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    assert Counter(codes[te].tolist()) == {0: 4, 1: 1}  # round(3.5) = 4; the singleton trains
    assert 9 in tr
    with pytest.raises(ValueError):
        stratified_split(np.array([0, 1, 2]), 0.5, np.random.default_rng(0))


def test_splits_are_seeded() -> None:
    x, labels = clusters(10, 3, 8, 2.0, seed=2)
    assert knn_accuracy_splits(x, labels, k=3, seed=5) == knn_accuracy_splits(
        x, labels, k=3, seed=5
    )


def test_linear_probe_separable_is_high() -> None:
    x, labels = clusters(20, 4, 32, 0.5, seed=3)
    mean, sd = linear_probe_accuracy(x, labels, seed=0)
    assert mean > 0.95 and 0 <= sd < 0.05


def test_linear_probe_random_labels_and_singletons() -> None:
    rng = np.random.default_rng(4)
    x = unit_rows(rng.normal(size=(300, 32)))
    labels: list[str | int] = [int(v) for v in rng.integers(0, 2, size=300)]
    mean, _ = linear_probe_accuracy(x, labels, seed=0, repeats=3)
    assert 0.35 < mean < 0.65
    # a class with a single image is handled (it only ever trains)
    labels[0] = "lonely"
    m2, _ = linear_probe_accuracy(x, labels, seed=0, repeats=2)
    assert 0.0 <= m2 <= 1.0
    # a training part with a single class predicts it
    only = linear_probe_accuracy(x[:4], ["a", "a", "a", "a"], seed=0, repeats=2)
    assert only[0] == 1.0
