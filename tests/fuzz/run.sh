#!/usr/bin/env bash
# Runs the libFuzzer targets of a -Dfuzz=true build for a while each, one after the other, on a
# scratch copy of their seed corpus (tests/fuzz/corpus/<target>/ is never written to) plus their
# regressions, and prints one summary line per target. Exits non-zero if any target crashed, hung
# or leaked; the input that did it is kept in BUILD_DIR/fuzz-artifacts/.
#
#   bash tests/fuzz/run.sh [-t SECONDS] [BUILD_DIR] [TARGET...]
#
#   -t SECONDS   per target (default 20); libFuzzer's -max_total_time
#   BUILD_DIR    default build-fuzz
#   TARGET       request response engineio sticky_key websocket config differential
#                redis_reply proxy_protocol (default all)
#
# Environment: FUZZ_ARGS (more libFuzzer flags, e.g. "-jobs=2"), FUZZ_KEEP=1 keeps the scratch
# corpora (their path is printed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds=20
if [[ ${1:-} == -t ]]; then
  seconds=$2
  shift 2
fi
builddir="${1:-build-fuzz}"
[[ $# -gt 0 ]] && shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(request response engineio sticky_key websocket config differential redis_reply proxy_protocol)

declare -A dicts=(
  [request]=http [response]=http [differential]=http [sticky_key]=http
  [engineio]=engineio [websocket]=websocket [config]=toml [redis_reply]=resp [proxy_protocol]=proxy
)

artifacts="$builddir/fuzz-artifacts"
mkdir -p "$artifacts"
scratch="$(mktemp -d /tmp/limpet-fuzz.XXXXXX)"
if [[ ${FUZZ_KEEP:-} != 1 ]]; then trap 'rm -rf "$scratch"' EXIT; fi

failed=()
for t in "${targets[@]}"; do
  bin="$builddir/tests/fuzz/fuzz_$t"
  if [[ ! -x $bin ]]; then
    echo "fuzz: $bin not built (meson setup $builddir -Dfuzz=true with CC=clang CXX=clang++; ninja -C $builddir fuzz)" >&2
    exit 2
  fi
  dirs=("$scratch/$t" "$here/corpus/$t")
  [[ -d $here/regressions/$t ]] && dirs+=("$here/regressions/$t")
  mkdir -p "$scratch/$t" "$artifacts/$t"
  log="$artifacts/$t.log"
  rc=0
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$here/dict/${dicts[$t]}.dict" -artifact_prefix="$artifacts/$t/" ${FUZZ_ARGS:-} \
    "${dirs[@]}" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  if [[ $rc -eq 0 ]]; then
    echo "fuzz-$t: ${runs:-?} runs in ${seconds}s, cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?}, 0 crashes"
  else
    crash=$(ls -t "$artifacts/$t"/ 2>/dev/null | head -1)
    echo "fuzz-$t: FAILED (exit $rc) after ${runs:-?} runs, cov ${cov:-?} ft ${ft:-?}; input $artifacts/$t/$crash" >&2
    grep -E -A12 '^\*\*\* fuzz check failed|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:' "$log" |
      head -40 >&2 || true
    echo "fuzz-$t: reproduce with $bin $artifacts/$t/$crash (full log $log)" >&2
    failed+=("$t")
  fi
done
[[ ${FUZZ_KEEP:-} == 1 ]] && echo "fuzz: scratch corpora kept in $scratch"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
