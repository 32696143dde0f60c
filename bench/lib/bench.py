#!/usr/bin/env python3
"""bench/lib/bench.py: the side-by-side benchmark of issue 6, driven by bench/run.sh.

Starts identical backends (bench/backends/backend.c), puts limpet, nginx and HAProxy in front of
them with equivalent configs (bench/peers/), and runs every load against each front in turn,
interleaved over several rounds (the order rotates each round so no proxy always goes first).
Each measurement gets a freshly started proxy. Medians go into one table with the ratios
limpet/nginx and limpet/HAProxy and the targets of issue 6; the machine, versions and the exact
command of every figure are recorded next to it.

Proxy CPU is utime+stime of every process of the proxy (nginx master and workers; limpet's and
HAProxy's threads are in their process) from /proc/PID/stat before and after a load; memory is
the sum of VmRSS from /proc/PID/status. Every load stops by itself and targets 127.0.0.1 only.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FRONTS = ["limpet", "nginx", "haproxy"]
LABEL = {"limpet": "limpet", "nginx": "nginx", "haproxy": "HAProxy"}

_started = []  # every Service we started, so that an interrupted run cleans up after itself


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- /proc ------------------------------------------------------------------------------------

def _children_of():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def process_tree(pid):
    kids = _children_of()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def machine_ticks():
    """(busy, total, irq + softirq) ticks of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v), v[5] + v[6]


# --- processes --------------------------------------------------------------------------------

class Service:
    """A process we started, in its own process group so that it and its children stop together."""

    def __init__(self, name, cmd, log_path, env=None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.log.write(f"--- {time.ctime()} {shlex.join(cmd)}\n".encode())
        self.log.flush()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        _started.append(self)

    def pids(self):
        return process_tree(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        else:
            # The leader is gone; children (nginx workers) may not be.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()
        if self in _started:
            _started.remove(self)


def stop_all():
    for s in list(_started):
        try:
            s.stop(timeout=2)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def get_status(sock, path, host):
    """Sends one GET on a connected socket (plain or TLS) and returns the response's status, 0 if
    none came: independent of every HTTP library."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else 0


def http_get(port, path="/", timeout=2.0):
    """Status of one GET through a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return get_status(s, path, f"127.0.0.1:{port}")


def wait_until(what, check, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as e:
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}" + (f" ({last})" if last else ""))


# --- the fronts -------------------------------------------------------------------------------

class Fronts:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.port = {"limpet": args.port_base + 10, "nginx": args.port_base + 11, "haproxy": args.port_base + 12}

    def config(self, kind, workers, servers, template=None, instance=0, session_store=0):
        d = os.path.join(self.work, f"{kind}-w{workers}" + ("-" + template if template else "")
                         + (f"-{instance + 1}" if session_store else ""))
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # nginx workers run as nobody and write their temp dirs here
        tmpl = {"limpet": "limpet.toml.in", "nginx": "nginx.conf.in", "haproxy": "haproxy.cfg.in"}[kind]
        extra = []
        if template == "socketio" and kind != "limpet":
            pass  # nginx and HAProxy front the Socket.IO nodes with their usual config
        elif kind == "limpet" and template == "socketio":
            tmpl = "limpet-socketio.toml.in"
        elif kind == "limpet" and template in ("shipped-text", "shipped-json"):
            # conf/limpet.toml with the access log in a file of this directory (see the template).
            tmpl = "limpet-shipped.toml.in"
            extra = [f"ACCESS_LOG={os.path.join(d, 'access.log')}", f"ACCESS_LOG_FORMAT={template[8:]}",
                     f"ADMIN_PORT={self.args.port_base + 13 + instance}"]
        elif template is not None:
            raise ValueError(f"no {kind} config template {template!r}")
        out = os.path.join(d, {"limpet": "limpet.toml", "nginx": "nginx.conf", "haproxy": "haproxy.cfg"}[kind])
        subprocess.run([sys.executable, os.path.join(BENCH, "lib", "render.py"), os.path.join(BENCH, "peers", tmpl),
                        out, "--kind", kind, "--servers", ",".join(map(str, servers)),
                        f"WORKERS={workers}", f"DIR={d}", f"PORT={self.port[kind]}", *extra], check=True)
        if session_store:
            # Scale-out: every instance shares the sids it learns through this Redis (limpet.toml(5)).
            with open(out) as f:
                text = f.read().replace("[server]\n", "[server]\nshared_listeners = true\n", 1)
            with open(out, "w") as f:
                f.write(text + f'\n[session_store]\naddress = "127.0.0.1:{session_store}"\n'
                        f'instance = "bench-{instance + 1}"\n')
        return d, out

    def command(self, kind, conf, d):
        if kind == "limpet":
            return [self.args.limpet, "-c", conf]
        if kind == "nginx":
            return ["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")]
        return ["haproxy", "-f", conf]

    def start(self, kind, workers, servers, template=None, env=None, probe="/"):
        d, conf = self.config(kind, workers, servers, template)
        port = self.port[kind]
        if not port_free(port):
            raise RuntimeError(f"port {port} for {kind} is busy")
        svc = Service(kind, self.command(kind, conf, d), os.path.join(d, "proxy.log"), env)
        svc.conf = conf
        svc.port = port

        def ready():
            if not svc.alive():
                raise RuntimeError(f"{kind} exited; see {svc.log_path}")
            return http_get(port, probe) == 200

        try:
            wait_until(f"{kind} on port {port}", ready, timeout=15)
            if kind == "nginx":
                # Every worker must be up before CPU and memory are sampled.
                wait_until("nginx workers", lambda: len(svc.pids()) >= workers + 1, timeout=5)
        except Exception:
            svc.stop()
            raise
        return svc

    def start_instances(self, count, workers, servers, template, session_store, probe="/"):
        """`count` limpet processes on one port (SO_REUSEPORT: the kernel spreads connections over
        them as an L4 balancer would, so one session's requests reach different instances), sharing
        `session_store` (a Redis port). One group for the measurement: CPU sums all of them."""
        port = self.port["limpet"]
        if not port_free(port):
            raise RuntimeError(f"port {port} for limpet is busy")
        group = ServiceGroup(port)
        try:
            for i in range(count):
                d, conf = self.config("limpet", workers, servers, template, instance=i, session_store=session_store)
                svc = Service(f"limpet-{i + 1}", self.command("limpet", conf, d), os.path.join(d, "proxy.log"))
                group.members.append(svc)
                admin = self.args.port_base + 13 + i
                wait_until(f"limpet instance {i + 1}", lambda: not svc.alive() or not port_free(admin),
                           timeout=15)
                if not svc.alive():
                    raise RuntimeError(f"limpet instance {i + 1} exited; see {svc.log_path}")
            wait_until(f"limpet on port {port}", lambda: http_get(port, probe) == 200, timeout=15)
        except Exception:
            group.stop()
            raise
        return group


class ServiceGroup:
    """Several Services measured as one front (their CPU and memory add up)."""

    def __init__(self, port):
        self.port = port
        self.members = []

    def pids(self):
        return [p for m in self.members for p in m.pids()]

    def alive(self):
        return all(m.alive() for m in self.members)

    def stop(self, timeout=5.0):
        for m in self.members:
            m.stop(timeout)


# --- loads ------------------------------------------------------------------------------------

def parse_wrk_time(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]  # milliseconds


def parse_wrk(out):
    """What a `wrk --latency` run printed: requests, requests/s, p50/p99 in ms, and errors (socket
    errors plus non-2xx/3xx responses)."""
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": parse_wrk_time(lat.get("50", "")),
        "p99_ms": parse_wrk_time(lat.get("99", "")),
        "errors": errors,
    }


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Measured:
    """One load run: its stdout, the CPU seconds of the proxy, the backends and the client, and
    how much of the machine went to processes outside the benchmark (a busy machine skews every
    figure but CPU per request)."""

    def __init__(self, out, proxy_cpu, backend_cpu, client_cpu, wall, machine_cpu, softirq):
        self.out = out
        self.proxy_cpu = proxy_cpu
        self.backend_cpu = backend_cpu
        self.client_cpu = client_cpu
        self.wall = wall
        # With IRQ time accounting the kernel books loopback packet delivery (softirq) to no
        # process: it is missing from every process's utime+stime, so it is reported on its own.
        self.softirq = softirq
        ncpu = os.cpu_count() or 1
        self.busy_pct = 100.0 * machine_cpu / (wall * ncpu)
        self.other_pct = max(0.0, 100.0 * (machine_cpu - proxy_cpu - backend_cpu - client_cpu - softirq)
                             / (wall * ncpu))

    def diag(self):
        return {"backend_cpu_pct": 100.0 * self.backend_cpu / self.wall, "machine_busy_pct": self.busy_pct,
                "softirq_pct": 100.0 * self.softirq / (self.wall * (os.cpu_count() or 1)),
                "other_cpu_pct": self.other_pct}

    def cpu_split(self):
        """Where the CPU went, in % of one core (other work: % of the machine)."""
        return {"proxy_cpu_pct": 100.0 * self.proxy_cpu / self.wall,
                "client_cpu_pct": 100.0 * self.client_cpu / self.wall,
                "backend_cpu_pct": 100.0 * self.backend_cpu / self.wall,
                "other_cpu_pct": self.other_pct}


def run_measured(cmd, proxy, backends, timeout, extra_pids=()):
    pids = proxy.pids()
    bpids = [p for b in backends for p in b.pids()] + list(extra_pids)
    c0, b0, k0, m0 = cpu_seconds(pids), cpu_seconds(bpids), children_cpu(), machine_ticks()
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    c1, b1, k1, m1 = cpu_seconds(pids), cpu_seconds(bpids), children_cpu(), machine_ticks()
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}")
    return Measured(res.stdout, c1 - c0, b1 - b0, k1 - k0, wall, (m1[0] - m0[0]) / CLK_TCK,
                    (m1[2] - m0[2]) / CLK_TCK)


# --- limpet's own configurations: minimal vs shipped (issue 10, issue 14) ------------------------

# Rows measured on limpet alone: name -> (config template for Fronts.start, request kind).
# None is limpet.toml.in, the config of every other row (no sid learning, no access log);
# "shipped-text"/"shipped-json" is limpet-shipped.toml.in, i.e. conf/limpet.toml with the access
# log in a file, as text or JSON lines. "plain" is `GET /`; "sid" is an Engine.IO polling GET
# carrying the sid of a session limpet learned from a handshake it proxied, i.e. the product's own
# path: route by sid (affinity lookup), proxy, access-log line.
CONFIG_ROWS = {
    "minimal": (None, "plain"),
    "shipped-text-plain": ("shipped-text", "plain"),
    "shipped-text": ("shipped-text", "sid"),
    "shipped-json-plain": ("shipped-json", "plain"),
    "shipped-json": ("shipped-json", "sid"),
}
ENGINEIO_HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


def warm_sio_cluster(nodes, concurrency, seconds=3):
    """Node compiles its hot paths under load: without this the first front measured meets colder
    nodes than the last. Each node gets the Socket.IO load directly, no proxy in between."""
    for node in nodes:
        subprocess.run(["node", os.path.join(BENCH, "lib", "sio_load.js"), "--url", f"http://127.0.0.1:{node}",
                        "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "0"],
                       capture_output=True, timeout=60, check=True)


def engineio_handshake(port, timeout=2.0):
    """One Engine.IO v4 polling handshake through the proxy (raw socket, Connection: close):
    returns the sid of the open packet the backend answered, which the proxy has learned."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {ENGINEIO_HANDSHAKE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.1 200 .*?\r\n\r\n0\{\"sid\":\"([A-Za-z0-9_-]+)\"", data, re.S)
    if not m:
        raise RuntimeError(f"no Engine.IO open packet in the handshake answer: {data[:200]!r}")
    return m.group(1).decode()


def wrk_targets_script(path, targets):
    """A wrk Lua script sending GETs for `targets` in turn (the requests are formatted once, in
    init: per request the client only hands back a prepared string)."""
    with open(path, "w") as f:
        f.write("-- bench/lib/bench.py: GET each target in turn\n")
        f.write("local targets = {" + ", ".join(json.dumps(t) for t in targets) + "}\n")
        f.write("local reqs, n = {}, 0\n"
                "function init(args)\n"
                "  for i, t in ipairs(targets) do reqs[i] = wrk.format(\"GET\", t) end\n"
                "end\n"
                "function request()\n"
                "  n = n % #reqs + 1\n"
                "  return reqs[n]\n"
                "end\n")
    return path


def malloc_calls(counter_file):
    """malloc + calloc + realloc + aligned calls so far (bench/lib/malloc_count.c's counters)."""
    with open(counter_file, "rb") as f:
        words = f.read(40)
    v = [int.from_bytes(words[i:i + 8], "little") for i in range(0, 40, 8)]
    return v[0] + v[1] + v[2] + v[3]


def config_row_command(row, seconds, warm, conns, sessions):
    template, request = CONFIG_ROWS[row]
    conf = "bench/peers/limpet.toml.in" if template is None else \
        f"bench/peers/limpet-shipped.toml.in (access_log_format = \"{template[8:]}\", access_log = DIR/access.log)"
    if request == "sid":
        load = (f"{sessions} × `GET {ENGINEIO_HANDSHAKE}` through limpet (it learns each sid from the open "
                f"packet), then wrk -t1 -c{conns} -d{seconds:g}s --latency -s targets.lua (GET "
                f"{ENGINEIO_HANDSHAKE}&sid=SID, the {sessions} sids in turn)")
    else:
        load = f"wrk -t1 -c{conns} -d{seconds:g}s --latency -s targets.lua (GET /)"
    return (f"{conf}; {load}" + (f" after a {warm:g} s warm-up run" if warm else "") +
            "; allocations: the same in a second fresh limpet under LD_PRELOAD=malloc_count.so, counted from "
            "0.5 s after wrk starts to 0.5 s before it ends, over the requests the backends answered in that "
            "window (GET /__bench/requests on each)")


def backend_requests(ports):
    """Requests the bench backends on `ports` have answered so far (their /__bench/requests),
    asked directly, not through the proxy."""
    total = 0
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /__bench/requests HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        total += int(data.split(b"\r\n\r\n", 1)[1])
    return total


def measure_config_row(row, proxy, backends, work, seconds, warm=1, conns=64, sessions=64, counter=None,
                       backend_ports=(), idle_window=2.0, margin=0.5):
    """One row of CONFIG_ROWS on a freshly started limpet (`proxy`, a Service started with the
    row's template): handshakes for the sid rows, a warm-up, then the measured wrk run.

    Without `counter`: requests/s, p50/p99 and the proxy's CPU µs per request over the run.
    With `counter` (limpet runs under malloc_count.so writing there): the malloc-family calls per
    steady-state request, counted inside the run from `margin` s after wrk starts (its connections
    are up) to `margin` s before it ends (before they close), divided by the requests the backends
    answered over the same window (`backend_ports`, /__bench/requests); allocs_per_req_whole_run
    is the older figure (the whole run, with the connections' setup, over wrk's count). Before the
    warm-up, what an idle limpet allocates over `idle_window` s (health probes, housekeeping):
    idle_allocs_per_s. The access log is read back: lines per request, and for the sid rows the
    share of lines routed by affinity (affinity_share)."""
    template, request = CONFIG_ROWS[row]
    targets = ["/"]
    if request == "sid":
        targets = [f"{ENGINEIO_HANDSHAKE}&sid={engineio_handshake(proxy.port)}" for _ in range(sessions)]
    script = wrk_targets_script(os.path.join(work, f"targets-{row}.lua"), targets)
    url = f"http://127.0.0.1:{proxy.port}/"
    m = {}
    if counter and idle_window > 0:
        i0 = malloc_calls(counter)
        time.sleep(idle_window)
        m["idle_allocs_per_s"] = (malloc_calls(counter) - i0) / idle_window
    if warm:
        subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{warm:g}s", "-s", script, url], capture_output=True,
                       timeout=warm + 30, check=True)
    access_log = os.path.join(os.path.dirname(proxy.conf), "access.log") if template else None
    log_offset = os.path.getsize(access_log) if access_log and os.path.exists(access_log) else 0
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", script, url]
    if counter:
        if seconds <= 2 * margin + 0.5:
            raise ValueError(f"a counted run needs more than {2 * margin + 0.5:g} s")

        def sample():
            r0 = backend_requests(backend_ports)
            a = malloc_calls(counter)
            return a, (r0 + backend_requests(backend_ports)) / 2.0

        a0 = malloc_calls(counter)
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(margin)
            w0, r0 = sample()
            time.sleep(max(0.0, t0 + seconds - margin - time.monotonic()))
            w1, r1 = sample()
            out, err = p.communicate(timeout=seconds + 60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {err.strip()[-500:]}")
        a1 = malloc_calls(counter)
        w = parse_wrk(out)
        m.update(allocs_per_req=(w1 - w0) / max(1.0, r1 - r0), window_requests=round(r1 - r0),
                 allocs_per_req_whole_run=(a1 - a0) / max(1, w["requests"]), requests=w["requests"],
                 errors=w["errors"])
    else:
        ms = run_measured(cmd, proxy, backends, seconds + 60)
        w = parse_wrk(ms.out)
        reqs = max(1, w["requests"])
        m.update(rps=w["rps"], p50_ms=w["p50_ms"], p99_ms=w["p99_ms"], cpu_us_per_req=1e6 * ms.proxy_cpu / reqs,
                 errors=w["errors"], requests=w["requests"], **ms.diag())
    if access_log:
        # Lines written during the measured run (wrk's last requests may be logged just after it).
        lines = affinity = 0
        mark = '"reason":"affinity"' if template == "shipped-json" else "reason=affinity"
        with open(access_log, errors="replace") as f:
            f.seek(log_offset)
            for line in f:
                lines += 1
                affinity += mark in line
        m["log_lines_per_req"] = lines / max(1, w["requests"])
        if request == "sid":
            m["affinity_share"] = affinity / max(1, lines)
        os.remove(access_log)  # ~150 B a request: do not let the runs fill the disk
    return m


def wait_for_quiet(limit_s, threshold_pct=15.0):
    """Waits (up to limit_s) until processes outside the benchmark use under threshold_pct of the
    machine over a 2-second sample; returns the last sample."""
    deadline = time.monotonic() + limit_s
    while True:
        m0 = machine_ticks()
        time.sleep(2)
        m1 = machine_ticks()
        busy = 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        log(f"machine {busy:.0f}% busy with other work; waiting for it to settle")


class Bench:
    def __init__(self, args):
        self.args = args
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.work = os.path.join(args.work_dir, f"limpet-bench-{stamp}")
        os.makedirs(self.work, exist_ok=True)
        self.fronts = Fronts(args, self.work)
        self.backend_ports = [args.port_base + 1, args.port_base + 2]
        self.backends = []
        self.samples = {}   # (scenario, workers, front) -> [metrics dict per round]
        self.commands = {}  # scenario -> command template
        self.notes = []
        q = args.quick
        self.d = int(args.duration or (2 if q else 5))       # seconds per measured load (wrk: whole)
        self.rounds = args.rounds or (1 if q else 3)
        self.warm = 0 if q else 1  # wrk warm-up run (whole seconds); none in --quick
        self.idle_tunnels = args.idle_tunnels or (3000 if q else 9000)

    # -- lifecycle

    def start_backends(self):
        for port in self.backend_ports + [self.fronts.port[k] for k in FRONTS]:
            if not port_free(port):
                raise RuntimeError(f"port {port} is busy (set --port-base)")
        for port in self.backend_ports:
            b = Service(f"backend-{port}", [self.args.backend_bin, "--port", str(port), "--threads",
                                            str(self.args.backend_threads)],
                        os.path.join(self.work, f"backend-{port}.log"))
            wait_until(f"backend on {port}", lambda p=port: http_get(p) == 200)
            self.backends.append(b)

    def stop_backends(self):
        for b in self.backends:
            b.stop()
        self.backends = []

    def record(self, scenario, workers, front, metrics):
        self.samples.setdefault((scenario, workers, front), []).append(metrics)

    def rounds_of(self, scenario, workers, fn, template=None, servers=None, probe="/", rounds=None, start=None,
                  fronts=None):
        """Runs fn(front, proxy) for each front (of `fronts`, default all), interleaved, self.rounds
        times. `start(kind)`, when given, starts the front instead of Fronts.start."""
        def start_front(kind):
            if start is not None:
                return start(kind)
            return self.fronts.start(kind, workers, servers or self.backend_ports, template, probe=probe)

        for r in range(rounds or self.rounds):
            order = FRONTS[r % 3:] + FRONTS[:r % 3]
            for kind in order:
                if kind not in self.args.fronts or (fronts is not None and kind not in fronts):
                    continue
                m = measure_once(f"{scenario} w{workers} round {r + 1} {kind}", self.notes,
                                 lambda: start_front(kind),
                                 lambda proxy: fn(kind, proxy))
                if m is not None:
                    self.record(scenario, workers, kind, m)

    # -- HTTP

    def wrk(self, scenario, path, workers):
        conns = self.args.wrk_conns
        self.commands[scenario] = (f"wrk -t1 -c{conns} -d{self.d:g}s --latency http://127.0.0.1:PORT{path}"
                                   + (f"  (after a {self.warm} s warm-up run)" if self.warm else ""))

        def fn(kind, proxy):
            url = f"http://127.0.0.1:{proxy.port}{path}"
            if self.warm:
                subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{self.warm}s", url], capture_output=True,
                               timeout=self.warm + 30, check=True)
            ms = run_measured(["wrk", "-t1", f"-c{conns}", f"-d{self.d:g}s", "--latency", url], proxy,
                              self.backends, self.d + 60)
            w = parse_wrk(ms.out)
            reqs = max(1, w["requests"])
            return {
                "rps": w["rps"],
                "p50_ms": w["p50_ms"],
                "p99_ms": w["p99_ms"],
                "cpu_us_per_req": 1e6 * ms.proxy_cpu / reqs,
                "softirq_us_per_req": 1e6 * ms.softirq / reqs,
                "errors": w["errors"],
                **ms.diag(),
            }

        self.rounds_of(scenario, workers, fn)

    def http_open(self, scenario, workers):
        rate, conns = self.args.http_rate, self.args.wrk_conns
        warm = 1.0
        self.commands[scenario] = (f"wsload http --port PORT --path / --conns {conns} --rate {rate} "
                                   f"--duration {self.d:g} --warmup {warm:g}")

        def fn(kind, proxy):
            cmd = [self.args.wsload, "http", "--port", str(proxy.port), "--path", "/", "--conns", str(conns),
                   "--rate", str(rate), "--duration", f"{self.d:g}", "--warmup", f"{warm:g}"]
            ms = run_measured(cmd, proxy, self.backends, self.d + 90)
            r = json.loads(ms.out)
            return {
                "rate": r["rate"], "p50_us": r["p50_us"], "p99_us": r["p99_us"], "p999_us": r["p999_us"],
                "cpu_us_per_req": 1e6 * ms.proxy_cpu / max(1, r["received"]),
                "softirq_us_per_req": 1e6 * ms.softirq / max(1, r["received"]),
                "errors": r["connect_errors"] + r["dropped"] + r["lost"] + r["non_200"],
                "client_lag_p99_us": r["lag_p99_us"], **ms.diag(),
            }

        self.rounds_of(scenario, workers, fn)

    def mallocs(self, workers):
        """Heap allocations per request and per WebSocket message (LD_PRELOAD counter)."""
        if not os.path.exists(self.args.malloc_count):
            return
        scenario = "mallocs"
        self.commands[scenario] = (f"LD_PRELOAD=malloc_count.so MALLOC_COUNT_FILE=F <proxy>; then "
                                   f"wrk -t1 -c{self.args.wrk_conns} -d{self.d:g}s http://127.0.0.1:PORT/ and "
                                   f"wsload throughput --conns 100 --window 16 --size 64 --duration {max(3, self.d)} "
                                   f"--warmup 1 (counted from 1.5 s to 0.5 s before its end); "
                                   f"counts read from F before/after")
        for kind in FRONTS:
            if kind not in self.args.fronts:
                continue
            cnt = os.path.join(self.work, f"malloc-{kind}.cnt")
            if os.path.exists(cnt):
                os.remove(cnt)
            env = {"LD_PRELOAD": self.args.malloc_count, "MALLOC_COUNT_FILE": cnt}
            proxy = self.fronts.start(kind, workers, self.backend_ports, env=env)

            def counts():
                return malloc_calls(cnt)

            try:
                url = f"http://127.0.0.1:{proxy.port}/"
                subprocess.run(["wrk", "-t1", f"-c{self.args.wrk_conns}", "-d1s", url],
                               capture_output=True, timeout=60, check=True)
                a0 = counts()
                out = subprocess.run(["wrk", "-t1", f"-c{self.args.wrk_conns}", f"-d{self.d:g}s", url],
                                     capture_output=True, text=True, timeout=self.d + 60, check=True).stdout
                reqs = int(re.search(r"(\d+) requests in", out).group(1))
                a1 = counts()
                # WebSocket: count only inside the steady state (connections up, before teardown),
                # over [warm-up + 0.5 s, warm-up + duration - 0.5 s] of a run at a steady rate.
                wd = max(3, self.d)
                p = subprocess.Popen([self.args.wsload, "throughput", "--port", str(proxy.port), "--conns", "100",
                                      "--window", "16", "--size", "64", "--duration", str(wd), "--warmup", "1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                time.sleep(1.5)
                w0, t0 = counts(), time.monotonic()
                time.sleep(wd - 1.0)
                w1, t1 = counts(), time.monotonic()
                out, _ = p.communicate(timeout=60)
                r = json.loads(out)
                msgs = 2 * r["rate"] * (t1 - t0)  # each echo crosses the proxy twice
            finally:
                proxy.stop()
            m = {"allocs_per_req": (a1 - a0) / max(1, reqs), "allocs_per_ws_msg": (w1 - w0) / max(1, msgs)}
            log(f"mallocs {kind}: {m}")
            self.record(scenario, workers, kind, m)

    def config_rows(self, workers, rows=None):
        """limpet alone under its own configurations (CONFIG_ROWS): requests/s and CPU per request
        over the rounds, and in each round a second fresh limpet under malloc_count.so for the
        allocations per request. The row order rotates each round."""
        rows = list(rows or CONFIG_ROWS)
        conns, sessions = self.args.wrk_conns, self.args.sessions
        for row in rows:
            self.commands[f"cfg_{row}"] = config_row_command(row, self.d, self.warm, conns, sessions)
        counting = os.path.exists(self.args.malloc_count or "")
        for r in range(self.rounds):
            for row in rows[r % len(rows):] + rows[:r % len(rows)]:
                template = CONFIG_ROWS[row][0]
                for counted in ([False, True] if counting else [False]):
                    env = None
                    cnt = os.path.join(self.work, f"malloc-cfg-{row}.cnt")
                    if counted:
                        if os.path.exists(cnt):
                            os.remove(cnt)
                        env = {"LD_PRELOAD": self.args.malloc_count, "MALLOC_COUNT_FILE": cnt}
                    m = measure_once(f"cfg_{row} w{workers} round {r + 1}" + (" (malloc_count)" if counted else ""),
                                     self.notes,
                                     lambda: self.fronts.start("limpet", workers, self.backend_ports, template, env=env),
                                     lambda proxy: measure_config_row(row, proxy, self.backends, self.work, self.d,
                                                                      self.warm, conns, sessions,
                                                                      counter=cnt if counted else None,
                                                                      backend_ports=self.backend_ports))
                    if m is None:
                        continue
                    m["run"] = "malloc_count" if counted else "plain"
                    self.record(f"cfg_{row}", workers, "limpet", m)

    # -- WebSocket

    def ws_idle(self, workers):
        n, rate = self.idle_tunnels, self.args.connect_rate
        hold = 1.5
        scenario = "ws_idle"
        self.commands[scenario] = (f"wsload idle --port PORT --conns {n} --connect-rate {rate} --hold {hold:g} "
                                   f"--ready-file F  (proxy VmRSS summed over its processes: before, and once F "
                                   f"exists + 0.5 s)")

        def fn(kind, proxy):
            ready = os.path.join(self.work, f"idle-{kind}.ready")
            if os.path.exists(ready):
                os.remove(ready)
            pids = proxy.pids()
            rss0 = rss_kb(pids)
            p = subprocess.Popen([self.args.wsload, "idle", "--port", str(proxy.port), "--conns", str(n),
                                  "--connect-rate", str(rate), "--hold", f"{hold:g}", "--ready-file", ready],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_until("idle tunnels", lambda: os.path.exists(ready) or p.poll() is not None,
                           timeout=n / rate * 3 + 30)
                time.sleep(0.5)
                rss1 = rss_kb(proxy.pids())
                out, err = p.communicate(timeout=hold + 30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            r = json.loads(out)
            opened = r["open"]
            return {"bytes_per_tunnel": 1024.0 * (rss1 - rss0) / max(1, opened), "open": opened,
                    "rss_before_kb": rss0, "rss_after_kb": rss1,
                    "errors": r["connect_errors"] + r["dropped"]}

        self.rounds_of(scenario, workers, fn)

    def ws_load(self, scenario, workers, wsargs, rounds=None):
        cmd = " ".join(wsargs).replace("{port}", "PORT").replace(BENCH + "/", "bench/")
        self.commands[scenario] = cmd if wsargs[0] == "node" else "wsload " + cmd

        def fn(kind, proxy):
            cmd = [a.replace("{port}", str(proxy.port)) for a in wsargs]
            cmd = cmd if cmd[0] == "node" else [self.args.wsload] + cmd
            ms = run_measured(cmd, proxy, self.backends, self.d + 120)
            r = json.loads(ms.out)
            cpu = ms.proxy_cpu
            m = {"rate": r["rate"]}
            if r["mode"] == "echo":
                m.update(p50_us=r["p50_us"], p99_us=r["p99_us"], p999_us=r["p999_us"],
                         client_lag_p99_us=r["lag_p99_us"])
            if r["mode"] == "throughput":
                m.update(cpu_us_per_msg=1e6 * cpu / max(1, 2 * r["received"]),
                         softirq_us_per_msg=1e6 * ms.softirq / max(1, 2 * r["received"]), p50_us=r["p50_us"])
            if r["mode"] == "churn":
                m.update(cpu_us_per_conn=1e6 * cpu / max(1, r["churn_total"]),
                         handshake_p50_us=r["handshake_p50_us"], handshake_p99_us=r["handshake_p99_us"])
            if r["mode"] == "ws-echo-node":
                m.update(p50_us=r["p50_us"], p99_us=r["p99_us"], p999_us=r["p999_us"],
                         client_lag_p99_us=r["lag_p99_us"])
            m.update(errors=r["connect_errors"] + r["dropped"] + r["lost"], **ms.diag())
            return m

        self.rounds_of(scenario, workers, fn, rounds=rounds)

    def ws_echo_floor(self, wsargs):
        """WS (b) with no proxy: wsload on backend 1 directly, as many rounds as the proxies had.
        The machine's own tail (client, backend and scheduler on 2 shared cores), below which no
        proxy's figure can go; written as a note of the report."""
        port = self.backend_ports[0]
        cmd = [self.args.wsload] + [a.replace("{port}", str(port)) for a in wsargs]
        samples = []
        for _ in range(self.rounds):
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=self.d + 120,
                                          check=True).stdout)
            samples.append(r)
        fig = {k: statistics.median(x[k] for x in samples) for k in ("p50_us", "p99_us", "p999_us")}
        self.notes.append(f"WS (b) with no proxy (`wsload {' '.join(wsargs).replace('{port}', 'BACKEND')}` on "
                          f"backend 1 directly, median of {len(samples)}): p50 {fig['p50_us']:.0f} µs, "
                          f"p99 {fig['p99_us']:.0f} µs, p99.9 {fig['p999_us']:.0f} µs: the machine's floor for "
                          "that row")
        log(self.notes[-1])

    # -- Socket.IO

    def socketio(self, workers):
        base = self.args.port_base
        redis, nodes = base + 20, [base + 21, base + 22, base + 23]
        for p in [redis] + nodes:
            if not port_free(p):
                raise RuntimeError(f"port {p} is busy")
        ready = os.path.join(self.work, "sio.ready")
        cluster = Service("sio-cluster", ["node", os.path.join(BENCH, "lib", "sio_cluster.js"), "--redis-port",
                                          str(redis), "--ports", ",".join(map(str, nodes)), "--ready-file", ready,
                                          "--log-dir", os.path.join(self.work, "sio-logs"), "--max-seconds", "1200"],
                          os.path.join(self.work, "sio-cluster.log"))
        try:
            wait_until("Socket.IO cluster", lambda: os.path.exists(ready) or not cluster.alive(), timeout=60)
            if not cluster.alive():
                raise RuntimeError(f"Socket.IO cluster failed; see {cluster.log_path}")
            conc = self.args.sio_concurrency
            warm_sio_cluster(nodes, conc)
            scenario = "socketio"
            self.commands[scenario] = (f"node bench/lib/sio_load.js --url http://127.0.0.1:PORT --concurrency {conc} "
                                       f"--duration {self.d:g} --warmup 1 --nodes {','.join(map(str, nodes))} "
                                       f"(the cluster warmed first: 3 s of the same load on each node directly)")

            def fn(kind, proxy):
                cmd = ["node", os.path.join(BENCH, "lib", "sio_load.js"), "--url", f"http://127.0.0.1:{proxy.port}",
                       "--concurrency", str(conc), "--duration", f"{self.d:g}", "--warmup", "1",
                       "--nodes", ",".join(map(str, nodes))]
                ms = run_measured(cmd, proxy, [], self.d + 60, extra_pids=cluster.pids())
                r = json.loads(ms.out)
                cpu = ms.proxy_cpu
                per_node = r["node_handshakes"]
                spread = max(per_node) / max(1e-9, statistics.mean(per_node)) if per_node else float("nan")
                return {"rate": r["handshakes_per_s"], "cpu_us_per_handshake": 1e6 * cpu / max(1, r["completed_total"]),
                        "p50_ms": float(r["p50_ms"]), "p99_ms": float(r["p99_ms"]), "errors": r["errors"],
                        "session_unknown": r["session_unknown_errors"], "max_over_mean": spread,
                        "nodes": "/".join(map(str, per_node)), **ms.diag()}

            self.rounds_of(scenario, workers, fn, template="socketio", servers=nodes, probe="/__stats")
            # Every front on node 1 alone: the same Node work behind each (nginx's and HAProxy's
            # address hash already put every client there), so this row is the proxies' own cost;
            # the row above adds what spreading over 3 Node processes on 2 shared cores costs.
            self.commands["socketio_1node"] = f"{self.commands[scenario]}; every front has node 1 only"
            self.rounds_of("socketio_1node", workers, fn, template="socketio", servers=nodes[:1], probe="/__stats")
            if "limpet" not in self.args.fronts:
                return
            # limpet as shipped (sid learning, Engine.IO health checks, text access log), then two
            # such instances on one port sharing the session store (the cluster's Redis).
            shipped = "conf/limpet.toml's values (bench/peers/limpet-shipped.toml.in, text access log)"
            self.commands["socketio_shipped"] = f"{self.commands[scenario]}; limpet: {shipped}"
            self.rounds_of("socketio_shipped", workers, fn, fronts=["limpet"], start=lambda kind: self.fronts.start(
                kind, workers, nodes, "shipped-text", probe="/__stats"))
            self.commands["socketio_store2"] = (f"{self.commands[scenario]}; 2 limpet instances on one port "
                                                f"(shared_listeners, SO_REUSEPORT), each {shipped} + [session_store] "
                                                f"on the cluster's redis-server; CPU of both")
            self.rounds_of("socketio_store2", workers, fn, fronts=["limpet"], start=lambda kind: (
                self.fronts.start_instances(2, workers, nodes, "shipped-text", session_store=redis, probe="/__stats")))
        finally:
            cluster.stop()


# --- report -----------------------------------------------------------------------------------

def med(samples, key):
    vals = [s[key] for s in samples if isinstance(s.get(key), (int, float)) and s[key] == s[key]]
    return statistics.median(vals) if vals else None


def fmt(v, digits=3):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


CONFIG_ROW_LABELS = {
    "minimal": "limpet minimal config (bench), GET /",
    "shipped-text-plain": "limpet shipped config, text access log, GET /",
    "shipped-text": "limpet shipped config, text access log, Engine.IO poll with sid",
    "shipped-json-plain": "limpet shipped config, JSON access log, GET /",
    "shipped-json": "limpet shipped config, JSON access log, Engine.IO poll with sid",
}

# (scenario, metric key, label, better: "high"|"low", target kind)
ROWS = [
    ("http_small", "rps", "HTTP 13 B, wrk keep-alive: requests/s", "high", "rps"),
    ("http_small", "cpu_us_per_req", "HTTP 13 B: proxy CPU µs/request", "low", "cpu"),
    ("http_small", "softirq_us_per_req", "HTTP 13 B: machine softirq µs/request (loopback delivery, see notes)",
     "low", None),
    ("http_small", "p50_ms", "HTTP 13 B: p50 latency ms (wrk, closed loop)", "low", None),
    ("http_small", "p99_ms", "HTTP 13 B: p99 latency ms (wrk, closed loop)", "low", None),
    ("http_16k", "rps", "HTTP 16 KB, wrk keep-alive: requests/s", "high", "rps"),
    ("http_16k", "cpu_us_per_req", "HTTP 16 KB: proxy CPU µs/request", "low", "cpu"),
    ("http_16k", "softirq_us_per_req", "HTTP 16 KB: machine softirq µs/request", "low", None),
    ("http_16k", "p99_ms", "HTTP 16 KB: p99 latency ms (wrk)", "low", None),
    ("http_open", "p50_us", "HTTP open loop RATE req/s: p50 µs", "low", None),
    ("http_open", "p99_us", "HTTP open loop RATE req/s: p99 µs", "low", None),
    ("http_open", "p999_us", "HTTP open loop RATE req/s: p99.9 µs", "low", None),
    ("http_open", "cpu_us_per_req", "HTTP open loop RATE req/s: proxy CPU µs/request", "low", "cpu"),
    ("mallocs", "allocs_per_req", "heap allocations per HTTP request", "low", "zero"),
    ("mallocs", "allocs_per_ws_msg", "heap allocations per WebSocket message", "low", "zero"),
    *[(f"cfg_{row}", "allocs_per_req", f"{label}: heap allocations per request", "low", "zero")
      for row, label in CONFIG_ROW_LABELS.items()],
    *[(f"cfg_{row}", "rps", f"{label}: requests/s (wrk -s)", "high", None) for row, label in CONFIG_ROW_LABELS.items()],
    *[(f"cfg_{row}", "cpu_us_per_req", f"{label}: CPU µs/request", "low", None)
      for row, label in CONFIG_ROW_LABELS.items()],
    ("ws_idle", "bytes_per_tunnel", "WS (a) idle tunnels: proxy RSS bytes/tunnel", "low", "idle"),
    ("ws_echo", "p50_us", "WS (b) 1,000 conns × 10 msg/s: p50 µs", "low", None),
    ("ws_echo", "p99_us", "WS (b) 1,000 conns × 10 msg/s: p99 µs", "low", "p99"),
    ("ws_echo", "p999_us", "WS (b) 1,000 conns × 10 msg/s: p99.9 µs", "low", None),
    ("ws_echo_node", "p50_us", "WS (b) second opinion, npm ws client: p50 µs", "low", None),
    ("ws_echo_node", "p99_us", "WS (b) second opinion, npm ws client: p99 µs", "low", None),
    ("ws_throughput", "rate", "WS (c) 100 conns: echoed messages/s", "high", "thr"),
    ("ws_throughput", "cpu_us_per_msg", "WS (c): proxy CPU µs/message (per direction)", "low", None),
    ("ws_churn", "rate", "WS (d) churn: new connections/s", "high", None),
    ("ws_churn", "cpu_us_per_conn", "WS (d) churn: proxy CPU µs/connection", "low", None),
    ("socketio", "rate", "Socket.IO: handshakes/s (polling → connect → upgrade)", "high", None),
    ("socketio", "cpu_us_per_handshake", "Socket.IO: proxy CPU µs/handshake", "low", None),
    ("socketio", "errors", "Socket.IO: failed connections", "low", None),
    ("socketio_1node", "rate", "Socket.IO, every front on one node: handshakes/s", "high", None),
    ("socketio_1node", "cpu_us_per_handshake", "Socket.IO, every front on one node: proxy CPU µs/handshake", "low",
     None),
    ("socketio_shipped", "rate", "Socket.IO, limpet shipped config (text access log): handshakes/s", "high", None),
    ("socketio_shipped", "cpu_us_per_handshake", "Socket.IO, limpet shipped config: proxy CPU µs/handshake", "low",
     None),
    ("socketio_shipped", "errors", "Socket.IO, limpet shipped config: failed connections", "low", None),
    ("socketio_store2", "rate", "Socket.IO, 2 limpet instances + session store: handshakes/s", "high", None),
    ("socketio_store2", "cpu_us_per_handshake", "Socket.IO, 2 limpet instances + session store: CPU µs/handshake "
     "(both)", "low", None),
    ("socketio_store2", "errors", "Socket.IO, 2 limpet instances + session store: failed connections", "low", None),
    ("socketio_store2", "session_unknown", "Socket.IO, 2 limpet instances + session store: 'Session ID unknown'",
     "low", None),
]


def target_check(kind, lim, ngx, hap):
    """Issue 6's target for a row: (text, met?) or None."""
    if lim is None:
        return None
    peers = [v for v in (ngx, hap) if v is not None]
    if kind == "cpu" and peers:
        met = all(lim <= 0.75 * p for p in peers)
        return "≤ 0.75 × each peer", met
    if kind == "rps" and peers:
        return "≥ 1.15 × best peer", lim >= 1.15 * max(peers)
    if kind == "thr" and peers:
        return "≥ 1.15 × best peer", lim >= 1.15 * max(peers)
    if kind == "p99" and peers:
        return "≤ best peer", lim <= min(peers)
    if kind == "idle":
        return "≤ 2,048 B", lim <= 2048
    if kind == "zero":
        return "0 (steady state)", lim < 0.01
    return None


def render_table(bench):
    lines = ["| load | workers | limpet | nginx | HAProxy | limpet/nginx | limpet/HAProxy | issue 6 target |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    workers_seen = sorted({w for (_, w, _) in bench.samples})
    for scen, key, label, _better, tkind in ROWS:
        for w in workers_seen:
            vals = {f: med(bench.samples.get((scen, w, f), []), key) for f in FRONTS}
            if all(v is None for v in vals.values()):
                continue
            lim, ngx, hap = vals["limpet"], vals["nginx"], vals["haproxy"]
            r1 = f"{lim / ngx:.2f}" if lim is not None and ngx else "—"
            r2 = f"{lim / hap:.2f}" if lim is not None and hap else "—"
            t = target_check(tkind, lim, ngx, hap)
            tcell = f"{t[0]}: {'met' if t[1] else '**missed**'}" if t else ""
            if t:
                verdicts.append((label.replace("RATE", str(bench.args.http_rate)), w, t[0], t[1]))
            lab = label.replace("RATE", str(bench.args.http_rate))
            lines.append(f"| {lab} | {w} | {fmt(lim)} | {fmt(ngx)} | {fmt(hap)} | {r1} | {r2} | {tcell} |")
    return "\n".join(lines), verdicts


def measure_once(label, notes, start, measure):
    """start() a proxy, measure(proxy), stop it. A failure is a missing sample, not a lost run:
    noted in `notes`, logged, and None returned."""
    try:
        proxy = start()
        try:
            m = measure(proxy)
        finally:
            proxy.stop()
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError, AttributeError) as e:
        note = f"{label}: failed: {e}"
        notes.append(note)
        log(note)
        return None
    log(f"{label}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))
    return m


def first_line(cmd):
    """The first line a command prints (stdout, then stderr), for version strings."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def versions(args):
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "limpet": first_line([args.limpet, "-v"]) + f"  ({args.limpet_note})",
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "node": first_line(["node", "--version"]),
        "libuv": first_line(["pkg-config", "--modversion", "libuv"]),
        "loadavg_at_start": open("/proc/loadavg").read().strip(),
        "priority": os.environ.get("BENCH_NICE_APPLIED", "none") + f" (nice value {os.nice(0)})",
    }


def write_report(bench, info, started, finished):
    table, verdicts = render_table(bench)
    args = bench.args
    date = started.strftime("%Y-%m-%d")
    mode = "quick" if args.quick else "full"
    out = []
    out.append(f"# limpet vs nginx vs HAProxy — {date} ({mode} run)\n")
    out.append(f"Command: `{args.command_line}`  ")
    out.append(f"Started {started:%Y-%m-%d %H:%M:%S}, finished {finished:%H:%M:%S} "
               f"({(finished - started).total_seconds() / 60:.1f} min). {bench.rounds} interleaved round(s) per "
               f"load (the front order rotates each round), each proxy freshly started for every "
               f"measurement; figures are medians over the rounds.\n")
    out.append("## Machine and versions\n")
    for k, v in info.items():
        out.append(f"- {k}: {v}")
    out.append(f"- load average at the end: {open('/proc/loadavg').read().strip()}")
    out.append("")
    out.append("## Results\n")
    out.append(table)
    out.append("")
    out.append("Ratios are limpet/peer: above 1 is better for limpet on requests/s and messages/s, "
               "below 1 is better on CPU, latency and memory. CPU is the proxy's utime+stime "
               "(all its processes and threads) over the load divided by the requests or messages "
               "it carried. The kernel books loopback packet delivery (softirq) to no process, so "
               "that part of every send is missing from all three proxies' CPU; the softirq row is "
               "the whole machine's softirq time per request (client, proxy and backend sends "
               "together): with identical client and backends, a difference there comes from the "
               "proxy (e.g. more segments per response).\n")
    if verdicts:
        out.append("## Issue 6 targets\n")
        for label, w, t, met in verdicts:
            out.append(f"- {'met' if met else 'MISSED'}: {label}, {w} worker(s): {t}")
        out.append("")
    out.append("## Setup\n")
    out.append(f"- Backends: 2 × `bench/backends/backend.c` (libuv, {args.backend_threads} threads each, canned "
               "200 responses of 13 B or 16 KB, WebSocket echo), the same two for every proxy.")
    out.append("- limpet: `hash_keys = [\"ip\"]` (consistent hash of the client address, Maglev ring), "
               "`balance = \"least_conn\"` for keys that are absent, `engineio_paths = []`; Socket.IO: "
               "`engineio_paths = [\"/socket.io/\"]`, `balance = \"least_sessions\"` (sid affinity).")
    out.append("- nginx: `hash $remote_addr consistent`, `keepalive 64` upstream, `proxy_http_version 1.1`, "
               "`listen ... reuseport`, `keepalive_requests` lifted; the same config for Socket.IO.")
    out.append("- HAProxy: `balance source` + `hash-type consistent`, `http-reuse always`, `nbthread` = "
               "workers; the same config for Socket.IO.")
    out.append("- All from 127.0.0.1, so the address hash sends every client to one backend on all three.")
    out.append("- Rows \"limpet minimal/shipped config\" (limpet alone, issue 10's \"zero heap allocations per "
               "steady-state request on the shipped conf/limpet.toml\"): minimal = bench/peers/limpet.toml.in as "
               "above; shipped = bench/peers/limpet-shipped.toml.in, conf/limpet.toml's values (sid learning on "
               "/socket.io/, least_sessions, Engine.IO health checks every 2 s, admin listener) with the access log "
               "in a file, text or JSON. The sid rows first make `--sessions` Engine.IO handshakes through limpet "
               "(the backend answers a v4 open packet with a fresh sid), then poll with those sids in turn "
               "(wrk Lua script); every row of this group uses the same script-driven wrk. Allocations are "
               "counted in a separate fresh limpet under malloc_count.so, in steady state: from 0.5 s after "
               "wrk starts to 0.5 s before it ends (its 64 connections stay up), over the requests the "
               "backends answered in that window (allocs_per_req_whole_run in the samples: the whole run "
               "over wrk's count, the connections' setup included); idle_allocs_per_s in the samples is "
               "what that limpet allocated idle for 2 s before the load (health probes, housekeeping); "
               "affinity_share is the share of the run's access-log lines with reason affinity.")
    out.append(f"- Configs: bench/peers/*.in, rendered into {bench.work}.\n")
    out.append("## Commands\n")
    for scen, cmd in bench.commands.items():
        out.append(f"- {scen}: `{cmd}`")
    out.append(f"- PORT: limpet {bench.fronts.port['limpet']}, nginx {bench.fronts.port['nginx']}, "
               f"HAProxy {bench.fronts.port['haproxy']}\n")
    others = [x["other_cpu_pct"] for ss in bench.samples.values() for x in ss if "other_cpu_pct" in x]
    if others:
        noisy = sorted({f"{sc} w{w}" for (sc, w, _), ss in bench.samples.items()
                        for x in ss if x.get("other_cpu_pct", 0) > 10})
        bench.notes.append(f"CPU used by processes outside the benchmark during the loads: median "
                           f"{statistics.median(others):.0f}%, max {max(others):.0f}% of the machine"
                           + (f"; above 10% in: {', '.join(noisy)}" if noisy else "") + ".")
    if bench.notes:
        out.append("## Notes\n")
        out.extend(f"- {n}" for n in bench.notes)
        out.append("")
    out.append("## Every sample\n")
    out.append("```")
    for (scen, w, f), ss in sorted(bench.samples.items()):
        for i, s in enumerate(ss):
            vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items())
            out.append(f"{scen} w{w} {f} #{i + 1}: {vals}")
    out.append("```")
    text = "\n".join(out) + "\n"

    results_dir = os.path.join(BENCH, "results")
    os.makedirs(results_dir, exist_ok=True)
    # A subset of the loads or fronts gets its own name, so that it never overwrites (or passes
    # for) the day's full run.
    name = args.results_name or (date + ("-" + "-".join(args.only_list) if args.subset else "")
                                 + ("-" + "-".join(args.fronts) if args.fronts != FRONTS else "")
                                 + ("-quick" if args.quick else ""))
    path = os.path.join(results_dir, name + ".md")
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(results_dir, name + ".json"), "w") as f:
        json.dump({"info": info, "command": args.command_line, "commands": bench.commands,
                   "samples": [{"scenario": s, "workers": w, "front": fr, "rounds": ss}
                               for (s, w, fr), ss in sorted(bench.samples.items())]}, f, indent=1)
    log(f"results: {path}")
    if not args.quick and args.update_readme and not args.subset and args.fronts == FRONTS:
        readme = os.path.join(BENCH, "README.md")
        with open(readme) as f:
            old = f.read()
        begin, end = "<!-- results:begin -->", "<!-- results:end -->"
        if begin in old and end in old:
            block = (f"{begin}\nLatest full run: **{date}**, `{args.command_line}` "
                     f"(details, every sample and every command: [results/{name}.md](results/{name}.md)). "
                     f"limpet: {info['limpet']}.\n\n{table}\n{end}")
            new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
            with open(readme, "w") as f:
                f.write(new)
            log("bench/README.md updated")
    print(table)
    return path


# --- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limpet", required=True)
    ap.add_argument("--limpet-note", default="")
    ap.add_argument("--wsload", required=True)
    ap.add_argument("--backend-bin", required=True)
    ap.add_argument("--malloc-count", default="")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--duration", type=int, default=0)
    ap.add_argument("--workers", default="1,2", help="worker counts for the HTTP loads")
    ap.add_argument("--ws-workers", default="2", help="worker counts for WebSocket and Socket.IO loads")
    ap.add_argument("--only", default="http,open,mallocs,config,ws,wsnode,socketio",
                    help="loads: http, open, mallocs, config (limpet's minimal and shipped configurations, "
                         "rows CONFIG_ROWS), ws (idle, echo, throughput, churn), idle (WS (a) alone), "
                         "wsnode, socketio")
    ap.add_argument("--config-rows", default=",".join(CONFIG_ROWS),
                    help="which rows the config load measures: " + ", ".join(CONFIG_ROWS))
    ap.add_argument("--sessions", type=int, default=64,
                    help="Engine.IO sessions (handshakes through limpet) whose sids the config load's sid rows poll")
    ap.add_argument("--wait-quiet", type=int, default=120,
                    help="seconds to wait for other work on the machine to settle before starting")
    ap.add_argument("--fronts", default=",".join(FRONTS))
    ap.add_argument("--port-base", type=int, default=18600)
    ap.add_argument("--backend-threads", type=int, default=2)
    ap.add_argument("--wrk-conns", type=int, default=64)
    ap.add_argument("--http-rate", type=int, default=10000)
    ap.add_argument("--connect-rate", type=int, default=3000)
    ap.add_argument("--idle-tunnels", type=int, default=0)
    ap.add_argument("--sio-concurrency", type=int, default=32)
    ap.add_argument("--work-dir", default="/tmp")
    ap.add_argument("--no-readme", dest="update_readme", action="store_false")
    ap.add_argument("--results-name", default="",
                    help="bench/results/NAME.md and .json (default: the date, plus the loads and fronts when "
                         "a subset, plus -quick)")
    ap.add_argument("--command-line", default="bench/run.sh")
    args = ap.parse_args()
    args.fronts = args.fronts.split(",")
    only = set(args.only.split(","))
    args.only_list = args.only.split(",")
    args.subset = only != set(ap.get_default("only").split(","))
    http_workers = [int(w) for w in args.workers.split(",")]
    ws_workers = [int(w) for w in args.ws_workers.split(",")]
    config_rows = args.config_rows.split(",")
    unknown = [r for r in config_rows if r not in CONFIG_ROWS]
    if unknown:
        ap.error(f"unknown --config-rows {','.join(unknown)}; known: {', '.join(CONFIG_ROWS)}")
    if args.idle_tunnels > 9000:
        ap.error("--idle-tunnels above 9000 would exceed the 20,000 fd limit of one proxy process")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (stop_all(), sys.exit(130)))

    started = datetime.datetime.now()
    bench = Bench(args)
    info = versions(args)
    log(f"work dir {bench.work}; {bench.rounds} round(s), {bench.d:g} s per load")
    busy = wait_for_quiet(args.wait_quiet)
    info["machine_busy_before_start"] = f"{busy:.0f}% (other work; waited up to {args.wait_quiet} s for < 15%)"
    if busy >= 15:
        bench.notes.append(f"The machine was {busy:.0f}% busy with other work when the run started: "
                           "throughput and latency are noisy; CPU per request is the robust figure.")
    try:
        bench.start_backends()
        if "http" in only:
            for w in http_workers:
                bench.wrk("http_small", "/", w)
                bench.wrk("http_16k", "/16k", w)
        if "open" in only:
            for w in http_workers:
                bench.http_open("http_open", w)
        if "mallocs" in only:
            bench.mallocs(http_workers[0])
        if "config" in only:
            bench.config_rows(http_workers[0], config_rows)
        if "idle" in only and "ws" not in only:
            for w in ws_workers:
                bench.ws_idle(w)
        if "ws" in only:
            for w in ws_workers:
                bench.ws_idle(w)
                echo = ["echo", "--port", "{port}", "--conns", "1000", "--msg-rate", "10", "--size", "32",
                        "--duration", f"{bench.d:g}", "--warmup", "1", "--connect-rate", str(args.connect_rate)]
                bench.ws_load("ws_echo", w, echo)
                bench.ws_echo_floor(echo)
                bench.ws_load("ws_throughput", w, ["throughput", "--port", "{port}", "--conns", "100", "--window",
                                                   "16", "--size", "64", "--duration", f"{bench.d:g}",
                                                   "--warmup", f"{bench.warm:g}"])
                bench.ws_load("ws_churn", w, ["churn", "--port", "{port}", "--conns", "50", "--duration",
                                              f"{bench.d:g}", "--warmup", f"{bench.warm:g}"])
        if "wsnode" in only:
            for w in ws_workers:
                bench.ws_load("ws_echo_node", w, ["node", os.path.join(BENCH, "lib", "ws_echo.js"), "--url",
                                                  "ws://127.0.0.1:{port}/", "--conns", "1000", "--msg-rate", "10",
                                                  "--size", "32", "--duration", f"{bench.d:g}", "--warmup", "1"],
                              rounds=1)  # a second opinion: one round keeps the full run in budget
        bench.stop_backends()
        if "socketio" in only:
            for w in ws_workers:
                try:
                    bench.socketio(w)
                except (RuntimeError, subprocess.SubprocessError, ValueError, KeyError) as e:
                    bench.notes.append(f"Socket.IO scenario failed: {e}")
                    log(f"Socket.IO scenario failed: {e}")
    finally:
        stop_all()
    write_report(bench, info, started, datetime.datetime.now())
    return 0


if __name__ == "__main__":
    sys.exit(main())
