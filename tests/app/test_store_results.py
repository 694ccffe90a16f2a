"""Iterations, queries, concepts, images and vetoes, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.store.concepts import list_concepts, upsert_concepts
from app.store.events import events_after
from app.store.images import add_images, images_for
from app.store.iterations import add_queries, get_iteration, record_iteration
from app.store.models import Query, VetoAction
from app.store.runs import set_run_progress, set_run_status
from app.store.vetoes import mark_vetoes_applied, pending_vetoes, record_veto
from tests.app.factories import make_run

# -- iterations -------------------------------------------------------------------------------


def test_record_iteration_is_idempotent_per_run_and_number(session: Session) -> None:
    run = make_run(session)
    first = record_iteration(
        session,
        run.id,
        1,
        model="gp",
        mean_image_reward=0.25,
        loss_mean=float("nan"),
        seconds={"train": 12.5},
        counts={"n_images": 40, "failure_reasons": {"timeout": 2}},
    )
    session.commit()

    again = record_iteration(session, run.id, 1, model="ridge", mean_image_reward=0.9)
    session.commit()
    session.expire_all()

    assert again.id == first.id
    stored = get_iteration(session, run.id, 1)
    assert stored is not None
    assert (stored.model, stored.mean_image_reward) == (
        "gp",
        0.25,
    )  # the second call changed nothing
    assert stored.loss_mean is None  # NaN is stored as NULL
    assert stored.counts == {"n_images": 40, "failure_reasons": {"timeout": 2}}
    assert stored.seconds == {"train": 12.5}

    other = record_iteration(session, run.id, 2, model="gp")
    assert other.id != first.id


def test_queries_are_stored_from_engine_dicts(session: Session) -> None:
    run = make_run(session)
    queries: list[dict[str, Any]] = [
        {
            "concept_index": 3,
            "text": "red parrot",
            "descriptor": "red",
            "predicted_mu": 0.1,
            "predicted_sigma": 0.2,
            "probability": 0.01,
            "tier": 0,
            "n_results": 30,
            "n_images": 28,
            "reward": float("nan"),
        },
        {"concept_index": 4, "text": "lemur"},
    ]
    assert add_queries(session, run.id, 1, queries) == 2
    rows = session.scalars(select(Query).order_by(Query.concept_index)).all()
    assert [(q.text, q.mu, q.sigma, q.observed_reward) for q in rows] == [
        ("red parrot", 0.1, 0.2, None),
        ("lemur", None, None, None),
    ]


# -- concepts ---------------------------------------------------------------------------------


def _vocabulary(n: int) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "lemma": f"concept{i:02d}",
            "text": f"concept{i:02d} (thing): number {i}",
            "source": "wordnet",
        }
        for i in range(n)
    ]


def test_upsert_concepts_inserts_then_updates_figures_only(session: Session) -> None:
    run = make_run(session)
    assert upsert_concepts(session, run.id, _vocabulary(30)) == 30
    figures = [
        {
            "concept_index": i,
            "lemma": f"concept{i:02d}",
            "mu": i / 10,
            "sigma": 0.5,
            "probability": 1 / 30,
            "tier": 2,
            "times_queried": i % 3,
            "observed_reward_mean": (None if i % 5 == 0 else i / 100),
        }
        for i in range(30)
    ]
    upsert_concepts(session, run.id, figures)
    session.commit()

    rows, total = list_concepts(session, run.id, sort="index", page_size=100)
    assert total == 30
    assert rows[7].mu == pytest.approx(0.7)
    assert rows[7].text == "concept07 (thing): number 7"  # absent from the update: kept
    assert rows[7].source == "wordnet"


def test_list_concepts_sorts_best_first_with_missing_figures_last(session: Session) -> None:
    run = make_run(session)
    rewards = {0: 0.2, 1: None, 2: 0.9, 3: 0.5, 4: None}
    upsert_concepts(
        session,
        run.id,
        [
            {"concept_index": i, "lemma": f"c{i}", "observed_reward_mean": r}
            for i, r in rewards.items()
        ],
    )
    rows, total = list_concepts(session, run.id, sort="reward")
    assert total == 5
    assert [c.concept_index for c in rows] == [2, 3, 0, 1, 4]


def test_list_concepts_pages_and_searches(session: Session) -> None:
    run = make_run(session)
    upsert_concepts(session, run.id, _vocabulary(25))
    cotton = [{"index": 25, "lemma": "cotton", "text": ""}, {"index": 25, "lemma": "100%_cotton"}]
    assert upsert_concepts(session, run.id, cotton) == 1  # given twice: the last one wins

    page2, total = list_concepts(session, run.id, sort="index", page=2, page_size=10)
    assert total == 26
    assert [c.concept_index for c in page2] == list(range(10, 20))
    last, _ = list_concepts(session, run.id, sort="index", page=3, page_size=10)
    assert [c.concept_index for c in last] == list(range(20, 26))

    found, n = list_concepts(session, run.id, search="CONCEPT1")  # case ignored
    assert n == 10 and {c.lemma for c in found} == {f"concept1{i}" for i in range(10)}
    _, n = list_concepts(session, run.id, search="number 2")
    assert n == 6  # "number 2", "number 20" ... "number 24"
    literal, n = list_concepts(session, run.id, search="0%_")  # % and _ are not wildcards
    assert n == 1 and literal[0].lemma == "100%_cotton"


def test_concepts_of_another_run_are_not_listed(session: Session) -> None:
    run, other = make_run(session), make_run(session)
    upsert_concepts(session, run.id, _vocabulary(3))
    upsert_concepts(session, other.id, _vocabulary(5))
    assert list_concepts(session, run.id)[1] == 3


# -- images -----------------------------------------------------------------------------------


def _image(sha: str, **extra: Any) -> dict[str, Any]:
    return {
        "iteration": 1,
        "concept_index": 0,
        "path": f"runs/1/images/{sha}.jpg",
        "sha256": sha * 64 if len(sha) == 1 else sha,
        "title": "t",
        **extra,
    }


def test_add_images_skips_a_sha256_the_run_already_has(session: Session) -> None:
    run, other = make_run(session), make_run(session)
    assert add_images(session, run.id, [_image("a"), _image("b"), _image("a")]) == 2
    assert add_images(session, run.id, [_image("b", iteration=2), _image("c", iteration=2)]) == 1
    assert add_images(session, other.id, [_image("a")]) == 1  # per run, not global
    session.commit()
    _, total = images_for(session, run.id)
    assert total == 3


def test_images_for_filters_by_concept_and_iteration_best_first(session: Session) -> None:
    run = make_run(session)
    add_images(
        session,
        run.id,
        [
            _image("a", concept_index=1, iteration=1, reward=0.1),
            _image("b", concept_index=1, iteration=2, reward=float("nan")),
            _image("c", concept_index=1, iteration=2, reward=0.7),
            _image("d", concept_index=2, iteration=2, reward=0.9, kept=True),
        ],
    )
    by_concept, n = images_for(session, run.id, concept_index=1)
    assert n == 3
    assert [i.sha256[0] for i in by_concept] == ["c", "a", "b"]  # NaN reward (NULL) last
    by_iteration, n = images_for(session, run.id, iteration=2)
    assert n == 3 and [i.sha256[0] for i in by_iteration] == ["d", "c", "b"]
    both, n = images_for(session, run.id, concept_index=1, iteration=2, page=2, page_size=1)
    assert n == 2 and [i.sha256[0] for i in both] == ["b"]
    assert by_iteration[0].kept is True and math.isclose(by_iteration[0].reward or 0, 0.9)


# -- vetoes -----------------------------------------------------------------------------------


def test_vetoes_flip_the_concept_and_wait_until_applied(session: Session) -> None:
    run = make_run(session)
    upsert_concepts(session, run.id, _vocabulary(3))
    set_run_progress(session, run.id, iteration=2)
    veto = record_veto(session, run.id, "veto", concept_index=1)
    added = record_veto(session, run.id, VetoAction.ADD, phrase="  macaw  ")
    session.commit()

    assert veto.iteration == 2 and added.phrase == "macaw"
    assert list_concepts(session, run.id, vetoed=True)[1] == 1
    assert [v.id for v in pending_vetoes(session, run.id)] == [veto.id, added.id]

    late = record_veto(session, run.id, "unveto", concept_index=1)  # arrives meanwhile
    assert mark_vetoes_applied(session, run.id, [veto.id, added.id]) == 2
    assert mark_vetoes_applied(session, run.id, [veto.id]) == 0  # already applied
    session.commit()

    assert [v.id for v in pending_vetoes(session, run.id)] == [late.id]
    assert list_concepts(session, run.id, vetoed=True)[1] == 0
    assert [e.kind for e in events_after(session, run.id)] == ["veto", "veto", "veto"]


def test_vetoes_are_checked(session: Session) -> None:
    run = make_run(session)
    upsert_concepts(session, run.id, _vocabulary(2))
    with pytest.raises(NotFound, match="no concept 9"):
        record_veto(session, run.id, "veto", concept_index=9)
    with pytest.raises(InvalidInput, match="phrase"):
        record_veto(session, run.id, "add", phrase="  ")
    with pytest.raises(InvalidInput):
        record_veto(session, run.id, "veto")
    set_run_status(session, run.id, "cancelled")
    with pytest.raises(Conflict, match="has ended"):
        record_veto(session, run.id, "veto", concept_index=0)
