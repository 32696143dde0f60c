"""Request smuggling at limpet's HTTP/1.1 edge, and the same bytes through nginx and HAProxy.

Each case sends exact bytes on one connection and looks at what the client got (the statuses, and
whether the connection was closed) and at what the backend received: backends/raw_backend.py
records the raw bytes of each connection and counts the requests a strict reader finds in them,
so "one request" means one on the wire, whatever a lenient server would make of it.

limpet's outcome is asserted: its answers, the number of requests the backend got (never more
than the client meant), limpet alive afterwards, and per case what the backend saw. nginx and
HAProxy (mode http) run in front of the same backend from the same config
(reference/nginx_as_limpet.py, reference/haproxy_as_limpet.py); their outcomes are only
recorded, and printed at the end (`-s`) as the table in doc/security.md, also written to
<basetemp>/smuggling-table.{json,md}. limpet's reasons for each refusal: doc/security.md.
"""

import json
import shutil
import signal
import socket
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from conftest import HERE, RawHttp

READ_TIMEOUT = 5.0  # above limpet's header_timeout (2 s): every wait for an answer ends
REFERENCES = {
    "nginx": (HERE / "reference" / "nginx_as_limpet.py", "/usr/sbin/nginx"),
    "haproxy": (HERE / "reference" / "haproxy_as_limpet.py", "/usr/sbin/haproxy"),
}
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED_SMUGGLED = b"0\r\n\r\n" + SMUGGLED
CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"
WS_HEADERS = (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
FOLLOW_UP = b"GET /follow-up HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"


def post(headers, body=b"", target=b"/a"):
    return b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


def get(headers=b"", target=b"/a", version=b"HTTP/1.1"):
    return b"GET " + target + b" " + version + b"\r\nHost: x\r\n" + headers + b"\r\n"


@dataclass
class Case:
    name: str
    parts: list        # bytes written in order; after each but the last, one response head is awaited
    meant: int         # requests the client meant (the backend must never get more)
    statuses: tuple    # limpet's answers, in order (an awaited 100 Continue included)
    backend: int       # requests the backend gets through limpet
    closed: bool = True  # limpet closes the connection after its answers
    check: Optional[Callable] = None  # more on the backend's log: check(requests, conns)
    why: str = ""


def only_request(requests):
    assert len(requests) == 1, requests
    return requests[0]


def header(request, name):
    values = [v for k, v in request["headers"] if k.lower() == name.lower()]
    return values[0] if len(values) == 1 else values or None


def body_is(expected):
    def check(requests, conns):
        assert only_request(requests)["body"] == expected.decode("latin-1")
    return check


def nothing_after_101(requests, conns):
    """The bytes after a 101 that was no upgrade never reach the backend's connection."""
    assert all("/smuggled" not in c["raw"] for c in conns), conns


def absolute_form_as_origin_form(requests, conns):
    r = only_request(requests)
    assert (r["target"], header(r, "host")) == ("/abs?q=1", "other.example"), r


def no_h2c_upgrade(requests, conns):
    r = only_request(requests)
    for name in ("upgrade", "http2-settings", "connection"):
        assert header(r, name) is None, r


def follow_up_through_limpet(requests, conns):
    """The request after a refused upgrade was rewritten by limpet: its X-Forwarded-For extended."""
    assert len(requests) == 2, requests
    r = requests[1]
    assert r["target"] == "/follow-up", requests
    assert header(r, "x-forwarded-for") == "6.6.6.6, 127.0.0.1", r
    assert header(r, "x-forwarded-proto") == "http", r


def te_forwarded_as_chunked(requests, conns):
    r = only_request(requests)
    assert r["body"] == "abc" and header(r, "transfer-encoding") == "chunked", r


CASES = [
    # ---- Content-Length against Transfer-Encoding
    Case("CL.TE", [post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CHUNKED_SMUGGLED),
                        CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE.CL", [post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE xchunked + CL", [post(b"Transfer-Encoding: xchunked\r\nContent-Length: %d\r\n" % len(CHUNKED_SMUGGLED),
                                   CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE xchunked", [post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE: ' chunked' (OWS)", [post(b"Transfer-Encoding:  chunked\r\n", CHUNKED_ABC)], 1, (200,), 1,
         closed=False, check=te_forwarded_as_chunked),
    Case("TE tab separator", [post(b"Transfer-Encoding:\tchunked\r\n", CHUNKED_ABC)], 1, (200,), 1,
         closed=False, check=te_forwarded_as_chunked),
    Case("TE mixed case", [post(b"TRANSFER-encoding: ChUnKeD\r\n", CHUNKED_ABC)], 1, (200,), 1,
         closed=False, check=te_forwarded_as_chunked),
    Case("'Transfer-Encoding : chunked'", [post(b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n"
                                                % len(CHUNKED_SMUGGLED), CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE chunked, identity", [post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_SMUGGLED)], 1,
         (400,), 0),
    Case("TE identity, chunked", [post(b"Transfer-Encoding: identity, chunked\r\n", CHUNKED_SMUGGLED)], 1,
         (501,), 0),
    Case("TE twice (chunked, identity)", [post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                                               CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE chunked twice around obs-fold", [post(b"Transfer-Encoding: chunked\r\n \r\n"
                                                   b"Transfer-Encoding: chunked\r\n", CHUNKED_SMUGGLED)], 1,
         (400,), 0),
    Case("TE value on an obs-fold line", [post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n"
                                               % len(CHUNKED_SMUGGLED), CHUNKED_SMUGGLED)], 1, (400,), 0),
    Case("TE name on an obs-fold line", [post(b"X-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: %d\r\n"
                                              % len(CHUNKED_SMUGGLED), CHUNKED_SMUGGLED)], 1, (400,), 0),
    # ---- Content-Length values
    Case("CL '5, 5'", [post(b"Content-Length: 5, 5\r\n", b"hello")], 1, (400,), 0),
    Case("CL 5 and CL 6", [post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")], 1, (400,), 0),
    Case("CL 5 twice", [post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")], 1, (400,), 0),
    Case("CL +5", [post(b"Content-Length: +5\r\n", b"hello")], 1, (400,), 0),
    Case("CL -1", [post(b"Content-Length: -1\r\n", b"hello")], 1, (400,), 0),
    Case("CL 0x5", [post(b"Content-Length: 0x5\r\n", b"hello")], 1, (400,), 0),
    Case("CL 2^64", [post(b"Content-Length: 18446744073709551616\r\n", b"hello")], 1, (400,), 0),
    # ---- chunked bodies (limpet has sent the head on by then; the request is cut, never completed)
    Case("chunk size ffffffffffffffffff", [post(b"Transfer-Encoding: chunked\r\n",
                                                b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n")], 1, (400,), 0),
    Case("chunk ext 1;a=b\"c", [post(b"Transfer-Encoding: chunked\r\n", b'1;a=b"c\r\nA\r\n0\r\n\r\n')], 1,
         (400,), 0),
    Case("bare LF in chunk line", [post(b"Transfer-Encoding: chunked\r\n", b"1\nA\r\n0\r\n\r\n")], 1, (400,), 0),
    Case("bare LF ending trailers", [post(b"Transfer-Encoding: chunked\r\n", b"0\r\nX-T: y\r\n\n" + SMUGGLED)],
         1, (400,), 0),
    # ---- line ends and bytes in the head
    Case("bare LF after request line", [b"GET /a HTTP/1.1\nHost: x\r\n\r\n"], 1, (400,), 0),
    Case("bare LF line ends", [b"GET /a HTTP/1.1\nHost: x\n\n"], 1, (400,), 0),
    Case("bare LF as the empty line", [b"GET /a HTTP/1.1\r\nHost: x\r\n\n" + SMUGGLED], 1, (400,), 0),
    Case("bare CR in head", [b"GET /a HTTP/1.1\r\nHost: x\rX-A: y\r\n\r\n"], 1, (400,), 0),
    Case("stray LF before request", [b"\n" + get()], 1, (400,), 0),
    Case("CRLF before request (RFC 9112 2.2)", [b"\r\n" + get()], 1, (200,), 1, closed=False),
    Case("NUL in name", [get(b"X\x00Y: z\r\n")], 1, (400,), 0),
    Case("NUL in value", [get(b"X-A: a\x00b\r\n")], 1, (400,), 0),
    Case("control byte in value", [get(b"X-A: a\x01b\r\n")], 1, (400,), 0),
    Case("DEL in value", [get(b"X-A: a\x7fb\r\n")], 1, (400,), 0),
    Case("space in name", [get(b"X A: b\r\n")], 1, (400,), 0),
    Case("empty name", [get(b": b\r\n")], 1, (400,), 0),
    Case("obs-fold", [get(b"X-A: a\r\n b\r\n")], 1, (400,), 0),
    # ---- bodies where someone may read none
    Case("0.CL: GET with a body", [get(b"Content-Length: %d\r\n" % len(SMUGGLED)) + SMUGGLED], 1, (200,), 1,
         closed=False, check=body_is(SMUGGLED)),
    Case("CL.0: POST whose body is a request", [post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)], 1,
         (200,), 1, closed=False, check=body_is(SMUGGLED)),
    Case("Expect: 100-continue, body withheld", [post(b"Expect: 100-continue\r\nContent-Length: 5\r\n"),
                                                 b"hello"], 1, (100, 200), 1, closed=False,
         check=body_is(b"hello")),
    # ---- versions and preface
    Case("HTTP/1.0 keep-alive, pipelined", [b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                            b"GET /b HTTP/1.0\r\n\r\n"], 2, (200, 200), 2),
    Case("HTTP/1.0 without keep-alive, then more", [b"GET /a HTTP/1.0\r\n\r\n" + SMUGGLED], 2, (200,), 1),
    Case("HTTP/1.0 with TE chunked", [b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      + CHUNKED_SMUGGLED], 1, (400,), 0),
    Case("HTTP/0.9 request line", [b"GET /smuggled\r\n\r\n"], 1, (400,), 0),
    Case("HTTP/2.0 request line", [get(version=b"HTTP/2.0")], 1, (505,), 0),
    Case("h2 preface", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], 1, (400,), 0),
    Case("Upgrade: h2c", [get(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                              b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n")], 1, (200,), 1, closed=False,
         check=no_h2c_upgrade),
    Case("Upgrade: h2c answered 101", [get(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                                           b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n", b"/status/101")
                                       + SMUGGLED], 1, (502,), 1, check=nothing_after_101),
    # ---- targets and methods
    Case("absolute-form", [b"GET http://other.example/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"], 1, (200,), 1,
         closed=False, check=absolute_form_as_origin_form),
    Case("absolute-form with userinfo", [b"GET http://u@other.example/ HTTP/1.1\r\nHost: x\r\n\r\n"], 1,
         (400,), 0),
    Case("CONNECT", [b"CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n"], 1, (501,), 0),
    Case("CONNECT with a body", [b"CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\nContent-Length: %d\r\n\r\n"
                                 % len(SMUGGLED) + SMUGGLED], 1, (501,), 0),
    # ---- pipelining across an error
    Case("bad, then good, one write", [post(b"Content-Length: +5\r\n", b"hello") + get(target=b"/good")], 2,
         (400,), 0),
    Case("good, bad, good, one write", [get(target=b"/good") + post(b"Content-Length: +5\r\n", b"hello")
                                        + get(target=b"/good")], 3, (200, 400), 1),
    # ---- WebSocket: an upgrade the backend refuses leaves the connection in HTTP, where limpet
    # reads what follows as the next request (a tunnel would pass it on unread): a CONNECT in the
    # "tunnel" bytes gets limpet's 501, a request after the refusal limpet's X-Forwarded-For.
    Case("WS upgrade refused 426, CONNECT in the same write",
         [get(WS_HEADERS, b"/status/426") + b"CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n"], 2,
         (426, 501), 1),
    *[Case(f"WS upgrade refused {s}, then a request", [get(WS_HEADERS, b"/status/%d" % s), FOLLOW_UP], 2,
           (s, 200), 2, closed=False, check=follow_up_through_limpet) for s in (426, 200, 400)],
    Case("101 to an Upgrade that is no WebSocket handshake",
         [get(b"Connection: Upgrade\r\nUpgrade: websocket\r\n", b"/status/101") + SMUGGLED], 1, (502,), 1,
         check=nothing_after_101),
]


@dataclass
class Outcome:
    statuses: list = field(default_factory=list)
    closed: bool = False
    requests: list = field(default_factory=list)  # what the backend read whole
    conns: list = field(default_factory=list)     # the backend's connections (raw bytes)

    def answers(self):
        return " ".join(map(str, self.statuses)) + (" closed" if self.closed else " open") if self.statuses \
            else ("closed" if self.closed else "no answer")


def read_statuses(conn, outcome, count):
    """Up to `count` responses (1xx included); stops early when the front closes."""
    try:
        while len(outcome.statuses) < count:
            r = conn.read_response(skip_1xx=False)
            outcome.statuses.append(r.status)
    except (EOFError, ConnectionResetError):
        outcome.closed = True
        if conn.buf:  # closed after bytes that are no HTTP response head (an HTTP/0.9 answer)
            outcome.statuses.append("non-HTTP")
    except AssertionError:  # bytes that are no HTTP response (an HTTP/0.9 answer)
        outcome.statuses.append("non-HTTP")
    except socket.timeout:
        pass


def run(front, backend, case, await_close):
    """The case's bytes through `front`; then the backend's log, read once the client is done."""
    backend.request_log(clear=True)
    out = Outcome()
    with RawHttp(front.port, timeout=READ_TIMEOUT) as conn:
        for i, part in enumerate(case.parts):
            try:
                conn.send(part)
            except (BrokenPipeError, ConnectionResetError):
                out.closed = True
                break
            if i + 1 < len(case.parts):
                read_statuses(conn, out, len(out.statuses) + 1)
                if out.closed:
                    break
        if not out.closed:
            read_statuses(conn, out, max(case.meant, len(case.statuses)))
        if not out.closed:
            out.closed = conn.closed_by_peer(await_close)
    conns = backend.request_log()
    out.conns = conns
    out.requests = [r for c in conns for r in c["requests"]]
    return out


@pytest.fixture(scope="module")
def fronts(module_cluster):
    backend = module_cluster.backend("raw", kind="raw")
    out = {"limpet": module_cluster.limpet([backend])}
    for name, (script, binary) in REFERENCES.items():
        if shutil.which(binary):
            out[name] = module_cluster.limpet([backend], name=name, binary=script)
    if "haproxy" in out:
        out["haproxy"].stop_signal = signal.SIGUSR1  # its graceful stop (SIGTERM kills it)
    return backend, out


@pytest.fixture(scope="module")
def table(tmp_path_factory, fronts):
    rows = {}
    yield rows
    names = list(fronts[1])
    base = tmp_path_factory.getbasetemp()
    (base / "smuggling-table.json").write_text(json.dumps(rows, indent=1))
    lines = ["| case | client meant | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for case in CASES:
        if case.name in rows:
            cells = [f"{rows[case.name][n]['answers']}, backend {rows[case.name][n]['backend']}"
                     if n in rows[case.name] else "—" for n in names]
            lines.append(f"| {case.name} | {case.meant} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    (base / "smuggling-table.md").write_text(md)
    print(f"\nsmuggling table (answers to the client, requests the backend read; {base}/smuggling-table.md):\n{md}")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_smuggling(fronts, table, case):
    backend, by_name = fronts
    row = table.setdefault(case.name, {})
    for name, front in by_name.items():
        front.assert_alive()
        # limpet's close is asserted (a bounded wait for it); the references' is recorded briefly.
        out = run(front, backend, case, await_close=3.0 if name == "limpet" and case.closed else 0.3)
        row[name] = {"answers": out.answers(), "backend": len(out.requests), "meant": case.meant}
        front.assert_alive()
        if name != "limpet":
            continue
        assert tuple(out.statuses) == case.statuses, f"limpet answered {out.answers()}"
        assert len(out.requests) <= case.meant, f"the backend read more requests than were sent: {out.requests}"
        assert len(out.requests) == case.backend, f"the backend read {out.requests}"
        if case.closed:
            assert out.closed, "limpet kept the connection open"
        if case.check:
            case.check(out.requests, out.conns)
