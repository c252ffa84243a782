#!/usr/bin/env bash
# The main job: plan a model and generate answers for a file of prompts.
#   scripts/run.sh [CHECKPOINT_DIR [PROMPTS.jsonl]]
# With no argument it runs the embedded tiny Mixtral (test/golden/tiny-mixtral:
# HF config + safetensors) on models/demo-prompts.jsonl. Answers go to
# build/run/answers.jsonl, statistics to build/run/stats.json. A checkpoint
# given is planned for the measured H100 profile (MOE_PROFILE, MOE_GPU_MEM and
# MOE_HOST_MEM in GiB override it); moe-run uses the GPU when there is one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

checkpoint=${1:-$MOE_ROOT/test/golden/tiny-mixtral}
prompts=${2:-$MOE_ROOT/models/demo-prompts.jsonl}
out=$MOE_BUILD/run
mkdir -p "$out"
plan=$out/$(basename "$checkpoint").moeplan

if [[ $# -ge 1 ]]; then
  options="profile=${MOE_PROFILE:-$MOE_ROOT/models/hardware/h100-sxm-80gb.json}"
  [[ -n ${MOE_GPU_MEM:-} ]] && options+=" gpu-mem=$MOE_GPU_MEM"
  [[ -n ${MOE_HOST_MEM:-} ]] && options+=" host-mem=$MOE_HOST_MEM"
  "$MOE_BUILD/bin/moe-opt" "$checkpoint" --moe-print-summary \
    --moe-plan="$options output=$plan" -o /dev/null
else
  "$MOE_BUILD/bin/moe-opt" "$checkpoint" --moe-print-summary \
    --moe-export-plan="output=$plan" -o /dev/null
fi
"$MOE_BUILD/bin/moe-run" "$plan" --checkpoint "$checkpoint" \
  --prompts "$prompts" --output "$out/answers.jsonl" --stats "$out/stats.json"
echo "answers: $out/answers.jsonl (first 3 below); stats: $out/stats.json"
head -n 3 "$out/answers.jsonl"
