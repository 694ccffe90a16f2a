"""The search engine a run's explorer queries, as the run chose it at launch.

A run on the offline web (``runs.search_engine == "offline"``, the default) queries the corpus
service at ``settings.search_url``. A run on the web (``web``) gets the engines of its
``engine_config`` snapshot, built by :func:`ie_engine.search.engines.make_engine` with

* the run's license filter (``runs.licenses``; empty: any license);
* the response cache in the run folder (``{run_dir}/search-cache``): a resumed run, or another
  worker process taking it over, asks nothing twice; a configuration whose ``cache_mode`` is
  ``replay`` answers from its ``cache_dir`` alone;
* each engine's daily quota counted in ``{data_dir}/search-quota`` (shared by every run and
  worker process of this data folder);
* API keys from the worker's environment, by the variable names the configuration gives;
* each engine's final health written to ``{run_dir}/engine-health.json`` when it closes;
* the image download cache beside the response cache (``search-cache/downloads``, same mode),
  handed to the explorer (:func:`download_cache`): a replay downloads nothing either.

The downloader may also fetch from the hosts of the run's own engines (a self-hosted SearXNG or
clip-retrieval service on a private network, which may serve the images it proxies).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.settings import Settings
from app.store.models import Run
from ie_engine.config import ExplorerConfig
from ie_engine.download_cache import DownloadCache
from ie_engine.errors import ConfigError
from ie_engine.search import HttpSearchEngine
from ie_engine.search.engines import EnginesConfig, MultiEngine, make_engine
from ie_engine.search.engines.cli_support import CACHE_FOLDER, HEALTH_FILE
from ie_engine.types import SearchEngine


def web_engine(
    run: Run, settings: Settings, run_dir: Path, *, env: Mapping[str, str] | None = None
) -> MultiEngine:
    """The web engines of run ``run`` (see the module docstring); :class:`ConfigError` when
    the run's configuration or the environment cannot make them (a missing API key ...)."""
    if not run.engine_config:
        raise ConfigError(f"run {run.id} searches the web but keeps no engine configuration")
    cfg = EnginesConfig.parse(dict(run.engine_config))
    if cfg.quota_dir is None:
        cfg = replace(cfg, quota_dir=str(settings.data_dir / "search-quota"))
    return make_engine(
        cfg,
        env=os.environ if env is None else env,
        cache_dir=run_dir / CACHE_FOLDER,
        licenses=tuple(str(c) for c in run.licenses or ()),
        health_path=run_dir / HEALTH_FILE,
    )


def search_engine(run: Run, settings: Settings, run_dir: Path) -> SearchEngine:
    """The engine the run chose: the offline web's service, or its web engines."""
    if run.search_engine == "web":
        return web_engine(run, settings, run_dir)
    return HttpSearchEngine(settings.search_url)


def allow_engine_hosts(cfg: ExplorerConfig, engine: object) -> ExplorerConfig:
    """``cfg`` with the hosts of ``engine``'s web engines (if it has any) allowed to the
    downloader."""
    if not isinstance(engine, MultiEngine):
        return cfg
    hosts = list(cfg.download.allowed_private_hosts)
    for e in engine.engines:
        host = urlsplit(e.settings.base_url).netloc
        if host and host not in hosts:
            hosts.append(host)
    return replace(cfg, download=replace(cfg.download, allowed_private_hosts=tuple(hosts)))


def download_cache(engine: object) -> DownloadCache | None:
    """The download cache that goes with ``engine``'s response cache (None for the offline
    web, or with the cache off)."""
    return engine.download_cache if isinstance(engine, MultiEngine) else None


def engine_health(engine: object) -> dict[str, Any] | None:
    """Each web engine's health now (``SpreadHealth.as_dict()``); None for the offline web."""
    if isinstance(engine, MultiEngine):
        return engine.health().as_dict()
    return None


__all__ = ["allow_engine_hosts", "download_cache", "engine_health", "search_engine",
           "web_engine"]
