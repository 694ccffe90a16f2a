"""Hostile uploads the HTTP tests of ``test_uploads.py`` leave out, through the upload service
itself (the multipart body as a browser sends it, streamed in chunks): thousands of tiny
files, archives of empty folders, Windows-style traversal, nested archives, and an archive
whose headers lie about its sizes. Each is refused with a reason (per file or per request),
nothing lands outside the upload's folder, and the rest of the upload is kept."""

from __future__ import annotations

import io
import struct
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from app.errors import UploadRefused
from app.services.uploads import UploadReport, accept_upload
from app.settings import Settings
from tests.app.factories import ZipEntry, image_bytes, zip_bytes

HOST = "http://127.0.0.1/uploads"


async def send(session: Session, settings: Settings, *, files=None, archive: bytes | None = None,
               ) -> UploadReport:
    """Post a folder (``files``: path -> bytes) and/or a zip archive to the upload service."""
    parts: list[tuple[str, tuple[str, bytes, str]]] = [
        ("files", (p, d, "application/octet-stream")) for p, d in (files or {}).items()]
    if archive is not None:
        parts.append(("archive", ("set.zip", archive, "application/zip")))
    request = httpx.Request("POST", HOST, files=parts)
    body = request.read()

    async def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    report = await accept_upload(session, settings, chunks=chunks(),
                                 content_type=request.headers["content-type"],
                                 content_length=None)
    session.commit()
    return report


def everything_under(root: Path) -> set[Path]:
    """Every file and link below ``root`` but the database's."""
    return {p for p in root.rglob("*") if (p.is_file() or p.is_symlink())
            and not p.name.startswith("ie.db")}


def only_inside(before: set[Path], root: Path, upload_dir: Path) -> None:
    outside = {p for p in everything_under(root) - before if not p.is_relative_to(upload_dir)}
    assert outside == set(), f"written outside {upload_dir}: {outside}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, max_files=2000)


def reasons(report: UploadReport) -> dict[str, str]:
    return {f.path: f.reason or "" for f in report.refused}


async def test_thousands_of_tiny_files_over_the_cap_are_refused_whole(session, settings,
                                                                      tmp_path):
    tiny = [ZipEntry(f"set/{n:05d}.png", b"x") for n in range(3000)]
    started = time.monotonic()
    with pytest.raises(UploadRefused, match="3,000 files, over the limit of 2,000"):
        await send(session, settings, archive=zip_bytes(tiny))
    with pytest.raises(UploadRefused, match="more than 2,000 files"):
        await send(session, settings, files={f"set/{n:05d}.png": b"x" for n in range(3000)})
    assert time.monotonic() - started < 60
    assert [p for p in settings.uploads_dir.rglob("*") if p.is_file()] == []


async def test_thousands_of_tiny_files_under_the_cap_each_get_a_reason(session, settings,
                                                                       tmp_path):
    good = {f"set/good{n}.png": image_bytes("PNG", seed=n) for n in range(5)}
    entries = [ZipEntry(f"set/{n:05d}.png", bytes([n % 256])) for n in range(1990)]
    entries += [ZipEntry(p, d) for p, d in good.items()]
    before = everything_under(tmp_path)
    started = time.monotonic()
    report = await send(session, settings, archive=zip_bytes(entries))
    assert time.monotonic() - started < 60
    assert len(report.accepted) == 5 and len(report.refused) == 1990
    assert set(reasons(report).values()) <= {"not-an-image", "corrupt", "empty"}
    upload_dir = settings.data_dir / "uploads" / str(report.upload_id)
    assert len([p for p in upload_dir.rglob("*") if p.is_file()]) == 5
    only_inside(before, tmp_path, upload_dir)


async def test_an_archive_of_empty_folders_is_an_empty_upload(session, settings):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in ("set/", "set/birds/", "set/fish/", "other/"):
            zf.writestr(zipfile.ZipInfo(name), b"")
    with pytest.raises(UploadRefused, match="the upload is empty"):
        await send(session, settings, archive=out.getvalue())

    # Empty folders beside images: the images are kept, no folder is made for the empty ones.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(zipfile.ZipInfo("set/empty/"), b"")
        zf.writestr("set/birds/a.png", image_bytes("PNG", seed=1))
        zf.writestr("set/fish/b.png", image_bytes("PNG", seed=2))
    report = await send(session, settings, archive=out.getvalue())
    upload_dir = settings.data_dir / "uploads" / str(report.upload_id)
    assert len(report.accepted) == 2 and report.refused == []
    assert sorted(p.name for p in upload_dir.iterdir()) == ["birds", "fish"]


async def test_windows_paths_nested_archives_and_disguised_files_are_refused(
        session, settings, tmp_path):
    png = image_bytes("PNG", seed=3)
    inner = zip_bytes([ZipEntry("x.png", png)])
    entries = [
        ZipEntry("set\\..\\..\\evil.png", png),
        ZipEntry("C:\\Windows\\evil.png", png),
        ZipEntry("C:evil.png", png),
        ZipEntry("set/./../../evil.png", png),
        ZipEntry("set/inner.png", inner),                      # a zip named like an image
        ZipEntry("set/script.jpg", b"#!/bin/sh\nrm -rf /\n"),   # a script named like one
        ZipEntry("set/fake.gif", b"GIF89a" + b"\0" * 4),       # right magic, no image
        ZipEntry("set/ok.png", png),
    ]
    before = everything_under(tmp_path)
    report = await send(session, settings, archive=zip_bytes(entries))
    assert [f.path for f in report.accepted] == ["set/ok.png"]
    assert reasons(report) == {
        "set\\..\\..\\evil.png": "path-traversal",
        "C:\\Windows\\evil.png": "absolute-path",
        "C:evil.png": "absolute-path",
        "set/./../../evil.png": "path-traversal",
        "set/inner.png": "not-an-image",
        "set/script.jpg": "not-an-image",
        "set/fake.gif": "corrupt",
    }
    assert all(f.detail for f in report.refused)  # each refusal says why in words
    upload_dir = settings.data_dir / "uploads" / str(report.upload_id)
    only_inside(before, tmp_path, upload_dir)
    assert not list(tmp_path.rglob("evil.png"))


def lying_zip(real: bytes, declared: int) -> bytes:
    """A one-entry archive whose headers declare ``declared`` bytes for ``real`` bytes of
    data (a bomb that hides its size from a check of the headers)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/liar.bmp", real)
        zf.writestr("set/ok.png", image_bytes("PNG", seed=4))
    data = bytearray(out.getvalue())
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared)  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)  # central directory: the same
    return bytes(data)


async def test_an_archive_that_lies_about_its_sizes_is_cut_at_the_cap(session, settings,
                                                                      tmp_path):
    settings = settings.model_copy(update={"max_file_bytes": 1_000_000})
    before = everything_under(tmp_path)
    report = await send(session, settings, archive=lying_zip(b"\0" * 20_000_000, 1000))
    assert [f.path for f in report.accepted] == ["set/ok.png"]
    assert reasons(report)["set/liar.bmp"] in ("too-large", "corrupt")
    upload_dir = settings.data_dir / "uploads" / str(report.upload_id)
    only_inside(before, tmp_path, upload_dir)
    assert all(p.stat().st_size < 1_000_000 for p in tmp_path.rglob("*") if p.is_file()
               and not p.name.startswith("ie.db"))
