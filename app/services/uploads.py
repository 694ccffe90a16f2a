"""Uploading target images: a browser folder or a zip archive becomes an ``Upload``.

The path of one upload, top to bottom (:func:`accept_upload`):

1. the request body streams into a fresh staging folder (:mod:`app.services.multipart`), under
   made-up names, with the body, file-count and per-file caps enforced as bytes arrive;
2. a zip archive is judged entry by entry and extracted into the staging folder
   (:mod:`app.services.archives`);
3. each file is judged: its given path (:func:`~app.services.filenames.split_given_path`),
   a duplicate path, then its content (:func:`~app.services.inspection.inspect_image`);
4. labels are inferred from the accepted paths (:func:`~app.services.filenames.infer_labels`);
5. the upload row is created, accepted files move to
   ``{data_dir}/uploads/{id}/{label or _}/{safe name}`` (each destination checked to lie inside
   that folder), and every file, accepted or refused, is recorded with its reason.

The staging folder is always removed; on any error the upload's folder is removed too, so a
refused upload leaves nothing behind. The caller owns the database transaction.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio.to_thread
from sqlalchemy.orm import Session

from app.errors import UploadRefused, UploadTooLarge
from app.services.archives import ArchiveLimits, expand_zip
from app.services.filenames import (
    infer_labels,
    inside,
    label_dirs,
    path_key,
    split_given_path,
    stored_name,
    unique_name,
)
from app.services.inspection import EXTENSIONS, ImageInfo, inspect_image
from app.services.multipart import FormLimits, ReceivedForm, receive_form
from app.services.staging import FileRefused, StagedFile, new_staging_dir, remove_tree
from app.settings import Settings
from app.store.models import FileStatus
from app.store.uploads import FileRow, add_upload_files, create_upload

FILES_FIELD: Final = "files"
"""Form field of the images of a picked folder (each with its relative path as file name)."""
ARCHIVE_FIELD: Final = "archive"
"""Form field of a zip archive."""
MAX_CLASS_NAMES: Final = 1000


@dataclass
class UploadReport:
    """What became of every file of one upload."""

    upload_id: int
    name: str
    labelled: bool
    class_names: list[str]
    files: list[FileRow] = field(default_factory=list)

    @property
    def accepted(self) -> list[FileRow]:
        return [f for f in self.files if f.status == FileStatus.ACCEPTED]

    @property
    def refused(self) -> list[FileRow]:
        return [f for f in self.files if f.status == FileStatus.REFUSED]


@dataclass
class _Judged:
    """A staged file that passed every check."""

    staged: StagedFile
    parts: list[str]
    info: ImageInfo


def form_limits(settings: Settings) -> FormLimits:
    """The request caps of an upload form, from the settings."""
    return FormLimits(
        max_body_bytes=settings.max_upload_bytes,
        max_files=settings.max_files,
        file_caps={ARCHIVE_FIELD: settings.max_upload_bytes},
        default_file_cap=settings.max_file_bytes,
    )


def archive_limits(settings: Settings) -> ArchiveLimits:
    """The caps of a zip archive, from the settings."""
    return ArchiveLimits(
        max_entries=settings.max_files,
        max_total_bytes=settings.max_upload_bytes,
        max_file_bytes=settings.max_file_bytes,
        max_ratio=settings.max_zip_ratio,
    )


def parse_class_names(text: str) -> list[str]:
    """Class names typed by a person: one per line or comma-separated, blanks and repeats out."""
    names: list[str] = []
    for raw in text.replace(",", "\n").splitlines():
        name = " ".join(raw.split())
        if name and name not in names:
            names.append(name[:255])
    return names[:MAX_CLASS_NAMES]


async def accept_upload(
    session: Session,
    settings: Settings,
    *,
    chunks: AsyncIterable[bytes],
    content_type: str,
    content_length: int | None,
) -> UploadReport:
    """Receive one upload form (a folder's files and/or a zip archive) and store it.

    Raises :class:`UploadTooLarge` when the body is over the cap (before reading it when the
    declared length says so), :class:`UploadRefused` when the upload is empty or no image was
    accepted. The slow part (decoding every image) runs in a worker thread.
    """
    if content_length is not None and content_length > settings.max_upload_bytes:
        raise UploadTooLarge(
            f"the upload is {content_length:,} bytes, over the limit of "
            f"{settings.max_upload_bytes:,}"
        )
    staging = new_staging_dir(settings.uploads_dir)
    try:
        form = await receive_form(
            chunks, content_type, staging=staging, limits=form_limits(settings)
        )
        return await anyio.to_thread.run_sync(ingest_form, session, settings, form, staging)
    finally:
        remove_tree(staging)


def ingest_form(
    session: Session, settings: Settings, form: ReceivedForm, staging: Path
) -> UploadReport:
    """Judge and store the files of a received form (blocking: decodes every image)."""
    staged: list[StagedFile] = []
    names: list[str] = []
    for n, part in enumerate(form.files):
        if part.field != ARCHIVE_FIELD:
            staged.append(part)
            continue
        names.append(part.given)
        if part.refusal is not None or part.staged is None:
            raise UploadTooLarge(f"the archive {part.given!r} is over the upload limit")
        staged.extend(expand_zip(part.staged, staging / f"archive-{n}", archive_limits(settings)))
        part.staged.unlink(missing_ok=True)
    if not staged:
        raise UploadRefused(
            "the upload is empty: choose a folder of images or a zip archive, then send it"
        )
    name = form.text("name").strip() or (names[0] if names else _folder_name(staged))
    return store_files(
        session,
        settings,
        staged,
        name=name,
        class_names=parse_class_names(form.text("class_names")),
    )


def _folder_name(staged: Sequence[StagedFile]) -> str:
    """The picked folder's name (the first component the browser sent), or ``""``."""
    first = staged[0].given.replace("\\", "/").split("/")
    return first[0] if len(first) > 1 else ""


def _judge(staged: Sequence[StagedFile], max_pixels: int) -> tuple[list[_Judged], list[FileRow]]:
    """Split staged files into accepted ones and refusal rows (refused bytes are deleted)."""
    judged: list[_Judged] = []
    refused: list[FileRow] = []
    seen: set[str] = set()
    for item in staged:
        try:
            if item.refusal is not None or item.staged is None:
                raise item.refusal or FileRefused("corrupt", "the file was not received")
            parts = split_given_path(item.given)
            key = path_key(parts)
            if key in seen:
                raise FileRefused("duplicate-path", "another file of the upload has this path")
            seen.add(key)
            judged.append(_Judged(item, parts, inspect_image(item.staged, max_pixels=max_pixels)))
        except FileRefused as why:
            if item.staged is not None:
                item.staged.unlink(missing_ok=True)
            refused.append(
                FileRow(
                    path=item.given[:4096],
                    status=FileStatus.REFUSED,
                    reason=why.reason,
                    detail=why.detail,
                    bytes=item.size,
                )
            )
    return judged, refused


def store_files(
    session: Session,
    settings: Settings,
    staged: Sequence[StagedFile],
    *,
    name: str,
    class_names: Sequence[str] = (),
) -> UploadReport:
    """Judge ``staged`` files, then create the upload, move the accepted files into its folder
    and record every file. See the module docstring for the layout."""
    judged, refused = _judge(staged, settings.max_pixels)
    if not judged:
        reasons = [f"{row.path}: {row.reason} - {row.detail}" for row in refused[:20]]
        raise UploadRefused(
            f"no image was accepted: all {len(refused)} files were refused", details=reasons
        )
    labels, rests = infer_labels([j.parts for j in judged])
    labelled = labels[0] is not None
    found = sorted({label for label in labels if label is not None})
    upload = create_upload(
        session, name=name, class_names=list(class_names) or found, labelled=labelled
    )
    folder = settings.data_dir / upload.folder
    remove_tree(folder)  # left by a crash before a commit that never happened: the id is ours
    folder.mkdir(parents=True)
    try:
        accepted = _place(judged, labels, rests, folder)
        report = UploadReport(
            upload_id=upload.id,
            name=upload.name,
            labelled=labelled,
            class_names=list(upload.class_names),
            files=accepted + refused,
        )
        add_upload_files(session, upload.id, report.files)
    except BaseException:
        remove_tree(folder)
        raise
    return report


def _place(
    judged: Sequence[_Judged],
    labels: Sequence[str | None],
    rests: Sequence[Sequence[str]],
    folder: Path,
) -> list[FileRow]:
    """Move accepted files to ``folder/{label dir}/{safe name}``; their rows."""
    dirs = label_dirs(labels)
    taken: dict[str, set[str]] = {}
    rows: list[FileRow] = []
    for item, label, rest in zip(judged, labels, rests, strict=True):
        subdir = dirs[label]
        filename = unique_name(
            stored_name(rest, EXTENSIONS[item.info.format]), taken.setdefault(subdir, set())
        )
        destination = folder / subdir / filename
        if not inside(destination, folder):  # cannot happen with safe names; checked anyway
            raise UploadRefused(f"refusing to write {destination} outside {folder}")
        destination.parent.mkdir(exist_ok=True)
        assert item.staged.staged is not None
        os.replace(item.staged.staged, destination)
        rows.append(
            FileRow(
                path=item.staged.given[:4096],
                status=FileStatus.ACCEPTED,
                stored_path=f"{subdir}/{filename}",
                bytes=item.staged.size,
                width=item.info.width,
                height=item.info.height,
                label=label,
            )
        )
    return rows
