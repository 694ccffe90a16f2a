"""Who may use the app: one access token, a signed session cookie, and a CSRF token per session.

The app has one user (whoever runs it), so it has one secret to know, not accounts:

* **The access token** (``IE_ACCESS_TOKEN``). A browser types it once on ``/login`` (or opens
  ``/login?token=...``, the link ``scripts/run.sh`` prints) and gets a session cookie; a script
  sends ``Authorization: Bearer <token>`` with every request. In development, when no token is
  set, a random one is made once and kept in ``{data_dir}/access-token`` (mode 0600);
  production refuses to start without one (:mod:`app.settings`).
* **The session cookie** (``ie_session``): HttpOnly, ``SameSite=Strict``, ``Secure`` over HTTPS,
  holding its issue time and the session's CSRF token, signed with HMAC-SHA256 under a key
  derived from ``IE_SECRET_KEY`` *and* the access token. Changing either ends every session; the
  development default of the secret key alone cannot forge a cookie, since the token is part of
  the key. A cookie older than ``IE_SESSION_HOURS`` is refused, and so is the cookie of a
  session ended by logging out: ``POST /logout`` records the session in the database
  (:mod:`app.store.revocations`, keyed by a hash of its CSRF token), so a copy of the cookie
  kept elsewhere stops working too, in every process and after a restart.
* **CSRF.** A browser attaches cookies by itself, so every request that changes something
  (anything but GET, HEAD and OPTIONS) authenticated by the cookie must also prove it came from
  one of our pages: it carries the session's CSRF token in the ``X-CSRF-Token`` header (htmx
  sends it on every request through ``hx-headers`` on ``<body>``), in a ``csrf_token`` form
  field (URL-encoded forms, which work without JavaScript), or in the ``csrf_token`` query
  parameter (the upload form: its multipart body is streamed to disk by the route and is not
  read before this check). Another site can neither read the token nor, under ``SameSite=Strict``,
  make the browser send the cookie; a sibling sub-domain (same site) still lacks the token.
  Requests authenticated by the bearer header need no CSRF token: a browser never adds that
  header by itself.

:func:`guard` is a dependency of the whole app (``FastAPI(dependencies=...)``), so every route,
present and future, is closed unless its name is in :data:`PUBLIC_ROUTES`. Static files are
public. Run ``python -m app.access`` to print the token the app uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import anyio.to_thread
from sqlalchemy.orm import Session as DbSession
from starlette.requests import Request
from starlette.responses import Response

from app.errors import CsrfRefused, LoginRequired
from app.settings import MIN_TOKEN_LENGTH, Settings, get_settings
from app.store.db import session_scope
from app.store.models import utcnow
from app.store.revocations import is_revoked, purge_revocations, revoke_session

SESSION_COOKIE: Final = "ie_session"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
TOKEN_FILE: Final = "access-token"
PUBLIC_ROUTES: Final = frozenset({"login", "login_submit"})
"""Route names open to everyone: the login page and its form."""
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9_.~%+=&?#/:;@!$'()*,-]{0,500}")
_CLOCK_SKEW = 60.0


def development_token(data_dir: Path) -> str:
    """The token kept in ``data_dir/access-token``, made (random, mode 0600) on first use.

    Made in a temporary file and linked into place, so processes starting together agree on one.
    """
    path = data_dir / TOKEN_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{path} holds no usable access token (at least {MIN_TOKEN_LENGTH} "
                         "characters): delete it to have a new one made, or set IE_ACCESS_TOKEN")
    return token


def access_token(settings: Settings) -> str:
    """The token that opens the app: ``IE_ACCESS_TOKEN``, or the development token file."""
    if settings.access_token is not None:
        return settings.access_token.get_secret_value()
    return development_token(settings.data_dir)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A valid session cookie's content."""

    issued_at: float
    csrf: str


@dataclass(frozen=True)
class Access:
    """The app's access token and what signs its session cookies (``app.state.access``)."""

    token: str
    key: bytes
    max_age_seconds: float
    secure: bool | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        token = access_token(settings)
        secret = settings.secret_key.get_secret_value().encode()
        key = hmac.new(secret, b"ie-session\x00" + token.encode(), hashlib.sha256).digest()
        return cls(token=token, key=key, max_age_seconds=settings.session_hours * 3600,
                   secure=settings.cookie_secure)

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the access token (compared in constant time)."""
        return hmac.compare_digest(candidate.strip().encode(), self.token.encode())

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode("ascii"), hashlib.sha256).digest())

    def new_session(self, now: float | None = None) -> tuple[str, Session]:
        """A fresh session and its cookie value."""
        session = Session(issued_at=time.time() if now is None else now,
                          csrf=secrets.token_urlsafe(24))
        payload = _b64(json.dumps({"iat": session.issued_at, "csrf": session.csrf}).encode())
        return f"{payload}.{self._sign(payload)}", session

    def read_session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value; None when it is missing, forged, altered or expired."""
        if not cookie or len(cookie) > 1000 or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        try:
            if not hmac.compare_digest(signature.encode("ascii"),
                                       self._sign(payload).encode("ascii")):
                return None
            data = json.loads(_unb64(payload))
            issued, csrf = float(data["iat"]), str(data["csrf"])
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        age = (time.time() if now is None else now) - issued
        if not -_CLOCK_SKEW <= age <= self.max_age_seconds or not csrf:
            return None
        return Session(issued_at=issued, csrf=csrf)

    def set_cookie(self, request: Request, response: Response, value: str) -> None:
        secure = self.secure if self.secure is not None else request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, value, max_age=int(self.max_age_seconds), path="/",
                            httponly=True, samesite="strict", secure=secure)


def live_session(request: Request) -> Session | None:
    """The session of the request's cookie; None when the cookie is missing, forged, altered,
    expired or its session was ended by logging out. Blocking: reads the database."""
    access: Access = request.app.state.access
    session = access.read_session(request.cookies.get(SESSION_COOKIE))
    return None if session is None or session_ended(request, session) else session


def session_ended(request: Request, session: Session) -> bool:
    """Whether ``session`` was ended by logging out (in any process of the app, at any time).
    Blocking: reads the database."""
    with session_scope(request.app.state.session_factory) as db:
        return is_revoked(db, session.csrf)


def end_session(db: DbSession, access: Access, session: Session,
                now: datetime | None = None) -> None:
    """Record ``session`` as ended, so its cookie is refused from now on, and forget the ended
    sessions whose cookies have expired anyway. Flushes, never commits."""
    now = now or utcnow()
    revoke_session(db, session.csrf, datetime.fromtimestamp(session.issued_at, UTC), now=now)
    purge_revocations(db, issued_before=now - timedelta(seconds=access.max_age_seconds))


def clear_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site, never another site (``//host``)."""
    return target if target and _NEXT.fullmatch(target) else "/"


async def guard(request: Request) -> None:
    """Let the request through only with the access token or a valid session (and, for a
    state-changing request with a session, its CSRF token); raise otherwise."""
    route = request.scope.get("route")
    if getattr(route, "name", None) in PUBLIC_ROUTES:
        return
    access: Access = request.app.state.access
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise LoginRequired("the Authorization header must be 'Bearer <access token>'")
        if not access.token_matches(credentials):
            raise LoginRequired("the access token is wrong")
        request.state.auth = "bearer"
        return
    session = access.read_session(request.cookies.get(SESSION_COOKIE))
    if session is not None and await anyio.to_thread.run_sync(session_ended, request, session):
        session = None
    if session is None:
        raise LoginRequired("log in first: this needs the access token (see the login page)")
    request.state.auth = "session"
    request.state.csrf = session.csrf
    if request.method not in SAFE_METHODS:
        await check_csrf(request, session.csrf)


async def check_csrf(request: Request, expected: str) -> None:
    """:class:`CsrfRefused` unless the request carries ``expected`` (header, query or form)."""
    sent = request.headers.get(CSRF_HEADER) or request.query_params.get(CSRF_FIELD)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith("application/x-www-form-urlencoded"):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent:
        raise CsrfRefused("the request has no CSRF token: reload the page and try again "
                          f"(forms send it as {CSRF_FIELD!r}, scripts as {CSRF_HEADER})")
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("ascii")):
        raise CsrfRefused("the CSRF token is wrong or belongs to another session: reload the "
                          "page and try again")


def main() -> None:
    """Print the access token the app uses with the current settings (made if need be)."""
    print(access_token(get_settings()))


if __name__ == "__main__":
    main()
