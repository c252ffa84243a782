#!/usr/bin/env bash
# The main job: plan a model and generate answers for a file of prompts.
#   scripts/run.sh [CHECKPOINT_DIR [PROMPTS.jsonl]]
# With no argument it runs the embedded tiny Mixtral (test/golden/tiny-mixtral:
# HF config + safetensors) on models/demo-prompts.jsonl. Answers go to
# build/run/answers.jsonl, statistics to build/run/stats.json. A checkpoint
# given is planned for this machine and this job (scripts/plan-job.sh: the
# prompts' count and lengths; plans cached in build/run): the GPU is
# measured once into build/run/hardware-profile.json (a few minutes; without
# a GPU, or if that fails, the shipped H100 profile is used). MOE_PROFILE,
# MOE_GPU_MEM and MOE_HOST_MEM (GiB) override; MOE_MAX_NEW_TOKENS (default
# 128) is what a prompt line without "max_new_tokens" gets. moe-run uses the
# GPU when there is one; a stopped job resumes when run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

checkpoint=${1:-$MOE_ROOT/test/golden/tiny-mixtral}
prompts=${2:-$MOE_ROOT/models/demo-prompts.jsonl}
out=$MOE_BUILD/run
mkdir -p "$out"

# The hardware profile the planner reads.
machine_profile() {
  local measured=$out/hardware-profile.json
  if [[ -n ${MOE_PROFILE:-} ]]; then
    echo "$MOE_PROFILE"
  elif [[ -f $measured ]]; then
    echo "$measured"
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 &&
    { echo "moe: measuring this GPU for the planner (once, a few minutes)" >&2
      "$MOE_BUILD/bin/moe-run" --profile-hardware "$measured" >&2; }; then
    echo "$measured"
  else
    echo "$MOE_ROOT/models/hardware/h100-sxm-80gb.json"
  fi
}

new_tokens=${MOE_MAX_NEW_TOKENS:-128}
if [[ $# -ge 1 ]]; then
  plan=$(MOE_BIN=$MOE_BUILD/bin "$MOE_ROOT/scripts/plan-job.sh" \
    "$checkpoint" "$prompts" "$out" "$(machine_profile)" "$new_tokens")
else
  plan=$out/$(basename "$checkpoint").moeplan
  "$MOE_BUILD/bin/moe-opt" "$checkpoint" --moe-print-summary \
    --moe-export-plan="output=$plan" -o /dev/null
fi
# Exit 2: the job ran to its end, some requests have error lines.
status=0
"$MOE_BUILD/bin/moe-run" "$plan" --checkpoint "$checkpoint" \
  --prompts "$prompts" --output "$out/answers.jsonl" --stats "$out/stats.json" \
  --max-new-tokens "$new_tokens" || status=$?
((status == 0 || status == 2)) || exit "$status"
echo "answers: $out/answers.jsonl (first 3 below); stats: $out/stats.json"
head -n 3 "$out/answers.jsonl"
exit "$status"
