"""Backends by name and the admin API's backend changes (issue 16, part 1).

DNS comes from a dnsmasq the test starts on 127.0.0.1 (an unprivileged port, answering only from
a hosts file the test rewrites and signals with SIGHUP; names under .test that the file does not
list are NXDOMAIN). The nodes of a name are the same Python backends on 127.0.0.2, .3 and .4 with
one port, so one name resolves to several of them.
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import limpet_bin, stop_process, wait_until
from ops_util import TOKEN, WsFleet, backend_of, handshake, session_node, start_ops_limpet

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
NODE_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


# ---------------------------------------------------------------------------------------------
# a local DNS server

def dns_query(port, name, qtype=1, timeout=1.0):
    """(rcode, [addresses]) of one A (1) or AAAA (28) query to 127.0.0.1:port, or None on timeout."""
    qid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            data = s.recv(4096)
        except socket.timeout:
            return None
    rcode, count = data[3] & 0xF, struct.unpack(">H", data[6:8])[0]
    pos = 12 + len(qname) + 4
    out = []
    for _ in range(count):
        if data[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _, _, length = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(data[pos:pos + length]))
        pos += length
    return rcode, sorted(out)


def udp_and_tcp_port():
    """A port free on 127.0.0.1 for TCP and UDP both, as dnsmasq binds both: a port that is free
    for UDP can be the local port of a TCP connection (on a machine with many, it often was)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both TCP and UDP on 127.0.0.1")


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port answering from a hosts file; set() rewrites it and SIGHUPs."""

    def __init__(self, tmp_path, records):
        if not os.access(DNSMASQ, os.X_OK):
            pytest.fail("dnsmasq not found: install it (scripts/install-deps.sh)")
        self.tmp_path = tmp_path
        self.hosts = tmp_path / "dns-hosts"
        self.records = {}
        self._write(records)
        self.log_path = tmp_path / "dnsmasq.log"
        self.proc = None
        for _ in range(4):
            self.port = udp_and_tcp_port()
            user = ["--user=root"] if os.geteuid() == 0 else []  # re-read the file after SIGHUP
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                     f"--addn-hosts={self.hosts}", f"--port={self.port}", "--listen-address=127.0.0.1",
                     "--bind-interfaces", "--local=/test/", "--log-facility=-", *user],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            up = wait_until(lambda: self.proc.poll() is not None or dns_query(self.port, "probe.test", timeout=0.2),
                            10, "dnsmasq to answer")
            if self.proc.poll() is None and up:
                return
            stop_process(self.proc)
        raise AssertionError("dnsmasq did not start:\n" + self.log_path.read_text(errors="replace"))

    def _write(self, records):
        self.records = {name: sorted(ips) for name, ips in records.items()}
        lines = [f"{ip} {name}" for name, ips in self.records.items() for ip in ips]
        tmp = self.hosts.with_suffix(".new")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.hosts)

    def set(self, records):
        """New records, served once this returns (checked with a query of each name)."""
        self._write(records)
        self.proc.send_signal(signal.SIGHUP)
        for name, ips in self.records.items():
            wait_until(lambda: (dns_query(self.port, name) or (None, None))[1] == ips, 10,
                       f"dnsmasq to answer {name} with {ips}")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)


@pytest.fixture
def dns(tmp_path):
    servers = []

    def start(records):
        d = Dnsmasq(tmp_path, records)
        servers.append(d)
        return d
    yield start
    for d in servers:
        d.stop()


# ---------------------------------------------------------------------------------------------
# helpers

def free_port_on(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_backends(cluster, kind, port):
    """One backend per NODE_IPS address, all on `port`: n2, n3, n4 (http) or w2, w3, w4 (ws)."""
    prefix = "n" if kind == "http" else "w"
    return [cluster.backend(f"{prefix}{ip.rsplit('.', 1)[1]}", kind, ["--host", ip, "--port", str(port)])
            for ip in NODE_IPS]


def backends_of(lp, upstream):
    """{backend name: state} of one upstream, from /status."""
    return {b["name"]: b["state"] for b in lp.status()["backends"] if b["upstream"] == upstream}


def weights_of(lp, upstream):
    return {b["name"]: b["weight"] for b in lp.status()["backends"] if b["upstream"] == upstream}


def change(lp, method, upstream, backend, body=None, token=TOKEN, content_type="application/json"):
    """(status, body text) of PUT/DELETE /upstreams/UP/backends/NAME."""
    conn = http.client.HTTPConnection("127.0.0.1", lp.admin_port, timeout=10)
    try:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body) if isinstance(body, dict) else body
            headers["Content-Type"] = content_type if isinstance(body, dict) else "application/x-www-form-urlencoded"
        conn.request(method, f"/upstreams/{upstream}/backends/{backend}", body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class SessionChecker:
    """Polls known sessions in a loop from a few threads, recording every one that reached
    another node than the one that issued it, or failed."""

    def __init__(self, port, sessions, threads=3):
        self.port, self.sessions = port, dict(sessions)
        self.checked = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, t):
        items = sorted(self.sessions.items())
        n = t
        while not self.stop_flag.is_set():
            sid, node = items[n % len(items)]
            n += len(self.threads)
            try:
                got = session_node(self.port, sid)
                problem = None if got == node else f"session {sid} of {node} reached {got}"
            except Exception as e:  # noqa: BLE001 - recorded for the test
                problem = f"session {sid} of {node}: {e!r}"
            with self.lock:
                self.checked += 1
                if problem:
                    self.failures.append(f"{problem} at {time.time():.3f}")

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(20)
        assert not any(t.is_alive() for t in self.threads), "session threads did not stop"


def named(port, *ips):
    return {f"node/{ip}:{port}" for ip in ips}


# ---------------------------------------------------------------------------------------------
# tests

def test_a_name_becomes_backends_that_follow_dns_without_losing_sessions(cluster, dns):
    """app.test resolves to 2, then 3, then 2 addresses: the backends follow (no reload), the
    sessions and tunnels of the unchanged nodes never move, the removed node's tunnels get 1012."""
    hport, wport = free_port_on(NODE_IPS[0]), free_port_on(NODE_IPS[0])
    node_backends(cluster, "http", hport)
    node_backends(cluster, "ws", wport)
    d = dns({"app.test": NODE_IPS[:2]})
    lp = start_ops_limpet(
        cluster,
        upstreams=[{"name": "app", "backends": [{"name": "node", "address": f"app.test:{hport}", "resolve": "1s"}]},
                   {"name": "ws", "backends": [{"name": "node", "address": f"app.test:{wport}", "resolve": "1s"}]}],
        listeners=[{"upstream": "app"}, {"upstream": "ws"}],
        server={"resolver": f"127.0.0.1:{d.port}", "drain_timeout": "2s", "close_spread": "200ms"})
    app_port, ws_port = lp.ports
    # Resolved before the start: the backends are there at once.
    assert set(backends_of(lp, "app")) == named(hport, *NODE_IPS[:2])
    assert set(backends_of(lp, "ws")) == named(wport, *NODE_IPS[:2])

    sessions = dict(handshake(app_port) for _ in range(30))
    assert set(sessions.values()) == {"n2", "n3"}, sessions
    fleet = WsFleet(ws_port, 12, path="/hello").open()
    extra = None
    checker = SessionChecker(app_port, sessions)
    try:
        assert set(fleet.first) == {"hello from w2", "hello from w3"}, fleet.first

        # A third address: a third backend in both upstreams, new sessions reach it.
        d.set({"app.test": NODE_IPS})
        wait_until(lambda: set(backends_of(lp, "app")) == named(hport, *NODE_IPS)
                   and set(backends_of(lp, "ws")) == named(wport, *NODE_IPS), 10,
                   "the third address to become a backend of both upstreams")
        assert set(backends_of(lp, "app").values()) == {"up"}
        wait_until(lambda: handshake(app_port)[1] == "n4", 10, "a new session on n4")
        extra = WsFleet(ws_port, 6, path="/hello").open()
        on_w4 = [i for i, f in enumerate(extra.first) if f == "hello from w4"]
        assert on_w4, extra.first

        # Back to two: the third drains (tunnels closed 1012 after drain_timeout) and leaves.
        d.set({"app.test": NODE_IPS[:2]})
        wait_until(lambda: backends_of(lp, "app").get(f"node/{NODE_IPS[2]}:{hport}") != "up", 10,
                   "the removed address to stop taking new sessions")
        wait_until(lambda: all(i in extra.ended for i in on_w4), 10, "the removed node's tunnels to close")
        assert {extra.ended[i][1:] for i in on_w4} == {(1012, "service restart")}, extra.ended
        wait_until(lambda: set(backends_of(lp, "app")) == named(hport, *NODE_IPS[:2])
                   and set(backends_of(lp, "ws")) == named(wport, *NODE_IPS[:2]), 10,
                   "the drained backends to leave /status")
        metrics = lp.metrics_text()
        assert f'backend="node/{NODE_IPS[2]}:{hport}"' not in metrics
        assert f'backend="node/{NODE_IPS[0]}:{hport}"' in metrics
        for _ in range(10):
            assert handshake(app_port)[1] in ("n2", "n3")

        # The unchanged nodes' tunnels were never touched and still echo.
        others = [i for i in range(extra.count) if i not in on_w4]
        assert not fleet.ended and not [i for i in others if i in extra.ended], (fleet.ended, extra.ended)
        assert all(fleet.echo_all().values())
        assert all(extra.echo_all().values())
    finally:
        checker.stop()
        fleet.close()
        if extra is not None:
            extra.close()
    assert not checker.failures, checker.failures[:10]
    assert checker.checked >= 30, checker.checked
    for sid, node in sessions.items():
        assert session_node(app_port, sid) == node
    log = lp.stderr()
    assert "app.test now resolves to" in log
    assert "SIGHUP" not in log  # no reload did any of this


def test_dns_failure_keeps_the_addresses_and_nxdomain_removes_them(cluster, dns, tmp_path):
    hport = free_port_on(NODE_IPS[0])
    node_backends(cluster, "http", hport)
    fixed = cluster.backend("fixed")
    d = dns({"app.test": NODE_IPS[:2]})
    lp = start_ops_limpet(
        cluster,
        upstreams=[{"name": "app", "backends": [
            {"name": "fixed", "address": fixed.address},
            {"name": "node", "address": f"app.test:{hport}", "resolve": "1s"}]}],
        server={"resolver": f"127.0.0.1:{d.port}", "resolver_timeout": "600ms", "drain_timeout": "1s"})
    everyone = {"fixed"} | named(hport, *NODE_IPS[:2])
    assert set(backends_of(lp, "app")) == everyone

    # The DNS server goes away: a failure, not an answer; the addresses stay, logged once.
    d.stop()
    wait_until(lambda: "resolving app.test failed" in lp.stderr(), 10, "the failed resolution to be logged")
    generation = lp.status()["generation"]
    # A few more intervals: still one line, still the same backends and generation.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert set(backends_of(lp, "app")) == everyone
        time.sleep(0.25)
    assert lp.stderr().count("resolving app.test failed") == 1, lp.stderr()[-3000:]
    assert lp.status()["generation"] == generation

    # Back, with the name gone (NXDOMAIN): its backends leave, the fixed one stays.
    d2 = dns({"other.test": ["127.0.0.9"]})
    lp.write_config(server={"resolver": f"127.0.0.1:{d2.port}"})
    lp.reload()  # the known name keeps its addresses across the reload (not resolved again)
    assert set(backends_of(lp, "app")) == everyone
    wait_until(lambda: set(backends_of(lp, "app")) == {"fixed"}, 10, "the name's backends to leave")
    assert backend_of(lp.port) == "fixed"

    # A name that would leave its upstream empty is not applied.
    lp.write_config(upstreams=[{"name": "app", "backends": [
        {"name": "node", "address": f"app.test:{hport}", "resolve": "1s"}]}])
    d2.set({"app.test": NODE_IPS[:1], "other.test": ["127.0.0.9"]})
    lp.reload()
    wait_until(lambda: set(backends_of(lp, "app")) == named(hport, NODE_IPS[0]), 10, "the reload's backends")
    d2.set({"other.test": ["127.0.0.9"]})
    wait_until(lambda: "not applied" in lp.stderr(), 10, "the empty answer to be refused")
    assert set(backends_of(lp, "app")) == named(hport, NODE_IPS[0])
    assert backend_of(lp.port) == "n2"


def names_config(tmp_path, dns_port):
    path = tmp_path / "names.toml"
    path.write_text("\n".join([
        "[server]", f'resolver = "127.0.0.1:{dns_port}"', 'resolver_timeout = "2s"', "",
        "[[listener]]", f'address = "127.0.0.1:{free_port_on("127.0.0.1")}"', 'upstream = "app"', "",
        "[[upstream]]", 'name = "app"', "",
        "[[upstream.backend]]", 'name = "good"', 'address = "app.test:3000"', "",
        "[[upstream.backend]]", 'name = "ghost"', 'address = "ghost.test:3000"', ""]))
    return path


def run_limpet(*args):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=30)


def test_start_fails_on_a_name_that_never_resolves_and_t_does_not_resolve(dns, tmp_path):
    d = dns({"app.test": NODE_IPS[:1]})
    path = names_config(tmp_path, d.port)
    dumped = run_limpet("-T", "-c", str(path))
    assert dumped.returncode == 0, dumped.stderr
    assert 'address = "ghost.test:3000"' in dumped.stdout
    assert 'resolve = "30s"' in dumped.stdout and f'resolver = "127.0.0.1:{d.port}"' in dumped.stdout

    start = run_limpet("-c", str(path))
    assert start.returncode == 1, start.stderr
    assert "names.toml:16" in start.stderr and 'backend "ghost"' in start.stderr, start.stderr
    assert "ghost.test does not resolve" in start.stderr, start.stderr

    d.stop()  # -t never asks: it passes with no DNS server at all
    check = run_limpet("-t", "-c", str(path))
    assert check.returncode == 0, check.stderr


def test_admin_adds_reweights_and_removes_backends_until_the_next_reload(cluster):
    b1, b2, b3 = cluster.backend("b1"), cluster.backend("b2"), cluster.backend("b3")
    lp = start_ops_limpet(cluster, [b1, b2], server={"drain_timeout": "1s"})
    sessions = dict(handshake(lp.port) for _ in range(10))
    assert set(sessions.values()) == {"b1", "b2"}

    # The token guards every change; bad input is a clear 4xx and changes nothing.
    assert change(lp, "PUT", "app", "b3", {"address": b3.address}, token=None)[0] == 401
    assert change(lp, "PUT", "app", "b3", {"address": b3.address}, token="wrong")[0] == 403
    assert change(lp, "DELETE", "app", "b1", token="wrong")[0] == 403
    assert change(lp, "PUT", "nope", "b3", {"address": b3.address})[0] == 404
    assert change(lp, "PUT", "app", "b3", {"address": "b3.example:80"})[0] == 400
    assert change(lp, "PUT", "app", "b3", {"address": b3.address, "weight": 0})[0] == 400
    assert change(lp, "PUT", "app", "b3", {"address": b3.address, "weight": 1001})[0] == 400
    assert change(lp, "PUT", "app", "b3", {"weight": 2})[0] == 400  # a new backend needs an address
    assert change(lp, "PUT", "app", "b3", "{not json")[0] == 400
    assert change(lp, "PUT", "app", "b1", {"address": b3.address})[0] == 409
    assert change(lp, "DELETE", "app", "nope")[0] == 404
    assert set(backends_of(lp, "app")) == {"b1", "b2"}

    checker = SessionChecker(lp.port, sessions, threads=2)
    try:
        status, text = change(lp, "PUT", "app", "b3", {"address": b3.address, "weight": 2})
        assert status == 200, text
        assert weights_of(lp, "app") == {"b1": 1, "b2": 1, "b3": 2}
        wait_until(lambda: backend_of(lp.port) == "b3", 10, "a request on the added backend")
        status, text = change(lp, "PUT", "app", "b1", "weight=5")  # a form body
        assert status == 200, text
        assert weights_of(lp, "app")["b1"] == 5

        status, text = change(lp, "DELETE", "app", "b3")
        assert status == 200, text
        wait_until(lambda: "b3" not in backends_of(lp, "app"), 10, "the removed backend to drain and leave")
        for _ in range(12):
            assert backend_of(lp.port) in ("b1", "b2")
        assert change(lp, "DELETE", "app", "b2")[0] == 200
        assert change(lp, "DELETE", "app", "b1")[0] == 409  # the last one
        assert change(lp, "PUT", "app", "b2", {"weight": 3})[0] == 200  # a removed one comes back
        assert backends_of(lp, "app") == {"b1": "up", "b2": "up"}
        assert weights_of(lp, "app") == {"b1": 5, "b2": 3}
    finally:
        checker.stop()
    assert not checker.failures, checker.failures[:10]

    # A reload returns to the file's backends.
    change(lp, "PUT", "app", "b3", {"address": b3.address})
    assert set(backends_of(lp, "app")) == {"b1", "b2", "b3"}
    lp.reload()
    assert weights_of(lp, "app") == {"b1": 1, "b2": 1, "b3": 1}  # b3 drains
    wait_until(lambda: set(backends_of(lp, "app")) == {"b1", "b2"}, 10, "the admin's backend to leave on reload")
    for sid, node in sessions.items():
        assert session_node(lp.port, sid) == node
