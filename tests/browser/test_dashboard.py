"""The product in a real browser: Debian's Chromium driven by Playwright, against the real app
(uvicorn on loopback), a real worker process and the offline web on loopback.

A person uploads a labelled folder, launches a ``cpu-small`` run, watches the dashboard fill in
without a reload, vetoes the concept the policy likes best (it is never sampled again; its
neighbours' predicted reward falls, and so does their probability against a veto that only took
the concept out), then pauses, resumes and cancels. Screenshots go to
``test-artifacts/``; the times from "Launch" to the first query and to the first curve point
are written to ``test-artifacts/latency.json``. Training is capped at ``IE_TEST_TRAIN_STEPS``
steps per iteration (default 4; the preset's own 60 take minutes per iteration on 2 shared
cores): set it to 60 to measure the preset as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.main import create_app
from app.settings import Settings
from app.store.db import make_engine, make_session_factory
from app.store.models import Concept, Event, Query, Run, RunStatus, Veto
from tests.app.auth import token_of
from tests.app.servers import serve
from tests.worker.conftest import make_data_dir
from tests.worker.world import wait_for, worker_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: run IE_WITH_BROWSER=1 bash scripts/setup.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_upload_launch_watch_veto_pause_resume_cancel(browser, world, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    settings = Settings(data_dir=make_data_dir(world, tmp_path / "data"),
                        search_url=world["url"], vocabulary_max_concepts=150,
                        max_train_steps=int(os.environ.get("IE_TEST_TRAIN_STEPS", "4")),
                        sse_poll_seconds=0.3, progress_interval_seconds=0.3)
    folder = tmp_path / "my photos"
    shutil.copytree(world["target"], folder)
    log = tmp_path / "worker.log"
    app = create_app(settings)
    with serve(app) as base, worker_process(settings, log):
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())
        page.set_default_timeout(30_000)

        # ---------------------------------------------------------------- log in, upload
        page.goto(base + "/")  # sent to the login page, and back after
        page.fill("#token", token_of(app))
        page.click("[data-testid=login-form] button[type=submit]")
        page.wait_for_url(base + "/")
        assert "Where to go first" in page.content()
        page.goto(base + "/uploads")
        page.set_input_files("#files", str(folder))
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("#report .summary .ok", timeout=60_000)
        summary = page.inner_text("#report .summary")
        assert " 0 accepted" not in f" {summary}" and "Labelled by folder" in summary, summary

        # ---------------------------------------------------------------- launch
        page.goto(base + "/runs/new")
        page.fill("#iterations", "8")
        page.fill("#queries_per_iteration", "6")
        page.fill("#images_per_query", "20")
        page.check("input[name=preset][value=cpu-small]")
        launched = time.monotonic()
        page.click("[data-testid=launch]")
        page.wait_for_selector("[data-testid=dashboard]")
        navigations: list[str] = []
        page.on("framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
        run_id = int(page.get_attribute("[data-testid=dashboard]", "data-run-id") or 0)

        # ---------------------------------------------------------------- live, no reload
        page.wait_for_selector("[data-testid=query-row]", timeout=240_000)
        first_query = time.monotonic() - launched
        page.wait_for_selector("#charts-empty", state="hidden", timeout=300_000)
        first_curve = time.monotonic() - launched
        assert navigations == [], navigations  # everything arrived over SSE + htmx
        assert page.inner_text("[data-testid=stream-state]").strip() != "connecting…"
        page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"), full_page=False)
        (ARTIFACTS / "latency.json").write_text(json.dumps({
            "preset": "cpu-small", "vocabulary": 150,
            "train_steps_per_iteration": settings.max_train_steps,
            "launch_to_first_query_s": round(first_query, 1),
            "launch_to_first_curve_point_s": round(first_curve, 1),
        }, indent=1))

        # ---------------------------------------------------------------- veto the favourite
        with factory() as session:
            concepts = list(session.scalars(select(Concept).where(Concept.run_id == run_id)))
        best = max((c for c in concepts if c.probability is not None),
                   key=lambda c: c.probability or 0.0)
        page.fill("[data-testid=leaderboard-search]", best.lemma)
        row = page.locator(
            f"[data-testid=leaderboard-row][data-concept-index='{best.concept_index}']")
        row.wait_for()
        row.locator("[data-testid=veto-one]").click()
        row = page.locator(
            f"[data-testid=leaderboard-row][data-concept-index='{best.concept_index}']")
        row.locator("[data-testid=vetoed-badge]").wait_for()
        with factory() as session:
            vetoed_at = session.scalars(select(Veto).where(Veto.run_id == run_id)).one().iteration
        wait_for(factory, run_id, lambda r: _applied(factory, run_id), timeout=240, log=log)
        wait_for(factory, run_id, lambda r: r.iteration >= vetoed_at + 2, timeout=300, log=log)
        page.screenshot(path=str(ARTIFACTS / "dashboard-veto.png"), full_page=False)
        with factory() as session:
            applied_event = session.scalars(select(Event).where(
                Event.run_id == run_id, Event.kind == "veto-applied")).one()
            first_after = int(applied_event.payload["iteration"])
            later = set(session.scalars(select(Query.concept_index).where(
                Query.run_id == run_id, Query.iteration >= first_after)))
            vetoed_row = session.scalars(select(Concept).where(
                Concept.run_id == run_id, Concept.concept_index == best.concept_index)).one()
        assert best.concept_index not in later  # never sampled again
        assert vetoed_row.probability == 0.0 and vetoed_row.vetoed
        # The veto was a negative observation: its nearest neighbours lost predicted reward,
        # and sampling probability against what they would have had were the concept only taken
        # out of sampling (``negative_ratio``: their probability after the veto over that).
        # Their probability after over before is recorded, not asserted: the vetoed favourite's
        # freed share and tier changes move it either way (benchmarks/veto_effect.py: 44 of 60
        # seeds fell in this vocabulary, while the negative observation lowered it in 60 of 60).
        payload = applied_event.payload
        shift = payload["neighbours"]
        assert len(shift) == 5
        assert np.mean([n["mu_before"] - n["mu_after"] for n in shift]) > 0, shift
        assert all("p_removed_only" in n for n in shift)
        assert payload["negative_ratio"] < 1.0, payload
        assert payload["negative_ratio"] == pytest.approx(
            sum(n["p_after"] for n in shift) / sum(n["p_removed_only"] for n in shift))
        ratio = sum(n["p_after"] for n in shift) / sum(n["p_before"] for n in shift)
        (ARTIFACTS / "veto-shift.json").write_text(json.dumps(
            {"neighbours_probability_ratio": ratio, **payload}, indent=1))
        # ... and the dashboard shows that shift in the event log.
        effect = page.locator("[data-testid=veto-effect]").first
        effect.wait_for(timeout=30_000)
        assert shift[0]["lemma"] in effect.inner_text()

        # ---------------------------------------------------------------- pause, resume, cancel
        page.click("[data-testid=control-pause]")
        run = wait_for(factory, run_id, lambda r: r.status == RunStatus.PAUSED, timeout=300,
                       log=log)
        page.wait_for_selector("[data-testid=run-status-badge]:has-text('paused')")
        paused_at = run.iteration
        page.click("[data-testid=control-resume]")
        wait_for(factory, run_id, lambda r: r.status == RunStatus.RUNNING, timeout=60, log=log)
        page.wait_for_selector("[data-testid=run-status-badge]:has-text('running')")
        wait_for(factory, run_id, lambda r: r.phase == "train" and r.iteration > paused_at,
                 timeout=240, log=log)
        page.click("[data-testid=control-cancel]")
        stopped = time.monotonic()
        wait_for(factory, run_id, lambda r: r.status == RunStatus.CANCELLED, timeout=30,
                 log=log)
        assert time.monotonic() - stopped < 30
        page.wait_for_selector("[data-testid=run-status-badge]:has-text('cancelled')")
        assert navigations == [], navigations
        engine.dispose()
        with factory() as session:
            assert session.get(Run, run_id) is not None


def _applied(factory, run_id: int) -> bool:
    with factory() as session:
        return all(v.applied for v in session.scalars(select(Veto).where(Veto.run_id == run_id)))
