#!/usr/bin/env bash
# Plans a checkpoint for one job on this machine: the prompts are read first
# (moe-run --describe-prompts: how many requests, the longest prompt, the
# most new tokens asked) and the planner gets that shape: prompt-len and
# gen-len of the longest request, B at most the number of requests. Plans
# are cached in OUT_DIR by checkpoint, job shape, profile and budgets.
#
#   scripts/plan-job.sh CHECKPOINT PROMPTS OUT_DIR PROFILE [MAX_NEW_TOKENS]
#
# MAX_NEW_TOKENS (default 128) is what a line without "max_new_tokens" asks
# for; give moe-run the same. MOE_GPU_MEM and MOE_HOST_MEM (GiB) set the
# budgets, MOE_BIN the folder holding moe-opt and moe-run (default
# build/bin). Prints the plan's path on stdout, what it did on stderr.
set -euo pipefail
if (($# < 4)); then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
checkpoint=$1 prompts=$2 out=$3 profile=$4 new_tokens=${5:-128}
bin=${MOE_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/bin}
mkdir -p "$out"

shape=$("$bin/moe-run" --describe-prompts --prompts "$prompts" \
  --checkpoint "$checkpoint" --max-new-tokens "$new_tokens")
field() { # the integer field $1 of the job's shape
  sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$shape"
}
requests=$(field requests) malformed=$(field malformed_requests)
prompt_len=$(field prompt_tokens_max) gen_len=$(field new_tokens_max)
batch=$((requests - malformed))
if ((batch < 1)); then
  echo "moe: $prompts holds no request that can run ($requests lines)" >&2
  exit 1
fi

options="profile=$profile prompt-len=$prompt_len gen-len=$gen_len max-batch=$batch"
[[ -n ${MOE_GPU_MEM:-} ]] && options+=" gpu-mem=$MOE_GPU_MEM"
[[ -n ${MOE_HOST_MEM:-} ]] && options+=" host-mem=$MOE_HOST_MEM"
key=$({ echo "$options"; cat "$checkpoint/config.json" "$profile"; } |
  sha256sum | cut -c1-16)
plan=$out/$(basename "$checkpoint")-$key.moeplan
if [[ -f $plan ]]; then
  echo "moe: the plan for this job is cached: $plan" >&2
else
  echo "moe: planning for $requests requests (longest prompt $prompt_len" \
    "tokens, up to $gen_len new tokens): $options" >&2
  "$bin/moe-opt" "$checkpoint" --moe-print-summary \
    --moe-plan="$options output=$plan.tmp" -o /dev/null >&2
  mv "$plan.tmp" "$plan"
fi
echo "$plan"
