"""Web engines and the license filter on the launch form, kept on the run (migration 0003),
and each engine's health on the dashboard."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.migrate import downgrade, upgrade
from app.store.models import Event, Run
from app.store.runs import create_run, set_engine_health
from ie_engine.search.engines import EnginesConfig
from tests.app.auth import logged_in
from tests.app.factories import make_upload

ENGINES_TOML = """
licenses = ["cc0", "pd", "by"]
user_agent = "ie-tests/1.0 (mailto:tests@example.org)"

[[engines]]
kind = "openverse"

[[engines]]
kind = "wikimedia"
requests_per_minute = 20

[[engines]]
kind = "searxng"
name = "lab-searx"
base_url = "http://127.0.0.1:8888"
"""

HEALTH: dict[str, Any] = {
    "engines": [
        {"name": "openverse", "kind": "openverse", "status": "ok", "requests": 8,
         "cache_hits": 2, "results": 12, "filtered_out": 3, "errors": 0, "retries": 0,
         "rate_limited": 0, "latency_ms_mean": 41.5, "latency_ms_last": 38.0,
         "requests_per_minute": 10.0, "quota_per_day": 200, "quota_left_today": 192,
         "cooldown_s": 0.0, "last_error": "", "last_error_at": None, "recent_errors": []},
        {"name": "wikimedia", "kind": "wikimedia", "status": "degraded", "requests": 3,
         "cache_hits": 0, "results": 0, "filtered_out": 0, "errors": 2, "retries": 1,
         "rate_limited": 1, "latency_ms_mean": None, "latency_ms_last": None,
         "requests_per_minute": 20.0, "quota_per_day": None, "quota_left_today": None,
         "cooldown_s": 0.0, "last_error": "HTTP 503 from commons", "last_error_at": None,
         "recent_errors": ["HTTP 503 from commons"]},
    ],
    "queries": 4, "failovers": 1, "cached_answers": 2, "license_filter": "by,cc0,pd",
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "engines.toml"
    path.write_text(ENGINES_TOML)
    return path


def _client(tmp_path: Path, db_url: str, engine_config: Path | None) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url,
                        engine_config=engine_config)
    return logged_in(create_app(settings))


@pytest.fixture
def client(tmp_path: Path, db_url: str, config_file: Path) -> Iterator[TestClient]:
    with _client(tmp_path, db_url, config_file) as client:
        yield client


def _upload(engine: Engine) -> int:
    with session_scope(make_session_factory(engine)) as session:
        upload = make_upload(session, name="birds")
        upload.n_accepted = 12
        return upload.id


def _runs(engine: Engine) -> list[Run]:
    with make_session_factory(engine)() as session:
        return list(session.scalars(select(Run).order_by(Run.id)))


def test_the_form_offers_the_configured_engines_and_license_filters(
    client: TestClient, engine: Engine
) -> None:
    _upload(engine)
    page = client.get("/runs/new")
    assert page.status_code == 200
    assert '<option value="web"' in page.text and '<option value="offline" selected>' in page.text
    for name in ("openverse", "wikimedia", "lab-searx"):
        assert f'name="engines" value="{name}" checked' in page.text
    assert "lab-searx (searxng, 30 requests a minute)" in page.text
    # The file's license list is the default filter, as custom codes.
    assert '<option value="custom" selected>' in page.text
    assert 'value="cc0, pd, by"' in page.text


def test_launching_on_web_engines_keeps_the_choice_on_the_run(
    client: TestClient, engine: Engine
) -> None:
    form = {"upload_id": str(_upload(engine)), "search_engine": "web",
            "engines": ["wikimedia", "lab-searx"], "license_filter": "attribution"}
    reply = client.post("/runs/new", data=form, follow_redirects=False)
    assert reply.status_code == 303, html.unescape(reply.text)[:2000]
    (run,) = _runs(engine)
    assert run.search_engine == "web"
    assert run.licenses == ["by", "cc0", "pd"]
    assert run.engine_config is not None
    cfg = EnginesConfig.parse(run.engine_config)  # the worker can rebuild it
    assert [s.name or s.kind for s in cfg.engines] == ["wikimedia", "lab-searx"]
    assert cfg.engines[0].requests_per_minute == 20
    assert cfg.licenses == () and cfg.cache_dir is None
    assert cfg.user_agent.startswith("ie-tests/1.0")
    page = client.get(reply.headers["location"])
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "web engines wikimedia, lab-searx, licenses by, cc0, pd" in text
    assert 'data-testid="run-engines"' in page.text and "no search yet" in text


def test_custom_codes_take_common_spellings(client: TestClient, engine: Engine) -> None:
    form = {"upload_id": str(_upload(engine)), "search_engine": "web", "engines": "openverse",
            "license_filter": "custom", "license_codes": "CC-BY, public domain\ncc0"}
    assert client.post("/runs/new", data=form, follow_redirects=False).status_code == 303
    (run,) = _runs(engine)
    assert run.licenses == ["by", "cc0", "pd"]


def test_the_offline_web_stays_the_default(client: TestClient, engine: Engine) -> None:
    form = {"upload_id": str(_upload(engine)), "engines": ["openverse"]}
    assert client.post("/runs/new", data=form, follow_redirects=False).status_code == 303
    (run,) = _runs(engine)
    assert (run.search_engine, run.engine_config, run.licenses) == ("offline", None, [])
    assert 'data-testid="run-engines"' not in client.get(f"/runs/{run.id}").text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search_engine": "web"}, "web engines: tick at least one of openverse, wikimedia, "
                                   "lab-searx"),
        ({"search_engine": "web", "engines": ["bing"]}, "web engines: 'bing' not configured"),
        ({"search_engine": "google"}, "search engine: 'google' is not one of offline, web"),
        ({"search_engine": "web", "engines": "openverse", "license_filter": "free"},
         "license filter: 'free' is not one of any, public-domain"),
        ({"search_engine": "web", "engines": "openverse", "license_filter": "custom"},
         "license codes: a custom filter needs at least one code"),
        ({"search_engine": "web", "engines": "openverse", "license_filter": "custom",
          "license_codes": "cc0, copyleft"}, "license codes: unknown license 'copyleft'"),
        ({"license_filter": "attribution"},
         "license filter: the offline web keeps no license filter"),
    ],
)
def test_unusable_engine_choices_are_a_400_that_says_which(
    client: TestClient, engine: Engine, fields: dict[str, Any], message: str
) -> None:
    reply = client.post("/runs/new", data={"upload_id": str(_upload(engine)), **fields})
    assert reply.status_code == 400
    text = html.unescape(reply.text)
    assert "the run was not launched" in text and message in text, text[-3000:]
    assert 'data-testid="launch-form"' in reply.text
    assert _runs(engine) == []


def test_without_a_configuration_only_the_offline_web_is_offered(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    with _client(tmp_path, db_url, None) as client:
        page = client.get("/runs/new")
        assert '<option value="web"' not in page.text and 'name="engines"' not in page.text
        reply = client.post("/runs/new", data={"upload_id": str(_upload(engine)),
                                               "search_engine": "web"})
    assert reply.status_code == 400
    assert "search engine: 'web' is not one of offline" in html.unescape(reply.text)


def test_an_unusable_configuration_file_is_named_on_the_form(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[engines]]\nkind = "altavista"\n')
    upload_id = _upload(engine)
    with _client(tmp_path, db_url, bad) as client:
        page = html.unescape(client.get("/runs/new").text)
        reply = client.post("/runs/new", data={"upload_id": str(upload_id),
                                               "search_engine": "web"})
    assert "the engine configuration (IE_ENGINE_CONFIG) is unusable" in page
    assert "unknown engine kind 'altavista'" in page
    assert reply.status_code == 400 and "unknown engine kind" in html.unescape(reply.text)


def test_the_health_panel_shows_each_engines_quota_errors_latency_and_status(
    client: TestClient, engine: Engine
) -> None:
    upload_id = _upload(engine)
    with session_scope(make_session_factory(engine)) as session:
        run = create_run(session, name="web run", config={"iterations": 2},
                         upload_id=upload_id, search_engine="web",
                         engine_config={"engines": [{"kind": "openverse"},
                                                    {"kind": "wikimedia"}]},
                         licenses=["by", "cc0", "pd"])
        set_engine_health(session, run.id, HEALTH)
        run_id = run.id
    fragment = client.get(f"/runs/{run_id}/engines")
    assert fragment.status_code == 200
    text = html.unescape(fragment.text)
    assert 'data-refresh-on="engines status"' in text
    assert 'data-testid="engine-openverse" data-status="ok"' in text
    assert 'data-testid="engine-wikimedia" data-status="degraded"' in text
    assert "192 of 200" in text and "no daily cap" in text and "42 ms" in text
    assert "last error: HTTP 503 from commons" in text
    assert "4 queries, 2 from the cache, 1 fail-overs" in text
    assert "CC BY, CC0, public domain" in text
    page = html.unescape(client.get(f"/runs/{run_id}").text)
    assert "192 of 200" in page
    # The event that refreshes the panel has a line of its own in the event log.
    assert "openverse ok (8 requests, 0 errors, 192 left today); wikimedia degraded" in page
    with make_session_factory(engine)() as session:
        kinds = list(session.scalars(select(Event.kind).where(Event.run_id == run_id)))
    assert kinds == ["engines"]


def test_0003_keeps_runs_on_the_way_up_and_down(empty_db_url: str) -> None:
    """Runs written at 0002 read as offline-web runs with no filter at 0003; going back down
    drops only the three columns."""
    upgrade(empty_db_url, "0002")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO runs (id, name, status, config, created_at, updated_at, "
                     "iteration) VALUES (1, 'old', 'paused', '{}', :t, :t, 2)"),
                {"t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
        upgrade(empty_db_url)
        with make_session_factory(engine)() as session:
            run = session.get(Run, 1)
            assert run is not None
            assert (run.search_engine, run.engine_config, run.licenses, run.engine_health) == (
                "offline", None, [], None)
            run.licenses = ["cc0"]
            run.engine_config = {"engines": [{"kind": "openverse"}]}
            set_engine_health(session, 1, HEALTH, event=False)
            session.commit()
        with make_session_factory(engine)() as session:
            run = session.get(Run, 1)
            assert run is not None and run.licenses == ["cc0"]
            assert run.engine_health is not None
            assert run.engine_health["engines"][0]["quota_left_today"] == 192
        downgrade(empty_db_url, "0002")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("runs")}
            assert not columns & {"engine_config", "licenses", "engine_health"}
            assert {"search_engine", "pause_requested"} <= columns
            assert conn.execute(text("SELECT name FROM runs")).scalar() == "old"
        upgrade(empty_db_url)
    finally:
        engine.dispose()
