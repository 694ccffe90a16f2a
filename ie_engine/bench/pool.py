"""Benchmark runs in parallel worker processes.

Every run is independent (its own seed, run folder and ``result.json``) and trains with one
torch thread, so on N cores N runs side by side finish about N times sooner than one after the
other. Each worker process loads the shared part once (corpus index, vocabulary, its cached
embeddings memory-mapped, so their pages are shared between the workers) and then runs whatever
it is handed. The loopback search servers stay in the parent process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ie_engine.bench.arms import Arm, ArmSettings, Init, Target, World, run_arm
from ie_engine.config import VocabularyConfig
from ie_engine.types import ProgressSink


@dataclass(frozen=True)
class WorldSpec:
    """What a worker needs to rebuild the :class:`World` (paths and settings: cheap to send)."""

    corpus_dir: Path
    data_dir: Path
    embeddings_dir: Path
    vocabulary: VocabularyConfig
    targets: dict[str, Target]


@dataclass(frozen=True)
class RunJob:
    """One run of the schedule."""

    target: str
    init: Init
    seed: int
    arm: Arm
    run_dir: Path
    engine_url: str | None


def build_world(corpus_dir: Path, data_dir: Path, vocabulary: VocabularyConfig, *,
                embeddings_dir: Path | None = None, index: Any = None, embedder: Any = None,
                progress: ProgressSink | None = None) -> World:
    """The shared world of the runs: corpus index, vocabulary and its embeddings (computed
    once and cached in ``embeddings_dir``, default ``data_dir/embeddings``). The benchmark's
    parent process and every worker build it here, so both see the same world."""
    from ie_engine.search import CorpusIndex
    from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary, load_or_compute_embeddings

    if embedder is None:  # loads its model only if a label-set run embeds class names
        embedder = MiniLMEmbedder()
    vocab = build_vocabulary(vocabulary, data_dir=data_dir)
    embeddings = load_or_compute_embeddings(vocab.texts(), embedder,
                                            embeddings_dir or data_dir / "embeddings",
                                            progress=progress)
    return World(index=index if index is not None else CorpusIndex.load(corpus_dir),
                 vocab=vocab, embeddings=np.asarray(embeddings), embed_phrases=embedder.embed)


def load_world(spec: WorldSpec) -> World:
    """The shared world of the runs, from the caches the parent process filled."""
    return build_world(spec.corpus_dir, spec.data_dir, spec.vocabulary,
                       embeddings_dir=spec.embeddings_dir)


_worker: dict[str, Any] = {}


def _init_worker(spec: WorldSpec) -> None:
    _worker["world"] = load_world(spec)
    _worker["targets"] = spec.targets


def _run_job(job: RunJob, base_checkpoint: str | None, settings: ArmSettings,
             keep_run: bool) -> dict[str, Any]:
    return run_arm(_worker["world"], _worker["targets"][job.target], arm=job.arm, seed=job.seed,
                   init=job.init, base_checkpoint=base_checkpoint, settings=settings,
                   run_dir=job.run_dir, engine_url=job.engine_url, keep_run=keep_run)


def default_jobs() -> int:
    """Parallel runs by default: one per core, at most four (each run holds about 1 GB)."""
    return max(1, min(4, os.cpu_count() or 1))


def run_jobs(
    spec: WorldSpec,
    jobs: Sequence[RunJob],
    *,
    workers: int,
    base_checkpoint: str | None,
    settings: ArmSettings,
    keep_run: bool = False,
    on_done: Callable[[RunJob, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``workers`` spawned processes; results in the order of ``jobs``.

    ``on_done`` is called in this process as each run finishes. The first run that fails
    cancels the ones not yet started and its error is raised once the running ones end (their
    results are saved in their folders, so a restart skips them)."""
    results: dict[int, dict[str, Any]] = {}
    ctx = multiprocessing.get_context("spawn")  # no forked copies of threads or torch state
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1)), mp_context=ctx,
                             initializer=_init_worker, initargs=(spec,)) as pool:
        pending: dict[Future[dict[str, Any]], int] = {
            pool.submit(_run_job, job, base_checkpoint, settings, keep_run): i
            for i, job in enumerate(jobs)
        }
        error: BaseException | None = None
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                        for other in pending:
                            other.cancel()
                    continue
                results[i] = fut.result()
                if on_done is not None:
                    on_done(jobs[i], results[i])
        if error is not None:
            raise error
    return [results[i] for i in range(len(jobs))]


__all__ = ["RunJob", "WorldSpec", "build_world", "default_jobs", "load_world", "run_jobs"]
