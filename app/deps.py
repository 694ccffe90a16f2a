"""FastAPI dependencies as ``Annotated`` aliases: what a route may ask for.

The settings and the session factory live on the app object (``app.state``), set by
:func:`app.main.create_app`; nothing here reads the environment or holds a global.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.settings import Settings
from app.store.db import session_scope


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session and one transaction per request: committed when the route returns normally,
    rolled back when it raises (including an :class:`~app.errors.AppError`)."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": commit before the response is sent, so a failed commit is an error page,
# not a success page for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
