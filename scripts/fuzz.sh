#!/usr/bin/env bash
# Fuzzes what reads users' bytes (plans, safetensors, prompts files, the
# tokenizer) with libFuzzer, the runtime built by clang with ASan and UBSan
# in build-fuzz (runtime only: no MLIR, no CUDA):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: plan safetensors prompts tokenizer (default: all, 60 s each).
# Each starts from its seed corpus (test/fuzz/CMakeLists.txt) and keeps what
# it finds in build-fuzz/corpus/TARGET; a crash stops it, leaves the input
# in build-fuzz/artifacts/ and makes the script exit 1.
set -euo pipefail
seconds=${1:-60}
shift || true
targets=("${@:-plan safetensors prompts tokenizer}")
MOE_FUZZ=ON MOE_BUILD_COMPILER=OFF MOE_ENABLE_CUDA=OFF \
  MOE_BUILD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build-fuzz \
  source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
build=$MOE_BUILD
mkdir -p "$build/artifacts"
status=0
for target in ${targets[@]}; do
  mkdir -p "$build/corpus/$target"
  # libFuzzer grows corpus directories: the seeds are copied in.
  seeds=$(ctest --test-dir "$build" -R "fuzz/$target-seeds" --show-only=json-v1 |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["tests"]; print(" ".join(t[0]["command"][2:]) if t else "")')
  for seed in $seeds; do cp "$seed" "$build/corpus/$target/"; done
  echo "fuzz: $target for ${seconds}s (log: build-fuzz/$target.log)"
  if ! "$build/bin/moe-fuzz-$target" -max_total_time="$seconds" \
      -max_len=65536 -rss_limit_mb=4096 \
      -artifact_prefix="$build/artifacts/$target-" \
      "$build/corpus/$target" > "$build/$target.log" 2>&1; then
    echo "fuzz: $target failed: $(grep -m1 -E 'ERROR|runtime error|deadly' "$build/$target.log")"
    status=1
  fi
  tail -1 "$build/$target.log"
done
exit $status
