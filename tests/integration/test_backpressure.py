"""Bodies and tunnels are streamed with backpressure, never buffered whole: while one side does
not read, limpet stops reading the other, and its memory stays flat."""

import socket
import struct
import threading
import time

from conftest import PatternBody, RawHttp, build_request, http_session, wait_until

MB = 1024 * 1024
GROWTH_LIMIT = 64 * MB  # what limpet may add while 200 MB wait on a side that does not read


def rss(lp):
    with open(f"/proc/{lp.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_reading_client_download(cluster):
    b = cluster.backend("p1")
    lp = cluster.limpet([b], server={"workers": 1})
    size = 200 * MB
    with RawHttp(lp.port, timeout=20) as c:
        base = rss(lp)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        c.send(build_request("GET", f"/big?size={size}"))
        time.sleep(1.5)  # not reading: the backend keeps offering the body meanwhile
        grown = rss(lp) - base
        assert grown < GROWTH_LIMIT, f"limpet grew by {grown // MB} MB while the client did not read"
        c.read_head()
        got = 0
        while got < size:
            got += len(c.read_exact(min(MB, size - got)))
    assert got == size


def test_slow_reading_backend_upload(cluster):
    b = cluster.backend("p2")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"max_body_size": "1g"})
    size = 200 * MB
    base = rss(lp)
    result = {}

    def upload():
        with http_session() as s:
            result["r"] = s.post(lp.url("/sink?delay_ms=2000"), data=PatternBody(size), timeout=60)

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    time.sleep(1.5)  # the backend is not reading yet
    grown = rss(lp) - base
    t.join(60)
    assert not t.is_alive(), "upload did not finish"
    assert grown < GROWTH_LIMIT, f"limpet grew by {grown // MB} MB while the backend did not read"
    assert result["r"].status_code == 200
    assert result["r"].json()["length"] == size


def test_tunnel_stops_reading_a_client_whose_echoes_are_not_read(cluster):
    ws = cluster.backend("pw", kind="ws")
    lp = cluster.limpet([ws], server={"workers": 1})
    base = rss(lp)
    with RawHttp(lp.port, timeout=10) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert c.read_head()[1] == 101
        payload = b"\xab" * 60000
        # Binary frame, masked with a zero key (valid, and no per-byte work here).
        frame = struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload
        c.sock.settimeout(2.0)
        sent = 0
        try:
            while sent < 400 * MB:
                c.sock.sendall(frame)
                sent += len(frame)
        except socket.timeout:
            pass  # blocked: backpressure reached us
        grown = rss(lp) - base
        assert sent < 200 * MB, f"sent {sent // MB} MB without reading an echo: nothing pushed back"
        assert grown < GROWTH_LIMIT, f"limpet grew by {grown // MB} MB"
    wait_until(lp.alive, 1, "limpet alive")
