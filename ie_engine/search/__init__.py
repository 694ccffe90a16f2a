"""The offline web: an image corpus from Debian clip-art packages, searched by text embedding,
served over HTTP on loopback, and the client engine the explorer uses to query it."""

from ie_engine.search.corpus import (
    CORPUS_VERSION,
    CorpusIndex,
    CorpusInfo,
    CorpusItem,
    build_corpus,
    scan_sources,
)
from ie_engine.search.http_engine import HttpSearchEngine
from ie_engine.search.server import (
    ServerHandle,
    create_app,
    run_server,
    serve_in_background,
    serving,
)

__all__ = [
    "CORPUS_VERSION",
    "CorpusIndex",
    "CorpusInfo",
    "CorpusItem",
    "HttpSearchEngine",
    "ServerHandle",
    "build_corpus",
    "create_app",
    "run_server",
    "scan_sources",
    "serve_in_background",
    "serving",
]
