"""The offline web's search service: an aiohttp app over a :class:`CorpusIndex`.

It behaves like a small image search engine on loopback, so the explorer's real code path (HTTP
search, then HTTP downloads with all their guards) runs unchanged against it::

    GET /search?q=red+parrot&limit=30   ranked JSON results (image_url, page_url, score, ...)
    GET /images/{id}                    the original PNG bytes of one corpus item
    GET /items/{id}                     a tiny HTML page (the result's "page")
    GET /health                         JSON status

Only ids are accepted in paths: a file is served only if it is the path of a corpus item that
is not held out, so nothing else on the machine can be fetched through the service.

Query embedding runs on a single worker thread (the event loop keeps answering while the model
works, and one thread avoids oversubscribing the CPU); query vectors are cached in an LRU.
"""

from __future__ import annotations

import asyncio
import html
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from ie_engine.errors import CorpusError
from ie_engine.search.corpus import CorpusIndex, CorpusItem
from ie_engine.types import TextEmbedder

DEFAULT_LIMIT = 50
"""Results returned when a query gives no ``limit``."""
MAX_LIMIT = 500
"""Largest ``limit`` honoured (larger values are capped, like a real engine's page size)."""
QUERY_CACHE_SIZE = 4096
"""Query embeddings kept in memory (384 floats each for MiniLM: about 6 MB when full)."""
MAX_QUERY_CHARS = 500


class QueryCache:
    """A thread-safe LRU of query text -> unit query vector."""

    def __init__(self, embedder: TextEmbedder, size: int = QUERY_CACHE_SIZE) -> None:
        self.embedder = embedder
        self.size = size
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vector(self, query: str) -> np.ndarray:
        """The embedding of ``query`` (computed on a miss; blocking - call from a worker)."""
        with self._lock:
            vec = self._data.get(query)
            if vec is not None:
                self._data.move_to_end(query)
                self.hits += 1
                return vec
            self.misses += 1
        vec = np.asarray(self.embedder.embed([query]), dtype=np.float32)[0]
        with self._lock:
            self._data[query] = vec
            self._data.move_to_end(query)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return vec


@dataclass
class _State:
    index: CorpusIndex
    embedder: TextEmbedder
    cache: QueryCache
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="ie-embed")
    )
    queries: int = 0


STATE_KEY = web.AppKey("ie_search_state", _State)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def _origin(request: web.Request) -> str:
    """``scheme://host:port`` as the client addressed us, so URLs work from the client's side."""
    return str(request.url.origin())


def _result_json(
    item: CorpusItem, score: float, rank: int, origin: str
) -> dict[str, Any]:
    return {
        "image_url": f"{origin}/images/{item.id}",
        "page_url": f"{origin}/items/{item.id}",
        "title": item.title,
        "license": item.license,
        "license_url": item.license_url,
        "creator": item.creator,
        "score": round(score, 6),
        "rank": rank,
        # Sizes are deliberately not reported: like many web engines, the downloader must find
        # out (and refuse decompression bombs) on its own.
        "width": None,
        "height": None,
        "extra": {"category": item.category, "source": item.source, "id": item.id},
    }


async def _search(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    query = " ".join(request.query.get("q", "").split())
    if not query:
        return _json_error(400, "missing query: pass ?q=...")
    if len(query) > MAX_QUERY_CHARS:
        return _json_error(400, f"query longer than {MAX_QUERY_CHARS} characters")
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        return _json_error(400, f"limit must be an integer, got {raw_limit!r}")
    if limit < 1:
        return _json_error(400, "limit must be at least 1")
    limit = min(limit, MAX_LIMIT)

    def work() -> list[tuple[CorpusItem, float]]:
        return state.index.search(state.cache.vector(query), limit)

    try:
        hits = await asyncio.get_running_loop().run_in_executor(state.executor, work)
    except Exception as exc:  # the embedder may raise anything; the client gets a clear 500
        return _json_error(500, f"search failed: {type(exc).__name__}: {exc}")
    state.queries += 1
    origin = _origin(request)
    results = [_result_json(it, s, rank, origin) for rank, (it, s) in enumerate(hits, start=1)]
    return web.json_response({"query": query, "limit": limit, "results": results})


def _item_or_404(request: web.Request) -> CorpusItem:
    item = request.app[STATE_KEY].index.get(request.match_info["id"])
    if item is None:
        raise web.HTTPNotFound(
            text='{"error": "unknown image id", "status": 404}', content_type="application/json"
        )
    return item


async def _image(request: web.Request) -> web.StreamResponse:
    item = _item_or_404(request)
    path = Path(item.path)
    if not path.is_file():
        return _json_error(404, "image file missing on the server")
    return web.FileResponse(
        path, headers={"Content-Type": "image/png", "Cache-Control": "public, max-age=86400"}
    )


async def _item_page(request: web.Request) -> web.Response:
    item = _item_or_404(request)
    e = html.escape
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(item.title)}</title></head><body>"
        f"<h1>{e(item.title)}</h1>"
        f"<img src='/images/{e(item.id)}' alt='{e(item.title)}' style='max-width:480px'>"
        f"<p>{e(item.description)}</p>"
        f"<p>Category: {e(item.category)} ({e(item.source)})</p>"
        f"<p>Creator: {e(item.creator or 'unknown')} - licence: "
        f"<a href='{e(item.license_url)}'>{e(item.license)}</a></p>"
        f"<p><small>{e(item.text)}</small></p>"
        "</body></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    info = state.index.info
    return web.json_response(
        {
            "status": "ok",
            "items": len(state.index),
            "counts": info.counts,
            "embedder": info.embedder,
            "corpus_created": info.created,
            "queries": state.queries,
            "cache": {"hits": state.cache.hits, "misses": state.cache.misses},
        }
    )


def create_app(
    index: CorpusIndex, embedder: TextEmbedder, *, cache_size: int = QUERY_CACHE_SIZE
) -> web.Application:
    """The search service over ``index``; ``embedder`` must be the one the corpus was built
    with (same name and dimension), else :class:`CorpusError`."""
    if embedder.name != index.info.embedder or embedder.dim != index.info.dim:
        raise CorpusError(
            f"corpus was built with {index.info.embedder} ({index.info.dim}-d), not "
            f"{embedder.name} ({embedder.dim}-d); rebuild it or serve it with the same embedder"
        )
    app = web.Application()
    state = _State(index=index, embedder=embedder, cache=QueryCache(embedder, cache_size))
    app[STATE_KEY] = state
    app.router.add_get("/search", _search)
    app.router.add_get("/images/{id}", _image)
    app.router.add_get("/items/{id}", _item_page)
    app.router.add_get("/health", _health)

    async def shutdown_executor(_app: web.Application) -> None:
        state.executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown_executor)
    return app


class ServerHandle:
    """A search service running in a background thread; ``stop()`` shuts it down."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        runner: web.AppRunner,
        thread: threading.Thread,
    ) -> None:
        self.url = url
        self.host = host
        self.port = port
        self._loop = loop
        self._runner = runner
        self._thread = thread
        self._stopped = False

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and open connections, then end the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            fut.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_background(
    index: CorpusIndex,
    embedder: TextEmbedder,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 30.0,
) -> ServerHandle:
    """Start the service on its own event loop in a daemon thread; return once it listens.

    ``port=0`` picks a free port; the handle's ``url`` (``http://127.0.0.1:PORT``) says which.
    """
    app = create_app(index, embedder)
    ready = threading.Event()
    state: dict[str, Any] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
            state.update(loop=loop, runner=runner, address=runner.addresses[0])
        except BaseException as exc:
            state["error"] = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=main, name=f"ie-search-{host}:{port}", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout):
        raise CorpusError(f"search service did not start within {startup_timeout} s")
    if "error" in state:
        raise CorpusError(f"search service cannot listen on {host}:{port}: {state['error']}")
    bound_host, bound_port = state["address"][0], int(state["address"][1])
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return ServerHandle(
        f"http://{url_host}:{bound_port}", bound_host, bound_port, state["loop"],
        state["runner"], thread,
    )


@contextmanager
def serving(
    index: CorpusIndex, embedder: TextEmbedder, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ServerHandle]:
    """``with serving(index, embedder) as server: ...`` - started and always stopped."""
    handle = serve_in_background(index, embedder, host, port)
    try:
        yield handle
    finally:
        handle.stop()


def run_server(
    corpus_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8765,
    exclude_ids: set[str] | frozenset[str] | None = None,
    *,
    embedder: TextEmbedder | None = None,
) -> None:
    """Load the corpus and serve it until interrupted (``ie corpus serve``).

    ``embedder`` defaults to the packaged MiniLM, which is what ``ie corpus build`` uses.
    """
    index = CorpusIndex.load(corpus_dir, exclude_ids=exclude_ids)
    if embedder is None:
        from ie_engine.vocabulary.embedder import MiniLMEmbedder

        embedder = MiniLMEmbedder()
    app = create_app(index, embedder)
    embedder.embed(["warm up"])  # load the model now, not on the first client's query
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=lambda _msg: print(
            f"offline web: {len(index)} images from {corpus_dir} on http://{host}:{port} "
            "(Ctrl+C to stop)",
            flush=True,
        ),
    )
