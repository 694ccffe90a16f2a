"""Bad API input: schemathesis drives every operation of the app's OpenAPI schema in-process
(ASGI), authenticated, with a bounded number of generated requests per operation.

Whatever it sends, the app must not fail (no 5xx) and every refusal must be a 4xx that says why
(a message in the page, or ``{"detail": ...}`` when the client asks for JSON). The store holds a
running run (1) with concepts, an image and an export, and an upload (1), so the generated
requests reach real rows as well as missing ones.

The routes that change something take forms, which their handlers read and check themselves;
the schema describes each form's fields (:mod:`app.forms`), so the generated requests carry
form bodies (URL-encoded; multipart for the upload) with valid and invalid fields. That
description is checked here against the forms the pages really send.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from sqlalchemy import text

from app.access import CSRF_FIELD
from app.forms import MULTIPART, URLENCODED
from app.main import create_app
from app.settings import Settings
from app.store.concepts import upsert_concepts
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.images import add_images
from app.store.models import Base
from app.templating import TEMPLATES_DIR
from tests.app.factories import concept_rows, image_row, make_running_run, write_image

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM = "/runs/{run_id}/events"
"""The event stream of an existing run never ends by itself: tested in ``test_live``."""
EXAMPLES = 20


def _fresh_postgres(url: str) -> None:
    """Empty the session's PostgreSQL schema and restart its ids, so the rows below get the ids
    they get on SQLite (run 1, upload 1)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzzed_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FastAPI]:
    """The app on a store of each kind (PostgreSQL: skipped, saying why, when the server does
    not answer), holding the rows the module's docstring names."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), data_dir / "ie.db")
        database_url = ""
    else:
        database_url = str(request.getfixturevalue("_postgres_migrated"))
        _fresh_postgres(database_url)
    app_settings = Settings(data_dir=data_dir, database_url=database_url,
                            access_token=SecretStr(TOKEN), max_upload_bytes=1024 * 1024)
    write_image(data_dir, "runs/1/images/a.png", seed=1)
    engine = make_engine(app_settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            run = make_running_run(session)
            assert run.id == 1
            upsert_concepts(session, run.id, concept_rows(30))
            add_images(session, run.id, [image_row(run.id, "a", path="runs/1/images/a.png")])
    finally:
        engine.dispose()
    exports = app_settings.runs_dir / "1" / "exports"
    exports.mkdir(parents=True)
    (exports / "report.html").write_text("<p>report</p>")
    yield create_app(app_settings)


def a_clear_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """A refusal is a 4xx with a message: a page with an alert (the error card, the login
    form's note), or JSON with ``detail``."""
    status = response.status_code
    if status < 400:
        return None
    text = response.content.decode("utf-8", "replace")
    if "application/json" in response.headers.get("content-type", [""])[0]:
        clear = bool(response.json().get("detail"))
    else:
        clear = re.search(r'role="alert"[^>]*>\s*(<h2>)?[^<\s]', text) is not None
    if not clear:
        raise Failure(operation=case.operation.label, title="A refusal without a message",
                      message=f"{status} with no message: {text[:200]!r}")
    return None


# The schema depends on the routes only, not on the settings: read once, at collection.
SCHEMA_APP = create_app(Settings(data_dir=Path("unused"), access_token=SecretStr(TOKEN)))
RAW_SCHEMA: dict[str, Any] = SCHEMA_APP.openapi()
SCHEMA = schemathesis.openapi.from_dict(RAW_SCHEMA).exclude(path=STREAM)
FORM_ROUTES = {"login_submit": URLENCODED, "logout": URLENCODED, "create_upload": MULTIPART,
               "launch_run": URLENCODED, "steer_concepts": URLENCODED,
               "add_concept": URLENCODED, "control_run": URLENCODED, "make_export": URLENCODED}
"""Every route that takes a POST, and the form it reads."""


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case: Any, fuzzed_app: FastAPI) -> None:
    case.call_and_validate(app=fuzzed_app, headers=AUTH, checks=[not_a_server_error, a_clear_4xx])


def _routes() -> list[RouteContext]:
    return [route for route in iter_route_contexts(SCHEMA_APP.routes) if route.methods]


def _operation(route_name: str) -> dict[str, Any]:
    route = next(r for r in _routes() if r.name == route_name)
    operation: dict[str, Any] = RAW_SCHEMA["paths"][route.path]["post"]
    return operation


def _page_forms() -> dict[str, set[str]]:
    """The POST forms of the templates: each route's name, and the fields its forms send (the
    URL's ``csrf_token`` as ``?csrf_token``)."""
    forms: dict[str, set[str]] = {}
    for path in TEMPLATES_DIR.rglob("*.html"):
        for attrs, inner in re.findall(r"<form\b([^>]*)>(.*?)</form>", path.read_text(), re.S):
            if 'method="post"' not in attrs:
                continue
            route = re.search(r"url_for\('(\w+)'", attrs)
            assert route, f"{path.name}: a form that posts to no route: {attrs[:80]}"
            fields = set(re.findall(r'\bname="(\w+)"', inner))
            if "csrf_field(request)" in inner:
                fields.add(CSRF_FIELD)
            if f"?{CSRF_FIELD}=" in attrs:
                fields.add(f"?{CSRF_FIELD}")
            forms.setdefault(route.group(1), set()).update(fields)
    return forms


def test_every_post_route_describes_its_form() -> None:
    posts = {r.name for r in _routes() if "POST" in (r.methods or ())}
    assert posts == set(FORM_ROUTES)
    for name, media_type in FORM_ROUTES.items():
        body = _operation(name)["requestBody"]
        assert list(body["content"]) == [media_type], name
        assert body["content"][media_type]["schema"]["properties"], name
    labels = {op.label: [b.media_type for b in op.body]
              for op in (result.ok() for result in SCHEMA.get_all_operations())
              if op.method.upper() == "POST"}
    assert len(labels) == len(FORM_ROUTES)
    assert all(types in ([URLENCODED], [MULTIPART]) for types in labels.values()), labels


def test_the_schema_names_every_field_the_pages_send() -> None:
    forms = _page_forms()
    assert set(forms) == set(FORM_ROUTES)
    for name, fields in forms.items():
        operation = _operation(name)
        (content,) = operation["requestBody"]["content"].values()
        described = set(content["schema"]["properties"]) | {
            f"?{p['name']}" for p in operation.get("parameters", []) if p["in"] == "query"
        }
        assert fields <= described, f"{name}: {sorted(fields - described)} not in the schema"
