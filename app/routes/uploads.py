"""Uploads: the form (folder picker, drag and drop, zip), the per-file report, one upload."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse

from app import forms
from app.deps import SessionDep, SettingsDep, UploadId
from app.services.uploads import accept_upload
from app.store.models import FileStatus
from app.store.uploads import get_upload, list_upload_files, list_uploads
from app.templating import render

router = APIRouter(prefix="/uploads")


@router.get("", response_class=HTMLResponse, name="uploads")
def uploads_page(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """The upload form and the uploads so far."""
    context = {"uploads": list_uploads(session), "settings": settings, "report": None}
    return render(request, "pages/uploads.html", context)


@router.post("", response_class=HTMLResponse, name="create_upload",
             openapi_extra=forms.UPLOAD)
async def create_upload(
    request: Request, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """Store an upload; reply with its per-file report (the page, or the fragment to htmx)."""
    length = request.headers.get("content-length")
    report = await accept_upload(
        session,
        settings,
        chunks=request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=int(length) if length and length.isdigit() else None,
    )
    context = {"uploads": list_uploads(session), "settings": settings, "report": report}
    return render(request, "pages/uploads.html", context, block="report", status_code=201)


@router.get("/{upload_id}", response_class=HTMLResponse, name="upload")
def upload_page(
    request: Request,
    session: SessionDep,
    upload_id: UploadId,
    status: FileStatus | None = None,
    page: int = Query(1, ge=1, le=1_000_000),
) -> HTMLResponse:
    """One upload: its classes and its files, a page at a time."""
    upload = get_upload(session, upload_id)
    files, total = list_upload_files(session, upload_id, status=status, page=page)
    context = {
        "upload": upload,
        "files": files,
        "total": total,
        "page": page,
        "page_size": 100,
        "status": status.value if status else "",
    }
    return render(request, "pages/upload.html", context, block="files")
