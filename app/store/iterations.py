"""Iterations of a run and the queries each one sent.

Store functions flush but never commit; the caller owns the transaction.
:func:`record_iteration` is idempotent on (run_id, number): a worker whose message is delivered
twice records the iteration once, whatever the second delivery carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from app.store.models import Iteration, Query
from app.store.upsert import chunks, dialect_insert
from app.store.values import clean_json, finite_or_none


def get_iteration(session: Session, run_id: int, number: int) -> Iteration | None:
    """Iteration ``number`` of run ``run_id``, or None."""
    stmt = select(Iteration).where(Iteration.run_id == run_id, Iteration.number == number)
    return session.scalar(stmt)


def record_iteration(
    session: Session,
    run_id: int,
    number: int,
    *,
    model: str = "",
    status: str = "finished",
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    mean_image_reward: float | None = None,
    mean_concept_reward: float | None = None,
    loss_mean: float | None = None,
    knn_accuracy: float | None = None,
    seconds: Mapping[str, float] | None = None,
    counts: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Iteration:
    """Record iteration ``number`` of run ``run_id`` once; return the stored row.

    When the iteration is already stored, nothing changes and the existing row is returned
    (``INSERT ... ON CONFLICT DO NOTHING``, so two workers racing cannot both insert).
    NaN figures are stored as NULL.
    """
    values = {
        "run_id": run_id,
        "number": number,
        "model": model,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "mean_image_reward": finite_or_none(mean_image_reward),
        "mean_concept_reward": finite_or_none(mean_concept_reward),
        "loss_mean": finite_or_none(loss_mean),
        "knn_accuracy": finite_or_none(knn_accuracy),
        "seconds": clean_json(dict(seconds or {})),
        "counts": clean_json(dict(counts or {})),
        "metrics": clean_json(dict(metrics or {})),
    }
    session.flush()
    stmt = dialect_insert(session, Iteration).values(**values)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "number"]))
    row = get_iteration(session, run_id, number)
    assert row is not None  # inserted now or earlier, in this transaction's view
    return row


def add_queries(
    session: Session, run_id: int, iteration: int, queries: Iterable[Mapping[str, Any]]
) -> int:
    """Store the queries of one iteration; return how many.

    Each mapping has ``concept_index`` and ``text`` and may have ``descriptor``, ``mu``
    (or ``predicted_mu``), ``sigma`` (or ``predicted_sigma``), ``probability``, ``tier``,
    ``n_results``, ``n_images`` and ``observed_reward`` - the engine's query dicts as they are.
    Not idempotent by itself: call it in the same transaction as :func:`record_iteration`, and
    only when that call inserted the iteration.
    """
    rows = [
        {
            "run_id": run_id,
            "iteration": iteration,
            "concept_index": int(q["concept_index"]),
            "text": str(q["text"]),
            "descriptor": q.get("descriptor"),
            "mu": finite_or_none(q.get("mu", q.get("predicted_mu"))),
            "sigma": finite_or_none(q.get("sigma", q.get("predicted_sigma"))),
            "probability": finite_or_none(q.get("probability")),
            "tier": q.get("tier"),
            "n_results": int(q.get("n_results") or 0),
            "n_images": int(q.get("n_images") or 0),
            "observed_reward": finite_or_none(q.get("observed_reward", q.get("reward"))),
        }
        for q in queries
    ]
    for chunk in chunks(rows):
        session.execute(dialect_insert(session, Query).values(list(chunk)))
    return len(rows)


def list_iterations(session: Session, run_id: int) -> list[Iteration]:
    """Run ``run_id``'s recorded iterations, in order."""
    stmt = select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.number)
    return list(session.scalars(stmt))


def query_iterations(session: Session, run_id: int) -> list[int]:
    """The iteration numbers of run ``run_id`` that have queries, in order."""
    stmt = (
        select(Query.iteration).where(Query.run_id == run_id).distinct().order_by(Query.iteration)
    )
    return list(session.scalars(stmt))


def queries_for(session: Session, run_id: int, iteration: int) -> list[Query]:
    """The queries of iteration ``iteration`` of run ``run_id``, in the order they were stored."""
    stmt = (
        select(Query)
        .where(Query.run_id == run_id, Query.iteration == iteration)
        .order_by(Query.id)
    )
    return list(session.scalars(stmt))


def update_query_results(
    session: Session, run_id: int, iteration: int, results: Iterable[Mapping[str, Any]]
) -> int:
    """Fill in what the queries of iteration ``iteration`` brought, once they are scored:
    each mapping has ``concept_index``, ``text``, ``n_results``, ``n_images`` and
    ``observed_reward``. Queries are stored when they are sent (with the prediction) and
    completed here. Returns how many were given."""
    table = cast(Table, Query.__table__)
    params = [
        {"b_index": int(r["concept_index"]), "b_text": str(r["text"]),
         "b_results": int(r.get("n_results") or 0), "b_images": int(r.get("n_images") or 0),
         "b_reward": finite_or_none(r.get("observed_reward"))}
        for r in results
    ]
    if not params:
        return 0
    session.flush()
    stmt = (
        update(table)
        .where(table.c.run_id == run_id, table.c.iteration == iteration,
               table.c.concept_index == bindparam("b_index"), table.c.text == bindparam("b_text"))
        .values(n_results=bindparam("b_results"), n_images=bindparam("b_images"),
                observed_reward=bindparam("b_reward"))
    )
    session.execute(stmt, params)
    session.expire_all()
    return len(params)
