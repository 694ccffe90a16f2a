"""Runs: the launch form, the dashboard page, and each region of it as a fragment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app import forms
from app.deps import ID_MAX, FormDep, RunId, SessionDep, SettingsDep, ViewDep
from app.errors import InvalidInput
from app.services import dashboard
from app.services.engines import (
    LICENSE_CHOICES,
    EngineOptions,
    engine_options,
    engines_fragment_context,
)
from app.services.runs import (
    BOUNDS,
    MAX_ROOTS_CHARS,
    PRESETS,
    base_choices,
    launch_run,
    parse_launch_form,
)
from app.store.uploads import list_uploads
from app.templating import render, render_fragment
from ie_engine.bases import BaseStatus
from ie_engine.config import make_config

router = APIRouter(prefix="/runs")


def _form_page(
    request: Request,
    session: SessionDep,
    values: dict[str, str],
    options: EngineOptions,
    *,
    bases: list[BaseStatus],
    errors: InvalidInput | None = None,
) -> HTMLResponse:
    uploads = [u for u in list_uploads(session, limit=200) if u.n_accepted > 0]
    defaults = {
        preset: {
            "iterations": cfg.iterations,
            "queries_per_iteration": cfg.policy.queries_per_iteration,
            "images_per_query": cfg.search.results_per_query,
        }
        for preset in PRESETS
        for cfg in [make_config(preset)]
    }
    context: dict[str, Any] = {
        "uploads": uploads,
        "values": values,
        "error": errors,
        "presets": PRESETS,
        "engines": options.search_engines,
        "web_engines": options.labels(),
        "engine_error": options.error,
        "ticked": set(values.get("engines", "").split(",")),
        "license_choices": LICENSE_CHOICES,
        "defaults": defaults,
        "bounds": BOUNDS,
        "roots_max_chars": MAX_ROOTS_CHARS,
        "bases": bases,
        "preset_bases": {preset: make_config(preset).train.base for preset in PRESETS},
    }
    return render(request, "pages/launch.html", context, status_code=400 if errors else 200)


@router.get("/new", response_class=HTMLResponse, name="new_run")
def new_run(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    upload: Annotated[int | None, Query(ge=1, le=ID_MAX)] = None,
) -> HTMLResponse:
    """The launch form (``?upload=ID`` picks the upload)."""
    options = engine_options(settings)
    license_filter, license_codes = options.default_licenses()
    values = {"upload_id": str(upload or ""), "preset": "cpu-small", "seed": "0",
              "search_engine": "offline", "engines": ",".join(options.names),
              "license_filter": license_filter, "license_codes": license_codes}
    return _form_page(request, session, values, options, bases=base_choices(settings))


@router.post("/new", response_model=None, name="launch_run", openapi_extra=forms.LAUNCH)
def launch(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    """Create and queue a run, then go to its dashboard; the form again (400) when a field is
    unusable."""
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    values["engines"] = ",".join(v for v in form.getlist("engines") if isinstance(v, str))
    options = engine_options(settings)
    bases = base_choices(settings)
    try:
        run = launch_run(session, settings, parse_launch_form(values, options, bases))
    except InvalidInput as exc:
        return _form_page(request, session, values, options, bases=bases, errors=exc)
    return RedirectResponse(request.url_for("run", run_id=run.id), status_code=303)


@router.get("/{run_id}", response_class=HTMLResponse, name="run")
def run_page(request: Request, session: SessionDep, run_id: RunId, view: ViewDep) -> HTMLResponse:
    """The live dashboard: the run's current state, then updates over the event stream."""
    return render(request, "pages/run.html", dashboard.dashboard_context(session, run_id, view))


@router.get("/{run_id}/status", response_class=HTMLResponse, name="run_status")
def status_fragment(request: Request, session: SessionDep, run_id: RunId) -> HTMLResponse:
    """Status, iteration and the controls."""
    context = dashboard.status_context(session, run_id)
    return render_fragment(request, "partials/_run_status.html", context)


@router.get("/{run_id}/progress", response_class=HTMLResponse, name="run_progress")
def progress_fragment(request: Request, session: SessionDep, run_id: RunId) -> HTMLResponse:
    """One bar per phase of the iteration in progress."""
    context = dashboard.progress_context(session, run_id)
    return render_fragment(request, "partials/_run_progress.html", context)


@router.get("/{run_id}/queries", response_class=HTMLResponse, name="run_queries")
def queries_fragment(
    request: Request, session: SessionDep, run_id: RunId, view: ViewDep
) -> HTMLResponse:
    """The queries of one iteration (``?qiter=N``; default: the current one)."""
    context = dashboard.queries_context(session, run_id, view)
    return render_fragment(request, "partials/_run_queries.html", context)


@router.get("/{run_id}/leaderboard", response_class=HTMLResponse, name="run_leaderboard")
def leaderboard_fragment(
    request: Request, session: SessionDep, run_id: RunId, view: ViewDep
) -> HTMLResponse:
    """One page of the concept leaderboard (``sort``, ``q``, ``show``, ``page``, ``pick``)."""
    context = dashboard.leaderboard_context(session, run_id, view)
    return render_fragment(request, "partials/_run_leaderboard.html", {**context, "oob": True})


@router.get("/{run_id}/gallery", response_class=HTMLResponse, name="run_gallery")
def gallery_fragment(
    request: Request, session: SessionDep, run_id: RunId, view: ViewDep
) -> HTMLResponse:
    """One page of images (``concept``, ``iteration``, ``gpage``)."""
    context = dashboard.gallery_context(session, run_id, view)
    return render_fragment(request, "partials/_run_gallery.html", context)


@router.get("/{run_id}/log", response_class=HTMLResponse, name="run_log")
def log_fragment(request: Request, session: SessionDep, run_id: RunId) -> HTMLResponse:
    """The newest events, newest first."""
    context = dashboard.log_context(session, run_id)
    return render_fragment(request, "partials/_run_log.html", context)


@router.get("/{run_id}/engines", response_class=HTMLResponse, name="run_engines")
def engines_fragment(request: Request, session: SessionDep, run_id: RunId) -> HTMLResponse:
    """Each web engine's health (quota left, errors, latency, status)."""
    context = engines_fragment_context(session, run_id)
    return render_fragment(request, "partials/_run_engines.html", context)
