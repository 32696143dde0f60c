#!/usr/bin/env python3
"""A backend that records the raw bytes of every connection and counts the requests in them.

For tests/integration/test_smuggling.py: what a proxy forwards is judged by the bytes on the wire,
read by a reader that is strict on purpose, so that it never finds two requests where a proxy
meant one (or one where it sent half):
  request line  METHOD SP TARGET SP HTTP/D.D CRLF (no empty lines before it)
  field lines   token ":" OWS value OWS CRLF; no obs-fold, no bare CR or LF, no control bytes
  framing       Transfer-Encoding exactly "chunked" (hex sizes, CRLF after data, trailers), or one
                Content-Length of digits, or none; never both
Every request it reads whole is logged, and all requests complete in what has arrived are logged
before any of them is answered (so a client that has its answer sees them all in /_log). Each is
answered at once with a small 200 naming it, or with the status its path asks for (/status/N);
/status/101 answers "101 Switching Protocols", after which the connection's bytes are only
recorded. "Expect: 100-continue" with the body not there yet gets "100 Continue". At the first
byte it cannot read it records why, answers 400 and closes.

  GET /_log[?clear=1]   as the first request of a connection: every other connection so far as
                        JSON [{id, raw (latin-1), requests: [{method, target, version, headers,
                        body}], error, tunnel, open}]; that connection is never logged

--port 0 picks a free port, written to --port-file. Standard library only.
"""

import argparse
import json
import os
import re
import socket
import sys
import threading

REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)")
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_LINE = 64 * 1024
LOG_REQUEST = b"GET /_log"


class NeedMore(Exception):
    pass


class Bad(Exception):
    pass


def read_line(buf, pos):
    """The line at `pos` without its CRLF, and where the next one starts."""
    end = buf.find(b"\n", pos)
    if end < 0:
        if b"\r" in buf[pos:-1] or len(buf) - pos > MAX_LINE:
            raise Bad("bare CR or an endless line")
        raise NeedMore
    if end == pos or buf[end - 1] != 0x0D:
        raise Bad("bare LF")
    line = buf[pos:end - 1]
    if b"\r" in line:
        raise Bad("bare CR")
    return line, end + 1


def has_ctl(value):
    return any((c < 0x20 and c != 0x09) or c == 0x7F for c in value)


class Head:
    def __init__(self, method, target, version, headers):
        self.method, self.target, self.version, self.headers = method, target, version, headers

    def values(self, name):
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name):
        return {t.strip().lower() for v in self.values(name) for t in v.split(b",")}

    def keep_alive(self):
        connection = self.tokens(b"connection")
        if b"close" in connection:
            return False
        return self.version != "1.0" or b"keep-alive" in connection

    def as_json(self, body):
        return {"method": self.method.decode("latin-1"), "target": self.target.decode("latin-1"),
                "version": self.version,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
                "body": body.decode("latin-1")}


def parse_head(buf, pos):
    line, pos = read_line(buf, pos)
    m = REQUEST_LINE.fullmatch(line)
    if not m:
        raise Bad(f"not a request line: {line[:80]!r}")
    headers = []
    while True:
        line, pos = read_line(buf, pos)
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            raise Bad("obs-fold")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise Bad(f"bad field line: {line[:80]!r}")
        value = value.strip(b" \t")
        if has_ctl(value):
            raise Bad(f"control byte in {name!r}")
        headers.append((name, value))
    head = Head(m.group(1), m.group(2), f"{int(m.group(3))}.{int(m.group(4))}", headers)
    te, cl = head.values(b"transfer-encoding"), head.values(b"content-length")
    if te and cl:
        raise Bad("Transfer-Encoding and Content-Length")
    if len(te) > 1 or len(cl) > 1:
        raise Bad("a framing header twice")
    if te and te[0].lower() != b"chunked":
        raise Bad(f"Transfer-Encoding {te[0]!r}")
    if cl and not cl[0].isdigit():
        raise Bad(f"Content-Length {cl[0]!r}")
    return head, pos


def parse_body(head, buf, pos):
    """The decoded body and where the message ends."""
    if head.values(b"transfer-encoding"):
        body = b""
        while True:
            line, pos = read_line(buf, pos)
            size, _, ext = line.partition(b";")
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size) or has_ctl(ext) or b'"' in ext:
                raise Bad(f"chunk line {line[:80]!r}")
            n = int(size, 16)
            if n == 0:
                while True:  # trailers
                    line, pos = read_line(buf, pos)
                    if not line:
                        return body, pos
            if len(buf) < pos + n + 2:
                raise NeedMore
            body += buf[pos:pos + n]
            if buf[pos + n:pos + n + 2] != b"\r\n":
                raise Bad("no CRLF after chunk data")
            pos += n + 2
    n = int(head.values(b"content-length")[0]) if head.values(b"content-length") else 0
    if len(buf) < pos + n:
        raise NeedMore
    return buf[pos:pos + n], pos + n


def response(name, conn_id, index, head):
    m = re.fullmatch(rb"/status/(\d{3})(?:\?.*)?", head.target)
    status = int(m.group(1)) if m else 200
    if status == 101:
        return (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    body = f"{name} conn {conn_id} request {index}: {head.method.decode()} {head.target.decode('latin-1')}\n"
    close = not head.keep_alive()
    return (f"HTTP/1.1 {status} Status {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"{'Connection: close' if close else 'X-Keep: yes'}\r\n\r\n{body}").encode()


class Recorder:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.conns = []
        self.next_id = 0

    def snapshot(self, clear):
        with self.lock:
            out = [dict(c, raw=c["raw"].decode("latin-1"), requests=list(c["requests"])) for c in self.conns]
            if clear:
                self.conns = [c for c in self.conns if c["open"]]
                for c in self.conns:  # connections still open start a fresh record
                    c["raw"], c["requests"], c["error"] = b"", [], None
            return out

    def serve(self, sock):
        with self.lock:
            self.next_id += 1
            rec = {"id": self.next_id, "raw": b"", "requests": [], "error": None, "tunnel": False, "open": True}
        buf, pos, logged = b"", 0, False
        head, body_at, sent_continue = None, 0, False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                if not logged:
                    if buf.startswith(LOG_REQUEST[:len(buf)]) or buf.startswith(LOG_REQUEST):
                        verdict = self.answer_log(sock, buf)
                        if verdict == "answered":
                            return
                        if verdict == "incomplete":
                            continue
                    logged = True
                    with self.lock:
                        rec["raw"] = buf
                        self.conns.append(rec)
                else:
                    with self.lock:
                        rec["raw"] += data
                if rec["tunnel"]:
                    continue
                # Every request complete in the buffer is logged before any is answered.
                answers = []
                keep = True
                try:
                    while keep and pos < len(buf):
                        if head is None:
                            head, body_at = parse_head(buf, pos)
                            sent_continue = False
                        body, end = parse_body(head, buf, body_at)
                        with self.lock:
                            rec["requests"].append(head.as_json(body))
                            index = len(rec["requests"])
                        answer = response(self.name, rec["id"], index, head)
                        answers.append(answer)
                        pos, keep = end, head.keep_alive()
                        if answer.startswith(b"HTTP/1.1 101"):
                            rec["tunnel"] = True
                            break
                        head = None
                except NeedMore:
                    if (head is not None and not sent_continue and
                            b"100-continue" in head.tokens(b"expect")):
                        answers.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                        sent_continue = True
                except Bad as e:
                    with self.lock:
                        rec["error"] = f"{e} at byte {pos}"
                    answers.append(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    keep = False
                sock.sendall(b"".join(answers))
                if not keep:
                    return
        except OSError:
            return
        finally:
            with self.lock:
                rec["open"] = False
            sock.close()

    def answer_log(self, sock, buf):
        """"answered", "incomplete", or "no" (not a /_log request: logged like any other)."""
        try:
            head, _ = parse_head(buf, 0)
        except NeedMore:
            return "incomplete" if len(buf) < MAX_LINE else "no"
        except Bad:
            return "no"
        if head.target not in (b"/_log", b"/_log?clear=1"):
            return "no"
        body = json.dumps(self.snapshot(clear=head.target.endswith(b"clear=1"))).encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.close()
        return "answered"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="raw")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    recorder = Recorder(args.name)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    port = listener.getsockname()[1]
    print(f"PORT {port}", flush=True)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=recorder.serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
