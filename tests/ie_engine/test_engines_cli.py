"""``ie explore``'s engine options: offline by default, web engines on request, replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ie_engine.errors import ConfigError
from ie_engine.search.engines import CacheMode, MultiEngine, Page, ResponseCache
from ie_engine.search.engines.cli_support import CACHE_FOLDER, engine_from_options


def options(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"engine": "offline", "engine_config": None, "licenses": None,
                            "replay": None, "run_dir": tmp_path / "run",
                            "data_dir": tmp_path / "data", "env": {}}
    return {**base, **kw}


def test_offline_stays_the_default(tmp_path):
    assert engine_from_options(**options(tmp_path)) is None
    with pytest.raises(ConfigError, match="apply to web engines"):
        engine_from_options(**options(tmp_path, licenses="cc0"))


def test_web_engines_from_the_command_line(tmp_path):
    e = engine_from_options(**options(tmp_path, engine="openverse,wikimedia", licenses="cc0,by"))
    assert isinstance(e, MultiEngine)
    assert [x.name for x in e.engines] == ["openverse", "wikimedia"]
    assert e.license_filter.allowed == {"cc0", "by"}
    cache = e.engines[0].cache
    assert cache is not None and cache.root == tmp_path / "run" / CACHE_FOLDER
    assert cache.mode is CacheMode.USE
    quota = tmp_path / "data" / "search-quota" / "openverse.json"
    assert e.engines[0].limiter.counter.path == quota
    assert e.health_path == tmp_path / "run" / "engine-health.json"


def test_engine_config_file_and_conflicts(tmp_path):
    f = tmp_path / "engines.toml"
    f.write_text('[[engines]]\nkind = "searxng"\nbase_url = "http://127.0.0.1:9"\n')
    e = engine_from_options(**options(tmp_path, engine_config=f))
    assert e is not None and e.engines[0].settings.base_url == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="not both"):
        engine_from_options(**options(tmp_path, engine="openverse", engine_config=f))


def test_replay_reads_another_runs_cache_and_needs_no_key(tmp_path):
    with pytest.raises(ConfigError, match="no response cache"):
        engine_from_options(**options(tmp_path, engine="flickr", replay=tmp_path / "old"))
    old = tmp_path / "old"
    ResponseCache(old / CACHE_FOLDER).put("flickr", "x", "q", 1, Page([], False))
    e = engine_from_options(**options(tmp_path, engine="flickr", replay=old))
    assert e is not None and e.replay
    cache = e.engines[0].cache
    assert cache is not None and cache.mode is CacheMode.REPLAY
    assert cache.root == old / CACHE_FOLDER


def test_the_explore_parser_knows_the_options():
    from ie_engine.cli import _parser

    args = _parser().parse_args(["explore", "--target", "t", "--engine", "openverse,brave",
                                 "--licenses", "open", "--replay", "runs/old"])
    assert (args.engine, args.licenses, args.replay) == ("openverse,brave", "open",
                                                         Path("runs/old"))
    assert _parser().parse_args(["explore", "--target", "t"]).engine == "offline"
