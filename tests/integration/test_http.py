"""HTTP/1.1 proxying: headers, bodies both ways, keep-alive on both sides, pipelining."""

import collections
import socket
import threading
import time

import pytest

from conftest import PatternBody, RawHttp, build_request, chunked, http_session, pattern, sha256_stream

BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def env(module_cluster):
    b1 = module_cluster.backend("h1")
    b2 = module_cluster.backend("h2")
    lp = module_cluster.limpet([b1, b2])
    return lp, (b1, b2)


@pytest.fixture
def lp(env):
    lp, _ = env
    lp.assert_alive()
    yield lp
    lp.assert_alive()


@pytest.fixture
def s():
    with http_session() as session:
        yield session


def backend_headers(echo):
    """Headers the backend received, as {lowercase name: [values]}."""
    out = collections.defaultdict(list)
    for k, v in echo["headers"]:
        out[k.lower()].append(v)
    return out


# ---- simple requests and headers -------------------------------------------------------------

def test_get_reaches_backend_with_path_and_query(lp, s):
    r = s.get(lp.url("/echo?a=1&b=%20x&c"), timeout=10)
    assert r.status_code == 200
    echo = r.json()
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo?a=1&b=%20x&c"
    assert echo["backend"] in ("h1", "h2")


def test_post_small_body(lp, s):
    r = s.post(lp.url("/echo"), data=b"hello \x00\xff world", timeout=10)
    assert r.status_code == 200
    assert r.json()["body"] == "hello \x00\xff world"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods(lp, s, method):
    r = s.request(method, lp.url("/echo"), data=b"x" * 10, timeout=10)
    assert r.status_code == 200
    assert r.json()["method"] == method
    assert r.json()["body_len"] == 10


def test_x_forwarded_headers_added_and_host_kept(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", host="app.example:8443")
    assert r.status == 200
    h = backend_headers(r.json())
    assert h["host"] == ["app.example:8443"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] in (["app.example:8443"], ["app.example"])


def test_x_forwarded_for_from_client_gets_our_peer_last(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", headers=[("X-Forwarded-For", "203.0.113.7")])
    chain = [x.strip() for v in backend_headers(r.json())["x-forwarded-for"] for x in v.split(",")]
    assert chain[-1] == "127.0.0.1", chain


def test_end_to_end_headers_kept_in_order_with_duplicates(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", headers=[("X-A", "1"), ("Cookie", "a=1"), ("X-A", "2"),
                                                 ("Accept", "text/plain"), ("X-Empty", "")])
    h = backend_headers(r.json())
    assert h["x-a"] == ["1", "2"]
    assert h["cookie"] == ["a=1"]
    assert h["accept"] == ["text/plain"]
    assert h["x-empty"] == [""]


def test_hop_by_hop_request_headers_removed(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", headers=[
            ("Connection", "keep-alive, X-Hop-Custom"),
            ("X-Hop-Custom", "must-be-removed"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic c2VjcmV0"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"),
        ])
    assert r.status == 200
    h = backend_headers(r.json())
    for name in ("x-hop-custom", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection"):
        assert name not in h, f"{name} reached the backend: {h[name]}"
    assert "x-hop-custom" not in ",".join(h.get("connection", [])).lower()
    assert h["x-end-to-end"] == ["kept"]


def test_hop_by_hop_response_headers_removed(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/hop-response")
    assert r.status == 200
    assert r.body == b"hop\n"
    names = {k.lower() for k, _ in r.headers}
    assert "x-hop-custom" not in names
    assert "keep-alive" not in names
    assert "proxy-authenticate" not in names
    assert r.header("X-End-To-End") == "kept"


def test_large_response_head_passed_intact(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/big-header?size=12000")
    assert r.status == 200
    assert r.header("X-Big") == pattern.data(6001).hex()[:12000]
    assert r.header_all("Set-Cookie") == ["c%d=%d; Path=/" % (i, i) for i in range(20)]


def test_forwarded_header_when_enabled(cluster):
    b = cluster.backend("fw")
    lp = cluster.limpet([b], listener={"add_forwarded": True})
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", host="fw.example")
    h = backend_headers(r.json())
    assert len(h["forwarded"]) == 1, h
    fields = {k.strip().lower(): v.strip().strip('"') for k, _, v in
              (p.partition("=") for p in h["forwarded"][0].split(";"))}
    assert fields.get("for") == "127.0.0.1" and fields.get("proto") == "http", h["forwarded"]
    assert fields.get("host", "fw.example") == "fw.example"
    assert h["x-forwarded-for"] == ["127.0.0.1"]


@pytest.mark.parametrize("code", [200, 201, 204, 301, 304, 404, 418, 500, 503])
def test_status_passed_through(lp, code):
    with RawHttp(lp.port) as c:
        r = c.request("GET", f"/status/{code}")
        assert r.status == code
        assert r.header("X-Backend") in ("h1", "h2")
        if code not in (204, 304):
            assert r.body == b"status %d from %s\n" % (code, r.header("X-Backend").encode())
        # The connection is still in sync: a second request on it works.
        assert c.request("GET", "/status/200").status == 200


def test_head_has_no_body_and_keeps_the_connection_in_sync(lp):
    with RawHttp(lp.port) as c:
        r = c.request("HEAD", "/big?size=12345")
        assert r.status == 200
        assert r.header("Content-Length") == "12345"
        r2 = c.request("GET", "/echo?after-head")
        assert r2.status == 200 and r2.json()["path"] == "/echo?after-head"


def test_http10_client_gets_a_response_and_close(lp):
    with RawHttp(lp.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\nHost: old.example\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/echo"
        assert c.closed_by_peer(timeout=3)


def test_client_connection_close_honoured(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", headers=[("Connection", "close")])
        assert r.status == 200
        assert c.closed_by_peer(timeout=3)


# ---- big bodies ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["cl", "chunked"])
def test_large_download(lp, s, mode):
    with s.get(lp.url(f"/big?size={BIG}&mode={mode}"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        n, digest = sha256_stream(r)
    assert n == BIG
    assert digest == pattern.sha256(BIG)


def test_until_close_response_delivered_whole(lp):
    size = 3 * 1024 * 1024 + 17
    with RawHttp(lp.port) as c:
        r = c.request("GET", f"/until-close?size={size}")
    assert r.status == 200
    assert len(r.body) == size
    assert r.body == pattern.data(size)


def test_large_upload_content_length(lp, s):
    r = s.post(lp.url("/upload"), data=PatternBody(BIG), timeout=60)
    assert r.status_code == 200
    assert r.json()["length"] == BIG
    assert r.json()["sha256"] == pattern.sha256(BIG)


def test_large_upload_chunked(lp, s):
    r = s.post(lp.url("/upload"), data=pattern.blocks(BIG, 100_000), timeout=60)  # a generator: chunked
    assert r.status_code == 200
    assert r.json()["length"] == BIG
    assert r.json()["sha256"] == pattern.sha256(BIG)


def test_chunked_upload_with_extensions_and_trailers(lp):
    body = pattern.data(5000)
    wire = b"7d0;name=value\r\n" + body[:2000] + b"\r\n" + b"BB8\r\n" + body[2000:] + b"\r\n" + \
        b"0\r\nX-Trailer: t\r\n\r\n"
    with RawHttp(lp.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + wire)
        r = c.read_response()
        assert r.status == 200
        assert r.json()["length"] == 5000
        assert r.json()["sha256"] == pattern.sha256(5000)
        assert c.request("GET", "/echo?next").json()["path"] == "/echo?next"


def test_expect_100_continue(lp):
    body = pattern.data(200_000)
    with RawHttp(lp.port) as c:
        c.send(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               "Expect: 100-continue\r\n\r\n".encode())
        c.sock.settimeout(3)
        interim = c.read_response(skip_1xx=False)  # nothing is sent until the 100 comes
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
    assert r.status == 200
    assert r.json()["sha256"] == pattern.sha256(200_000)


def test_request_split_into_tiny_writes(lp):
    wire = build_request("POST", "/upload", [("X-Split", "yes"), ("Transfer-Encoding", "chunked")]) + \
        chunked(pattern.data(3000), 700)
    with RawHttp(lp.port) as c:
        for i in range(0, len(wire), 7):
            c.send(wire[i:i + 7])
        r = c.read_response()
    assert r.status == 200
    assert r.json()["length"] == 3000
    assert r.json()["sha256"] == pattern.sha256(3000)


def test_client_going_away_mid_download_does_not_hurt(lp, s):
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", f"/big?size={BIG}"))
        c.read_head()
        c.read_exact(1024 * 1024)
    # limpet must survive the EPIPE/ECONNRESET and go on serving.
    for _ in range(5):
        assert s.get(lp.url("/echo"), timeout=10).status_code == 200


# ---- keep-alive and pipelining ---------------------------------------------------------------

def test_keepalive_client_side_many_requests_one_socket(lp):
    with RawHttp(lp.port) as c:
        port = c.sock.getsockname()[1]
        for i in range(200):
            r = c.request("GET", f"/echo?i={i}")
            assert r.status == 200
            assert r.json()["path"] == f"/echo?i={i}"
            assert r.header("Connection", "").lower() != "close"
        assert c.sock.getsockname()[1] == port


def test_no_nagle_stall_on_small_keepalive_exchanges(lp):
    """Head and body reach limpet in separate segments; without TCP_NODELAY each request would
    wait ~40 ms for a delayed ACK. 100 requests in under 2 s leaves a 20x margin."""
    with RawHttp(lp.port) as c:
        c.request("GET", "/echo")
        t0 = time.monotonic()
        for i in range(100):
            assert c.request("POST", "/echo", body=b"x" * 100).status == 200
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"{elapsed * 10:.1f} ms per request"


def test_keepalive_backend_side_reused_across_clients(lp):
    """Sequential requests from fresh client connections ride on pooled backend connections."""
    seen = []
    for _ in range(30):
        with RawHttp(lp.port) as c:
            r = c.request("GET", "/conn-id")
            assert r.status == 200
            seen.append((r.json()["backend"], r.json()["conn"], r.json()["request_on_conn"]))
    distinct = {(b, conn) for b, conn, _ in seen}
    # 2 workers x 2 backends, one request at a time: at most 4 pooled connections are needed.
    assert len(distinct) <= 6, f"backend connections not reused: {seen}"
    assert max(n for _, _, n in seen) >= 5


def test_round_robin_spreads_requests(lp):
    counts = collections.Counter()
    for _ in range(40):
        with RawHttp(lp.port) as c:
            counts[c.request("GET", "/echo").json()["backend"]] += 1
    assert counts["h1"] >= 10 and counts["h2"] >= 10, counts


def test_pipelining_three_requests_in_one_write(lp):
    wire = build_request("GET", "/echo?n=1") + \
        build_request("POST", "/echo?n=2", body=b"second body") + \
        build_request("GET", "/echo?n=3")
    with RawHttp(lp.port) as c:
        c.send(wire)
        rs = [c.read_response() for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 200]
    assert [r.json()["path"] for r in rs] == ["/echo?n=1", "/echo?n=2", "/echo?n=3"]
    assert rs[1].json()["body"] == "second body"
    assert rs[0].json()["body_len"] == 0 and rs[2].json()["body_len"] == 0


def test_pipelining_keeps_order_behind_a_slow_response(lp):
    wire = build_request("GET", "/slow?ms=400") + build_request("GET", "/echo?n=2") + \
        build_request("GET", "/big?size=100000&mode=chunked") + build_request("GET", "/echo?n=4")
    with RawHttp(lp.port) as c:
        c.send(wire)
        r1, r2, r3, r4 = (c.read_response() for _ in range(4))
    assert r1.body == b"slow 400\n"
    assert r2.json()["path"] == "/echo?n=2"
    assert r3.body == pattern.data(100000)
    assert r4.json()["path"] == "/echo?n=4"


def test_pipelined_chunked_body_then_request(lp):
    wire = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + chunked(b"x" * 3000, 1000) + \
        build_request("GET", "/echo?after-chunked")
    with RawHttp(lp.port) as c:
        c.send(wire)
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.json()["length"] == 3000
    assert r2.json()["path"] == "/echo?after-chunked"


def test_concurrent_clients(lp):
    errors = []
    backends = collections.Counter()
    lock = threading.Lock()

    def client(k):
        try:
            with RawHttp(lp.port) as c:
                for i in range(20):
                    body = f"client {k} request {i}".encode()
                    r = c.request("POST", f"/echo?k={k}&i={i}", body=body)
                    assert r.status == 200 and r.json()["body"] == body.decode(), r
                    with lock:
                        backends[r.json()["backend"]] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60 s"
    assert not errors, errors[:5]
    assert sum(backends.values()) == 800 and set(backends) == {"h1", "h2"}


def test_idle_client_connection_does_not_block_others(lp):
    idle = socket.create_connection(("127.0.0.1", lp.port), timeout=5)
    try:
        with RawHttp(lp.port) as c:
            assert c.request("GET", "/echo").status == 200
    finally:
        idle.close()
