#!/usr/bin/env bash
# bench/lib/build_tools.sh DIR: builds the benchmark's tools into DIR (the backend, wsload and the
# allocation counter), each only when missing or older than its sources, with the project's
# warning flags. Used by bench/run.sh and bench/lib/measure_one.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${1:?usage: build_tools.sh DIR}"
mkdir -p "$TOOLS"
# shellcheck source=bench/lib/tools.sh
source "$ROOT/bench/lib/tools.sh"
build_tool "$TOOLS/backend" "gcc -std=c11 -O2 -pthread" "libuv libcrypto" "$ROOT/bench/backends/backend.c"
build_tool "$TOOLS/wsload" "g++ -std=c++20 -O2 -g" "libuv" "$ROOT/bench/wsload/wsload.cpp" \
  "$ROOT/bench/wsload/histogram.hpp"
build_tool "$TOOLS/malloc_count.so" "gcc -std=c11 -O2 -shared -fPIC" "" "$ROOT/bench/lib/malloc_count.c"
