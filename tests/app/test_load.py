"""Load on one run's dashboard over loopback (bounded: about a minute): 50 viewers of its event
stream while events are committed, readers of the page and its fragments, and bursts of veto
requests. Nothing is lost; the figures go to ``test-artifacts/load.json``
(``benchmarks/load_dashboard.py`` prints the same)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def load_module():
    spec = importlib.util.spec_from_file_location(
        "load_dashboard", ROOT / "benchmarks" / "load_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_fifty_viewers_and_veto_bursts_lose_no_event(tmp_path):
    bench = load_module()
    opts = bench.Options(seconds=40, viewers=50, readers=4, rate=10, burst=20, burst_every=5)
    figures = bench.run_load(opts, tmp_path / "data")
    out = ROOT / "test-artifacts" / "load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")

    assert figures["n_errors"] == 0, figures["errors"]
    assert figures["events_written"] == 400
    assert figures["events"] >= 400  # the writer's events and the vetoes' own
    assert figures["events_lost"] == 0
    assert figures["events_duplicated"] == 0 and figures["viewers_out_of_order"] == 0
    assert figures["event_delivery"]["n"] == 50 * 400
    assert figures["veto"]["n"] >= 3 * 20 and figures["page"]["n"] > 0
    assert figures["fragment"]["n"] > 0
