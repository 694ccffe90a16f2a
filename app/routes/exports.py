"""Take-aways from the dashboard: make the model, the dataset or the report, download them, and
compare runs.

Making an export is a POST form that works without JavaScript (the reply is a redirect to the
file just made) and with htmx (the reply is the refreshed list of the run's exports). Files are
served only from the run folder's ``exports/`` (:func:`app.services.exports.export_file`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from app import forms
from app.deps import ID_MAX, FormDep, RunId, SessionDep, SettingsDep
from app.services import exports
from app.store.runs import get_run
from app.templating import is_htmx, render_fragment

router = APIRouter()

MEDIA = {".html": "text/html; charset=utf-8", ".zip": "application/zip"}


def _list(request: Request, session: SessionDep, settings: SettingsDep, run_id: RunId,
          message: str = "") -> HTMLResponse:
    run = get_run(session, run_id)
    context = {"run": run, "export_files": exports.list_exports(settings, run_id),
               "export_licenses": exports.license_counts(session, run_id),
               "export_message": message}
    return render_fragment(request, "partials/_run_exports.html", context)


@router.get("/runs/{run_id}/exports", response_class=HTMLResponse, name="run_exports")
def exports_fragment(request: Request, session: SessionDep, settings: SettingsDep,
                     run_id: RunId) -> HTMLResponse:
    """The take-aways region: the buttons and the files made so far."""
    return _list(request, session, settings, run_id)


@router.post("/runs/{run_id}/exports/{kind}", response_model=None, name="make_export",
             openapi_extra=forms.EXPORT)
def make(request: Request, session: SessionDep, settings: SettingsDep, run_id: RunId,
         kind: exports.ExportKind, form: FormDep) -> Response:
    """Make the ``model``, ``dataset`` (``select``, ``top``, ``license``, ``license_boxes``
    fields) or ``report``."""
    options = None
    if kind == "dataset":
        options = exports.dataset_options({
            "select": form.get("select"), "top": form.get("top"),
            "license": [v for v in form.getlist("license") if isinstance(v, str)],
            "license_boxes": "license_boxes" in form,
        })
    path = exports.make_export(session, settings, run_id, kind, options)
    if is_htmx(request):
        return _list(request, session, settings, run_id, f"Made {path.name}.")
    return RedirectResponse(request.url_for("export_download", run_id=run_id, name=path.name),
                            status_code=303)


@router.get("/runs/{run_id}/exports/files/{name}", response_model=None, name="export_download")
def download(session: SessionDep, settings: SettingsDep, run_id: RunId, name: str) -> Response:
    """One export file of the run, as a download (the report opens in the browser)."""
    get_run(session, run_id)
    path = exports.export_file(settings, run_id, name)
    media = MEDIA.get(path.suffix, "application/octet-stream")
    if path.suffix == ".html":
        return FileResponse(path, media_type=media)
    return FileResponse(path, media_type=media, filename=f"run-{run_id}-{path.name}")


@router.get("/compare", response_class=HTMLResponse, name="compare_runs")
def compare(session: SessionDep, settings: SettingsDep,
            run: Annotated[list[Annotated[int, Field(ge=1, le=ID_MAX)]],
                           Query(max_length=exports.MAX_COMPARED)]) -> HTMLResponse:
    """Two or more runs' curves on one page (``?run=1&run=2``)."""
    return HTMLResponse(exports.comparison_html(session, settings, run))
