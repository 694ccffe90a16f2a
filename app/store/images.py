"""Web images a run downloaded. Store functions flush but never commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from app.store.models import Image
from app.store.upsert import chunks, dialect_insert
from app.store.values import finite_or_none

TEXT_FIELDS = (
    "query", "dhash", "image_url", "page_url", "title", "license", "creator", "engine", "category",
)


def _row(run_id: int, given: Mapping[str, Any]) -> dict[str, Any]:
    """The insert row of one image record (the engine's ``ImageRecord`` as a dict)."""
    row: dict[str, Any] = {
        "run_id": run_id,
        "iteration": int(given["iteration"]),
        "concept_index": int(given["concept_index"]),
        "path": str(given["path"]),
        "sha256": str(given["sha256"]),
        "reward": finite_or_none(given.get("reward")),
        "kept": bool(given.get("kept", False)),
    }
    for key in TEXT_FIELDS:
        row[key] = str(given.get(key) or "")
    return row


def add_images(session: Session, run_id: int, images: Iterable[Mapping[str, Any]]) -> int:
    """Store images of run ``run_id``, skipping any whose sha256 the run already has.

    Each mapping carries ``iteration``, ``concept_index``, ``path`` (relative to ``data_dir``)
    and ``sha256``, plus any of the provenance fields and ``reward``/``kept``. Duplicates within
    ``images`` and against stored rows are skipped silently (the engine records its own
    ``duplicate`` failures). Returns how many rows were inserted.
    """
    rows = [_row(run_id, image) for image in images]
    session.flush()
    inserted = 0
    for chunk in chunks(rows):
        stmt = (
            dialect_insert(session, Image)
            .values(list(chunk))
            .on_conflict_do_nothing(index_elements=["run_id", "sha256"])
            .returning(Image.id)
        )
        inserted += len(session.execute(stmt).all())
    return inserted


def images_for(
    session: Session,
    run_id: int,
    *,
    concept_index: int | None = None,
    iteration: int | None = None,
    page: int = 1,
    page_size: int = 60,
) -> tuple[list[Image], int]:
    """One page of run ``run_id``'s images (best reward first) and how many match in all.

    ``concept_index`` and ``iteration`` narrow the selection; both may be given.
    """
    where: list[ColumnElement[bool]] = [Image.run_id == run_id]
    if concept_index is not None:
        where.append(Image.concept_index == concept_index)
    if iteration is not None:
        where.append(Image.iteration == iteration)
    total = session.scalar(select(func.count()).select_from(Image).where(*where)) or 0
    stmt = (
        select(Image)
        .where(*where)
        .order_by(Image.reward.desc().nulls_last(), Image.id)
        .limit(page_size)
        .offset((max(page, 1) - 1) * page_size)
    )
    return list(session.scalars(stmt)), total


def get_image(session: Session, run_id: int, image_id: int) -> Image | None:
    """Image ``image_id`` if it belongs to run ``run_id``, else None."""
    image = session.get(Image, image_id)
    return image if image is not None and image.run_id == run_id else None


def image_stats_by_concept(
    session: Session, run_id: int, iteration: int
) -> dict[int, tuple[int, float | None]]:
    """For iteration ``iteration`` of run ``run_id``: per concept, how many images are stored
    so far and their mean reward (None while none is scored)."""
    stmt = (
        select(Image.concept_index, func.count(), func.avg(Image.reward))
        .where(Image.run_id == run_id, Image.iteration == iteration)
        .group_by(Image.concept_index)
    )
    return {
        int(index): (int(n), None if mean is None else float(mean))
        for index, n, mean in session.execute(stmt)
    }


def kept_by_iteration(session: Session, run_id: int) -> dict[int, tuple[int, int]]:
    """Per iteration of run ``run_id``: (images stored, images kept in the replay buffer)."""
    kept = func.sum(case((Image.kept.is_(True), 1), else_=0))
    stmt = (
        select(Image.iteration, func.count(), kept)
        .where(Image.run_id == run_id)
        .group_by(Image.iteration)
    )
    return {int(it): (int(n), int(k or 0)) for it, n, k in session.execute(stmt)}


def image_iterations(session: Session, run_id: int) -> list[int]:
    """The iteration numbers of run ``run_id`` that have images, in order."""
    stmt = (
        select(Image.iteration).where(Image.run_id == run_id).distinct().order_by(Image.iteration)
    )
    return list(session.scalars(stmt))


def update_image_scores(
    session: Session, run_id: int, scores: Iterable[Mapping[str, Any]]
) -> int:
    """Set ``reward`` and ``kept`` of stored images of run ``run_id``, found by ``sha256``, in
    bulk; return how many were given. Images stored before they were scored get their reward
    here, and ``kept`` follows the replay buffer (which a veto or a later iteration changes)."""
    table = cast(Table, Image.__table__)
    params = [
        {"b_sha": str(s["sha256"]), "b_reward": finite_or_none(s.get("reward")),
         "b_kept": bool(s.get("kept", False))}
        for s in scores
    ]
    if not params:
        return 0
    session.flush()
    stmt = (
        update(table)
        .where(table.c.run_id == run_id, table.c.sha256 == bindparam("b_sha"))
        .values(reward=bindparam("b_reward"), kept=bindparam("b_kept"))
    )
    for chunk in chunks(params, 5000):
        session.execute(stmt, list(chunk))
    session.expire_all()
    return len(params)
