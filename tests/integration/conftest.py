"""Harness for limpet's integration tests: real `limpet` binary, real Python backends.

Helpers:
  wait_until(pred, timeout, what)   the only way a test waits: polls with a deadline
  Backend / start_backend(...)      backends/http_backend.py or backends/ws_backend.py in a process
  Limpet / start_limpet(...)        writes a TOML config into tmp_path, starts limpet, waits until it
                                    owns its listening sockets, stops it (asserting a clean exit)
  RawHttp                           a raw-socket HTTP/1.1 client of our own for protocol edges
  http_session()                    a requests.Session that ignores proxy settings

The binary is $LIMPET_BIN (meson sets it), else build/limpet in the source tree. On failure, the
report carries the stderr of every limpet that ran during the test.
"""

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BACKENDS = HERE / "backends"
sys.path.insert(0, str(BACKENDS))
import pattern  # noqa: E402,F401  (re-exported for the tests)

PYTHON = sys.executable


def limpet_bin():
    path = Path(os.environ.get("LIMPET_BIN") or REPO / "build" / "limpet")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"limpet binary not found at {path}: build it (ninja -C build) or set LIMPET_BIN")
    return path


# ---------------------------------------------------------------------------------------------
# waiting

def wait_until(pred, timeout, what, interval=0.02):
    """Poll `pred` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def admin_metric(admin, name, labels=""):
    """The value of one sample of limpet's /metrics at `admin` (host:port), or None if absent."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = r"^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_inodes(port):
    """Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except FileNotFoundError:
            pass
    return inodes


def socket_inodes_of(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


class Blackhole:
    """An address where connect() times out: a listener whose accept queue is full and never
    drained, so the kernel drops further SYNs. (Unrouted addresses are no use in sandboxes that
    intercept outgoing connections.)"""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        # A reset: the connection landed in the backlog of a listener that was being closed.
        return True


# ---------------------------------------------------------------------------------------------
# backends

def stop_process(proc, timeout=5):
    """SIGTERM, and SIGKILL if it is still there `timeout` seconds later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Backend:
    """One backend process; `kind` is "http", "ws" or "raw" (backends/raw_backend.py: raw bytes
    per connection and the requests a strict reader finds in them)."""

    def __init__(self, name, tmp_path, kind="http", args=()):
        self.name = name
        self.kind = kind
        script = BACKENDS / {"http": "http_backend.py", "ws": "ws_backend.py", "raw": "raw_backend.py"}[kind]
        port_file = tmp_path / f"backend-{name}.port"
        self.log_path = tmp_path / f"backend-{name}.log"
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, str(script), "--name", name, "--port", "0", "--port-file", str(port_file), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log_file)
        try:
            wait_until(lambda: port_file.exists() or self.proc.poll() is not None, 15,
                       f"backend {name} to start")
            assert self.proc.poll() is None, f"backend {name} exited: {self.log_path.read_text()}"
        except BaseException:
            self.kill()
            raise
        self.port = int(port_file.read_text())
        self.address = f"127.0.0.1:{self.port}"

    def request_log(self, clear=False):
        """Requests this backend received (asked directly, not through limpet)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/_log?clear=1" if clear else "/_log")
            resp = conn.getresponse()
            assert resp.status == 200
            return json.loads(resp.read())
        finally:
            conn.close()

    def paths(self):
        return [e["path"] for e in self.request_log()]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()

    def stop(self):
        stop_process(self.proc)
        self._log_file.close()


# ---------------------------------------------------------------------------------------------
# limpet

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def toml_table(header, values):
    lines = [header]
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


DEFAULT_SERVER = {"workers": 2, "shutdown_timeout": "5s", "access_log": "stderr"}
DEFAULT_LISTENER = {"header_timeout": "2s", "max_body_size": "100m"}
DEFAULT_UPSTREAM = {"balance": "round_robin", "read_timeout": "3s", "connect_timeout": "1s"}


def render_config(listener_ports, upstreams, server=None, listeners=None, tables=None):
    """TOML text. `upstreams`: [{"name": ..., "backends": [addr or (name, addr)], **settings}];
    `listeners`: [{"upstream": ..., **settings}] matched with `listener_ports` by position;
    `tables`: more top-level tables, {"[admin]": {...}, "[session_store]": {...}}."""
    out = [toml_table("[server]", {**DEFAULT_SERVER, **(server or {})})]
    for header, values in (tables or {}).items():
        out.append(toml_table(header, values))
    listeners = listeners or [{"upstream": upstreams[0]["name"]}]
    for port, lst in zip(listener_ports, listeners):
        out.append(toml_table("[[listener]]", {"address": f"127.0.0.1:{port}", **DEFAULT_LISTENER, **lst}))
    for up in upstreams:
        settings = {k: v for k, v in up.items() if k != "backends"}
        out.append(toml_table("[[upstream]]", {**DEFAULT_UPSTREAM, **settings}))
        for i, b in enumerate(up["backends"]):
            name, addr = b if isinstance(b, tuple) else (f"b{i + 1}", b)
            out.append(toml_table("[[upstream.backend]]", {"name": name, "address": addr}))
    return "\n".join(out)


RUNNING = []  # every Limpet started, for failure reports


class Limpet:
    """A limpet process. ports[i] is listener i's port; `port` is listener 0's. `binary` runs
    something else from the same config (reference/nginx_as_limpet.py, haproxy_as_limpet.py)."""

    def __init__(self, tmp_path, upstreams, server=None, listeners=None, name="limpet", tables=None, binary=None):
        self.tmp_path = tmp_path
        self.binary = binary
        self.stop_signal = signal.SIGTERM
        self.tables = tables
        self.upstreams = upstreams
        self.server = {**DEFAULT_SERVER, **(server or {})}
        self.listeners = listeners or [{"upstream": upstreams[0]["name"]}]
        self.config_path = tmp_path / f"{name}.toml"
        self.log_path = tmp_path / f"{name}.stderr"
        self.proc = None
        self.exit_checked = False  # a test looked at the exit code itself
        self.signalled = False
        self.stopped_at = None
        self.started_at = time.monotonic()
        RUNNING.append(self)

    # -- start -------------------------------------------------------------------------------
    def start(self, attempts=4):
        for _ in range(attempts):
            self.ports = [free_port() for _ in self.listeners]
            self.port = self.ports[0]
            self.config_path.write_text(render_config(self.ports, self.upstreams, self.server, self.listeners,
                                                        self.tables))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([str(self.binary or limpet_bin()), "-c", str(self.config_path)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            outcome = wait_until(self._ready_or_dead, 15, "limpet to listen on " + str(self.ports))
            if outcome == "ready":
                return self
            if outcome == "stolen":  # someone else took a port between free_port() and bind()
                self.proc.kill()
                self.proc.wait(10)
                continue
            if "in use" not in self.stderr():
                raise AssertionError(f"limpet exited with {self.proc.returncode} at start:\n{self.stderr()}")
        raise AssertionError("limpet could not get free ports:\n" + self.stderr())

    def _ready_or_dead(self):
        if self.proc.poll() is not None:
            return "dead"
        mine = socket_inodes_of(self.proc.pid)
        for port in self.ports:
            listening = listening_inodes(port)
            if not listening:
                return None
            if not listening <= mine:
                return "stolen"
        return "ready"

    # -- state -------------------------------------------------------------------------------
    def stderr(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), f"limpet died (exit {self.proc.returncode}):\n{self.stderr()}"

    def url(self, path="/", listener=0):
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait up to `timeout` s for limpet to exit; returns the exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"limpet still running {timeout}s later:\n{self.stderr()[-6000:]}")
        self.stopped_at = time.monotonic()
        self.exit_checked = True
        return rc

    def check_sanitizers(self):
        text = self.stderr()
        for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
            assert marker not in text, f"sanitizer report in limpet's stderr:\n{text[-8000:]}"

    def stop(self, timeout=None):
        """SIGTERM (stop_signal), then assert a clean exit (0, no sanitizer report) within shutdown_timeout + 3 s.
        An exit that a test already checked is left alone; any other early exit is a crash."""
        if self.proc is None:
            return
        if self.exit_checked:
            self.check_sanitizers()
            return
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            if not (self.signalled and rc == 0):
                why = "after the test's signal" if self.signalled else "on its own"
                raise AssertionError(f"limpet exited {why} with {rc}:\n{self.stderr()[-8000:]}")
            self.check_sanitizers()
            return
        self.proc.send_signal(self.stop_signal)
        rc = self.wait_exit(timeout or parse_duration(self.server["shutdown_timeout"]) + 3)
        assert rc == 0, f"limpet exited with {rc} on {self.stop_signal.name}:\n{self.stderr()[-8000:]}"
        self.check_sanitizers()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.stopped_at = time.monotonic()


def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


# ---------------------------------------------------------------------------------------------
# fixtures

class Cluster:
    """Backends started on demand and the limpets in front of them; torn down by the fixture."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.backends = []
        self.limpets = []

    def backend(self, name, kind="http", args=()):
        b = Backend(name, self.tmp_path, kind, args)
        self.backends.append(b)
        return b

    def limpet(self, backends, server=None, listener=None, upstream=None, name="limpet",
               upstreams=None, listeners=None, tables=None, binary=None):
        """Start limpet in front of `backends` (Backend objects, addresses or (name, address))."""
        if upstreams is None:
            addrs = [(b.name, b.address) if isinstance(b, Backend) else b for b in backends]
            upstreams = [{"name": "app", "backends": addrs, **(upstream or {})}]
            listeners = [{"upstream": "app", **(listener or {})}]
        lp = Limpet(self.tmp_path, upstreams, server, listeners, name, tables, binary)
        self.limpets.append(lp)
        return lp.start()

    def teardown(self):
        errors = []
        for lp in self.limpets:
            try:
                lp.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                lp.kill()
        for b in self.backends:
            b.kill()
        if errors:
            pytest.fail("limpet did not stop cleanly:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.teardown()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory, request):
    c = Cluster(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield c
    c.teardown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        start = getattr(item, "_limpet_t0", 0)
        for lp in RUNNING:
            if lp.stopped_at is None or lp.stopped_at >= start:
                text = lp.stderr()
                if len(text) > 12000:
                    text = "...\n" + text[-12000:]
                report.sections.append((f"limpet stderr ({lp.config_path.name})", text))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._limpet_t0 = time.monotonic()


# ---------------------------------------------------------------------------------------------
# clients

def http_session():
    s = requests.Session()
    s.trust_env = False  # never send the tests' traffic to an HTTP proxy from the environment
    return s


class PatternBody:
    """A request body of `size` pattern bytes that requests streams with a Content-Length."""

    def __init__(self, size):
        self.size = size
        self._it = pattern.blocks(size)
        self._pending = b""

    def __len__(self):
        return self.size

    def read(self, n=-1):
        while n < 0 or len(self._pending) < n:
            piece = next(self._it, None)
            if piece is None:
                break
            self._pending += piece
        if n < 0:
            n = len(self._pending)
        out, self._pending = self._pending[:n], self._pending[n:]
        return out


def sha256_stream(resp):
    h = hashlib.sha256()
    n = 0
    for piece in resp.iter_content(65536):
        h.update(piece)
        n += len(piece)
    return n, h.hexdigest()


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version, self.status, self.reason, self.headers, self.body = version, status, reason, headers, body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.reason} {self.headers} body={self.body[:200]!r}>"


class RawHttp:
    """A deliberately simple HTTP/1.1 client on a raw socket: send exact bytes, parse responses
    one after the other from one buffer (so pipelined responses stay in order)."""

    def __init__(self, port, timeout=10.0, source=None):
        """`source`: the local address to connect from (127.0.0.2, any of 127/8 on Linux)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode("latin-1"))

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed by limpet")
        self.buf += data

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, limit=1 << 30):
        try:
            while len(self.buf) < limit:
                self._fill()
        except (EOFError, ConnectionResetError):
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.fullmatch(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
        if not m:
            raise AssertionError(f"not an HTTP response from limpet: {head[:300]!r}")
        version, status, reason = m.group(1), m.group(2), m.group(3) or ""
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
        return version, int(status), reason, headers

    def read_response(self, method="GET", skip_1xx=True):
        """One response; the body is read by its framing (until EOF when it has none)."""
        while True:
            version, status, reason, headers = self.read_head()
            if not (skip_1xx and 100 <= status < 200 and status != 101):
                break
        resp = Response(version, status, reason, headers, b"")
        te = (resp.header("Transfer-Encoding") or "").lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in te:
            body = []
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body.append(self.read_exact(size))
                assert self.read_exact(2) == b"\r\n", "bad chunk framing from limpet"
            resp.body = b"".join(body)
        elif resp.header("Content-Length") is not None:
            resp.body = self.read_exact(int(resp.header("Content-Length")))
        else:
            resp.body = self.read_to_eof()
        return resp

    def request(self, method, path, headers=(), body=b"", host="test.local"):
        """Send one request (Content-Length framed when there is a body) and read its response."""
        self.send(build_request(method, path, headers, body, host))
        return self.read_response(method)

    def closed_by_peer(self, timeout=3.0):
        """True if limpet closes the connection (EOF or reset) within `timeout`, with no more data."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
                if self.buf:
                    return False
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)


class InFlight:
    """One request sent on its own connection; its response read in a thread."""

    def __init__(self, lp, path):
        self.conn = RawHttp(lp.port, timeout=20)
        self.conn.send(build_request("GET", path))
        self.response = None
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            self.response = self.conn.read_response()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.conn.close()

    def join(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"no response within {timeout}s"
        return self.response


def build_request(method, path, headers=(), body=b"", host="test.local"):
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body, size=1000):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"
