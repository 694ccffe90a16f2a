"""The real app on a real HTTP server on loopback, in a thread, and a reader of its SSE streams.

Streaming responses need a real server (the test client buffers them); uvicorn serves the app
on a port the OS picks, and :func:`serve` stops it when the block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass(frozen=True)
class Message:
    """One SSE message."""

    id: int | None
    event: str
    data: str


class SseReader:
    """Reads messages from a streaming ``httpx`` response, skipping comments and ``retry``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self.comments = 0

    def next(self, *, timeout: float = 5.0) -> Message | None:
        """The next message, or None when none completes within ``timeout`` seconds (the
        server's heartbeats keep the read from blocking longer than its heartbeat interval)."""
        deadline = time.monotonic() + timeout
        fields: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            try:
                line = next(self._lines)
            except (httpx.ReadTimeout, StopIteration):
                return None
            if line.startswith(":"):
                self.comments += 1
                continue
            if line == "":
                if "data" in fields:
                    ids = fields.get("id", [])
                    return Message(
                        id=int(ids[-1]) if ids else None,
                        event=fields.get("event", ["message"])[-1],
                        data="\n".join(fields["data"]),
                    )
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        return None

    def take(self, n: int, *, timeout: float = 5.0) -> list[Message]:
        """The next ``n`` messages (fewer if the stream goes quiet for ``timeout``)."""
        got: list[Message] = []
        while len(got) < n:
            message = self.next(timeout=timeout)
            if message is None:
                break
            got.append(message)
        return got
