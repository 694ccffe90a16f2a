"""Each web engine adapter against its recorded answers, served on 127.0.0.1.

Common behaviour (paging, empty answers, 429 with Retry-After, 5xx give-up, client errors,
malformed JSON) is checked for every adapter; each adapter's mapping to the common record and
its peculiarities have their own tests. Nothing here connects anywhere but loopback.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestServer

from ie_engine.errors import ConfigError, SearchError
from ie_engine.search.engines import (
    EnginesConfig,
    EngineSpec,
    LicenseFilter,
    ResponseCache,
    WebEngine,
    make_web_engine,
)
from tests.ie_engine.engine_fake_apis import GOOD_KEY, KINDS, PREFIX, FakeApis, Scripted

pytestmark = pytest.mark.timeout(30)

USER_AGENT = "ie-tests/1.0 (mailto:tests@example.org)"
ENV = {"FLICKR_API_KEY": GOOD_KEY, "BRAVE_SEARCH_API_KEY": GOOD_KEY}
# (results, requests) for "violin" with limit 3 and two results a page
EXPECTED = {
    "openverse": (3, 2),
    "wikimedia": (3, 2),
    "flickr": (3, 2),
    "searxng": (2, 2),
    "clip-retrieval": (3, 2),
    "brave": (2, 1),
}


class Sleeper:
    """Records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)

    @property
    def backoffs(self) -> list[float]:
        return [d for d in self.delays if d > 0.001]  # not the rate limiter's tiny spacing


@pytest.fixture
async def apis():
    fake = FakeApis()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield fake
    await server.close()


def build(kind: str, apis: FakeApis, *, sleeper: Sleeper | None = None, licenses=(),
          cache: ResponseCache | None = None, env=None, page_size: int = 2,
          **spec: object) -> WebEngine:
    s = EngineSpec.parse({"kind": kind, "base_url": apis.base + PREFIX[kind],  # type: ignore[attr-defined]
                          "page_size": page_size, "requests_per_minute": 1e9, **spec})
    cfg = EnginesConfig(engines=(s,), user_agent=USER_AGENT, retries=3, backoff_s=0.5)
    return make_web_engine(s, cfg, env=ENV if env is None else env, cache=cache,
                           license_filter=LicenseFilter.from_names(licenses),
                           sleep=sleeper or Sleeper())


# --- common behaviour, every adapter ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_pages_until_limit_or_last_page(apis, kind):
    async with build(kind, apis) as engine:
        results = await engine.search("violin", limit=3)
    n_results, n_requests = EXPECTED[kind]
    assert len(results) == n_results
    assert [r.rank for r in results] == list(range(1, n_results + 1))
    assert all(r.engine == kind and r.image_url.startswith("https://") for r in results)
    assert len({r.image_url for r in results}) == n_results
    assert len(apis.calls(kind)) == n_requests
    assert all(c.headers["User-Agent"] == USER_AGENT for c in apis.calls(kind))


@pytest.mark.parametrize("kind", KINDS)
async def test_limit_within_the_first_page_costs_one_request(apis, kind):
    async with build(kind, apis) as engine:
        results = await engine.search("violin", limit=1)
    assert len(results) == 1 and results[0].rank == 1
    assert len(apis.calls(kind)) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_empty_answer(apis, kind):
    async with build(kind, apis) as engine:
        assert await engine.search("nothing", limit=5) == []
    assert len(apis.calls(kind)) == 1
    assert engine.health().errors == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_429_with_retry_after_is_waited_for_then_retried(apis, kind):
    apis.script(kind, Scripted(429, '{"detail": "slow down"}', {"Retry-After": "7"}))
    sleeper = Sleeper()
    async with build(kind, apis, sleeper=sleeper) as engine:
        results = await engine.search("violin", limit=3)
    assert len(results) == EXPECTED[kind][0]
    assert len(apis.calls(kind)) == EXPECTED[kind][1] + 1
    assert len(sleeper.backoffs) == 1 and 7.0 <= sleeper.backoffs[0] <= 8.0
    health = engine.health()
    assert health.rate_limited == 1 and health.retries == 1 and health.status == "ok"


@pytest.mark.parametrize("kind", KINDS)
async def test_5xx_is_retried_with_growing_backoff_then_fails(apis, kind):
    apis.script(kind, *[Scripted(503, "upstream down")] * 4)
    sleeper = Sleeper()
    async with build(kind, apis, sleeper=sleeper) as engine:
        with pytest.raises(SearchError, match=r"HTTP 503.*after 4 attempts"):
            await engine.search("violin", limit=3)
    assert len(apis.calls(kind)) == 4
    b = sleeper.backoffs
    assert len(b) == 3
    for attempt, delay in enumerate(b):  # equal jitter: between half and all of 0.5 * 2^n
        assert 0.25 * 2**attempt <= delay <= 0.5 * 2**attempt
    health = engine.health()
    assert health.errors == 1 and health.status == "degraded" and "503" in health.last_error


@pytest.mark.parametrize("kind", KINDS)
async def test_client_error_is_not_retried(apis, kind):
    apis.script(kind, Scripted(403, '{"detail": "forbidden here"}'))
    async with build(kind, apis) as engine:
        with pytest.raises(SearchError, match=r"HTTP 403.*forbidden here"):
            await engine.search("violin", limit=3)
    assert len(apis.calls(kind)) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body", ["{not json", "[1, 2]", ""])
async def test_malformed_answer_is_a_search_error(apis, kind, body):
    apis.script(kind, Scripted(200, body))
    async with build(kind, apis) as engine:
        with pytest.raises(SearchError, match=r"malformed|not a JSON object"):
            await engine.search("violin", limit=3)
    assert len(apis.calls(kind)) == 1  # a broken answer is not retried


@pytest.mark.parametrize("kind", KINDS)
async def test_failure_on_a_later_page_keeps_the_first_pages(apis, kind):
    if EXPECTED[kind][1] < 2:
        pytest.skip("one page only")
    apis.script(kind, Scripted(200, apis_page_one(kind)), Scripted(404, '{"detail": "gone"}'))
    async with build(kind, apis) as engine:
        results = await engine.search("violin", limit=3)
    assert 1 <= len(results) <= 2


def apis_page_one(kind: str) -> str:
    from tests.ie_engine.engine_fake_apis import fixture

    name = {"openverse": "openverse_page1.json", "wikimedia": "wikimedia_page1.json",
            "flickr": "flickr_page1.json", "searxng": "searxng_page1.json"}.get(kind)
    return json.dumps(fixture(name) if name else fixture("clip_knn.json")[:2])


# --- each adapter's record ----------------------------------------------------------------------


async def test_openverse_record_and_server_side_license_filter(apis):
    async with build("openverse", apis) as engine:
        r = (await engine.search("violin", limit=3))
    first = r[0]
    assert first.image_url == "https://live.staticflickr.com/1/1001_a_b.jpg"
    assert first.page_url == "https://www.flickr.com/photos/example/1001"
    assert (first.title, first.creator, first.width, first.height) == (
        "Red violin on a stand", "Ada Player", 1024, 768)
    assert first.license == "CC BY 2.0" and first.extra["license_code"] == "by"
    assert first.license_url == "https://creativecommons.org/licenses/by/2.0/"
    assert first.attribution.startswith('"Red violin on a stand" by Ada Player')
    assert first.thumbnail_url.endswith("/thumb/")
    assert r[1].width is None and r[2].license == "CC0 1.0" and r[2].creator == ""
    assert apis.calls("openverse")[0].params["page_size"] == "2"
    assert [c.params["page"] for c in apis.calls("openverse")] == ["1", "2"]
    apis.requests.clear()
    async with build("openverse", apis, licenses=("cc0", "pd", "by")) as engine:
        kept = await engine.search("violin", limit=3)
    assert apis.calls("openverse")[0].params["license"] == "by,cc0,pdm"
    # the fake ignores the parameter; the client-side filter still drops the BY-NC-SA image
    assert [k.extra["license_code"] for k in kept] == ["by", "cc0"]
    assert engine.health().filtered_out == 1


async def test_openverse_token_is_sent_as_bearer(apis):
    async with build("openverse", apis, env={"OPENVERSE_TOKEN": "tok"}) as engine:
        await engine.search("violin", limit=1)
    assert apis.calls("openverse")[0].headers["Authorization"] == "Bearer tok"


async def test_wikimedia_record_order_html_and_paging(apis):
    async with build("wikimedia", apis) as engine:
        r = await engine.search("violin", limit=5)
    assert [x.title for x in r] == ["Stradivarius violin", "Violin bow detail", "Violin (CC0)"]
    a = r[0]
    assert a.creator == "Jane & John Example"
    assert a.attribution == "Photo: Jane & John Example, CC BY-SA 4.0"
    assert (a.license, a.extra["license_code"], a.width, a.height) == (
        "CC BY-SA 4.0", "by-sa", 2000, 3000)
    assert a.page_url == "https://commons.wikimedia.org/wiki/File:Stradivarius_violin.jpg"
    assert "320px-" in a.thumbnail_url
    assert r[1].extra["license_code"] == "pd" and "via Wikimedia Commons" in r[1].attribution
    assert r[2].extra["license_code"] == "cc0"
    calls = apis.calls("wikimedia")
    assert [c.params["gsroffset"] for c in calls] == ["0", "2"]
    p = calls[0].params
    assert (p["generator"], p["gsrnamespace"], p["formatversion"], p["maxlag"]) == (
        "search", "6", "2", "5")
    assert p["gsrsearch"] == "filetype:bitmap violin"
    assert engine.settings.politeness.max_concurrency == 1  # serial requests by default


async def test_wikimedia_maxlag_is_retried_and_api_errors_are_not(apis):
    from tests.ie_engine.engine_fake_apis import fixture

    maxlag = json.dumps(fixture("wikimedia_maxlag.json"))
    apis.script("wikimedia", Scripted(200, maxlag, {"Retry-After": "5"}))
    sleeper = Sleeper()
    async with build("wikimedia", apis, sleeper=sleeper) as engine:
        assert len(await engine.search("violin", limit=2)) == 2
    assert len(sleeper.backoffs) == 1 and sleeper.backoffs[0] >= 5
    apis.script("wikimedia", Scripted(200, json.dumps(fixture("wikimedia_badparam.json"))))
    async with build("wikimedia", apis) as engine:
        with pytest.raises(SearchError, match="badvalue"):
            await engine.search("violin", limit=2)


async def test_flickr_record_licenses_and_key(apis):
    async with build("flickr", apis) as engine:
        r = await engine.search("violin", limit=5)
    assert [x.image_url.rsplit("_", 1)[-1] for x in r] == ["b.jpg", "z.jpg", "c.jpg"]
    a, b, c = r
    assert (a.license, a.extra["license_code"], a.width, a.height) == ("CC BY 2.0", "by", 1024,
                                                                      683)
    assert a.page_url == "https://www.flickr.com/photos/12345678@N00/53001"
    assert a.attribution == '"Violin at dusk" by Carla Strings on Flickr, licensed under CC BY 2.0'
    assert (b.extra["license_code"], b.width, b.title) == ("cc0", 640, "")
    assert c.extra["license_code"] == "by-sa" and c.license == "CC BY-SA 4.0"
    p = apis.calls("flickr")[0].params
    assert p["license"] == ",".join(str(i) for i in range(1, 17))  # never "0", all rights reserved
    assert (p["method"], p["nojsoncallback"], p["per_page"]) == ("flickr.photos.search", "1", "2")
    apis.requests.clear()
    async with build("flickr", apis, licenses=("CC0", "CC-BY")) as engine:
        await engine.search("violin", limit=1)
    assert apis.calls("flickr")[0].params["license"] == "4,9,11"


async def test_flickr_errors(apis):
    async with build("flickr", apis, env={"FLICKR_API_KEY": "wrong-secret"}) as engine:
        with pytest.raises(SearchError, match="Invalid API Key") as info:
            await engine.search("violin", limit=2)
    assert "wrong-secret" not in str(info.value)
    from tests.ie_engine.engine_fake_apis import fixture

    apis.script("flickr", Scripted(200, json.dumps(fixture("flickr_unavailable.json"))))
    async with build("flickr", apis) as engine:
        assert len(await engine.search("violin", limit=2)) == 2  # code 105 is retried
    with pytest.raises(ConfigError, match="FLICKR_API_KEY"):
        build("flickr", apis, env={})


async def test_searxng_record(apis):
    async with build("searxng", apis, options={"engines": "bing images"}) as engine:
        r = await engine.search("violin", limit=5)
    a, b = r
    assert (a.image_url, a.page_url, a.width, a.height) == (
        "https://example.org/media/violin-full.jpg", "https://example.org/gallery/violin", 1600,
        1200)
    assert a.thumbnail_url == "https://thumbs.example.net/violin-small.jpg"
    assert a.extra["upstream"] == "bing images" and a.license == ""
    assert (b.width, b.height, b.creator) == (800, 600, "Some Photographer")
    p = apis.calls("searxng")[0].params
    assert (p["format"], p["categories"], p["pageno"], p["engines"]) == (
        "json", "images", "1", "bing images")


async def test_clip_retrieval_request_and_scores(apis):
    async with build("clip-retrieval", apis, options={"indice_name": "relaion-test"}) as engine:
        r = await engine.search("violin", limit=3)
    assert [x.score for x in r] == [0.3412, 0.3307, 0.3101]
    assert r[0].title == "a violin on a wooden table" and r[0].extra["id"] == "1200345"
    bodies = [c.body for c in apis.calls("clip-retrieval")]
    assert [b["num_images"] for b in bodies] == [2, 4]
    assert bodies[0]["indice_name"] == "relaion-test" and bodies[0]["modality"] == "image"
    assert bodies[0]["use_safety_model"] is True and bodies[0]["text"] == "violin"
    apis.script("clip-retrieval", Scripted(200, '{"error": "index relaion-test not loaded"}'))
    async with build("clip-retrieval", apis) as engine:
        with pytest.raises(SearchError, match="not loaded"):
            await engine.search("violin", limit=3)


async def test_brave_record_key_and_single_page(apis):
    async with build("brave", apis, page_size=50) as engine:
        r = await engine.search("violin", limit=100)
    assert [x.image_url for x in r] == ["https://workshop.example.com/img/violin-42.jpg",
                                        "https://clip.example.net/violin.png"]
    assert (r[0].width, r[0].height, r[0].page_url) == (1920, 1440,
                                                        "https://workshop.example.com/violins/42")
    assert r[1].width is None and r[0].extra["confidence"] == "high"
    (call,) = apis.calls("brave")
    assert call.headers["X-Subscription-Token"] == GOOD_KEY and call.params["count"] == "50"
    async with build("brave", apis, env={"BRAVE_SEARCH_API_KEY": "nope"}) as engine:
        with pytest.raises(SearchError, match=r"HTTP 422.*subscription token is invalid"):
            await engine.search("violin", limit=3)
    async with build("brave", apis, licenses=("open",)) as engine:
        assert await engine.search("violin", limit=3) == []  # no license data: all filtered
