"""Backends that fail: die mid-response, never answer, refuse connections, answer garbage,
close idle keep-alive connections. limpet must answer the right status and keep serving."""

import collections
import time

import pytest

from conftest import Blackhole, RawHttp, build_request, free_port, pattern, wait_until

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def env(module_cluster):
    b1 = module_cluster.backend("f1")
    b2 = module_cluster.backend("f2")
    lp = module_cluster.limpet([b1, b2], upstream={"read_timeout": "1s"})
    return lp, (b1, b2)


@pytest.fixture
def lp(env):
    lp, _ = env
    lp.assert_alive()
    yield lp
    lp.assert_alive()
    with RawHttp(lp.port) as c:  # and still serving
        assert c.request("GET", "/echo?still-serving").status == 200


def dead_address():
    return f"127.0.0.1:{free_port()}"  # nothing listens there


# ---- backend dies while answering --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["cl", "chunked", "rst"])
def test_backend_dies_mid_body_client_sees_truncation(lp, mode):
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", f"/die?after=5000&mode={mode}"))
        version, status, reason, headers = c.read_head()
        assert status == 200
        rest = c.read_to_eof()  # must end (close), not hang until the socket timeout
    te = {k.lower(): v.lower() for k, v in headers}.get("transfer-encoding", "")
    if "chunked" in te:
        assert not rest.endswith(b"0\r\n\r\n"), "a truncated response was completed with a last chunk"
        assert pattern.data(5000)[:1000] in rest
    else:
        assert len(rest) < 50010, "truncated body delivered as complete"
        assert rest == pattern.data(5000)[:len(rest)]


def test_backend_closes_before_answering_502(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/die?mode=nohead")
    assert r.status == 502, r


def test_backend_answers_garbage_502(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/die?mode=garbage")
    assert r.status == 502, r


def test_backend_process_killed_mid_download(cluster):
    k1, k2 = cluster.backend("k1"), cluster.backend("k2")
    lp = cluster.limpet([k1, k2])
    size = 500 * 1024 * 1024
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", f"/big?size={size}"))
        _, status, _, headers = c.read_head()
        assert status == 200
        got = len(c.read_exact(2 * 1024 * 1024))
        victim = k1 if dict(headers)["X-Backend"] == "k1" else k2
        victim.kill()
        got += len(c.read_to_eof())
    assert got < size
    # The survivor takes every new request (the dead one refuses connections: retried).
    seen = collections.Counter()
    for i in range(6):
        with RawHttp(lp.port) as c:
            r = c.request("GET", f"/echo?after-kill={i}")
            assert r.status == 200
            seen[r.json()["backend"]] += 1
    assert set(seen) == {"k2" if victim is k1 else "k1"}


# ---- backend too slow --------------------------------------------------------------------------

def test_backend_never_answers_504_after_read_timeout(lp):
    t0 = time.monotonic()
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/hang")
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert READ_TIMEOUT * 0.8 <= elapsed <= READ_TIMEOUT + 2.5, elapsed


def test_slow_backend_under_read_timeout_is_fine(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/slow?ms=500")
    assert r.status == 200 and r.body == b"slow 500\n"


def test_client_gone_while_backend_hangs(lp):
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", "/hang"))
    # limpet must cope with the client leaving first; the fixture checks it still serves.


# ---- connect failures --------------------------------------------------------------------------

def test_connect_refused_is_retried_on_another_backend(cluster):
    live = cluster.backend("live")
    lp = cluster.limpet([("dead", dead_address()), live])
    for i in range(10):
        with RawHttp(lp.port) as c:
            r = c.request("GET", f"/echo?i={i}")
            assert r.status == 200, r
            assert r.json()["backend"] == "live"


def test_post_with_body_is_retried_after_connect_refused(cluster):
    live = cluster.backend("live")
    lp = cluster.limpet([("dead1", dead_address()), ("dead2", dead_address()), live])
    for i in range(6):
        with RawHttp(lp.port) as c:
            r = c.request("POST", "/upload", body=pattern.data(300_000))
            assert r.status == 200, r
            assert r.json()["sha256"] == pattern.sha256(300_000)


def test_all_backends_down_502_or_503(cluster):
    lp = cluster.limpet([("dead1", dead_address()), ("dead2", dead_address())])
    for _ in range(3):
        t0 = time.monotonic()
        with RawHttp(lp.port) as c:
            r = c.request("GET", "/echo")
        assert r.status in (502, 503), r
        assert len(r.body) < 2048
        assert time.monotonic() - t0 < 3


def test_connect_timeout_is_retried_on_another_backend(cluster):
    live = cluster.backend("live")
    with Blackhole() as hole:
        lp = cluster.limpet([("blackhole", hole.address), live], upstream={"connect_timeout": "500ms"})
        for i in range(4):
            t0 = time.monotonic()
            with RawHttp(lp.port) as c:
                r = c.request("GET", f"/echo?i={i}")
            assert r.status == 200, r
            assert r.json()["backend"] == "live"
            assert time.monotonic() - t0 < 2.5


def test_connect_timeout_everywhere_502_or_504(cluster):
    with Blackhole() as hole:
        lp = cluster.limpet([("blackhole", hole.address)], upstream={"connect_timeout": "500ms"})
        t0 = time.monotonic()
        with RawHttp(lp.port) as c:
            r = c.request("GET", "/echo")
        assert r.status in (502, 503, 504), r
        assert time.monotonic() - t0 < 3


def test_backend_started_later_gets_traffic(cluster):
    """A backend that was down at first (connect refused) is used once it listens."""
    port = free_port()
    lp = cluster.limpet([("late", f"127.0.0.1:{port}")])
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/echo").status in (502, 503)
    cluster.backend("late", args=("--port", str(port)))

    def served():
        with RawHttp(lp.port) as c:
            return c.request("GET", "/echo").status == 200

    wait_until(served, 15, "the late backend to be used", interval=0.2)


# ---- keep-alive with the backend ---------------------------------------------------------------

def test_backend_closing_idle_pooled_connections(cluster):
    """The backend drops keep-alive connections idle for 0.3 s; limpet must not fail requests
    by reusing them."""
    b = cluster.backend("idle", args=("--idle-timeout", "0.3"))
    lp = cluster.limpet([b], server={"workers": 1})
    for i in range(4):
        with RawHttp(lp.port) as c:
            r = c.request("GET", f"/echo?round={i}")
            assert r.status == 200, f"round {i}: {r}"
        time.sleep(0.8)  # deliberately longer than the backend's idle timeout


def test_backend_connection_close_response_not_reused(lp):
    with RawHttp(lp.port) as c:
        r = c.request("GET", "/until-close?size=1000")
        assert r.body == pattern.data(1000)
    for i in range(6):
        with RawHttp(lp.port) as c:
            assert c.request("GET", f"/conn-id?{i}").status == 200


def test_backend_request_log_sees_each_request_once(cluster):
    """No retries or duplicates of a request that reached a backend."""
    b = cluster.backend("once")
    lp = cluster.limpet([b])
    for i in range(20):
        with RawHttp(lp.port) as c:
            assert c.request("POST", f"/echo?once={i}", body=b"x").status == 200
    paths = [p for p in b.paths() if p.startswith("/echo?once=")]
    assert paths == [f"/echo?once={i}" for i in range(20)]
