"""A raw HTTP/2 client for the tests (hyper-h2 over a socket), whose windows, resets and frames the
test controls: test_http2.py, test_upgrade.py."""

import os
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events

from tls_util import client_context

MB = 1024 * 1024


class H2:
    """A raw HTTP/2 client on one connection. Received DATA is acknowledged (its window given
    back) except on the streams in `held`: those are the slow readers."""

    def __init__(self, pki, lp, tls=True, connection_window=16 * MB, listener=None):
        port = lp.ports[listener if listener is not None else (0 if tls else 1)]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = client_context(pki, alpn=("h2",)).wrap_socket(raw, server_hostname="localhost") if tls else raw
        if tls:
            assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                                         validate_outbound_headers=False,
                                                                         normalize_outbound_headers=False))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(connection_window)  # the connection never limits
        self.flush()
        self.streams = {}
        self.held = set()
        self.goaway = None
        self.remote_settings = {}
        # hyper-h2 takes a GOAWAY for the end of the connection and refuses every frame after
        # it; limpet's open streams go on, so GOAWAY frames are taken out here (and recorded).
        self.strip_goaway = False
        self.goaway_codes = []
        self.inbuf = b""

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        fields = [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path),
                  *headers]
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True, timeout=20):
        """Sends as the stream's window allows, pumping events meanwhile."""
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                assert time.monotonic() < deadline, f"stream {sid}: the window stayed closed"
                self.pump(0.05)
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def reset(self, sid, code=8):
        self.conn.reset_stream(sid, code)
        self.flush()

    def pump(self, seconds):
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        if not data:
            raise ConnectionError("limpet closed the connection")
        if self.strip_goaway:
            self.inbuf += data
            data = b""
            while len(self.inbuf) >= 9:
                length = int.from_bytes(self.inbuf[:3], "big")
                if len(self.inbuf) < 9 + length:
                    break
                frame, self.inbuf = self.inbuf[:9 + length], self.inbuf[9 + length:]
                if frame[3] == 0x7:
                    self.goaway_codes.append(int.from_bytes(frame[13:17], "big"))
                else:
                    data += frame
        for event in self.conn.receive_data(data):
            self.on_event(event)
        self.flush()

    def on_event(self, event):
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id]["headers"] = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id]["data"] += event.data
            if event.stream_id not in self.held:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id]["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id]["reset"] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({k: v.new_value for k, v in event.changed_settings.items()})

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.streams}"
            self.pump(0.05)

    def done(self, sid):
        s = self.streams[sid]
        return s["ended"] or s["reset"] is not None

    def response(self, sid, timeout=20):
        self.wait(lambda: self.done(sid), timeout, f"stream {sid}")
        return self.streams[sid]

    def websocket(self, path):
        """An extended CONNECT (RFC 8441); returns the stream id once limpet answered."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        self.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                                     (":authority", "localhost"), (":path", path),
                                     ("sec-websocket-version", "13")])
        self.flush()
        self.wait(lambda: self.streams[sid]["headers"] is not None or self.done(sid), 10, "the CONNECT's answer")
        return sid

    def ws_send(self, sid, payload, opcode=1):
        mask = os.urandom(4)
        n = len(payload)
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
        self.conn.send_data(sid, head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        self.flush()

    def ws_frames(self, sid):
        """The WebSocket frames received on the stream so far: [(opcode, payload)]."""
        frames, data = [], bytes(self.streams[sid]["data"])
        while len(data) >= 2:
            n = data[1] & 0x7F
            at = 2
            if n == 126:
                n, at = struct.unpack("!H", data[2:4])[0], 4
            if len(data) < at + n:
                break
            assert not data[1] & 0x80, "a frame toward the client must not be masked"
            frames.append((data[0] & 0x0F, data[at:at + n]))
            data = data[at + n:]
        return frames

    def wait_frames(self, sid, count, timeout=10):
        self.wait(lambda: len(self.ws_frames(sid)) >= count, timeout, f"{count} WebSocket frames on stream {sid}")
        return self.ws_frames(sid)

    def release(self, sid):
        """The slow reader catches up: everything received so far is acknowledged."""
        self.held.discard(sid)
        self.conn.acknowledge_received_data(len(self.streams[sid]["data"]), sid)
        self.flush()

    def close(self):
        self.sock.close()
