"""Politeness and license handling of the web engines: rate limit, daily quota, back-off,
the response cache and offline replay, the multi-engine spread and its health, configuration.

APIs are the fakes of ``engine_fake_apis`` on 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from ie_engine.errors import ConfigError, SearchError
from ie_engine.search.engines import (
    CacheMode,
    EnginesConfig,
    LicenseFilter,
    QuotaExhaustedError,
    RateLimiter,
    ReplayMissError,
    ResponseCache,
    load_engines_config,
    make_engine,
    normalise_license,
)
from ie_engine.search.engines.licenses import parse_license_codes
from ie_engine.search.engines.politeness import DayCounter, backoff_delay
from tests.ie_engine.engine_fake_apis import GOOD_KEY, PREFIX, FakeApis, Scripted
from tests.ie_engine.test_engines_adapters import ENV, Sleeper, build

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def apis():
    fake = FakeApis()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    fake.server = server  # type: ignore[attr-defined]
    yield fake
    await server.close()


class FakeTime:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- licenses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url", "code"),
    [
        ("by-sa", "", "by-sa"),
        ("CC BY-SA 4.0", "", "by-sa"),
        ("cc-by-nc-nd-3.0", "", "by-nc-nd"),
        ("Attribution-NonCommercial-ShareAlike License", "", "by-nc-sa"),
        ("Attribution License", "", "by"),
        ("CC0", "", "cc0"),
        ("CC0 1.0", "", "cc0"),
        ("Public Domain Dedication (CC0)", "", "cc0"),
        ("Public domain", "", "pd"),
        ("Public Domain Mark 1.0", "", "pd"),
        ("pdm", "", "pd"),
        ("PD-old-70", "", "pd"),
        ("United States Government Work", "", "pd"),
        ("No known copyright restrictions", "", "nkcr"),
        ("All Rights Reserved", "", "arr"),
        ("GFDL", "", "gfdl"),
        ("", "https://creativecommons.org/licenses/by-nd/2.0/", "by-nd"),
        ("", "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "cc0"),
        ("", "", ""),
        ("Some custom terms", "", ""),
    ],
)
def test_normalise_license(name, url, code):
    assert normalise_license(name, url) == code


def test_license_codes_from_user_input():
    assert parse_license_codes(["CC0", "public domain", "CC-BY"]) == {"cc0", "pd", "by"}
    assert parse_license_codes(["open"]) == {"cc0", "pd", "by", "by-sa"}
    with pytest.raises(ConfigError, match="unknown license 'copyleft-ish'"):
        parse_license_codes(["copyleft-ish"])
    assert not LicenseFilter.from_names([]).active


# --- rate limit, quota, back-off ----------------------------------------------------------------


async def test_rate_limiter_spaces_request_starts():
    t = FakeTime()
    limiter = RateLimiter("x", per_minute=30, per_day=None, clock=t.clock, sleep=t.sleep)
    for _ in range(4):
        await limiter.acquire()
    assert t.sleeps == [2.0, 2.0, 2.0]  # 60 / 30 s apart; the first goes at once
    t.now += 10
    await limiter.acquire()
    assert len(t.sleeps) == 3  # idle long enough: no wait
    limiter.pause_for(30)
    assert limiter.cooldown_left() == 30
    await limiter.acquire()
    assert t.sleeps[-1] == pytest.approx(30)


async def test_daily_quota_is_counted_across_processes_and_days(tmp_path):
    day = [86_400.0 * 20_000]
    path = tmp_path / "quota" / "flickr.json"
    limiter = RateLimiter("flickr", None, 2, counter=DayCounter(path, wall=lambda: day[0]))
    await limiter.acquire()
    await limiter.acquire()
    assert limiter.left_today() == 0 and limiter.exhausted()
    with pytest.raises(QuotaExhaustedError, match="spent its 2 requests"):
        await limiter.acquire()
    again = RateLimiter("flickr", None, 2, counter=DayCounter(path, wall=lambda: day[0]))
    assert again.left_today() == 0  # the next process sees today's spending
    day[0] += 86_400
    assert again.left_today() == 2  # a new UTC day


def test_backoff_grows_with_jitter_and_honours_retry_after():
    rng = random.Random(1)
    for attempt in range(6):
        d = backoff_delay(attempt, 1.0, 20.0, rng)
        step = min(20.0, 2.0**attempt)
        assert step / 2 <= d <= step
    assert 30 <= backoff_delay(0, 1.0, 20.0, rng, retry_after=30) <= 31
    assert len({backoff_delay(3, 1.0, 20.0, rng) for _ in range(20)}) > 1  # jittered


async def test_a_long_retry_after_cools_the_engine_down(apis):
    apis.script("openverse", Scripted(429, "{}", {"Retry-After": "3600"}))
    sleeper = Sleeper()
    async with build("openverse", apis, sleeper=sleeper) as engine:
        with pytest.raises(SearchError, match="wait 3600 s"):
            await engine.search("violin", limit=2)
        h = engine.health()
    assert sleeper.backoffs == []  # not waited for
    assert h.status == "cooling-down" and h.cooldown_s > 3500


# --- cache and replay ---------------------------------------------------------------------------


async def test_repeated_queries_cost_nothing(apis, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    async with build("wikimedia", apis, cache=cache) as engine:
        first = await engine.search("violin", limit=3)
        second = await engine.search("violin ", limit=3)
    assert first == second and len(apis.calls("wikimedia")) == 2
    assert engine.health().cache_hits == 2
    async with build("wikimedia", apis, cache=ResponseCache(tmp_path / "cache", "refresh")) as e:
        assert await e.search("violin", limit=3) == first
    assert len(apis.calls("wikimedia")) == 4  # refresh asks again
    async with build("wikimedia", apis, cache=cache, page_size=3) as e:
        await e.search("violin", limit=3)
    assert len(apis.calls("wikimedia")) == 6  # another page size: another cache entry


async def test_replay_of_a_single_engine_fails_clearly_on_a_miss(apis, tmp_path):
    cache = ResponseCache(tmp_path / "c")
    async with build("openverse", apis, cache=cache) as engine:
        await engine.search("violin", limit=3)
    replay = ResponseCache(tmp_path / "c", CacheMode.REPLAY)
    async with build("openverse", apis, cache=replay) as engine:
        assert len(await engine.search("violin", limit=3)) == 3
        with pytest.raises(ReplayMissError, match=r"'viola' \(page 1"):
            await engine.search("viola", limit=3)
    assert len(apis.calls("openverse")) == 2  # both from the recording run


def spread_config(apis: FakeApis, **extra) -> dict:
    base = apis.base  # type: ignore[attr-defined]
    engines = [{"kind": k, "base_url": base + PREFIX[k], "page_size": 2,
                "requests_per_minute": 1e9} for k in ("openverse", "wikimedia", "flickr")]
    return {"engines": engines, "user_agent": "ie-tests/1.0", **extra}


QUERIES = ["violin", "viola", "cello", "double bass", "fiddle", "violin bow", "rosin",
           "music stand", "sheet music", "bridge", "tuning peg", "chin rest"]


async def test_a_whole_search_sequence_replays_from_the_cache_with_no_engine_reachable(
        apis, tmp_path):
    cache_dir = tmp_path / "run" / "search-cache"
    engine = make_engine(spread_config(apis), env=ENV, cache_dir=cache_dir, sleep=Sleeper())
    recorded = {q: await engine.search(q, limit=3) for q in QUERIES}
    recorded["violin again"] = await engine.search("violin", limit=3)
    await engine.close()
    used = {r.engine for rs in recorded.values() for r in rs}
    assert len(used) >= 2  # the sequence was spread over engines
    n_requests = len(apis.requests)
    await apis.server.close()

    # Replay: no API key in the environment, no server; every answer from the cache.
    replay = make_engine(spread_config(apis), env={}, cache_dir=cache_dir,
                         cache_mode="replay", sleep=Sleeper())
    replayed = {q: await replay.search(q, limit=3) for q in QUERIES}
    replayed["violin again"] = await replay.search("violin", limit=3)
    assert replayed == recorded
    with pytest.raises(ReplayMissError, match="'harp'"):
        await replay.search("harp", limit=3)
    health = replay.health()
    assert all(e.status == "replay" and e.requests == 0 for e in health.engines)
    await replay.close()
    assert len(apis.requests) == n_requests


# --- the spread ---------------------------------------------------------------------------------


async def test_spread_is_deterministic_and_shares_queries(apis, tmp_path):
    names = []
    for _ in range(2):
        engine = make_engine(spread_config(apis), env=ENV, cache_mode="off", sleep=Sleeper())
        names.append([(await engine.search(q, limit=1))[0].engine for q in QUERIES])
        await engine.close()
    assert names[0] == names[1]
    assert len(set(names[0])) == 3


async def test_failover_quota_and_health(apis, tmp_path):
    cfg = spread_config(apis, quota_dir=str(tmp_path / "quota"))
    for e in cfg["engines"]:
        e["requests_per_day"] = 2
    engine = make_engine(cfg, env=ENV, cache_mode="off", sleep=Sleeper())
    for kind in ("openverse", "wikimedia", "flickr"):
        apis.script(kind, Scripted(403, '{"detail": "banned"}'))
    with pytest.raises(SearchError, match=r"no engine of 'openverse\+wikimedia\+flickr'"):
        await engine.search("violin", limit=1)  # every engine refuses: an empty query
    assert engine.health().failovers == 2
    done = 0
    with pytest.raises(QuotaExhaustedError, match="every engine"):
        for q in QUERIES:
            await engine.search(q, limit=1)
            done += 1
    assert done == 3  # one request left per engine, one request per query
    h = engine.health()
    assert all(e.quota_left_today == 0 and e.status == "exhausted" for e in h.engines)
    assert sum(e.requests for e in h.engines) == 6
    d = h.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert {e["name"] for e in d["engines"]} == {"openverse", "wikimedia", "flickr"}
    health_file = tmp_path / "health.json"
    engine.health_path = health_file
    await engine.close()
    assert json.loads(health_file.read_text())["queries"] == h.queries


async def test_failing_engine_falls_over_to_the_next(apis):
    engine = make_engine(spread_config(apis), env=ENV, cache_mode="off", sleep=Sleeper())
    first_choice = (await engine.search("violin", limit=1))[0].engine
    apis.script(first_choice, Scripted(403, '{"detail": "banned"}'))
    again = await engine.search("violin", limit=1)
    assert again and again[0].engine != first_choice
    h = {e.name: e for e in engine.health().engines}
    assert h[first_choice].status == "degraded" and "banned" in h[first_choice].last_error
    assert engine.health().failovers == 1
    await engine.close()


# --- configuration ------------------------------------------------------------------------------


def test_configuration_forms(tmp_path):
    short = EnginesConfig.parse("openverse, searxng@http://127.0.0.1:9")
    assert [s.kind for s in short.engines] == ["openverse", "searxng"]
    assert short.engines[1].base_url == "http://127.0.0.1:9"
    toml = tmp_path / "engines.toml"
    toml.write_text('licenses = ["cc0", "pd", "by"]\ncache_mode = "use"\n\n[[engines]]\n'
                    'kind = "wikimedia"\nrequests_per_minute = 20\n\n[[engines]]\n'
                    'kind = "flickr"\nweight = 2\nrequests_per_day = 500\n')
    cfg = load_engines_config(toml)
    assert cfg.licenses == ("cc0", "pd", "by") and cfg.engines[1].weight == 2
    js = tmp_path / "engines.json"
    js.write_text(json.dumps({"engines": ["brave"], "cache_mode": "replay"}))
    assert load_engines_config(js).cache_mode == "replay"
    cases: list[tuple[dict[str, Any], str]] = [
                         ({"engines": ["altavista"]}, "unknown engine kind"),
                         ({"engines": ["openverse"], "colour": 1}, "unknown engine config"),
                         ({"engines": [{"kind": "openverse", "speed": 1}]}, "unknown engine set"),
                         ({"engines": ["openverse"], "cache_mode": "sometimes"}, "cache mode"),
                         ({"engines": ["openverse"], "licenses": ["mine"]}, "unknown license"),
                         ({"engines": []}, "at least one engine")]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            EnginesConfig.parse(bad)


def test_make_engine_needs_keys_and_a_cache_folder(tmp_path):
    with pytest.raises(ConfigError, match="BRAVE_SEARCH_API_KEY"):
        make_engine("brave", env={}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="cache_dir"):
        make_engine("openverse", env={})
    e = make_engine("brave", env={"BRAVE_SEARCH_API_KEY": GOOD_KEY}, cache_dir=tmp_path,
                    licenses=("cc0",))
    assert e.engines[0].settings.api_key == GOOD_KEY and e.license_filter.allowed == {"cc0"}
    assert make_engine("openverse", env={}, cache_mode="off").engines[0].cache is None
