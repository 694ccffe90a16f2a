"""The daily quota file shared by processes running at the same time.

Several real processes (``spawn`` start method) spend the same engine's quota through the same
JSON file at once; together they may spend exactly the quota, no request more, none lost.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from ie_engine.search.engines import QuotaExhaustedError, RateLimiter
from ie_engine.search.engines.politeness import DayCounter, utc_day

pytestmark = pytest.mark.timeout(60)

PROCESSES = 4
REQUESTS_EACH = 50
QUOTA = 120


def _spend(path: str, quota: int, requests: int, barrier: Any) -> tuple[int, int]:
    """One process: ``requests`` attempts on one limiter; (allowed, refused)."""
    limiter = RateLimiter("flickr", None, quota, counter=DayCounter(Path(path)))

    async def attempts() -> tuple[int, int]:
        allowed = refused = 0
        for _ in range(requests):
            try:
                await limiter.acquire()
            except QuotaExhaustedError:
                refused += 1
            else:
                allowed += 1
        return allowed, refused

    barrier.wait(timeout=30)  # every process starts spending at the same moment
    return asyncio.run(attempts())


def test_processes_spending_one_quota_at_once_spend_exactly_the_quota(tmp_path):
    path = tmp_path / "quota" / "flickr.json"
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            outcomes = pool.starmap(
                _spend, [(str(path), QUOTA, REQUESTS_EACH, barrier)] * PROCESSES)
    elapsed = time.monotonic() - started
    allowed = sum(a for a, _ in outcomes)
    refused = sum(r for _, r in outcomes)
    assert (allowed, refused) == (QUOTA, PROCESSES * REQUESTS_EACH - QUOTA), outcomes
    assert json.loads(path.read_text()) == {"day": utc_day(), "used": QUOTA}
    assert RateLimiter("flickr", None, QUOTA, counter=DayCounter(path)).exhausted()
    assert elapsed < 30


async def test_limiters_sharing_a_file_in_one_process_see_each_others_spending(tmp_path):
    path = tmp_path / "flickr.json"
    a = RateLimiter("flickr", None, 3, counter=DayCounter(path))
    b = RateLimiter("flickr", None, 3, counter=DayCounter(path))
    await a.acquire()
    await b.acquire()
    assert a.left_today() == b.left_today() == 1
    await b.acquire()
    assert a.exhausted()
    with pytest.raises(QuotaExhaustedError, match="spent its 3 requests"):
        await a.acquire()
    assert json.loads(path.read_text())["used"] == 3
