"""The downloader against a real aiohttp server on 127.0.0.1.

Every refusal test also checks that nothing reached the server: the guards act before any
connection. No test connects anywhere but loopback.
"""

from __future__ import annotations

import asyncio
import functools
import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from PIL import Image, ImageEnhance

from ie_engine.config import DownloadConfig
from ie_engine.download import (
    MAX_REDIRECTS,
    BlockedAddressError,
    Downloader,
    GuardedResolver,
    PixelBudget,
    check_url,
    download_all,
    host_is_allowed,
    is_blocked_address,
    parse_retry_after,
)
from ie_engine.imaging import DedupIndex, dhash64, hamming, normalise
from ie_engine.types import DownloadReport, DownloadRequest, SearchResult

pytestmark = pytest.mark.timeout(60)


# --- test images --------------------------------------------------------------------------------


def photo(seed: int, w: int = 240, h: int = 180) -> Image.Image:
    """A smooth random colour field: photo-like, with a stable dHash."""
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge canvas; the data is a few zero rows (never read)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# --- the server ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the test server saw."""

    hits: Counter[str] = field(default_factory=Counter)
    active: int = 0
    max_active: int = 0
    user_agents: list[str] = field(default_factory=list)


def make_app(files: dict[str, bytes], stats: Stats) -> web.Application:
    """Routes used by the tests; every request is counted by path."""

    @web.middleware
    async def count(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        stats.hits[request.path] += 1
        response = await handler(request)  # type: ignore[misc]
        assert isinstance(response, web.StreamResponse)
        return response

    async def file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type="image/png")

    async def html(request: web.Request) -> web.Response:
        page = "<!DOCTYPE html><html><body>" + "x" * 500
        return web.Response(text=page, content_type="text/html")

    async def big_with_length(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 300_000, content_type="image/png")

    async def big_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "image/png"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            await resp.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24)
            for _ in range(200):  # 200 x 16 kB = 3.2 MB, far above the cap
                await resp.write(b"\x00" * 16384)
                await asyncio.sleep(0)
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(body=files["a.png"], content_type="image/png")

    async def flaky(request: web.Request) -> web.Response:
        key = request.path
        if stats.hits[key] <= 2:
            return web.Response(status=503, text="busy")
        return web.Response(body=files["a.png"], content_type="image/png")

    async def too_many(request: web.Request) -> web.Response:
        if stats.hits[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": request.match_info["secs"]})
        return web.Response(body=files["b.png"], content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=files["c.png"], content_type="image/png")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def counted(request: web.Request) -> web.Response:
        stats.active += 1
        stats.max_active = max(stats.max_active, stats.active)
        try:
            await asyncio.sleep(0.15)
        finally:
            stats.active -= 1
        seed = int(request.match_info["seed"])
        return web.Response(body=files.get(f"p{seed}.png", b""), content_type="image/png")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def user_agent(request: web.Request) -> web.Response:
        stats.user_agents.append(request.headers.get("User-Agent", ""))
        return web.Response(body=files["a.png"], content_type="image/png")

    app = web.Application(middlewares=[count])
    app.router.add_get("/img/{name}", file)
    app.router.add_get("/page.png", html)
    app.router.add_get("/big-length", big_with_length)
    app.router.add_get("/big-stream", big_stream)
    app.router.add_get("/slow", slow)
    app.router.add_get("/flaky/{key}", flaky)
    app.router.add_get("/429/{secs}", too_many)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/counted/{seed}", counted)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/ua", user_agent)
    return app


@functools.cache
def make_files() -> dict[str, bytes]:
    transparent = Image.new("RGBA", (200, 100), (255, 0, 0, 0))
    transparent.paste((0, 0, 255, 255), (0, 0, 100, 100))
    altered = ImageEnhance.Brightness(photo(1)).enhance(1.06).resize((200, 150))
    files = {
        "a.png": encode(photo(0)),
        "a-copy.png": encode(photo(0)),
        "b.png": encode(photo(1)),
        "b-near.jpg": encode(altered, "JPEG", quality=75),
        "c.png": encode(photo(2)),
        "photo.jpg": encode(photo(3, 640, 480), "JPEG", quality=90),
        "target-copy.jpg": encode(photo(4, 300, 225), "JPEG", quality=70),
        "rgba.png": encode(transparent),
        "bomb.png": png_bomb(20000, 20000),
        "truncated.png": encode(photo(5))[:2000],
        "gif.gif": encode(photo(6), "GIF"),
        "webp.webp": encode(photo(7), "WEBP"),
    }
    for seed in range(20, 40):
        files[f"p{seed}.png"] = encode(photo(seed, 80, 60))
    for name, box in (("blank-a.png", (10, 10, 14, 14)), ("blank-b.png", (150, 80, 151, 81))):
        sparse = Image.new("RGB", (200, 100), "white")  # a tiny mark on white: a sparse dHash
        sparse.paste((0, 0, 0), box)
        files[name] = encode(sparse)
    return files


@dataclass
class Site:
    """A running test server and helpers to build requests for it."""

    server: TestServer
    stats: Stats
    files: dict[str, bytes]

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    stats = Stats()
    files = make_files()
    server = TestServer(make_app(files, stats), host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server, stats, files)
    finally:
        await server.close()


def req(url: str, concept: int = 0) -> DownloadRequest:
    return DownloadRequest(SearchResult(image_url=url), query="q", concept_index=concept)


CONFIG = DownloadConfig(
    concurrency=8,
    per_host=8,
    timeout_s=5.0,
    retries=2,
    backoff_s=0.01,
    max_bytes=100_000,
    stored_size=64,
    allowed_private_hosts=("127.0.0.1",),
)


async def fetch(
    tmp_path: Path, urls: list[str], config: DownloadConfig = CONFIG, **kw: object
) -> DownloadReport:
    downloader = Downloader(config, tmp_path / "images", **kw)  # type: ignore[arg-type]
    return await downloader.fetch_all([req(u) for u in urls])


def reasons(report: DownloadReport) -> dict[str, str]:
    return {f.url: f.reason for f in report.failures}


# --- successes ----------------------------------------------------------------------------------


async def test_formats_stored_normalised(site: Site, tmp_path: Path) -> None:
    names = ["a.png", "photo.jpg", "gif.gif", "webp.webp", "rgba.png"]
    report = await fetch(tmp_path, [site.url(f"/img/{n}") for n in names])
    assert report.failures == []
    assert [Path(i.request.result.image_url).name for i in report.images] == names  # in order
    for image in report.images:
        stored = tmp_path / "images" / image.path
        assert image.path == f"{image.sha256[:2]}/{image.sha256}.jpg"
        with Image.open(stored) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) == 64
    photo_jpg = report.images[1]
    assert (photo_jpg.width, photo_jpg.height) == (640, 480)
    rgba = report.images[4]
    with Image.open(tmp_path / "images" / rgba.path) as img:
        right = np.asarray(img)[:, 40:, :]  # the transparent half
        left = np.asarray(img)[:, :20, :]
    assert right.min() >= 250  # composited onto white, not black
    assert left[..., 2].mean() > 240 and left[..., 0].mean() < 15
    assert report.seconds > 0 and report.leaked == 0


async def test_progress_and_user_agent(site: Site, tmp_path: Path) -> None:
    events: list[tuple[str, int | None]] = []

    class Sink:
        def start(self, phase: str, total: int | None) -> None:
            events.append(("start", total))

        def advance(self, phase: str, n: int = 1) -> None:
            events.append(("advance", n))

        def finish(self, phase: str) -> None:
            events.append(("finish", None))

    downloader = Downloader(CONFIG, tmp_path / "images")
    await downloader.fetch_all([req(site.url("/ua")), req(site.url("/img/b.png"))], progress=Sink())
    assert site.stats.user_agents == [CONFIG.user_agent]
    assert events[0] == ("start", 2) and events[-1] == ("finish", None)
    assert sum(n for kind, n in events if kind == "advance" and n) == 2


# --- refusals by content ------------------------------------------------------------------------


async def test_content_refusals(site: Site, tmp_path: Path) -> None:
    urls = {
        "not-an-image": site.url("/page.png"),
        "decompression-bomb": site.url("/img/bomb.png"),
        "corrupt": site.url("/img/truncated.png"),
        "http-404": site.url("/img/missing.png"),
        "http-403": site.url("/status/403"),
    }
    report = await fetch(tmp_path, list(urls.values()))
    assert report.images == []
    got = reasons(report)
    for reason, url in urls.items():
        assert got[url] == reason
    assert all(f.detail and f.request is not None for f in report.failures)
    assert site.stats.hits["/img/missing.png"] == 1  # a 404 is not retried


async def test_too_large_with_and_without_content_length(site: Site, tmp_path: Path) -> None:
    report = await fetch(tmp_path, [site.url("/big-length"), site.url("/big-stream")])
    failures = {f.url: f for f in report.failures}
    assert failures[site.url("/big-length")].reason == "too-large"
    assert "Content-Length" in failures[site.url("/big-length")].detail
    assert failures[site.url("/big-stream")].reason == "too-large"
    assert "streaming" in failures[site.url("/big-stream")].detail


# --- retries and timeouts -----------------------------------------------------------------------


async def test_retry_after_two_503(site: Site, tmp_path: Path) -> None:
    report = await fetch(tmp_path, [site.url("/flaky/one")])
    assert len(report.images) == 1
    assert site.stats.hits["/flaky/one"] == 3

    report = await fetch(tmp_path, [site.url("/flaky/two")], replace(CONFIG, retries=1))
    assert reasons(report)[site.url("/flaky/two")] == "http-503"
    assert "2 attempts" in report.failures[0].detail
    assert site.stats.hits["/flaky/two"] == 2


async def test_429_honours_retry_after(site: Site, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    report = await fetch(tmp_path, [site.url("/429/1")])
    assert len(report.images) == 1
    assert time.perf_counter() - t0 >= 0.9  # waited as asked, not backoff_s
    assert site.stats.hits["/429/1"] == 2

    report = await fetch(tmp_path, [site.url("/429/3600")])
    assert reasons(report)[site.url("/429/3600")] == "http-429"
    assert site.stats.hits["/429/3600"] == 1  # a long Retry-After is not waited for


async def test_timeout_retried_then_recorded(site: Site, tmp_path: Path) -> None:
    config = replace(CONFIG, timeout_s=0.3, retries=1)
    t0 = time.perf_counter()
    report = await fetch(tmp_path, [site.url("/slow")], config)
    assert reasons(report)[site.url("/slow")] == "timeout"
    assert site.stats.hits["/slow"] == 2
    assert time.perf_counter() - t0 < 2.5


async def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = await fetch(tmp_path, [f"http://127.0.0.1:{port}/x.png"], replace(CONFIG, retries=0))
    assert report.failures[0].reason == "connection"


async def test_many_requests_pass_the_task_window(site: Site, tmp_path: Path) -> None:
    config = replace(CONFIG, concurrency=4, per_host=4)  # window of 64 tasks
    urls = [site.url(f"/img/p{20 + i % 20}.png?n={i}") for i in range(150)]
    report = await fetch(tmp_path, urls, config)
    assert len(report.images) == 20
    assert Counter(f.reason for f in report.failures) == {"duplicate": 130}
    kept = [urls.index(r.request.result.image_url) for r in report.images]
    assert kept == sorted(kept)  # reported in request order
    assert {urls[i].split("?")[0] for i in kept} == {u.split("?")[0] for u in urls}


async def test_stop_mid_flight_leaves_index_consistent(site: Site, tmp_path: Path) -> None:
    dedup = DedupIndex()
    downloader = Downloader(replace(CONFIG, concurrency=2, per_host=2), tmp_path, dedup=dedup)
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    urls = [site.url(f"/counted/{s}") for s in range(20, 40)]
    report = await downloader.fetch_all([req(u) for u in urls], should_stop=stop)
    assert len(report.images) + len(report.failures) == 20
    assert {f.reason for f in report.failures} == {"cancelled"}
    assert len(dedup) == len(report.images) < 20
    assert sorted(dedup.to_state()) == sorted([i.sha256, f"{i.dhash:016x}"] for i in report.images)


async def test_should_stop_cancels(site: Site, tmp_path: Path) -> None:
    downloader = Downloader(CONFIG, tmp_path / "images")
    t0 = time.perf_counter()
    report = await downloader.fetch_all(
        [req(site.url("/slow")), req(site.url("/slow?2"))], should_stop=lambda: True
    )
    assert time.perf_counter() - t0 < 2
    assert [f.reason for f in report.failures] == ["cancelled", "cancelled"]


# --- de-duplication and the leakage guard -------------------------------------------------------


async def test_duplicates_and_near_duplicates(site: Site, tmp_path: Path) -> None:
    urls = [
        site.url("/img/a.png"),
        site.url("/img/a-copy.png"),  # same bytes at another URL
        site.url("/img/a.png"),  # same URL twice
        site.url("/img/b.png"),
        site.url("/img/b-near.jpg"),  # re-encoded, brighter, smaller
    ]
    dedup = DedupIndex()
    downloader = Downloader(CONFIG, tmp_path / "images", dedup=dedup)
    report = await downloader.fetch_all([req(u) for u in urls])
    assert len(report.images) == 2
    counts = Counter(f.reason for f in report.failures)
    assert counts == {"duplicate": 2, "near-duplicate": 1}
    assert site.stats.hits["/img/a.png"] == 1  # the repeated URL was not fetched again
    assert len(dedup) == 2

    # A later iteration shares the index: nothing comes in twice.
    again = await downloader.fetch_all([req(site.url("/img/b.png?again"))])
    assert again.images == [] and again.failures[0].reason in {"duplicate", "near-duplicate"}


async def test_target_leak_refused(site: Site, tmp_path: Path) -> None:
    target = normalise(photo(4, 300, 225), 96)  # the user's copy of the image
    report = await fetch(
        tmp_path,
        [site.url("/img/target-copy.jpg"), site.url("/img/c.png")],
        target_hashes=[dhash64(target)],
    )
    assert reasons(report) == {site.url("/img/target-copy.jpg"): "target-leak"}
    assert report.leaked == 1 and len(report.images) == 1
    assert not any(p.is_file() for p in (tmp_path / "images").rglob("*") if "target" in p.name)


async def test_nearly_blank_images_are_not_called_leaks_or_near_duplicates(
    site: Site, tmp_path: Path
) -> None:
    # Two different nearly blank images have dHashes a few bits apart; matching them would
    # refuse unrelated clip-art. Only exact copies are caught for such images.
    files = make_files()
    blank_a = Image.open(io.BytesIO(files["blank-a.png"]))
    blank_b = Image.open(io.BytesIO(files["blank-b.png"]))
    assert hamming(dhash64(normalise(blank_a, 96)), dhash64(normalise(blank_b, 96))) <= 4
    report = await fetch(
        tmp_path,
        [site.url("/img/blank-b.png"), site.url("/img/blank-a.png")],
        target_hashes=[dhash64(blank_a)],
    )
    assert reasons(report) == {}
    assert len(report.images) == 2


# --- redirects ----------------------------------------------------------------------------------


async def test_redirect_cap(site: Site, tmp_path: Path) -> None:
    ok = site.url(f"/redirect/{MAX_REDIRECTS}")
    over = site.url(f"/redirect/{MAX_REDIRECTS + 1}?x")
    report = await fetch(tmp_path, [ok, over])
    assert len(report.images) == 1 and report.images[0].request.result.image_url == ok
    assert reasons(report) == {over: "too-many-redirects"}


async def test_redirects_are_checked(site: Site, tmp_path: Path) -> None:
    urls = {
        site.url("/redirect-to?url=http://169.254.169.254/latest/meta-data"): "blocked-address",
        site.url("/redirect-to?url=http://10.0.0.1/x.png"): "blocked-address",
        site.url("/redirect-to?url=ftp://example.org/x.png"): "bad-url",
        site.url("/redirect-to?url=file:///etc/passwd"): "bad-url",
    }
    report = await fetch(tmp_path, list(urls))
    assert reasons(report) == urls


# --- the address guard --------------------------------------------------------------------------


async def test_private_addresses_refused_before_connecting(site: Site, tmp_path: Path) -> None:
    urls = {
        "http://10.0.0.1/x.png": "blocked-address",
        "http://169.254.169.254/latest": "blocked-address",
        "http://[::1]/x.png": "blocked-address",
        "http://[::ffff:10.0.0.1]/x.png": "blocked-address",
        "http://0.0.0.0/x.png": "blocked-address",
        "ftp://example.org/x.png": "bad-url",
        "file:///etc/passwd": "bad-url",
        "not a url": "bad-url",
        "http:///x.png": "bad-url",
    }
    report = await fetch(tmp_path, list(urls))
    assert reasons(report) == urls
    assert all(f.detail for f in report.failures)


async def test_loopback_refused_unless_allowed(site: Site, tmp_path: Path) -> None:
    closed = replace(CONFIG, allowed_private_hosts=())
    urls = [site.url("/img/a.png"), f"http://localhost:{site.port}/img/b.png"]
    report = await fetch(tmp_path, urls, closed)
    assert [f.reason for f in report.failures] == ["blocked-address", "blocked-address"]
    assert sum(site.stats.hits.values()) == 0  # nothing reached the server

    by_port = replace(CONFIG, allowed_private_hosts=(f"127.0.0.1:{site.port}",))
    report = await fetch(tmp_path, [site.url("/img/c.png")], by_port)
    assert len(report.images) == 1

    other_port = replace(CONFIG, allowed_private_hosts=(f"127.0.0.1:{site.port + 1}",))
    report = await fetch(tmp_path, [site.url("/img/b.png")], other_port)
    assert report.failures[0].reason == "blocked-address"


class FakeResolver(AbstractResolver):
    """Answers from a table, as DNS would; never queries anything."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return [
            ResolveResult(
                hostname=host, host=ip, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def test_names_checked_on_resolved_address(site: Site, tmp_path: Path) -> None:
    resolver = FakeResolver(
        {
            "images.test": ["127.0.0.1"],  # allowed by name below
            "evil.test": ["127.0.0.1"],  # a public-looking name pointing at loopback
            "metadata.test": ["169.254.169.254"],
            "rebind.test": ["93.184.216.34", "10.1.2.3"],
        }
    )
    config = replace(CONFIG, allowed_private_hosts=("images.test",))
    port = site.port
    urls = [
        f"http://images.test:{port}/img/a.png",
        f"http://evil.test:{port}/img/b.png",
        "http://metadata.test/latest",
        "http://rebind.test/x.png",
        "http://nowhere.test/x.png",
    ]
    report = await fetch(tmp_path, urls, replace(config, retries=0), resolver=resolver)
    assert len(report.images) == 1 and report.images[0].request.result.image_url == urls[0]
    assert reasons(report) == {
        urls[1]: "blocked-address",
        urls[2]: "blocked-address",
        urls[3]: "blocked-address",
        urls[4]: "connection",
    }
    assert site.stats.hits == Counter({"/img/a.png": 1})


async def test_guarded_resolver_direct() -> None:
    inner = FakeResolver({"ok.test": ["93.184.216.34"], "bad.test": ["192.168.1.1"]})
    guard = GuardedResolver(("bad.test",), inner)
    assert (await guard.resolve("ok.test", 80))[0]["host"] == "93.184.216.34"
    assert (await guard.resolve("bad.test", 80))[0]["host"] == "192.168.1.1"  # allowed
    strict = GuardedResolver((), inner)
    with pytest.raises(BlockedAddressError):
        await strict.resolve("bad.test", 80)


def test_address_classification() -> None:
    import ipaddress

    blocked = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "2002:0a00:0001::",
        "255.255.255.255",
        "192.0.2.1",
    ]
    public = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]
    for a in blocked:
        assert is_blocked_address(ipaddress.ip_address(a)), a
    for a in public:
        assert not is_blocked_address(ipaddress.ip_address(a)), a
    assert host_is_allowed("LOCALHOST", 8080, ("localhost",))
    assert host_is_allowed("127.0.0.1", 8080, ("127.0.0.1:8080",))
    assert not host_is_allowed("127.0.0.1", 8081, ("127.0.0.1:8080",))
    assert host_is_allowed("::1", 80, ("[::1]:80",))
    assert check_url("https://example.org/a.png")[1] is None


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


# --- concurrency --------------------------------------------------------------------------------


async def test_per_host_limit(site: Site, tmp_path: Path) -> None:
    config = replace(CONFIG, concurrency=10, per_host=2)
    report = await fetch(tmp_path, [site.url(f"/counted/{s}") for s in range(20, 28)], config)
    assert len(report.images) == 8
    assert site.stats.max_active == 2


async def test_global_limit_across_hosts(tmp_path: Path) -> None:
    stats = Stats()
    files = make_files()
    servers = [TestServer(make_app(files, stats), host="127.0.0.1") for _ in range(2)]
    for server in servers:
        await server.start_server()
    try:
        config = replace(CONFIG, concurrency=3, per_host=3)
        urls = [
            f"http://127.0.0.1:{servers[i % 2].port}/counted/{seed}"
            for i, seed in enumerate(range(20, 32))
        ]
        report = await fetch(tmp_path, urls, config)
    finally:
        for server in servers:
            await server.close()
    assert len(report.images) == 12
    assert stats.max_active == 3


async def test_inline_decoding_same_result(site: Site, tmp_path: Path) -> None:
    urls = [site.url("/img/a.png"), site.url("/img/photo.jpg")]
    pooled = await fetch(tmp_path / "x", urls)
    inline = await fetch(tmp_path / "y", urls, cpu_workers=0)
    assert [i.sha256 for i in pooled.images] == [i.sha256 for i in inline.images]


def test_download_all_sync(tmp_path: Path) -> None:
    urls = ["http://10.0.0.1/a.png", "gopher://example.org/"]
    report = download_all([req(u) for u in urls], config=CONFIG, image_dir=tmp_path)
    assert [f.reason for f in report.failures] == ["blocked-address", "bad-url"]


def test_every_request_accounted_for_in_order(tmp_path: Path) -> None:
    urls = ["http://10.0.0.1/a.png", "http://10.0.0.1/a.png", "bad"]
    report = download_all([req(u) for u in urls], config=CONFIG, image_dir=tmp_path)
    assert [f.reason for f in report.failures] == ["blocked-address", "duplicate", "bad-url"]


def test_pixel_budget_bounds_pixels_in_flight() -> None:
    budget = PixelBudget(100)
    peak = 0
    lock = threading.Lock()

    def work(pixels: int) -> None:
        nonlocal peak
        with budget.hold(pixels):
            with lock:
                peak = max(peak, budget.in_use)
            time.sleep(0.01)

    sizes = [60, 30, 30, 500, 10, 90, 45, 5] * 3  # 500 is capped at the budget: runs alone
    threads = [threading.Thread(target=work, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert peak <= 100
    assert budget.in_use == 0
