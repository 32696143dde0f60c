#!/usr/bin/env python3
"""bench/abort_latency.py: how fast a balancer lets go of a long-poll its client abandoned
(issue 17: "both sockets freed within 100 ms"), limpet next to nginx.

  python3 bench/abort_latency.py [--limpet build-bench/limpet] [--polls 200] [--rounds 3]

Per round, interleaved (limpet, then nginx; fresh processes each), one worker each, in front of
a backend that reads a request and never answers (it records when the balancer closes each
connection). The client sends --polls long-polls one after the other; for each, once the
backend holds it, the client closes its socket, and the time from that close to the backend
seeing its connection closed is taken (both clocks are this process's). Prints one JSON line per
round and a summary with the medians of the rounds' p50, p99 and max, in milliseconds.
"""

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "lib"))
from bench import Service, stop_all, wait_until  # noqa: E402

LONG_POLL = b"GET /socket.io/?EIO=4&transport=polling&sid=abandoned HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HangingBackend:
    """Reads a request head, never answers; `held` counts heads, `closed` gets each close time."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held = 0
        self.closed = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            data = b""
            while True:  # every head on the connection counts (nginx and limpet pool them)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                with self.lock:
                    self.held += data.count(b"\r\n\r\n")
                data = data.rsplit(b"\r\n\r\n", 1)[-1]
            with self.lock:
                self.closed.append(time.monotonic())

    def close(self):
        self.sock.close()


def limpet_config(port, backend_port):
    return (f'[server]\nworkers = 1\naccess_log = "off"\n\n[[listener]]\naddress = "127.0.0.1:{port}"\n'
            f'upstream = "app"\n\n[[upstream]]\nname = "app"\nengineio_paths = ["/socket.io/"]\n'
            f'read_timeout = "60s"\n\n[[upstream.backend]]\nname = "hang"\naddress = "127.0.0.1:{backend_port}"\n')


def nginx_config(port, backend_port, tmp):
    return (f"worker_processes 1;\ndaemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/nginx-error.log;\n"
            "events { worker_connections 1024; }\nhttp {\n  access_log off;\n"
            f"  client_body_temp_path {tmp}; proxy_temp_path {tmp};\n"
            f"  upstream hang {{ server 127.0.0.1:{backend_port}; keepalive 16; }}\n"
            f"  server {{ listen 127.0.0.1:{port};\n"
            "    location / { proxy_pass http://hang; proxy_http_version 1.1; proxy_set_header Connection \"\";\n"
            "      proxy_read_timeout 60s; } }\n}\n")


def one_round(args, tmp, front):
    backend = HangingBackend()
    port = free_port()
    if front == "limpet":
        conf = tmp / "limpet.toml"
        conf.write_text(limpet_config(port, backend.port))
        service = Service("limpet", [str(args.limpet), "-c", str(conf)], tmp / "limpet.log")
    else:
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(port, backend.port, tmp))
        service = Service("nginx", ["nginx", "-c", str(conf), "-e", str(tmp / "nginx-error.log")], tmp / "nginx.log")
    try:
        wait_until(f"{front} to listen", lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True)
        freed_ms = []
        for i in range(args.polls):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(LONG_POLL)
                wait_until("the backend to hold the long-poll", lambda: backend.held == i + 1, timeout=5, interval=0.001)
                closes = len(backend.closed)
                gone = time.monotonic()
            wait_until("the balancer to close the backend connection", lambda: len(backend.closed) > closes,
                       timeout=args.give_up_s, interval=0.0005)
            freed_ms.append((backend.closed[closes] - gone) * 1000)
        freed_ms.sort()
        return {"front": front, "polls": len(freed_ms), "p50_ms": round(statistics.median(freed_ms), 3),
                "p99_ms": round(freed_ms[min(len(freed_ms) - 1, int(0.99 * len(freed_ms)))], 3),
                "max_ms": round(freed_ms[-1], 3)}
    finally:
        service.stop()
        backend.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limpet", default=str(ROOT / "build-bench" / "limpet"))
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--give-up-s", type=float, default=10.0, help="a close not seen within this fails the run")
    args = ap.parse_args()
    fronts = ["limpet"] + (["nginx"] if shutil.which("nginx") else [])
    results = {f: [] for f in fronts}
    try:
        with tempfile.TemporaryDirectory(prefix="abort-latency-") as d:
            for r in range(args.rounds):
                for front in fronts:
                    res = one_round(args, Path(d), front)
                    res["round"] = r + 1
                    print(json.dumps(res), flush=True)
                    results[front].append(res)
    finally:
        stop_all()
    for front, rows in results.items():
        summary = {k: statistics.median(row[k] for row in rows) for k in ("p50_ms", "p99_ms", "max_ms")}
        print(f"{front}: client close -> backend connection closed, medians of {len(rows)} rounds of "
              f"{args.polls}: p50 {summary['p50_ms']:.3f} ms, p99 {summary['p99_ms']:.3f} ms, "
              f"max {summary['max_ms']:.3f} ms")


if __name__ == "__main__":
    main()
