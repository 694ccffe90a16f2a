"""What an exploration run records: its images, an iteration's fetched half, an iteration's
summary, and the files each iteration writes into the run folder."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ie_engine.types import Query
from ie_engine.vocabulary import Vocabulary


@dataclass
class ImageRecord:
    """A downloaded web image with its provenance and its reward when it was scored."""

    id: int
    path: str  # relative to the run folder
    sha256: str
    dhash: str  # hex, 16 digits
    iteration: int
    concept_index: int
    concept: str
    query: str
    image_url: str
    page_url: str
    title: str
    license: str
    creator: str
    engine: str
    category: str
    reward: float = float("nan")
    kept: bool = False  # entered the replay buffer


@dataclass
class Fetched:
    """The network half of an iteration, waiting for the compute half (``Explorer.learn``)."""

    iteration: int
    model: str  # the policy's model when the concepts were sampled
    queries: list[Query]
    n_results: list[int]  # per query
    new_ids: list[int]  # images added to ``Explorer.images``, in request order
    failures: list[dict[str, Any]]  # url, reason, detail, query
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fetched:
        return cls(**{**d, "queries": [Query(**q) for q in d["queries"]]})


@dataclass
class IterationSummary:
    """What one iteration did; written to ``iterations/NNNN.json``."""

    iteration: int
    model: str
    queries: list[dict[str, Any]]
    n_results: int
    n_images: int
    n_failures: int
    failure_reasons: dict[str, int]
    n_leaked: int
    replay_size: int
    mean_image_reward: float
    mean_concept_reward: float
    loss_mean: float
    train_images_per_second: float
    seconds: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)


def summarise(
    fetched: Fetched,
    *,
    images: list[ImageRecord],
    vocabulary: Vocabulary,
    replay_size: int,
    per_concept: dict[int, float],
    rewards: np.ndarray,
    stats: Any,
    seconds: dict[str, float],
    metrics: dict[str, float],
) -> IterationSummary:
    """The summary of a learned iteration: per query its results, images and observed reward;
    failures by reason; the means of image rewards, concept rewards and the training loss."""
    counts: dict[int, int] = {}
    for i in fetched.new_ids:
        counts[images[i].concept_index] = counts.get(images[i].concept_index, 0) + 1
    reasons: dict[str, int] = {}
    for f in fetched.failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    rows = []
    for q, n_results in zip(fetched.queries, fetched.n_results, strict=True):
        row = asdict(q)
        row["concept"] = vocabulary.concepts[q.concept_index].lemma
        row["n_results"] = n_results
        row["n_images"] = counts.get(q.concept_index, 0)
        row["observed_reward"] = per_concept.get(q.concept_index)
        rows.append(row)
    losses = list(getattr(stats, "losses", []))
    return IterationSummary(
        iteration=fetched.iteration,
        model=fetched.model,
        queries=rows,
        n_results=sum(fetched.n_results),
        n_images=len(fetched.new_ids),
        n_failures=len(fetched.failures),
        failure_reasons=reasons,
        n_leaked=reasons.get("target-leak", 0),
        replay_size=replay_size,
        mean_image_reward=float(rewards.mean()) if rewards.size else float("nan"),
        mean_concept_reward=float(np.mean(list(per_concept.values())))
        if per_concept else float("nan"),
        loss_mean=float(np.mean(losses)) if losses else float("nan"),
        train_images_per_second=float(getattr(stats, "images_per_second", 0.0)),
        seconds=seconds,
        metrics=metrics,
    )


def write_iteration(run_dir: Path, summary: IterationSummary, new_images: list[ImageRecord],
                    failures: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """``iterations/NNNN.json`` (the summary), ``NNNN-images.jsonl``, ``NNNN-failures.jsonl``
    and the run's ``metrics.json`` (the history so far)."""
    base = run_dir / "iterations" / f"{summary.iteration:04d}"
    write_text_atomic(base.with_suffix(".json"), json.dumps(asdict(summary), indent=1))
    lines = [json.dumps(asdict(img)) for img in new_images]
    write_text_atomic(base.with_name(base.name + "-images.jsonl"), "\n".join(lines) + "\n")
    fail_lines = [json.dumps(f) for f in failures]
    write_text_atomic(base.with_name(base.name + "-failures.jsonl"), "\n".join(fail_lines) + "\n")
    write_text_atomic(run_dir / "metrics.json", json.dumps(history, indent=1))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
