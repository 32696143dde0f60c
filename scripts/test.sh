#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite.
#
#   bash scripts/test.sh                        every stage below, in order (what CI runs)
#   bash scripts/test.sh --suite integration    only the main build; arguments go to its `meson test`
#   LIMPET_QUICK=1 bash scripts/test.sh         only the main build, every test
#   SANITIZE=1 bash scripts/test.sh [ARGS]      only an ASan + UBSan build in build-asan/, every test
#
# Stages (LIMPET_STAGES="main clang asan fuzz" picks some):
#   main   build/ (GCC, debugoptimized, -Werror): unit, integration, e2e — all of `meson test`
#   clang  build-clang/ (clang, -Werror): unit tests
#   asan   build-asan/ (GCC, ASan + UBSan): unit tests and the integration tests that drive the
#          parsers and the proxy; the integration harness fails a test on any sanitizer report
#   fuzz   build-fuzz/ (clang, -Dfuzz=true): replay every seed corpus and regression, then fuzz
#          each target for LIMPET_FUZZ_SECONDS (default 20, seed LIMPET_FUZZ_SEED, default 1)
#
# Environment: BUILD_DIR (the main or SANITIZE build's directory), JOBS (ninja -j),
# LIMPET_SKIP_DEPS=1 to skip the package step. Exits non-zero at the first stage that fails; each
# build's log is in DIR/meson-logs/testlog.txt, the fuzz logs in build-fuzz/fuzz-artifacts/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh

started=$SECONDS
timings=()

# setup DIR [OPTIONS...]: configure DIR, or reconfigure it with OPTIONS if it exists.
setup() {
  local dir=$1
  shift
  if [[ -f "$dir/build.ninja" ]]; then
    meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@"
  else
    meson setup "$dir" "$@"
  fi
}

build() { ninja -C "$1" ${JOBS:+-j "$JOBS"} "${@:2}"; }

stage_done() { timings+=("$1 $(($SECONDS - $2))s"); }

# The unit tests: everything but the integration and e2e suites (most unit tests carry no suite).
unit_only=(--no-suite integration --no-suite e2e)

# ASan + UBSan at -O1 (what the sanitizers recommend; GCC builds the toml11-heavy loader a third
# faster than at -O2). No -Werror: GCC's optimizer warnings change under -fsanitize.
asan_options=(--buildtype=debugoptimized -Doptimization=1 -Db_sanitize=address,undefined -Db_lundef=false)

# Sanitizer reports must fail the test that triggers them: UBSan only prints by default.
sanitizer_env() {
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
}

stage_main() {
  local t=$SECONDS builddir="${BUILD_DIR:-build}"
  echo "test.sh: [main] $builddir: GCC, -Werror, meson test $*" >&2
  setup "$builddir" --buildtype=debugoptimized -Dwerror=true
  build "$builddir"
  meson test -C "$builddir" --print-errorlogs "$@"
  stage_done main "$t"
}

stage_sanitize_only() {  # SANITIZE=1: the old single-build mode, every test (or ARGS)
  local builddir="${BUILD_DIR:-build-asan}"
  echo "test.sh: [asan] $builddir: ASan + UBSan, meson test $*" >&2
  setup "$builddir" "${asan_options[@]}"
  build "$builddir"
  sanitizer_env
  meson test -C "$builddir" --print-errorlogs "$@"
}

stage_clang() {
  local t=$SECONDS
  echo "test.sh: [clang] build-clang: clang, -Werror, unit tests" >&2
  CC=clang CXX=clang++ setup build-clang --buildtype=debugoptimized -Dwerror=true
  build build-clang
  meson test -C build-clang --print-errorlogs "${unit_only[@]}"
  stage_done clang "$t"
}

# The integration tests that run the parsers, the exchange, tunnels and TLS under the sanitizers.
# Left out: ops (reload and drain timing, 30 s alone), status-page (headless Chromium), health
# (probe timing), and e2e (900 Node clients): they add minutes and no parser or proxy path the
# ones below do not take.
asan_integration=(cli http balance backpressure client-errors upstream-failures exchange websocket lifecycle tls session-store proxy-protocol faults upgrade signals discovery)

stage_asan() {
  local t=$SECONDS
  echo "test.sh: [asan] build-asan: GCC, ASan + UBSan, unit tests + integration ${asan_integration[*]}" >&2
  setup build-asan "${asan_options[@]}" -Dbenchmarks=false
  build build-asan
  sanitizer_env
  meson test -C build-asan --print-errorlogs "${unit_only[@]}"
  meson test -C build-asan --print-errorlogs --no-rebuild "${asan_integration[@]/#/integration-}"
  stage_done asan "$t"
}

stage_fuzz() {
  local t=$SECONDS
  echo "test.sh: [fuzz] build-fuzz: clang, -Dfuzz=true, corpora + regressions, then ${LIMPET_FUZZ_SECONDS:-20}s per target" >&2
  CC=clang CXX=clang++ setup build-fuzz --buildtype=debugoptimized -Dfuzz=true -Dtests=false -Dbenchmarks=false
  build build-fuzz fuzz
  meson test -C build-fuzz --print-errorlogs --no-rebuild --suite fuzz
  # A fixed seed: the same mutations every run, so a submission's CI does not fail on a bug that
  # chance happened to reach this time (LIMPET_FUZZ_SEED=0 is libFuzzer's random seed).
  FUZZ_ARGS="-seed=${LIMPET_FUZZ_SEED:-1} ${FUZZ_ARGS:-}" bash tests/fuzz/run.sh -t "${LIMPET_FUZZ_SECONDS:-20}" build-fuzz
  stage_done fuzz "$t"
}

if [[ "${SANITIZE:-}" == 1 ]]; then
  stage_sanitize_only "$@"
  exit 0
fi
if [[ $# -gt 0 || "${LIMPET_QUICK:-}" == 1 ]]; then
  stage_main "$@"
  exit 0
fi

stages=(${LIMPET_STAGES:-main clang asan fuzz})
for s in "${stages[@]}"; do
  case "$s" in
    main|clang|asan|fuzz) "stage_$s" ;;
    *) echo "test.sh: unknown stage $s (main clang asan fuzz)" >&2; exit 2 ;;
  esac
done
echo "test.sh: all stages passed in $((SECONDS - started))s: ${timings[*]}" >&2
