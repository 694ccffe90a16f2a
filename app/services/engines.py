"""Web engines on the launch form and on the dashboard.

The engines a person may pick are those of the engine configuration file named by
``IE_ENGINE_CONFIG`` (:attr:`app.settings.Settings.engine_config`, the format of ``ie explore
--engine-config``); without one, only the offline web is offered. A run launched on web engines
keeps a snapshot of the chosen engines' configuration (``runs.engine_config``), so a later edit
of the file changes no run already launched, and its license filter (``runs.licenses``, codes).

The worker writes each engine's health (``runs.engine_health``, the engine's
``health().as_dict()``) after every fetch, with an ``engines`` event that refreshes the
dashboard's health panel (:func:`engines_context`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy.orm import Session

from app.settings import Settings
from app.store.models import Run
from app.store.runs import get_run
from ie_engine.errors import ConfigError
from ie_engine.search.engines.factory import KINDS, EnginesConfig, load_engines_config
from ie_engine.search.engines.licenses import PRESETS, parse_license_codes

OFFLINE: Final = "offline"
WEB: Final = "web"
LICENSE_CHOICES: Final[dict[str, str]] = {
    "any": "Any license (no filter)",
    "public-domain": "Public domain only (CC0, public domain)",
    "attribution": "Open: CC0, public domain, CC BY",
    "open": "Open and share-alike: CC0, public domain, CC BY, CC BY-SA",
    "commercial": "Commercial use: CC0, public domain, CC BY, CC BY-SA, CC BY-ND",
    "any-cc": "Any Creative Commons license or public domain",
    "custom": "Custom: the codes below",
}
"""The license filters of the launch form; every one but ``any`` and ``custom`` is a preset of
:data:`ie_engine.search.engines.licenses.PRESETS`."""
LICENSE_LABELS: Final = {
    "cc0": "CC0", "pd": "public domain", "by": "CC BY", "by-sa": "CC BY-SA",
    "by-nd": "CC BY-ND", "by-nc": "CC BY-NC", "by-nc-sa": "CC BY-NC-SA",
    "by-nc-nd": "CC BY-NC-ND", "nkcr": "no known copyright restrictions", "gfdl": "GFDL",
    "arr": "all rights reserved",
}


@dataclass(frozen=True)
class EngineOptions:
    """The web engines the settings offer: the configuration read from the file (None when
    there is no file or it cannot be used, ``error`` saying why)."""

    config: EnginesConfig | None = None
    error: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Each configured engine's name (its ``name``, else its kind), in the file's order."""
        if self.config is None:
            return ()
        return tuple(s.name or s.kind for s in self.config.engines)

    def labels(self) -> dict[str, str]:
        """Each engine's name with a short description for the form."""
        out: dict[str, str] = {}
        if self.config is None:
            return out
        for spec in self.config.engines:
            rpm = spec.requests_per_minute or KINDS[spec.kind].requests_per_minute
            name = spec.name or spec.kind
            kind = f"{spec.kind}, " if name != spec.kind else ""
            out[name] = f"{name} ({kind}{rpm:g} requests a minute)"
        return out

    @property
    def search_engines(self) -> dict[str, str]:
        """The choices of the form's "image web" field."""
        out = {OFFLINE: "Offline web (the built-in image corpus)"}
        if self.names:
            out[WEB] = "The web, through the engines ticked below"
        return out

    def default_licenses(self) -> tuple[str, str]:
        """The form's license filter before the person changes it: the file's ``licenses``
        (as custom codes, or its preset), else ``any``."""
        names = tuple(self.config.licenses) if self.config is not None else ()
        if not names:
            return "any", ""
        if len(names) == 1 and names[0].lower() in PRESETS:
            return names[0].lower(), ""
        return "custom", ", ".join(names)


def engine_options(settings: Settings) -> EngineOptions:
    """The engines ``settings.engine_config`` configures (read each time: the file may change
    while the app runs)."""
    if settings.engine_config is None:
        return EngineOptions()
    try:
        return EngineOptions(load_engines_config(settings.engine_config))
    except ConfigError as exc:
        return EngineOptions(error=f"the engine configuration (IE_ENGINE_CONFIG) is unusable: "
                                   f"{exc}")


@dataclass(frozen=True)
class EngineChoice:
    """What the launch form chose: the image web, the web engines' configuration (None for the
    offline web) and the allowed license codes (empty: any)."""

    search_engine: str = OFFLINE
    engine_config: dict[str, Any] | None = None
    licenses: tuple[str, ...] = ()


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def parse_licenses(form: Mapping[str, str], errors: list[str]) -> tuple[str, ...]:
    """The form's license filter as sorted codes (empty: any); problems go to ``errors``."""
    choice = form.get("license_filter", "any").strip() or "any"
    if choice not in LICENSE_CHOICES:
        errors.append(f"license filter: {choice[:40]!r} is not one of "
                      f"{', '.join(LICENSE_CHOICES)}")
        return ()
    if choice == "any":
        return ()
    names = _split(form.get("license_codes", "")) if choice == "custom" else [choice]
    if not names:
        errors.append("license codes: a custom filter needs at least one code, e.g. cc0, pd, by")
        return ()
    try:
        return tuple(sorted(parse_license_codes(names)))
    except ConfigError as exc:
        errors.append(f"license codes: {exc}")
        return ()


def parse_engine_choice(
    form: Mapping[str, str], options: EngineOptions, errors: list[str]
) -> EngineChoice:
    """The image web, engines and license filter of the launch form. ``form["engines"]`` holds
    the ticked engines, comma-separated. Problems go to ``errors``."""
    search = form.get("search_engine", OFFLINE).strip() or OFFLINE
    licenses = parse_licenses(form, errors)
    if search not in options.search_engines:
        errors.append(f"search engine: {search[:40]!r} is not one of "
                      f"{', '.join(options.search_engines)}")
        if options.error:
            errors.append(options.error)
        return EngineChoice()
    if search == OFFLINE:
        if licenses:
            errors.append("license filter: the offline web keeps no license filter; choose "
                          "\"any\", or search the web")
        return EngineChoice()
    assert options.config is not None  # WEB is offered only with a configuration
    ticked = list(dict.fromkeys(_split(form.get("engines", ""))))
    unknown = [n for n in ticked if n not in options.names]
    if unknown:
        errors.append(f"web engines: {', '.join(repr(n[:40]) for n in unknown)} not configured; "
                      f"choose from {', '.join(options.names)}")
    elif not ticked:
        errors.append(f"web engines: tick at least one of {', '.join(options.names)}")
    if unknown or not ticked:
        return EngineChoice()
    return EngineChoice(WEB, run_engine_config(options.config, ticked), licenses)


def run_engine_config(config: EnginesConfig, names: list[str]) -> dict[str, Any]:
    """The snapshot a run keeps: ``config`` with only the engines ``names``, no license filter
    (the run's own ``licenses`` apply) and the response cache in the run folder (a file's
    ``cache_dir`` is kept only to replay from it)."""
    specs = tuple(s for s in config.engines if (s.name or s.kind) in names)
    cache_dir = config.cache_dir if config.cache_mode == "replay" else None
    return replace(config, engines=specs, licenses=(), cache_dir=cache_dir).to_dict()


# -- showing the choice and the health ------------------------------------------------------


def engine_names(run: Run) -> list[str]:
    """The names of the run's web engines (empty for the offline web)."""
    cfg = run.engine_config or {}
    return [str(e.get("name") or e.get("kind")) for e in cfg.get("engines") or []
            if isinstance(e, dict)]


def describe_licenses(codes: list[str] | tuple[str, ...] | None) -> str:
    """``"any"``, or the codes in words (``"CC0, public domain, CC BY"``)."""
    if not codes:
        return "any"
    return ", ".join(LICENSE_LABELS.get(c, c) for c in codes)


@dataclass(frozen=True)
class EngineRow:
    """One engine of the health panel."""

    name: str
    kind: str
    status: str
    requests: int
    cache_hits: int
    results: int
    filtered_out: int
    errors: int
    rate_limited: int
    latency_ms: float | None
    quota_per_day: int | None
    quota_left: int | None
    last_error: str


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _opt(value: Any) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def health_rows(health: Mapping[str, Any] | None) -> list[EngineRow]:
    """The rows of a stored ``SpreadHealth.as_dict()`` (tolerant of missing keys)."""
    rows: list[EngineRow] = []
    for e in (health or {}).get("engines") or []:
        if not isinstance(e, dict):
            continue
        rows.append(EngineRow(
            name=str(e.get("name", "?"))[:64], kind=str(e.get("kind", ""))[:32],
            status=str(e.get("status", "unknown"))[:16],
            requests=_int(e.get("requests")), cache_hits=_int(e.get("cache_hits")),
            results=_int(e.get("results")), filtered_out=_int(e.get("filtered_out")),
            errors=_int(e.get("errors")), rate_limited=_int(e.get("rate_limited")),
            latency_ms=_opt(e.get("latency_ms_mean")), quota_per_day=_opt(e.get("quota_per_day")),
            quota_left=_opt(e.get("quota_left_today")),
            last_error=str(e.get("last_error") or "")[:300],
        ))
    return rows


def engines_context(run: Run) -> dict[str, Any]:
    """The health panel's context (``engines_panel`` False for an offline-web run)."""
    health = run.engine_health or {}
    return {
        "run": run,
        "engines_panel": run.search_engine == WEB,
        "engine_names": engine_names(run),
        "license_text": describe_licenses(run.licenses),
        "engine_rows": health_rows(health),
        "engine_spread": {k: _int(health.get(k)) for k in ("queries", "failovers",
                                                           "cached_answers")},
    }


def engines_fragment_context(session: Session, run_id: int) -> dict[str, Any]:
    """:func:`engines_context` of run ``run_id`` (the panel's own fragment)."""
    return engines_context(get_run(session, run_id))


__all__ = [
    "LICENSE_CHOICES",
    "OFFLINE",
    "WEB",
    "EngineChoice",
    "EngineOptions",
    "describe_licenses",
    "engine_names",
    "engine_options",
    "engines_context",
    "parse_engine_choice",
    "parse_licenses",
    "run_engine_config",
]
