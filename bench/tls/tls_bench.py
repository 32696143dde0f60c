#!/usr/bin/env python3
"""bench/tls/tls_bench.py: TLS termination, limpet next to nginx with the same certificate (issue 5),
driven by bench/tls/run.sh.

Loads, each against both proxies in turn, interleaved over rounds (the order alternates every
round), with a freshly started proxy for every measurement (after a 1 s warm-up run of the same
load); the table shows medians:

  full           hsload --procs N: full TLS 1.3 handshakes/s (X25519 + the certificate's
                 signature), no request; each client waits for its session ticket, then closes
  resumed        hsload --procs N --resume: TLS 1.3 resumptions/s (PSK + X25519, a fresh ticket
                 every time, as browsers do), no request
  keepalive      wrk -t1 -cC -dDs --latency https://127.0.0.1:PORT/      13-byte responses
  keepalive_16k  the same on /16k: 16 KB responses (record encryption dominates)
  close          (not in the default set) wrk with "Connection: close": one request per
                 connection; wrk offers its last session, so mostly resumption + one request
  h2             h2load -cC -mM -DDs: HTTP/2 requests/s over ALPN h2, 13-byte responses, also
                 against HAProxy (bind ... alpn h2,http/1.1): the only load with three proxies

hsload (bench/tls/hsload.c) stands in for `openssl s_time -new/-reuse`: s_time never reads after
a TLS 1.3 handshake, so it never gets a ticket and `-reuse` silently does full handshakes.

Proxy CPU is utime+stime of all the proxy's processes from /proc (bench/lib/bench.py's helpers),
before and after the measured run, divided by the handshakes or requests it carried. Both proxies
use the backends of bench/backends/backend.c, the same certificate and the same worker count.
Writes bench/results/tls-<date>.md (+ .json with every sample) unless --no-results.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import ssl
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
from bench import (Service, cpu_model, first_line, fmt, get_status, log, measure_once, med,  # noqa: E402
                   parse_wrk, port_free, run_measured, stop_all, wait_for_quiet, wait_until)

FRONTS = ["limpet", "nginx"]
H2_FRONTS = ["limpet", "nginx", "haproxy"]
LOADS = {  # load -> (label, unit of the rate, unit of one operation)
    "full": ("full TLS 1.3 handshakes/s", "handshake"),
    "resumed": ("resumed TLS 1.3 handshakes/s", "handshake"),
    "keepalive": ("HTTPS keep-alive requests/s, 13 B", "request"),
    "keepalive_16k": ("HTTPS keep-alive requests/s, 16 KB", "request"),
    "close": ("HTTPS connection-per-request requests/s (wrk resumes)", "request"),
    "h2": ("HTTP/2 requests/s (h2load), 13 B", "request"),
}
DEFAULT_LOADS = "full,resumed,keepalive,keepalive_16k"


def make_certificate(directory, key_type):
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" else ["-newkey", "rsa:2048"]
    cmd = ["openssl", "req", "-x509", *newkey, "-nodes", "-days", "30", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert]
    subprocess.run(cmd, check=True, capture_output=True)
    with open(os.path.join(directory, "cert+key.pem"), "w") as pem:  # HAProxy's crt: both in one file
        pem.write(open(cert).read() + open(key).read())
    return cert, key, shlex.join(cmd).replace(directory + "/", "")


def https_probe(port, path="/"):
    """(status, details) of one HTTPS GET: TLS version, cipher and the SHA-256 of the certificate
    served, so the report can show that both proxies negotiate the same thing."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        status = get_status(s, path, "localhost")
        details = {"version": s.version(), "cipher": s.cipher()[0],
                   "cert_sha256": hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()[:16]}
    return status, details


def key_exchange_group(port):
    """The key exchange group the server picks for a default client (openssl s_client)."""
    try:
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
                           input="", capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(r"Server Temp Key: ([^\n]+)", r.stdout)
    return m.group(1).strip() if m else "?"


class Fronts:
    """limpet or nginx on its port with the rendered TLS config."""

    def __init__(self, args, work, cert, key):
        self.args, self.work, self.cert, self.key = args, work, cert, key
        self.port = {"limpet": args.port_base + 10, "nginx": args.port_base + 11, "haproxy": args.port_base + 12}
        self.negotiated = {}  # kind -> details of the first probe

    def start(self, kind, workers):
        d = os.path.join(self.work, f"{kind}-w{workers}")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # nginx workers run as nobody and write their temp dirs here
        template, conf = {"limpet": ("limpet-tls.toml.in", "limpet.toml"),
                          "nginx": ("nginx-tls.conf.in", "nginx.conf"),
                          "haproxy": ("haproxy-tls.cfg.in", "haproxy.cfg")}[kind]
        conf = os.path.join(d, conf)
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "lib", "render.py"), os.path.join(HERE, template),
                        conf, "--kind", kind, "--servers", ",".join(map(str, self.args.backend_ports)),
                        f"WORKERS={workers}", f"DIR={d}", f"PORT={self.port[kind]}",
                        f"CERT={self.cert}", f"KEY={self.key}",
                        f"PEM={os.path.join(os.path.dirname(self.cert), 'cert+key.pem')}"], check=True)
        port = self.port[kind]
        if not port_free(port):
            raise RuntimeError(f"port {port} for {kind} is busy (set --port-base)")
        cmd = {"limpet": [self.args.limpet, "-c", conf],
               "nginx": ["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
               "haproxy": ["haproxy", "-f", conf]}[kind]
        svc = Service(kind, cmd, os.path.join(d, "proxy.log"))
        svc.port = port
        probe = {}

        def ready():
            if not svc.alive():
                raise RuntimeError(f"{kind} exited; see {svc.log_path}")
            status, details = https_probe(port)
            probe.update(details)
            return status == 200

        try:
            wait_until(f"{kind} on port {port}", ready, timeout=15)
            if kind == "nginx":
                # Every worker must be up before CPU is sampled.
                wait_until("nginx workers", lambda: len(svc.pids()) >= workers + 1, timeout=5)
            if kind not in self.negotiated:
                probe["group"] = key_exchange_group(port)
                self.negotiated[kind] = probe
        except Exception:
            svc.stop()
            raise
        return svc


def machine_info(args):
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "limpet": first_line([args.limpet, "-v"]) + (f"  ({args.limpet_note})" if args.limpet_note else ""),
        "nginx": first_line(["nginx", "-v"]),
        "nginx built with": next((ln for ln in subprocess.run(["nginx", "-V"], capture_output=True, text=True)
                                  .stderr.splitlines() if ln.startswith("built with")), "?"),
        "openssl": first_line(["openssl", "version"]),
        "wrk": first_line(["wrk", "-v"]).split(" Copyright")[0],
        "loadavg_at_start": open("/proc/loadavg").read().strip(),
        "priority": os.environ.get("BENCH_NICE_APPLIED", "none") + f" (nice value {os.nice(0)})",
    }


class TlsBench:
    def __init__(self, args):
        self.args = args
        self.started = datetime.datetime.now()
        self.work = os.path.join(args.work_dir, "limpet-tls-bench-" + self.started.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(self.work, exist_ok=True)
        self.cert, self.key, self.cert_cmd = make_certificate(self.work, args.key)
        self.fronts = Fronts(args, self.work, self.cert, self.key)
        self.backends = []
        self.samples = {}   # (load, workers, front) -> [metrics]
        self.commands = {}  # load -> command
        self.notes = []

    def start_backends(self):
        for port in self.args.backend_ports + list(self.fronts.port.values()):
            if not port_free(port):
                raise RuntimeError(f"port {port} is busy (set --port-base)")
        for port in self.args.backend_ports:
            b = Service(f"backend-{port}", [self.args.backend_bin, "--port", str(port), "--threads",
                                            str(self.args.backend_threads)],
                        os.path.join(self.work, f"backend-{port}.log"))
            wait_until(f"backend on {port}", lambda p=port: socket.create_connection(("127.0.0.1", p), 1).close() or True)
            self.backends.append(b)

    def rounds(self, load, workers, fn, fronts=FRONTS):
        for r in range(self.args.rounds):
            if self.args.wait_quiet_each:
                busy = wait_for_quiet(self.args.wait_quiet_each)
                if busy >= 15:
                    log(f"machine still {busy:.0f}% busy with other work; measuring anyway")
            for kind in fronts[r % len(fronts):] + fronts[:r % len(fronts)]:
                m = measure_once(f"{load} w{workers} round {r + 1} {kind}", self.notes,
                                 lambda: self.fronts.start(kind, workers), fn)
                if m is not None:
                    self.samples.setdefault((load, workers, kind), []).append(m)

    def wrk(self, load, workers, path, extra):
        a = self.args
        base = ["wrk", "-t1", f"-c{a.conns}"]
        self.commands[load] = (shlex.join([*base, f"-d{a.duration}s", "--latency", *extra,
                                           f"https://127.0.0.1:PORT{path}"]) + "  (after a 1 s warm-up run)")

        def fn(proxy):
            url = f"https://127.0.0.1:{proxy.port}{path}"
            subprocess.run([*base, "-d1s", *extra, url], capture_output=True, timeout=60, check=True)
            ms = run_measured([*base, f"-d{a.duration}s", "--latency", *extra, url], proxy, self.backends,
                              a.duration + 60)
            w = parse_wrk(ms.out)
            return {
                "rate": w["rps"],
                "cpu_us": 1e6 * ms.proxy_cpu / max(1, w["requests"]),
                "p50_ms": w["p50_ms"],
                "p99_ms": w["p99_ms"],
                "errors": w["errors"],
                **ms.cpu_split(),
            }

        self.rounds(load, workers, fn)

    def h2load(self, load, workers):
        a = self.args
        base = ["h2load", f"-c{a.h2_conns}", f"-m{a.h2_streams}"]
        self.commands[load] = (shlex.join([*base, f"-D{a.duration}", "https://127.0.0.1:PORT/"]) +
                               "  (after a 1 s warm-up run)")

        def fn(proxy):
            url = f"https://127.0.0.1:{proxy.port}/"
            subprocess.run([*base, "-D1", url], capture_output=True, timeout=60, check=True)
            ms = run_measured([*base, f"-D{a.duration}", url], proxy, self.backends, a.duration + 60)
            done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                             ms.out)
            rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", ms.out)
            if not done or not rate:
                raise RuntimeError("unexpected h2load output: " + ms.out[-500:])
            if "h2" not in re.search(r"Application protocol: (\S+)", ms.out).group(1):
                raise RuntimeError(f"{proxy.name} did not negotiate h2: " + ms.out[-500:])
            succeeded = int(done.group(1))
            return {
                "rate": float(rate.group(1)),
                "cpu_us": 1e6 * ms.proxy_cpu / max(1, succeeded),
                "errors": int(done.group(2)) + int(done.group(3)),
                **ms.cpu_split(),
            }

        self.rounds(load, workers, fn, H2_FRONTS)

    def handshakes(self, load, workers, resume):
        a = self.args
        opts = ["--procs", str(a.procs), "--duration", str(a.duration)] + (["--resume"] if resume else [])
        self.commands[load] = shlex.join(["hsload", "--port", "PORT", *opts]) + "  (after a 1 s warm-up run)"

        def fn(proxy):
            base = [a.hsload, "--port", str(proxy.port), "--procs", str(a.procs)] + (["--resume"] if resume else [])
            subprocess.run([*base, "--duration", "1"], capture_output=True, timeout=60, check=True)
            ms = run_measured([*base, "--duration", str(a.duration)], proxy, self.backends, a.duration + 60)
            r = json.loads(ms.out)
            if r["handshakes"] == 0:
                raise RuntimeError("hsload made no handshake: " + ms.out.strip())
            return {
                "rate": r["rate"],
                "cpu_us": 1e6 * ms.proxy_cpu / r["handshakes"],
                "resumed_pct": 100.0 * r["resumed"] / r["handshakes"],
                "tickets_each": r["tickets"] / r["handshakes"],
                "errors": r["errors"] + r["no_ticket"],
                **ms.cpu_split(),
            }

        self.rounds(load, workers, fn)

    def run(self):
        self.loadavg = [open("/proc/loadavg").read().strip(), None]
        self.start_backends()
        try:
            for workers in self.args.workers:
                for load in self.args.loads:
                    if load == "full":
                        self.handshakes(load, workers, resume=False)
                    elif load == "resumed":
                        self.handshakes(load, workers, resume=True)
                    elif load == "keepalive":
                        self.wrk(load, workers, "/", [])
                    elif load == "keepalive_16k":
                        self.wrk(load, workers, "/16k", [])
                    elif load == "close":
                        self.wrk(load, workers, "/", ["-H", "Connection: close"])
                    elif load == "h2":
                        self.h2load(load, workers)
        finally:
            stop_all()
            self.loadavg[1] = open("/proc/loadavg").read().strip()
            self.finished = datetime.datetime.now()

    # -- report

    def table(self):
        lines = ["| load | workers | limpet | nginx | limpet/nginx | limpet CPU µs each | nginx CPU µs each "
                 "| limpet/nginx CPU |",
                 "|---|---|---|---|---|---|---|---|"]
        for workers in self.args.workers:
            for load in self.args.loads:
                if load == "h2":
                    continue  # three proxies: h2_table()
                cells = {k: self.samples.get((load, workers, k), []) for k in FRONTS}
                lr, nr = med(cells["limpet"], "rate"), med(cells["nginx"], "rate")
                lc, nc = med(cells["limpet"], "cpu_us"), med(cells["nginx"], "cpu_us")
                if lr is None and nr is None:
                    continue
                ratio = f"{lr / nr:.2f}" if lr and nr else "—"
                cratio = f"{lc / nc:.2f}" if lc and nc else "—"
                lines.append(f"| {LOADS[load][0]} | {workers} | {fmt(lr)} | {fmt(nr)} | {ratio} | {fmt(lc)} | "
                             f"{fmt(nc)} | {cratio} |")
        return "\n".join(lines) if len(lines) > 2 else "(only the HTTP/2 load was run: below)"

    def h2_table(self):
        lines = ["| workers | limpet req/s | nginx req/s | HAProxy req/s | limpet/nginx | limpet/HAProxy | "
                 "limpet CPU µs/req | nginx CPU µs/req | HAProxy CPU µs/req |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for workers in self.args.workers:
            cells = {k: self.samples.get(("h2", workers, k), []) for k in H2_FRONTS}
            rate = {k: med(v, "rate") for k, v in cells.items()}
            cpu = {k: med(v, "cpu_us") for k, v in cells.items()}
            ratio = {k: f"{rate['limpet'] / rate[k]:.2f}" if rate["limpet"] and rate[k] else "—" for k in H2_FRONTS}
            lines.append(f"| {workers} | {fmt(rate['limpet'])} | {fmt(rate['nginx'])} | {fmt(rate['haproxy'])} | "
                         f"{ratio['nginx']} | {ratio['haproxy']} | {fmt(cpu['limpet'])} | {fmt(cpu['nginx'])} | "
                         f"{fmt(cpu['haproxy'])} |")
        return "\n".join(lines)

    def detail_table(self):
        """Latency, resumption share, errors and how the machine was shared, medians."""
        lines = ["| load | workers | proxy | p50 ms | p99 ms | resumed % | errors (sum) | proxy CPU % | "
                 "client CPU % | backend CPU % | other work % of machine |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for workers in self.args.workers:
            for load in self.args.loads:
                for kind in H2_FRONTS if load == "h2" else FRONTS:
                    s = self.samples.get((load, workers, kind), [])
                    if not s:
                        continue
                    errors = sum(x.get("errors", 0) for x in s)
                    lines.append(f"| {load} | {workers} | {kind} | {fmt(med(s, 'p50_ms'))} | {fmt(med(s, 'p99_ms'))} | "
                                 f"{fmt(med(s, 'resumed_pct'))} | {errors} | {fmt(med(s, 'proxy_cpu_pct'))} | "
                                 f"{fmt(med(s, 'client_cpu_pct'))} | {fmt(med(s, 'backend_cpu_pct'))} | "
                                 f"{fmt(med(s, 'other_cpu_pct'))} |")
        return "\n".join(lines)

    def report(self, info):
        a = self.args
        title = "TLS termination: limpet vs nginx" + (", HTTP/2 also vs HAProxy" if "h2" in a.loads else "")
        out = [f"# {title} — {self.started:%Y-%m-%d}\n",
               f"Command: `{a.command_line}`  ",
               f"Started {self.started:%Y-%m-%d %H:%M:%S}, finished {self.finished:%H:%M:%S} "
               f"({(self.finished - self.started).total_seconds() / 60:.1f} min). {a.rounds} interleaved rounds per "
               f"load and worker count (the order of the proxies rotates), each proxy freshly started for "
               f"every measurement, {a.duration} s per measurement after a 1 s warm-up; figures are medians.\n",
               "## Results\n", self.table(), "",
               *(["### HTTP/2 (h2load over ALPN h2; backends in HTTP/1.1 keep-alive)\n", self.h2_table(), ""]
                 if "h2" in a.loads else []),
               "Rates: higher is better. CPU: the proxy's utime+stime (all its processes and threads) during "
               "the measured run divided by the handshakes or requests done, lower is better. On 2 cores the "
               "client, the proxy and the backends share the machine, so a rate also depends on how much CPU "
               "the client needs (a TLS client does more work per handshake than the server: it verifies "
               "the signature) and on how the scheduler splits the cores; the CPU per handshake or request "
               "is the robust comparison.\n",
               "### Details (medians)\n", self.detail_table(), "",
               "## Machine and versions\n"]
        out += [f"- {k}: {v}" for k, v in info.items()]
        out.append(f"- load average at the end: {self.loadavg[1]}")
        out += ["", "## Setup\n",
                f"- Certificate (the same files for both): {'ECDSA P-256' if a.key == 'ec' else 'RSA 2048'}, "
                f"self-signed, made by `{self.cert_cmd}`.",
                "- Negotiated (first probe of each proxy, Python ssl default client + `openssl s_client`): " +
                "; ".join(f"{k}: {d.get('version')} {d.get('cipher')}, {d.get('group')}, certificate sha256 "
                          f"{d.get('cert_sha256')}…" for k, d in self.fronts.negotiated.items()) + ".",
                "- limpet: bench/tls/limpet-tls.toml.in (TLS defaults: 1.2 + 1.3, ECDHE + AEAD, server cipher "
                "preference, X25519:P-256:P-384, stateless tickets with rotating keys, SSL_MODE_RELEASE_BUFFERS).",
                "- nginx: bench/tls/nginx-tls.conf.in (the same protocols, ciphers, curves and tickets; nginx "
                "sets SSL_MODE_RELEASE_BUFFERS too; no ssl_session_cache, so resumption is by ticket on both).",
                "- HAProxy (h2 load only): bench/tls/haproxy-tls.cfg.in (the same certificate as one PEM, versions, "
                "ciphers, curves; `alpn h2,http/1.1`; `http-reuse always` to the backends).",
                "- HTTP/2 on all three: ALPN h2, default SETTINGS of each (limpet: 128 streams, 64 KiB stream "
                "windows), backends in HTTP/1.1 with keep-alive.",
                f"- Backends: 2 × bench/backends/backend.c ({a.backend_threads} thread(s) each), plain HTTP "
                "keep-alive behind both proxies; consistent hash of the client address on both.",
                f"- Configs, certificate and logs were rendered into {self.work}.", "",
                "## Commands\n"]
        out += [f"- {load}: `{self.commands[load]}`" for load in a.loads if load in self.commands]
        out.append(f"- PORT: limpet {self.fronts.port['limpet']}, nginx {self.fronts.port['nginx']}, HAProxy "
                   f"{self.fronts.port['haproxy']} (h2 only); hsload is "
                   "bench/tls/hsload.c (built by bench/tls/run.sh).\n")
        others = [x["other_cpu_pct"] for ss in self.samples.values() for x in ss if "other_cpu_pct" in x]
        if others:
            self.notes.append(f"CPU used by processes outside the benchmark during the measurements: median "
                              f"{statistics.median(others):.0f}%, max {max(others):.0f}% of the machine.")
        if self.notes:
            out.append("## Notes\n")
            out += [f"- {n}" for n in self.notes]
            out.append("")
        out += ["## Every sample\n", "```"]
        for (load, w, kind), ss in sorted(self.samples.items()):
            for i, s in enumerate(ss):
                out.append(f"{load} w{w} {kind} #{i + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in s.items()))
        out.append("```")
        return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limpet", required=True)
    ap.add_argument("--limpet-note", default="")
    ap.add_argument("--backend-bin", required=True)
    ap.add_argument("--hsload", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--workers", default="1,2", help="worker counts, both proxies")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections")
    ap.add_argument("--procs", type=int, default=4, help="hsload client processes")
    ap.add_argument("--h2-conns", type=int, default=16, help="h2load connections")
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load concurrent streams per connection")
    ap.add_argument("--key", choices=["ec", "rsa"], default="ec")
    ap.add_argument("--loads", default=DEFAULT_LOADS, help="from " + ",".join(LOADS))
    ap.add_argument("--backend-threads", type=int, default=2)
    ap.add_argument("--wait-quiet", type=int, default=120,
                    help="seconds to wait for other work on the machine to settle before starting")
    ap.add_argument("--wait-quiet-each", type=int, default=10,
                    help="the same before every round, at most this long (0: never)")
    ap.add_argument("--port-base", type=int, default=23700)
    ap.add_argument("--work-dir", default="/tmp")
    ap.add_argument("--results", default="", help="report path (default bench/results/tls-<date>[-tag].md)")
    ap.add_argument("--no-results", action="store_true", help="print the report only")
    ap.add_argument("--command-line", default="bench/tls/run.sh")
    args = ap.parse_args()
    args.loads = args.loads.split(",")
    for load in args.loads:
        if load not in LOADS:
            ap.error(f"unknown load {load}; known: {', '.join(LOADS)}")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.backend_ports = [args.port_base + 1, args.port_base + 2]

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (stop_all(), sys.exit(130)))

    info = machine_info(args)
    bench = TlsBench(args)
    log(f"work dir {bench.work}; {args.rounds} round(s) of {args.duration} s, workers {args.workers}, "
        f"loads {','.join(args.loads)}")
    busy = wait_for_quiet(args.wait_quiet)
    info["machine_busy_before_start"] = f"{busy:.0f}% (waited up to {args.wait_quiet} s for < 15%)"
    if busy >= 15:
        bench.notes.append(f"The machine was {busy:.0f}% busy with other work when the run started: rates are "
                           "noisy; CPU per handshake or request is the robust figure.")
    bench.run()
    text = bench.report(info)
    if not args.no_results:
        path = args.results or os.path.join(ROOT, "bench", "results", f"tls-{bench.started:%Y-%m-%d}.md")
        with open(path, "w") as f:
            f.write(text)
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump({"info": info, "command": args.command_line, "commands": bench.commands,
                       "negotiated": bench.fronts.negotiated,
                       "samples": [{"load": ld, "workers": w, "front": fr, "rounds": ss}
                                   for (ld, w, fr), ss in sorted(bench.samples.items())]}, f, indent=1)
        log(f"results: {path}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
