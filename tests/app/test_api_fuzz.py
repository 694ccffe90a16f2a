"""Bad API input: schemathesis drives every operation of the app's OpenAPI schema in-process
(ASGI), authenticated, with a bounded number of generated requests per operation.

Whatever it sends, the app must not fail (no 5xx) and every refusal must be a 4xx that says why
(a message in the page, or ``{"detail": ...}`` when the client asks for JSON). The store holds a
running run (1) with concepts, an image and an export, and an upload (1), so the generated
requests reach real rows as well as missing ones.
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
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure

from app.main import create_app
from app.settings import Settings
from app.store.concepts import upsert_concepts
from app.store.db import make_engine, make_session_factory, session_scope
from app.store.images import add_images
from tests.app.factories import concept_rows, image_row, make_running_run, write_image

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM = "/runs/{run_id}/events"
"""The event stream of an existing run never ends by itself: tested in ``test_live``."""
EXAMPLES = 20


@pytest.fixture
def fuzzed_app(tmp_path: Path, _sqlite_template: Path) -> Iterator[FastAPI]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(_sqlite_template, data_dir / "ie.db")
    app_settings = Settings(data_dir=data_dir, access_token=SecretStr(TOKEN),
                            max_upload_bytes=1024 * 1024)
    write_image(data_dir, "runs/1/images/a.png", seed=1)
    engine = make_engine(app_settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            run = make_running_run(session)
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
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(data_dir=Path("unused"), access_token=SecretStr(TOKEN))).openapi()
).exclude(path=STREAM)


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case: Any, fuzzed_app: FastAPI) -> None:
    case.call_and_validate(app=fuzzed_app, headers=AUTH, checks=[not_a_server_error, a_clear_4xx])
