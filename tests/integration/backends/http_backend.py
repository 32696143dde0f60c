#!/usr/bin/env python3
"""HTTP/1.1 backend for limpet's integration tests.

Python standard library only (http.server, threaded, keep-alive): it shares no code with limpet, so
a parsing bug in limpet cannot be cancelled out by the same bug here.

Endpoints (query parameters in brackets):
  /echo                  method, path, version, headers (in order, as received) and body as JSON
  /big [size, mode=cl|chunked|close, chunk]   `size` bytes of the pattern (backends/pattern.py)
  /until-close [size]    same as /big?mode=close: no length, the body ends when the socket closes
  /upload                reads a request body of any size (Content-Length or chunked) as a stream,
                         answers its length and sha256
  /slow [ms]             answers after `ms` milliseconds
  /sink [delay_ms]       waits `delay_ms` before reading the request body, then answers like /upload
  /hang                  never answers; returns when the peer closes
  /die [after, mode=cl|chunked|rst|nohead|garbage]  promises more body than it sends: sends
                         `after` bytes, closes (rst: with a reset; nohead: closes before any byte;
                         garbage: answers bytes that are not HTTP, then closes)
  /duplex-echo           streams the request body back while still reading it (chunked): full
                         duplex, as streaming APIs do
  /continue              "100 Continue" and the final 200 in one write (the proxy must find the
                         real response in the bytes after the interim one)
  /stale-once            answers the first request on a connection (keep-alive); the next one on
                         the same connection is read and the connection closed unanswered, as a
                         backend whose idle timeout fired the moment the request arrived
  /bad-101               "101 Switching Protocols" with no Upgrade and no Connection header, and
                         the connection kept open (a proxy must neither forward nor pool it)
  /conn-id               this backend's name and the id of the TCP connection the request came on
  /status/N              answers status N
  /hop-response          a response carrying hop-by-hop headers that a proxy must strip
  /big-header [size]     a response with an X-Big header of `size` bytes and many Set-Cookie lines
  /ws-raw-hello          WebSocket upgrade answered by hand: the 101 and a first text frame in one
                         write (bytes that arrive with the response head)
  /socket.io/            an Engine.IO v4 polling handshake when the query has no sid (the sid names
                         this backend; abuse=long-sid|not-json|gzip answers a broken one: a 10 KB
                         sid, a non-JSON open packet, a gzip body); with a sid, JSON {"backend", "sid"}. Only what the
                         balancer reads: the real Socket.IO cluster is in tests/e2e
  /healthz               answers the status last set with /_healthz (200 at start): what a health
                         check asks
  /_healthz [status]     sets the status /healthz answers; meant to be asked directly
  /_log [clear=1]        every request this backend received (method, path, headers, body length);
                         meant to be asked directly, not through the proxy; never logged itself

--port 0 picks a free port; it is printed as "PORT <n>" and written to --port-file.
"""

import argparse
import base64
import gzip
import hashlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pattern  # noqa: E402

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class BadRequest(Exception):
    pass


class State:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.log = []
        self.next_conn = 0
        self.health_status = 200
        self.engineio_status = 200
        self.stopping = threading.Event()

    def new_conn_id(self):
        with self.lock:
            self.next_conn += 1
            return self.next_conn

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def take_log(self, clear):
        with self.lock:
            out = list(self.log)
            if clear:
                self.log.clear()
            return out


STATE = None
VERBOSE = False


def qint(q, key, default):
    try:
        return int(q.get(key, [default])[0])
    except ValueError:
        raise BadRequest(f"bad {key}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "limpet-test-backend"
    sys_version = ""
    timeout = 30  # idle keep-alive timeout (socket timeout); set from --idle-timeout

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        # Head and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn_id = STATE.new_conn_id()
        self.requests_on_conn = 0

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("%s: %s\n" % (STATE.name, fmt % args))

    # Every method goes through dispatch().
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    # ---- request bodies ---------------------------------------------------------------------
    def body_pieces(self):
        """The request body as a stream of pieces, whatever its framing."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BadRequest("unsupported transfer-encoding " + te)
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise BadRequest("truncated chunk size line")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % line)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65536)
                        if t in (b"\r\n", b"\n"):
                            return
                        if not t:
                            raise BadRequest("eof in trailers")
                remaining = size
                while remaining:
                    d = self.rfile.read(min(remaining, 65536))
                    if not d:
                        raise BadRequest("eof in chunk")
                    remaining -= len(d)
                    yield d
                if self.rfile.readline(16) not in (b"\r\n", b"\n"):
                    raise BadRequest("missing CRLF after chunk")
        else:
            length = self.headers.get("Content-Length")
            remaining = int(length) if length else 0
            while remaining:
                d = self.rfile.read(min(remaining, 65536))
                if not d:
                    raise BadRequest("eof in body")
                remaining -= len(d)
                yield d

    def read_body(self):
        return b"".join(self.body_pieces())

    # ---- responses ---------------------------------------------------------------------------
    def respond(self, status, body=b"", ctype="text/plain", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", STATE.name)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def respond_json(self, status, obj):
        self.respond(status, json.dumps(obj), "application/json")

    # ---- dispatch ----------------------------------------------------------------------------
    def dispatch(self):
        self.requests_on_conn += 1
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        route = url.path
        entry = None
        if route != "/_log":
            entry = {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "conn": self.conn_id,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": None,
            }
            STATE.record(entry)
        try:
            handler = ROUTES.get(route)
            if handler is None and route.startswith("/status/"):
                handler = Handler.r_status
            if handler is None:
                self.read_body()
                self.respond(404, "no route %s\n" % route)
                return
            handler(self, q, entry)
        except BadRequest as e:
            self.close_connection = True
            self.respond(400, "backend: bad request: %s\n" % e, headers=[("Connection", "close")])

    def r_echo(self, q, entry):
        body = self.read_body()
        entry["body_len"] = len(body)
        self.respond_json(200, {
            "backend": STATE.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1") if len(body) <= 65536 else None,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "client_port": self.client_address[1],
        })

    def r_upload(self, q, entry):
        h = hashlib.sha256()
        n = 0
        for piece in self.body_pieces():
            h.update(piece)
            n += len(piece)
        entry["body_len"] = n
        self.respond_json(200, {
            "backend": STATE.name,
            "length": n,
            "sha256": h.hexdigest(),
            "chunked": "chunked" in self.headers.get("Transfer-Encoding", "").lower(),
        })

    def r_big(self, q, entry, mode=None):
        self.read_body()
        size = qint(q, "size", 1024)
        mode = mode or q.get("mode", ["cl"])[0]
        chunk = max(1, qint(q, "chunk", 65536))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Backend", STATE.name)
        if mode == "cl":
            self.send_header("Content-Length", str(size))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            raise BadRequest("mode")
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in pattern.blocks(size, chunk):
            if mode == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def r_until_close(self, q, entry):
        self.r_big(q, entry, mode="close")

    def r_sink(self, q, entry):
        time.sleep(qint(q, "delay_ms", 1000) / 1000.0)
        self.r_upload(q, entry)

    def r_slow(self, q, entry):
        self.read_body()
        ms = qint(q, "ms", 1000)
        time.sleep(ms / 1000.0)
        self.respond(200, "slow %d\n" % ms)

    def wait_peer_close(self, limit=120.0):
        """Block until the peer closes the connection (or this backend stops)."""
        deadline = time.monotonic() + limit
        sock = self.connection
        while time.monotonic() < deadline and not STATE.stopping.is_set():
            r, _, _ = select.select([sock], [], [], 0.2)
            if r:
                try:
                    if not sock.recv(65536):
                        break
                except OSError:
                    break
        self.close_connection = True

    def r_hang(self, q, entry):
        self.wait_peer_close()

    def r_die(self, q, entry):
        self.read_body()
        after = qint(q, "after", 1000)
        mode = q.get("mode", ["cl"])[0]
        self.close_connection = True
        sock = self.connection
        if mode == "nohead":
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            return
        if mode == "garbage":
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(after * 10 + 10))
        self.end_headers()
        piece = pattern.data(after)
        if mode == "chunked":
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            self.wfile.write(piece)
        if mode == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        sock.close()

    def r_duplex_echo(self, q, entry):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        n = 0
        for piece in self.body_pieces():
            n += len(piece)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")
        entry["body_len"] = n

    def r_continue(self, q, entry):
        body = b"after continue\n"
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                         b"X-Backend: %s\r\n\r\n%s" % (len(body), STATE.name.encode(), body))
        self.read_body()

    def r_stale_once(self, q, entry):
        self.read_body()
        if self.requests_on_conn > 1:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.respond(200, "fresh %d\n" % self.conn_id)

    def r_bad_101(self, q, entry):
        self.read_body()
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Backend: %s\r\n\r\n" % STATE.name.encode())

    def r_conn_id(self, q, entry):
        self.read_body()
        self.respond_json(200, {
            "backend": STATE.name,
            "conn": self.conn_id,
            "request_on_conn": self.requests_on_conn,
            "client_port": self.client_address[1],
        })

    def r_engineio(self, q, entry):
        self.read_body()
        if STATE.engineio_status != 200:  # a broken node: this status to every Engine.IO request
            self.respond(STATE.engineio_status, "engineio status %d\n" % STATE.engineio_status)
            return
        if "sid" in q:
            self.respond_json(200, {"backend": STATE.name, "sid": q["sid"][0]})
            return
        sid = "%s-%d" % (STATE.name, STATE.new_conn_id())
        abuse = q.get("abuse", [""])[0]  # a broken backend, for the balancer's sid learning
        if abuse == "long-sid":
            sid = "x" * 10240
        if abuse == "not-json":
            self.respond(200, "0<html>" + "y" * 5000, "text/plain; charset=UTF-8")
            return
        body = '0{"sid":"%s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}' % sid
        if abuse == "gzip":
            self.respond(200, gzip.compress(body.encode()), "text/plain; charset=UTF-8",
                         [("Content-Encoding", "gzip")])
            return
        self.respond(200, body, "text/plain; charset=UTF-8")

    def r_healthz(self, q, entry):
        self.read_body()
        self.respond(STATE.health_status, "health %d\n" % STATE.health_status)

    def r_set_healthz(self, q, entry):
        self.read_body()
        STATE.health_status = qint(q, "status", 200)
        self.respond(200, "ok\n")

    def r_status(self, q, entry):
        self.read_body()
        try:
            code = int(urlsplit(self.path).path.rsplit("/", 1)[1])
        except ValueError:
            raise BadRequest("status")
        if code in (204, 304):
            self.send_response(code)
            self.send_header("X-Backend", STATE.name)
            self.end_headers()
        else:
            self.respond(code, "status %d from %s\n" % (code, STATE.name))

    def r_hop_response(self, q, entry):
        self.read_body()
        self.respond(200, "hop\n", headers=[
            ("Connection", "X-Hop-Custom"),
            ("X-Hop-Custom", "must-be-removed"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "Basic realm=x"),
            ("X-End-To-End", "kept"),
        ])

    def r_big_header(self, q, entry):
        self.read_body()
        size = qint(q, "size", 8000)
        value = pattern.data(size // 2 + 1).hex()[:size]
        cookies = [("Set-Cookie", "c%d=%d; Path=/" % (i, i)) for i in range(20)]
        self.respond(200, "big header\n", headers=[("X-Big", value)] + cookies)

    def r_ws_raw_hello(self, q, entry):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self.read_body()
            self.respond(400, "not an upgrade\n")
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        head = ("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode()
        text = ("hello-after-101 from " + STATE.name).encode()
        frame = bytes([0x81, len(text)]) + text  # FIN + text, unmasked (server to client)
        self.wfile.write(head + frame)  # one write: the frame arrives with the head
        self.wait_peer_close()

    def r_log(self, q, entry):
        self.read_body()
        self.respond_json(200, STATE.take_log(clear=q.get("clear", ["0"])[0] == "1"))


ROUTES = {
    "/echo": Handler.r_echo,
    "/upload": Handler.r_upload,
    "/big": Handler.r_big,
    "/until-close": Handler.r_until_close,
    "/slow": Handler.r_slow,
    "/sink": Handler.r_sink,
    "/hang": Handler.r_hang,
    "/die": Handler.r_die,
    "/conn-id": Handler.r_conn_id,
    "/duplex-echo": Handler.r_duplex_echo,
    "/bad-101": Handler.r_bad_101,
    "/continue": Handler.r_continue,
    "/stale-once": Handler.r_stale_once,
    "/hop-response": Handler.r_hop_response,
    "/big-header": Handler.r_big_header,
    "/ws-raw-hello": Handler.r_ws_raw_hello,
    "/socket.io/": Handler.r_engineio,
    "/healthz": Handler.r_healthz,
    "/_healthz": Handler.r_set_healthz,
    "/_log": Handler.r_log,
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A proxy hanging up mid-response is part of the tests, not an error worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def main():
    global STATE, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="backend")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--idle-timeout", type=float, default=30.0,
                    help="close a keep-alive connection idle this long (seconds)")
    ap.add_argument("--engineio-status", type=int, default=200,
                    help="answer every Engine.IO request with this status (a broken node)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    STATE = State(args.name)
    STATE.engineio_status = args.engineio_status
    VERBOSE = args.verbose
    Handler.timeout = args.idle_timeout
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("PORT %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        STATE.stopping.set()
        server.server_close()


if __name__ == "__main__":
    main()
