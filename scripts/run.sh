#!/usr/bin/env bash
# The main job. With no argument it runs on the embedded tiny model.
#   scripts/run.sh [MODEL_DIR_OR_CONFIG_JSON]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

model=${1:-$MOE_ROOT/models/tiny-mixtral}
"$MOE_BUILD/bin/moe-opt" "$model" --moe-print-summary -o /dev/null
