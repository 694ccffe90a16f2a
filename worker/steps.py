"""The run state machine the worker's tasks drive, kept in the database.

A run goes ``queued -> running``; each iteration is two steps, each its own task:

    fetch (queue io)   apply pending vetoes, sample concepts, search, download; checkpoint the
                       fetched half; store the queries and images; send ``learn``
    learn (queue gpu)  train, score, update the policy; checkpoint; store the iteration; then
                       at the iteration boundary: ``finished`` after the configured iterations
                       (with the final figures and plots), ``cancelled`` when cancelling,
                       ``paused`` when a pause was asked, else send the next ``fetch``

Every step runs in three parts, so no transaction is open while the engine works (a person's
cancel or pause must never wait for a download or a training loop):

    A  a short transaction: read the run, act on its status, note ``running``
    B  the engine's work, outside any transaction (cooperative cancel through :class:`StopFlag`)
    C  one transaction storing the step's results (:mod:`worker.persist`); then the next task
       is sent, after the commit

Idempotent on (run, iteration, step): a message names the iteration it is for, and a step whose
work the checkpoint (``iteration``, ``pending``) and the store (the queries, the ``Iteration``
row) already hold repeats nothing and sends nothing. A message without an iteration ("take the
run's next step", sent by the app on launch and resume) always advances the run, handing a
pending fetched half to ``learn`` instead of fetching again.

One worker at a time: part A takes the run's lease (:mod:`worker.lease`), renewed while the
engine works and given back in part C's transaction, before the next task is sent. A second
delivery of a message while the first is still at work meets the lease and is put off; a
worker killed mid-step stops renewing, and the redelivered message takes the run from its last
checkpoint once the lease has run out. A step that finds its work checkpointed but not stored
(its worker died, or the store went away, between the two) stores it and hands on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.services.live import publish
from app.store.concepts import update_concept_figures
from app.store.events import add_event
from app.store.iterations import get_iteration, query_iterations
from app.store.models import Run, RunStatus, VetoAction
from app.store.runs import ENDED, get_run, set_engine_health, set_run_progress, set_run_status
from app.store.vetoes import mark_vetoes_applied, pending_vetoes
from ie_engine.evaluate import linear_probe_accuracy
from ie_engine.explorer import Explorer, IterationSummary
from ie_engine.plots import plot_curves, plot_top_concepts
from ie_engine.policy import Distribution
from worker.celery_app import FETCH_TASK, LEARN_TASK, celery_for
from worker.disk import disk_full
from worker.lease import Renewer, lease_seconds, new_token, release, take
from worker.persist import (
    concept_figures,
    persist_fetch,
    persist_learn,
    persist_start,
    write_concepts,
)
from worker.progress import StopFlag, StoreProgress
from worker.runtime import RunContext, Runtime

log = logging.getLogger(__name__)
S = RunStatus
NEIGHBOURS = 5
"""Nearest concepts of a vetoed one whose shift the ``veto-applied`` event reports."""


@dataclass(frozen=True)
class Outcome:
    """What a step did (for logs and tests): ``action`` in words, the task it sent, if any."""

    action: str
    sent: str | None = None


SEND_RETRY: Final = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5,
                     "interval_max": 2}
"""How long :func:`send` keeps trying a broker that does not answer (about a minute): the
step's work is committed by then, and a message lost now would leave the run waiting."""


def send(runtime: Runtime, task: str, run_id: int, iteration: int | None) -> None:
    """Send ``task`` for (run, iteration). Call after the commit of the step that decided it."""
    celery_for(runtime.settings).send_task(task, args=[run_id, iteration], retry=True,
                                           retry_policy=SEND_RETRY)


def _commit(runtime: Runtime, session: Session, run_id: int) -> None:
    session.commit()
    publish(run_id, settings=runtime.settings)


def _idle(session: Session, runtime: Runtime, run: Run) -> str | None:
    """Act on a status that means "do no work now"; the action in words, or None to go on."""
    status = S(run.status)
    if status in ENDED or status in (S.PAUSED, S.DRAFT):
        return f"nothing to do: the run is {status.value}"
    if status == S.CANCELLING:
        set_run_status(session, run.id, S.CANCELLED)
        _commit(runtime, session, run.id)
        runtime.forget(run.id)
        return "cancelled"
    if run.pause_requested:
        set_run_status(session, run.id, S.PAUSED)
        _commit(runtime, session, run.id)
        return "paused"
    return None


def _claim(runtime: Runtime, session: Session, run_id: int, *, next_step: bool) -> str | None:
    """Lock the run's row, take its lease (:class:`~worker.lease.Held` when another worker
    holds it), move a queued run to ``running`` and commit; the lease's token. None when a
    "next step" message finds the run no longer queued (another worker claimed it)."""
    session.commit()  # end the reads above: the lock below is the transaction's first act
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    status = S(run.status) if run is not None else S.CANCELLED
    if run is None or (next_step and status != S.QUEUED):
        session.commit()
        return None
    token = new_token()
    try:
        take(run, token, lease_seconds(runtime.settings))
    except Exception:
        session.rollback()
        raise
    if status == S.QUEUED:
        set_run_status(session, run_id, S.RUNNING)
    _commit(runtime, session, run_id)
    return token


@contextmanager
def _holding(runtime: Runtime, run_id: int, token: str) -> Iterator[None]:
    """Keep the lease ``token`` alive while the block works; give it back if the block
    ends without storing its results (an error: the retry need not wait for it to run out)."""
    renewer = Renewer(runtime.factory, run_id, token, lease_seconds(runtime.settings)).start()
    try:
        yield
    except BaseException:
        renewer.stop()
        with suppress(SQLAlchemyError), runtime.factory() as session:
            release(session, run_id, token)
            session.commit()
        raise
    renewer.stop()


def _attach(runtime: Runtime, ctx: RunContext, run_id: int, iteration: int) -> None:
    """Give the explorer this step's progress sink and cancel check."""
    ctx.explorer.attach(
        StoreProgress(runtime.factory, runtime.settings, run_id, iteration=iteration),
        StopFlag(runtime.factory, run_id, interval=runtime.settings.stop_poll_seconds))


# -- fetch ---------------------------------------------------------------------------------
def fetch_step(runtime: Runtime, run_id: int, iteration: int | None) -> Outcome:
    """The network half of the run's next iteration (see the module docstring)."""
    # ---------------------------------------------------------------- A. status
    with runtime.factory() as session:
        run = get_run(session, run_id)
        idle = _idle(session, runtime, run)
        if idle:
            return Outcome(idle)
        if iteration is None and S(run.status) != S.QUEUED:
            return Outcome("nothing to do: the run is already running")
        ctx = runtime.context(session, run)  # slow the first time: no lock is held
        ex = ctx.explorer
        if iteration is not None and (
            iteration <= ex.iteration
            or (ex.pending is not None and ex.pending.iteration == iteration
                and iteration in query_iterations(session, run_id))
        ):
            return Outcome(f"iteration {iteration} already fetched")
        token = _claim(runtime, session, run_id, next_step=iteration is None)
        if token is None:
            return Outcome("nothing to do: another worker took the run")
        with _holding(runtime, run_id, token):
            ctx = runtime.context(session, get_run(session, run_id))  # as the holder left it
            ex = ctx.explorer
            if iteration is not None and iteration <= ex.iteration:
                release(session, run_id, token)
                session.commit()
                return Outcome(f"iteration {iteration} already fetched")
            if ex.iteration >= ctx.config.iterations:
                return finish(runtime, ctx, run_id)
            if ex.pending is not None:  # resumed between the halves: learn what is fetched
                persist_fetch(session, run_id, ex, ex.pending)
                release(session, run_id, token)
                _commit(runtime, session, run_id)
                send(runtime, LEARN_TASK, run_id, ex.pending.iteration)
                return Outcome("handed the fetched half to learn", LEARN_TASK)
            if persist_start(session, run_id, ctx):
                _commit(runtime, session, run_id)
            session.commit()

            it = ex.iteration + 1
            _attach(runtime, ctx, run_id, it)
            # -------------------------------------------------------- B. warm-up, vetoes, fetch
            if ex.iteration == 0 and not ex.history:
                ex.run(0)  # the starting point: evaluation at iteration 0 (and any warm-up)
                runtime.saved(ctx)
            apply_vetoes(runtime, ctx, run_id)
            fetched = ex.fetch()
            runtime.save(ctx)

            # -------------------------------------------------------- C. store, hand on
            with runtime.factory() as session:
                persist_fetch(session, run_id, ex, fetched)
                set_run_progress(session, run_id, iteration=it, phase="fetched")
                health = runtime.engine_health(run_id)
                if health is not None:
                    set_engine_health(session, run_id, health)
                release(session, run_id, token)
                _commit(runtime, session, run_id)
    send(runtime, LEARN_TASK, run_id, it)
    return Outcome(f"fetched iteration {it}", LEARN_TASK)


def apply_vetoes(runtime: Runtime, ctx: RunContext, run_id: int) -> int:
    """Hand the run's pending vetoes, unvetoes and added concepts to the policy, checkpoint,
    mark exactly those applied and report ``veto-applied``; return how many were applied."""
    with runtime.factory() as session:
        pending = pending_vetoes(session, run_id)
        if not pending:
            return 0
        ex = ctx.explorer
        n = len(ex.vocabulary)
        vetoed = [v.concept_index for v in pending
                  if v.action == VetoAction.VETO and v.concept_index is not None
                  and v.concept_index < n]
        unvetoed = [v.concept_index for v in pending
                    if v.action == VetoAction.UNVETO and v.concept_index is not None
                    and v.concept_index < n]
        phrases = [v.phrase for v in pending if v.action == VetoAction.ADD and v.phrase]
        before = ex.policy.distribution() if vetoed else None
        removed = 0
        # In request order: a veto then an unveto of the same concept leaves it live.
        for v in pending:
            if v.concept_index is None or v.concept_index >= n:
                continue
            if v.action == VetoAction.VETO:
                removed += ex.veto([v.concept_index])
            elif v.action == VetoAction.UNVETO:
                ex.unveto([v.concept_index])
        added: list[int] = []
        if phrases:
            added = ex.add_concepts(phrases, runtime.embed(phrases))
        runtime.save(ctx)
        if added:
            write_concepts(session, run_id, ctx, added)
        update_concept_figures(session, run_id, concept_figures(ex))
        mark_vetoes_applied(session, run_id, [v.id for v in pending])
        shift = neighbour_shift(ex, vetoed, before) if before is not None else {}
        add_event(session, run_id, "veto-applied", {
            "vetoed": vetoed, "unvetoed": unvetoed, "added": added,
            "replay_removed": removed, "iteration": ex.iteration + 1, **shift,
        })
        _commit(runtime, session, run_id)
        return len(pending)


def neighbour_shift(
    ex: Explorer, vetoed: list[int], before: Distribution, *, k: int = NEIGHBOURS
) -> dict[str, Any]:
    """How the veto moved the policy near each vetoed concept: its ``k`` nearest concepts (by
    text embedding) with predicted reward and sampling probability before and after, and
    ``others_ratio``, how the probability of every other live concept changed in all (a veto
    frees the vetoed concept's share, which raises everyone else's: the neighbours fall
    *relative to the others* even when their own probability rises a little).

    ``p_removed_only``: each neighbour's probability had the veto only taken the concept out,
    without feeding it to the policy as a negative observation; ``negative_ratio``: the
    neighbours' probability after the veto over that (below 1: the negative observation pulled
    them down)."""
    after = ex.policy.distribution()
    removed = ex.policy.distribution(negatives=False)
    emb = np.asarray(ex.policy.embeddings)
    out: list[dict[str, Any]] = []
    for c in dict.fromkeys(vetoed):
        sims = emb[: len(before.mu)] @ emb[c]
        sims[c] = -np.inf
        for i in np.argsort(-sims)[:k].tolist():
            out.append({
                "vetoed": c, "index": i, "lemma": ex.vocabulary.concepts[i].lemma,
                "mu_before": float(before.mu[i]), "mu_after": float(after.mu[i]),
                "p_before": float(before.probability[i]),
                "p_after": float(after.probability[i]),
                "p_removed_only": float(removed.probability[i]),
            })
    others = np.ones(len(before.mu), dtype=bool)
    others[[n["index"] for n in out]] = False
    others[list(ex.policy.vetoed)] = False
    p_before = float(before.probability[others].sum())
    ratio = float(after.probability[: len(before.mu)][others].sum()) / p_before if p_before else 1.0
    removed_only = sum(n["p_removed_only"] for n in out)
    negative = sum(n["p_after"] for n in out) / removed_only if removed_only else 1.0
    return {"neighbours": out, "others_ratio": ratio, "negative_ratio": negative}


# -- learn ---------------------------------------------------------------------------------
def learn_step(runtime: Runtime, run_id: int, iteration: int | None) -> Outcome:
    """The compute half of the pending iteration, then the iteration boundary."""
    # ---------------------------------------------------------------- A. status
    with runtime.factory() as session:
        run = get_run(session, run_id)
        status = S(run.status)
        if status == S.CANCELLING or status in ENDED or status in (S.PAUSED, S.DRAFT):
            return Outcome(_idle(session, runtime, run) or "nothing to do")
        if iteration is None and status != S.QUEUED:
            return Outcome("nothing to do: the run is already running")
        ctx = runtime.context(session, run)
        ex = ctx.explorer
        if iteration is not None and iteration <= ex.iteration \
                and get_iteration(session, run_id, iteration) is not None:
            return _stored_already(runtime, session, ctx, run, iteration)
        token = _claim(runtime, session, run_id, next_step=iteration is None)
        if token is None:
            return Outcome("nothing to do: another worker took the run")
        with _holding(runtime, run_id, token):
            ctx = runtime.context(session, get_run(session, run_id))  # as the holder left it
            ex = ctx.explorer
            session.commit()
            if iteration is None:
                iteration = ex.pending.iteration if ex.pending is not None else ex.iteration + 1

            summary: IterationSummary | None = None
            if iteration <= ex.iteration:
                # Learned already. Store it if the worker that learned it died before storing.
                path = ex.run_dir / "iterations" / f"{iteration:04d}.json"
                if not path.exists():
                    return _let_go(runtime, run_id, token, f"iteration {iteration} already "
                                                            "learned")
                summary = IterationSummary(**json.loads(path.read_text()))
            elif ex.pending is None or ex.pending.iteration != iteration:
                return _let_go(runtime, run_id, token,
                               f"iteration {iteration} is not fetched: nothing to learn")
            else:
                # ---------------------------------------------------- B. train, score
                _attach(runtime, ctx, run_id, iteration)
                summary = ex.learn(ex.pending)
                runtime.saved(ctx)

            # -------------------------------------------------------- C. store, boundary
            with runtime.factory() as session:
                stored = persist_learn(session, run_id, ex, summary)
                release(session, run_id, token)
                _commit(runtime, session, run_id)
                if not stored:
                    return Outcome(f"iteration {iteration} already stored")
                run = get_run(session, run_id)
                if ex.iteration >= ctx.config.iterations:
                    session.commit()
                    return finish(runtime, ctx, run_id)
                idle = _idle(session, runtime, run)
                if idle:
                    return Outcome(idle)
                session.commit()
    send(runtime, FETCH_TASK, run_id, iteration + 1)
    return Outcome(f"learned iteration {iteration}", FETCH_TASK)


def _let_go(runtime: Runtime, run_id: int, token: str, action: str) -> Outcome:
    """Give the lease back and say why nothing was done."""
    with runtime.factory() as session:
        release(session, run_id, token)
        session.commit()
    return Outcome(action)


def _stored_already(runtime: Runtime, session: Session, ctx: RunContext, run: Run,
                    iteration: int) -> Outcome:
    """A learn message for a stored iteration. When the run stands exactly there (nothing of
    the next iteration fetched, no boundary reached), the worker that stored it may have died
    before it sent the next fetch: send it again (a spare one repeats nothing)."""
    ex = ctx.explorer
    if (S(run.status) == S.RUNNING and not run.pause_requested and not run.worker_id
            and ex.iteration == iteration and ex.pending is None
            and iteration < ctx.config.iterations
            and iteration + 1 not in query_iterations(session, run.id)):
        session.commit()
        send(runtime, FETCH_TASK, run.id, iteration + 1)
        return Outcome(f"iteration {iteration} already stored; sent the next fetch again",
                       FETCH_TASK)
    return Outcome(f"iteration {iteration} already stored")


# -- the end -------------------------------------------------------------------------------
def final_figures(ctx: RunContext) -> dict[str, Any]:
    """The run's closing figures: kNN and linear-probe accuracy when the target is labelled."""
    ex = ctx.explorer
    final: dict[str, Any] = {"iterations": ex.iteration, "images": len(ex.images)}
    if ctx.eval_pixels is not None and ctx.eval_labels:
        feats = ex.trainer.embed(ctx.eval_pixels).numpy()
        mean, sd = linear_probe_accuracy(feats, ctx.eval_labels, seed=ctx.config.seed)
        final["linear_probe_accuracy"] = mean
        final["linear_probe_sd"] = sd
        final["knn_accuracy"] = ex.history[-1].get("knn_accuracy") if ex.history else None
    return final


def finish(runtime: Runtime, ctx: RunContext, run_id: int) -> Outcome:
    """Close run ``run_id``: final figures, plots, ``finished``."""
    ex = ctx.explorer
    final = final_figures(ctx)
    (ex.run_dir / "final.json").write_text(json.dumps(final, indent=1))
    plot_curves(ex.history, ex.run_dir / "plots" / "curves.png")
    plot_top_concepts(ex.run_dir, ex.run_dir / "plots" / "top_concepts.png")
    with runtime.factory() as session:
        run = get_run(session, run_id)
        if S(run.status) in ENDED:
            return Outcome(f"already {run.status}")
        if S(run.status) == S.CANCELLING:
            set_run_status(session, run_id, S.CANCELLED)
        else:
            add_event(session, run_id, "log", {"message": "finished", "final": final})
            set_run_status(session, run_id, S.FINISHED)
        _commit(runtime, session, run_id)
    runtime.forget(run_id)
    return Outcome("finished")


def fail(runtime: Runtime, run_id: int, message: str) -> None:
    """Mark run ``run_id`` failed with ``message`` and an ``error`` event (a run that already
    ended stays as it is); the web engines' health as they stopped is kept with it."""
    health = runtime.engine_health(run_id)
    runtime.forget(run_id)
    with runtime.factory() as session:
        run = get_run(session, run_id)
        if S(run.status) in ENDED:
            return
        if health is not None:
            set_engine_health(session, run_id, health)
        add_event(session, run_id, "error", {"message": message})
        set_run_status(session, run_id, S.FAILED, error=message)
        _commit(runtime, session, run_id)


PAUSE_RETRY_MAX_SECONDS: Final = 30.0
"""Longest wait between two tries of recording a pause that the full disk refused."""


def out_of_space(runtime: Runtime, run_id: int, message: str) -> None:
    """The disk is full: pause run ``run_id`` with ``message`` as its error (shown on its page)
    and an ``error`` event; its last checkpoint stays, and "resume" goes on from it once
    there is room. The half-done state in memory is dropped.

    When the store refuses the pause because the disk is still full (SQLite on the same disk:
    "database or disk is full"), it is tried again after 1 s, 2 s, 4 s, ... (at most
    :data:`PAUSE_RETRY_MAX_SECONDS` apart), with a warning each time, until it is recorded:
    the run never stays ``running`` without its reason."""
    runtime.forget(run_id)
    delay = 1.0
    while True:
        try:
            _record_pause(runtime, run_id, message)
            return
        except SQLAlchemyError as exc:
            if not disk_full(exc):
                raise
            log.warning("run %s: the disk is still full, its pause is not recorded yet (%s); "
                        "trying again in %.0f s: free some space", run_id,
                        getattr(exc, "orig", exc), delay)
        time.sleep(delay)
        delay = min(2 * delay, PAUSE_RETRY_MAX_SECONDS)


def _record_pause(runtime: Runtime, run_id: int, message: str) -> None:
    with runtime.factory() as session:
        run = get_run(session, run_id)
        status = S(run.status)
        if status in ENDED or status == S.PAUSED:
            return
        if status == S.CANCELLING:
            set_run_status(session, run_id, S.CANCELLED)
        else:
            add_event(session, run_id, "error", {"message": message})
            set_run_status(session, run_id, S.PAUSED)
            run.error = message
        run.worker_id = None
        run.lease_until = None
        _commit(runtime, session, run_id)


def cancelled(runtime: Runtime, run_id: int) -> None:
    """The engine honoured a cancel: drop the half-done state, mark the run ``cancelled``."""
    runtime.forget(run_id)
    with runtime.factory() as session:
        run = get_run(session, run_id)
        if S(run.status) == S.CANCELLING:
            set_run_status(session, run_id, S.CANCELLED)
            _commit(runtime, session, run_id)
