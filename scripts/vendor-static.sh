#!/usr/bin/env bash
# Front-end libraries: installs the npm packages pinned in package.json and locked in
# package-lock.json (`npm ci`, in .cache/vendor-static/ so no node_modules/ lands in the tree) and
# copies the files the pages load into static/vendor/ (git-ignored). Safe to run again: skipped
# while the copies match the lock file. Needs Node.js and npm (Node 20 here).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=static/vendor/.installed-$(sha256sum package.json package-lock.json | sha256sum | cut -c1-16)
if [[ -f $stamp ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "vendor-static: npm is needed (Node.js 20)" >&2; exit 1; }
echo "vendor-static: installing the locked npm packages" >&2
work=.cache/vendor-static
mkdir -p "$work"
cp package.json package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

modules=$work/node_modules
mkdir -p static/vendor
cp "$modules/htmx.org/dist/htmx.min.js" static/vendor/htmx.min.js
cp "$modules/htmx-ext-sse/dist/sse.min.js" static/vendor/htmx-ext-sse.min.js
cp "$modules/chart.js/dist/chart.umd.min.js" static/vendor/chart.umd.min.js
rm -f static/vendor/.installed-*
touch "$stamp"
