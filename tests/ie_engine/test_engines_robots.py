"""The downloader honours ``X-Robots-Tag: noai`` / ``noimageai`` (a real server on 127.0.0.1)."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from ie_engine.config import DownloadConfig
from ie_engine.download import Downloader
from ie_engine.robots import noai_directive, product_token
from ie_engine.types import DownloadRequest, SearchResult

pytestmark = pytest.mark.timeout(30)

UA = "internet-explorer/0.1 (+tests)"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["noindex, nofollow"], None),
        (["noai"], "noai"),
        (["noindex, NoImageAI"], "noimageai"),
        (["otherbot: noai"], None),
        (["otherbot: noindex, noai"], None),
        (["internet-explorer: noai"], "noai"),
        (["googlebot: noindex", "noai"], "noai"),
        (["*: noimageai"], "noimageai"),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], "noai"),
        (["max-image-preview: large"], None),
    ],
)
def test_noai_directive(values, expected):
    assert noai_directive(values, UA) == expected


def test_product_token():
    assert product_token(UA) == "internet-explorer"
    assert product_token("Mozilla/5.0 (X11)") == "mozilla"
    assert product_token("") == ""


def png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((120, 90), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


TAGS = {
    "plain": None,
    "noai": "noai",
    "noimageai": "noindex, noimageai",
    "other-bot": "otherbot: noai",
    "us": "internet-explorer: noai",
}


@pytest.fixture
async def image_server():
    served: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        served.append(name)
        tag = TAGS[name]
        headers = {"X-Robots-Tag": tag} if tag else {}
        return web.Response(body=png_bytes(list(TAGS).index(name)), content_type="image/png",
                            headers=headers)

    app = web.Application()
    app.router.add_get("/img/{name}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), served
    await server.close()


def requests_for(base: str) -> list[DownloadRequest]:
    return [DownloadRequest(SearchResult(image_url=f"{base}/img/{name}"), query="q",
                            concept_index=0) for name in TAGS]


async def test_downloader_refuses_noai_images_with_a_reason(image_server, tmp_path):
    base, served = image_server
    cfg = DownloadConfig(allowed_private_hosts=("127.0.0.1",), user_agent=UA, retries=0)
    report = await Downloader(cfg, tmp_path / "a", cpu_workers=0).fetch_all(requests_for(base))
    kept = sorted(i.request.result.image_url.rsplit("/", 1)[1] for i in report.images)
    refused = {f.url.rsplit("/", 1)[1]: f for f in report.failures}
    assert kept == ["other-bot", "plain"]
    assert sorted(refused) == ["noai", "noimageai", "us"]
    assert all(f.reason == "robots-noai" for f in refused.values())
    assert "noimageai" in refused["noimageai"].detail
    assert sorted(served) == sorted(TAGS)  # asked once each; the refused bodies were not kept


async def test_noai_can_be_switched_off(image_server, tmp_path):
    base, _ = image_server
    cfg = DownloadConfig(allowed_private_hosts=("127.0.0.1",), user_agent=UA, retries=0)
    cfg = replace(cfg, honour_noai=False)
    report = await Downloader(cfg, tmp_path / "b", cpu_workers=0).fetch_all(requests_for(base))
    assert len(report.images) == len(TAGS) and not report.failures


async def test_configured_user_agent_is_sent(tmp_path):
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.Response(body=png_bytes(9), content_type="image/png")

    app = web.Application()
    app.router.add_get("/ua.png", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/ua.png"))
        cfg = DownloadConfig(allowed_private_hosts=("127.0.0.1",), user_agent="my-lab-bot/2.0")
        await Downloader(cfg, tmp_path / "c", cpu_workers=0).fetch_all(
            [DownloadRequest(SearchResult(image_url=url), query="q", concept_index=0)])
    finally:
        await server.close()
    assert seen == ["my-lab-bot/2.0"]
