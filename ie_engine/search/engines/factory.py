"""Engines from configuration: :func:`make_engine` and the configuration records it reads.

A configuration names engines, a license filter, the response cache and the manners to keep::

    {
      "engines": [
        "openverse",
        {"kind": "wikimedia", "requests_per_minute": 20},
        {"kind": "flickr", "requests_per_day": 2000, "weight": 2},
        {"kind": "searxng", "base_url": "http://127.0.0.1:8888"}
      ],
      "licenses": ["cc0", "pd", "by"],
      "cache_mode": "use",
      "user_agent": "my-lab-explorer/1.0 (mailto:me@example.org)"
    }

(JSON, or the same keys in TOML). API keys never sit in the file: each engine reads its key from
an environment variable (``api_key_env``, with a default per kind), out of the ``env`` mapping
the caller passes (the CLI passes ``os.environ``; the engine itself never reads the process
environment). A short form, ``"openverse,wikimedia"`` or ``"searxng@http://host:8888"``, is
accepted wherever a configuration is.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import aiohttp

from ie_engine.download_cache import DOWNLOADS_FOLDER, DownloadCache
from ie_engine.errors import ConfigError
from ie_engine.search.engines.base import DEFAULT_USER_AGENT, EngineSettings, WebEngine
from ie_engine.search.engines.brave import BraveImagesEngine
from ie_engine.search.engines.cache import CacheMode, ResponseCache
from ie_engine.search.engines.clip_retrieval import ClipRetrievalEngine
from ie_engine.search.engines.flickr import FlickrEngine
from ie_engine.search.engines.licenses import LicenseFilter
from ie_engine.search.engines.openverse import OpenverseEngine
from ie_engine.search.engines.politeness import DayCounter, Politeness, RateLimiter, Sleep
from ie_engine.search.engines.searxng import SearxngEngine
from ie_engine.search.engines.spreader import MultiEngine
from ie_engine.search.engines.wikimedia import WikimediaEngine


@dataclass(frozen=True)
class KindDefaults:
    engine: type[WebEngine]
    base_url: str
    base_url_env: str
    api_key_env: str
    page_size: int
    requests_per_minute: float
    requests_per_day: int | None = None
    max_concurrency: int = 2


KINDS: dict[str, KindDefaults] = {
    "openverse": KindDefaults(OpenverseEngine, "https://api.openverse.org/v1", "",
                              "OPENVERSE_TOKEN", 20, 10.0, 200),
    "wikimedia": KindDefaults(WikimediaEngine, "https://commons.wikimedia.org/w/api.php", "",
                              "", 50, 30.0, None, 1),
    "flickr": KindDefaults(FlickrEngine, "https://www.flickr.com/services/rest/", "",
                           "FLICKR_API_KEY", 100, 60.0, None),
    "searxng": KindDefaults(SearxngEngine, "http://127.0.0.1:8888", "SEARXNG_URL",
                            "SEARXNG_TOKEN", 20, 30.0, None),
    "clip-retrieval": KindDefaults(ClipRetrievalEngine, "http://127.0.0.1:1234",
                                   "CLIP_RETRIEVAL_URL", "", 100, 60.0, None),
    "brave": KindDefaults(BraveImagesEngine, "https://api.search.brave.com/res/v1", "",
                          "BRAVE_SEARCH_API_KEY", 100, 60.0, None, 1),
}
"""Every engine kind, with its defaults (see the README's "Real web engines")."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine of a configuration; unset numbers take the kind's defaults."""

    kind: str
    name: str = ""
    base_url: str = ""
    api_key_env: str = ""
    requests_per_minute: float | None = None
    requests_per_day: int | None = None
    max_concurrency: int | None = None
    page_size: int | None = None
    max_pages: int = 3
    weight: float = 1.0
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any]) -> EngineSpec:
        if isinstance(raw, str):
            kind, _, url = raw.strip().partition("@")
            raw = {"kind": kind.strip(), "base_url": url.strip()}
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown engine setting(s) {sorted(unknown)}; known: "
                              f"{sorted(known)}")
        data = dict(raw)
        data["options"] = {str(k): str(v) for k, v in (data.get("options") or {}).items()}
        spec = cls(**data)
        if spec.kind not in KINDS:
            raise ConfigError(f"unknown engine kind {spec.kind!r}; choose from "
                              f"{', '.join(KINDS)}")
        if spec.weight <= 0 or spec.max_pages < 1:
            raise ConfigError(f"engine {spec.kind!r}: weight must be > 0, max_pages >= 1")
        return spec


@dataclass(frozen=True)
class EnginesConfig:
    """Engines, license filter, cache and manners for one run (see the module docstring)."""

    engines: tuple[EngineSpec, ...]
    licenses: tuple[str, ...] = ()
    """Allowed licenses (codes, presets or common names); empty: no filter."""
    cache_dir: str | None = None
    """Response cache folder; None: the caller's default (the CLI: the run folder)."""
    cache_mode: str = "use"
    quota_dir: str | None = None
    """Where each engine's requests of the day are counted across processes."""
    user_agent: str = DEFAULT_USER_AGENT
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    max_retry_after_s: float = 120.0

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any]) -> EnginesConfig:
        if isinstance(raw, str):
            return cls(tuple(EngineSpec.parse(p) for p in raw.split(",") if p.strip()))
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown engine configuration key(s) {sorted(unknown)}")
        data = dict(raw)
        engines = data.get("engines") or []
        if isinstance(engines, str):
            engines = [p for p in engines.split(",") if p.strip()]
        data["engines"] = tuple(EngineSpec.parse(e) for e in engines)
        data["licenses"] = tuple(data.get("licenses") or ())
        out = cls(**data)
        if not out.engines:
            raise ConfigError("an engine configuration needs at least one engine")
        CacheMode.parse(out.cache_mode)
        LicenseFilter.from_names(out.licenses)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_engines_config(path: Path) -> EnginesConfig:
    """Read a JSON (``.json``) or TOML (anything else) engine configuration file."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read engine configuration {path}: {exc}") from exc
    return EnginesConfig.parse(data)


def make_web_engine(
    spec: EngineSpec,
    config: EnginesConfig,
    *,
    env: Mapping[str, str],
    cache: ResponseCache | None,
    license_filter: LicenseFilter,
    quota_dir: Path | None = None,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep = asyncio.sleep,
) -> WebEngine:
    """One adapter from its spec and the shared settings."""
    d = KINDS[spec.kind]
    name = spec.name or spec.kind
    key_env = spec.api_key_env or d.api_key_env
    base_url = spec.base_url or (env.get(d.base_url_env, "") if d.base_url_env else "") \
        or d.base_url
    pol = Politeness(
        requests_per_minute=spec.requests_per_minute or d.requests_per_minute,
        requests_per_day=spec.requests_per_day if spec.requests_per_day is not None
        else d.requests_per_day,
        max_concurrency=spec.max_concurrency or d.max_concurrency,
        retries=config.retries,
        backoff_s=config.backoff_s,
        max_retry_after_s=config.max_retry_after_s,
    )
    settings = EngineSettings(
        name=name,
        base_url=base_url,
        api_key=env.get(key_env, "") if key_env else "",
        page_size=spec.page_size or d.page_size,
        max_pages=spec.max_pages,
        politeness=pol,
        user_agent=config.user_agent,
        timeout_s=config.timeout_s,
        options=dict(spec.options),
    )
    counter = DayCounter(quota_dir / f"{name}.json" if quota_dir is not None else None)
    limiter = RateLimiter(name, pol.requests_per_minute, pol.requests_per_day,
                          counter=counter, sleep=sleep)
    if d.engine.needs_key and not settings.api_key:
        if cache is not None and cache.mode is CacheMode.REPLAY:
            settings = replace(settings, api_key="(replay: no key needed)")
        else:
                raise ConfigError(f"engine {name!r} ({spec.kind}) needs an API key in the "
                              f"environment variable {key_env}")
    return d.engine(settings, cache=cache, license_filter=license_filter, limiter=limiter,
                    session=session, sleep=sleep)


def make_engine(
    config: EnginesConfig | str | Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    cache_mode: str | None = None,
    licenses: tuple[str, ...] | None = None,
    health_path: Path | None = None,
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep = asyncio.sleep,
) -> MultiEngine:
    """A search engine over the configured engines (one or several), with the license filter,
    the response cache and each engine's quota. Arguments override the configuration.

    The engine also carries the image download cache that goes with the response cache
    (``{cache folder}/downloads``, same mode; None when the mode is ``off``) as
    ``download_cache``, for the explorer: a replay then answers downloads offline too."""
    cfg = config if isinstance(config, EnginesConfig) else EnginesConfig.parse(config)
    if cache_mode is not None:
        cfg = replace(cfg, cache_mode=cache_mode)
    if licenses is not None:
        cfg = replace(cfg, licenses=licenses)
    mode = CacheMode.parse(cfg.cache_mode)
    folder = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir
    if mode is not CacheMode.OFF and folder is None:
        raise ConfigError("the response cache needs a folder (cache_dir), or cache_mode 'off'")
    cache = ResponseCache(folder, mode) if folder is not None and mode is not CacheMode.OFF \
        else None
    downloads = DownloadCache(cache.root / DOWNLOADS_FOLDER, mode.value) if cache is not None \
        else None
    lic = LicenseFilter.from_names(cfg.licenses)
    quota = Path(cfg.quota_dir) if cfg.quota_dir else None
    engines = [
        make_web_engine(s, cfg, env=env or {}, cache=cache, license_filter=lic,
                        quota_dir=quota, session=session, sleep=sleep)
        for s in cfg.engines
    ]
    return MultiEngine(engines, weights=[s.weight for s in cfg.engines], license_filter=lic,
                       replay=mode is CacheMode.REPLAY, health_path=health_path,
                       download_cache=downloads)


__all__ = [
    "KINDS",
    "EngineSpec",
    "EnginesConfig",
    "load_engines_config",
    "make_engine",
    "make_web_engine",
]
