"""HTTP/2 to clients (listener http2 = true): ALPN h2 on TLS, prior-knowledge h2c on cleartext, each
stream proxied to an HTTP/1.1 backend, and WebSockets over HTTP/2 (RFC 8441) to backends that see
a plain HTTP/1.1 upgrade. Clients that share no code with limpet: curl, h2load
(nghttp2-client) and Python's h2 (hyper-h2), whose windows, resets and frames the test controls."""

import hashlib
import json
import os
import struct
import re
import signal
import socket
import subprocess
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

import pattern
from conftest import admin_metric, free_port, wait_until
from h2_util import H2
from ops_util import start_ops_limpet
from tls_util import Pki, run_cmd

MB = 1024 * 1024
MAX_STREAMS = 16


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def env(module_cluster, pki):
    """Listener 0: HTTPS with HTTP/2; 1: cleartext with h2c (max_body_size 1m); 2 and 3: HTTPS to
    a WebSocket backend (3: tunnel_idle_timeout 1s); admin for the counters."""
    cert, key, _ = pki.issue("default", dns=["localhost"], ips=["127.0.0.1"])
    backends = [module_cluster.backend(f"h2b{i}") for i in (1, 2)]
    ws = module_cluster.backend("h2ws", kind="ws")
    admin = f"127.0.0.1:{free_port()}"
    h2 = {"upstream": "app", "http2": True, "http2_max_streams": MAX_STREAMS, "max_header_size": "8k"}
    tls = {"tls": {"cert": cert, "key": key}}
    lp = module_cluster.limpet(None, upstreams=[
        {"name": "app", "engineio_paths": ["/socket.io/"], "backends": [(b.name, b.address) for b in backends]},
        {"name": "ws", "backends": [(ws.name, ws.address)]},
    ], listeners=[{**h2, **tls}, {**h2, "max_body_size": "1m"}, {**h2, **tls, "upstream": "ws"},
                  {**h2, **tls, "upstream": "ws", "tunnel_idle_timeout": "1s"}],
        tables={"[admin]": {"address": admin}})
    lp.admin_address = admin
    lp.test_backends = backends
    return lp


@pytest.fixture
def lp(env):
    env.assert_alive()
    yield env
    env.assert_alive()


def curl(pki, lp, *args, path="/echo", tls=True):
    if tls:
        url = [f"https://localhost:{lp.ports[0]}{path}", "--cacert", str(pki.ca_file),
               "--resolve", f"localhost:{lp.ports[0]}:127.0.0.1"]
    else:
        url = [f"http://127.0.0.1:{lp.ports[1]}{path}"]
    return run_cmd(["curl", "-sS", "--max-time", "20", "--noproxy", "*", *args, *url], timeout=30)


def counter(lp, name):
    return admin_metric(lp.admin_address, name) or 0


# ---------------------------------------------------------------------------------------------
# Negotiation


def test_tls_alpn_selects_h2_and_the_backend_sees_http11(lp, pki):
    rc, out, err = curl(pki, lp, "--http2", "-w", "\n%{http_version}")
    assert rc == 0, err
    body, _, version = out.rpartition("\n")
    assert version == "2"
    echo = json.loads(body)
    assert echo["version"] == "HTTP/1.1"
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["host"] == f"localhost:{lp.ports[0]}"  # from :authority
    assert headers["x-forwarded-proto"] == "https"
    # A client offering only http/1.1 still gets it on the same listener.
    rc, out, err = curl(pki, lp, "--http1.1", "-o", "/dev/null", "-w", "%{http_version}")
    assert (rc, out) == (0, "1.1"), err


def test_cleartext_listener_takes_prior_knowledge_h2c_and_http11(lp, pki):
    rc, out, err = curl(pki, lp, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        tls=False)
    assert (rc, out) == (0, "2 200"), err
    rc, out, err = curl(pki, lp, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", tls=False)
    assert (rc, out) == (0, "1.1 200"), err
    # The preface split over several reads is still recognised.
    s = socket.create_connection(("127.0.0.1", lp.ports[1]), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    wire = conn.data_to_send()
    for piece in (wire[:1], wire[1:3], wire[3:]):
        s.sendall(piece)
        time.sleep(0.05)
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/echo")],
                      end_stream=True)
    s.sendall(conn.data_to_send())
    status = None
    deadline = time.monotonic() + 10
    while status is None and time.monotonic() < deadline:
        for event in conn.receive_data(s.recv(65536)):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[":status"]
        s.sendall(conn.data_to_send())
    s.close()
    assert status == "200"


# ---------------------------------------------------------------------------------------------
# Requests and bodies


def test_request_bodies_with_and_without_length_and_a_large_response(lp, pki, tmp_path):
    data = pattern.data(3 * MB + 17)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    rc, out, err = curl(pki, lp, "--http2", "--data-binary", f"@{upload}", path="/upload")
    assert rc == 0, err
    assert json.loads(out) == {**json.loads(out), "length": len(data), "sha256": want, "chunked": False}
    # From stdin: no content-length on the stream, so chunked toward the backend.
    rc, out, err = run_cmd(["curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(pki.ca_file),
                            "--resolve", f"localhost:{lp.ports[0]}:127.0.0.1", "-T", "-",
                            f"https://localhost:{lp.ports[0]}/upload"], timeout=30, stdin=data)
    assert rc == 0, err
    assert json.loads(out) == {**json.loads(out), "length": len(data), "sha256": want, "chunked": True}
    got = tmp_path / "big.bin"
    rc, out, err = curl(pki, lp, "--http2", "-o", str(got), "-w", "%{http_code}", path=f"/big?size={5 * MB}")
    assert (rc, out) == (0, "200"), err
    assert got.read_bytes() == pattern.data(5 * MB)


def test_many_concurrent_streams_with_h2load(lp, pki):
    before = counter(lp, "limpet_http2_streams_total")
    rc, out, err = run_cmd(["h2load", "-n", "2000", "-c", "4", "-m", str(MAX_STREAMS),
                            f"http://127.0.0.1:{lp.ports[1]}/echo"], timeout=60)
    assert rc == 0, err + out
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 2000 2xx" in out, out
    assert counter(lp, "limpet_http2_streams_total") - before == 2000
    with urllib.request.urlopen(f"http://{lp.admin_address}/status", timeout=5) as r:
        status = json.loads(r.read())
    assert status["http2"]["streams"] >= 2000 and status["http2"]["connections"] >= 4, status["http2"]


def test_engineio_sessions_stay_on_their_backends_over_h2(lp, pki):
    """Sessions opened over one HTTP/2 connection (one client IP, one TCP connection) spread
    over both backends, and every later request of a session reaches the backend that opened it."""
    client = H2(pki, lp)
    try:
        owners = set()
        for _ in range(6):
            opened = client.response(client.request("/socket.io/?EIO=4&transport=polling"))
            assert opened["headers"][":status"] == "200"
            sid = json.loads(bytes(opened["data"])[1:])["sid"]
            owner = sid.split("-")[0]
            owners.add(owner)
            streams = [client.request(f"/socket.io/?EIO=4&transport=polling&sid={sid}") for _ in range(5)]
            seen = {json.loads(bytes(client.response(s)["data"]))["backend"] for s in streams}
            assert seen == {owner}, (sid, seen)
        assert owners == {"h2b1", "h2b2"}
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Flow control


def test_a_slow_stream_does_not_stall_the_others(lp, pki):
    """Stream A's reader stops after its first window (64 KiB) of a 4 MiB answer; streams on
    the same connection still complete, and A does once its reader catches up."""
    client = H2(pki, lp)
    try:
        slow = client.request(f"/big?size={4 * MB}")
        client.held.add(slow)
        client.wait(lambda: len(client.streams[slow]["data"]) >= 65535, 10, "the slow stream's first window")
        for _ in range(5):
            fast = client.request("/echo")
            assert client.response(fast)["headers"][":status"] == "200"
        assert not client.done(slow) and len(client.streams[slow]["data"]) == 65535
        deadline = time.monotonic() + 30
        while not client.done(slow):
            assert time.monotonic() < deadline, "the slow stream never completed"
            client.release(slow)
            client.held.add(slow)
            client.pump(0.05)
        assert bytes(client.streams[slow]["data"]) == pattern.data(4 * MB)
    finally:
        client.close()


def test_an_upload_to_a_backend_that_reads_late_completes(lp, pki):
    """/sink reads its body only after 500 ms: the stream's window reopens as the backend
    takes the bytes, and all of them arrive."""
    client = H2(pki, lp)
    try:
        body = pattern.data(2 * MB)
        sid = client.request("/sink?delay_ms=500", method="POST", headers=[("content-length", str(len(body)))],
                             body=body)
        answer = client.response(sid, timeout=30)
        assert answer["headers"][":status"] == "200"
        assert json.loads(bytes(answer["data"]))["sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Resets, limits, malformed streams


def test_a_client_reset_aborts_the_backend_request_and_the_connection_goes_on(lp, pki):
    before = counter(lp, "limpet_http2_client_resets_total")
    client = H2(pki, lp)
    try:
        hung = client.request("/hang")
        wait_until(lambda: any("/hang" in b.paths() for b in lp.test_backends), 10, "the request to reach a backend")
        client.reset(hung)
        wait_until(lambda: counter(lp, "limpet_http2_client_resets_total") == before + 1, 10,
                   "the reset to be counted")
        assert client.response(client.request("/echo"))["headers"][":status"] == "200"
    finally:
        client.close()
    wait_until(lambda: re.search(r'"GET /hang HTTP/2\.0" 499 ', lp.stderr()), 10, "the 499 access-log line")
    # The whole connection goes: its open streams are logged as aborted too.
    client = H2(pki, lp)
    client.request("/hang?gone=1")
    wait_until(lambda: any("/hang?gone=1" in b.paths() for b in lp.test_backends), 10, "the request to reach a backend")
    client.close()
    wait_until(lambda: re.search(r'"GET /hang\?gone=1 HTTP/2\.0" 499 ', lp.stderr()), 10, "the 499 line of the closed connection")


def test_settings_and_limits(lp, pki):
    client = H2(pki, lp)
    try:
        client.wait(lambda: h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in client.remote_settings, 10,
                    "limpet's SETTINGS")
        assert client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_STREAMS
        assert client.remote_settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0
        big = client.request("/echo", headers=[("x-big", "a" * 9000)])
        assert client.response(big)["headers"][":status"] == "431"
        no_host = client.request("/echo", headers=[])
        assert client.response(no_host)["headers"][":status"] == "200"  # :authority is the host
    finally:
        client.close()


def test_more_body_than_content_length_is_a_stream_error_not_a_second_request(lp, pki):
    client = H2(pki, lp)
    try:
        sid = client.request("/upload", method="POST", headers=[("content-length", "5")], body=b"0123456789")
        assert client.response(sid)["reset"] == 1  # PROTOCOL_ERROR
        bad = client.request("/echo", headers=[("connection", "keep-alive")])  # connection-specific: refused
        assert client.response(bad)["reset"] == 1
        assert client.response(client.request("/echo"))["headers"][":status"] == "200"
    finally:
        client.close()


def test_graceful_stop_sends_goaway_and_finishes_the_open_stream(cluster, pki):
    """nghttp (hyper-h2 takes a GOAWAY for the end of everything) keeps a request open across
    the SIGQUIT: it gets GOAWAY (NO_ERROR) and then its answer."""
    cert, key, _ = pki.issue("goaway", dns=["localhost"], ips=["127.0.0.1"])
    backend = cluster.backend("gw1")
    lp = cluster.limpet([backend], listener={"http2": True, "tls": {"cert": cert, "key": key}},
                        server={"shutdown_timeout": "10s"})
    nghttp = subprocess.Popen(["nghttp", "-v", "-t", "20", f"https://127.0.0.1:{lp.port}/slow?ms=1500"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "SSL_CERT_FILE":
                                                                                   str(pki.ca_file)})
    wait_until(lambda: any(p.startswith("/slow") for p in backend.paths()), 10, "the request to reach the backend")
    lp.signal(signal.SIGQUIT)  # graceful (SIGTERM is the fast stop)
    out, _ = nghttp.communicate(timeout=30)
    text = out.decode(errors="replace")
    goaway = text.find("recv GOAWAY")
    assert goaway >= 0 and "error_code=NO_ERROR" in text[goaway:goaway + 200], text[-3000:]
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", text), text[-3000:]
    assert lp.wait_exit(15) == 0


# ---------------------------------------------------------------------------------------------
# WebSockets over HTTP/2 (RFC 8441)


def test_settings_offer_extended_connect(lp, pki):
    client = H2(pki, lp, listener=2)
    try:
        client.wait(lambda: h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in client.remote_settings, 10,
                    "limpet's SETTINGS")
        assert client.remote_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    finally:
        client.close()


def test_websocket_over_h2_is_a_plain_upgrade_at_the_backend(lp, pki):
    before = counter(lp, "limpet_http2_websockets_total")
    client = H2(pki, lp, listener=2)
    try:
        ws = client.websocket("/headers")
        assert client.streams[ws]["headers"][":status"] == "200"
        assert "sec-websocket-accept" not in client.streams[ws]["headers"]
        opcode, first = client.wait_frames(ws, 1)[0]
        assert opcode == 1, first
        seen = {k.lower(): v for k, v in json.loads(first)}
        assert seen["upgrade"].lower() == "websocket" and "upgrade" in seen["connection"].lower()
        assert len(seen["sec-websocket-key"]) == 24 and seen["sec-websocket-version"] == "13"
        # Frames both ways, a plain stream on the same connection meanwhile.
        for i, size in enumerate([5, 125, 126, 4000]):
            client.ws_send(ws, bytes([65 + i]) * size)
            assert client.wait_frames(ws, 2 + i)[-1] == (1, bytes([65 + i]) * size)
        plain = client.request("/echo")  # on the ws upstream: the backend refuses plain HTTP
        assert client.response(plain)["headers"] is not None
        client.ws_send(ws, struct.pack("!H", 1000) + b"done", opcode=8)
        frames = client.wait_frames(ws, 6)
        assert frames[-1][0] == 8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1000
        client.conn.end_stream(ws)
        client.flush()
        client.response(ws)
    finally:
        client.close()
    assert counter(lp, "limpet_http2_websockets_total") == before + 1
    wait_until(lambda: re.search(r'"WEBSOCKET closed" 101 .*closed_by=client', lp.stderr()), 10,
               "the tunnel's close line")


def test_websocket_over_h2_refused_by_the_backend_gets_its_answer(lp, pki):
    client = H2(pki, lp, listener=2)
    try:
        refused = client.websocket("/refuse")
        answer = client.response(refused)
        assert answer["headers"][":status"] == "403"
        assert b"refused by h2ws" in bytes(answer["data"])
        # Another :protocol than websocket is not tunnelled.
        sid = client.conn.get_next_available_stream_id()
        client.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        client.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "webtransport"), (":scheme", "https"),
                                       (":authority", "localhost"), (":path", "/echo")], end_stream=True)
        client.flush()
        assert client.response(sid)["headers"][":status"] == "501"
    finally:
        client.close()


def test_an_idle_websocket_over_h2_is_closed_after_tunnel_idle_timeout(lp, pki):
    client = H2(pki, lp, listener=3)
    try:
        idle = client.websocket("/echo")
        client.ws_send(idle, b"once")
        client.wait_frames(idle, 1)
        other = client.request("/echo")  # the connection itself stays up
        client.response(other)
        client.response(idle, timeout=10)  # ended or reset by limpet, about 1 s after the last frame
    finally:
        client.close()
    wait_until(lambda: re.search(r'"WEBSOCKET closed" 101 .*close_reason=idle', lp.stderr()), 10,
               "the idle close line")


def test_graceful_stop_closes_websockets_over_h2_with_1001(cluster, pki):
    cert, key, _ = pki.issue("wsstop", dns=["localhost"], ips=["127.0.0.1"])
    ws = cluster.backend("wsstop", kind="ws")
    lp = cluster.limpet([ws], listener={"http2": True, "tls": {"cert": cert, "key": key}},
                        server={"shutdown_timeout": "10s", "close_spread": "0s"})
    client = H2(pki, lp)
    client.strip_goaway = True
    try:
        sid = client.websocket("/echo")
        client.ws_send(sid, b"before")
        client.wait_frames(sid, 1)
        lp.signal(signal.SIGQUIT)
        frames = client.wait_frames(sid, 2)
        assert frames[-1][0] == 8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1001, frames
        assert client.goaway_codes == [0]
        client.ws_send(sid, struct.pack("!H", 1001), opcode=8)  # the client answers the Close
        client.conn.end_stream(sid)
        client.flush()
    finally:
        client.close()
    assert lp.wait_exit(15) == 0
    assert re.search(r'"WEBSOCKET closed" 101 .*close_reason=shutdown', lp.stderr()), lp.stderr()[-3000:]


def test_draining_a_backend_closes_its_websockets_over_h2_with_1012(cluster, pki):
    """The operator drains one backend: its tunnel on an HTTP/2 stream gets Close 1012, the
    tunnel to the other backend on the same connection carries on."""
    cert, key, _ = pki.issue("wsdrain", dns=["localhost"], ips=["127.0.0.1"])
    w1, w2 = cluster.backend("wsd1", kind="ws"), cluster.backend("wsd2", kind="ws")
    lp = start_ops_limpet(cluster, [w1, w2], listener={"http2": True, "tls": {"cert": cert, "key": key}},
                          server={"drain_timeout": "100ms", "close_spread": "0s"}, upstream={"balance": "round_robin"})
    client = H2(pki, lp)
    try:
        streams = {}
        for _ in range(2):
            sid = client.websocket("/hello")
            streams[bytes(client.wait_frames(sid, 1)[0][1]).decode()] = sid
        assert set(streams) == {"hello from wsd1", "hello from wsd2"}, streams
        drained, kept = streams["hello from wsd1"], streams["hello from wsd2"]
        code, _, body = lp.post("wsd1", "drain")
        assert code == 200, body
        frames = client.wait_frames(drained, 2)
        assert frames[-1][0] == 8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1012, frames
        client.ws_send(kept, b"still here")
        assert client.wait_frames(kept, 2)[-1] == (1, b"still here")
    finally:
        client.close()


def test_rapid_reset_ends_the_connection_and_nothing_else(lp, pki):
    """CVE-2023-44487: streams opened and reset at once, far past nghttp2's reset budget (1000 at
    once, then 33/s). The connection gets GOAWAY and is closed; limpet serves the next one."""
    client = H2(pki, lp)
    client.strip_goaway = True
    try:
        for _ in range(1500):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "localhost:1")])  # answered locally
            client.conn.reset_stream(sid, 8)
        client.flush()
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                client.pump(0.05)
            except (ConnectionError, OSError):
                closed = True
        assert closed, "limpet kept the connection"
        assert client.goaway_codes and client.goaway_codes[-1] != 0, client.goaway_codes
    finally:
        client.close()
    wait_until(lambda: "connection ended with GOAWAY" in lp.stderr(), 10, "the GOAWAY's log line")
    again = H2(pki, lp)
    try:
        assert again.response(again.request("/echo"))["headers"][":status"] == "200"
    finally:
        again.close()


def raw_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def closed_by_limpet(sock, timeout=20):
    """Reads (and drops) until limpet closes the connection; False if it did not in time."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except (socket.timeout, TimeoutError):
            continue
        except OSError:
            return True
    return False


def test_streams_beyond_http2_max_streams_are_refused(lp, pki):
    client = H2(pki, lp)
    try:
        # Opened before limpet's SETTINGS are read, so the client does not hold itself back.
        hung = [client.request("/hang") for _ in range(MAX_STREAMS + 4)]
        client.wait(lambda: sum(client.streams[s]["reset"] == 7 for s in hung) == 4, 10, "4 REFUSED_STREAM")
        for s in hung:
            if not client.done(s):
                client.reset(s)
        assert client.response(client.request("/echo"))["headers"][":status"] == "200"
    finally:
        client.close()


def test_a_continuation_flood_ends_the_connection(lp, pki):
    before = lp.stderr().count("Too many CONTINUATION frames")
    client = H2(pki, lp)
    try:
        # A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION after
        # CONTINUATION (CVE-2024-28182); nghttp2 allows 8.
        flood = raw_frame(0x1, 0, 1, b"\x82") + b"".join(raw_frame(0x9, 0, 1, b"\x84") for _ in range(100))
        client.sock.sendall(flood)
        assert closed_by_limpet(client.sock), "limpet kept the connection"
    finally:
        client.close()
    wait_until(lambda: lp.stderr().count("Too many CONTINUATION frames") > before, 10, "the connection's log line")


def test_a_ping_flood_from_a_client_that_does_not_read_ends_the_connection(lp, pki):
    """Every PING owes an ACK; a client that sends them and reads nothing fills limpet's queue
    toward it, then nghttp2's queue of ACKs (1,000 at most): the connection is closed, and what
    limpet held for it is bounded by those two."""
    before = lp.stderr().count("Flooding was detected")
    s = socket.create_connection(("127.0.0.1", lp.ports[1]), timeout=10)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + raw_frame(0x4, 0, 0))
        pings = raw_frame(0x6, 0, 0, b"12345678") * 4096
        s.settimeout(0.5)
        deadline = time.monotonic() + 20
        gone = False
        while not gone and time.monotonic() < deadline:
            try:
                s.sendall(pings)
            except (socket.timeout, TimeoutError):
                continue  # limpet is not reading either: its end is full too
            except OSError:
                gone = True
        assert gone or closed_by_limpet(s), "limpet kept the connection"
    finally:
        s.close()
    wait_until(lambda: lp.stderr().count("Flooding was detected") > before, 10, "the connection's log line")


def test_cookie_crumbs_reach_the_backend_as_one_header(lp, pki):
    """RFC 9113 §8.2.3: an HTTP/2 client may split Cookie into crumbs; HTTP/1.1 gets one header."""
    client = H2(pki, lp)
    try:
        sid = client.request("/echo", headers=[("cookie", "a=1"), ("x-other", "y"), ("cookie", "b=2; c=3")])
        echo = json.loads(bytes(client.response(sid)["data"]))
        cookies = [v for k, v in echo["headers"] if k.lower() == "cookie"]
        assert cookies == ["a=1; b=2; c=3"], echo["headers"]
        assert ["x-other", "y"] in echo["headers"]
    finally:
        client.close()


def test_max_body_size_per_stream(lp, pki):
    """413 for a declared length over max_body_size, and for a body without one that runs over."""
    client = H2(pki, lp, tls=False)
    try:
        declared = client.request("/upload", method="POST", headers=[("content-length", str(2 * MB))], end=False)
        assert client.response(declared)["headers"][":status"] == "413"
        streamed = client.request("/upload", method="POST", end=False)
        client.send_body(streamed, pattern.data(MB + 100 * 1024), end=False)
        assert client.response(streamed)["headers"][":status"] == "413"
        assert client.response(client.request("/echo"))["headers"][":status"] == "200"
    finally:
        client.close()


def test_stream_deadlines_blame_the_side_that_stalled(cluster, pki):
    """Each stream keeps its exchange's deadlines: a backend that never answers gets 504
    (read_timeout), a client that stops sending its body 408 (body_timeout); the connection and
    its other streams go on."""
    backend = cluster.backend("dl1")
    lp = cluster.limpet([backend], listener={"http2": True, "body_timeout": "1s"},
                        upstream={"read_timeout": "1s"})
    client = H2(pki, lp, tls=False, listener=0)
    try:
        hung = client.request("/hang")
        stalled = client.request("/upload", method="POST", headers=[("content-length", "10")], body=b"12345",
                                 end=False)
        assert client.response(hung, timeout=10)["headers"][":status"] == "504"
        assert client.response(stalled, timeout=10)["headers"][":status"] == "408"
        assert client.response(client.request("/echo"))["headers"][":status"] == "200"
    finally:
        client.close()
