"""A run's concept vocabulary and the policy's latest view of each concept.

Store functions flush but never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.store.models import Concept
from app.store.upsert import chunks, dialect_insert
from app.store.values import finite_or_none

ConceptSort = Literal["reward", "probability", "mu", "sigma", "queried", "index", "lemma"]

OPTIONAL: Final = (
    "text", "source", "mu", "sigma", "probability", "tier", "times_queried",
    "observed_reward_mean", "map_x", "map_y",
)
"""Fields a concept row may carry besides ``concept_index`` and ``lemma``."""
FLOATS: Final = frozenset({"mu", "sigma", "probability", "observed_reward_mean", "map_x", "map_y"})
DEFAULTS: Final[dict[str, Any]] = {"text": "", "source": "wordnet", "times_queried": 0}
"""Values of the NOT NULL fields for a row that lacks a field the first row has."""


def _row(run_id: int, given: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The insert row of one concept: ``index`` read as ``concept_index``, floats made finite."""
    row: dict[str, Any] = {"run_id": run_id}
    for key in keys:
        value = given.get(key)
        if key == "concept_index" and value is None:
            value = given.get("index")
        if value is None:
            value = DEFAULTS.get(key)
        row[key] = finite_or_none(value) if key in FLOATS else value
    return row


def upsert_concepts(session: Session, run_id: int, concepts: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update concepts of run ``run_id`` in bulk; return how many were written.

    Each mapping has ``concept_index`` (or ``index``, as in the engine's ``Concept``) and
    ``lemma``, and may have any of :data:`OPTIONAL`. The optional fields present in the *first*
    mapping are written for every row (a row lacking one writes NULL, or the default of a NOT
    NULL field); the others keep their stored value on an update (or their default on an
    insert). A concept given twice is written once, as last given.
    ``vetoed`` is never touched here: vetoes own it.
    """
    given = list(concepts)
    if not given:
        return 0
    keys = ("concept_index", "lemma", *(k for k in OPTIONAL if k in given[0]))
    by_index = {row["concept_index"]: row for row in (_row(run_id, c, keys) for c in given)}
    rows = list(by_index.values())  # one statement may not update a row twice (PostgreSQL)
    session.flush()
    for chunk in chunks(rows):
        stmt = dialect_insert(session, Concept).values(list(chunk))
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "concept_index"],
            set_={k: stmt.excluded[k] for k in keys if k != "concept_index"},
        )
        session.execute(stmt)
    session.expire_all()  # objects already loaded in this session may be stale now
    return len(rows)


def get_concept(session: Session, run_id: int, concept_index: int) -> Concept | None:
    """Concept ``concept_index`` of run ``run_id``, or None."""
    stmt = select(Concept).where(Concept.run_id == run_id, Concept.concept_index == concept_index)
    return session.scalar(stmt)


def _order(sort: ConceptSort) -> list[Any]:
    """Best first for figures (missing figures last), alphabetical or vocabulary order else."""
    figure = {
        "reward": Concept.observed_reward_mean,
        "probability": Concept.probability,
        "mu": Concept.mu,
        "sigma": Concept.sigma,
        "queried": Concept.times_queried,
    }
    if sort in figure:
        return [figure[sort].desc().nulls_last(), Concept.concept_index]
    if sort == "lemma":
        return [Concept.lemma, Concept.concept_index]
    if sort == "index":
        return [Concept.concept_index]
    raise ValueError(f"unknown concept sort {sort!r}")


def list_concepts(
    session: Session,
    run_id: int,
    *,
    sort: ConceptSort = "reward",
    search: str | None = None,
    vetoed: bool | None = None,
    page: int = 1,
    page_size: int = 50,
) -> tuple[list[Concept], int]:
    """One page of run ``run_id``'s concepts and how many match in all.

    ``search`` matches anywhere in the lemma or the text, ignoring case (``%`` and ``_`` are
    literal). ``vetoed`` keeps only vetoed (True) or only live (False) concepts.
    """
    where: list[ColumnElement[bool]] = [Concept.run_id == run_id]
    term = (search or "").strip().lower()
    if term:
        where.append(
            or_(
                func.lower(Concept.lemma).contains(term, autoescape=True),
                func.lower(Concept.text).contains(term, autoescape=True),
            )
        )
    if vetoed is not None:
        where.append(Concept.vetoed.is_(vetoed))
    total = session.scalar(select(func.count()).select_from(Concept).where(*where)) or 0
    stmt = (
        select(Concept)
        .where(*where)
        .order_by(*_order(sort))
        .limit(page_size)
        .offset((max(page, 1) - 1) * page_size)
    )
    return list(session.scalars(stmt)), total


def concepts_by_index(session: Session, run_id: int, indices: Iterable[int]) -> dict[int, Concept]:
    """The concepts of run ``run_id`` among ``indices``, by index (unknown indices left out)."""
    wanted = sorted(set(indices))
    found: dict[int, Concept] = {}
    for chunk in chunks(wanted):
        stmt = select(Concept).where(Concept.run_id == run_id, Concept.concept_index.in_(chunk))
        found.update((c.concept_index, c) for c in session.scalars(stmt))
    return found


def map_points(session: Session, run_id: int, *, max_points: int) -> tuple[list[Concept], int]:
    """Concepts of run ``run_id`` placed on the concept map, thinned to about ``max_points``,
    and how many are placed in all.

    Every queried or vetoed concept is kept; the others are thinned by a stride over the
    vocabulary order (the same concepts at every call, so the map does not flicker).
    """
    placed = [Concept.run_id == run_id, Concept.map_x.is_not(None), Concept.map_y.is_not(None)]
    total = session.scalar(select(func.count()).select_from(Concept).where(*placed)) or 0
    stride = max(1, -(-total // max(max_points, 1)))
    stmt = (
        select(Concept)
        .where(
            *placed,
            or_(
                Concept.concept_index % stride == 0,
                Concept.times_queried > 0,
                Concept.vetoed.is_(True),
            ),
        )
        .order_by(Concept.concept_index)
    )
    return list(session.scalars(stmt)), total


FIGURES: Final = ("mu", "sigma", "probability", "tier", "times_queried", "observed_reward_mean")
"""The policy's figures of a concept, rewritten by the worker after every iteration."""


def update_concept_figures(
    session: Session, run_id: int, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Set :data:`FIGURES` of existing concepts of run ``run_id`` in bulk (one ``UPDATE``
    executed for many rows); return how many rows were given.

    Each mapping has ``concept_index`` and every field of :data:`FIGURES` (floats made finite).
    Faster than :func:`upsert_concepts` for a whole vocabulary: no insert is attempted and the
    text columns are left alone. Unknown indices change nothing.
    """
    table = cast(Table, Concept.__table__)
    params = [
        {
            "b_index": int(r["concept_index"]),
            **{f"b_{k}": finite_or_none(r.get(k)) if k in FLOATS else r.get(k) for k in FIGURES},
        }
        for r in rows
    ]
    if not params:
        return 0
    for row in params:
        row["b_times_queried"] = int(row["b_times_queried"] or 0)
    session.flush()
    stmt = (
        update(table)
        .where(table.c.run_id == run_id, table.c.concept_index == bindparam("b_index"))
        .values({k: bindparam(f"b_{k}") for k in FIGURES})
    )
    for chunk in chunks(params, 5000):
        session.execute(stmt, list(chunk))
    session.expire_all()
    return len(params)


def insert_concepts(session: Session, run_id: int, concepts: Iterable[Mapping[str, Any]]) -> int:
    """Insert the concepts of a run that has none yet, in bulk; return how many.

    About ten times faster than :func:`upsert_concepts` for a whole vocabulary (150k concepts:
    about 3 s instead of 30 s on SQLite), because no conflict clause is compiled per chunk.
    Each mapping is as for :func:`upsert_concepts`; a concept already stored is an error
    (``IntegrityError``), so use it only for a run with no concept rows.
    """
    given = list(concepts)
    if not given:
        return 0
    keys = ("concept_index", "lemma", *(k for k in OPTIONAL if k in given[0]))
    rows = list({r["concept_index"]: r for r in (_row(run_id, c, keys) for c in given)}.values())
    session.flush()
    session.execute(insert(Concept), rows)
    return len(rows)
