"""Uploads through the real ASGI app: folders, zip archives, and hostile files.

Each test runs the app built by ``create_app`` (migrations at start-up) on a SQLite file in its
own data folder, posts real multipart bodies, then checks the reply, the rows and the disk -
in particular that nothing was written outside the upload's folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.models import FileStatus, Upload, UploadFile
from tests.app.auth import logged_in
from tests.app.factories import (
    HTML_PAGE,
    ZipEntry,
    image_bytes,
    png_claiming,
    truncated_png,
    zip_bytes,
)

HTMX = {"HX-Request": "true"}
Files = list[tuple[str, tuple[str, bytes, str]]]


@contextmanager
def running_app(root: Path, db_url: str, **overrides: Any) -> Iterator[TestClient]:
    """The app on the data folder ``root/data`` and the migrated, empty database ``db_url``."""
    settings = Settings(data_dir=root / "data", database_url=db_url, **overrides)
    with logged_in(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    with running_app(tmp_path, db_url) as client:
        yield client


def files_under(root: Path) -> set[Path]:
    """Every file below ``root`` (links not followed)."""
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def rows(db_url: str) -> tuple[list[Upload], list[UploadFile]]:
    """All uploads and upload files, read back from the app's database."""
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            uploads = list(session.scalars(select(Upload).order_by(Upload.id)))
            files = list(session.scalars(select(UploadFile).order_by(UploadFile.id)))
            return uploads, files
    finally:
        engine.dispose()


def folder(paths_and_data: dict[str, bytes]) -> Files:
    """A browser folder upload: each file sent with its relative path as its name."""
    return [("files", (p, d, "application/octet-stream")) for p, d in paths_and_data.items()]


def assert_only_written_inside(before: set[Path], after: set[Path], upload_dir: Path) -> None:
    new = {p for p in after - before if not p.name.startswith("ie.db")}
    outside = {p for p in new if not p.resolve().is_relative_to(upload_dir.resolve())}
    assert outside == set(), f"written outside {upload_dir}: {outside}"


def test_folder_with_class_subfolders_becomes_a_labelled_upload(
    client: TestClient, tmp_path: Path, db_url: str
) -> None:
    upload = folder(
        {
            "photos/birds/parrot.png": image_bytes("PNG", seed=1),
            "photos/birds/finch.jpg": image_bytes("JPEG", seed=2),
            "photos/cats/tabby.webp": image_bytes("WEBP", seed=3),
            "photos/cats/sub/siamese.gif": image_bytes("GIF", seed=4),
            "photos/cats/old.bmp": image_bytes("BMP", seed=5),
        }
    )
    reply = client.post("/uploads", files=upload, headers=HTMX)

    assert reply.status_code == 201, reply.text
    assert "<html" not in reply.text  # htmx gets the fragment only
    assert "5 accepted" in reply.text and "Labelled by folder: birds, cats" in reply.text
    data = tmp_path / "data"
    uploads, stored = rows(db_url)
    assert len(uploads) == 1
    up = uploads[0]
    assert (up.n_accepted, up.n_refused, up.labelled, up.class_names) == (
        5,
        0,
        True,
        ["birds", "cats"],
    )
    assert up.name == "photos"
    assert {(f.label, f.stored_path) for f in stored} == {
        ("birds", "birds/parrot.png"),
        ("birds", "birds/finch.jpg"),
        ("cats", "cats/tabby.webp"),
        ("cats", "cats/sub_siamese.gif"),
        ("cats", "cats/old.bmp"),
    }
    upload_dir = data / up.folder
    assert (upload_dir / "birds" / "parrot.png").read_bytes() == image_bytes("PNG", seed=1)
    assert {f.width for f in stored} == {16}
    assert list((data / "uploads" / ".incoming").iterdir()) == []  # staging removed


def test_an_unlabelled_folder_with_explicit_class_names(
    client: TestClient, tmp_path: Path, db_url: str
) -> None:
    upload = folder(
        {
            "mixed/a.png": image_bytes("PNG", seed=1),
            "mixed/b.png": image_bytes("PNG", seed=2),
            "mixed/a.PNG": image_bytes("PNG", seed=3),  # same name but for case: refused
        }
    )
    reply = client.post("/uploads", files=upload, data={"class_names": "parrot, finch\nfinch\n"})

    assert reply.status_code == 201
    assert "<html" in reply.text  # a plain form post gets the whole page
    uploads, stored = rows(db_url)
    assert (uploads[0].labelled, uploads[0].class_names) == (False, ["parrot", "finch"])
    assert sorted(f.stored_path or "" for f in stored if f.status == FileStatus.ACCEPTED) == [
        "_/a.png",
        "_/b.png",
    ]
    assert [f.reason for f in stored if f.status == FileStatus.REFUSED] == ["duplicate-path"]


HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    "set/../../evil.png": (image_bytes("PNG", seed=9), "path-traversal"),
    "/tmp/evil.png": (image_bytes("PNG", seed=9), "absolute-path"),
    "set/.hidden.png": (image_bytes("PNG", seed=9), "hidden"),
    "set/bomb.png": (png_claiming(30_000, 30_000), "decompression-bomb"),  # over Pillow's limit
    "set/large.png": (png_claiming(8_000, 6_000), "decompression-bomb"),  # over max_pixels only
    "set/truncated.png": (truncated_png(), "corrupt"),
    "set/page.png": (HTML_PAGE, "not-an-image"),
    "set/empty.png": (b"", "empty"),
}
GOOD_FILES = {
    "set/good.png": image_bytes("PNG", seed=1),
    "set/photo.png": image_bytes("JPEG", seed=2),  # a JPEG named .png: kept, stored as .jpg
}


def outcomes(stored: list[UploadFile]) -> list[tuple[str, str]]:
    """(given path, refusal reason or stored path) of every file, sorted."""
    return sorted((f.path, f.reason or f.stored_path or "") for f in stored)


def test_hostile_files_in_a_folder_upload_are_refused_and_the_rest_kept(
    client: TestClient, tmp_path: Path, db_url: str
) -> None:
    before = files_under(tmp_path)
    upload = folder({**GOOD_FILES, **{p: d for p, (d, _) in HOSTILE_FILES.items()}})
    reply = client.post("/uploads", files=upload, headers=HTMX)

    assert reply.status_code == 201, reply.text
    data = tmp_path / "data"
    uploads, stored = rows(db_url)
    assert outcomes(stored) == sorted(
        [
            ("set/good.png", "_/good.png"),
            ("set/photo.png", "_/photo.jpg"),
            *((p, reason) for p, (_, reason) in HOSTILE_FILES.items()),
        ]
    )
    assert (uploads[0].n_accepted, uploads[0].n_refused) == (2, len(HOSTILE_FILES))
    upload_dir = data / uploads[0].folder
    assert_only_written_inside(before, files_under(tmp_path), upload_dir)
    assert files_under(upload_dir) == {
        upload_dir / "_" / "good.png",
        upload_dir / "_" / "photo.jpg",
    }
    assert not (tmp_path / "evil.png").exists() and not (data / "evil.png").exists()
    assert "decompression-bomb" in reply.text and "not-an-image" in reply.text


def test_hostile_entries_in_a_zip_are_refused_and_the_rest_kept(
    client: TestClient, tmp_path: Path, db_url: str
) -> None:
    entries = [
        *(ZipEntry(p, d) for p, d in GOOD_FILES.items()),
        *(ZipEntry(p, d) for p, (d, _) in HOSTILE_FILES.items()),
        ZipEntry("set/link.png", b"/etc/passwd", symlink=True),
        ZipEntry("set/bomb.bmp", b"\x00" * (8 * 1024 * 1024)),  # inflates ~1000 times
        ZipEntry("__MACOSX/set/._good.png", b"\x00\x05\x16\x07"),
        ZipEntry("set/good.png", image_bytes("PNG", seed=5)),  # the same name again
    ]
    before = files_under(tmp_path)
    archive = zip_bytes(entries)
    reply = client.post("/uploads", files={"archive": ("set.zip", archive, "application/zip")})

    assert reply.status_code == 201, reply.text
    data = tmp_path / "data"
    uploads, stored = rows(db_url)
    assert outcomes(stored) == sorted(
        [
            ("set/good.png", "_/good.png"),
            ("set/good.png", "duplicate-path"),  # the second entry of that name
            ("set/photo.png", "_/photo.jpg"),
            *((p, reason) for p, (_, reason) in HOSTILE_FILES.items()),
            ("set/link.png", "symlink"),
            ("set/bomb.bmp", "zip-bomb"),
            ("__MACOSX/set/._good.png", "hidden"),
        ]
    )
    assert uploads[0].name == "set.zip"
    upload_dir = data / uploads[0].folder
    assert_only_written_inside(before, files_under(tmp_path), upload_dir)
    assert files_under(upload_dir) == {
        upload_dir / "_" / "good.png",
        upload_dir / "_" / "photo.jpg",
    }
    assert (upload_dir / "_" / "good.png").read_bytes() == GOOD_FILES["set/good.png"]


def test_a_zip_whose_entries_inflate_past_the_cap_is_refused_whole(
    tmp_path: Path, db_url: str
) -> None:
    archive = zip_bytes(
        [
            ZipEntry("a.png", image_bytes("PNG")),
            ZipEntry("b.bmp", b"\x00" * (3 * 1024 * 1024)),
        ]
    )
    with running_app(tmp_path, db_url, max_upload_bytes=2 * 1024 * 1024) as client:
        reply = client.post("/uploads", files={"archive": ("bomb.zip", archive, "application/zip")})

    assert reply.status_code == 400
    assert "would inflate" in reply.text and "zip bomb" in reply.text
    data = tmp_path / "data"
    assert rows(db_url) == ([], [])
    assert files_under(data / "uploads") == set()


def test_an_empty_upload_is_a_clear_400(client: TestClient, tmp_path: Path, db_url: str) -> None:
    # What a browser sends when nothing was picked: empty, nameless file parts.
    empty: Files = [
        ("files", ("", b"", "application/octet-stream")),
        ("archive", ("", b"", "application/octet-stream")),
    ]
    reply = client.post("/uploads", files=empty, data={"class_names": ""}, headers=HTMX)

    assert reply.status_code == 400
    assert "the upload is empty" in reply.text
    assert 'role="alert"' in reply.text and "<html" not in reply.text
    assert rows(db_url) == ([], [])


def test_an_upload_where_everything_is_refused_keeps_nothing(
    client: TestClient, tmp_path: Path, db_url: str
) -> None:
    reply = client.post(
        "/uploads", files=folder({"x/page.png": HTML_PAGE, "x/t.png": truncated_png()})
    )

    assert reply.status_code == 400
    assert "no image was accepted" in reply.text
    assert "x/page.png: not-an-image" in reply.text  # the reasons are listed
    data = tmp_path / "data"
    assert rows(db_url) == ([], [])
    assert files_under(data / "uploads") == set()


def test_caps_on_body_file_size_and_file_count(tmp_path: Path, db_url: str) -> None:
    small, big = image_bytes("PNG", size=(8, 8)), image_bytes("BMP", size=(230, 230))
    with running_app(
        tmp_path, db_url, max_file_bytes=50_000, max_files=3, max_upload_bytes=400_000
    ) as client:
        over_file = client.post("/uploads", files=folder({"a/s.png": small, "a/big.bmp": big}))
        assert over_file.status_code == 201
        assert "too-large" in over_file.text

        too_many = folder({f"a/{n}.png": small for n in range(4)})
        reply = client.post("/uploads", files=too_many)
        assert reply.status_code == 400 and "more than 3 files" in reply.text

        too_big = folder({f"a/{n}.bmp": big for n in range(3)})  # 3 x 160 kB
        reply = client.post("/uploads", files=too_big)
        assert reply.status_code == 413 and "over the limit of 400,000" in reply.text

        # The same body without a Content-Length (chunked): stopped while it streams.
        encoded = httpx.Request("POST", "http://x/uploads", files=too_big)
        body = encoded.read()
        reply = client.post(
            "/uploads",
            content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={"content-type": encoded.headers["content-type"]},
        )
        assert reply.status_code == 413 and "over the limit of 400,000 bytes" in reply.text

    data = tmp_path / "data"
    uploads, _ = rows(db_url)
    assert [(u.n_accepted, u.n_refused) for u in uploads] == [(1, 1)]
    assert list((data / "uploads" / ".incoming").iterdir()) == []


def test_a_body_that_is_not_a_form_is_refused(client: TestClient) -> None:
    reply = client.post("/uploads", content=b"{}", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "multipart/form-data" in reply.text


def test_file_names_are_escaped_in_the_report(client: TestClient) -> None:
    upload = folder({"x/<script>alert(1)</script>.png": HTML_PAGE, "x/ok.png": image_bytes()})
    reply = client.post("/uploads", files=upload, headers=HTMX)
    assert reply.status_code == 201
    assert "<script>alert(1)</script>" not in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text


def test_the_upload_page_lists_files_and_filters_them(client: TestClient, db_url: str) -> None:
    client.post("/uploads", files=folder({"x/ok.png": image_bytes(), "x/bad.png": HTML_PAGE}))
    upload_id = rows(db_url)[0][0].id

    page = client.get(f"/uploads/{upload_id}")
    assert page.status_code == 200
    assert "x/ok.png" in page.text and "x/bad.png" in page.text
    refused = client.get(f"/uploads/{upload_id}?status=refused", headers=HTMX)
    assert "x/bad.png" in refused.text and "x/ok.png" not in refused.text
    assert "<html" not in refused.text
    listing = client.get("/uploads")
    assert listing.status_code == 200 and "webkitdirectory" in listing.text


def test_unknown_upload_and_unknown_page_are_html_404s(client: TestClient) -> None:
    reply = client.get("/uploads/999")
    assert reply.status_code == 404
    assert "upload 999 does not exist" in reply.text and "<html" in reply.text
    assert client.get("/nowhere").status_code == 404
    invalid = client.get("/uploads/abc")
    assert invalid.status_code == 422 and "upload_id" in invalid.text
