"""Access: nothing but the login page and static files without the token or a session; CSRF on
every state-changing request of a browser session; logging out ends the session on the server;
files only from inside the data folder."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from app.access import PUBLIC_ROUTES, SESSION_COOKIE, Access, development_token
from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.images import add_images, images_for
from app.store.models import RevokedSession
from app.store.revocations import revoke_session, session_key
from tests.app.auth import bearer, browser_login, logged_in
from tests.app.factories import image_row, make_running_run, write_image
from tests.app.servers import serve

SECRET_TITLE = "secret-title-of-the-image"
TOKEN = "a-test-token-of-some-length"


@dataclass
class World:
    app: FastAPI
    settings: Settings
    run_id: int
    image_id: int
    upload_id: int
    image: bytes
    outside: bytes


@pytest.fixture
def world(tmp_path: Path, _sqlite_template: Path) -> Iterator[World]:
    """An app with one running run, one served image, one export and a file outside."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(_sqlite_template, data_dir / "ie.db")
    settings = Settings(data_dir=data_dir, access_token=SecretStr(TOKEN))
    outside = b"\x89PNG outside the data folder"
    (tmp_path / "outside.png").write_bytes(outside)
    image = write_image(data_dir, "runs/1/images/a.png", seed=3)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            run = make_running_run(session)
            add_images(session, run.id, [image_row(run.id, "a", path="runs/1/images/a.png",
                                                   title=SECRET_TITLE)])
            image_id = images_for(session, run.id)[0][0].id
            upload_id = run.upload_id or 0
    finally:
        engine.dispose()
    exports = settings.runs_dir / str(run.id) / "exports"
    exports.mkdir(parents=True)
    (exports / "report.html").write_text(f"<p>{SECRET_TITLE}</p>")
    (exports / "out.html").symlink_to(tmp_path / "outside.png")
    yield World(create_app(settings), settings, run.id, image_id, upload_id, image, outside)


def _url(route: RouteContext, world: World) -> str:
    values = {"run_id": world.run_id, "image_id": world.image_id, "upload_id": world.upload_id,
              "kind": "report", "name": "report.html", "action": "pause"}
    path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(values[m.group(1)]), route.path or "")
    return path + (f"?run={world.run_id}&run={world.run_id}" if route.name == "compare_runs"
                   else "")


def _closed_routes(app: FastAPI) -> list[tuple[str, RouteContext]]:
    """Every (method, route) of the app but the public ones (the static mount has no methods)."""
    return [(method, route) for route in iter_route_contexts(app.routes)
            if route.methods and route.name not in PUBLIC_ROUTES
            for method in sorted(route.methods)]


def _assert_no_data(reply_body: bytes, world: World) -> None:
    assert SECRET_TITLE.encode() not in reply_body
    assert world.image not in reply_body
    assert b"event:" not in reply_body


def test_every_route_is_closed_without_credentials(world: World) -> None:
    routes = _closed_routes(world.app)
    names = {route.name for _, route in routes}
    assert {"home", "run", "run_events", "run_image", "export_download", "launch_run",
            "steer_concepts", "control_run", "create_upload", "openapi", "logout"} <= names
    with TestClient(world.app) as client:
        for method, route in routes:
            url = _url(route, world)
            # A script: 401 with the reason and how to authenticate.
            reply = client.request(method, url, headers={"Accept": "application/json"})
            assert reply.status_code == 401, (method, url, reply.status_code)
            assert reply.json()["detail"].startswith("log in first")
            assert reply.headers["www-authenticate"].startswith("Bearer")
            _assert_no_data(reply.content, world)
            # A browser: a page request goes to the login page, and comes back after.
            reply = client.request(method, url, headers={"Accept": "text/html"},
                                   follow_redirects=False)
            if method == "GET":
                assert reply.status_code == 303, (method, url)
                login = urlsplit(reply.headers["location"])
                assert login.path == "/login" and parse_qs(login.query)["next"] == [url]
            else:
                assert reply.status_code == 401, (method, url)
                assert "log in first" in reply.text
            _assert_no_data(reply.content, world)
            # htmx: told to load the login page.
            reply = client.request(method, url, headers={"HX-Request": "true"})
            assert reply.status_code == 401 and "/login?next=" in reply.headers["hx-redirect"]
            _assert_no_data(reply.content, world)


@pytest.mark.parametrize(("header", "message"), [
    (f"Bearer {TOKEN}x", "the access token is wrong"),
    ("Bearer wrong-token-entirely", "the access token is wrong"),
    (f"Basic {TOKEN}", "must be 'Bearer <access token>'"),
    ("Bearer ", "must be 'Bearer <access token>'"),
    (TOKEN, "must be 'Bearer <access token>'"),
])
def test_a_wrong_token_is_refused(world: World, header: str, message: str) -> None:
    with TestClient(world.app) as client:
        for path in ("/", f"/runs/{world.run_id}/images/{world.image_id}",
                     f"/runs/{world.run_id}/exports/files/report.html"):
            reply = client.get(path, headers={"Authorization": header,
                                              "Accept": "application/json"})
            assert reply.status_code == 401 and message in reply.json()["detail"]
            _assert_no_data(reply.content, world)
        reply = client.post("/login", data={"token": TOKEN + "x"})
        assert reply.status_code == 401 and "That access token is wrong." in reply.text
        assert SESSION_COOKIE not in reply.cookies
        reply = client.get("/login", params={"token": "nope"}, follow_redirects=False)
        assert reply.status_code == 401 and SESSION_COOKIE not in reply.cookies


def test_the_right_token_opens_everything(world: World) -> None:
    with logged_in(world.app) as client:
        image = client.get(f"/runs/{world.run_id}/images/{world.image_id}")
        assert image.status_code == 200 and image.content == world.image
        assert client.get("/openapi.json").json()["info"]["title"] == "Internet Explorer"
        # Static files are public; a bearer client needs no CSRF token.
    with TestClient(world.app) as anonymous:
        assert anonymous.get("/static/css/app.css").status_code == 200
        assert anonymous.get("/login").status_code == 200


def test_login_sets_a_strict_httponly_cookie_and_goes_back(world: World) -> None:
    with TestClient(world.app) as client:
        first = client.get(f"/runs/{world.run_id}?page=2", follow_redirects=False,
                           headers={"Accept": "text/html"})
        target = parse_qs(urlsplit(first.headers["location"]).query)["next"][0]
        reply = client.post("/login", data={"token": TOKEN, "next": target},
                            follow_redirects=False)
        assert reply.status_code == 303
        assert reply.headers["location"] == f"/runs/{world.run_id}?page=2"
        cookie = reply.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # plain http here; https gets Secure
        page = client.get("/")
        assert page.status_code == 200
        token = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert token and f'value="{token.group(1)}"' in page.text  # hx-headers + logout form
        assert client.get(f"/runs/{world.run_id}/images/{world.image_id}").content == world.image


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil",
                                    "javascript:alert(1)", ""])
def test_login_never_sends_the_browser_to_another_site(world: World, target: str) -> None:
    with TestClient(world.app) as client:
        reply = client.get("/login", params={"token": TOKEN, "next": target},
                           follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"] == "/"


def test_forged_altered_and_expired_cookies_are_refused(world: World, tmp_path: Path) -> None:
    access: Access = world.app.state.access
    good, _ = access.new_session()
    payload, signature = good.split(".")
    old, _ = access.new_session(now=1.0)
    other = Access.from_settings(world.settings.model_copy(
        update={"access_token": SecretStr("another-token-of-length")}))
    foreign, _ = other.new_session()
    with TestClient(world.app) as client:
        for value in ("", "x", "a.b", f"{payload}x.{signature}", f"{payload}.{signature[:-2]}",
                      old, foreign):
            client.cookies.set(SESSION_COOKIE, value)
            reply = client.get("/", headers={"Accept": "application/json"})
            assert reply.status_code == 401, value
        client.cookies.set(SESSION_COOKIE, good)
        assert client.get("/").status_code == 200


def test_csrf_is_required_on_every_state_changing_request_of_a_session(world: World) -> None:
    posts = [(m, _url(r, world)) for m, r in _closed_routes(world.app) if m != "GET"]
    assert len(posts) >= 6
    with TestClient(world.app) as client:
        csrf = browser_login(client)
        for method, url in posts:
            for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
                reply = client.request(method, url, headers={"Accept": "application/json",
                                                             **headers})
                assert reply.status_code == 403, (method, url, headers)
                assert "CSRF token" in reply.json()["detail"]
                assert "reload the page" in reply.json()["detail"]
            reply = client.request(method, url, data={"csrf_token": "wrong"})
            assert reply.status_code == 403 and "CSRF token is wrong" in reply.text
        # With the token (header, form field or, for the upload, the query string): accepted.
        pause = f"/runs/{world.run_id}/pause"
        assert client.post(pause, headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
                           ).status_code == 200
        reply = client.post(f"/runs/{world.run_id}/resume", data={"csrf_token": csrf},
                            follow_redirects=False)
        assert reply.status_code != 403
        reply = client.post(f"/uploads?csrf_token={csrf}", files={"files": ("a.txt", b"x")})
        assert reply.status_code != 403
        # Logging out ends the session (and needs the token too).
        assert client.post("/logout", follow_redirects=False).status_code == 403
        reply = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert reply.status_code == 303 and 'ie_session=""' in reply.headers["set-cookie"]
        assert client.get("/", headers={"Accept": "text/html"},
                          follow_redirects=False).status_code == 303


def test_a_session_token_from_another_session_is_refused(world: World) -> None:
    with TestClient(world.app) as first, TestClient(world.app) as second:
        mine, theirs = browser_login(first), browser_login(second)
        assert mine != theirs
        reply = first.post(f"/runs/{world.run_id}/pause", headers={"X-CSRF-Token": theirs})
        assert reply.status_code == 403


def _assert_refused(client: TestClient, world: World, csrf: str) -> None:
    """``client``'s session is refused as a missing one: pages, JSON, htmx, a state change."""
    page = client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    login = urlsplit(page.headers["location"])
    assert page.status_code == 303 and login.path == "/login"
    assert parse_qs(login.query)["next"] == ["/"]
    reply = client.get(f"/runs/{world.run_id}/images/{world.image_id}",
                       headers={"Accept": "application/json"})
    assert reply.status_code == 401 and reply.json()["detail"].startswith("log in first")
    _assert_no_data(reply.content, world)
    reply = client.get(f"/runs/{world.run_id}", headers={"HX-Request": "true"})
    assert reply.status_code == 401 and "/login?next=" in reply.headers["hx-redirect"]
    reply = client.post(f"/runs/{world.run_id}/pause",
                        headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
    assert reply.status_code == 401 and reply.json()["detail"].startswith("log in first")
    # The login page shows its form instead of sending the browser on to a refused page.
    login = client.get("/login", params={"next": "/"}, follow_redirects=False)
    assert login.status_code == 200 and 'name="token"' in login.text


def _revocations(world: World) -> list[RevokedSession]:
    engine = make_engine(world.settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return list(session.scalars(select(RevokedSession)))
    finally:
        engine.dispose()


def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(world: World) -> None:
    with (TestClient(world.app) as browser, TestClient(world.app) as other,
          TestClient(world.app) as thief):
        csrf = browser_login(browser)
        copied = browser.cookies[SESSION_COOKIE]
        other_csrf = browser_login(other)
        reply = browser.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert reply.status_code == 303 and 'ie_session=""' in reply.headers["set-cookie"]
        # The copy kept elsewhere is refused exactly like a missing or expired cookie.
        thief.cookies.set(SESSION_COOKIE, copied)
        _assert_refused(thief, world, csrf)
        reply = thief.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert reply.status_code == 401
        # The session that did not log out goes on; a new login gets a new, working session.
        assert other.get("/").status_code == 200
        assert other.post(f"/runs/{world.run_id}/pause", headers={"X-CSRF-Token": other_csrf,
                                                                  "HX-Request": "true"}
                          ).status_code == 200
        new_csrf = browser_login(browser)
        assert new_csrf != csrf and browser.cookies[SESSION_COOKIE] != copied
        assert browser.get(f"/runs/{world.run_id}/images/{world.image_id}").content == world.image
        reply = browser.post(f"/runs/{world.run_id}/resume", data={"csrf_token": new_csrf},
                             follow_redirects=False)
        assert reply.status_code not in (401, 403)
    # One row, keyed by a hash: the CSRF token itself is not stored.
    [row] = _revocations(world)
    assert row.token_hash == session_key(csrf) and csrf not in row.token_hash


def test_a_logged_out_session_stays_ended_after_a_restart(world: World) -> None:
    with TestClient(world.app) as browser, TestClient(world.app) as other:
        csrf = browser_login(browser)
        copied = browser.cookies[SESSION_COOKIE]
        browser_login(other)
        kept = other.cookies[SESSION_COOKIE]
        assert browser.post("/logout", data={"csrf_token": csrf},
                            follow_redirects=False).status_code == 303
    restarted = create_app(world.settings)
    with TestClient(restarted) as thief, TestClient(restarted) as other:
        thief.cookies.set(SESSION_COOKIE, copied)
        _assert_refused(thief, world, csrf)
        other.cookies.set(SESSION_COOKIE, kept)
        assert other.get("/").status_code == 200


def test_logging_out_forgets_ended_sessions_whose_cookies_have_expired(world: World) -> None:
    access: Access = world.app.state.access
    now = datetime.now(UTC)
    expired = now - timedelta(seconds=access.max_age_seconds + 60)
    live = now - timedelta(seconds=access.max_age_seconds - 600)
    engine = make_engine(world.settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            revoke_session(session, "expired-session", expired)
            revoke_session(session, "live-session", live)
            revoke_session(session, "live-session", live)  # twice: one row
    finally:
        engine.dispose()
    assert len(_revocations(world)) == 2
    with TestClient(world.app) as browser:
        csrf = browser_login(browser)
        assert browser.post("/logout", data={"csrf_token": csrf},
                            follow_redirects=False).status_code == 303
    assert {row.token_hash for row in _revocations(world)} == {
        session_key("live-session"), session_key(csrf)}


def test_logging_out_with_the_bearer_header_records_nothing(world: World) -> None:
    with logged_in(world.app) as client:
        reply = client.post("/logout", follow_redirects=False)
        assert reply.status_code == 303
        assert client.get("/").status_code == 200  # the access token stays valid
    assert _revocations(world) == []


def _raw_get(base: str, target: str, token: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalising of ``..``)."""
    host, port = urlsplit(base).hostname or "", urlsplit(base).port or 80
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}"
                     "\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("target", [
    "/static/../app/settings.py", "/static/..%2Fapp%2Fsettings.py",
    "/static/%2e%2e/%2e%2e/app/settings.py", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd",
    "/runs/1/exports/files/../../../ie.db", "/runs/1/exports/files/..%2F..%2F..%2Fie.db",
    "/runs/1/exports/files/%2e%2e%2f%2e%2e%2fie.db", "/runs/1/exports/files/%2Fetc%2Fpasswd",
    "/runs/1/exports/files/out.html", "/runs/1/images/..%2F..%2Fie.db",
    "/runs/1/images/%2e%2e", "/runs/1/exports/files/%00report.html",
])
def test_file_routes_serve_nothing_outside_the_data_folder(world: World, target: str) -> None:
    with serve(world.app) as base:
        status, body = _raw_get(base, target, TOKEN)
    assert status in (400, 404, 422), (target, status)
    assert b"SQLite format" not in body and world.outside not in body
    assert b"root:" not in body and b"IE_" not in body and b"class Settings" not in body


def test_the_development_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = development_token(tmp_path / "d")
    assert first == development_token(tmp_path / "d") and len(first) >= 24
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "access-token").st_mode) == 0o600
    app = create_app(Settings(data_dir=tmp_path / "d"))
    assert app.state.access.token == first
    (tmp_path / "d" / "access-token").write_text("short\n")
    with pytest.raises(ValueError, match="no usable access token"):
        development_token(tmp_path / "d")


def test_bearer_header_works_on_a_served_app_stream(world: World) -> None:
    import httpx

    with serve(world.app) as base, httpx.Client(base_url=base, timeout=5,
                                                 headers=bearer(world.app)) as client:
        with client.stream("GET", f"/runs/{world.run_id}/events") as reply:
            assert reply.status_code == 200
        anonymous = httpx.get(f"{base}/runs/{world.run_id}/events", timeout=5)
        assert anonymous.status_code == 401 and "event:" not in anonymous.text
