"""The exchange and its deadlines, against the real binary: bodies flowing both ways at once,
stalls blamed on the side that stalled, 1xx in the same read as the final response, and the one
resend after a pooled connection the backend had already closed."""

import hashlib
import re
import socket
import threading

from conftest import RawHttp, build_request, wait_until

MB = 1024 * 1024


def test_full_duplex_echo_of_64_mib_completes(cluster):
    """A backend that echoes the body while still reading it: both directions must keep moving
    (each relay decides on its own sink's queue, not the other one's)."""
    b = cluster.backend("d1")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"max_body_size": "0"})
    size = 64 * MB
    piece = bytes(range(256)) * 256  # 64 KiB
    sent_hash = hashlib.sha256()
    for _ in range(size // len(piece)):
        sent_hash.update(piece)

    with RawHttp(lp.port, timeout=30) as c:
        c.send(build_request("POST", "/duplex-echo", [("Content-Length", str(size))]))

        def send_body():
            for _ in range(size // len(piece)):
                c.sock.sendall(piece)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        resp = c.read_response("POST")
        sender.join(30)
        assert not sender.is_alive(), "the request body did not all go out"
    assert resp.status == 200
    assert len(resp.body) == size
    assert hashlib.sha256(resp.body).hexdigest() == sent_hash.hexdigest()


def test_clients_stalling_mid_upload_get_408_and_the_backend_stays_up(cluster):
    """A client that stops sending its body is the client's stall: 408 to it, nothing counted
    against the backend (three such stalls used to mark it down: a denial of service)."""
    b = cluster.backend("s1")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"body_timeout": "300ms"})
    stalled = [RawHttp(lp.port, timeout=10) for _ in range(4)]
    try:
        for c in stalled:
            c.send(build_request("POST", "/upload", [("Content-Length", "100000")]) + b"x" * 1000)
        for c in stalled:
            resp = c.read_response("POST")
            assert resp.status == 408, resp
            assert c.closed_by_peer(timeout=5)
    finally:
        for c in stalled:
            c.close()
    with RawHttp(lp.port) as c:
        resp = c.request("GET", "/echo")
    assert resp.status == 200, "a backend was taken down by stalled clients"
    log = lp.stderr()
    assert "sent no more of its request body within body_timeout" in log
    assert " is down" not in log and "no response within" not in log
    assert log.count('"POST /upload HTTP/1.1" 408') == 4


def test_a_client_that_reads_nothing_is_dropped_after_send_timeout(cluster):
    b = cluster.backend("r1")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"send_timeout": "300ms"})
    with RawHttp(lp.port, timeout=10) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(build_request("GET", f"/big?size={256 * MB}"))
        wait_until(lambda: "read none of the response within send_timeout" in lp.stderr(), 15,
                   "limpet dropping a client that reads nothing")
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/echo").status == 200
    assert " is down" not in lp.stderr()


def test_interim_response_and_final_response_in_one_read(cluster):
    b = cluster.backend("c1")
    lp = cluster.limpet([b], server={"workers": 1})
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", "/continue"))
        first = c.read_response(skip_1xx=False)
        assert first.status == 100
        final = c.read_response()
        assert final.status == 200
        assert final.body == b"after continue\n"
        # The connection goes on: the final response was found after the interim one's bytes.
        assert c.request("GET", "/echo").status == 200


def test_stale_pooled_connection_is_resent_once_on_a_fresh_one(cluster):
    b = cluster.backend("p1")
    lp = cluster.limpet([b], server={"workers": 1, "log_level": "debug"})
    with RawHttp(lp.port) as c:
        first = c.request("GET", "/stale-once")
        assert first.status == 200
        # Same worker, same backend: the pooled connection is taken and the backend closes it
        # on this request; limpet sends it again on a new connection, once.
        second = c.request("GET", "/stale-once")
        assert second.status == 200, second
        assert second.body != first.body, "answered on the pooled connection"
    assert "stale pooled connection to p1" in lp.stderr()
    conns = [e["conn"] for e in b.request_log() if e["path"] == "/stale-once"]
    assert len(conns) == 3 and conns[0] == conns[1] != conns[2], conns


def test_a_sid_poll_on_a_stale_pooled_connection_is_resent_to_its_backend(cluster):
    """A backend closes an idle connection only when it holds no request: the poll was never
    read, and sending it again on a new connection keeps the session (never elsewhere)."""
    b = cluster.backend("p2")
    lp = cluster.limpet([b], server={"workers": 1}, upstream={"engineio_paths": ["/stale-once"]})
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/stale-once?EIO=4&transport=polling&sid=abcdefghijklmnopqrst").status == 200
        assert c.request("GET", "/stale-once?EIO=4&transport=polling&sid=abcdefghijklmnopqrst").status == 200
    conns = [e["conn"] for e in b.request_log()]
    assert len(conns) == 3 and conns[0] == conns[1] != conns[2], conns


def test_a_sid_post_on_a_stale_pooled_connection_is_not_resent(cluster):
    """A request with a body is not kept for a resend: sending a session's POST twice could
    deliver its packets twice. 502 instead."""
    b = cluster.backend("p3")
    lp = cluster.limpet([b], server={"workers": 1}, upstream={"engineio_paths": ["/stale-once"]})
    target = "/stale-once?EIO=4&transport=polling&sid=abcdefghijklmnopqrst"
    with RawHttp(lp.port) as c:
        assert c.request("GET", target).status == 200
        assert c.request("POST", target, body=b"4hello").status == 502
    conns = [e["conn"] for e in b.request_log()]
    assert len(conns) == 2 and conns[0] == conns[1]


def test_a_half_closed_client_gets_every_pipelined_answer_then_eof(cluster):
    b = cluster.backend("h1")
    lp = cluster.limpet([b], server={"workers": 1}, listener={"ignore_client_abort": True})
    with RawHttp(lp.port) as c:
        c.send(build_request("GET", "/echo?n=1") + build_request("GET", "/echo?n=2"))
        c.sock.shutdown(socket.SHUT_WR)
        first, second = c.read_response(), c.read_response()
        assert (first.status, second.status) == (200, 200)
        assert first.json()["path"] == "/echo?n=1" and second.json()["path"] == "/echo?n=2"
        assert c.closed_by_peer(timeout=5)



def test_a_101_that_does_not_switch_properly_is_refused_and_never_pooled(cluster):
    """WebSocket smuggling: a 101 without Upgrade/Connection (or to a plain request) must not
    reach the client as a response, and its connection must not serve the next request."""
    b = cluster.backend("u1")
    lp = cluster.limpet([b], server={"workers": 1})
    upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/bad-101", upgrade).status == 502
    with RawHttp(lp.port) as c:
        assert c.request("GET", "/bad-101").status == 502
    with RawHttp(lp.port) as c:
        after = c.request("GET", "/conn-id")
    assert after.status == 200
    bad_conns = {e["conn"] for e in b.request_log() if e["path"] == "/bad-101"}
    assert after.json()["conn"] not in bad_conns, "a connection that answered 101 was pooled"


def test_upstream_time_is_measured_on_a_reused_backend_connection(cluster):
    """The access log's upstream_time runs from handing the request to the backend's connection,
    a pooled one included (issue 16: it was 0 on every reused connection)."""
    b = cluster.backend("t1")
    lp = cluster.limpet([b], server={"workers": 1})
    with RawHttp(lp.port) as c:
        for _ in range(2):
            assert c.request("GET", "/slow?ms=200").status == 200
    conns = [e["conn"] for e in b.request_log() if e["path"] == "/slow?ms=200"]
    assert len(conns) == 2 and conns[0] == conns[1], conns  # the second went on the pooled one

    def times():
        return [float(m) for m in re.findall(r'"GET /slow\?ms=200 HTTP/1.1" 200 .* upstream_time=([0-9.]+)',
                                             lp.stderr())]
    wait_until(lambda: len(times()) == 2, 5, "both access log lines")
    assert all(t >= 0.2 for t in times()), times()
