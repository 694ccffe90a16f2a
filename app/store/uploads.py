"""Uploads and their files. Store functions flush but never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.store.models import FileStatus, Upload, UploadFile

UPLOADS_FOLDER: Final = "uploads"
"""Uploads live in ``{data_dir}/uploads/{id}``; ``Upload.folder`` holds the relative part."""


@dataclass(frozen=True)
class FileRow:
    """One file of an upload, as the upload service reports it."""

    path: str
    status: FileStatus
    stored_path: str | None = None
    reason: str | None = None
    detail: str | None = None
    bytes: int = 0
    width: int | None = None
    height: int | None = None
    label: str | None = None


def upload_folder(upload_id: int) -> str:
    """The folder of upload ``upload_id``, relative to ``data_dir``."""
    return f"{UPLOADS_FOLDER}/{upload_id}"


def create_upload(
    session: Session,
    *,
    name: str = "",
    class_names: Sequence[str] = (),
    labelled: bool = False,
) -> Upload:
    """A new, empty upload; its ``id`` and ``folder`` are set when this returns."""
    upload = Upload(name=name[:255], class_names=list(class_names), labelled=labelled)
    session.add(upload)
    session.flush()
    upload.folder = upload_folder(upload.id)
    session.flush()
    return upload


def add_upload_file(session: Session, upload_id: int, row: FileRow) -> UploadFile:
    """Record one file of upload ``upload_id`` and count it as accepted or refused."""
    return add_upload_files(session, upload_id, [row])[0]


def add_upload_files(session: Session, upload_id: int, rows: Iterable[FileRow]) -> list[UploadFile]:
    """Record many files of upload ``upload_id`` (one flush) and update its counts."""
    upload = get_upload(session, upload_id)
    records = [
        UploadFile(
            upload_id=upload_id,
            path=row.path,
            stored_path=row.stored_path,
            status=row.status,
            reason=row.reason,
            detail=row.detail,
            bytes=row.bytes,
            width=row.width,
            height=row.height,
            label=row.label,
        )
        for row in rows
    ]
    session.add_all(records)
    accepted = sum(1 for r in records if r.status == FileStatus.ACCEPTED)
    upload.n_accepted += accepted
    upload.n_refused += len(records) - accepted
    session.flush()
    return records


def get_upload(session: Session, upload_id: int) -> Upload:
    """The upload ``upload_id``; :class:`NotFound` when there is none."""
    upload = session.get(Upload, upload_id)
    if upload is None:
        raise NotFound(f"upload {upload_id} does not exist")
    return upload


def list_uploads(session: Session, *, limit: int = 50) -> list[Upload]:
    """Uploads, newest first."""
    stmt = select(Upload).order_by(Upload.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def list_upload_files(
    session: Session,
    upload_id: int,
    *,
    status: FileStatus | None = None,
    page: int = 1,
    page_size: int = 100,
) -> tuple[list[UploadFile], int]:
    """One page of an upload's files in upload order, and how many there are in all."""
    where = [UploadFile.upload_id == upload_id]
    if status is not None:
        where.append(UploadFile.status == status)
    total = session.scalar(select(func.count()).select_from(UploadFile).where(*where)) or 0
    stmt = (
        select(UploadFile)
        .where(*where)
        .order_by(UploadFile.id)
        .limit(page_size)
        .offset((max(page, 1) - 1) * page_size)
    )
    return list(session.scalars(stmt)), total
