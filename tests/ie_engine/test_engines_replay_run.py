"""A run's network half replayed from its cache with nothing reachable.

A first explorer fetches an iteration through a web engine (a fake Openverse on 127.0.0.1
whose results point at an image server, also on 127.0.0.1), recording search answers and image
downloads. Then both servers are stopped and a second explorer, same seed, replays: it must
choose the same queries, get the same results and store the same images, without a single
request to either server. No training runs.
"""

from __future__ import annotations

import asyncio
import io
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from ie_engine.config import VocabularyConfig, make_config
from ie_engine.explorer import Explorer
from ie_engine.search.engines import MultiEngine, ReplayMissError, make_engine
from ie_engine.types import Concept
from ie_engine.vocabulary import Vocabulary, make_descriptor_source

pytestmark = pytest.mark.timeout(120)

LEMMAS = ["violin", "viola", "cello", "harp", "flute", "oboe", "drum", "piano", "lute", "horn"]


@dataclass
class Served:
    url: str
    stop: threading.Event
    thread: threading.Thread
    hits: list[str]


def serve(app: web.Application, hits: list[str]) -> Served:
    """Run ``app`` on 127.0.0.1 in a thread of its own (the explorer blocks this one)."""
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, str] = {}

    def main() -> None:
        async def run() -> None:
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            box["url"] = f"http://127.0.0.1:{port}"
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            await runner.cleanup()

        asyncio.run(run())

    t = threading.Thread(target=main, daemon=True)
    t.start()
    assert ready.wait(10)
    return Served(box["url"], stop, t, hits)


def image_app(hits: list[str]) -> web.Application:
    async def image(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits.append(name)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((96, 72), Image.Resampling.BICUBIC).save(buf, "PNG")
        return web.Response(body=buf.getvalue(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    return app


def api_app(hits: list[str], images_url: str) -> web.Application:
    async def search(request: web.Request) -> web.Response:
        q = request.query["q"]
        hits.append(q)
        page, size = int(request.query["page"]), int(request.query["page_size"])
        results = [{
            "id": f"{q}-{i}", "title": f"{q} number {i}",
            "url": f"{images_url}/img/{q.replace(' ', '_')}-{i}.png",
            "foreign_landing_url": f"https://example.org/{q}/{i}", "creator": "Tester",
            "license": "by", "license_version": "4.0",
            "license_url": "https://creativecommons.org/licenses/by/4.0/",
            "attribution": f"{q} {i} by Tester, CC BY 4.0", "width": 96, "height": 72,
        } for i in range((page - 1) * size, page * size)]
        return web.json_response({"result_count": 4 * size, "page_count": 4, "page": page,
                                  "results": results})

    app = web.Application()
    app.router.add_get("/v1/images/", search)
    return app


@pytest.fixture
def servers() -> Iterator[tuple[Served, Served]]:
    img_hits: list[str] = []
    images = serve(image_app(img_hits), img_hits)
    api_hits: list[str] = []
    api = serve(api_app(api_hits, images.url), api_hits)
    yield api, images
    for s in (api, images):
        s.stop.set()
        s.thread.join(5)


def explorer(run_dir: Path, engine: MultiEngine) -> Explorer:
    cfg = make_config("tiny", seed=5, iterations=1,
                      vocabulary=VocabularyConfig(descriptors="none"))
    cfg = replace(cfg, download=replace(cfg.download, allowed_private_hosts=("127.0.0.1",)),
                  search=replace(cfg.search, results_per_query=3, min_results=1))
    vocab = Vocabulary.from_concepts(Concept(0, lemma, lemma) for lemma in LEMMAS)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(LEMMAS), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    size = cfg.download.stored_size
    target = rng.integers(0, 255, size=(4, 3, size, size), dtype=np.uint8)
    return Explorer(config=cfg, run_dir=run_dir, vocabulary=vocab, concept_embeddings=emb,
                    target_images=target, target_hashes=[], engine=engine,
                    descriptors=make_descriptor_source(cfg.vocabulary),
                    download_cache=engine.download_cache)


def fetched(ex: Explorer) -> tuple[list[tuple[str, str, str, str, str]], list[dict]]:
    """A fetch's images (query, URL, sha256, license, engine; in order) and its failures."""
    try:
        got = ex.fetch()
        return [(r.query, r.image_url, r.sha256, r.license, r.engine) for r in ex.images], \
            got.failures
    finally:
        ex.close()


def test_a_runs_fetch_replays_with_the_engine_and_the_image_hosts_gone(servers, tmp_path):
    api, images = servers
    spec = {"engines": [{"kind": "openverse", "base_url": api.url + "/v1", "page_size": 2,
                         "requests_per_minute": 1e9}], "licenses": ["by"]}
    cache_dir = tmp_path / "run1" / "search-cache"
    first = explorer(tmp_path / "run1", make_engine(spec, env={}, cache_dir=cache_dir))
    records, failures = fetched(first)
    recorded = first.pending
    assert recorded is not None
    assert len(recorded.queries) == 4 and recorded.n_results == [3, 3, 3, 3]
    assert len(api.hits) == 8  # two pages of two for each query's three results
    assert len(images.hits) == 12 and len(records) == 12 and failures == []
    assert all(r[3] == "CC BY 4.0" and r[4] == "openverse" for r in records)
    stored = sorted(p.name for p in (tmp_path / "run1" / "images").rglob("*.jpg"))

    for server in (api, images):
        server.stop.set()
        server.thread.join(5)
    n_api, n_images = len(api.hits), len(images.hits)

    engine = make_engine(spec, env={}, cache_dir=cache_dir, cache_mode="replay")
    second = explorer(tmp_path / "run2", engine)
    again, failures = fetched(second)
    replayed = second.pending
    assert replayed is not None
    assert [q.text for q in replayed.queries] == [q.text for q in recorded.queries]
    assert replayed.n_results == recorded.n_results
    assert again == records  # same images, same sha256s, same order
    assert sorted(p.name for p in (tmp_path / "run2" / "images").rglob("*.jpg")) == stored
    assert failures == []
    assert (len(api.hits), len(images.hits)) == (n_api, n_images)  # nothing went out
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ReplayMissError, match="'bassoon'"):
            loop.run_until_complete(engine.search("bassoon", limit=3))
    finally:
        loop.close()

    # A download the cache does not hold is a failure with its reason, not a request.
    lost = records[4][1]
    assert engine.download_cache is not None
    engine.download_cache.record_path(lost).unlink()
    third = explorer(tmp_path / "run3", make_engine(spec, env={}, cache_dir=cache_dir,
                                                    cache_mode="replay"))
    partial, failures = fetched(third)
    assert partial == [r for r in records if r[1] != lost]
    assert [(f["url"], f["reason"]) for f in failures] == [(lost, "replay-miss")]
    assert "no outcome recorded" in failures[0]["detail"]
    assert (len(api.hits), len(images.hits)) == (n_api, n_images)
