#!/usr/bin/env bash
# The README's first command: a real Socket.IO cluster behind limpet, on this machine.
#
#   bash scripts/demo.sh
#
# Installs what is missing (Debian packages, the npm packages of tests/e2e), builds limpet, then
# starts a redis-server, three Socket.IO 4.8 nodes with the Redis adapter (node1..node3 on
# 127.0.0.1:3001..3003) and `build/limpet -c conf/limpet.toml` (127.0.0.1:8080). Open
# http://127.0.0.1:8080/ in a few tabs: each shows its node and transport, and the chat reaches
# every tab on every node. Ctrl-C stops everything this script started.
#
# Environment: DEMO_REDIS_PORT (default 6390: not 6379, which a system redis may already hold),
# DEMO_NO_INSTALL=1 to skip the package step.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

redis_port="${DEMO_REDIS_PORT:-6390}"
node_ports=(3001 3002 3003)
listen_url="http://127.0.0.1:8080/"
config="conf/limpet.toml"

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. packages
# Commands are checked by name (node and npm may come from elsewhere than Debian); libraries
# through dpkg, since they have no command.
missing_packages() {
  local cmd pkg
  local -A by_cmd=([redis-server]=redis-server [node]=nodejs [npm]=npm [meson]=meson
                   [ninja]=ninja-build [g++]=g++ [pkg-config]=pkg-config [cmake]=cmake)
  for cmd in "${!by_cmd[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || echo "${by_cmd[$cmd]}"
  done
  for pkg in libuv1-dev libssl-dev libtoml11-dev libxxhash-dev node-llhttp libgtest-dev libgmock-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

install_packages() {
  # The project's installer knows the full list and is fast when nothing is missing.
  if [[ -f scripts/install-deps.sh ]]; then
    bash scripts/install-deps.sh
    return
  fi
  local missing
  missing="$(missing_packages | sort -u | tr '\n' ' ')"
  [[ -z "${missing// /}" ]] && return
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "missing packages ($missing) and not root: install them or run as root"
    sudo="sudo"
  fi
  say "installing Debian packages: $missing"
  $sudo apt-get update -q
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
}

if [[ "${DEMO_NO_INSTALL:-}" != 1 ]]; then
  install_packages
fi
still="$(missing_packages | sort -u | tr '\n' ' ')"
[[ -z "${still// /}" ]] || die "still missing after the install step: $still"

# The nodes run from tests/e2e, which holds the one Socket.IO node implementation and its lock file.
lock_sha="$(sha256sum tests/e2e/package-lock.json | cut -d' ' -f1)"
stamp="tests/e2e/node_modules/.limpet-lock-sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sha" ]]; then
  say "npm ci in tests/e2e"
  (cd tests/e2e && npm ci --silent --no-audit --no-fund)
  echo "$lock_sha" > "$stamp"
fi

# ---------------------------------------------------------------- 2. build
[[ -f "$config" ]] || die "$config not found"
if [[ ! -f build/build.ninja ]]; then
  say "meson setup build"
  meson setup build
fi
say "building limpet (ninja -C build limpet)"
ninja -C build limpet
build/limpet -t -c "$config" >/dev/null || die "build/limpet -t -c $config rejected the configuration"

# ---------------------------------------------------------------- 3. run
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "$redis_port" "${node_ports[@]}" 8080; do
  port_free "$p" || die "port $p on 127.0.0.1 is already in use (another demo still running?)"
done

logs="$(mktemp -d "${TMPDIR:-/tmp}/limpet-demo.XXXXXX")"
# Children run in their own sessions (setsid): Ctrl-C reaches only this script, which then
# stops each of them with one SIGTERM. Were they in the terminal's process group, they would get
# the SIGINT too and take our SIGTERM as a second signal (limpet: "exit now", not graceful).
pids=()
stopping=0

# Stops exactly the processes this script started, newest first, then waits for them.
cleanup() {
  [[ $stopping == 1 ]] && return
  stopping=1
  trap - INT TERM EXIT
  echo
  say "stopping"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded: a process that ignores SIGTERM for 5 s gets SIGKILL.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  say "stopped; logs in $logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until an HTTP GET on $1 answers 200, or fails after $2 seconds.
wait_http() {
  node -e '
    const http = require("http");
    const [url, secs] = process.argv.slice(1);
    const deadline = Date.now() + Number(secs) * 1000;
    function retry() {
      if (Date.now() > deadline) process.exit(1);
      setTimeout(probe, 200);
    }
    function probe() {
      const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
        res.resume();
        if (res.statusCode === 200) process.exit(0);
        retry();
      });
      req.on("error", retry);
      req.on("timeout", () => req.destroy());
    }
    probe();
  ' "$1" "$2"
}

say "starting redis-server on 127.0.0.1:$redis_port"
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$logs/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done

for i in 0 1 2; do
  name="node$((i + 1))"
  say "starting Socket.IO $name on 127.0.0.1:${node_ports[i]}"
  setsid node tests/e2e/node_server.js --port "${node_ports[i]}" --name "$name" \
    --redis-url "redis://127.0.0.1:$redis_port" --static-dir "$root/demo" >"$logs/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${node_ports[@]}"; do
  wait_http "http://127.0.0.1:$p/__stats" 15 || die "node on port $p did not start (see $logs)"
done

say "starting build/limpet -c $config"
setsid build/limpet -c "$config" >"$logs/limpet.log" 2>&1 &
pids+=($!)
wait_http "$listen_url" 15 || die "limpet did not answer on $listen_url (see $logs/limpet.log)"

cat <<EOF

  limpet demo is running:  $listen_url

  Open it in several browser tabs: each shows the node its session lives on and its transport;
  chat messages go to every tab on every node through the Redis adapter.
  Node counters: curl http://127.0.0.1:3001/__stats  (3002, 3003)
  Logs: $logs
  Ctrl-C stops everything.

EOF

# Runs until Ctrl-C, or until one of the processes dies (then everything stops).
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "process $pid exited unexpectedly; see $logs"
      exit 1
    fi
  done
  sleep 1
done
