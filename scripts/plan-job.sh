#!/usr/bin/env bash
# Plans a checkpoint for one job on this machine: the prompts are read first
# (moe-run --describe-prompts: how many requests, each prompt's length and
# the new tokens each asks for) and the planner gets those distributions
# (moe-opt lengths=: the steady state of a refilled batch priced at their
# mean context, the context sized for the longest of each), B at most the
# number of requests. MOE_OBSERVED_ANSWERS names the answers of an earlier
# run of similar prompts: their lengths, where the model stopped, replace
# the new tokens asked. When no plan holds the longest request (the
# budgets, the model's positions), the job is planned for the longest
# prompt one does hold (a binary search over prompt-len, which cuts the
# distribution there): a longer request ends at the context (finish_reason
# context) or, when its prompt alone exceeds it, gets an error line from
# moe-run. Plans are cached in OUT_DIR by checkpoint, job lengths, profile
# and budgets.
#
#   scripts/plan-job.sh CHECKPOINT PROMPTS OUT_DIR PROFILE [MAX_NEW_TOKENS]
#
# MAX_NEW_TOKENS (default 128) is what a line without "max_new_tokens" asks
# for; give moe-run the same. MOE_GPU_MEM and MOE_HOST_MEM (GiB) set the
# budgets, MOE_BIN the folder holding moe-opt and moe-run (default
# build/bin). Prints the plan's path on stdout, what it did on stderr.
set -euo pipefail
if (($# < 4)); then
  sed -n '2,22p' "$0" >&2
  exit 2
fi
checkpoint=$1 prompts=$2 out=$3 profile=$4 new_tokens=${5:-128}
bin=${MOE_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/bin}
mkdir -p "$out"

observed=()
[[ -n ${MOE_OBSERVED_ANSWERS:-} ]] &&
  observed=(--observed-answers "$MOE_OBSERVED_ANSWERS")
shape=$("$bin/moe-run" --describe-prompts --prompts "$prompts" \
  --checkpoint "$checkpoint" --max-new-tokens "$new_tokens" "${observed[@]}")
field() { # the integer field $1 of the job's shape
  sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$shape"
}
requests=$(field requests) malformed=$(field malformed_requests)
prompt_len=$(field prompt_tokens_max) gen_len=$(field new_tokens_max)
gen_min=$(field new_tokens_min)
batch=$((requests - malformed))
if ((batch < 1)); then
  echo "moe: $prompts holds no request that can run ($requests lines)" >&2
  exit 1
fi

budgets=""
[[ -n ${MOE_GPU_MEM:-} ]] && budgets+=" gpu-mem=$MOE_GPU_MEM"
[[ -n ${MOE_HOST_MEM:-} ]] && budgets+=" host-mem=$MOE_HOST_MEM"
lengths=$out/lengths-$(sha256sum <<<"$shape" | cut -c1-16).json
echo "$shape" >"$lengths"
options_for() { # the planner's options for prompts of up to $1 tokens
  echo "profile=$profile lengths=$lengths prompt-len=$1 max-batch=$batch$budgets"
}
fits() { # whether a plan holds prompts of $1 tokens; writes it to $plan.tmp
  "$bin/moe-opt" "$checkpoint" --moe-plan="$(options_for "$1") output=$plan.tmp" \
    -o /dev/null >/dev/null 2>&1
}
options=$(options_for "$prompt_len")
key=$({ echo "$options"; cat "$checkpoint/config.json" "$profile"; } |
  sha256sum | cut -c1-16)
plan=$out/$(basename "$checkpoint")-$key.moeplan
if [[ -f $plan ]]; then
  echo "moe: the plan for this job is cached: $plan" >&2
  echo "$plan"
  exit 0
fi
asked="up to $gen_len"
((gen_min < gen_len)) && asked="$gen_min to $gen_len"
asked+=" new tokens"
[[ -n ${MOE_OBSERVED_ANSWERS:-} ]] &&
  asked+="; generation lengths as observed in $MOE_OBSERVED_ANSWERS"
echo "moe: planning for $requests requests (longest prompt $prompt_len" \
  "tokens, $asked): $options" >&2
if ! fits "$prompt_len"; then
  if ! fits 1; then # nothing fits: moe-opt says why
    "$bin/moe-opt" "$checkpoint" --moe-plan="$(options_for 1) output=$plan.tmp" \
      -o /dev/null >&2 || exit 1
  fi
  low=1 high=$prompt_len # low fits, high does not
  while ((high - low > 1)); do
    middle=$(((low + high) / 2))
    if fits "$middle"; then low=$middle; else high=$middle; fi
  done
  fits "$low"
  echo "moe: no plan holds a $prompt_len-token prompt and $gen_len new tokens" \
    "(the budgets or the model's positions); planned for prompts of up to" \
    "$low tokens: a longer request gets fewer new tokens (finish_reason" \
    "context) or, past the context, an error line" >&2
fi
"$bin/moe-opt" "$checkpoint" --moe-print-summary -o /dev/null >&2
mv "$plan.tmp" "$plan"
echo "$plan"
