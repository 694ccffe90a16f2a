"""The store functions the worker writes an iteration with: bulk insert and bulk updates."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.exc import IntegrityError

from app.store.concepts import concepts_by_index, insert_concepts, update_concept_figures
from app.store.images import add_images, images_for, update_image_scores
from app.store.iterations import add_queries, queries_for, update_query_results
from tests.app.factories import concept_rows, image_row, make_running_run


def test_concepts_inserted_in_bulk_then_their_figures_updated(session):
    run = make_running_run(session)
    rows = concept_rows(30)
    assert insert_concepts(session, run.id, rows) == 30
    session.commit()
    with pytest.raises(IntegrityError):
        insert_concepts(session, run.id, rows[:1])
    session.rollback()
    figures = [
        {"concept_index": i, "mu": 0.5 + i, "sigma": 0.1, "probability": math.nan, "tier": 1,
         "times_queried": i % 2, "observed_reward_mean": None if i else 0.25}
        for i in range(0, 30, 3)
    ]
    assert update_concept_figures(session, run.id, [*figures, {**figures[0],
                                                              "concept_index": 999}]) == 11
    session.commit()
    stored = concepts_by_index(session, run.id, range(30))
    assert stored[3].mu == 3.5 and stored[3].probability is None  # NaN stored as NULL
    assert stored[0].observed_reward_mean == 0.25 and stored[3].observed_reward_mean is None
    assert stored[3].lemma == rows[3]["lemma"] and stored[3].map_x == rows[3]["map_x"]
    assert stored[1].mu == rows[1]["mu"]  # not given: unchanged


def test_queries_and_images_completed_after_scoring(session):
    run = make_running_run(session)
    add_queries(session, run.id, 1, [
        {"concept_index": 4, "text": "red apple", "predicted_mu": 0.2, "n_results": 8},
        {"concept_index": 5, "text": "pear"},
    ])
    add_images(session, run.id, [image_row(run.id, "a"), image_row(run.id, "b")])
    session.commit()
    update_query_results(session, run.id, 1, [
        {"concept_index": 4, "text": "red apple", "n_results": 8, "n_images": 6,
         "observed_reward": 0.7},
    ])
    a, b = image_row(run.id, "a"), image_row(run.id, "b")
    update_image_scores(session, run.id, [{**a, "reward": 0.9, "kept": True},
                                          {**b, "reward": 0.1, "kept": False}])
    session.commit()
    apple, pear = queries_for(session, run.id, 1)
    assert (apple.n_images, apple.observed_reward, apple.mu) == (6, 0.7, 0.2)
    assert (pear.n_images, pear.observed_reward) == (0, None)
    images, _ = images_for(session, run.id)
    assert [(i.title, i.reward, i.kept) for i in images] == [
        ("image a", 0.9, True), ("image b", 0.1, False)]
