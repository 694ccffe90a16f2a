"""Faults met inside a step, in this process (the code a worker runs, through the task
wrapper's error mapping): a full disk pauses the run with its reason and loses nothing; a
checkpoint write cut short leaves the previous checkpoint, from which another worker goes on."""

from __future__ import annotations

import errno
import subprocess
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

import ie_engine.checkpoint
import worker.runtime
from app.services.runs import control_run
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Event, Query, Run, RunStatus
from ie_engine.checkpoint import load_checkpoint
from tests.worker.conftest import make_data_dir
from tests.worker.faults import assert_nothing_lost
from tests.worker.world import queue_run
from worker.runtime import Runtime
from worker.steps import fetch_step, learn_step
from worker.tasks import _run_step

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(world, tmp_path):
    settings = Settings(data_dir=make_data_dir(world, tmp_path / "data"), search_url=world["url"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


def task(name: str) -> SimpleNamespace:
    """What the task wrapper reads of a Celery task: its name and retry count."""
    return SimpleNamespace(name=name, request=SimpleNamespace(retries=0))


@contextmanager
def small_disk(folder: Path):
    """``folder`` on a tmpfs of its own when this process may mount one (None otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    try:
        yield folder if done.returncode == 0 else None
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system refuses with ENOSPC."""
    filler = folder / "filler"
    with suppress(OSError), filler.open("wb") as fh:
        chunk = b"\0" * (1 << 20)
        while True:
            fh.write(chunk)
            fh.flush()
    return filler


def status(factory, run_id):
    with factory() as s:
        run = s.get(Run, run_id)
        return run.status, run.error


def test_a_full_disk_pauses_the_run_with_its_reason_and_loses_nothing(
        embedded, world, tmp_path, monkeypatch):
    settings, factory = embedded
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=2).id
    rt = Runtime(settings)
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
    with small_disk(settings.runs_dir / str(run_id)) as disk:
        assert fetch_step(rt, run_id, None).action == "fetched iteration 1"
        before = load_checkpoint(settings.runs_dir / str(run_id) / "checkpoint.pt")

        # The disk fills while iteration 1 trains: its checkpoint cannot be written.
        if disk is not None:
            filler = fill(disk)
        else:  # no tmpfs here: the same error, raised where the checkpoint is written
            def no_space(path, *_a, **_k):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            monkeypatch.setattr("ie_engine.explorer.save_checkpoint", no_space)
        assert _run_step(task("ie.learn"), "learn", run_id, 1) == "paused: disk full"
        st, error = status(factory, run_id)
        assert st == RunStatus.PAUSED
        assert "disk is full" in error and "resume" in error
        with factory() as s:
            events = [e.payload["message"] for e in s.scalars(select(Event).where(
                Event.run_id == run_id, Event.kind == "error"))]
        assert events == [error]
        state = load_checkpoint(settings.runs_dir / str(run_id) / "checkpoint.pt")
        assert state["iteration"] == before["iteration"] == 0  # the fetched half is intact
        assert state["pending"]["iteration"] == 1

        # Room again: resume goes on from the checkpoint.
        if disk is not None:
            filler.unlink()
        else:
            monkeypatch.undo()
            monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
        with factory() as session:
            control_run(session, settings, run_id, "resume")
            session.commit()
        assert status(factory, run_id) == (RunStatus.QUEUED, None)
        assert fetch_step(rt, run_id, None).action == "handed the fetched half to learn"
        assert learn_step(rt, run_id, 1).action == "learned iteration 1"

        # The disk fills during the downloads of iteration 2: nothing of it is stored.
        if disk is not None:
            filler = fill(disk)
        else:
            def no_room(*_a, **_k):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr("ie_engine.download.Downloader._store", no_room)
        assert _run_step(task("ie.fetch"), "fetch", run_id, 2) == "paused: disk full"
        assert status(factory, run_id)[0] == RunStatus.PAUSED
        with factory() as s:
            assert s.scalar(select(func.count()).select_from(Query).where(
                Query.run_id == run_id, Query.iteration == 2)) == 0
        if disk is not None:
            filler.unlink()
        else:
            monkeypatch.undo()
        with factory() as session:
            control_run(session, settings, run_id, "resume")
            session.commit()
        assert fetch_step(rt, run_id, None).action == "fetched iteration 2"
        assert learn_step(rt, run_id, 2).action == "finished"
        assert_nothing_lost(factory, settings, run_id, 2)


class Crash(BaseException):
    """The process dies here (nothing after it runs, no handler catches it)."""


def test_a_checkpoint_write_cut_before_its_rename_leaves_the_previous_one(
        embedded, world, monkeypatch):
    settings, factory = embedded
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=1).id
    rt = Runtime(settings)
    assert fetch_step(rt, run_id, None).action == "fetched iteration 1"
    path = settings.runs_dir / str(run_id) / "checkpoint.pt"
    size = path.stat().st_size

    def crash(src, dst):
        assert Path(src).stat().st_size > 0  # the new bytes are all written, not yet renamed
        raise Crash

    monkeypatch.setattr(ie_engine.checkpoint.os, "replace", crash)
    with pytest.raises(Crash):
        learn_step(rt, run_id, 1)
    monkeypatch.undo()
    assert path.stat().st_size == size
    assert load_checkpoint(path)["pending"]["iteration"] == 1  # the previous checkpoint loads

    other = Runtime(settings)  # another worker process, once the lease of the dead one is gone
    with factory() as session:
        run = session.get(Run, run_id)
        run.worker_id = run.lease_until = None
        session.commit()
    assert learn_step(other, run_id, 1).action == "finished"
    assert_nothing_lost(factory, settings, run_id, 1)
