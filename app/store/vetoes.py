"""A person's vetoes, unvetoes and added concepts, waiting for the worker to apply them.

Store functions flush but never commit. A veto takes effect in the dashboard at once (the
concept's ``vetoed`` flag flips in the same transaction); the worker hands pending requests to
the policy at its next step and marks exactly those applied, by id, so a request arriving in
between is never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.store.concepts import get_concept
from app.store.events import add_event
from app.store.models import RunStatus, Veto, VetoAction, utcnow
from app.store.runs import ENDED, get_run


def record_veto(
    session: Session,
    run_id: int,
    action: VetoAction | str,
    *,
    concept_index: int | None = None,
    phrase: str | None = None,
) -> Veto:
    """Record a request of ``action`` on run ``run_id`` and add a ``veto`` event (which names
    the concept's ``lemma``, or the added phrase).

    ``veto``/``unveto`` name a stored ``concept_index``; ``add`` gives a ``phrase``. Raises
    :class:`NotFound` for an unknown concept, :class:`InvalidInput` for a missing argument and
    :class:`Conflict` when the run has ended.
    """
    run = get_run(session, run_id)
    if RunStatus(run.status) in ENDED:
        raise Conflict(f"run {run_id} has ended ({run.status}); its concepts can no longer change")
    kind = VetoAction(action)
    if kind == VetoAction.ADD:
        phrase = (phrase or "").strip()
        if not phrase:
            raise InvalidInput("a concept to add needs a phrase")
        concept_index = None
        lemma = phrase
    else:
        if concept_index is None:
            raise InvalidInput(f"{kind.value} needs a concept")
        concept = get_concept(session, run_id, concept_index)
        if concept is None:
            raise NotFound(f"run {run_id} has no concept {concept_index}")
        concept.vetoed = kind == VetoAction.VETO
        phrase = None
        lemma = concept.lemma
    veto = Veto(
        run_id=run_id,
        concept_index=concept_index,
        action=kind,
        phrase=phrase,
        iteration=run.iteration,
    )
    session.add(veto)
    session.flush()
    payload = {"veto_id": veto.id, "action": kind.value, "concept_index": concept_index}
    add_event(session, run_id, "veto", {**payload, "phrase": phrase, "lemma": lemma})
    return veto


def pending_vetoes(session: Session, run_id: int) -> list[Veto]:
    """Requests of run ``run_id`` not yet applied, oldest first."""
    stmt = (
        select(Veto)
        .where(Veto.run_id == run_id, Veto.applied.is_(False))
        .order_by(Veto.id)
    )
    return list(session.scalars(stmt))


def mark_vetoes_applied(
    session: Session, run_id: int, veto_ids: Sequence[int], *, now: datetime | None = None
) -> int:
    """Mark the requests ``veto_ids`` of run ``run_id`` applied; return how many changed."""
    if not veto_ids:
        return 0
    session.flush()
    stmt = (
        update(Veto)
        .where(Veto.run_id == run_id, Veto.id.in_(list(veto_ids)), Veto.applied.is_(False))
        .values(applied=True, applied_at=now or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)
