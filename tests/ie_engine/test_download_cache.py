"""The downloader's content cache: what is recorded, what a later fetch and a replay read back,
and that cached bytes meet every guard again (a damaged or hostile cached file is never stored).

Servers run on 127.0.0.1 and count every request; a replay must send none.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from ie_engine import download as download_module
from ie_engine.config import DownloadConfig
from ie_engine.download import Downloader
from ie_engine.download_cache import CachedBody, CachedRefusal, DownloadCache
from ie_engine.errors import ConfigError
from ie_engine.types import DownloadReport, DownloadRequest, SearchResult

pytestmark = pytest.mark.timeout(60)

CONFIG = DownloadConfig(concurrency=4, per_host=4, timeout_s=5.0, retries=1, backoff_s=0.01,
                        max_bytes=100_000, stored_size=48, allowed_private_hosts=("127.0.0.1",))


def png(seed: int, w: int = 90, h: int = 60) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(side: int) -> bytes:
    """A small PNG whose header claims ``side`` x ``side`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (side + 7) // 8) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Counter[str]]]:
    hits: Counter[str] = Counter()

    async def image(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(body=png(int(request.match_info["seed"])), content_type="image/png")

    async def status(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(status=int(request.match_info["code"]), text="no")

    app = web.Application()
    app.router.add_get("/img/{seed}.png", image)
    app.router.add_get("/status/{code}", status)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}", hits
    finally:
        await srv.close()


def req(url: str) -> DownloadRequest:
    return DownloadRequest(SearchResult(image_url=url), query="q", concept_index=0)


async def fetch(images: Path, urls: list[str], cache: DownloadCache,
                config: DownloadConfig = CONFIG) -> DownloadReport:
    return await Downloader(config, images, cache=cache).fetch_all([req(u) for u in urls])


def outcome(report: DownloadReport) -> dict[str, str]:
    out = {i.request.result.image_url: i.sha256 for i in report.images}
    out.update({f.url: f.reason for f in report.failures})
    return out


def refuse_session(*_args: object) -> object:
    raise AssertionError("a replay opened an HTTP session")


@pytest.fixture
def no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay must not even open an HTTP session."""
    monkeypatch.setattr(download_module, "_session", refuse_session)


async def test_outcomes_recorded_then_read_back_and_replayed(server, tmp_path, monkeypatch):
    base, hits = server
    cache_root = tmp_path / "cache"
    urls = [f"{base}/img/1.png", f"{base}/img/2.png", f"{base}/status/404",
            f"{base}/status/503", "http://10.0.0.1/private.png"]
    first = await fetch(tmp_path / "run1", urls, DownloadCache(cache_root, "use"))
    recorded = outcome(first)
    assert recorded[urls[2]] == "http-404" and recorded[urls[3]] == "http-503"
    assert recorded[urls[4]] == "blocked-address"
    assert len(first.images) == 2
    cache = DownloadCache(cache_root, "replay")
    assert isinstance(cache.lookup(urls[0]), CachedBody)
    assert cache.lookup(urls[2]) == CachedRefusal("http-404", "Not Found", transient=False)
    assert isinstance(cache.lookup(urls[3]), CachedRefusal) and cache.lookup(urls[3]).transient
    assert cache.lookup(urls[4]) is None  # refused before any request: nothing to record
    assert not list(cache_root.rglob("*.tmp"))
    bodies = {p.name: p.read_bytes() for p in (cache_root / "bodies").rglob("*") if p.is_file()}
    assert bodies == {hashlib.sha256(b).hexdigest(): b for b in (png(1), png(2))}

    # use: bodies and lasting refusals come from the cache; a 503 is worth asking again.
    before = hits.copy()
    again = await fetch(tmp_path / "run2", urls, DownloadCache(cache_root, "use"))
    assert outcome(again) == recorded
    assert hits - before == Counter({"/status/503": 2})  # one try and one retry

    # replay: the same outcomes, the 503 included, without a session; an unknown URL is a miss.
    before = hits.copy()
    monkeypatch.setattr(download_module, "_session", refuse_session)
    replayed = await fetch(tmp_path / "run3", [*urls, f"{base}/img/3.png"], cache)
    got = outcome(replayed)
    assert {u: got[u] for u in urls} == recorded
    assert got[f"{base}/img/3.png"] == "replay-miss"
    miss = next(f for f in replayed.failures if f.reason == "replay-miss")
    assert "no outcome recorded" in miss.detail
    assert hits == before


async def test_a_damaged_cached_body_is_never_stored(server, tmp_path, monkeypatch):
    base, _hits = server
    cache_root = tmp_path / "cache"
    url = f"{base}/img/7.png"
    first = await fetch(tmp_path / "run1", [url], DownloadCache(cache_root, "use"))
    assert len(first.images) == 1
    body = next(p for p in (cache_root / "bodies").rglob("*") if p.is_file())
    damaged = bytearray(body.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte changed
    body.write_bytes(bytes(damaged))

    monkeypatch.setattr(download_module, "_session", refuse_session)
    report = await fetch(tmp_path / "run2", [url], DownloadCache(cache_root, "replay"))
    assert report.images == []
    (failure,) = report.failures
    assert failure.reason == "replay-miss" and "damaged" in failure.detail
    assert not list((tmp_path / "run2").rglob("*.jpg"))


async def test_a_damaged_body_is_fetched_again_outside_replay(server, tmp_path):
    base, hits = server
    cache_root = tmp_path / "cache"
    url = f"{base}/img/8.png"
    await fetch(tmp_path / "run1", [url], DownloadCache(cache_root, "use"))
    body = next(p for p in (cache_root / "bodies").rglob("*") if p.is_file())
    body.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)

    report = await fetch(tmp_path / "run2", [url], DownloadCache(cache_root, "use"))
    assert len(report.images) == 1 and hits["/img/8.png"] == 2
    assert body.read_bytes() == png(8)  # written again whole


async def test_cached_bytes_meet_every_content_guard(tmp_path, no_session):
    """Bytes put in the cache by hand (as a tampered cache would hold them, sha256 and all)
    are refused by the same guards as bytes from the network."""
    cache = DownloadCache(tmp_path / "cache", "use")
    bodies = {
        "http://127.0.0.1:9/ok.png": png(3),
        "http://127.0.0.1:9/bomb.png": png_bomb(20_000),
        "http://127.0.0.1:9/page.png": b"<!DOCTYPE html><html>" + b"x" * 200,
        "http://127.0.0.1:9/cut.png": png(4, 400, 300)[:300],
        "http://127.0.0.1:9/huge.png": png(5, 600, 600),
    }
    for url, data in bodies.items():
        assert cache.put_body(url, data)
    small = replace(CONFIG, max_bytes=len(png(5, 600, 600)) - 1, max_pixels=1_000_000)
    report = await fetch(tmp_path / "run", list(bodies), DownloadCache(cache.root, "replay"),
                         small)
    got = outcome(report)
    assert got.pop("http://127.0.0.1:9/ok.png") == report.images[0].sha256
    assert got == {
        "http://127.0.0.1:9/bomb.png": "decompression-bomb",
        "http://127.0.0.1:9/page.png": "not-an-image",
        "http://127.0.0.1:9/cut.png": "corrupt",
        "http://127.0.0.1:9/huge.png": "too-large",
    }
    assert len(list((tmp_path / "run").rglob("*.jpg"))) == 1


async def test_a_cache_that_cannot_be_written_fails_no_download(server, tmp_path):
    base, _hits = server
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    cache = DownloadCache(blocker, "use")
    report = await fetch(tmp_path / "run", [f"{base}/img/9.png", f"{base}/status/410"], cache)
    assert len(report.images) == 1 and [f.reason for f in report.failures] == ["http-410"]
    assert cache.write_errors == 2 and cache.writes == 0


def test_records_and_modes(tmp_path):
    with pytest.raises(ConfigError, match="download cache mode"):
        DownloadCache(tmp_path, "off")
    cache = DownloadCache(tmp_path, "use")
    cache.put_refusal("http://a/x", "timeout", "slow", transient=True)
    assert cache.lookup("http://a/x") is None  # asked again outside replay
    assert DownloadCache(tmp_path, "replay").lookup("http://a/x") == CachedRefusal(
        "timeout", "slow", transient=True)
    assert not DownloadCache(tmp_path, "replay").put_body("http://a/y", png(1))
    assert DownloadCache(tmp_path, "refresh").lookup("http://a/x") is None
    record = json.loads(cache.record_path("http://a/x").read_text())
    assert record["url"] == "http://a/x" and record["reason"] == "timeout"
