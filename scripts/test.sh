#!/usr/bin/env bash
# The test suite: install, lint, type-check, then every test (slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/mypy ie_engine
.venv/bin/pytest -q -p no:cacheprovider "$@"
