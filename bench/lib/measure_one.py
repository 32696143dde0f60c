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
  measure_one.py LIMPET socketio [--front limpet|nginx|haproxy] [--workers 2] [--seconds 5]
                                 [--rounds 1] [--concurrency 32] [--strace]

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
  socketio                bench row Socket.IO on one front (limpet with limpet-socketio.toml.in,
                          or nginx/HAProxy with their bench configs) in front of the Socket.IO
                          cluster (bench/lib/sio_cluster.js, needs tests/e2e/node_modules):
                          handshakes/s and front CPU µs per handshake; with --strace, `strace -c
                          -f` on the front instead: system calls per completed handshake (strace
                          slows the front down: its rate is not comparable, its counts are).
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
LOADS = ["cpu", "mallocs", "syscalls", "idle", "config", "socketio"] + list(B.CONFIG_ROWS)


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


def strace_counts(path, per):
    """`strace -c` output -> {syscall: calls / per}, most frequent first."""
    calls = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = round(int(f[3]) / per, 3)
    return dict(sorted(calls.items(), key=lambda kv: -kv[1]))


def socketio(a, fronts, work, workers):
    """The bench's Socket.IO row on one front: rounds of sio_load, a fresh front each round."""
    redis, nodes = BASE + 20, [BASE + 21, BASE + 22, BASE + 23]
    ready = os.path.join(work, "sio.ready")
    cluster = B.Service("sio-cluster", ["node", os.path.join(BENCH, "lib", "sio_cluster.js"), "--redis-port",
                                        str(redis), "--ports", ",".join(map(str, nodes)), "--ready-file", ready,
                                        "--log-dir", os.path.join(work, "sio-logs"), "--max-seconds", "1200"],
                        os.path.join(work, "sio-cluster.log"))
    B.wait_until("Socket.IO cluster", lambda: os.path.exists(ready) or not cluster.alive(), timeout=60)
    if not cluster.alive():
        raise SystemExit(f"measure_one.py: the Socket.IO cluster failed; see {cluster.log_path}")
    B.warm_sio_cluster(nodes, a.concurrency)
    cmd = ["node", os.path.join(BENCH, "lib", "sio_load.js"), "--url", f"http://127.0.0.1:{fronts.port[a.front]}",
           "--concurrency", str(a.concurrency), "--duration", f"{a.seconds:g}", "--warmup", "1",
           "--nodes", ",".join(map(str, nodes))]
    samples = []
    for rnd in range(a.rounds):
        proxy = fronts.start(a.front, workers, nodes, "socketio", probe="/__stats")
        try:
            trace = os.path.join(work, "strace.txt")
            st = None
            if a.strace:
                # Every process of the front (nginx's workers), and with -f every thread of each.
                pids = [arg for pid in proxy.pids() for arg in ("-p", str(pid))]
                st = subprocess.Popen(["strace", "-c", "-f", *pids, "-o", trace], stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            ms = B.run_measured(cmd, proxy, [], a.seconds + 60, extra_pids=cluster.pids())
            if st is not None:
                st.send_signal(signal.SIGINT)
                st.wait(timeout=10)
        finally:
            proxy.stop()
        r = json.loads(ms.out)
        done = max(1, r["completed_total"])
        m = {"front": a.front, "round": rnd + 1, "handshakes_per_s": r["handshakes_per_s"],
             "cpu_us_per_handshake": round(1e6 * ms.proxy_cpu / done, 1), "errors": r["errors"],
             "session_unknown": r["session_unknown_errors"], "nodes": "/".join(map(str, r["node_handshakes"]))}
        if st is not None:
            m["calls_per_handshake"] = strace_counts(trace, done)
        emit(m)
        samples.append(m)
    if a.rounds > 1:
        emit({"median": median_of(samples, ["handshakes_per_s", "cpu_us_per_handshake", "errors"]),
              "front": a.front, "workers": workers})
    cluster.stop()


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
    ap.add_argument("--front", choices=["limpet", "nginx", "haproxy"], default="limpet", help="socketio: which proxy")
    ap.add_argument("--concurrency", type=int, default=32, help="socketio: client loops")
    ap.add_argument("--strace", action="store_true", help="socketio: count system calls per handshake")
    a = ap.parse_args()
    limpet = os.path.realpath(a.limpet)
    if not os.access(limpet, os.X_OK):
        ap.error(f"{a.limpet} is not executable")
    workers = a.workers or (2 if a.load in ("idle", "socketio") else 1)
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
        for port in backend_ports if a.load != "socketio" else []:  # its backends: the cluster
            backends.append(B.Service(f"backend-{port}", [f"{TOOLS}/backend", "--port", str(port), "--threads", "2"],
                                      os.path.join(work, f"backend-{port}.log")))
            B.wait_until(f"backend on {port}", lambda p=port: B.http_get(p) == 200)
        if a.load == "socketio":
            socketio(a, fronts, work, workers)
            return
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
                    print(json.dumps({"reqs": reqs, "calls_per_request": strace_counts(trace, reqs)}))
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
