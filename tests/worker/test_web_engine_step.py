"""A run launched on a web engine: the worker's fetch goes through the real Openverse adapter to
a fake Openverse on 127.0.0.1 (answers from the recorded fixtures, image URLs pointing back at
the same server), keeps the license filter, caches answers and image downloads in the run folder
and records each engine's health for the dashboard."""

from __future__ import annotations

import asyncio
import html
import io
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.migrate import upgrade
from app.store.models import Event, Image, Query, Run, RunStatus
from app.store.runs import create_run, set_run_status
from ie_engine.errors import ConfigError
from tests.app.auth import logged_in
from tests.ie_engine.engine_fake_apis import PREFIX, FakeApis, _openverse
from tests.worker.conftest import make_data_dir
from tests.worker.world import add_upload, tiny_config
from worker.runtime import Runtime
from worker.steps import fail, fetch_step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class LoopbackOpenverse(FakeApis):
    """The fake Openverse of the engine tests, whose image URLs point at this same server
    (``/img/{query}-{n}.png``, a distinct small picture each)."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PREFIX["openverse"] + "/images/", self._wrap("openverse", _here))
        app.router.add_get("/img/{name}", _image)
        return app


def _here(params: dict[str, str], body: Any, headers: Any) -> tuple[int, Any, dict[str, str]]:
    status, payload, extra = _openverse(params, body, headers)
    q = params.get("q", "").replace(" ", "_")
    for i, r in enumerate(payload.get("results") or []):
        r["url"] = f"http://{headers['Host']}/img/{q}-{params.get('page', '1')}-{i}.png"
    return status, payload, extra


async def _image(request: web.Request) -> web.Response:
    rng = np.random.default_rng(zlib.crc32(request.match_info["name"].encode()))
    small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(small).resize((96, 72), PILImage.Resampling.BICUBIC).save(buf, "PNG")
    return web.Response(body=buf.getvalue(), content_type="image/png")


@pytest.fixture
def fake_openverse() -> Iterator[tuple[str, FakeApis]]:
    """The fake served on 127.0.0.1 from a thread of its own (the worker's step blocks)."""
    apis = LoopbackOpenverse()
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, str] = {}

    async def serve() -> None:
        runner = web.AppRunner(apis.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        box["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["url"], apis
    stop.set()
    thread.join(5)


@pytest.fixture
def embedded(world: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Settings,
                                                                       sessionmaker[Session]]]:
    settings = Settings(data_dir=make_data_dir(world, tmp_path / "data"), search_url=world["url"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


def queue_web_run(factory: sessionmaker[Session], settings: Settings, target: Path,
                  engines: list[dict[str, Any]], licenses: list[str]) -> int:
    with factory() as session:
        upload = add_upload(session, settings, target)
        run = create_run(session, name="web run", config=tiny_config(iterations=2),
                         upload_id=upload.id, search_engine="web",
                         engine_config={"engines": engines, "retries": 0}, licenses=licenses)
        set_run_status(session, run.id, RunStatus.QUEUED)
        session.commit()
        return run.id


def test_a_fetch_on_a_web_engine_keeps_the_filter_caches_and_records_health(
    embedded: tuple[Settings, sessionmaker[Session]], world: dict[str, Any],
    fake_openverse: tuple[str, FakeApis],
) -> None:
    settings, factory = embedded
    url, apis = fake_openverse
    engines = [{"kind": "openverse", "base_url": url + PREFIX["openverse"],
                "requests_per_minute": 1e6}]
    run_id = queue_web_run(factory, settings, world["target"], engines, ["by", "cc0"])
    rt = Runtime(settings)
    assert fetch_step(rt, run_id, None).action == "fetched iteration 1"

    calls = apis.calls("openverse")
    assert calls and all(c.params["license"] == "by,cc0" for c in calls)
    with factory() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.engine_health is not None
        (health,) = run.engine_health["engines"]
        queries = list(session.scalars(select(Query).where(Query.run_id == run_id)))
        images = list(session.scalars(select(Image).where(Image.run_id == run_id)))
        kinds = list(session.scalars(select(Event.kind).where(Event.run_id == run_id)))
    assert (health["name"], health["status"], health["errors"]) == ("openverse", "ok", 0)
    assert health["requests"] == len(calls) and health["latency_ms_mean"] is not None
    assert health["quota_per_day"] == 200 and health["quota_left_today"] == 200 - len(calls)
    # Each query's recorded answer holds one by-nc-sa result: dropped before download.
    assert health["filtered_out"] == len(queries) > 0
    assert images and {i.license for i in images} <= {"CC BY 2.0", "CC0 1.0"}
    assert run.engine_health["license_filter"] == "by,cc0"
    assert "engines" in kinds
    cache = settings.runs_dir / str(run_id) / "search-cache"
    assert cache.is_dir() and any(cache.rglob("*.json"))
    bodies = [f for f in (cache / "downloads" / "bodies").rglob("*") if f.is_file()]
    assert len(bodies) >= len(images)  # each stored image's download, for an offline replay

    with logged_in(create_app(settings)) as client:
        panel = html.unescape(client.get(f"/runs/{run_id}/engines").text)
        page = html.unescape(client.get(f"/runs/{run_id}").text)
    assert 'data-testid="engine-openverse" data-status="ok"' in panel
    assert f"{200 - len(calls)} of 200" in panel
    assert "web engines openverse, licenses by, cc0" in page and 'id="run-engines"' in page

    rt.forget(run_id)  # closing the engine writes its final health in the run folder
    assert (settings.runs_dir / str(run_id) / "engine-health.json").is_file()


def test_a_web_engine_without_its_key_fails_the_run_saying_which(
    embedded: tuple[Settings, sessionmaker[Session]], world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, factory = embedded
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    run_id = queue_web_run(factory, settings, world["target"], [{"kind": "flickr"}], [])
    rt = Runtime(settings)
    with pytest.raises(ConfigError, match="FLICKR_API_KEY") as caught:
        fetch_step(rt, run_id, None)
    fail(rt, run_id, f"fetch: {caught.value}")  # what the task does with an engine error
    with factory() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.status == RunStatus.FAILED
        assert run.error is not None and "FLICKR_API_KEY" in run.error
