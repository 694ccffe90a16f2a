"""A small world for worker tests: a data folder with a tiny offline web, a tiny vocabulary, a
labelled photo target, a live corpus server on loopback, and real worker processes.

Fake only at the seam: the web is a real (small) corpus built from Debian's image packages and
served over HTTP; the worker is a real ``celery worker`` process; the store is a real database
after the real migrations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from app.store.models import Run, RunStatus, Upload
from app.store.runs import create_run, set_run_status
from app.store.uploads import create_upload
from ie_engine.config import VocabularyConfig, make_config

ROOT = Path(__file__).resolve().parents[2]
WEB_CATEGORIES = ("animals/birds", "food/fruit", "plants/flowers", "recreation/music",
                  "transportation")
VOCAB = VocabularyConfig(max_concepts=150, extra_concepts=("bird", "strawberry", "tulip"),
                         descriptors="none")


def tiny_config(*, iterations: int = 2, steps: int | None = None) -> dict[str, Any]:
    """A tiny-preset run configuration with the tiny vocabulary."""
    cfg = make_config("tiny", seed=3, iterations=iterations, vocabulary=VOCAB)
    if steps is not None:
        cfg = replace(cfg, train=replace(cfg.train, steps_per_iteration=steps))
    return cfg.to_dict()


def add_upload(session: Session, settings: Settings, target_dir: Path) -> Upload:
    """An upload whose folder holds a copy of ``target_dir`` (sub-folders = labels)."""
    upload = create_upload(session, name=target_dir.name, labelled=True)
    folder = settings.data_dir / upload.folder
    shutil.copytree(target_dir, folder)
    upload.n_accepted = sum(1 for p in folder.rglob("*") if p.is_file())
    session.flush()
    return upload


def queue_run(session: Session, settings: Settings, target_dir: Path,
              **config: Any) -> Run:
    """A queued run on a fresh upload of ``target_dir`` (committed)."""
    upload = add_upload(session, settings, target_dir)
    run = create_run(session, name="worker test", config=tiny_config(**config),
                     upload_id=upload.id)
    set_run_status(session, run.id, RunStatus.QUEUED)
    session.commit()
    return run


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker process for ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IE_")}
    env.update({
        "IE_DATA_DIR": str(settings.data_dir),
        "IE_DATABASE_URL": settings.database_url,
        "IE_SEARCH_URL": settings.search_url,
        "IE_PROGRESS_INTERVAL_SECONDS": "0.2",
        "IE_STOP_POLL_SECONDS": "0.5",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "2",
    })
    if settings.max_train_steps:
        env["IE_MAX_TRAIN_STEPS"] = str(settings.max_train_steps)
    if settings.vocabulary_max_concepts:
        env["IE_VOCABULARY_MAX_CONCEPTS"] = str(settings.vocabulary_max_concepts)
    if settings.broker_url:
        env["IE_BROKER_URL"] = settings.broker_url
        env["IE_BROKER_KEY_PREFIX"] = settings.broker_key_prefix
    return env


@contextmanager
def worker_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` on queues io and gpu, stopped (TERM, then KILL) at the end."""
    celery = Path(sys.executable).parent / "celery"
    cmd = [str(celery), "-A", "worker.celery_app", "worker", "-Q", "io,gpu", "-c", "1",
           "--prefetch-multiplier", "1", "-l", "info", "--without-gossip", "--without-mingle",
           "--without-heartbeat", "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(settings), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_for(factory: sessionmaker[Session], run_id: int, ok: Callable[[Run], bool], *,
             timeout: float, log: Path | None = None) -> Run:
    """Poll run ``run_id`` until ``ok(run)``; on timeout fail with the run and the worker log."""
    deadline = time.monotonic() + timeout
    while True:
        with factory() as session:
            run = session.get(Run, run_id)
            assert run is not None
            if ok(run):
                return run
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
                raise AssertionError(
                    f"run {run_id} is {run.status} (iteration {run.iteration}, phase "
                    f"{run.phase}, error {run.error!r}) after {timeout}s\n{tail}")
        time.sleep(0.3)
