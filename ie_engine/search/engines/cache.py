"""The response cache: one JSON file per (engine, query, page), so that a repeated query costs
nothing and a run can be replayed offline.

Keys also carry the engine's *variant* (page size, server-side license filter, index name ...):
two configurations that would get different answers never share an entry. What is stored is
the parsed page (results in the common record, and whether more pages follow), so a replay does
not depend on the engine's wire format.

Modes:

=========== ==================================================================================
``use``     read, and write what the network answers (the default)
``refresh`` never read, always ask the network and overwrite
``replay``  read only; never touch the network; a miss raises :class:`ReplayMissError`
``off``     no cache at all
=========== ==================================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ie_engine.errors import ConfigError, ExplorerError
from ie_engine.types import SearchResult

CACHE_FORMAT = 1


class CacheMode(StrEnum):
    USE = "use"
    REFRESH = "refresh"
    REPLAY = "replay"
    OFF = "off"

    @classmethod
    def parse(cls, value: str | CacheMode) -> CacheMode:
        try:
            return cls(value)
        except ValueError:
            modes = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown cache mode {value!r}; use one of {modes}") from None


class ReplayMissError(ExplorerError):
    """Replay mode met a query the cache does not hold (never a silent empty answer)."""


@dataclass(frozen=True)
class Page:
    """One page of an engine's answer, in the common record."""

    results: list[SearchResult]
    has_more: bool


def _result_from(raw: dict[str, Any]) -> SearchResult:
    fields = dict(raw)
    fields["extra"] = {str(k): str(v) for k, v in (fields.get("extra") or {}).items()}
    known = SearchResult.__dataclass_fields__
    return SearchResult(**{k: v for k, v in fields.items() if k in known})


def normalise_query(query: str) -> str:
    """Queries differing only in surrounding or repeated white space share an entry."""
    return " ".join(query.split())


class ResponseCache:
    """Pages on disk under ``root/{engine}/{key[:2]}/{key}.json`` (see the module docstring)."""

    def __init__(self, root: Path, mode: CacheMode | str = CacheMode.USE) -> None:
        self.root = Path(root)
        self.mode = CacheMode.parse(mode)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(engine: str, variant: str, query: str, page: int) -> str:
        blob = json.dumps([engine, variant, normalise_query(query), page], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, engine: str, variant: str, query: str, page: int) -> Path:
        k = self.key(engine, variant, query, page)
        return self.root / _safe(engine) / k[:2] / f"{k}.json"

    @property
    def readable(self) -> bool:
        return self.mode in (CacheMode.USE, CacheMode.REPLAY)

    @property
    def writable(self) -> bool:
        return self.mode in (CacheMode.USE, CacheMode.REFRESH)

    def get(self, engine: str, variant: str, query: str, page: int) -> Page | None:
        """The stored page, or None (also when the mode does not read, or the file is bad)."""
        if not self.readable:
            return None
        p = self.path(engine, variant, query, page)
        try:
            data = json.loads(p.read_text())
            out = Page([_result_from(r) for r in data["results"]], bool(data["has_more"]))
        except (OSError, ValueError, TypeError, KeyError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return out

    def put(self, engine: str, variant: str, query: str, page: int, value: Page) -> None:
        if not self.writable:
            return
        p = self.path(engine, variant, query, page)
        record = {
            "format": CACHE_FORMAT,
            "engine": engine,
            "variant": variant,
            "query": normalise_query(query),
            "page": page,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "has_more": value.has_more,
            "results": [asdict(r) for r in value.results],
        }
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(record, ensure_ascii=False))
            os.replace(tmp, p)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def miss_error(self, engine: str, variant: str, query: str, page: int) -> ReplayMissError:
        return ReplayMissError(
            f"replay: search engine {engine!r} has no cached answer for {query!r} (page {page}, "
            f"variant {variant!r}) under {self.root}; replay runs only what was recorded"
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "engine"


__all__ = ["CacheMode", "Page", "ReplayMissError", "ResponseCache", "normalise_query"]
