#!/usr/bin/env bash
# The web application on the embedded default, on one machine: installs everything
# (scripts/setup.sh), builds the offline web if it is missing, brings the store to the newest
# schema, then starts three processes and stops all three on Ctrl-C or SIGTERM:
#   - the offline web's search service   (ie corpus serve, 127.0.0.1:8765)
#   - one Celery worker on queues io,gpu (celery -A worker.celery_app worker)
#   - the web application                (uvicorn, http://127.0.0.1:8000)
# and prints the link that logs a browser in (the access token, see app/access.py).
# Everything lives under ./data (IE_DATA_DIR): the SQLite store, the filesystem broker's
# messages, uploads and run folders. No Redis or PostgreSQL is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
export IE_DATA_DIR=${IE_DATA_DIR:-$PWD/data}
host=${IE_HOST:-127.0.0.1}
port=${IE_PORT:-8000}
search_port=${IE_SEARCH_PORT:-8765}
export IE_SEARCH_URL=${IE_SEARCH_URL:-http://127.0.0.1:$search_port}

echo "run: checking the offline web in $IE_DATA_DIR/corpus (built once, a few minutes)" >&2
.venv/bin/ie --data-dir "$IE_DATA_DIR" corpus build >/dev/null
echo "run: checking the concept vocabulary's embeddings (computed once, with a progress bar)" >&2
.venv/bin/ie --data-dir "$IE_DATA_DIR" vocab embed >/dev/null
.venv/bin/python -m app.store.migrate
# The access token: IE_ACCESS_TOKEN when set, else one made once and kept in
# $IE_DATA_DIR/access-token (mode 0600); the app reads the same.
token=$(.venv/bin/python -m app.access)

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run: stopping" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # The worker finishes nothing it cannot resume: give everything 10 s, then make sure.
  for _ in $(seq 20); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

.venv/bin/ie --data-dir "$IE_DATA_DIR" corpus serve --port "$search_port" &
pids+=($!)
.venv/bin/celery -A worker.celery_app worker -Q io,gpu -c 1 --prefetch-multiplier 1 \
  -l info --without-gossip --without-mingle &
pids+=($!)
.venv/bin/uvicorn app.main:create_app --factory --host "$host" --port "$port" \
  --log-level warning &
pids+=($!)
echo "run: open http://$host:$port/login?token=$token"
echo "run: (the access token logs you in; Ctrl-C stops the app, the worker and the offline web)"
# Stop everything as soon as one of the three ends.
wait -n "${pids[@]}" || true
