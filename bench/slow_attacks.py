#!/usr/bin/env python3
"""bench/slow_attacks.py: slow and resource attacks against limpet, nginx and HAProxy (issue 12),
measured, not asserted.

  python3 bench/slow_attacks.py [--limpet build-bench/limpet] [--fronts limpet,nginx,haproxy]
                                [--conns 2000] [--seconds 30] [--port-base 23000]

Each proxy runs with the bench's equivalent configs (bench/peers/*.in: 2 workers, the same two
bench backends), freshly started for each attack. While an attack runs, a probe client sends
`GET /` on a new connection every 100 ms from another source address (127.0.0.2, so per-address
limits, where a proxy has them, do not hit it) and records success (a 200 within 2 s) and
latency. Attacks:
  slowloris   slowhttptest -H: 2,000 connections sending a header line every 10 s
  slow-body   slowhttptest -B: 2,000 POSTs declaring 8 KiB and sending a few bytes every 10 s
  slow-read   slowhttptest -X: 2,000 connections asking /16k three times each and reading
              32 bytes a second through a 512-1024 byte window
  idle        10,000 TCP connections that never send a byte, held for --seconds
and single requests, each timed: 10,000 tiny headers, a 1 MB URI, a 100 MB body (over
limpet's max_body_size of 16 MiB and nginx's client_max_body_size of 1 MiB; HAProxy has no
limit by default). Writes results/<date>-slow.md and .json; prints one JSON line per figure.
"""

import argparse
import datetime
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import bench  # noqa: E402  (bench/lib/bench.py: Service, Fronts, process helpers)

ROOT = bench.ROOT
PROBE_SOURCE = "127.0.0.2"


class Probe(threading.Thread):
    """GET / every 100 ms, each on a new connection from PROBE_SOURCE."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failed = 0
        self.latencies_ms = []

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2, source_address=(PROBE_SOURCE, 0))
                with s:
                    status = bench.get_status(s, "/", "probe")
                if status == 200:
                    self.ok += 1
                    self.latencies_ms.append((time.monotonic() - t) * 1000)
                else:
                    self.failed += 1
            except OSError:
                self.failed += 1
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))

    def result(self):
        lat = sorted(self.latencies_ms) or [float("nan")]
        total = self.ok + self.failed
        return {"probes": total, "probe_success_pct": round(100 * self.ok / total, 2) if total else None,
                "probe_p50_ms": round(lat[len(lat) // 2], 2), "probe_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
                "probe_max_ms": round(lat[-1], 2)}


def slowhttptest(mode, port, conns, seconds, work):
    common = ["-c", str(conns), "-r", "400", "-l", str(seconds), "-p", "3", "-g", "-o", os.path.join(work, mode)]
    url = f"http://127.0.0.1:{port}/"
    if mode == "slowloris":
        args = ["-H", "-i", "10", "-x", "24", "-u", url]
    elif mode == "slow-body":
        args = ["-B", "-i", "10", "-s", "8192", "-x", "10", "-u", url]
    else:
        args = ["-X", "-k", "3", "-n", "1", "-w", "512", "-y", "1024", "-z", "32", "-u", url + "16k"]
    out = subprocess.run(["slowhttptest", *common, *args], capture_output=True, text=True,
                         timeout=seconds + 120).stdout
    csv = os.path.join(work, mode + ".csv")
    peak = closed = 0
    if os.path.exists(csv):
        with open(csv) as f:
            header = [h.strip().lower() for h in f.readline().split(",")]
            for row in f:
                cells = dict(zip(header, row.strip().split(",")))
                peak = max(peak, int(cells.get("connected", 0) or 0))
                closed = max(closed, int(cells.get("closed", 0) or 0))
    ended = re.search(r"Exit status:\S*\s*([^\x1b\n]+)", out)
    return {"attacker_peak_connected": peak, "attacker_closed_by_proxy": closed,
            "attacker_exit": ended.group(1).strip() if ended else "?"}


def idle_connections(port, count, seconds):
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    opened = len(socks)
    time.sleep(seconds)  # the load itself: connections held open for the duration
    still = 0
    for s in socks:
        s.setblocking(False)
        try:
            still += s.recv(1) != b""  # b"" = closed by the proxy
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    return {"idle_opened": opened, "idle_still_open_at_end": still}


def one_request(port, data, read_limit=1 << 16, timeout=30):
    """Sends `data` (stops early if the proxy answers or closes); status, bytes sent, seconds."""
    t = time.monotonic()
    sent = 0
    status = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setblocking(False)
        view = memoryview(data)
        answer = b""
        while time.monotonic() - t < timeout:
            if sent < len(data):
                try:
                    sent += s.send(view[sent:sent + 65536])
                except BlockingIOError:
                    pass
                except OSError:
                    break
            try:
                chunk = s.recv(read_limit)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n" in answer:
                    break
            except BlockingIOError:
                if sent >= len(data):
                    time.sleep(0.001)
            except OSError:
                break
        if answer.startswith(b"HTTP/1."):
            status = int(answer[9:12])
    return {"status": status, "bytes_sent": sent, "seconds": round(time.monotonic() - t, 3)}


def requests_checks(port):
    host = b"Host: x\r\n"
    tiny = b"GET / HTTP/1.1\r\n" + host + b"".join(b"a%d: b\r\n" % i for i in range(10000)) + b"\r\n"
    uri = b"GET /" + b"u" * (1 << 20) + b" HTTP/1.1\r\n" + host + b"\r\n"
    body = b"POST / HTTP/1.1\r\n" + host + b"Content-Length: %d\r\n\r\n" % (100 << 20) + b"x" * (100 << 20)
    return {"10k_headers": one_request(port, tiny), "1mb_uri": one_request(port, uri),
            "100mb_body": one_request(port, body)}


def write_report(args, results, date=None):
    date = date or datetime.date.today().isoformat()
    out = os.path.join(ROOT, "bench", "results", f"{date}-slow")
    with open(out + ".json", "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(f"# Slow and resource attacks ({date})\n\nCommand: `python3 bench/slow_attacks.py "
                f"--conns {args.conns} --seconds {args.seconds}` (limpet release build; nginx and HAProxy from Debian, "
                "bench/peers configs: 2 workers each). Probe: GET / every 100 ms on a new connection from 127.0.0.2 "
                "(success = a 200 within 2 s). The bench backend answers a POST at once, without waiting for its "
                "body: limpet then ends the exchange (the client's unsent body is not waited for), which is why "
                "the slow-body attacker keeps almost no connection open through it; nginx and HAProxy buffer or "
                "wait for the declared body.\n\n")
        f.write("| attack | front | probe success % | probe p50 ms | probe p99 ms | attacker peak connected | "
                "closed by the proxy | RSS after (KiB) |\n|---|---|---|---|---|---|---|---|\n")
        for r in results:
            if r["attack"] == "requests":
                continue
            peak = r.get("attacker_peak_connected", r.get("idle_opened"))
            closed = r.get("attacker_closed_by_proxy", r.get("idle_opened", 0) - r.get("idle_still_open_at_end", 0))
            f.write(f"| {r['attack']} | {r['front']} | {r['probe_success_pct']} | {r['probe_p50_ms']} | "
                    f"{r['probe_p99_ms']} | {peak} | {closed} | {r['rss_kb_after']} |\n")
        f.write("\n| request | front | status | bytes the proxy took | seconds |\n|---|---|---|---|---|\n")
        for r in results:
            if r["attack"] != "requests":
                continue
            for name in ("10k_headers", "1mb_uri", "100mb_body"):
                x = r[name]
                f.write(f"| {name} | {r['front']} | {x['status']} | {x['bytes_sent']} | {x['seconds']} |\n")
        f.write("\nEvery figure (JSON lines):\n\n```\n" + "\n".join(json.dumps(r) for r in results) + "\n```\n")
    print(f"wrote {out}.md")


def main():
    ap = argparse.ArgumentParser()
    default = os.path.join(ROOT, "build-bench", "limpet")
    ap.add_argument("--limpet", default=default if os.path.exists(default) else os.path.join(ROOT, "build", "limpet"))
    ap.add_argument("--fronts", default="limpet,nginx,haproxy")
    ap.add_argument("--attacks", default="slowloris,slow-body,slow-read,idle,requests")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--port-base", type=int, default=23000)
    ap.add_argument("--render", help="only rewrite the report from this results JSON")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        for r in saved["results"]:
            tail = r.pop("attacker_output_tail", None)
            if tail is not None:
                m = re.search(r"Exit status:\S*\s*([^\x1b\n]+)", tail)
                r["attacker_exit"] = m.group(1).strip() if m else "?"
        write_report(argparse.Namespace(**saved["args"]), saved["results"], os.path.basename(args.render)[:10])
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = os.path.join("/tmp", f"limpet-slow-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    tools = os.path.join(work, "backend")
    subprocess.run(["gcc", "-std=c11", "-O2", "-pthread", "-o", tools, os.path.join(ROOT, "bench/backends/backend.c"),
                    "-luv", "-lcrypto"], check=True)
    backend_ports = [args.port_base + 1, args.port_base + 2]
    backends = [bench.Service(f"backend{p}", [tools, "--port", str(p), "--threads", "2"], os.path.join(work, f"b{p}.log"))
                for p in backend_ports]
    for p in backend_ports:
        bench.wait_until(f"backend {p}", lambda p=p: bench.http_get(p) == 200)
    fronts = bench.Fronts(args, work)
    results = []
    try:
        for attack in args.attacks.split(","):
            for kind in args.fronts.split(","):
                svc = fronts.start(kind, 2, backend_ports)
                try:
                    row = {"attack": attack, "front": kind}
                    if attack == "requests":
                        row.update(requests_checks(svc.port))
                    else:
                        probe = Probe(svc.port)
                        probe.start()
                        if attack == "idle":
                            row.update(idle_connections(svc.port, args.idle_conns, args.seconds))
                        else:
                            row.update(slowhttptest(attack, svc.port, args.conns, args.seconds, work))
                        probe.stop.set()
                        probe.join()
                        row.update(probe.result())
                    row["rss_kb_after"] = bench.rss_kb(svc.pids())
                    row["alive_after"] = svc.alive()
                finally:
                    svc.stop()
                print(json.dumps(row), flush=True)
                results.append(row)
    finally:
        for b in backends:
            b.stop()
    write_report(args, results)


if __name__ == "__main__":
    main()
