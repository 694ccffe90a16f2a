"""Jinja2 rendering: one template file serves a whole page and its fragments.

A page template (``pages/*.html``) extends ``base.html`` and wraps each part that htmx may
swap in a named block. :func:`render` returns the whole page to a plain request and only the
named block to an htmx request (``HX-Request: true``), so the page works without JavaScript and
the fragment never drifts from the page. Partials (``partials/_*.html``) are included by pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi.templating import Jinja2Templates
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
    return templates


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
