# Sourced by bench/run.sh and bench/tls/run.sh: builds a benchmark tool when it is missing or
# older than one of its sources, with the project's warning flags (warning_level=3, -Werror).
#
#   build_tool OUTPUT "COMPILER FLAGS..." "PKG-CONFIG PACKAGES" SOURCE [MORE SOURCES...]
#
# The first SOURCE is compiled; the others only count for staleness (headers).

BENCH_WARN=(-Wall -Wextra -Wpedantic -Werror)

build_tool() {
  local out="$1" compiler="$2" packages="$3"
  shift 3
  local src stale=0
  [[ -f "$out" ]] || stale=1
  for src in "$@"; do [[ "$src" -nt "$out" ]] && stale=1; done
  ((stale)) || return 0
  echo "bench: building $(basename "$out")" >&2
  local libs=()
  # shellcheck disable=SC2207 # pkg-config output is a word list
  [[ -z "$packages" ]] || libs=($(pkg-config --cflags --libs $packages))
  # shellcheck disable=SC2086 # the compiler and its flags are a word list
  $compiler "${BENCH_WARN[@]}" "$1" -o "$out" "${libs[@]}"
}
