#!/usr/bin/env bash
# Runs the libFuzzer targets of a -Dfuzz=true build for a while each, one after the other, on a
# scratch copy of their seed corpus (tests/fuzz/corpus/<target>/ is never written to) plus their
# regressions, and prints one summary line per target. Exits non-zero if any target crashed, hung
# or leaked; the input that did it is kept in BUILD_DIR/fuzz-artifacts/.
#
#   bash tests/fuzz/run.sh [-t SECONDS] [-j N] [BUILD_DIR] [TARGET...]
#
#   -t SECONDS   per target (default 20); libFuzzer's -max_total_time
#   -j N         targets fuzzed at once (default 1): each target still gets SECONDS of one core
#   BUILD_DIR    default build-fuzz
#   TARGET       request response engineio sticky_key websocket config differential
#                redis_reply proxy_protocol (default all)
#
# Environment: FUZZ_ARGS (more libFuzzer flags, e.g. "-jobs=2"), FUZZ_KEEP=1 keeps the scratch
# corpora (their path is printed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds=20
parallel=1
while [[ ${1:-} == -t || ${1:-} == -j ]]; do
  if [[ $1 == -t ]]; then seconds=$2; else parallel=$2; fi
  shift 2
done
builddir="${1:-build-fuzz}"
[[ $# -gt 0 ]] && shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(request response engineio sticky_key websocket config differential redis_reply proxy_protocol http2)

declare -A dicts=(
  [request]=http [response]=http [differential]=http [sticky_key]=http
  [engineio]=engineio [websocket]=websocket [config]=toml [redis_reply]=resp [proxy_protocol]=proxy
  [http2]=http2
)

artifacts="$builddir/fuzz-artifacts"
mkdir -p "$artifacts"
scratch="$(mktemp -d /tmp/limpet-fuzz.XXXXXX)"
if [[ ${FUZZ_KEEP:-} != 1 ]]; then trap 'rm -rf "$scratch"' EXIT; fi

# fuzz_one TARGET: fuzz it for $seconds, print its summary line; non-zero if it failed.
fuzz_one() {
  local t=$1
  local bin="$builddir/tests/fuzz/fuzz_$t"
  local dirs=("$scratch/$t" "$here/corpus/$t")
  [[ -d $here/regressions/$t ]] && dirs+=("$here/regressions/$t")
  mkdir -p "$scratch/$t" "$artifacts/$t"
  local log="$artifacts/$t.log" rc=0 dict=()
  [[ -n ${dicts[$t]:-} ]] && dict=(-dict="$here/dict/${dicts[$t]}.dict")
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$artifacts/$t/" ${FUZZ_ARGS:-} \
    "${dirs[@]}" >"$log" 2>&1 || rc=$?
  local runs last cov ft corp
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  if [[ $rc -eq 0 ]]; then
    echo "fuzz-$t: ${runs:-?} runs in ${seconds}s, cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?}, 0 crashes"
    return 0
  fi
  local crash
  crash=$(ls -t "$artifacts/$t"/ 2>/dev/null | head -1)
  {
    echo "fuzz-$t: FAILED (exit $rc) after ${runs:-?} runs, cov ${cov:-?} ft ${ft:-?}; input $artifacts/$t/$crash"
    grep -E -A12 '^\*\*\* fuzz check failed|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:' "$log" |
      head -40 || true
    echo "fuzz-$t: reproduce with $bin $artifacts/$t/$crash (full log $log)"
  } >&2
  return 1
}

for t in "${targets[@]}"; do
  if [[ ! -x $builddir/tests/fuzz/fuzz_$t ]]; then
    echo "fuzz: $builddir/tests/fuzz/fuzz_$t not built (meson setup $builddir -Dfuzz=true with CC=clang CXX=clang++; ninja -C $builddir fuzz)" >&2
    exit 2
  fi
done
# Up to $parallel at once; each one's verdict lands in $scratch/TARGET.failed.
running=0
for t in "${targets[@]}"; do
  if (( running >= parallel )); then
    wait -n || true
    running=$((running - 1))
  fi
  # Failed until it says otherwise: a job that dies on its way (set -u, a signal) fails too.
  { touch "$scratch/$t.failed"; fuzz_one "$t" && rm -f "$scratch/$t.failed"; } &
  running=$((running + 1))
done
wait
failed=()
for t in "${targets[@]}"; do
  [[ -e $scratch/$t.failed ]] && failed+=("$t")
done
[[ ${FUZZ_KEEP:-} == 1 ]] && echo "fuzz: scratch corpora kept in $scratch"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
