"""Logging in and out, and the API schema for logged-in clients (see :mod:`app.access`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app import forms
from app.access import SESSION_COOKIE, Access, clear_cookie, end_session, live_session, safe_next
from app.deps import FormDep, SessionDep
from app.templating import render

router = APIRouter()


def _login_page(request: Request, next_url: str, error: str = "") -> HTMLResponse:
    context = {"next_url": next_url, "login_error": error}
    return render(request, "pages/login.html", context, status_code=401 if error else 200)


def _logged_in(request: Request, next_url: str) -> Response:
    access: Access = request.app.state.access
    value, _ = access.new_session()
    response = RedirectResponse(next_url, status_code=303)
    access.set_cookie(request, response, value)
    return response


@router.get("/login", response_class=HTMLResponse, name="login")
def login_page(
    request: Request,
    next: Annotated[str | None, Query(max_length=500)] = None,
    token: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """The login form; ``?token=`` logs in at once (the link ``scripts/run.sh`` prints)."""
    access: Access = request.app.state.access
    target = safe_next(next)
    if token is not None:
        if access.token_matches(token):
            return _logged_in(request, target)
        return _login_page(request, target, "That access token is wrong.")
    if live_session(request) is not None:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target)


@router.post("/login", response_model=None, name="login_submit", openapi_extra=forms.LOGIN)
def login(request: Request, form: FormDep) -> Response:
    """Check the access token; set the session cookie and go on, or the form again (401)."""
    access: Access = request.app.state.access
    token, target = form.get("token"), form.get("next")
    target = safe_next(target if isinstance(target, str) else None)
    if isinstance(token, str) and token and access.token_matches(token):
        return _logged_in(request, target)
    return _login_page(request, target, "That access token is wrong.")


@router.post("/logout", response_model=None, name="logout", openapi_extra=forms.LOGOUT)
def logout(request: Request, db: SessionDep) -> Response:
    """End this browser's session: the cookie is cleared here and, recorded as ended, refused
    wherever a copy of it is sent (the access token stays valid)."""
    access: Access = request.app.state.access
    session = access.read_session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        end_session(db, access, session)
    response = RedirectResponse(request.url_for("login"), status_code=303)
    clear_cookie(response)
    return response


@router.get("/openapi.json", include_in_schema=False, name="openapi")
def openapi(request: Request) -> dict[str, Any]:
    """The OpenAPI schema of the app's routes."""
    schema: dict[str, Any] = request.app.openapi()
    return schema
