"""A run's live data: the event stream (SSE), the curves and map as JSON, and its images."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from jinja2 import Template
from starlette.responses import FileResponse, StreamingResponse

from app.deps import ImageId, RunId, SessionDep, SettingsDep
from app.numbers import BIG_ID_MAX, whole_number
from app.services import dashboard
from app.services.images import image_file
from app.services.live import StreamOptions, event_stream, open_waker
from app.store.models import Event
from app.store.runs import get_run

router = APIRouter(prefix="/runs/{run_id}")

def _start_id(header: str | None, query: int | None) -> int:
    """Where the stream starts: the browser's ``Last-Event-ID`` (sent when it reconnects by
    itself) wins over ``?last_id=`` (what the page was rendered up to)."""
    start = None if header is None else whole_number(header, BIG_ID_MAX)
    return start if start is not None else query or 0


@router.get("/events", name="run_events")
async def run_events(
    request: Request,
    settings: SettingsDep,
    run_id: RunId,
    last_id: Annotated[int | None, Query(ge=0, le=BIG_ID_MAX)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: the run's events past the last one the client has, as they come.

    The message format is described in :mod:`app.services.live`. The stream ends when the
    client goes away.
    """
    state = request.app.state
    factory = state.session_factory

    def check_run() -> None:
        with factory() as session:
            get_run(session, run_id)  # a 404 page now rather than an empty stream

    await anyio.to_thread.run_sync(check_run)
    template: Template = state.templates.env.get_template("partials/_event.html")
    options = StreamOptions.from_settings(settings, dialect=state.engine.dialect.name)

    def render(event: Event) -> str:
        return template.render(event=event).strip()

    async def body() -> Any:
        state.open_streams += 1
        try:
            async with open_waker(settings, run_id) as waker:
                stream = event_stream(
                    factory,
                    run_id,
                    _start_id(last_event_id, last_id),
                    waker=waker,
                    options=options,
                    render=render,
                )
                async for chunk in stream:
                    yield chunk
        finally:
            state.open_streams -= 1

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


@router.get("/curves.json", name="run_curves")
def run_curves(session: SessionDep, run_id: RunId) -> dict[str, Any]:
    """Per-iteration curves: kNN accuracy, mean rewards, loss, share of images kept."""
    return dashboard.curves(session, run_id)


@router.get("/map.json", name="run_map")
def run_map(session: SessionDep, run_id: RunId) -> dict[str, Any]:
    """The concept map: placed concepts with predicted reward, queried and vetoed marks."""
    return dashboard.concept_map(session, run_id)


@router.get("/images/{image_id}", name="run_image")
def run_image(
    session: SessionDep, settings: SettingsDep, run_id: RunId, image_id: ImageId
) -> FileResponse:
    """One downloaded image, from inside the data folder only (404 for anything else)."""
    path = image_file(session, settings, run_id, image_id)
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
