"""Faults on real worker processes: a worker killed with SIGKILL mid-iteration, the broker
(Redis) restarted mid-run, the store (PostgreSQL) unreachable for a while. Each run finishes
with nothing lost and nothing done twice (:func:`tests.worker.faults.assert_nothing_lost`)."""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest
from sqlalchemy import select

from app.services.runs import enqueue_next
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Concept, Run, RunStatus
from app.store.vetoes import record_veto
from tests.worker.conftest import (
    POSTGRES_URL,
    drop_schema,
    make_data_dir,
    postgres_schema,
    redis_unavailable,
)
from tests.worker.faults import OwnRedis, TcpProxy, assert_nothing_lost, kill_hard, worker
from tests.worker.world import queue_run, wait_for

pytestmark = pytest.mark.slow

ITERATIONS = 3
STEPS = 6


def veto_best_concept(factory, run_id: int) -> int:
    with factory() as session:
        best = session.scalars(select(Concept).where(Concept.run_id == run_id)
                               .order_by(Concept.probability.desc()).limit(1)).one()
        record_veto(session, run_id, "veto", concept_index=best.concept_index)
        session.commit()
        return best.concept_index


def training(iteration: int):
    return lambda r: r.iteration == iteration and r.phase == "train"


def learned(logs) -> list[int]:
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    found = re.findall(r"learn\((\d+)\): (?:learned iteration \d+|finished)", text)
    return [int(n) for n in found]


def test_a_killed_worker_resumes_from_its_checkpoint_on_another(setup, world, tmp_path):
    """SIGKILL of a worker (and its pool process) while it trains iteration 2: another worker
    process takes the run from the checkpoint of the fetched half. On Redis the killed task's
    message comes back after a short visibility timeout (shorter than a learn task here, so
    every long task is also delivered twice while it runs: the second delivery waits for the
    lease and then repeats nothing); on the embedded broker the next worker's start-up queues
    the run again."""
    settings, factory = setup
    env = {"IE_BROKER_VISIBILITY_TIMEOUT": "6"} if settings.broker_url else {}
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=ITERATIONS,
                           steps=STEPS).id
    enqueue_next(run_id, settings=settings)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with worker(settings, logs[0], "a", **env) as a:
        wait_for(factory, run_id, training(1), timeout=900, log=logs[0])
        vetoed = veto_best_concept(factory, run_id)  # applied by the fetch of iteration 2
        if settings.broker_url:  # the second worker waits beside the first
            with worker(settings, logs[1], "b", **env) as b:
                run = wait_for(factory, run_id, training(2), timeout=900, log=logs[0])
                holder = int(run.worker_id.split(":")[1])
                victim = a if os.getpgid(holder) == a.pid else b
                kill_hard(victim)
                run = wait_for(factory, run_id, lambda r: r.status in (
                    RunStatus.FINISHED, RunStatus.FAILED), timeout=1200, log=logs[1])
        else:
            wait_for(factory, run_id, training(2), timeout=900, log=logs[0])
            kill_hard(a)
            with factory() as session:
                assert session.get(Run, run_id).status == RunStatus.RUNNING  # as it was left
            with worker(settings, logs[1], "b"):
                run = wait_for(factory, run_id, lambda r: r.status in (
                    RunStatus.FINISHED, RunStatus.FAILED), timeout=1200, log=logs[1])
    assert run.status == RunStatus.FINISHED, run.error
    counts = assert_nothing_lost(factory, settings, run_id, ITERATIONS)
    assert counts["vetoes"] == 1
    with factory() as session:
        assert session.scalar(select(Concept.probability).where(
            Concept.run_id == run_id, Concept.concept_index == vetoed)) == 0
    done = learned(logs)
    # Each iteration learned once, although on Redis the short visibility timeout redelivers
    # running tasks (whether a copy arrives while the lease is held depends on timing, so the
    # outcome is what is checked, not the interleaving).
    assert sorted(done) == list(range(1, ITERATIONS + 1)), done


@pytest.fixture
def own_services(world, tmp_path):
    """A Redis of this test's own (to restart) and a proxy between the worker and PostgreSQL
    (to cut); the system's servers are never stopped."""
    reason = redis_unavailable()  # the system Redis answering means redis-server is installed
    if reason:
        pytest.skip(reason)
    made = postgres_schema()
    if made is None:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer")
    schema, direct_url = made
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxied_url = direct_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    data_dir = make_data_dir(world, tmp_path / "data")
    settings = Settings(data_dir=data_dir, search_url=world["url"], database_url=direct_url,
                        broker_url=redis.url, broker_key_prefix=f"ie-{uuid.uuid4().hex[:6]}:")
    upgrade(settings.database_url)
    engine = make_engine(direct_url)
    try:
        yield settings, make_session_factory(engine), redis, proxy, proxied_url
    finally:
        engine.dispose()
        proxy.close()
        redis.stop()
        drop_schema(schema)


def test_the_run_goes_on_through_a_broker_restart_and_a_store_outage(own_services, world,
                                                                     tmp_path):
    """Redis is stopped for 3 s while iteration 1 trains, then started again on its files;
    PostgreSQL is unreachable from the worker for 8 s while iteration 2 trains (every
    connection dropped, new ones refused). The step that meets the outage is retried, and the
    run finishes with a store that agrees with its checkpoint."""
    settings, factory, redis, proxy, proxied_url = own_services
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=ITERATIONS,
                           steps=STEPS).id
    enqueue_next(run_id, settings=settings)
    log = tmp_path / "worker.log"
    worker_settings = settings.model_copy(update={"database_url": proxied_url})
    with worker(worker_settings, log, "w"):
        wait_for(factory, run_id, training(1), timeout=900, log=log)
        redis.stop()
        time.sleep(3)
        redis.start()
        wait_for(factory, run_id, training(2), timeout=900, log=log)
        proxy.cut()
        time.sleep(8)
        proxy.restore()
        run = wait_for(factory, run_id, lambda r: r.status in (
            RunStatus.FINISHED, RunStatus.FAILED), timeout=1200, log=log)
    assert run.status == RunStatus.FINISHED, run.error
    assert_nothing_lost(factory, settings, run_id, ITERATIONS)
    text = log.read_text(errors="replace")
    assert "Retry in" in text or "could not renew" in text  # the outage was met, and outlived
    assert sorted(learned([log])) == list(range(1, ITERATIONS + 1))
