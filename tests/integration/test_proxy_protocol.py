"""PROXY protocol: HAProxy 2.6 (mode tcp, `send-proxy` / `send-proxy-v2`) in front of a
proxy_protocol listener, hand-made headers on raw sockets (malformed, split, slow, untrusted
peers), a TLS listener behind HAProxy, and `send_proxy_protocol` toward a backend written here
(it parses the header itself, shares no code with limpet, and answers HTTP on the connection).

Clients connect from 127.0.0.2 and up (any 127/8 address is local on Linux) so that the client's
address differs from HAProxy's and from a direct peer's (127.0.0.1).
"""

import http.client
import json
import re
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time

import pytest

from conftest import RawHttp, free_port, stop_process, wait_until
from ops_util import start_ops_limpet
from tls_util import Pki, client_context

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# ---------------------------------------------------------------------------------------------
# helpers

class Haproxy:
    """haproxy in the foreground, mode tcp: one frontend to one server line."""

    def __init__(self, tmp_path, target_port, server_options):
        self.port = free_port()
        cfg = tmp_path / f"haproxy-{self.port}.cfg"
        cfg.write_text(f"""
global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{self.port}
    default_backend be
backend be
    server limpet 127.0.0.1:{target_port} {server_options}
""")
        self.log_path = tmp_path / f"haproxy-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log)
        wait_until(self._listening, 10, f"haproxy to listen on {self.port}")

    def _listening(self):
        assert self.proc.poll() is None, "haproxy exited: " + self.log_path.read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        stop_process(self.proc)
        self._log.close()


@pytest.fixture
def haproxies():
    started = []
    yield started
    for h in started:
        h.stop()


def pp_limpet(cluster, backends, trusted=("127.0.0.1",), upstream=None, **listener):
    """limpet with listener 0 behind the PROXY protocol and listener 1 plain, same upstream."""
    pp = {"upstream": "app", "proxy_protocol": True, "trusted_proxies": list(trusted), **listener}
    return start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": list(backends), **(upstream or {})}],
                            listeners=[pp, {"upstream": "app"}])


def echo(conn):
    resp = conn.request("GET", "/echo")
    assert resp.status == 200, resp
    return resp.json()


def header(echo_body, name):
    return [v for k, v in echo_body["headers"] if k.lower() == name.lower()]


def access_lines(lp, marker):
    return [line for line in lp.stderr().splitlines() if marker in line and '"GET ' in line]


def rejected(lp, reason):
    m = re.search(r'^limpet_proxy_protocol_rejected_total\{reason="%s"\} (\S+)$' % reason, lp.metrics_text(), re.M)
    assert m, lp.metrics_text()
    return float(m.group(1))


def v2_header(src, sport, dst, dport):
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def assert_closed_without_response(conn, timeout=3.0):
    assert conn.closed_by_peer(timeout), "limpet kept the connection open"
    assert conn.buf == b"", f"limpet answered: {conn.buf[:200]!r}"


# ---------------------------------------------------------------------------------------------
# behind HAProxy

@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_send_proxy_gives_the_real_client_address(cluster, haproxies, send):
    b = cluster.backend("pp1")
    lp = pp_limpet(cluster, [b])
    hp = Haproxy(cluster.tmp_path, lp.port, send)
    haproxies.append(hp)
    with RawHttp(hp.port, source="127.0.0.2") as c:
        body = echo(c)
        assert header(body, "X-Forwarded-For") == ["127.0.0.2"], body
        # Keep-alive: the second request rides the same PROXY'd connection.
        resp = c.request("GET", "/echo?second-" + send)
        assert header(resp.json(), "X-Forwarded-For") == ["127.0.0.2"]
    lines = wait_until(lambda: access_lines(lp, "second-" + send), 5, "the access log line")
    assert lines[0].startswith("127.0.0.2 ["), lines


def test_ip_hash_key_uses_the_proxy_source(cluster, haproxies):
    backends = [cluster.backend(f"h{i}") for i in range(3)]
    lp = pp_limpet(cluster, backends, upstream={"hash_keys": ["ip"]})
    hp = Haproxy(cluster.tmp_path, lp.port, "send-proxy-v2")
    haproxies.append(hp)

    def backend_direct(source):
        with RawHttp(lp.ports[1], source=source) as c:
            return echo(c)["backend"]

    def backend_proxied(source):
        with RawHttp(hp.port, source=source) as c:
            return echo(c)["backend"]

    # HAProxy's own address (127.0.0.1) lands on one backend; find clients that hash elsewhere,
    # so that landing there proves the PROXY source was the key.
    haproxy_backend = backend_direct("127.0.0.1")
    sources = [f"127.0.0.{i}" for i in range(2, 40)]
    elsewhere = [s for s in sources if backend_direct(s) != haproxy_backend][:3]
    assert elsewhere, "every address hashed to one backend"
    for s in elsewhere:
        expected = backend_direct(s)
        assert [backend_proxied(s) for _ in range(3)] == [expected] * 3, s


def test_tls_listener_behind_send_proxy(cluster, haproxies, tmp_path):
    pki = Pki(tmp_path / "pki")
    cert, key, _ = pki.issue("default", dns=["localhost"], ips=["127.0.0.1"])
    b = cluster.backend("pt1")
    lp = pp_limpet(cluster, [b], tls={"cert": cert, "key": key})
    hp = Haproxy(cluster.tmp_path, lp.port, "send-proxy-v2")
    haproxies.append(hp)
    for _ in range(2):  # a second connection: nothing left over from the first
        conn = http.client.HTTPSConnection("127.0.0.1", hp.port, timeout=10, context=client_context(pki),
                                           source_address=("127.0.0.3", 0))
        conn.request("GET", "/echo?tls-pp", headers={"Host": "localhost"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200
        assert header(body, "X-Forwarded-For") == ["127.0.0.3"], body
        assert header(body, "X-Forwarded-Proto") == ["https"], body
    assert access_lines(lp, "tls-pp")[0].startswith("127.0.0.3 [")


# ---------------------------------------------------------------------------------------------
# hand-made headers

def test_untrusted_peer_is_closed_without_a_response(cluster):
    b = cluster.backend("pu1")
    lp = pp_limpet(cluster, [b], trusted=["10.0.0.0/8", "::1/128"])
    with RawHttp(lp.port) as c:  # from 127.0.0.1: not trusted
        c.send(b"PROXY TCP4 203.0.113.1 127.0.0.1 1234 80\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        assert_closed_without_response(c)
    wait_until(lambda: rejected(lp, "untrusted") >= 1, 5, "the untrusted counter")
    assert b.request_log() == []
    # Under a flood, nothing is logged per connection at the default level.
    for _ in range(50):
        with RawHttp(lp.port) as c:
            assert c.closed_by_peer(3)
    wait_until(lambda: rejected(lp, "untrusted") >= 51, 5, "51 untrusted connections counted")
    assert "trusted_proxies" not in lp.stderr()


@pytest.mark.parametrize("wire, why", [
    (b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", "no header"),
    (b"PROXY TCP4 203.0.113.1 127.0.0.1 01234 80\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n", "leading zero"),
    (b"PROXY TCP4  203.0.113.1 127.0.0.1 1234 80\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n", "two spaces"),
    (b"PROXY TCP6 203.0.113.1 127.0.0.1 1234 80\r\n", "v4 in TCP6"),
    (b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "too long"),
    (V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12, "v2 command 2"),
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12, "v2 short IPv6 block"),
])
def test_malformed_header_is_refused(cluster, wire, why):
    b = cluster.backend("pm1")
    lp = pp_limpet(cluster, [b])
    before = rejected(lp, "malformed")
    with RawHttp(lp.port) as c:
        c.send(wire)
        assert_closed_without_response(c)
    wait_until(lambda: rejected(lp, "malformed") == before + 1, 5, "the malformed counter")
    assert b.request_log() == []


@pytest.mark.parametrize("preamble, client", [
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n", "198.51.100.7"),
    (b"PROXY TCP6 2001:db8::7 ::1 40000 80\r\n", "2001:db8::7"),
    (v2_header("198.51.100.8", 40000, "127.0.0.1", 80), "198.51.100.8"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
    (V2_SIGNATURE + b"\x20\x00\x00\x00", "127.0.0.1"),  # LOCAL: the socket's peer
])
def test_header_split_across_segments_and_request_in_the_same_segment(cluster, preamble, client):
    b = cluster.backend("ps1")
    lp = pp_limpet(cluster, [b])
    request = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    # Every byte its own segment (TCP_NODELAY, a pause between), the request right behind it.
    with RawHttp(lp.port) as c:
        for i in range(len(preamble)):
            c.send(preamble[i:i + 1])
            time.sleep(0.002)  # lets each byte leave as its own segment; not a check
        c.send(request)
        resp = c.read_response()
        assert resp.status == 200 and header(resp.json(), "X-Forwarded-For") == [client]
    # The header and the first request in one segment: nothing after the header is lost.
    with RawHttp(lp.port) as c:
        c.send(preamble + request + request)
        for _ in range(2):
            resp = c.read_response()
            assert resp.status == 200 and header(resp.json(), "X-Forwarded-For") == [client]


def test_slow_header_hits_the_timeout(cluster):
    b = cluster.backend("pl1")
    lp = pp_limpet(cluster, [b], proxy_protocol_timeout="300ms")
    with RawHttp(lp.port) as c:
        started = time.monotonic()
        c.send(b"PROXY TCP4 198.51.100.7 ")
        assert c.closed_by_peer(timeout=5), "no close after proxy_protocol_timeout"
        elapsed = time.monotonic() - started
        assert c.buf == b""
    assert 0.25 <= elapsed < 3, elapsed
    wait_until(lambda: rejected(lp, "timeout") == 1, 5, "the timeout counter")
    # Silence counts as a timeout too.
    with RawHttp(lp.port) as c:
        assert c.closed_by_peer(timeout=5)
    wait_until(lambda: rejected(lp, "timeout") == 2, 5, "the second timeout")


def test_without_proxy_protocol_a_header_is_just_a_bad_request(cluster):
    b = cluster.backend("pn1")
    lp = pp_limpet(cluster, [b])
    with RawHttp(lp.ports[1]) as c:  # the plain listener
        c.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 400


# ---------------------------------------------------------------------------------------------
# send_proxy_protocol toward a backend

def read_proxy_header(f):
    """(version, source ip or None for LOCAL/UNKNOWN) from a file object, read exactly."""
    first = f.read(1)
    if first == b"P":
        line = first + f.readline(106)
        assert line.endswith(b"\r\n"), line
        parts = line[:-2].decode().split(" ")
        assert parts[0] == "PROXY", line
        if parts[1] == "UNKNOWN":
            return 1, None
        assert parts[1] in ("TCP4", "TCP6") and len(parts) == 6, line
        return 1, parts[2]
    fixed = first + f.read(15)
    assert fixed[:12] == V2_SIGNATURE, fixed
    length = struct.unpack("!H", fixed[14:16])[0]
    block = f.read(length)
    if fixed[12] == 0x20:
        return 2, None
    assert fixed[12] == 0x21, fixed
    if fixed[13] == 0x11:
        return 2, socket.inet_ntop(socket.AF_INET, block[0:4])
    assert fixed[13] == 0x21, fixed
    return 2, socket.inet_ntop(socket.AF_INET6, block[0:16])


class ProxyProtocolBackend:
    """Expects a PROXY header on every connection, then answers HTTP/1.1 with keep-alive: each
    response says which connection served it and what its header claimed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = []  # (version, source) per connection, in accept order
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                try:
                    version, source = read_proxy_header(self.rfile)
                except (AssertionError, IndexError, OSError):
                    return  # no valid header: the connection is dropped, as such servers do
                with backend.lock:
                    conn_id = len(backend.connections)
                    backend.connections.append((version, source))
                while True:
                    request_line = self.rfile.readline(8192)
                    if not request_line:
                        return
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    path = request_line.split(b" ")[1].decode()
                    body = json.dumps({"conn": conn_id, "source": source, "path": path}).encode()
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pp_backend():
    b = ProxyProtocolBackend()
    yield b
    b.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_protocol_to_the_backend(cluster, pp_backend, version):
    lp = start_ops_limpet(cluster, [("ppb", pp_backend.address)],
                          upstream={"send_proxy_protocol": version,
                                    "health": {"type": "http", "path": "/healthz", "interval": "100ms"}})
    number = int(version[1])
    # The health checks send a header without a client (LOCAL / UNKNOWN) and are answered.
    wait_until(lambda: (number, None) in pp_backend.connections, 5, "a health check with a LOCAL header")
    assert lp.backend_states() == {"ppb": "up"}

    # Two clients, keep-alive each, interleaved: every backend connection carries one client's
    # address and serves that client only.
    clients = {src: RawHttp(lp.port, source=src) for src in ("127.0.0.2", "127.0.0.3")}
    served = []
    try:
        for i in range(3):
            for src, c in clients.items():
                resp = c.request("GET", f"/r{i}")
                assert resp.status == 200, resp
                served.append((src, resp.json()))
    finally:
        for c in clients.values():
            c.close()
    owner = {}
    for src, r in served:
        version_seen, source = pp_backend.connections[r["conn"]]
        assert (version_seen, source) == (number, src), (src, r, pp_backend.connections)
        assert owner.setdefault(r["conn"], src) == src, f"connection {r['conn']} served two clients"


def test_send_proxy_protocol_passes_on_the_address_received(cluster, pp_backend):
    lp = pp_limpet(cluster, [("ppb", pp_backend.address)], upstream={"send_proxy_protocol": "v2"})
    with RawHttp(lp.port) as c:
        c.send(b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n")
        resp = c.request("GET", "/through")
        assert resp.status == 200
        assert pp_backend.connections[resp.json()["conn"]] == (2, "198.51.100.9")
