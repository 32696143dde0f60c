#!/usr/bin/env python3
"""bench/store_latency.py: what the session store ([session_store], issue 11) costs a handshake,
and proof that requests of known sids make no store round trip.

  python3 bench/store_latency.py [--limpet build-bench/limpet] [--handshakes 2000] [--rounds 3]

Per round, interleaved (store off, then on; fresh processes each): the bench backend
(bench/backends/backend.c, 2 threads), a redis-server for the store, limpet (1 worker,
least_sessions, Engine.IO path) in front. The client makes --handshakes Engine.IO polling
handshakes one after the other on one keep-alive connection and times each (client-side, from
sending the request to the last byte of the response): with the store on, each response waits
for Redis' SET. Then it polls every sid once through the same instance (known sids) and reads
Redis' own count of GET commands (INFO commandstats) before and after: it must not move. With
the store on, a second limpet instance B polls every sid once (the miss path: one GET each,
adopted) and then again (known now: no GET). Prints one JSON line per round and a summary with
the medians of the rounds' p50/p99.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"{what} did not listen on {port} within {timeout}s")


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


class Procs:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, argv, port):
        log = open(self.tmp / f"{name}.log", "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        wait_port(port, p, name)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.procs = []


def limpet_config(port, backend_ports, admin_port, redis_port, instance):
    lines = ["[server]", "workers = 1", 'access_log = "off"', "", "[admin]", f'address = "127.0.0.1:{admin_port}"']
    if redis_port:
        lines += ["", "[session_store]", f'address = "127.0.0.1:{redis_port}"', f'instance = "{instance}"']
    lines += ["", "[[listener]]", f'address = "127.0.0.1:{port}"', 'upstream = "app"', "",
              "[[upstream]]", 'name = "app"', 'balance = "least_sessions"', 'engineio_paths = ["/socket.io/"]']
    for i, bp in enumerate(backend_ports):
        lines += ["", "[[upstream.backend]]", f'name = "node{i + 1}"', f'address = "127.0.0.1:{bp}"']
    return "\n".join(lines) + "\n"


def get(conn, path):
    t = time.perf_counter_ns()
    conn.request("GET", path, headers={"Host": "bench"})
    r = conn.getresponse()
    body = r.read()
    dt = (time.perf_counter_ns() - t) / 1000
    if r.status != 200:
        sys.exit(f"{path}: {r.status} {body[:200]!r}")
    return body, dt


def redis_gets(redis_port):
    out = subprocess.run(["redis-cli", "-p", str(redis_port), "INFO", "commandstats"], capture_output=True,
                         text=True).stdout
    m = re.search(r"cmdstat_get:calls=(\d+)", out)
    return int(m.group(1)) if m else 0


def one_round(args, tmp, store):
    procs = Procs(tmp)
    try:
        backend_ports = [free_port(), free_port()]
        for i, bp in enumerate(backend_ports):
            procs.start(f"backend{i}", [str(args.backend), "--port", str(bp), "--threads", "2"], bp)
        redis_port = 0
        if store:
            redis_port = free_port()
            procs.start("redis", ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                                  "--dir", str(tmp)], redis_port)
        ports = {}
        for inst in ("a", "b") if store else ("a",):
            port, admin = free_port(), free_port()
            conf = tmp / f"limpet-{inst}.toml"
            conf.write_text(limpet_config(port, backend_ports, admin, redis_port, f"bench-{inst}"))
            procs.start(f"limpet-{inst}", [str(args.limpet), "-c", str(conf)], port)
            ports[inst] = port
        time.sleep(0.3)  # the store connections come up (a handshake before that is not held)
        a = http.client.HTTPConnection("127.0.0.1", ports["a"], timeout=10)
        sids, lat = [], []
        for _ in range(args.handshakes):
            body, dt = get(a, "/socket.io/?EIO=4&transport=polling")
            sids.append(json.loads(body[1:])["sid"])
            lat.append(dt)
        lat.sort()
        result = {"store": store, "handshakes": len(lat), "p50_us": round(percentile(lat, 50), 1),
                  "p99_us": round(percentile(lat, 99), 1), "mean_us": round(statistics.mean(lat), 1)}
        gets_before = redis_gets(redis_port) if store else 0
        for sid in sids:
            get(a, f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        if store:
            result["store_gets_for_known_sids_on_a"] = redis_gets(redis_port) - gets_before
            b = http.client.HTTPConnection("127.0.0.1", ports["b"], timeout=10)
            miss = []
            before = redis_gets(redis_port)
            for sid in sids:
                miss.append(get(b, f"/socket.io/?EIO=4&transport=polling&sid={sid}")[1])
            result["store_gets_first_poll_on_b"] = redis_gets(redis_port) - before
            miss.sort()
            result["b_first_poll_p50_us"] = round(percentile(miss, 50), 1)
            result["b_first_poll_p99_us"] = round(percentile(miss, 99), 1)
            before = redis_gets(redis_port)
            for sid in sids:
                get(b, f"/socket.io/?EIO=4&transport=polling&sid={sid}")
            result["store_gets_second_poll_on_b"] = redis_gets(redis_port) - before
        return result
    finally:
        procs.stop()


def main():
    ap = argparse.ArgumentParser()
    default = ROOT / "build-bench" / "limpet"
    ap.add_argument("--limpet", type=Path, default=default if default.exists() else ROOT / "build" / "limpet")
    ap.add_argument("--handshakes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="limpet-store-bench-"))
    try:
        args.backend = tmp / "backend"
        subprocess.run(["gcc", "-std=c11", "-O2", "-pthread", "-o", str(args.backend),
                        str(ROOT / "bench/backends/backend.c"), "-luv", "-lcrypto"], check=True)
        rounds = {False: [], True: []}
        for _ in range(args.rounds):
            for store in (False, True):
                r = one_round(args, tmp, store)
                print(json.dumps(r), flush=True)
                rounds[store].append(r)
        med = lambda store, k: statistics.median(r[k] for r in rounds[store])
        summary = {"limpet": str(args.limpet), "rounds": args.rounds, "handshakes": args.handshakes,
                   "off_p50_us": med(False, "p50_us"), "off_p99_us": med(False, "p99_us"),
                   "on_p50_us": med(True, "p50_us"), "on_p99_us": med(True, "p99_us"),
                   "added_p50_us": round(med(True, "p50_us") - med(False, "p50_us"), 1),
                   "added_p99_us": round(med(True, "p99_us") - med(False, "p99_us"), 1),
                   "store_gets_for_known_sids": max(r["store_gets_for_known_sids_on_a"] for r in rounds[True]) +
                   max(r["store_gets_second_poll_on_b"] for r in rounds[True])}
        print(json.dumps({"summary": summary}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
