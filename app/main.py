"""The FastAPI application: :func:`create_app` builds one app object that carries everything.

Run it with ``uvicorn --factory app.main:create_app``. At start-up the database is migrated to
the newest schema (``alembic upgrade head``: never ``create_all``) and the data folder is made.
Errors of the application's tree (:mod:`app.errors`) become 4xx pages here, in one handler
(plus one each for the framework's own 404s and 422s): the whole page for a plain request, the
message fragment for htmx, ``{"detail": message, "details": [...]}`` for a client that asks for
JSON. Every route needs the access token or a session (:mod:`app.access`): a browser asking for
a page without one is sent to the login page, anything else gets a 401.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from app import access
from app.errors import AppError, LoginRequired
from app.routes import control, exports, home, live, login, runs, uploads
from app.services import dashboard
from app.settings import Settings, get_settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.templating import STATIC_DIR, is_htmx, make_templates, render

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app for ``settings`` (read from the environment when None)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(upgrade, settings.database_url)
        log.info("database ready at %s", engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(title="Internet Explorer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, dependencies=[Depends(access.guard)])
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.access = access.Access.from_settings(settings)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.templates = make_templates()
    app.state.templates.env.globals.update(
        refresh_on=dashboard.REFRESH_ON, sse_kinds=dashboard.SSE_KINDS
    )
    app.state.open_streams = 0  # event streams being served now (see app.routes.live)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(login.router)
    app.include_router(home.router)
    app.include_router(uploads.router)
    app.include_router(runs.router)
    app.include_router(control.router)
    app.include_router(live.router)
    app.include_router(exports.router)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


async def _app_error(request: Request, exc: Exception) -> Response:
    """Every :class:`AppError` as its status, with its message (and details) shown."""
    assert isinstance(exc, AppError)
    return _error_page(request, exc.status_code, exc.message, exc.details)


async def _login_required(request: Request, exc: Exception) -> Response:
    """No credentials: a browser asking for a page goes to the login page and comes back
    after; htmx is told to load the login page; anything else gets a 401 with the reason."""
    assert isinstance(exc, LoginRequired)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login_url = f"{request.url_for('login')}?{urlencode({'next': here})}"
    wants_page = "text/html" in request.headers.get("accept", "")
    if request.method == "GET" and wants_page and not is_htmx(request):
        return RedirectResponse(login_url, status_code=303)
    response = _error_page(request, 401, exc.message, exc.details)
    response.headers["WWW-Authenticate"] = 'Bearer realm="Internet Explorer"'
    if is_htmx(request):
        response.headers["HX-Redirect"] = login_url
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    """Framework errors (unknown page, malformed request) as the same kind of page."""
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "the request cannot be served"
    return _error_page(request, exc.status_code, message, [])


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A malformed path or query parameter (``/uploads/abc``) as a 422 page saying which."""
    assert isinstance(exc, RequestValidationError)
    details = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in exc.errors()
    ]
    return _error_page(request, 422, "the request has invalid parameters", details)


def _wants_json(request: Request) -> bool:
    """Whether the client asked for JSON rather than a page (``Accept: application/json``)."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _error_page(request: Request, status: int, message: str, details: list[str]) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message, "details": details}, status_code=status)
    context = {"status": status, "message": message, "details": details}
    return render(request, "pages/error.html", context, block="error", status_code=status)
