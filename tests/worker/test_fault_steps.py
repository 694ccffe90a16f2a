"""Faults met inside a step, in this process (the code a worker runs, through the task
wrapper's error mapping): a full disk pauses the run with its reason and loses nothing, also
when the store (SQLite) is on that disk; a checkpoint write cut short leaves the previous
checkpoint, from which another worker goes on."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

import ie_engine.checkpoint
import ie_engine.download
import ie_engine.explorer
import worker.runtime
import worker.steps
from app.main import create_app
from app.services.runs import control_run
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Concept, Event, Image, Query, Run, RunStatus, Veto
from app.store.vetoes import record_veto
from ie_engine.checkpoint import load_checkpoint
from tests.app.auth import logged_in
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
def small_disk(folder: Path, size: str = "400m"):
    """``folder`` on a tmpfs of its own when this process may mount one (None otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    try:
        yield folder if done.returncode == 0 else None
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write a file in ``folder`` until the file system refuses with ENOSPC."""
    filler = folder / name
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


def test_postgresql_out_of_disk_pauses_the_run_instead_of_retrying_it(
        embedded, world, monkeypatch):
    import psycopg

    settings, factory = embedded
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=2).id
    rt = Runtime(settings)
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)

    def server_disk_full(*_a, **_k):
        raise OperationalError("INSERT INTO images ...", {}, psycopg.errors.DiskFull(
            'could not extend file "base/16384/16385": No space left on device'))

    monkeypatch.setattr(worker.steps, "fetch_step", server_disk_full)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "paused: disk full"
    st, error = status(factory, run_id)
    assert st == RunStatus.PAUSED
    assert "disk is full" in error and "during fetch" in error and "resume" in error


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


# -- the store on the full disk too --------------------------------------------------------
RESERVE_MB = 8


@pytest.fixture
def one_disk(world, tmp_path, monkeypatch):
    """The whole data folder (the SQLite store in WAL mode, the run folders, the disk reserve)
    on one 400 MB tmpfs, as on a laptop; a runtime of a worker on it."""
    with small_disk(tmp_path / "data") as disk:
        if disk is None:
            pytest.skip("needs a tmpfs of its own for the data folder (mount, as root)")
        settings = Settings(data_dir=make_data_dir(world, disk), search_url=world["url"],
                            disk_reserve_mb=RESERVE_MB)
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        rt = Runtime(settings)
        monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
        try:
            yield settings, make_session_factory(engine), rt
        finally:
            engine.dispose()


def empty_wal(settings: Settings) -> None:
    """Checkpoint the store's WAL into the database and truncate it, so that its next commits
    need new room on the disk (a WAL that is reused from its start needs none)."""
    with sqlite3.connect(settings.data_dir / "ie.db", timeout=10) as conn:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    assert busy == 0


def fill_all(settings: Settings, factory, run_id: int) -> tuple[Path, bool]:
    """Fill the data folder's disk: the filler, and whether the store then refused a commit
    ("database or disk is full"): one that renames the run, so the name stays when it is
    refused (a commit that changes no byte writes nothing, and would prove nothing)."""
    filler = fill(settings.data_dir)
    try:
        with factory() as s:
            s.execute(text("UPDATE runs SET name = name || '!' WHERE id = :id"), {"id": run_id})
            s.commit()
    except OperationalError as exc:
        return filler, "database or disk is full" in str(exc)
    return filler, False


def when_called(monkeypatch, owner, name: str, act, *, after: int = 0) -> list:
    """Call ``act()`` once, before the call of ``owner.name`` that follows ``after`` calls
    (several threads calling it count as one sequence); what ``act`` returned is appended to
    the list returned."""
    real = getattr(owner, name)
    done: list = []
    calls = [0]
    lock = threading.Lock()

    def wrapper(*args, **kwargs):
        with lock:
            calls[0] += 1
            if not done and calls[0] > after:
                done.append(act())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return done


def error_events(factory, run_id: int) -> list[str]:
    with factory() as s:
        return [e.payload["message"] for e in s.scalars(select(Event).where(
            Event.run_id == run_id, Event.kind == "error").order_by(Event.id))]


def resume(factory, settings: Settings, run_id: int) -> None:
    with factory() as session:
        control_run(session, settings, run_id, "resume")
        session.commit()


def test_a_disk_full_under_the_store_too_pauses_the_run_with_its_reason(
        one_disk, world, monkeypatch):
    settings, factory, rt = one_disk
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=2).id
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "fetched iteration 1"
    assert rt.reserve.path.stat().st_size == RESERVE_MB << 20
    checkpoint = settings.runs_dir / str(run_id) / "checkpoint.pt"

    # The disk fills while iteration 1 trains, store included: its checkpoint cannot be written.
    empty_wal(settings)
    filled = when_called(monkeypatch, ie_engine.explorer, "save_checkpoint",
                         lambda: fill_all(settings, factory, run_id))
    assert _run_step(task("ie.learn"), "learn", run_id, 1) == "paused: disk full"
    [(filler, store_refused)] = filled
    assert store_refused, "the store had room: the case is not the one tried"
    monkeypatch.undo()
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
    st, error = status(factory, run_id)
    assert st == RunStatus.PAUSED
    assert "disk is full" in error and "during learn" in error and "resume" in error
    assert error_events(factory, run_id) == [error]
    assert not rt.reserve.path.exists()  # spent on recording the pause
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == 0 and state["pending"]["iteration"] == 1  # the fetched half

    # The app shows why, while the disk is still full.
    with logged_in(create_app(settings)) as client:
        assert error in client.get(f"/runs/{run_id}/status").text
        assert "disk is full" in client.get(f"/runs/{run_id}/log").text

    # Resumed on a disk still full: no room for the reserve, so paused again at once.
    resume(factory, settings, run_id)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "paused: disk full"
    st, again = status(factory, run_id)
    assert st == RunStatus.PAUSED and "disk is full" in again
    assert error_events(factory, run_id) == [error, again]
    assert load_checkpoint(checkpoint)["pending"]["iteration"] == 1

    # Room again: resume makes the reserve again and goes on from the checkpoint.
    filler.unlink()
    resume(factory, settings, run_id)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == \
        "handed the fetched half to learn"
    assert rt.reserve.path.stat().st_size == RESERVE_MB << 20
    assert _run_step(task("ie.learn"), "learn", run_id, 1) == "learned iteration 1"

    # A veto for iteration 2; the disk fills between its checkpoint and its commit (while the
    # policy's figures are written).
    with factory() as session:
        best = session.scalars(select(Concept).where(Concept.run_id == run_id)
                               .order_by(Concept.probability.desc()).limit(1)).one()
        record_veto(session, run_id, "veto", concept_index=best.concept_index)
        session.commit()
    empty_wal(settings)
    filled = when_called(monkeypatch, worker.steps, "update_concept_figures",
                         lambda: fill_all(settings, factory, run_id))
    assert _run_step(task("ie.fetch"), "fetch", run_id, 2) == "paused: disk full"
    [(filler, store_refused)] = filled
    assert store_refused
    monkeypatch.undo()
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
    assert status(factory, run_id)[0] == RunStatus.PAUSED
    assert set(load_checkpoint(checkpoint)["policy"]["vetoed"]) == {best.concept_index}
    with factory() as s:  # the checkpoint holds the veto, the store has it pending
        assert s.scalars(select(Veto.applied).where(Veto.run_id == run_id)).all() == [False]
    filler.unlink()
    resume(factory, settings, run_id)

    # Then it fills during the downloads of iteration 2, after 5 images: nothing of them is
    # stored.
    empty_wal(settings)
    filled = when_called(monkeypatch, ie_engine.download.Downloader, "_store",
                         lambda: fill_all(settings, factory, run_id), after=5)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "paused: disk full"
    [(filler, store_refused)] = filled
    assert store_refused
    monkeypatch.undo()
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
    st, error = status(factory, run_id)
    assert st == RunStatus.PAUSED and "during fetch" in error
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Query).where(
            Query.run_id == run_id, Query.iteration == 2)) == 0
        assert s.scalar(select(func.count()).select_from(Image).where(
            Image.run_id == run_id, Image.iteration == 2)) == 0
    filler.unlink()
    resume(factory, settings, run_id)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "fetched iteration 2"
    assert _run_step(task("ie.learn"), "learn", run_id, 2) == "finished"
    counts = assert_nothing_lost(factory, settings, run_id, 2)
    assert counts["vetoes"] == 1
    with factory() as s:
        stored = {settings.data_dir / p for p in s.scalars(select(Image.path).where(
            Image.run_id == run_id))}
    on_disk = {p for p in (settings.runs_dir / str(run_id) / "images").rglob("*") if p.is_file()}
    assert on_disk == stored, "image files the store does not know"
    assert len(error_events(factory, run_id)) == 4


def test_the_pause_waits_for_room_when_the_store_refuses_it(
        one_disk, world, monkeypatch, caplog):
    settings, factory, rt = one_disk
    rt.reserve.size = 0  # no reserve: nothing to free when the disk fills
    with factory() as session:
        run_id = queue_run(session, settings, world["target"], iterations=1).id
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == "fetched iteration 1"
    empty_wal(settings)
    filled = when_called(monkeypatch, ie_engine.explorer, "save_checkpoint",
                         lambda: fill_all(settings, factory, run_id))
    outcome: list[str] = []
    learning = threading.Thread(
        target=lambda: outcome.append(_run_step(task("ie.learn"), "learn", run_id, 1)))
    learning.start()
    deadline = time.monotonic() + 600
    while not any("pause is not recorded yet" in r.getMessage() for r in caplog.records):
        assert learning.is_alive() and time.monotonic() < deadline
        time.sleep(0.2)
    [(filler, store_refused)] = filled
    assert store_refused
    assert status(factory, run_id) == (RunStatus.RUNNING, None)  # not recorded yet

    filler.unlink()  # room: the next try records the pause
    learning.join(60)
    assert outcome == ["paused: disk full"]
    st, error = status(factory, run_id)
    assert st == RunStatus.PAUSED and "disk is full" in error
    assert error_events(factory, run_id) == [error]
    monkeypatch.undo()
    monkeypatch.setattr(worker.runtime, "get_runtime", lambda: rt)
    resume(factory, settings, run_id)
    assert _run_step(task("ie.fetch"), "fetch", run_id, None) == \
        "handed the fetched half to learn"
    assert _run_step(task("ie.learn"), "learn", run_id, 1) == "finished"
    assert_nothing_lost(factory, settings, run_id, 1)
