"""Label-set mode: restrict the vocabulary to the concepts nearest the target's class names.

When the target's class names are known, the paper explores only the 10% of the vocabulary
whose text embeddings are closest to some class name, which cuts the search space tenfold.
"""

from __future__ import annotations

import numpy as np

from ie_engine.errors import ConfigError, VocabularyError
from ie_engine.vocabulary.concepts import Vocabulary

_CHUNK = 8192
"""Concept rows scored at a time, to bound memory on a 100k-concept vocabulary."""


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def label_set_scores(embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Per concept, the highest cosine similarity to any class-name embedding, shape (N,).

    Rows are normalised here, so unnormalised inputs give true cosines too.
    """
    classes = _unit_rows(class_embeddings)
    scores = np.empty(len(embeddings), dtype=np.float32)
    for start in range(0, len(embeddings), _CHUNK):
        rows = _unit_rows(embeddings[start : start + _CHUNK])
        scores[start : start + len(rows)] = (rows @ classes.T).max(axis=1)
    return scores


def restrict_to_label_set(
    vocab: Vocabulary,
    embeddings: np.ndarray,
    class_embeddings: np.ndarray,
    *,
    fraction: float,
) -> np.ndarray:
    """Indices (ascending, int64) of the concepts kept in label-set mode.

    Keeps ``round(fraction * N)`` concepts (at least 1) with the highest max-cosine to any
    class-name embedding. Ties are broken by the lower concept index (a stable sort), so the
    result is deterministic. ``embeddings`` has one row per concept of ``vocab``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"label_set_fraction must be in (0, 1], got {fraction}")
    n = len(vocab)
    if n == 0:
        raise VocabularyError("cannot restrict an empty vocabulary")
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise VocabularyError(
            f"embeddings have shape {embeddings.shape}, expected ({n}, dim) for this vocabulary"
        )
    if class_embeddings.ndim != 2 or class_embeddings.shape[0] == 0:
        raise VocabularyError("label-set mode needs at least one class-name embedding")
    if class_embeddings.shape[1] != embeddings.shape[1]:
        raise VocabularyError(
            f"class embeddings are {class_embeddings.shape[1]}-d, concepts {embeddings.shape[1]}-d"
        )
    scores = label_set_scores(embeddings, class_embeddings)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    keep = min(n, max(1, round(fraction * n)))
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep]).astype(np.int64)
