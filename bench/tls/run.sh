#!/usr/bin/env bash
# bench/tls/run.sh: TLS termination, limpet vs nginx with the same certificate (issue 5), and HTTP/2
# (h2load, also against HAProxy: --loads h2; issue 13), one command.
#
#   bench/tls/run.sh                  release limpet of the working tree, built in build-bench-tls/;
#                                     1 and 2 workers, 3 rounds; ~10 min; writes
#                                     bench/results/tls-<date>.md (+ .json)
#   bench/tls/run.sh --rev HEAD       build the committed tree instead (a `git archive` of REV in
#                                     build-bench-tls/src-<rev>): immune to half-done edits of others
#   bench/tls/run.sh --limpet PATH    another limpet binary
#   bench/tls/run.sh --key rsa --workers 2 --rounds 5 --duration 10 --loads full,keepalive
#   bench/tls/run.sh --help           every option (of bench/tls/tls_bench.py)
#
# Builds the bench backend (bench/backends/backend.c) and the handshake client
# (bench/tls/hsload.c) into build-bench-tls/tools, and limpet unless --limpet is given, then runs
# tls_bench.py. Everything listens on and targets 127.0.0.1; every load stops by itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$ROOT/build-bench-tls"
TOOLS="$BUILD/tools"

die() {
  echo "bench/tls/run.sh: $*" >&2
  exit 1
}

limpet=""
limpet_note=""
rev=""
args=()
while (($#)); do
  case "$1" in
    --limpet)
      [[ $# -ge 2 ]] || die "--limpet needs a path"
      limpet="$(realpath "$2")"
      limpet_note="given with --limpet $2"
      shift 2
      ;;
    --rev)
      [[ $# -ge 2 ]] || die "--rev needs a git revision"
      rev="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 "$ROOT/bench/tls/tls_bench.py" --help
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done

for tool in wrk nginx haproxy h2load openssl python3 gcc pkg-config git; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install -y wrk nginx haproxy nghttp2-client openssl gcc pkg-config git)"
done
pkg-config --exists libuv openssl || die "libuv and openssl headers needed (apt-get install -y libuv1-dev libssl-dev)"

# --- tools: same warning flags as the project (warning_level=3, -Werror) ---------------------
mkdir -p "$TOOLS"
# shellcheck source=bench/lib/tools.sh
source "$ROOT/bench/lib/tools.sh"
build_tool "$TOOLS/backend" "gcc -std=c11 -O2 -pthread" "libuv libcrypto" "$ROOT/bench/backends/backend.c"
build_tool "$TOOLS/hsload" "gcc -std=c11 -O2" "openssl" "$ROOT/bench/tls/hsload.c"

# --- limpet: a release build unless one was given ---------------------------------------------
if [[ -z "$limpet" && -n "$rev" ]]; then
  git -C "$ROOT" rev-parse --verify -q "$rev^{commit}" >/dev/null || die "no such revision: $rev"
  # The last commit that changed limpet's sources: commits to bench/, tests/ or doc/ reuse its build.
  short="$(git -C "$ROOT" log -1 --format=%h "$rev" -- src include meson.build meson_options.txt)"
  src="$BUILD/src-$short"
  out="$BUILD/limpet-$short"
  if [[ ! -f "$src/meson.build" ]]; then
    mkdir -p "$src"
    git -C "$ROOT" archive "$short" | tar -x -C "$src"
  fi
  if [[ ! -f "$out/build.ninja" ]]; then
    meson setup "$out" "$src" --buildtype=release -Dtests=false -Dbenchmarks=false >&2 || die "meson setup failed"
  fi
  ninja -C "$out" limpet >&2 || die "ninja -C $out limpet failed"
  limpet="$out/limpet"
  limpet_note="release build of $rev = $(git -C "$ROOT" rev-parse --short "$rev") (limpet sources as of $short, git archive) in build-bench-tls"
elif [[ -z "$limpet" ]]; then
  if [[ ! -f "$BUILD/build.ninja" ]]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dtests=false -Dbenchmarks=false >&2 ||
      die "meson setup failed; build limpet yourself and pass --limpet PATH"
  fi
  ninja -C "$BUILD" limpet >&2 ||
    die "ninja -C $BUILD limpet failed (others' edits in progress? try --rev HEAD, or --limpet PATH)"
  limpet="$BUILD/limpet"
  limpet_note="release build of the working tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') in build-bench-tls"
  if [[ -n "$(git -C "$ROOT" status --porcelain -- src include meson.build 2>/dev/null)" ]]; then
    limpet_note+=" with uncommitted changes in src/ or include/"
  fi
fi
[[ -x "$limpet" ]] || die "$limpet is not executable"

cmdline="bench/tls/run.sh"
[[ -n "$rev" ]] && cmdline+=" --rev $rev"
((${#args[@]})) && cmdline+=" ${args[*]}"
# As bench/run.sh: on a shared machine run every process of the benchmark (proxies, backends,
# clients inherit it) at a higher priority when allowed. BENCH_NICE=0 turns this off.
prio=()
nice_level="${BENCH_NICE:--10}"
if [[ "$nice_level" != 0 ]] && nice -n "$nice_level" true 2>/dev/null; then
  prio=(nice -n "$nice_level")
fi
export BENCH_NICE_APPLIED="${prio[*]:-none}"
exec ${prio[@]+"${prio[@]}"} python3 "$ROOT/bench/tls/tls_bench.py" --limpet "$limpet" --limpet-note "$limpet_note" \
  --backend-bin "$TOOLS/backend" --hsload "$TOOLS/hsload" --command-line "$cmdline" ${args[@]+"${args[@]}"}
