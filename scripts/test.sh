#!/usr/bin/env bash
# Builds everything and runs every test (lit + gtest) through ctest. GPU tests
# skip, visibly, on a machine without a GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

ctest --test-dir "$MOE_BUILD" --output-on-failure -j "$(nproc)"
