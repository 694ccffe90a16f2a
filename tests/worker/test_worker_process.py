"""A real ``celery worker`` process runs tiny explorations end to end, on the embedded default
(SQLite + kombu's filesystem broker) and on the scaled set-up (PostgreSQL + Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.services.runs import control_run, enqueue_next
from app.store.models import Event, Image, Iteration, Query, RunStatus
from tests.worker.world import queue_run, wait_for, worker_process
from worker.celery_app import FETCH_TASK, LEARN_TASK, celery_for

pytestmark = pytest.mark.slow


def test_a_run_goes_from_queued_to_finished(setup, world, tmp_path):
    settings, factory = setup
    with factory() as session:
        run_id = queue_run(session, settings, world["target"]).id
    enqueue_next(run_id, settings=settings)
    enqueue_next(run_id, settings=settings)  # a second "next step" message does nothing
    log = tmp_path / "worker.log"
    with worker_process(settings, log):
        run = wait_for(factory, run_id, lambda r: r.status in (
            RunStatus.FINISHED, RunStatus.FAILED), timeout=300, log=log)
        assert run.status == RunStatus.FINISHED, run.error
        with factory() as session:
            counts = (
                session.scalar(select(func.count()).select_from(Image)),
                session.scalar(select(func.count()).select_from(Query)),
            )
        # Redelivered messages of work already done repeat nothing.
        celery = celery_for(settings)
        for it in (1, 2):
            celery.send_task(FETCH_TASK, args=[run_id, it])
            celery.send_task(LEARN_TASK, args=[run_id, it])
        celery.send_task(FETCH_TASK, args=[run_id, None])
        wait_for(factory, run_id, lambda r: True, timeout=1)
        import time

        time.sleep(5)
    with factory() as session:
        numbers = list(session.scalars(
            select(Iteration.number).where(Iteration.run_id == run_id).order_by(Iteration.number)))
        assert numbers == [1, 2]
        images = list(session.scalars(select(Image).where(Image.run_id == run_id)))
        queries = list(session.scalars(select(Query).where(Query.run_id == run_id)))
        assert (len(images), len(queries)) == counts
        assert images and queries
        assert {q.iteration for q in queries} == {1, 2}
        assert all(q.mu is not None and q.probability is not None for q in queries)
        assert all(i.reward is not None for i in images)
        assert any(i.kept for i in images)
        for image in images[:5]:
            assert (settings.data_dir / image.path).is_file()
        kinds = set(session.scalars(select(Event.kind).where(Event.run_id == run_id)))
        assert {"status", "phase", "queries", "images", "iteration", "concepts"} <= kinds
        knn = [it.knn_accuracy for it in session.scalars(
            select(Iteration).where(Iteration.run_id == run_id))]
        assert all(k is not None for k in knn)  # the target is labelled: kNN each iteration
    assert (settings.runs_dir / str(run_id) / "final.json").is_file()


def test_cancel_stops_a_running_run(setup, world, tmp_path):
    settings, factory = setup
    if settings.broker_url:
        pytest.skip("one backend is enough for cancelling")
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=50, steps=400).id
    enqueue_next(run_id, settings=settings)
    log = tmp_path / "worker.log"
    with worker_process(settings, log):
        wait_for(factory, run_id, lambda r: r.phase == "train", timeout=240, log=log)
        with factory() as session:
            control_run(session, settings, run_id, "cancel")
        run = wait_for(factory, run_id, lambda r: r.status == RunStatus.CANCELLED,
                       timeout=20, log=log)
    assert run.iteration < 50
