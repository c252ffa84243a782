#!/usr/bin/env bash
# Fuzzes what reads users' bytes with libFuzzer, built by clang with ASan and
# UBSan: the runtime's readers (plans, safetensors, prompts files, the
# tokenizer) in build-fuzz (runtime only: no MLIR, no CUDA), and the config
# importer (config.json, moe-opt's import) in build-fuzz-config (the
# compiler's configuration by clang 22; only that target is built):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: plan safetensors prompts tokenizer config (default: all, 60 s
# each). Each starts from its seed corpus (test/fuzz/CMakeLists.txt,
# test/fuzz/config/CMakeLists.txt) and keeps what it finds in
# BUILD/corpus/TARGET; a crash stops it, leaves the input in BUILD/artifacts/
# and makes the script exit 1.
set -euo pipefail
seconds=${1:-60}
shift || true
targets=("${@:-plan safetensors prompts tokenizer config}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

runtime_built=no
config_built=no
status=0
for target in ${targets[@]}; do
  if [ "$target" = config ]; then
    build=$root/build-fuzz-config
    [ $config_built = yes ] ||
      MOE_FUZZ=ON MOE_BUILD_COMPILER=ON MOE_ENABLE_CUDA=OFF MOE_BUILD_DIR=$build \
        MOE_BUILD_TARGETS=moe-fuzz-config bash "$root/scripts/bootstrap.sh"
    config_built=yes
  else
    build=$root/build-fuzz
    [ $runtime_built = yes ] ||
      MOE_FUZZ=ON MOE_BUILD_COMPILER=OFF MOE_ENABLE_CUDA=OFF MOE_BUILD_DIR=$build \
        bash "$root/scripts/bootstrap.sh"
    runtime_built=yes
  fi
  mkdir -p "$build/artifacts" "$build/corpus/$target"
  # The seeds test's command: its options (a dictionary), then the seeds,
  # copied in because libFuzzer grows corpus directories; named by content,
  # as libFuzzer names its finds (the models' seeds are all config.json).
  command=$(ctest --test-dir "$build" -R "fuzz/$target-seeds" --show-only=json-v1 |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["tests"]; print(" ".join(a for a in t[0]["command"][1:] if a != "-runs=0") if t else "")')
  options=()
  for word in $command; do
    if [[ $word == -* ]]; then
      options+=("$word")
    else
      cp "$word" "$build/corpus/$target/$(sha1sum < "$word" | cut -c1-40)"
    fi
  done
  echo "fuzz: $target for ${seconds}s (log: $build/$target.log)"
  if ! "$build/bin/moe-fuzz-$target" "${options[@]}" -max_total_time="$seconds" \
      -max_len=65536 -rss_limit_mb=4096 \
      -artifact_prefix="$build/artifacts/$target-" \
      "$build/corpus/$target" > "$build/$target.log" 2>&1; then
    echo "fuzz: $target failed: $(grep -m1 -E 'ERROR|runtime error|deadly|config import fuzz' "$build/$target.log")"
    status=1
  fi
  tail -1 "$build/$target.log"
done
exit $status
