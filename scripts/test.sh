#!/usr/bin/env bash
# The test suite: install, lint, type-check, then every test (slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser tests drive Debian's Chromium: setup installs it when this is 1.
IE_WITH_BROWSER=1 bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/mypy ie_engine app worker
.venv/bin/pytest -q -p no:cacheprovider "$@"
