"""Tools of the fault tests: a Redis server of the test's own, a TCP proxy that can cut the
worker off PostgreSQL, a worker process with extra settings, and the check that a finished
run's store and checkpoint agree (nothing lost, nothing twice)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from app.store.models import Event, Image, Iteration, Query, Veto
from ie_engine.checkpoint import load_checkpoint
from tests.worker.world import ROOT, worker_env

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A ``redis-server`` on a free loopback port, persisting to an append-only file in
    ``folder`` so that a restart keeps the queues (as a production broker would)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
               str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
               "--save", "", "--protected-mode", "no"]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis writes its append-only file and exits
            self.proc.wait(10)
        self.proc = None


class TcpProxy:
    """Forwards a loopback port to ``target``; :meth:`cut` drops every connection and refuses
    new ones (the server seems gone), :meth:`restore` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.cut_since: float | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cut_since is not None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, 3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            with self._lock:
                self._open.discard(s)

    def cut(self) -> None:
        self.cut_since = time.monotonic()
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.cut_since = None

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()


@contextmanager
def worker(settings: Settings, log: Path, name: str, **env: str
           ) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` (queues io and gpu) with ``env`` added to its environment.
    It runs in its own process group, so :func:`kill_hard` takes its pool process too."""
    celery = Path(sys.executable).parent / "celery"
    cmd = [str(celery), "-A", "worker.celery_app", "worker", "-Q", "io,gpu", "-c", "1",
           "--prefetch-multiplier", "1", "-l", "info", "--without-gossip", "--without-mingle",
           "--without-heartbeat", "-n", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**worker_env(settings), **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    kill_hard(proc)


def kill_hard(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool process (its whole process group); no clean-up runs."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def assert_nothing_lost(factory: sessionmaker[Session], settings: Settings, run_id: int,
                        iterations: int) -> dict[str, Any]:
    """The finished run's store and final checkpoint agree: every iteration once, every
    image once (in the store, on disk and in the checkpoint), every query once with one policy
    observation per queried concept, and each veto applied exactly once."""
    state = load_checkpoint(settings.runs_dir / str(run_id) / "checkpoint.pt")
    with factory() as s:
        numbers = list(s.scalars(select(Iteration.number).where(Iteration.run_id == run_id)
                                 .order_by(Iteration.number)))
        images = list(s.scalars(select(Image).where(Image.run_id == run_id)))
        queries = list(s.scalars(select(Query).where(Query.run_id == run_id)))
        vetoes = list(s.scalars(select(Veto).where(Veto.run_id == run_id)))
        applied_events = list(s.scalars(select(Event).where(
            Event.run_id == run_id, Event.kind == "veto-applied")))
    assert numbers == list(range(1, iterations + 1))
    assert state["iteration"] == iterations and state["pending"] is None
    assert [h["iteration"] for h in state["history"]] == list(range(iterations + 1))

    hashes = [i.sha256 for i in images]
    assert len(hashes) == len(set(hashes)), "an image is stored twice"
    assert sorted(hashes) == sorted(r["sha256"] for r in state["images"]), "store != checkpoint"
    assert all(i.reward is not None for i in images)
    assert all((settings.data_dir / i.path).is_file() for i in images)

    per_iteration = Counter(q.iteration for q in queries)
    run_dir = settings.runs_dir / str(run_id) / "iterations"
    for it in range(1, iterations + 1):
        summary = json.loads((run_dir / f"{it:04d}.json").read_text())
        assert per_iteration[it] == len(summary["queries"]), f"queries of iteration {it}"
    observed = sum(len(v) for v in state["policy"]["observations"].values())
    distinct = sum(len({q.concept_index for q in queries if q.iteration == it})
                   for it in range(1, iterations + 1))
    assert observed == distinct, "a concept reward was observed twice (or lost)"

    assert all(v.applied for v in vetoes)
    vetoed = {v.concept_index for v in vetoes if v.action == "veto"}
    assert vetoed <= set(state["policy"]["vetoed"])
    assert len(applied_events) == (1 if vetoes else 0), "vetoes applied more than once"
    return {"images": len(images), "queries": len(queries), "vetoes": len(vetoes)}
