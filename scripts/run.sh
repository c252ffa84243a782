#!/usr/bin/env bash
# The main job: plan a model and generate answers for a file of prompts.
#   scripts/run.sh [CHECKPOINT_DIR [PROMPTS.jsonl]]
# With no argument it runs the embedded tiny Mixtral (test/golden/tiny-mixtral:
# HF config + safetensors) on models/demo-prompts.jsonl. Answers go to
# build/run/answers.jsonl, statistics to build/run/stats.json. Runs on the CPU
# backend (the CUDA backend is not written yet).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

checkpoint=${1:-$MOE_ROOT/test/golden/tiny-mixtral}
prompts=${2:-$MOE_ROOT/models/demo-prompts.jsonl}
out=$MOE_BUILD/run
mkdir -p "$out"
plan=$out/$(basename "$checkpoint").moeplan

"$MOE_BUILD/bin/moe-opt" "$checkpoint" --moe-print-summary \
  --moe-export-plan="output=$plan" -o /dev/null
"$MOE_BUILD/bin/moe-run" "$plan" --checkpoint "$checkpoint" \
  --prompts "$prompts" --output "$out/answers.jsonl" --stats "$out/stats.json"
echo "answers: $out/answers.jsonl (first 3 below); stats: $out/stats.json"
head -n 3 "$out/answers.jsonl"
