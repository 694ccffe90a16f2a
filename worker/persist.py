"""Writing what the engine did into the store, one transaction per step.

Every function here adds rows and events to ``session`` and flushes; the caller commits (once,
for the whole step) and publishes after the commit. Each is idempotent on (run, iteration): it
looks for its own rows first and writes nothing when they are there, so a redelivered task
repeats nothing.

* :func:`persist_start`: the run's concepts (the whole vocabulary, with a 2-D map position from
  a PCA of the concept embeddings, and the policy's prior figures);
* :func:`persist_fetch`: an iteration's queries (with the prediction that chose them) and its
  downloaded images (with provenance, reward still unknown), as soon as they are fetched;
* :func:`persist_learn`: the iteration row, what each query brought, every image's reward and
  replay-buffer flag, and the policy's new figures for every concept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.concepts import insert_concepts, update_concept_figures, upsert_concepts
from app.store.events import add_event
from app.store.images import add_images, update_image_scores
from app.store.iterations import (
    add_queries,
    get_iteration,
    query_iterations,
    record_iteration,
    update_query_results,
)
from app.store.models import Concept
from ie_engine.explorer import Explorer, Fetched, ImageRecord, IterationSummary
from worker.runtime import RunContext


# -- the concept map -----------------------------------------------------------------------
def fit_projection(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA to 2-D of (N, D) concept embeddings: (mean (D,), components (D, 2)).

    Through the (D, D) covariance rather than an SVD of the (N, D) matrix: N reaches 150k,
    D is 384. Signs are fixed (largest loading positive) so the map never flips between runs.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    mean = x.mean(axis=0)
    cov = np.cov((x - mean).T) if len(x) > 1 else np.eye(x.shape[1])
    values, vectors = np.linalg.eigh(cov)
    comps = vectors[:, np.argsort(values)[::-1][:2]]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), [0, 1]])
    signs[signs == 0] = 1.0
    return mean.astype(np.float32), (comps * signs).astype(np.float32)


def project(vectors: np.ndarray, projection: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(n, 2) map positions of (n, D) embeddings."""
    mean, comps = projection
    return (np.asarray(vectors, dtype=np.float32) - mean) @ comps


def _projection(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    if ctx.projection is None:
        ctx.projection = fit_projection(ctx.embeddings)
    return ctx.projection


# -- concepts ------------------------------------------------------------------------------
def concept_figures(explorer: Explorer) -> list[dict[str, Any]]:
    """The policy's current view of every concept: mu, sigma, sampling probability, tier, how
    often it was queried and its mean observed reward (vetoed concepts have probability 0)."""
    dist = explorer.policy.distribution()
    observed = explorer.policy.observations
    rows = []
    for i in range(len(dist.mu)):
        seen = observed.get(i)
        rows.append({
            "concept_index": i,
            "mu": float(dist.mu[i]),
            "sigma": float(dist.sigma[i]),
            "probability": float(dist.probability[i]),
            "tier": int(dist.tier[i]),
            "times_queried": len(seen) if seen else 0,
            "observed_reward_mean": float(np.mean(seen)) if seen else None,
        })
    return rows


def count_concepts(session: Session, run_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(Concept).where(Concept.run_id == run_id)) or 0


def write_concepts(
    session: Session, run_id: int, ctx: RunContext, indices: Iterable[int], *, fresh: bool = False
) -> int:
    """Insert (or refresh) the rows of concepts ``indices``: lemma, text, source, map.
    ``fresh``: the run has no concept rows yet (a plain bulk insert, far faster)."""
    vocab = ctx.explorer.vocabulary
    wanted = list(indices)
    vectors = np.asarray(ctx.explorer.policy.embeddings)[wanted]
    points = project(vectors, _projection(ctx)) if wanted else np.zeros((0, 2))
    rows = [
        {
            "concept_index": i,
            "lemma": vocab.concepts[i].lemma[:255],
            "text": vocab.concepts[i].text,
            "source": vocab.concepts[i].source[:16],
            "map_x": float(points[j, 0]),
            "map_y": float(points[j, 1]),
        }
        for j, i in enumerate(wanted)
    ]
    if fresh:
        return insert_concepts(session, run_id, rows)
    return upsert_concepts(session, run_id, rows)


def persist_start(session: Session, run_id: int, ctx: RunContext) -> bool:
    """The run's concept rows with their map positions and prior figures; False when they
    are already stored."""
    n = len(ctx.explorer.vocabulary)
    stored = count_concepts(session, run_id)
    if stored >= n:
        return False
    write_concepts(session, run_id, ctx, range(n), fresh=stored == 0)
    update_concept_figures(session, run_id, concept_figures(ctx.explorer))
    add_event(session, run_id, "concepts", {"n": n, "iteration": 0})
    return True


# -- one iteration -------------------------------------------------------------------------
def image_row(run_id: int, record: ImageRecord, *, scored: bool) -> dict[str, Any]:
    """The store's row of an engine image record; ``path`` made relative to ``data_dir``."""
    row = asdict(record)
    row["path"] = f"runs/{run_id}/{record.path}"
    if not scored:
        row["reward"] = None
        row["kept"] = False
    return row


def persist_fetch(session: Session, run_id: int, explorer: Explorer, fetched: Fetched) -> bool:
    """Store iteration ``fetched.iteration``'s queries and images; False when already done."""
    it = fetched.iteration
    if it in query_iterations(session, run_id):
        return False
    per_concept: dict[int, int] = {}
    for i in fetched.new_ids:
        c = explorer.images[i].concept_index
        per_concept[c] = per_concept.get(c, 0) + 1
    queries = [
        {**asdict(q), "n_results": n, "n_images": per_concept.get(q.concept_index, 0)}
        for q, n in zip(fetched.queries, fetched.n_results, strict=True)
    ]
    add_queries(session, run_id, it, queries)
    stored = add_images(
        session, run_id, [image_row(run_id, explorer.images[i], scored=False)
                          for i in fetched.new_ids])
    add_event(session, run_id, "queries", {
        "iteration": it, "n": len(queries),
        "concepts": [explorer.vocabulary.concepts[q.concept_index].lemma
                     for q in fetched.queries][:20],
    })
    add_event(session, run_id, "images", {
        "iteration": it, "n": stored, "failures": len(fetched.failures)})
    return True


def persist_learn(
    session: Session, run_id: int, explorer: Explorer, summary: IterationSummary
) -> bool:
    """Store iteration ``summary.iteration``'s results; False when already stored."""
    it = summary.iteration
    if get_iteration(session, run_id, it) is not None:
        return False
    metrics = dict(summary.metrics)
    knn = metrics.get("knn_accuracy")
    kept = sum(1 for r in explorer.images if r.iteration == it and r.kept)
    record_iteration(
        session, run_id, it,
        model=summary.model,
        mean_image_reward=summary.mean_image_reward,
        mean_concept_reward=summary.mean_concept_reward,
        loss_mean=summary.loss_mean,
        knn_accuracy=float(knn) if knn is not None else None,
        seconds=summary.seconds,
        counts={
            "n_results": summary.n_results, "n_images": summary.n_images,
            "n_failures": summary.n_failures, "failure_reasons": summary.failure_reasons,
            "n_leaked": summary.n_leaked, "replay_size": summary.replay_size, "n_kept": kept,
            "train_images_per_second": summary.train_images_per_second,
        },
        metrics=metrics,
    )
    if it not in query_iterations(session, run_id):  # fetched by a worker that died unrecorded
        add_queries(session, run_id, it, summary.queries)
    else:
        update_query_results(session, run_id, it, summary.queries)
    records = [image_row(run_id, r, scored=True) for r in explorer.images]
    add_images(session, run_id, [r for r in records if r["iteration"] == it])
    update_image_scores(session, run_id, records)
    update_concept_figures(session, run_id, concept_figures(explorer))
    add_event(session, run_id, "iteration", {
        "iteration": it, "model": summary.model, "n_images": summary.n_images,
        "mean_concept_reward": summary.mean_concept_reward,
        "mean_image_reward": summary.mean_image_reward, "loss": summary.loss_mean,
        "knn_accuracy": knn, "kept": kept,
    })
    return True
