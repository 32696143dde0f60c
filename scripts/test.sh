#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite.
#
#   bash scripts/test.sh                        every stage below, in order (what CI runs)
#   bash scripts/test.sh --suite integration    only the main build; arguments go to its `meson test`
#   LIMPET_QUICK=1 bash scripts/test.sh         only the main build, every test
#   SANITIZE=1 bash scripts/test.sh [ARGS]      only an ASan + UBSan build in build-asan/, every test
#
# Stages (LIMPET_STAGES="main asan fuzz package" picks some; that is also the order they run in):
#   main     build/ (GCC, debugoptimized, -Werror): unit, integration, e2e: all of `meson test`
#   asan     build-asan/ (GCC, ASan + UBSan): the integration tests that drive the parsers and the
#            proxy; the integration harness fails a test on any sanitizer report
#   fuzz     build-fuzz/ (clang, -Werror, -Dfuzz=true: coverage, ASan + UBSan on every target):
#            the unit tests (clang's compile of every file, under its sanitizers), every seed
#            corpus and regression, then each fuzz target for LIMPET_FUZZ_SECONDS (default 20,
#            seed LIMPET_FUZZ_SEED, default 1), two targets at a time
#   package  scripts/build-deb.sh: dpkg-buildpackage in a copy of the tree, then the .deb's
#            contents, its binary against its example config, lintian (build-deb/)
#
# While main's tests run (mostly waiting on sockets and timers), the later stages' builds run
# beside them at the lowest CPU priority (nice 19), so the tests keep the CPU they ask for and the
# builds take what is left; each later stage then builds again, which is a no-op unless that
# background build failed (its errors then show in the stage itself). LIMPET_PREBUILD=0 turns
# this off. The background log is build/prebuild.log.
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
later=()  # the stages after main, built in the background during main's tests

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

# Each later stage in two halves: prepare_X configures and builds (also run in the background,
# see above), stage_X prepares (again) and tests.
prepare_asan() {
  setup build-asan "${asan_options[@]}" -Dbenchmarks=false -Dtests=true
  build build-asan limpet
}

prepare_fuzz() {
  CC=clang CXX=clang++ setup build-fuzz --buildtype=debugoptimized -Dfuzz=true -Dwerror=true -Dbenchmarks=false
  build build-fuzz
}

prepare_package() {
  bash scripts/build-deb.sh build-deb
}

prebuild_pid=""
# prebuild STAGE...: prepare those stages one after the other, in the background, at nice 19
# (renice on the subshell: every compiler it starts inherits it). The package's whole check runs
# there; its output and exit status are kept for stage_package.
prebuild() {
  local log="${BUILD_DIR:-build}/prebuild.log"
  echo "test.sh: building for ${*} in the background (nice 19; $log)" >&2
  rm -f "$package_status"
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    for s in "$@"; do
      if [[ $s == package ]]; then
        rc=0
        prepare_package >"$package_log" 2>&1 || rc=$?
        echo "$rc" >"$package_status"
      else
        "prepare_$s" || true  # the stage builds again and shows the error
      fi
    done
  ) >"$log" 2>&1 &
  prebuild_pid=$!
}
package_log="${BUILD_DIR:-build}/build-deb.log"
package_status="${BUILD_DIR:-build}/build-deb.status"

# A stage that fails ends the script: the background builds end with it.
stop_prebuild() {
  if [[ -n $prebuild_pid ]]; then
    pkill -TERM -P "$prebuild_pid" 2>/dev/null || true
    kill "$prebuild_pid" 2>/dev/null || true
  fi
}
trap stop_prebuild EXIT

wait_prebuild() {
  if [[ -n $prebuild_pid ]]; then
    wait "$prebuild_pid" || true
    prebuild_pid=""
  fi
}

stage_main() {
  local t=$SECONDS builddir="${BUILD_DIR:-build}"
  echo "test.sh: [main] $builddir: GCC, -Werror, meson test $*" >&2
  setup "$builddir" --buildtype=debugoptimized -Dwerror=true
  build "$builddir"
  if [[ ${#later[@]} -gt 0 && ${LIMPET_PREBUILD:-1} != 0 ]]; then prebuild "${later[@]}"; fi
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

# The integration tests that run the parsers, the exchange, tunnels and TLS under the sanitizers.
# Left out: ops (reload and drain timing, 30 s alone), status-page (headless Chromium), health
# (probe timing), and e2e (900 Node clients): they add minutes and no parser or proxy path the
# ones below do not take. The unit tests run under clang's sanitizers in the fuzz stage.
asan_integration=(cli http balance backpressure client-errors upstream-failures exchange websocket lifecycle tls session-store proxy-protocol faults upgrade signals)

stage_asan() {
  local t=$SECONDS
  wait_prebuild
  echo "test.sh: [asan] build-asan: GCC, ASan + UBSan, integration ${asan_integration[*]}" >&2
  prepare_asan
  sanitizer_env
  meson test -C build-asan --print-errorlogs --no-rebuild "${asan_integration[@]/#/integration-}"
  stage_done asan "$t"
}

stage_fuzz() {
  local t=$SECONDS
  wait_prebuild
  echo "test.sh: [fuzz] build-fuzz: clang, -Werror, -Dfuzz=true: unit tests, corpora + regressions, then ${LIMPET_FUZZ_SECONDS:-20}s per target" >&2
  prepare_fuzz
  meson test -C build-fuzz --print-errorlogs --no-rebuild "${unit_only[@]}"
  # A fixed seed: the same mutations every run, so a submission's CI does not fail on a bug that
  # chance happened to reach this time (LIMPET_FUZZ_SEED=0 is libFuzzer's random seed).
  FUZZ_ARGS="-seed=${LIMPET_FUZZ_SEED:-1} ${FUZZ_ARGS:-}" \
    bash tests/fuzz/run.sh -t "${LIMPET_FUZZ_SECONDS:-20}" -j "${JOBS:-2}" build-fuzz
  stage_done fuzz "$t"
}

stage_package() {
  local t=$SECONDS
  wait_prebuild
  echo "test.sh: [package] build-deb: dpkg-buildpackage -b (nocheck noopt), then the .deb checked" >&2
  if [[ -f $package_status ]]; then  # built and checked in the background
    local rc
    rc=$(cat "$package_status")
    rm -f "$package_status"
    cat "$package_log" >&2
    [[ $rc == 0 ]] || { echo "test.sh: [package] scripts/build-deb.sh failed ($rc)" >&2; exit 1; }
  else
    prepare_package
  fi
  stage_done package "$t"
}

if [[ "${SANITIZE:-}" == 1 ]]; then
  stage_sanitize_only "$@"
  exit 0
fi
if [[ $# -gt 0 || "${LIMPET_QUICK:-}" == 1 ]]; then
  stage_main "$@"
  exit 0
fi

stages=(${LIMPET_STAGES:-main asan fuzz package})
seen_main=0
for s in "${stages[@]}"; do
  case "$s" in
    main) seen_main=1 ;;
    asan|fuzz|package) if [[ $seen_main == 1 ]]; then later+=("$s"); fi ;;
    *) echo "test.sh: unknown stage $s (main asan fuzz package)" >&2; exit 2 ;;
  esac
done
for s in "${stages[@]}"; do "stage_$s"; done
echo "test.sh: all stages passed in $((SECONDS - started))s: ${timings[*]}" >&2
