"""The start page and the page/fragment rendering, through the real app."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.runs import set_run_status
from tests.app.auth import logged_in
from tests.app.factories import make_run


def test_home_lists_runs_and_says_where_to_go_first(tmp_path: Path) -> None:
    # A data folder that does not exist yet: the app makes it and migrates a new database.
    settings = Settings(data_dir=tmp_path / "new")
    with logged_in(create_app(settings)) as client:
        empty = client.get("/")
        assert empty.status_code == 200
        assert "Where to go first" in empty.text and "No runs yet" in empty.text

        engine = make_engine(settings.database_url)
        with session_scope(make_session_factory(engine)) as session:
            run = make_run(session, name="parrots vs finches")
            set_run_status(session, run.id, "queued")
        engine.dispose()

        page = client.get("/")
        assert "parrots vs finches" in page.text and "queued" in page.text
        fragment = client.get("/", headers={"HX-Request": "true"})
        assert fragment.text.lstrip().startswith('<div id="runs">')
        assert "parrots vs finches" in fragment.text and "Where to go first" not in fragment.text


def test_static_files_are_served(tmp_path: Path, _sqlite_template: Path) -> None:
    (tmp_path / "d").mkdir()
    shutil.copyfile(_sqlite_template, tmp_path / "d" / "ie.db")
    with logged_in(create_app(Settings(data_dir=tmp_path / "d"))) as client:
        css = client.get("/static/css/app.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        assert client.get("/static/js/uploads.js").status_code == 200
