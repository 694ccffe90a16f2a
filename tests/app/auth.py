"""Logged-in clients for tests of the app (see :mod:`app.access`).

* :func:`logged_in`: a test client that sends the app's access token as a bearer header on every
  request (what a script does; no CSRF token needed);
* :func:`bearer`: that header, for an ``httpx`` client of a served app;
* :func:`browser_login`: log a test client in through the login form as a browser does (session
  cookie); returns the session's CSRF token, which state-changing requests must then carry.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.access import Access


def token_of(app: FastAPI) -> str:
    access: Access = app.state.access
    return access.token


def bearer(app: FastAPI) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(app)}"}


def logged_in(app: FastAPI, **kwargs: Any) -> TestClient:
    """A test client of ``app`` authenticated by its access token."""
    headers = {**bearer(app), **kwargs.pop("headers", {})}
    return TestClient(app, headers=headers, **kwargs)


def browser_login(client: TestClient) -> str:
    """Log ``client`` in through ``POST /login``; the session's CSRF token (read from a page)."""
    app = client.app
    assert isinstance(app, FastAPI)
    reply = client.post("/login", data={"token": token_of(app), "next": "/"},
                        follow_redirects=False)
    assert reply.status_code == 303, reply.text
    page = client.get("/")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "a logged-in page carries the CSRF token"
    return found.group(1)
