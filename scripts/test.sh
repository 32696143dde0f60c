#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite.
#
#   bash scripts/test.sh                        every stage below, in order (what CI runs)
#   bash scripts/test.sh --suite integration    only the main build; arguments go to its `meson test`
#   LIMPET_QUICK=1 bash scripts/test.sh         only the main build, every test
#   SANITIZE=1 bash scripts/test.sh [ARGS]      only an ASan + UBSan build in build-asan/, every test
#
# Stages (LIMPET_STAGES="main asan fuzz package e2e" picks some; that is also the order they run in):
#   main     build/ (GCC, debugoptimized, -Werror): unit and integration tests (all of `meson
#            test` but the e2e suite, which is the e2e stage; without an e2e stage, all of it)
#   asan     build-asan/ (GCC, ASan + UBSan): the integration tests that drive the parsers and the
#            proxy; the integration harness fails a test on any sanitizer report
#   fuzz     build-fuzz/ (clang, -Werror, -Dfuzz=true: coverage, ASan + UBSan on every target):
#            the unit tests (clang's compile of every file, under its sanitizers), every seed
#            corpus and regression, then each fuzz target for LIMPET_FUZZ_SECONDS (default 20,
#            seed LIMPET_FUZZ_SEED, default 1), two targets at a time
#   package  scripts/build-deb.sh: dpkg-buildpackage in a copy of the tree, then the .deb's
#            contents, its binary against its example config, lintian
#   e2e      build/: real Socket.IO 4.8 clusters with the Redis adapter, SocketCluster, 2 and 3
#            limpets behind HAProxy (tests/e2e), once nothing else runs
#
# After main's build, the asan, fuzz and package builds run one after the other in the
# background at the lowest CPU priority (nice 19), beside main's and asan's tests (which mostly
# wait on sockets and timers): the tests keep the CPU they ask for, the builds take what is left.
# Each stage waits for its own build, then builds again (a no-op, unless that background build
# failed: its errors then show in the stage itself). LIMPET_PREBUILD=0 turns this off; the
# background log is build/prebuild.log.
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
stages=(${LIMPET_STAGES:-main asan fuzz package e2e})
later=()  # the stages after main, built in the background during main's tests

# setup DIR [OPTIONS...]: configure DIR, or reconfigure it with OPTIONS if it exists and was
# configured otherwise (a reconfigure rewrites the compile commands: ninja would build it all
# again). DIR/test-sh-setup remembers the compiler and options it was last configured with.
setup() {
  local dir=$1
  shift
  local wanted="${CC:-} ${CXX:-} $*"
  if [[ -f "$dir/build.ninja" && -f "$dir/test-sh-setup" && $(cat "$dir/test-sh-setup") == "$wanted" ]]; then
    return 0
  fi
  if [[ -f "$dir/build.ninja" ]]; then
    meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@"
  else
    meson setup "$dir" "$@"
  fi
  echo "$wanted" >"$dir/test-sh-setup"
}

build() { ninja -C "$1" ${JOBS:+-j "$JOBS"} "${@:2}"; }

stage_done() { timings+=("$1 $(($SECONDS - $2))s"); }

# The unit tests: everything but the integration and e2e suites (most unit tests carry no suite).
unit_only=(--no-suite integration --no-suite e2e)

# ASan + UBSan at -O1 (what the sanitizers recommend; GCC builds the toml11-heavy loader a third
# faster than at -O2). No -Werror: GCC's optimizer warnings change under -fsanitize.
asan_options=(-Ddebug=true -Doptimization=1 -Db_sanitize=address,undefined -Db_lundef=false)

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
prebuilt="${BUILD_DIR:-build}/prebuilt"  # a file per stage prepared in the background
# prebuild STAGE...: prepare those stages one after the other, in the background, at nice 19
# (renice on the subshell: every compiler it starts inherits it). The package's whole check runs
# there; its output and exit status are kept for stage_package.
prebuild() {
  local log="${BUILD_DIR:-build}/prebuild.log"
  echo "test.sh: building for ${*} in the background (nice 19; $log)" >&2
  rm -rf "$prebuilt"
  mkdir -p "$prebuilt"
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    for s in "$@"; do
      rc=0
      if [[ $s == package ]]; then
        prepare_package >"$prebuilt/package.log" 2>&1 || rc=$?
      else
        "prepare_$s" || rc=$?  # the stage builds again and shows the error
      fi
      echo "$rc" >"$prebuilt/$s"
    done
  ) >"$log" 2>&1 &
  prebuild_pid=$!
}

# A stage that fails ends the script: the background builds end with it.
stop_prebuild() {
  if [[ -n $prebuild_pid ]]; then
    pkill -TERM -P "$prebuild_pid" 2>/dev/null || true
    kill "$prebuild_pid" 2>/dev/null || true
  fi
}
trap stop_prebuild EXIT

# wait_prebuilt STAGE: until the background is done with STAGE (or has ended); "all": all of it.
wait_prebuilt() {
  [[ -n $prebuild_pid ]] || return 0
  if [[ $1 == all ]]; then
    wait "$prebuild_pid" || true
    prebuild_pid=""
    return 0
  fi
  while [[ ! -e $prebuilt/$1 ]] && kill -0 "$prebuild_pid" 2>/dev/null; do sleep 1; done
}

in_stages() {
  local s
  for s in "${stages[@]}"; do [[ $s == "$1" ]] && return 0; done
  return 1
}

# main runs every test but the e2e suite when an e2e stage follows (the e2e runs last, on a
# machine no background build competes with: its sessions ride on 100 ms store timeouts).
stage_main() {
  local t=$SECONDS builddir="${BUILD_DIR:-build}"
  local tests=("$@")
  if [[ $# -eq 0 ]] && in_stages e2e; then tests=(--no-suite e2e); fi
  echo "test.sh: [main] $builddir: GCC, -Werror, meson test ${tests[*]}" >&2
  setup "$builddir" --buildtype=debugoptimized -Dwerror=true
  build "$builddir"
  if [[ ${#later[@]} -gt 0 && ${LIMPET_PREBUILD:-1} != 0 ]]; then prebuild "${later[@]}"; fi
  meson test -C "$builddir" --print-errorlogs "${tests[@]}"
  stage_done main "$t"
}

stage_e2e() {
  local t=$SECONDS builddir="${BUILD_DIR:-build}"
  wait_prebuilt all
  echo "test.sh: [e2e] $builddir: the Socket.IO, SocketCluster and scale-out suites" >&2
  setup "$builddir" --buildtype=debugoptimized -Dwerror=true
  build "$builddir"
  meson test -C "$builddir" --print-errorlogs --logbase testlog-e2e --suite e2e
  stage_done e2e "$t"
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
asan_integration=(cli http balance backpressure client-errors upstream-failures exchange websocket lifecycle tls session-store proxy-protocol faults upgrade signals discovery http2)

stage_asan() {
  local t=$SECONDS
  wait_prebuilt asan
  echo "test.sh: [asan] build-asan: GCC, ASan + UBSan, integration ${asan_integration[*]}" >&2
  prepare_asan
  sanitizer_env
  meson test -C build-asan --print-errorlogs --no-rebuild "${asan_integration[@]/#/integration-}"
  stage_done asan "$t"
}

stage_fuzz() {
  local t=$SECONDS
  wait_prebuilt fuzz
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
  wait_prebuilt package
  echo "test.sh: [package] build-deb: dpkg-buildpackage -b (nocheck noopt), then the .deb checked" >&2
  if [[ -f $prebuilt/package ]]; then  # built and checked in the background
    cat "$prebuilt/package.log" >&2
    [[ $(cat "$prebuilt/package") == 0 ]] || { echo "test.sh: [package] scripts/build-deb.sh failed" >&2; exit 1; }
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
  stages=(main)
  stage_main "$@"
  exit 0
fi

seen_main=0
for s in "${stages[@]}"; do
  case "$s" in
    main) seen_main=1 ;;
    asan|fuzz|package) if [[ $seen_main == 1 ]]; then later+=("$s"); fi ;;
    e2e) ;;
    *) echo "test.sh: unknown stage $s (main asan fuzz package e2e)" >&2; exit 2 ;;
  esac
done
for s in "${stages[@]}"; do "stage_$s"; done
echo "test.sh: all stages passed in $((SECONDS - started))s: ${timings[*]}" >&2
