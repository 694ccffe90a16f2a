#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: the Debian packages (WordNet,
# the offline image corpus) and a Python virtual environment in .venv with the pinned packages.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(wordnet-base wordnet-sense-index openclipart-png openclipart-svg tuxpaint-stamps-default)
command -v npm >/dev/null || DEB_PACKAGES+=(nodejs npm)
if [[ "${IE_WITH_BROWSER:-0}" == "1" ]]; then DEB_PACKAGES+=(chromium); fi

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
  echo "setup: installing Python packages (torch first: the pinned build, ~5 GB)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torch before the rest, so nothing pulls another build of it.
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Front-end libraries (htmx, its SSE extension, Chart.js) from the npm lock file.
bash scripts/vendor-static.sh
