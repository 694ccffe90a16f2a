"""Steering a run's policy: veto or unveto concepts (one or many at once), add a concept.

Every request is recorded by :func:`app.store.vetoes.record_veto` with the run's current
iteration, which flips the concept's ``vetoed`` flag at once (the dashboard shows it on the
next render) and adds a ``veto`` event; the worker hands pending requests to the policy at its
next step and reports ``veto-applied``. Each use-case commits, then wakes the dashboards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.services.live import publish
from app.settings import Settings
from app.store.models import Veto, VetoAction
from app.store.vetoes import record_veto

MAX_AT_ONCE: Final = 1000
"""Most concepts one request may veto or unveto."""
MAX_PHRASE: Final = 255
"""Longest phrase of an added concept (the column's size)."""


def steer_concepts(
    session: Session,
    settings: Settings,
    run_id: int,
    action: Literal["veto", "unveto"],
    concept_indices: Iterable[int],
) -> list[Veto]:
    """Veto or unveto each of ``concept_indices`` of run ``run_id`` (repeats once), commit.

    Raises :class:`InvalidInput` for none or too many, :class:`~app.errors.NotFound` for an
    unknown concept and :class:`~app.errors.Conflict` when the run has ended; in every case
    nothing is recorded.
    """
    indices = sorted(set(concept_indices))
    if not indices:
        raise InvalidInput(f"tick at least one concept to {action}")
    if len(indices) > MAX_AT_ONCE:
        raise InvalidInput(f"at most {MAX_AT_ONCE} concepts at once ({len(indices)} ticked)")
    vetoes = [
        record_veto(session, run_id, VetoAction(action), concept_index=i) for i in indices
    ]
    session.commit()
    publish(run_id, settings=settings)
    return vetoes


def add_concept(session: Session, settings: Settings, run_id: int, phrase: str) -> Veto:
    """Ask the policy of run ``run_id`` to add the concept ``phrase``, commit."""
    phrase = " ".join(phrase.split())
    if len(phrase) > MAX_PHRASE:
        raise InvalidInput(f"a concept is at most {MAX_PHRASE} characters")
    veto = record_veto(session, run_id, VetoAction.ADD, phrase=phrase)
    session.commit()
    publish(run_id, settings=settings)
    return veto
