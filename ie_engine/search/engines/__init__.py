"""Real web image search engines behind the engine protocol, polite and license-aware.

Adapters (Openverse, Wikimedia Commons, Flickr, SearXNG, a clip-retrieval kNN service, Brave
Search images) share one polite HTTP loop (rate limit, daily quota, retries with back-off and
``Retry-After``), a response cache that also replays a run offline, a license filter, and
per-engine health. :func:`make_engine` builds a :class:`MultiEngine` over one or several of
them from configuration.
"""

from ie_engine.search.engines.base import DEFAULT_USER_AGENT, EngineSettings, WebEngine
from ie_engine.search.engines.brave import BraveImagesEngine
from ie_engine.search.engines.cache import CacheMode, Page, ReplayMissError, ResponseCache
from ie_engine.search.engines.clip_retrieval import ClipRetrievalEngine
from ie_engine.search.engines.factory import (
    KINDS,
    EnginesConfig,
    EngineSpec,
    load_engines_config,
    make_engine,
    make_web_engine,
)
from ie_engine.search.engines.flickr import FlickrEngine
from ie_engine.search.engines.health import EngineHealth, SpreadHealth
from ie_engine.search.engines.licenses import LicenseFilter, normalise_license
from ie_engine.search.engines.openverse import OpenverseEngine
from ie_engine.search.engines.politeness import Politeness, QuotaExhaustedError, RateLimiter
from ie_engine.search.engines.searxng import SearxngEngine
from ie_engine.search.engines.spreader import MultiEngine
from ie_engine.search.engines.wikimedia import WikimediaEngine

__all__ = [
    "DEFAULT_USER_AGENT",
    "KINDS",
    "BraveImagesEngine",
    "CacheMode",
    "ClipRetrievalEngine",
    "EngineHealth",
    "EngineSettings",
    "EngineSpec",
    "EnginesConfig",
    "FlickrEngine",
    "LicenseFilter",
    "MultiEngine",
    "OpenverseEngine",
    "Page",
    "Politeness",
    "QuotaExhaustedError",
    "RateLimiter",
    "ReplayMissError",
    "ResponseCache",
    "SearxngEngine",
    "SpreadHealth",
    "WebEngine",
    "WikimediaEngine",
    "load_engines_config",
    "make_engine",
    "make_web_engine",
    "normalise_license",
]
