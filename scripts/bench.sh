#!/usr/bin/env bash
# The benchmark of issue 3 (README, "Benchmark"): installs what it needs (scripts/setup.sh),
# builds the offline web if it is missing, trains or reuses the cached base model, then runs
# explore / random / target-only / label-set on the built-in targets and prints whether each
# of the issue's targets holds. Arguments go to `ie bench`, for example:
#   bash scripts/bench.sh --quick                         # one target, under 10 minutes
#   bash scripts/bench.sh --target clipart-heldout        # the full mode, one target at a time
#   bash scripts/bench.sh --report-only --readme README.md  # table and plots from summary.json
# Caches (corpus, WordNet embeddings, base model, targets) live in IE_DATA_DIR
# (default ~/.cache/internet-explorer); results in runs/bench (runs/bench-quick for --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
data_dir=${IE_DATA_DIR:-$HOME/.cache/internet-explorer}
exec .venv/bin/ie --data-dir "$data_dir" bench "$@"
