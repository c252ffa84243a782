#!/usr/bin/env bash
# Makes the plans of the golden fixtures, test/golden/<model>/*.moeplan, with
# moe-opt. They are committed so that the runtime's tests run in a build
# without the compiler. With --check, compares what moe-opt makes now with
# the committed plans instead (a test of the compiler build).
#
#   scripts/golden-plans.sh [--check] [MOE_OPT]   (default build/bin/moe-opt)
#
#   resident.moeplan    as imported: every weight and all KV on the GPU
#   small-card.moeplan  planned for a 2 MiB card: B 2, attention micro-batch
#                       1, experts streamed
#   streamed.moeplan    (some models) budgets at which the planner streams
#                       experts and keeps most KV in host memory (not
#                       tiny-minimax's: its lightning states, and so its KV,
#                       stay on the GPU)
#   host-attention.moeplan
#                       (softmax-attention models) the small card with a
#                       host that attends half of the sequences in decode
#                       (CPU attention share 0.5), their KV in host memory
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check=false
if [ "${1:-}" = --check ]; then
  check=true
  shift
fi
moe_opt=${1:-$root/build/bin/moe-opt}
card=$root/test/Transforms/Inputs/small-card.json
card_with_host=$root/test/Transforms/Inputs/small-card-host.json
declare -A streamed_gpu_gib=(
  [tiny-mixtral]=0.0012 [tiny-qwen2-moe]=0.0006 [tiny-deepseek-v2]=0.0008
  [tiny-minimax-partial-rope]=0.001)
declare -A host_attention_gpu_gib=(
  [tiny-mixtral]=0.001 [tiny-qwen2-moe]=0.0006 [tiny-qwen3-moe]=0.0008
  [tiny-gpt-oss]=0.0008)

out=$root/test/golden
if $check; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
else
  rm -f "$out"/*/*.moeplan
fi

plan() { # model, plan name, GPU budget in GiB[, profile, more options]
  "$moe_opt" "$root/test/golden/$1" -o /dev/null \
    "--moe-plan=profile=${4:-$card} gpu-mem=$3 prompt-len=24 gen-len=8 ${5:-}output=$out/$1/$2.moeplan"
}

for fixture in "$root"/test/golden/*/golden.json; do
  model=$(basename "$(dirname "$fixture")")
  mkdir -p "$out/$model"
  "$moe_opt" "$root/test/golden/$model" -o /dev/null \
    "--moe-export-plan=output=$out/$model/resident.moeplan"
  plan "$model" small-card 0.002
  if [ -n "${streamed_gpu_gib[$model]:-}" ]; then
    plan "$model" streamed "${streamed_gpu_gib[$model]}"
  fi
  if [ -n "${host_attention_gpu_gib[$model]:-}" ]; then
    plan "$model" host-attention "${host_attention_gpu_gib[$model]}" \
      "$card_with_host" "host-attention=0.5 "
  fi
done

$check || exit 0
stale=0
# Both ways: a plan moe-opt makes that differs or is missing, and a
# committed plan it no longer makes.
for made in "$out"/*/*.moeplan; do
  committed=$root/test/golden/${made#"$out"/}
  if ! cmp -s "$made" "$committed"; then
    echo "stale or missing: ${committed#"$root"/}" >&2
    stale=1
  fi
done
for committed in "$root"/test/golden/*/*.moeplan; do
  if [ ! -f "$out/${committed#"$root"/test/golden/}" ]; then
    echo "no longer made: ${committed#"$root"/}" >&2
    stale=1
  fi
done
if ((stale)); then
  echo "the committed golden plans are not what moe-opt makes now; remake them:" >&2
  echo "  $root/scripts/golden-plans.sh $moe_opt" >&2
  exit 1
fi
echo "every golden plan is what moe-opt makes now"
