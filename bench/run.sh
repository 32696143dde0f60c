#!/usr/bin/env bash
# bench/run.sh: limpet side by side with nginx and HAProxy (issue 6), one command.
#
#   bench/run.sh                 full run (~20 min): results in bench/results/<date>.md, table
#                                copied into bench/README.md
#   bench/run.sh --quick         one short round of everything (< 3 min), README left alone
#   bench/run.sh --limpet PATH   benchmark that binary instead of building build-bench/limpet
#   bench/run.sh --only http,ws  a subset: http, open, mallocs, config, ws, idle, wsnode, socketio
#   bench/run.sh --help          every option (of bench/lib/bench.py)
#
# It builds its own tools (the backend, wsload and the allocation counter) into
# build-bench/bench-tools with the compiler directly, so it does not depend on bench/meson.build,
# builds limpet in release mode in build-bench unless --limpet is given, then hands over to
# bench/lib/bench.py. Everything listens on and targets 127.0.0.1 only, and every load stops by
# itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-bench"
TOOLS="$BUILD/bench-tools"

die() {
  echo "bench/run.sh: $*" >&2
  exit 1
}

limpet=""
limpet_note=""
pass=()
while (($#)); do
  case "$1" in
    --limpet)
      [[ $# -ge 2 ]] || die "--limpet needs a path"
      limpet="$(realpath "$2")"
      limpet_note="given with --limpet $2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 "$ROOT/bench/lib/bench.py" --help
      ;;
    *)
      pass+=("$1")
      shift
      ;;
  esac
done

for tool in wrk nginx haproxy python3 node gcc g++ pkg-config; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install -y wrk nginx haproxy nodejs g++ pkg-config)"
done
pkg-config --exists libuv openssl || die "libuv and openssl headers needed (apt-get install -y libuv1-dev libssl-dev)"
# A WebSocket tunnel costs the proxy two descriptors; 9,000 tunnels need ~18,000.
if (($(ulimit -n) < 19500)); then
  ulimit -n 20000 2>/dev/null || echo "bench/run.sh: warning: fd limit $(ulimit -n); use --idle-tunnels N" >&2
fi

# --- tools: same warning flags as the project (warning_level=3, -Werror) ---------------------
bash "$ROOT/bench/lib/build_tools.sh" "$TOOLS"

# --- limpet: a release build of this tree unless one was given --------------------------------
if [[ -z "$limpet" ]]; then
  if [[ ! -f "$BUILD/build.ninja" ]]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dtests=false -Dbenchmarks=false >&2 ||
      die "meson setup failed; build limpet yourself and pass --limpet PATH"
  fi
  ninja -C "$BUILD" limpet >&2 || die "ninja -C $BUILD limpet failed; pass --limpet PATH to use another binary"
  limpet="$BUILD/limpet"
  limpet_note="release build of $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') in build-bench"
  if [[ -n "$(git -C "$ROOT" status --porcelain -- src include meson.build 2>/dev/null)" ]]; then
    limpet_note+=" with uncommitted changes in src/ or include/"
  fi
fi
[[ -x "$limpet" ]] || die "$limpet is not executable"

cmdline="bench/run.sh"
((${#pass[@]})) && cmdline+=" ${pass[*]}"
# On a shared machine other work (compiles, test suites) takes cores from the loads; run every
# process of the benchmark (proxies, backends, clients inherit it) at a higher priority when
# allowed. BENCH_NICE=0 turns this off.
prio=()
nice_level="${BENCH_NICE:--10}"
if [[ "$nice_level" != 0 ]] && nice -n "$nice_level" true 2>/dev/null; then
  prio=(nice -n "$nice_level")
fi
export BENCH_NICE_APPLIED="${prio[*]:-none}"
exec ${prio[@]+"${prio[@]}"} python3 "$ROOT/bench/lib/bench.py" --limpet "$limpet" --limpet-note "$limpet_note" \
  --wsload "$TOOLS/wsload" --backend-bin "$TOOLS/backend" --malloc-count "$TOOLS/malloc_count.so" \
  --command-line "$cmdline" ${pass[@]+"${pass[@]}"}
