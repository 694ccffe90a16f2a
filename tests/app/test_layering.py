"""The dependency rules of DESIGN.md, checked in a fresh interpreter.

The worker imports the store (and the upload services' pure parts, and ``app.services.live``
to announce events, and ``app.services.runs``) without the web framework, and no part of the app
imports torch or the engine's explorer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import app.settings, app.errors
import app.store.db, app.store.migrate, app.store.models, app.store.runs, app.store.uploads
import app.store.events, app.store.vetoes, app.store.concepts, app.store.images
import app.store.iterations, app.store.revocations, app.services.uploads
import app.services.live, app.services.runs, app.services.steering, app.services.dashboard
import app.services.images
store_only = {m: m in sys.modules for m in ("fastapi", "starlette", "torch")}
import app.main
whole_app = {m: m in sys.modules for m in ("torch", "ie_engine.explorer")}
print(json.dumps({"store_only": store_only, "whole_app": whole_app}))
"""


def test_store_needs_no_web_framework_and_app_no_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    assert loaded["store_only"] == {"fastapi": False, "starlette": False, "torch": False}
    assert loaded["whole_app"] == {"torch": False, "ie_engine.explorer": False}
