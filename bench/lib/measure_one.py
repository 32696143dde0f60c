#!/usr/bin/env python3
"""bench/lib/measure_one.py: one load against one limpet binary, for quick before/after figures
while working on issue 6 (bench/run.sh compares with nginx and HAProxy; this does not).

  measure_one.py LIMPET cpu      [--workers 1] [--seconds 5] [--rounds 1] [--path /]
  measure_one.py LIMPET mallocs  [--workers 1] [--seconds 5] [--path /]
  measure_one.py LIMPET syscalls [--workers 1] [--seconds 3] [--path /]
  measure_one.py LIMPET idle     [--workers 2] [--conns 9000]

Same setup as bench/run.sh: two bench backends (2 threads each), limpet with
bench/peers/limpet.toml.in; needs bench/run.sh's tools in build-bench/bench-tools (run
bench/run.sh --quick once). Loads: `wrk -t1 -c64` keep-alive after a 1 s warm-up (cpu: proxy
utime+stime per request from /proc/PID/stat; mallocs: LD_PRELOAD=malloc_count.so calls per
request; syscalls: `strace -c -f` attached during the run, calls per request), or
`wsload idle` (VmRSS growth per open tunnel, read 0.5 s after all are up). One JSON line per
measurement on stdout. PORT_BASE (default 19700) moves the ports.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(os.path.dirname(BENCH), "build-bench", "bench-tools")
BASE = int(os.environ.get("PORT_BASE", "19700"))
B1, B2, PORT = BASE + 1, BASE + 2, BASE + 10


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_http(port):
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("measure_one.py: limpet did not answer")


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds:g}s", url], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1)), float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("limpet")
    ap.add_argument("load", choices=["cpu", "mallocs", "syscalls", "idle"])
    ap.add_argument("--workers", type=int, default=0, help="default 1, or 2 for idle")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--conns", type=int, default=9000)
    ap.add_argument("--path", default="/")
    a = ap.parse_args()
    workers = a.workers or (2 if a.load == "idle" else 1)
    work = tempfile.mkdtemp(prefix="limpet-measure-")
    procs = []
    try:
        for port in (B1, B2):
            procs.append(subprocess.Popen([f"{TOOLS}/backend", "--port", str(port), "--threads", "2"],
                                          stderr=subprocess.DEVNULL))
        conf = os.path.join(work, "limpet.toml")
        subprocess.run([sys.executable, os.path.join(BENCH, "lib", "render.py"),
                        os.path.join(BENCH, "peers", "limpet.toml.in"), conf, "--kind", "limpet",
                        "--servers", f"{B1},{B2}", f"WORKERS={workers}", f"PORT={PORT}", f"DIR={work}"], check=True)
        env = dict(os.environ)
        counters = os.path.join(work, "malloc.cnt")
        if a.load == "mallocs":
            env.update(LD_PRELOAD=f"{TOOLS}/malloc_count.so", MALLOC_COUNT_FILE=counters)
        proxy = subprocess.Popen([a.limpet, "-c", conf], env=env, stderr=open(os.path.join(work, "limpet.log"), "w"))
        procs.append(proxy)
        wait_http(PORT)
        url = f"http://127.0.0.1:{PORT}{a.path}"

        def allocations():
            words = open(counters, "rb").read(40)
            v = [int.from_bytes(words[i:i + 8], "little") for i in range(0, 40, 8)]
            return v[0] + v[1] + v[2] + v[3]  # malloc + calloc + realloc + aligned

        if a.load == "idle":
            ready = os.path.join(work, "idle.ready")
            before = rss_kb(proxy.pid)
            load = subprocess.Popen([f"{TOOLS}/wsload", "idle", "--port", str(PORT), "--conns", str(a.conns),
                                     "--connect-rate", "3000", "--hold", "1.5", "--ready-file", ready],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            while not os.path.exists(ready) and load.poll() is None:
                time.sleep(0.05)
            time.sleep(0.5)
            after = rss_kb(proxy.pid)
            r = json.loads(load.communicate(timeout=60)[0])
            print(json.dumps({"open": r["open"], "rss_before_kb": before, "rss_after_kb": after,
                              "bytes_per_tunnel": round(1024.0 * (after - before) / max(1, r["open"])),
                              "errors": r["connect_errors"] + r["dropped"]}))
            return
        wrk(url, 1)
        for _ in range(a.rounds):
            if a.load == "syscalls":
                trace = os.path.join(work, "strace.txt")
                st = subprocess.Popen(["strace", "-c", "-f", "-p", str(proxy.pid), "-o", trace],
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
            a0 = allocations() if a.load == "mallocs" else 0
            t0 = cpu_ticks(proxy.pid)
            reqs, rps = wrk(url, a.seconds)
            t1 = cpu_ticks(proxy.pid)
            r = {"reqs": reqs, "rps": rps,
                 "cpu_us_per_req": round((t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / reqs, 2)}
            if a.load == "mallocs":
                r["allocs_per_req"] = round((allocations() - a0) / reqs, 4)
            print(json.dumps(r))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


main()
