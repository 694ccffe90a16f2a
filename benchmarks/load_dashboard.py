"""Load on one run's dashboard, on loopback: SSE viewers, page and fragment readers, veto bursts.

The real app (``create_app``) is served by uvicorn on 127.0.0.1 in a thread of this process,
on a fresh SQLite store in a temporary data folder (with Redis pub/sub when a Redis server
answers at ``--redis``). Then, for ``--seconds``:

* ``--viewers`` clients hold the run's event stream (``/runs/{id}/events``) open;
* a writer commits one ``phase`` event every ``1 / --rate`` seconds, as a worker does, noting
  the time of each commit;
* ``--readers`` clients load the dashboard page and its htmx fragments in a loop;
* every ``--burst-every`` seconds, ``--burst`` veto requests are sent at once.

Measured: latency of page, fragment and veto requests (send to full reply), and of event
delivery (commit to the client's reading of the message); and, per viewer, that every event
of the run arrived once and in order. Clients and server share this process (and its GIL), so
the figures are an upper bound of what a browser on loopback would see.

    .venv/bin/python benchmarks/load_dashboard.py [--seconds 30] [--out test-artifacts/load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from app.main import create_app
from app.services.live import publish
from app.settings import Settings
from app.store.concepts import insert_concepts
from app.store.events import add_event
from app.store.models import Event, RunStatus
from app.store.runs import create_run, set_run_status
from app.store.uploads import create_upload

FRAGMENTS = ("status", "progress", "queries", "leaderboard", "log")


@dataclass
class Options:
    seconds: float = 30.0
    viewers: int = 50
    readers: int = 4
    rate: float = 10.0
    burst: int = 20
    burst_every: float = 5.0
    redis_url: str | None = "redis://127.0.0.1:6379/0"


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` served on a free loopback port until the block ends; the base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=512,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def redis_answers(url: str | None) -> bool:
    if not url:
        return False
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def make_run(app: FastAPI, n_concepts: int) -> int:
    """A running run with ``n_concepts`` concept rows (vetoes need them)."""
    with app.state.session_factory() as session:
        upload = create_upload(session, name="load", labelled=False)
        run = create_run(session, name="load", config={}, upload_id=upload.id)
        set_run_status(session, run.id, RunStatus.QUEUED)
        set_run_status(session, run.id, RunStatus.RUNNING)
        insert_concepts(session, run.id, [
            {"concept_index": i, "lemma": f"concept{i}", "text": f"concept {i}",
             "source": "wordnet", "map_x": float(i), "map_y": 0.0} for i in range(n_concepts)])
        session.commit()
        return run.id


def percentiles(values: list[float]) -> dict[str, float | int]:
    """Count, p50, p99 and max of ``values`` (seconds) in milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}


class Viewer:
    """One SSE client: the ids it read, in order, and when."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.seen_at: dict[int, float] = {}
        self.connected = asyncio.Event()

    async def watch(self, client: httpx.AsyncClient, url: str) -> None:
        """Read the stream until cancelled."""
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as reply:
            reply.raise_for_status()
            self.connected.set()
            async for line in reply.aiter_lines():
                if line.startswith("id:"):
                    event_id = int(line[3:].strip())
                    self.seen_at.setdefault(event_id, time.monotonic())
                    self.ids.append(event_id)


async def _load(base: str, app: FastAPI, run_id: int, opts: Options,
                headers: dict[str, str]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=opts.viewers + opts.readers + opts.burst + 10)
    timeout = httpx.Timeout(30.0)
    committed: dict[int, float] = {}
    pages: list[float] = []
    fragments: list[float] = []
    vetoes: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()
    writing_done = threading.Event()

    def write_events() -> None:
        factory = app.state.session_factory
        settings = app.state.settings
        n = max(1, int(opts.seconds * opts.rate))
        for i in range(n):
            with factory() as session:
                event = add_event(session, run_id, "phase", {
                    "phase": "train", "done": i + 1, "total": n, "iteration": 1})
                session.commit()
                committed[event.id] = time.monotonic()
            publish(run_id, settings=settings)
            time.sleep(1 / opts.rate)
        writing_done.set()

    async def timed(client: httpx.AsyncClient, method: str, url: str, sink: list[float],
                    **kw: Any) -> None:
        t0 = time.monotonic()
        reply = await client.request(method, url, **kw)
        sink.append(time.monotonic() - t0)
        if reply.status_code >= 400:
            errors.append(f"{method} {url}: {reply.status_code}")

    async def read_pages(client: httpx.AsyncClient, k: int) -> None:
        n = k
        while not stop.is_set():
            if n % (len(FRAGMENTS) + 1) == 0:
                await timed(client, "GET", f"{base}/runs/{run_id}", pages)
            else:
                name = FRAGMENTS[n % (len(FRAGMENTS) + 1) - 1]
                await timed(client, "GET", f"{base}/runs/{run_id}/{name}", fragments,
                            headers={"HX-Request": "true"})
            n += 1
            await asyncio.sleep(0.05)

    async def veto_bursts(client: httpx.AsyncClient) -> None:
        b = 0
        while not stop.is_set():
            await asyncio.sleep(opts.burst_every)
            if stop.is_set() or writing_done.is_set():
                return
            action = "veto_one" if b % 2 == 0 else "unveto_one"
            base_index = (b // 2) * opts.burst
            await asyncio.gather(*(
                timed(client, "POST", f"{base}/runs/{run_id}/vetoes", vetoes,
                      data={action: str(base_index + k)}, headers={"HX-Request": "true"})
                for k in range(opts.burst)))
            b += 1

    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) as client:
        viewers = [Viewer() for _ in range(opts.viewers)]
        watching = [asyncio.create_task(v.watch(client, f"{base}/runs/{run_id}/events"))
                    for v in viewers]
        await asyncio.wait_for(asyncio.gather(*(v.connected.wait() for v in viewers)), 60)
        others = [asyncio.create_task(read_pages(client, k)) for k in range(opts.readers)]
        others.append(asyncio.create_task(veto_bursts(client)))
        started = time.monotonic()
        writer = asyncio.create_task(asyncio.to_thread(write_events))
        await writer
        with app.state.session_factory() as session:
            all_ids = list(session.scalars(select(Event.id).where(Event.run_id == run_id)
                                           .order_by(Event.id)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                not set(all_ids) <= v.seen_at.keys() for v in viewers):
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        stop.set()
        for task in watching:
            task.cancel()
        await asyncio.gather(*others, *watching, return_exceptions=True)

    delivery = [v.seen_at[i] - t for v in viewers for i, t in committed.items()
                if i in v.seen_at]
    lost = sum(len(set(all_ids) - v.seen_at.keys()) for v in viewers)
    duplicated = sum(len(v.ids) - len(set(v.ids)) for v in viewers)
    out_of_order = sum(1 for v in viewers if v.ids != sorted(v.ids))
    return {
        "viewers": opts.viewers, "readers": opts.readers, "seconds": round(elapsed, 1),
        "events": len(all_ids), "events_written": len(committed),
        "veto_requests": len(vetoes), "burst": opts.burst,
        "page": percentiles(pages), "fragment": percentiles(fragments),
        "veto": percentiles(vetoes), "event_delivery": percentiles(delivery),
        "events_lost": lost, "events_duplicated": duplicated,
        "viewers_out_of_order": out_of_order, "errors": errors[:20], "n_errors": len(errors),
    }


def run_load(opts: Options, data_dir: Path) -> dict[str, Any]:
    """Serve a fresh app on ``data_dir``, put the load on it, return the figures."""
    use_redis = redis_answers(opts.redis_url)
    settings = Settings(data_dir=data_dir, redis_url=opts.redis_url if use_redis else None,
                        sse_heartbeat_seconds=5.0)
    app = create_app(settings)
    access = getattr(app.state, "access", None)
    headers = {"Authorization": f"Bearer {access.token}"} if access is not None else {}
    with serve(app) as base:
        run_id = make_run(app, 2 * opts.burst * max(1, int(opts.seconds / opts.burst_every)))
        figures = asyncio.run(_load(base, app, run_id, opts, headers))
    figures["wake"] = "redis pub/sub" if use_redis else f"polling {settings.sse_poll_seconds}s"
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=Options.seconds)
    parser.add_argument("--viewers", type=int, default=Options.viewers)
    parser.add_argument("--readers", type=int, default=Options.readers)
    parser.add_argument("--rate", type=float, default=Options.rate)
    parser.add_argument("--burst", type=int, default=Options.burst)
    parser.add_argument("--redis", default=Options.redis_url)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    opts = Options(seconds=args.seconds, viewers=args.viewers, readers=args.readers,
                   rate=args.rate, burst=args.burst, redis_url=args.redis or None)
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_load(opts, Path(tmp) / "data")
    text = json.dumps(figures, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
