#!/usr/bin/env bash
# Installs what the chat template parity test needs from the npm registry
# into test/runtime/chat/reference: @huggingface/jinja (the reference
# implementation) and packages that ship real chat templates (tokenizer
# packages' tokenizer_config.json, @huggingface/ollama-utils' map of Hub
# templates); then the chat templates of the llama.cpp release that
# node-llama-cpp ships as a git bundle (GPT-OSS's among them), unpacked into
# node_modules/.llama.cpp-templates. node-llama-cpp comes by `npm pack` and
# its pinned integrity, not as a dependency: installing it would bring its
# prebuilt binaries. Idempotent and quick: nothing is done while
# node_modules matches package-lock.json.
#
# After a change to the corpus generator or the packages, rewrite the
# committed fixtures (the cases that run without npm):
#   node test/runtime/chat/reference/make-references.mjs \
#     --fixtures test/runtime/chat/fixtures
set -euo pipefail

scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reference_dir="$(cd "$scripts/../test/runtime/chat/reference" && pwd)"
exec bash "$scripts/npm-ci-locked.sh" "$reference_dir" bash -c '
  set -euo pipefail
  package=node-llama-cpp@3.22.1
  integrity=sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw==
  templates="$1/node_modules/.llama.cpp-templates"
  work="$(mktemp -d)"
  trap "rm -rf \"$work\"" EXIT
  packed="$(cd "$work" && npm pack --json --silent "$package")"
  if ! grep -qF "\"integrity\": \"$integrity\"" <<<"$packed"; then
    echo "npm-jinja-references.sh: $package does not have its pinned integrity" >&2
    exit 1
  fi
  tar -xzf "$work"/node-llama-cpp-*.tgz -C "$work" package/llama/gitRelease.bundle
  git clone --quiet --bare "$work/package/llama/gitRelease.bundle" "$work/llama.cpp.git"
  rm -rf "$templates"
  mkdir "$templates"
  git --git-dir="$work/llama.cpp.git" archive HEAD:models/templates |
    tar -x -C "$templates"
' unpack "$reference_dir"
