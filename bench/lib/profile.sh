#!/usr/bin/env bash
# bench/lib/profile.sh: where limpet's CPU time goes under wrk keep-alive load (issue 6).
#
#   bench/lib/profile.sh LIMPET_BIN [OUT_DIR] [--seconds 10] [--workers 1] [--path /]
#
# Starts the bench backends and limpet with the bench config (peers/limpet.toml.in), warms up,
# then samples limpet with `perf record` (software cpu-clock event: works in VMs without hardware
# counters) while wrk runs, and writes flat and call-graph reports to OUT_DIR. Needs linux-perf
# and bench/run.sh's tools in build-bench/bench-tools (run bench/run.sh --quick once).
# Call graphs use DWARF unwinding, so limpet needs debug info (-g) but not frame pointers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/build-bench/bench-tools"
[[ $# -ge 1 ]] || {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}
LIMPET="$(realpath "$1")"
shift
OUT="${1:-/tmp/limpet-profile}"
[[ $# -ge 1 && "$1" != --* ]] && shift
SECONDS_=10
WORKERS=1
URLPATH=/
while (($#)); do
  case "$1" in
    --seconds) SECONDS_="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --path) URLPATH="$2"; shift 2 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
[[ -x "$TOOLS/backend" ]] || { echo "profile.sh: run bench/run.sh --quick once to build $TOOLS" >&2; exit 1; }

BASE="${PORT_BASE:-18700}"
B1=$((BASE + 1)) B2=$((BASE + 2)) PORT=$((BASE + 10))
mkdir -p "$OUT"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$TOOLS/backend" --port "$B1" --threads 2 2>>"$OUT/backend.log" & pids+=($!)
"$TOOLS/backend" --port "$B2" --threads 2 2>>"$OUT/backend.log" & pids+=($!)
python3 "$ROOT/bench/lib/render.py" "$ROOT/bench/peers/limpet.toml.in" "$OUT/limpet.toml" --kind limpet \
  --servers "$B1,$B2" "WORKERS=$WORKERS" "PORT=$PORT" "DIR=$OUT"
"$LIMPET" -c "$OUT/limpet.toml" 2>>"$OUT/limpet.log" & LPID=$!
pids+=("$LPID")
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT$URLPATH"
wrk -t1 -c64 -d2s "$URL" >/dev/null

# wrk runs a little longer than the sampling window on both sides so that only load is sampled.
wrk -t1 -c64 -d"$((SECONDS_ + 2))s" "$URL" >"$OUT/wrk.txt" & WRK=$!
sleep 1
perf record -e cpu-clock -F 4999 --call-graph dwarf,16384 -p "$LPID" -o "$OUT/perf.data" -- sleep "$SECONDS_" \
  2>"$OUT/perf-record.log"
wait "$WRK"

perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.5 -g none \
  >"$OUT/flat.txt" 2>/dev/null
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none >"$OUT/by-dso.txt" 2>/dev/null
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 2 -g caller,0.5,callee \
  >"$OUT/children.txt" 2>/dev/null
echo "wrk: $(grep -E 'Requests/sec' "$OUT/wrk.txt")"
echo "reports: $OUT/flat.txt (self time by function), $OUT/by-dso.txt, $OUT/children.txt (inclusive)"
# perf pads the symbol column to the terminal width: squeeze it for reading.
grep -v '^#' "$OUT/flat.txt" | grep -v '^$' | sed 's/ \{3,\}/  /g; s/  -  -  $//' | head -40
