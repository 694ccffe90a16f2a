"""Jinja2 rendering: one template file serves a whole page and its fragments.

A page template (``pages/*.html``) extends ``base.html`` and wraps each part that htmx may
swap in a named block. :func:`render` returns the whole page to a plain request and only the
named block to an htmx request (``HX-Request: true``), so the page works without JavaScript and
the fragment never drifts from the page. Partials (``partials/_*.html``) are included by pages;
a region of a page that refreshes itself is one partial, served alone by :func:`render_fragment`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES_DIR: Final = Path(__file__).resolve().parents[1] / "templates"
STATIC_DIR: Final = Path(__file__).resolve().parents[1] / "static"


def make_templates(directory: Path = TEMPLATES_DIR) -> Jinja2Templates:
    """The app's template set (autoescaping on: file names in reports are untrusted)."""
    templates = Jinja2Templates(directory=str(directory))
    templates.env.autoescape = True
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    templates.env.filters["num"] = format_number
    templates.env.filters["percent"] = format_percent
    templates.env.globals["csrf_token"] = csrf_token
    templates.env.globals["csrf_field"] = csrf_field
    return templates


def format_number(value: float | int | None, digits: int = 3) -> str:
    """A figure for a table cell: ``digits`` after the point, a dash when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def format_percent(value: float | None, digits: int = 1) -> str:
    """A share (0-1) as a percentage, a dash when there is none."""
    if value is None or not math.isfinite(value):
        return "\u2013"
    return f"{100 * value:.{digits}f}%"


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session ('' without one; see :mod:`app.access`)."""
    return str(getattr(request.state, "csrf", ""))


def csrf_field(request: Request) -> Markup:
    """The hidden form field carrying the CSRF token: every POST form has one."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        csrf_token(request))


def is_htmx(request: Request) -> bool:
    """Whether htmx sent the request (and wants a fragment)."""
    return request.headers.get("HX-Request", "").lower() == "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Template ``name`` as a page, or only its ``block`` when htmx asked for it."""
    templates: Jinja2Templates = request.app.state.templates
    values = {"request": request, **(context or {})}
    if block is not None and is_htmx(request):
        template = templates.env.get_template(name)
        html = "".join(template.blocks[block](template.new_context(values)))
        return HTMLResponse(html, status_code=status_code)
    return templates.TemplateResponse(request, name, values, status_code=status_code)


def render_fragment(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The partial template ``name`` alone: a region of a page that fetches itself again."""
    templates: Jinja2Templates = request.app.state.templates
    html = templates.env.get_template(name).render({"request": request, **(context or {})})
    return HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
