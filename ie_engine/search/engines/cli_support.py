"""The ``ie explore`` options that pick web engines (``--engine``, ``--engine-config``,
``--licenses``, ``--replay``), turned into an engine for the run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ie_engine.errors import ConfigError
from ie_engine.search.engines.factory import EnginesConfig, load_engines_config, make_engine
from ie_engine.search.engines.spreader import MultiEngine

CACHE_FOLDER = "search-cache"
"""A run's response cache, inside its run folder (what ``--replay RUN_DIR`` reads)."""
HEALTH_FILE = "engine-health.json"
"""Each engine's health when the run's engine closed, inside the run folder."""


def engine_from_options(
    *,
    engine: str,
    engine_config: Path | None,
    licenses: str | None,
    replay: Path | None,
    run_dir: Path,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
) -> MultiEngine | None:
    """The run's web engine, or None for the offline web (``--engine offline``, the default)."""
    offline = engine.strip() in ("", "offline")
    if engine_config is None and offline:
        if licenses or replay is not None:
            raise ConfigError("--licenses and --replay apply to web engines: add --engine or "
                              "--engine-config")
        return None
    if engine_config is not None and not offline:
        raise ConfigError("give --engine or --engine-config, not both")
    cfg = load_engines_config(engine_config) if engine_config is not None \
        else EnginesConfig.parse(engine)
    if cfg.quota_dir is None:
        cfg = replace(cfg, quota_dir=str(data_dir / "search-quota"))
    cache_dir = run_dir / CACHE_FOLDER
    if replay is not None:
        source = replay / CACHE_FOLDER if (replay / CACHE_FOLDER).is_dir() else replay
        if not source.is_dir():
            raise ConfigError(f"--replay: no response cache in {replay}")
        cfg = replace(cfg, cache_dir=str(source), cache_mode="replay")
    lic = tuple(p.strip() for p in licenses.split(",") if p.strip()) if licenses else None
    return make_engine(cfg, env=os.environ if env is None else env, cache_dir=cache_dir,
                       licenses=lic, health_path=run_dir / HEALTH_FILE)


__all__ = ["CACHE_FOLDER", "HEALTH_FILE", "engine_from_options"]
