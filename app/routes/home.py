"""The start page: the runs so far, and where to go first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from app.deps import SessionDep
from app.store.runs import list_runs
from app.store.uploads import list_uploads
from app.templating import render

router = APIRouter()


@router.get("/", response_class=HTMLResponse, name="home")
def home(request: Request, session: SessionDep) -> HTMLResponse:
    """Runs, newest first, with a short guide for a first visit."""
    runs = list_runs(session, limit=100)
    n_uploads = len(list_uploads(session, limit=1))
    return render(
        request, "pages/index.html", {"runs": runs, "has_uploads": n_uploads > 0}, block="runs"
    )
