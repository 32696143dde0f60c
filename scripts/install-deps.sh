#!/usr/bin/env bash
# Install what building and testing limpet needs, from Debian packages. Idempotent and fast when
# everything is there (one dpkg-query, no network).
#
#   bash scripts/install-deps.sh           install what is missing (as root, or through sudo)
#   bash scripts/install-deps.sh --check   only list what is missing; exit 1 if anything is
#   bash scripts/install-deps.sh --skip    do nothing (also: LIMPET_SKIP_DEPS=1)
#
# `apt-get update` runs once, and only when something is missing. Services that packages would
# start on install (nginx, redis-server, haproxy, dnsmasq) are kept from starting: the tests start their own.
set -euo pipefail

mode=install
for arg in "$@"; do
  case "$arg" in
    --skip) mode=skip ;;
    --check) mode=check ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [[ "${LIMPET_SKIP_DEPS:-}" == 1 ]]; then mode=skip; fi
[[ $mode == skip ]] && exit 0

packages=(
  # build
  build-essential g++ clang meson ninja-build pkg-config cmake
  libuv1-dev libssl-dev libtoml11-dev libgtest-dev libgmock-dev libbenchmark-dev node-llhttp libxxhash-dev
  libhiredis-dev  # the Redis session store (src/store), with its libuv adapter
  libc-ares-dev  # backends by name: DNS resolution on the main loop (src/net/resolver)
  libnghttp2-dev  # HTTP/2 to clients (src/proxy/http2_session)
  libsystemd-dev  # sd_notify for Type=notify (optional: -Dsystemd=disabled builds without it)
  # packaging: the .deb (debian/, scripts/build-deb.sh, the "package" stage of scripts/test.sh)
  debhelper dpkg-dev fakeroot lintian
  # clang's ASan/UBSan/libFuzzer runtimes (build-fuzz/, tests/fuzz); GCC's come with g++
  libclang-rt-14-dev
  # tests: integration (pytest + Python backends), e2e (Node Socket.IO cluster + Redis)
  python3 python3-pytest python3-websockets python3-requests python3-prometheus-client
  python3-h2  # tests: an HTTP/2 client whose windows and resets the test controls (test_http2)
  nghttp2-client  # tests and benchmarks: nghttp, h2load
  redis-server curl
  dnsmasq  # tests: the local DNS server of the discovery test (started by the test, never as a service)
  # tests: the status page is checked in headless Chromium
  chromium
  # benchmarks: the peers limpet is compared with, and the load generator
  wrk nginx haproxy
  # benchmarks: slow and resource attacks (bench/slow)
  slowhttptest
)

missing=()
declare -A reported=()
while read -r status pkg; do
  reported[$pkg]=1
  [[ $status == ii ]] || missing+=("$pkg")
done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${packages[@]}" 2>/dev/null || true)
for pkg in "${packages[@]}"; do  # never heard of by dpkg: missing too
  [[ -n ${reported[$pkg]:-} ]] || missing+=("$pkg")
done
# Node may come from another repository that bundles npm (and conflicts with Debian's npm): look
# for the commands, and ask Debian for them only when they are absent.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: missing: ${missing[*]}" >&2
[[ $mode == check ]] && exit 1

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: not root and no sudo: install them by hand (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  sudo=(sudo)
fi

# Keep package scripts from starting services (the Docker convention: exit 101 = "not allowed").
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [[ $created_policy == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for pkg in "${missing[@]}"; do
  case "$pkg" in
    nodejs) command -v node >/dev/null 2>&1 || still+=("$pkg") ;;
    npm) command -v npm >/dev/null 2>&1 || still+=("$pkg") ;;
    *) [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) == ii* ]] || still+=("$pkg") ;;
  esac
done
if [[ ${#still[@]} -gt 0 ]]; then
  echo "install-deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "install-deps: installed ${missing[*]}" >&2
