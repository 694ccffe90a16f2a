"""The run state machine step by step, in this process (the same code a worker runs): every
step is idempotent on (run, iteration), and a veto recorded mid-run reaches the policy at the
next fetch."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Concept, Event, Image, Iteration, Query, RunStatus, Veto
from app.store.vetoes import record_veto
from tests.worker.conftest import make_data_dir
from tests.worker.world import queue_run
from worker.runtime import Runtime
from worker.steps import fetch_step, learn_step

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(world, tmp_path):
    settings = Settings(data_dir=make_data_dir(world, tmp_path / "data"), search_url=world["url"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


def counts(factory, run_id):
    with factory() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t).where(t.run_id == run_id))
            for t in (Iteration, Query, Image, Event)
        )


def test_steps_are_idempotent_and_a_veto_applies_at_the_next_fetch(embedded, world):
    settings, factory = embedded
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=3).id
    rt = Runtime(settings)
    assert fetch_step(rt, run_id, None).action == "fetched iteration 1"
    assert fetch_step(rt, run_id, None).action.startswith("nothing to do")  # launch sent twice
    before = counts(factory, run_id)
    assert fetch_step(rt, run_id, 1).action == "iteration 1 already fetched"
    other = Runtime(settings)  # another worker process, reading the checkpoint
    assert fetch_step(other, run_id, 1).action == "iteration 1 already fetched"
    assert counts(factory, run_id)[:3] == before[:3]

    assert learn_step(other, run_id, 1).action == "learned iteration 1"  # the other one learns
    after_learn = counts(factory, run_id)
    # rt reloads; the run stands right after iteration 1, so the next fetch is sent again in
    # case the worker that stored it died before sending it (a spare fetch repeats nothing)
    assert learn_step(rt, run_id, 1).action.startswith("iteration 1 already stored")
    assert learn_step(other, run_id, 1).action.startswith("iteration 1 already stored")
    assert counts(factory, run_id)[:3] == after_learn[:3]

    # -- veto the concept the policy likes best now, mid-run
    with factory() as session:
        best = session.scalars(
            select(Concept).where(Concept.run_id == run_id, Concept.probability.is_not(None))
            .order_by(Concept.probability.desc()).limit(1)).one()
        concepts = list(session.scalars(
            select(Concept).where(Concept.run_id == run_id).order_by(Concept.concept_index)))
        mu_before = {c.concept_index: c.mu for c in concepts}
        record_veto(session, run_id, "veto", concept_index=best.concept_index)
        session.commit()
    vetoed = best.concept_index
    emb = np.asarray(other._vocabularies[next(iter(other._vocabularies))][1])
    sims = emb @ emb[vetoed]
    neighbours = [int(i) for i in np.argsort(-sims)[1:6]]

    assert fetch_step(rt, run_id, 2).action == "fetched iteration 2"
    with factory() as session:
        veto = session.scalars(select(Veto).where(Veto.run_id == run_id)).one()
        assert veto.applied and veto.applied_at is not None
        kinds = list(session.scalars(select(Event.kind).where(Event.run_id == run_id)))
        assert "veto-applied" in kinds
        queried = set(session.scalars(
            select(Query.concept_index).where(Query.run_id == run_id, Query.iteration == 2)))
        assert vetoed not in queried
        after = {c.concept_index: c for c in session.scalars(
            select(Concept).where(Concept.run_id == run_id))}
        assert after[vetoed].probability == 0.0
        # The veto is a negative observation: its neighbours' predicted reward fell.
        drop = [mu_before[i] - after[i].mu for i in neighbours]
        assert np.mean(drop) > 0, drop
    assert learn_step(rt, run_id, 2).action == "learned iteration 2"
    assert fetch_step(rt, run_id, 3).action == "fetched iteration 3"
    assert learn_step(rt, run_id, 3).action == "finished"
    with factory() as session:
        queried = set(session.scalars(
            select(Query.concept_index).where(Query.run_id == run_id, Query.iteration >= 2)))
        assert vetoed not in queried
        numbers = list(session.scalars(select(Iteration.number).where(
            Iteration.run_id == run_id).order_by(Iteration.number)))
        assert numbers == [1, 2, 3]
        from app.store.models import Run

        assert session.get(Run, run_id).status == RunStatus.FINISHED
