"""FastAPI dependencies as ``Annotated`` aliases: what a route may ask for.

The settings and the session factory live on the app object (``app.state``), set by
:func:`app.main.create_app`; nothing here reads the environment or holds a global.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import Field
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.errors import InvalidInput
from app.numbers import BIG_ID_MAX, ID_MAX, whole_number
from app.services.dashboard import Show, View
from app.settings import Settings
from app.store.concepts import ConceptSort
from app.store.db import session_scope

RunId = Annotated[int, Path(ge=1, le=ID_MAX, description="The run's number.", examples=[1])]
UploadId = Annotated[int, Path(ge=1, le=ID_MAX, description="The upload's number.",
                                examples=[1])]
ImageId = Annotated[int, Path(ge=1, le=BIG_ID_MAX, description="The image's id.", examples=[1])]
ConceptIndex = Annotated[int, Field(ge=0, le=ID_MAX)]


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session and one transaction per request: committed when the route returns normally,
    rolled back when it raises (including an :class:`~app.errors.AppError`)."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


async def get_form(request: Request) -> FormData:
    """The request's form fields (URL-encoded or multipart), read before a sync route runs."""
    return await request.form()


def _optional_int(name: str, text: str | None) -> int | None:
    """A whole-number query parameter that an empty form field leaves out (``concept=``)."""
    if text is None or not text.strip():
        return None
    value = whole_number(text, ID_MAX)
    if value is None:
        raise InvalidInput(f"{name}: {text.strip()[:40]!r} is not a whole number up to {ID_MAX}")
    return value


def get_view(
    sort: ConceptSort = "reward",
    q: Annotated[str, Query(max_length=200)] = "",
    show: Show = "all",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    concept: Annotated[str | None, Query(max_length=12)] = None,
    iteration: Annotated[str | None, Query(max_length=12)] = None,
    gpage: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    qiter: Annotated[str | None, Query(max_length=12)] = None,
    pick: Annotated[list[ConceptIndex] | None, Query(max_length=1000)] = None,
) -> View:
    """The dashboard's view, from the query string (see :class:`~app.services.dashboard.View`).

    ``concept``, ``iteration`` and ``qiter`` may be empty (a form's blank field = no filter).
    """
    return View(
        sort=sort,
        q=q.strip(),
        show=show,
        page=page,
        concept=_optional_int("concept", concept),
        iteration=_optional_int("iteration", iteration),
        gpage=gpage,
        qiter=_optional_int("qiter", qiter),
        picks=frozenset(pick or ()),
    )


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ViewDep = Annotated[View, Depends(get_view)]
FormDep = Annotated[FormData, Depends(get_form)]
# scope="function": commit before the response is sent, so a failed commit is an error page,
# not a success page for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
