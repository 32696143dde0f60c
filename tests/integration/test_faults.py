"""Faults every production cluster meets (issue 17), with the real binary: a client that abandons
a long-poll, a node that answers 503 to every handshake, a node that hangs (SIGSTOP), a Node
backend that closes idle keep-alive connections after its default 5 s."""

import concurrent.futures
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import RawHttp, admin_metric, build_request, free_port, http_session, limpet_bin, wait_until
from ops_util import WsFleet

ENGINEIO = {"balance": "least_sessions", "engineio_paths": ["/socket.io/"], "session_ttl": "60s"}
HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


def with_admin(tables=None):
    admin = f"127.0.0.1:{free_port()}"
    return admin, {"[admin]": {"address": admin}, **(tables or {})}


class HangingBackend:
    """A backend that reads a request and never answers; it records when limpet closed each
    connection (monotonic seconds)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests = 0
        self.closed_at = []
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
            if not read_head(conn, None):
                return
            with self.lock:
                self.requests += 1
            while conn.recv(65536):  # until limpet closes it
                pass
            with self.lock:
                self.closed_at.append(time.monotonic())

    def close(self):
        self.sock.close()


def test_a_client_that_abandons_a_long_poll_frees_both_sockets_and_is_logged_499(cluster):
    hang = HangingBackend()
    try:
        admin, tables = with_admin()
        lp = cluster.limpet([("hang", hang.address)], upstream={**ENGINEIO, "read_timeout": "60s"},
                            server={"workers": 1, "shutdown_timeout": "30s"}, tables=tables)
        c = RawHttp(lp.port)
        c.send(build_request("GET", "/socket.io/?EIO=4&transport=polling&sid=abandoned"))
        wait_until(lambda: hang.requests == 1, 5, "the backend to hold the long-poll")
        in_flight = 'upstream="app",backend="hang"'
        assert admin_metric(admin, "limpet_backend_in_flight", in_flight) == 1
        closed = time.monotonic()
        c.close()  # the browser gave up on it
        wait_until(lambda: hang.closed_at, 10, "limpet to close the backend connection")
        freed_ms = (hang.closed_at[0] - closed) * 1000
        wait_until(lambda: admin_metric(admin, "limpet_active_connections") == 0, 10,
                   "the client connection to be freed")
        assert admin_metric(admin, "limpet_backend_in_flight", in_flight) == 0
        assert admin_metric(admin, "limpet_client_aborts_total") == 1
        wait_until(lambda: " 499 " in lp.stderr(), 5, "the access log line with 499")
        print(f"backend connection closed {freed_ms:.1f} ms after the client's close")
        # A stop right after waits for nobody: far less than shutdown_timeout (30 s).
        stopped = time.monotonic()
        lp.stop(timeout=10)
        print(f"SIGTERM to exit: {(time.monotonic() - stopped) * 1000:.0f} ms")
    finally:
        hang.close()


def handshakes(lp, n):
    """n Engine.IO handshakes in a row; the (status, backend) of each."""
    out = []
    with http_session() as s:
        for _ in range(n):
            r = s.get(lp.url(HANDSHAKE), timeout=30)
            out.append((r.status_code, r.headers.get("X-Backend")))
    return out


@pytest.mark.parametrize("failure_statuses", [None, []], ids=["default", "off-negative-control"])
def test_a_node_answering_503_to_every_handshake_gets_no_new_session(cluster, failure_statuses):
    """No active check (the default): without failure_statuses the 503 node, having the fewest
    sessions, would take every new session (the negative control shows it)."""
    broken = cluster.backend("broken", args=("--engineio-status", "503"))
    good = [cluster.backend(f"good{i}") for i in (1, 2)]
    health = {"fail_timeout": "60s"}
    if failure_statuses is not None:
        health["failure_statuses"] = failure_statuses
    admin, tables = with_admin()
    lp = cluster.limpet([broken, *good], upstream={**ENGINEIO, "health": health}, server={"workers": 1},
                        tables=tables)
    results = handshakes(lp, 90)
    statuses = [s for s, _ in results]
    if failure_statuses is None:
        assert statuses == [200] * 90, statuses
        assert {b for _, b in results} <= {"good1", "good2"}
        assert len(broken.request_log()) == 1  # tried once, then avoided for fail_timeout
        assert admin_metric(admin, "limpet_handshake_retries_total") == 1
    else:
        print(f"failure_statuses = []: {statuses.count(503)} of 90 handshakes answered 503")
        assert statuses.count(503) > 30, statuses  # the bug the default fixes
        assert admin_metric(admin, "limpet_handshake_retries_total") == 0


def test_when_every_node_fails_a_new_session_the_client_gets_their_status_not_a_502(cluster):
    """The failure status is dropped only for another backend; with none left the client learns
    what the nodes said (503: try later), not limpet's 502 (a bad answer from the backend)."""
    nodes = [cluster.backend(f"only503-{i}", args=("--engineio-status", "503")) for i in (1, 2)]
    admin, tables = with_admin()
    lp = cluster.limpet(nodes, upstream=ENGINEIO, server={"workers": 1}, tables=tables)
    statuses = [s for s, _ in handshakes(lp, 4)]
    assert statuses == [503] * 4, statuses
    # The first handshake tried the second node after the first's 503; from then on both are
    # avoided and still tried, as nothing else takes new sessions.
    assert admin_metric(admin, "limpet_handshake_retries_total") >= 1


def test_new_sessions_avoid_a_stopped_node_after_one_handshake_timeout(cluster):
    nodes = [cluster.backend(f"n{i}") for i in (1, 2, 3)]
    admin, tables = with_admin()
    lp = cluster.limpet(nodes, upstream={**ENGINEIO, "handshake_timeout": "1s"}, tables=tables)
    hung = nodes[0]
    hung.proc.send_signal(signal.SIGSTOP)
    try:
        def one(_):
            t = time.monotonic()
            with http_session() as s:
                r = s.get(lp.url(HANDSHAKE), timeout=30)
            return r.status_code, r.headers.get("X-Backend"), time.monotonic() - t
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(40)))
    finally:
        hung.proc.send_signal(signal.SIGCONT)
    assert [s for s, _, _ in results] == [200] * 40
    assert {b for _, b, _ in results} <= {"n2", "n3"}
    retried = admin_metric(admin, "limpet_handshake_retries_total")
    # Only handshakes placed on it before the first timeout went there (at most the 4 in flight
    # per worker); every later one was placed elsewhere at once.
    assert 1 <= retried <= 8, retried
    slow = sorted(t for _, _, t in results)[-int(retried):]
    print(f"{int(retried)} handshakes retried after handshake_timeout; slowest {slow[-1] * 1000:.0f} ms; "
          f"median {sorted(t for _, _, t in results)[20] * 1000:.1f} ms")


NODE_SERVER = r"""
// Node's HTTP server with its defaults: keepAliveTimeout 5 s, announced as Keep-Alive: timeout=5.
const http = require('http');
const server = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (d) => { n += d.length; });
  req.on('end', () => { res.setHeader('X-Backend', 'node'); res.end(JSON.stringify({ url: req.url, n })); });
});
server.listen(0, '127.0.0.1', () => { console.log(server.address().port); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by scripts/install-deps.sh")
def test_polling_sessions_idle_around_nodes_5s_keepalive_lose_nothing(cluster, tmp_path):
    script = tmp_path / "node_keepalive.js"
    script.write_text(NODE_SERVER)
    node = subprocess.Popen(["node", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(node.stdout.readline())

        admin, tables = with_admin()
        # The configured pool timeout alone (60 s) would outlive Node's 5 s: the backend's
        # Keep-Alive header and the freshness rule must keep the sessions.
        lp = cluster.limpet([("node", f"127.0.0.1:{port}")], upstream={**ENGINEIO, "keepalive_idle_timeout": "60s"},
                            server={"workers": 1}, tables=tables)
        sessions = 300
        rng = random.Random(17)
        pauses = [[rng.uniform(4.0, 6.0) for _ in range(2)] for _ in range(sessions)]

        def session(k):
            failures = []
            sid = f"s{k:04d}"
            with http_session() as s:
                for i, pause in enumerate([0.0, *pauses[k]]):
                    time.sleep(pause)
                    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
                    r = (s.get(lp.url(target), timeout=15) if i % 2 == 0
                         else s.post(lp.url(target), data=b"4hello", timeout=15))
                    if r.status_code != 200:
                        failures.append((sid, i, r.status_code))
            return failures

        with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
            failures = [f for fs in pool.map(session, range(sessions)) for f in fs]
        assert failures == [], failures[:10]
        resends = admin_metric(admin, "limpet_upstream_stale_resends_total")
        not_fresh = admin_metric(admin, "limpet_upstream_pool_not_fresh_total")
        print(f"{sessions} sessions x 3 requests, 0 failed; stale resends {resends:.0f}, "
              f"pooled connections passed over as not fresh {not_fresh:.0f}")
    finally:
        node.kill()
        node.wait(5)


UPGRADE = ("GET /echo HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_head(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_fd_exhaustion_pauses_accepting_and_recovers(cluster, tmp_path):
    """RLIMIT_NOFILE 256 and one worker: the budget (256 less the reserve, 2 per client) fills
    with tunnels; more clients wait in the backlog while the open tunnels echo and the admin
    answers, one line is logged, and when tunnels close the waiting clients get in."""
    wrapper = tmp_path / "limpet-256-fds"
    wrapper.write_text(f"#!/bin/sh\nulimit -n 256\nexec {limpet_bin()} \"$@\"\n")
    wrapper.chmod(0o755)
    ws = cluster.backend("ws1", kind="ws")
    admin, tables = with_admin()
    lp = cluster.limpet([ws], server={"workers": 1, "access_log": "off"}, tables=tables, binary=wrapper)
    assert admin_metric(admin, "limpet_fds", 'kind="limit"') == 256
    budget = admin_metric(admin, "limpet_fds", 'kind="budget"')
    fits = int(budget // 2)
    fleet = WsFleet(lp.port, fits - 10).open()
    extra = []
    try:
        for _ in range(40):  # 10 fit, 30 wait in the backlog
            s = socket.create_connection(("127.0.0.1", lp.port), timeout=5)
            s.sendall(UPGRADE)
            extra.append(s)
        wait_until(lambda: admin_metric(admin, "limpet_fd_budget_full_total") == 1, 10, "the budget to fill up")
        # Within the budget (the admin connection of this very scrape counts too).
        assert admin_metric(admin, "limpet_fds", 'kind="in_use"') <= budget + 1
        # At the limit: the open tunnels work, the admin answers, limpet does not spin.
        cpu_before = cpu_seconds(lp.proc.pid)
        echoes = fleet.echo_all(timeout=20)
        assert len(echoes) == fits - 10 and all(r is True for r in echoes.values()), echoes
        time.sleep(1.0)  # a window to measure CPU in, not a wait for an event
        cpu = cpu_seconds(lp.proc.pid) - cpu_before
        print(f"budget {budget:.0f} fds ({fits} clients); CPU while full: {cpu:.2f} s over the echo round + 1 s")
        assert cpu < 1.0, f"limpet burnt {cpu:.2f} s of CPU while its budget was full"
        assert lp.stderr().count("not accepting") == 1
        assert "too many open files" not in lp.stderr().lower()
    finally:
        fleet.close()
    # Room again: every waiting client gets its 101, and a new request is served.
    heads = [read_head(s, 15) for s in extra]
    for s in extra:
        s.close()
    assert all(h.startswith(b"HTTP/1.1 101") for h in heads), heads
    with socket.create_connection(("127.0.0.1", lp.port), timeout=5) as s:
        s.sendall(UPGRADE)
        assert read_head(s, 10).startswith(b"HTTP/1.1 101")
    wait_until(lambda: "accepting again" in lp.stderr(), 10, "the end of the incident to be logged")
