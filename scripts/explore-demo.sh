#!/usr/bin/env bash
# The command-line example: install, build the offline web, make a small photo
# target from Tux Paint's stamps, and run a short exploration on CPU. Prints the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
target=${IE_DEMO_TARGET:-.cache/demo-target}
.venv/bin/ie demo-target --out "$target"
exec .venv/bin/ie explore --target "$target" --preset cpu-small --iterations "${IE_ITERATIONS:-3}" \
  --concrete-only "$@"
