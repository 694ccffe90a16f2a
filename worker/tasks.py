"""The worker's two tasks: thin wrappers around :mod:`worker.steps`, with ids in messages.

``ie.fetch(run_id, iteration)`` runs on queue ``io``, ``ie.learn(run_id, iteration)`` on queue
``gpu``; ``iteration`` None means "the run's next step" (launch, resume).

The one retry policy of the worker, and the one place its errors are mapped:

* the store or the broker cannot be reached (``sqlalchemy.exc.OperationalError``, kombu's
  ``OperationalError``, ``ConnectionError``): retried with exponential backoff, up to
  :data:`MAX_RETRIES` times, then the run fails;
* another worker holds the run's lease (:class:`~worker.lease.Held`: a second delivery of a
  message whose first is still at work): the message is sent again for when the lease runs
  out, without counting as a retry; the work is then found done and repeated not;
* the disk is full (``ENOSPC``, ``EDQUOT``, SQLite's "database or disk is full" or PostgreSQL's
  ``disk_full``, told apart from an unreachable server by its SQLSTATE; also a step
  that finds the disk reserve gone and no room to make it again, :mod:`worker.disk`): the
  reserve is deleted and the run ``paused`` with the reason as its error, to be resumed from
  its last checkpoint once there is room (the pause waits for room if the store refuses it);
* the engine honoured a cancel (:class:`~ie_engine.errors.Cancelled`): the run is ``cancelled``;
* any other engine error (:class:`~ie_engine.errors.ExplorerError`): the run is ``failed`` with
  the engine's message and an ``error`` event;
* anything else: the run is ``failed`` with the error's type and message (logged in full).

On start-up a worker sends the next step of every ``queued`` run (a launch whose message was
lost while the broker was down is picked up when a worker starts).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from celery import Task
from celery.signals import worker_ready
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as StoreError
from sqlalchemy.exc import SQLAlchemyError

from app.settings import get_settings
from app.store.db import normalise_url
from worker.celery_app import FETCH_TASK, LEARN_TASK, app
from worker.disk import disk_full

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)

MAX_RETRIES: Final = 5
"""Retries of a step whose store or broker could not be reached."""
TRANSIENT: Final = (StoreError, BrokerError, ConnectionError)
"""Errors worth a retry: the work itself did not fail."""


def _run_step(task: Task, step: str, run_id: int, iteration: int | None) -> str:
    from ie_engine.errors import Cancelled, ExplorerError
    from worker import steps
    from worker.celery_app import celery_for
    from worker.lease import Held
    from worker.runtime import get_runtime

    runtime = get_runtime()
    call = steps.fetch_step if step == "fetch" else steps.learn_step
    try:
        runtime.reserve.ensure()
        outcome = call(runtime, run_id, iteration)
    except Held as exc:
        log.info("run %s %s(%s): %s; again later", run_id, step, iteration, exc)
        celery_for(runtime.settings).send_task(
            task.name, args=[run_id, iteration], countdown=exc.retry_in + 0.5)
        return "held by another worker"
    except TRANSIENT as exc:
        if disk_full(exc):  # SQLite on a full disk, or PostgreSQL's server
            return _paused_full(runtime, run_id, step, exc)
        runtime.forget(run_id)
        if task.request.retries >= MAX_RETRIES:
            steps.fail(runtime, run_id, f"{step}: the store or the broker stayed unreachable: "
                                        f"{exc}")
            return "failed"
        raise task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries)) from exc
    except Cancelled:
        steps.cancelled(runtime, run_id)
        return "cancelled"
    except OSError as exc:
        if not disk_full(exc):
            log.exception("run %s: unexpected error in %s", run_id, step)
            steps.fail(runtime, run_id, f"{step}: internal error: {type(exc).__name__}: {exc}")
            return "failed"
        return _paused_full(runtime, run_id, step, exc)
    except ExplorerError as exc:
        log.warning("run %s failed in %s: %s", run_id, step, exc)
        steps.fail(runtime, run_id, f"{step}: {exc}")
        return "failed"
    except Exception as exc:
        log.exception("run %s: unexpected error in %s", run_id, step)
        steps.fail(runtime, run_id, f"{step}: internal error: {type(exc).__name__}: {exc}")
        return "failed"
    log.info("run %s %s(%s): %s", run_id, step, iteration, outcome.action)
    return outcome.action


def _paused_full(runtime: Runtime, run_id: int, step: str, exc: Exception) -> str:
    """The disk is full: free the reserve, then pause the run with the reason."""
    from worker import steps

    log.warning("run %s paused in %s, the disk is full: %s", run_id, step, exc)
    runtime.reserve.release()
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
    else:
        url = normalise_url(runtime.settings.database_url)
        name = url.database or "the store"
        where = (f" (the PostgreSQL server of database {name})"
                 if url.get_backend_name() == "postgresql" else f" ({name})")
    steps.out_of_space(runtime, run_id, f"paused: the disk is full{where} during {step}; "
                                        "free some space, then resume the run")
    return "paused: disk full"


@app.task(name=FETCH_TASK, bind=True, max_retries=MAX_RETRIES)
def fetch(self: Task, run_id: int, iteration: int | None = None) -> str:
    """Sample, search and download the run's next iteration (queue ``io``)."""
    return _run_step(self, "fetch", int(run_id), None if iteration is None else int(iteration))


@app.task(name=LEARN_TASK, bind=True, max_retries=MAX_RETRIES)
def learn(self: Task, run_id: int, iteration: int | None = None) -> str:
    """Train, score and update the policy for the fetched iteration (queue ``gpu``)."""
    return _run_step(self, "learn", int(run_id), None if iteration is None else int(iteration))


@worker_ready.connect
def send_queued_runs(**_: Any) -> None:
    """Send the next step of every queued run (see the module docstring).

    On the embedded default (no ``broker_url``: one machine, one worker) a run still marked
    ``running`` or ``cancelling`` was held by a worker that was stopped mid-task (its message
    is gone with it): it is queued again, to go on from its last checkpoint, or cancelled, and
    the dead worker's lease is dropped.
    """
    from app.store.db import make_engine, make_session_factory
    from app.store.models import RunStatus
    from app.store.runs import list_runs, set_run_status
    from worker.celery_app import celery_for

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if not settings.broker_url:
                for run in list_runs(session, status=RunStatus.RUNNING, limit=1000):
                    set_run_status(session, run.id, RunStatus.QUEUED)
                for run in list_runs(session, status=RunStatus.CANCELLING, limit=1000):
                    set_run_status(session, run.id, RunStatus.CANCELLED)
                for run in list_runs(session, status=RunStatus.QUEUED, limit=1000):
                    run.worker_id = None  # held by a worker of this machine that is gone
                    run.lease_until = None
                session.commit()
            ids = [r.id for r in list_runs(session, status=RunStatus.QUEUED, limit=1000)]
    except SQLAlchemyError as exc:
        log.warning("start-up scan of queued runs failed: %s", exc)
        return
    finally:
        engine.dispose()
    for run_id in ids:
        celery_for(settings).send_task(FETCH_TASK, args=[run_id, None])
