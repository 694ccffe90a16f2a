"""The image route serves a run's images from inside the data folder, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.main import create_app
from app.services.images import resolve_data_file
from app.settings import Settings
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.images import add_images, images_for
from tests.app.auth import logged_in
from tests.app.factories import image_row, make_running_run, write_image


def test_images_inside_the_data_folder_only(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=db_url)
    outside = tmp_path / "secret.png"  # a real image, next to the data folder
    outside.write_bytes(b"\x89PNG not yours")
    good = write_image(data_dir, "runs/1/images/good.png", seed=1)
    linked = write_image(data_dir, "runs/1/images/target.png", seed=2)
    links = data_dir / "runs" / "1" / "images"
    os.symlink(outside, links / "out.png")  # a link leading out
    os.symlink(links / "target.png", links / "in.png")  # a link staying in
    (data_dir / "notes.txt").write_text("not an image")

    paths = {
        "good": "runs/1/images/good.png",
        "linked-in": "runs/1/images/in.png",
        "dotdot": "../secret.png",
        "dotdot-deep": "runs/1/../../../secret.png",
        "absolute": str(outside),
        "link-out": "runs/1/images/out.png",
        "database": "ie.db",
        "text": "notes.txt",
        "folder": "runs/1/images",
        "missing": "runs/1/images/nope.png",
        "empty": "",
    }
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            run = make_running_run(session)
            other = make_running_run(session)
            add_images(session, run.id, [image_row(run.id, k, path=p) for k, p in paths.items()])
            add_images(session, other.id, [image_row(other.id, "theirs", path=paths["good"])])
            ids = {i.title.removeprefix("image "): i.id for i in images_for(session, run.id)[0]}
            theirs = images_for(session, other.id)[0][0].id
    finally:
        engine.dispose()

    with logged_in(create_app(settings)) as client:
        served = client.get(f"/runs/{run.id}/images/{ids['good']}")
        assert served.status_code == 200 and served.content == good
        assert served.headers["content-type"] == "image/png"
        assert client.get(f"/runs/{run.id}/images/{ids['linked-in']}").content == linked
        for name in paths.keys() - {"good", "linked-in"}:
            reply = client.get(f"/runs/{run.id}/images/{ids[name]}")
            assert reply.status_code == 404, name
            assert b"not yours" not in reply.content
        assert client.get(f"/runs/{run.id}/images/{theirs}").status_code == 404  # another run's
        assert client.get(f"/runs/{run.id}/images/999999").status_code == 404


@pytest.mark.parametrize("relative", ["../x.png", "/etc/passwd", "a/../../x.png", "a\x00.png", ""])
def test_resolve_data_file_refuses_paths_out(tmp_path: Path, relative: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "x.png").write_bytes(b"x")
    assert resolve_data_file(tmp_path / "data", relative) is None
