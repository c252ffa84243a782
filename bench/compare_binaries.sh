#!/usr/bin/env bash
# A candidate moe-run against its predecessor on the same card: each case's
# plan is run by the predecessor, then by the candidate, case after case (so
# that both see the machine in the same state), and bench/compare_results.py
# sets the two side by side, exiting 1 on a slowdown past 3%.
#
#   bench/compare_binaries.sh BEFORE_BIN AFTER_BIN PLANS OUT CASE...
#
# BEFORE_BIN and AFTER_BIN hold a moe-run each; PLANS holds each case's
# <case>.moeplan and <case>.explain.json (run_benchmarks.py plan); results go
# to OUT/{before,after}/<case>/. DECODE_STEPS (default 8) sets the decode
# window, TIMEOUT (default 540) the seconds allowed a run, BACKEND (default
# cuda) the backend.
set -euo pipefail
if (($# < 5)); then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
before=$1 after=$2 plans=$3 out=$4
shift 4
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for case in "$@"; do
  for side in before after; do
    dir=$out/$side/$case
    mkdir -p "$dir"
    cp "$plans/$case.moeplan" "$plans/$case.explain.json" "$dir/"
    bin=$before
    [ "$side" = after ] && bin=$after
    python3 "$root/bench/run_benchmarks.py" run --out "$dir" --bin "$bin" \
      --cases "$case" --decode-steps "${DECODE_STEPS:-8}" \
      --timeout "${TIMEOUT:-540}" --backend "${BACKEND:-cuda}"
  done
done
python3 "$root/bench/compare_results.py" "$out/before" "$out/after"
