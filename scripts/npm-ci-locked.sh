#!/usr/bin/env bash
# Installs the npm packages of DIR's package-lock.json into DIR/node_modules
# (npm ci), then runs COMMAND if one is given; does nothing while
# node_modules matches the lock, so callers can run it before every test.
#   npm-ci-locked.sh DIR [COMMAND ARGS...]
set -euo pipefail

dir="$1"
shift
stamp="$dir/node_modules/.moe-installed-lock.sha256"
lock_hash="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm-ci-locked.sh: npm not found; install Node.js and npm" >&2
  exit 1
fi
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
if (($#)); then
  "$@"
fi
echo "$lock_hash" > "$stamp"
echo "npm-ci-locked.sh: installed into $dir/node_modules"
