#!/usr/bin/env python3
"""bench/lib/measure_one.py: one load against one limpet binary, for quick before/after figures
(bench/run.sh compares with nginx and HAProxy; this does not).

  measure_one.py LIMPET cpu      [--workers 1] [--seconds 5] [--rounds 1] [--path /]
  measure_one.py LIMPET mallocs  [--workers 1] [--seconds 5] [--path /]
  measure_one.py LIMPET syscalls [--workers 1] [--seconds 3] [--path /]
  measure_one.py LIMPET idle     [--workers 2] [--conns 9000] [--rounds 1]
  measure_one.py LIMPET config   [--rows minimal,shipped-text,...] [--workers 1] [--seconds 5] [--rounds 1]
  measure_one.py LIMPET shipped-text        (or any one row name: minimal, shipped-text-plain,
                                             shipped-text, shipped-json-plain, shipped-json)

Same setup as bench/run.sh (its code: bench/lib/bench.py): two bench backends (2 threads each) and
limpet with bench/peers/limpet.toml.in, or for the config rows bench/peers/limpet-shipped.toml.in
(conf/limpet.toml with the access log in a file). The tools (backend, wsload, malloc_count.so) are
built into build-bench/bench-tools when missing or stale (bench/lib/build_tools.sh).

Loads:
  cpu, mallocs, syscalls  `wrk -t1 -c64` keep-alive on --path after a 1 s warm-up, one limpet for
                          all rounds: proxy utime+stime per request from /proc/PID/stat;
                          LD_PRELOAD=malloc_count.so calls per request; `strace -c -f` attached
                          during the run, calls per request.
  idle                    `wsload idle`: VmRSS growth per open tunnel (read 0.5 s after all are
                          up), a fresh limpet each round. bench row WS (a).
  config, ROW             the rows of issue 10's shipped configuration (bench.py CONFIG_ROWS):
                          per row and round a fresh limpet for requests/s and CPU µs/request and a
                          second one under malloc_count.so for allocations per request; the sid
                          rows first make --sessions Engine.IO handshakes through limpet and then
                          poll with those sids (wrk Lua script).
One JSON line per measurement on stdout; with rounds, a last line {"median": ...}. PORT_BASE
(default 19700) moves the ports (backends +1, +2; limpet +10; its admin listener +13).
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (bench/lib/bench.py: its main() runs only as a script)

BENCH = B.BENCH
TOOLS = os.path.join(B.ROOT, "build-bench", "bench-tools")
BASE = int(os.environ.get("PORT_BASE", "19700"))
LOADS = ["cpu", "mallocs", "syscalls", "idle", "config"] + list(B.CONFIG_ROWS)


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds:g}s", url], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1)), float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))


def emit(r):
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)


def median_of(samples, keys):
    out = {}
    for k in keys:
        vals = [s[k] for s in samples if isinstance(s.get(k), (int, float))]
        if vals:
            out[k] = round(statistics.median(vals), 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("limpet")
    ap.add_argument("load", choices=LOADS)
    ap.add_argument("--workers", type=int, default=0, help="default 1, or 2 for idle")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--conns", type=int, default=9000, help="idle: tunnels")
    ap.add_argument("--path", default="/")
    ap.add_argument("--rows", default=",".join(B.CONFIG_ROWS), help="config: which rows")
    ap.add_argument("--sessions", type=int, default=64, help="config: Engine.IO sessions the sid rows poll")
    ap.add_argument("--warmup", type=float, default=1, help="config: warm-up seconds")
    a = ap.parse_args()
    limpet = os.path.realpath(a.limpet)
    if not os.access(limpet, os.X_OK):
        ap.error(f"{a.limpet} is not executable")
    workers = a.workers or (2 if a.load == "idle" else 1)
    rows = a.rows.split(",") if a.load == "config" else [a.load] if a.load in B.CONFIG_ROWS else []
    if any(r not in B.CONFIG_ROWS for r in rows):
        ap.error(f"unknown row in --rows {a.rows}; known: {', '.join(B.CONFIG_ROWS)}")
    subprocess.run(["bash", os.path.join(BENCH, "lib", "build_tools.sh"), TOOLS], check=True)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (B.stop_all(), sys.exit(130)))
    work = tempfile.mkdtemp(prefix="limpet-measure-")
    fronts = B.Fronts(types.SimpleNamespace(limpet=limpet, port_base=BASE), work)
    backend_ports = [BASE + 1, BASE + 2]
    backends = []
    try:
        for port in backend_ports + [BASE + 10, BASE + 13]:
            if not B.port_free(port):
                raise SystemExit(f"measure_one.py: port {port} is busy (set PORT_BASE)")
        for port in backend_ports:
            backends.append(B.Service(f"backend-{port}", [f"{TOOLS}/backend", "--port", str(port), "--threads", "2"],
                                      os.path.join(work, f"backend-{port}.log")))
            B.wait_until(f"backend on {port}", lambda p=port: B.http_get(p) == 200)
        counters = os.path.join(work, "malloc.cnt")

        def start(template=None, counted=False):
            env = None
            if counted:
                if os.path.exists(counters):
                    os.remove(counters)
                env = {"LD_PRELOAD": f"{TOOLS}/malloc_count.so", "MALLOC_COUNT_FILE": counters}
            return fronts.start("limpet", workers, backend_ports, template, env=env)

        if rows:
            samples = {r: [] for r in rows}
            for rnd in range(a.rounds):
                for row in rows[rnd % len(rows):] + rows[:rnd % len(rows)]:
                    for counted in (False, True):
                        proxy = start(B.CONFIG_ROWS[row][0], counted)
                        try:
                            m = B.measure_config_row(row, proxy, backends, work, a.seconds, a.warmup, 64,
                                                     a.sessions, counter=counters if counted else None,
                                                     backend_ports=backend_ports)
                        finally:
                            proxy.stop()
                        m = {"row": row, "round": rnd + 1, "run": "malloc_count" if counted else "plain", **m}
                        emit(m)
                        samples[row].append(m)
            keys = ["allocs_per_req", "rps", "cpu_us_per_req", "allocs_per_req_whole_run", "idle_allocs_per_s",
                    "errors", "log_lines_per_req", "affinity_share"]
            emit({"median": {r: median_of(ss, keys) for r, ss in samples.items()}, "workers": workers,
                  "seconds": a.seconds, "rounds": a.rounds, "limpet": limpet})
            return

        if a.load == "idle":
            samples = []
            for rnd in range(a.rounds):
                proxy = start()
                try:
                    ready = os.path.join(work, "idle.ready")
                    if os.path.exists(ready):
                        os.remove(ready)
                    before = B.rss_kb(proxy.pids())
                    load = subprocess.Popen([f"{TOOLS}/wsload", "idle", "--port", str(proxy.port), "--conns",
                                             str(a.conns), "--connect-rate", "3000", "--hold", "1.5",
                                             "--ready-file", ready],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                    while not os.path.exists(ready) and load.poll() is None:
                        time.sleep(0.05)
                    time.sleep(0.5)
                    after = B.rss_kb(proxy.pids())
                    r = json.loads(load.communicate(timeout=60)[0])
                finally:
                    proxy.stop()
                m = {"round": rnd + 1, "open": r["open"], "rss_before_kb": before, "rss_after_kb": after,
                     "bytes_per_tunnel": round(1024.0 * (after - before) / max(1, r["open"])),
                     "errors": r["connect_errors"] + r["dropped"]}
                emit(m)
                samples.append(m)
            if a.rounds > 1:
                emit({"median": median_of(samples, ["bytes_per_tunnel", "errors"]), "conns": a.conns,
                      "workers": workers})
            return

        proxy = start(counted=a.load == "mallocs")
        try:
            url = f"http://127.0.0.1:{proxy.port}{a.path}"
            wrk(url, 1)
            for _ in range(a.rounds):
                if a.load == "syscalls":
                    trace = os.path.join(work, "strace.txt")
                    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(proxy.proc.pid), "-o", trace],
                                          stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                    reqs, rps = wrk(url, a.seconds)
                    st.send_signal(2)
                    st.wait(timeout=10)
                    calls = {}
                    for line in open(trace):
                        f = line.split()
                        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                            calls[f[-1]] = round(int(f[3]) / reqs, 3)
                    print(json.dumps({"reqs": reqs, "calls_per_request": calls}))
                    continue
                a0 = B.malloc_calls(counters) if a.load == "mallocs" else 0
                t0 = B.cpu_seconds(proxy.pids())
                reqs, rps = wrk(url, a.seconds)
                t1 = B.cpu_seconds(proxy.pids())
                r = {"reqs": reqs, "rps": rps, "cpu_us_per_req": round((t1 - t0) * 1e6 / reqs, 2)}
                if a.load == "mallocs":
                    r["allocs_per_req"] = round((B.malloc_calls(counters) - a0) / reqs, 4)
                print(json.dumps(r))
        finally:
            proxy.stop()
    finally:
        B.stop_all()


main()
