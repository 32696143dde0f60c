"""What limpet answers to bad or abusive clients: 400, 408, 413, 414, 431, smuggling attempts,
and the per-listener connection limit. Raw sockets throughout: the bytes are the test."""

import select
import socket
import time
import uuid

import pytest

from conftest import RawHttp, build_request, chunked, pattern, wait_until

HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def env(module_cluster):
    b1 = module_cluster.backend("e1")
    b2 = module_cluster.backend("e2")
    lp = module_cluster.limpet([b1, b2], listener={"header_timeout": "1s", "max_body_size": "1m"})
    return lp, (b1, b2)


@pytest.fixture
def lp(env):
    lp, _ = env
    lp.assert_alive()
    yield lp
    lp.assert_alive()


@pytest.fixture
def backends(env):
    return env[1]


def marker():
    return "m" + uuid.uuid4().hex[:12]


def paths_seen(backends):
    return [p for b in backends for p in b.paths()]


def assert_rejected(lp, wire, statuses=(400,)):
    """Send `wire`; expect one of `statuses`, then the connection closed by limpet."""
    with RawHttp(lp.port) as c:
        c.send(wire)
        r = c.read_response()
        assert r.status in statuses, r
        assert c.closed_by_peer(timeout=3), "connection left open after a rejected request"
        return r


# ---- malformed requests ------------------------------------------------------------------------

MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "bad-protocol": b"GET /%s XTTP/1.1\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET /%s HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "space-in-header-name": b"GET /%s HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "space-before-colon": b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "nul-in-header-value": b"GET /%s HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "control-char-in-target": b"GET /%s\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-numeric-content-length": b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative-content-length": b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "two-content-lengths": b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_request_400_and_close(lp, backends, name):
    m = marker()
    wire = MALFORMED[name].replace(b"%s", m.encode())
    assert_rejected(lp, wire)
    assert not any(m in p for p in paths_seen(backends))


def test_missing_host_in_http11_is_400(lp, backends):
    """RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host."""
    m = marker()
    assert_rejected(lp, f"GET /{m} HTTP/1.1\r\nX-A: 1\r\n\r\n".encode())
    assert not any(m in p for p in paths_seen(backends))


def test_good_request_after_malformed_one_on_new_connection(lp):
    assert_rejected(lp, b"GARBAGE\r\n\r\n")
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/echo").status == 200


# ---- request smuggling -------------------------------------------------------------------------

def smuggle_cases(m):
    inner = f"GET /smuggled-{m} HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk_then_inner = "0\r\n\r\n" + inner
    return {
        "cl-te": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(chunk_then_inner)}\r\n"
                 f"Transfer-Encoding: chunked\r\n\r\n{chunk_then_inner}",
        "te-cl": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 f"Content-Length: 4\r\n\r\n{chunk_then_inner}",
        "te-not-chunked": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
                          f"Content-Length: 5\r\n\r\nhello{inner}",
        "te-chunked-not-last": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n"
                               f"\r\n{chunk_then_inner}",
        "te-obfuscated": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
                         f"Content-Length: 5\r\n\r\nhello{inner}",
        "te-twice": f"POST /echo?{m} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    f"Transfer-Encoding: identity\r\n\r\n{chunk_then_inner}",
    }


@pytest.mark.parametrize("case", list(smuggle_cases("x")))
def test_smuggling_attempt_rejected(lp, backends, case):
    m = marker()
    wire = smuggle_cases(m)[case].encode()
    # 501 is allowed for a transfer coding limpet does not implement; never a forwarded request.
    assert_rejected(lp, wire, statuses=(400, 501))
    seen = paths_seen(backends)
    assert not any(f"smuggled-{m}" in p for p in seen), f"smuggled request reached a backend: {seen}"


# ---- bad chunked encoding ----------------------------------------------------------------------

BAD_CHUNKED = {
    "non-hex-size": b"zz\r\nhello\r\n0\r\n\r\n",
    "data-longer-than-size": b"3\r\nhello\r\n0\r\n\r\n",
    "missing-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
    "size-overflow": b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", BAD_CHUNKED)
def test_bad_chunked_body_400_and_close(lp, name):
    wire = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + BAD_CHUNKED[name]
    assert_rejected(lp, wire, statuses=(400, 413) if name == "size-overflow" else (400,))


# ---- size limits -------------------------------------------------------------------------------

def test_header_section_too_large_431(lp, backends):
    m = marker()
    assert_rejected(lp, build_request("GET", f"/{m}", [("X-Big", "a" * 20000)]), statuses=(431,))
    assert not any(m in p for p in paths_seen(backends))


def test_too_many_headers_431(lp):
    headers = [(f"X-H{i}", "v" * 80) for i in range(300)]
    assert_rejected(lp, build_request("GET", "/echo", headers), statuses=(431,))


def test_header_section_under_the_limit_passes_intact(lp):
    value = pattern.data(9000).hex()[:12000]
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/echo", [("X-Large", value)])
    assert r.status == 200
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-large"] == [value]


def test_request_line_too_long_414(lp, backends):
    m = marker()
    assert_rejected(lp, build_request("GET", f"/{m}?" + "a" * 9000), statuses=(414,))
    assert not any(m in p for p in paths_seen(backends))


def test_long_request_line_under_the_limit_passes(lp):
    path = "/echo?" + "b" * 7000
    with RawHttp(lp.port) as c:
        r = c.request("GET", path)
    assert r.status == 200
    assert r.json()["path"] == path


def test_content_length_over_max_413_before_any_body(lp, backends):
    m = marker()
    with RawHttp(lp.port) as c:
        c.send(f"POST /upload?{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".encode())
        r = c.read_response()  # the head alone must be enough for limpet to answer
        assert r.status == 413
    assert not any(m in p for p in paths_seen(backends))


def test_expect_100_continue_over_max_413_without_100(lp, backends):
    m = marker()
    with RawHttp(lp.port) as c:
        c.send(f"POST /upload?{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
               "Expect: 100-continue\r\n\r\n".encode())
        r = c.read_response(skip_1xx=False)
        assert r.status == 413, r
    assert not any(m in p for p in paths_seen(backends))


def test_chunked_body_over_max_413(lp):
    body = chunked(pattern.data(1_200_000), 64 * 1024)
    with RawHttp(lp.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]))
        try:
            c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # limpet may answer and close before the whole body is sent
        r = c.read_response()
        assert r.status == 413
        assert c.closed_by_peer(timeout=3)


def test_body_at_max_passes(lp):
    with RawHttp(lp.port) as c:
        r = c.request("POST", "/upload", body=pattern.data(1_000_000))
    assert r.status == 200
    assert r.json()["length"] == 1_000_000
    assert r.json()["sha256"] == pattern.sha256(1_000_000)


# ---- slow clients ------------------------------------------------------------------------------

def test_slow_head_408(lp, backends):
    """The whole head must arrive within header_timeout, even if bytes keep trickling in."""
    m = marker()
    with RawHttp(lp.port) as c:
        t0 = time.monotonic()
        c.send(f"GET /{m} HTTP/1.1\r\nHost: x\r\n".encode())
        i = 0
        while not select.select([c.sock], [], [], 0.3)[0]:
            assert time.monotonic() - t0 < HEADER_TIMEOUT + 3, "no answer to a slow head"
            try:
                c.send(f"X-Slow-{i}: drip\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
            i += 1
        elapsed = time.monotonic() - t0
        r = c.read_response()
    assert r.status == 408, r
    assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + 2.5, elapsed
    assert not any(m in p for p in paths_seen(backends))


def test_partial_head_then_silence_408(lp):
    t0 = time.monotonic()
    with RawHttp(lp.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response()
        elapsed = time.monotonic() - t0
        assert r.status == 408
        assert c.closed_by_peer(timeout=3)
    assert elapsed <= HEADER_TIMEOUT + 2.5


def test_idle_keepalive_client_closed_after_keepalive_timeout(cluster):
    b = cluster.backend("ka")
    lp = cluster.limpet([b], listener={"keepalive_timeout": "500ms"})
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/echo").status == 200
        t0 = time.monotonic()
        assert c.closed_by_peer(timeout=3), "idle keep-alive connection not closed"
        assert time.monotonic() - t0 >= 0.4


# ---- connection limit --------------------------------------------------------------------------

def test_max_connections_per_listener(cluster):
    b = cluster.backend("c1")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"max_connections": 4})
    held = [RawHttp(lp.port) for _ in range(4)]
    try:
        for c in held:
            assert c.request("GET", "/echo").status == 200  # established and counted
        extra = RawHttp(lp.port, timeout=2)
        try:
            extra.send(build_request("GET", "/echo?extra"))
            try:
                served = extra.read_response().status == 200
            except (EOFError, ConnectionResetError, socket.timeout, BrokenPipeError):
                served = False
            assert not served, "a 5th connection was served with max_connections = 4"
        finally:
            extra.close()
        for c in held[:2]:
            c.close()
        held = held[2:]

        def fresh_served():
            try:
                with RawHttp(lp.port, timeout=1) as c:
                    return c.request("GET", "/echo?after").status == 200
            except (EOFError, ConnectionResetError, socket.timeout, BrokenPipeError):
                return False

        wait_until(fresh_served, 5, "a new connection to be served once others closed", interval=0.1)
        for c in held:
            assert c.request("GET", "/echo").status == 200  # the survivors were not disturbed
    finally:
        for c in held:
            c.close()
