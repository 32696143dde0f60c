"""Helpers for the operations tests (test_ops.py, test_status_page.py): a limpet with an admin
listener whose configuration a test rewrites and reloads, admin API calls, process resource
counts, WebSocket clients kept open in a background event loop, headless Chromium.

Built on conftest.py (Limpet, wait_until, free_port, ...), which it does not change.
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import websockets

from conftest import (DEFAULT_LISTENER, DEFAULT_SERVER, DEFAULT_UPSTREAM, Limpet, free_port,
                      limpet_bin, listening_inodes, socket_inodes_of, toml_table, wait_until)

TOKEN = "ops-test-token-4f1c"


# ---------------------------------------------------------------------------------------------
# configuration

def backend_entry(b):
    """A backend given as a Backend, an address, (name, address) or a dict with name/address/weight."""
    if isinstance(b, dict):
        return dict(b)
    if isinstance(b, tuple):
        return {"name": b[0], "address": b[1]}
    if hasattr(b, "address") and hasattr(b, "name"):
        return {"name": b.name, "address": b.address}
    raise TypeError(f"backend {b!r}")


def render_ops_config(listeners, upstreams, server, admin):
    """TOML text. `listeners`: [{"port": N, "upstream": ..., **settings}]; `upstreams`:
    [{"name": ..., "backends": [...], **settings}]; `admin`: None or {"address": ..., "token": ...}."""
    out = [toml_table("[server]", {**DEFAULT_SERVER, **(server or {})})]
    if admin is not None:
        out.append(toml_table("[admin]", admin))
    for lst in listeners:
        settings = {k: v for k, v in lst.items() if k != "port"}
        out.append(toml_table("[[listener]]", {"address": f"127.0.0.1:{lst['port']}",
                                               **DEFAULT_LISTENER, **settings}))
    for up in upstreams:
        settings = {k: v for k, v in up.items() if k != "backends"}
        out.append(toml_table("[[upstream]]", {**DEFAULT_UPSTREAM, **settings}))
        for b in up["backends"]:
            out.append(toml_table("[[upstream.backend]]", backend_entry(b)))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# limpet with an admin listener

class OpsLimpet(Limpet):
    """A limpet whose config the test rewrites between reloads. Listener ports are kept across
    rewrites (a listener dict may name its own "port"; new listeners get a free one)."""

    def __init__(self, tmp_path, upstreams, server=None, listeners=None, name="limpet",
                 admin=True, token=TOKEN, env=None):
        super().__init__(tmp_path, upstreams, server, listeners, name)
        self.listeners = [dict(x) for x in self.listeners]
        self.admin_enabled = admin
        self.token = token
        self.admin_port = None
        self.env = env

    # -- config --------------------------------------------------------------------------------
    def admin_table(self):
        if not self.admin_enabled:
            return None
        return {"address": f"127.0.0.1:{self.admin_port}", "token": self.token}

    def render(self):
        for lst in self.listeners:
            if not lst.get("port"):
                lst["port"] = free_port()
        self.ports = [lst["port"] for lst in self.listeners]
        self.port = self.ports[0] if self.ports else None
        return render_ops_config(self.listeners, self.upstreams, self.server, self.admin_table())

    def write_config(self, upstreams=None, listeners=None, server=None, text=None):
        """Rewrite the config file (not reloaded yet). `server` is merged into the current one."""
        if upstreams is not None:
            self.upstreams = upstreams
        if listeners is not None:
            self.listeners = [dict(x) for x in listeners]
        if server is not None:
            self.server = {**self.server, **server}
        self.config_path.write_text(text if text is not None else self.render())

    # -- start ---------------------------------------------------------------------------------
    def start(self, attempts=4):
        for _ in range(attempts):
            for lst in self.listeners:
                lst.pop("port", None)
            self.admin_port = free_port() if self.admin_enabled else None
            self.config_path.write_text(self.render())
            env = None if self.env is None else {**os.environ, **self.env}
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([str(limpet_bin()), "-c", str(self.config_path)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            outcome = wait_until(self._ops_ready_or_dead, 20, "limpet to listen on " + str(self.ports))
            if outcome == "ready":
                return self
            self.kill()
            if outcome == "dead" and "in use" not in self.stderr():
                raise AssertionError(f"limpet exited with {self.proc.returncode} at start:\n{self.stderr()}")
        raise AssertionError("limpet could not get free ports:\n" + self.stderr())

    def _ops_ready_or_dead(self):
        if self.proc.poll() is not None:
            return "dead"
        mine = socket_inodes_of(self.proc.pid)
        ports = list(self.ports) + ([self.admin_port] if self.admin_port else [])
        for port in ports:
            listening = listening_inodes(port)
            if not listening:
                return None
            if not listening <= mine:
                return "stolen"
        return "ready"

    # -- admin API -----------------------------------------------------------------------------
    def admin(self, method, path, token=None, authorization=None, timeout=10):
        """(status, headers dict, body text) of one admin request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            headers = {}
            if authorization is not None:
                headers["Authorization"] = authorization
            elif token is not None:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
        finally:
            conn.close()

    def status(self):
        code, _, body = self.admin("GET", "/status")
        assert code == 200, f"GET /status: {code} {body}"
        return json.loads(body)

    def metrics_text(self):
        code, headers, body = self.admin("GET", "/metrics")
        assert code == 200, f"GET /metrics: {code} {body}"
        return body

    def backend_states(self):
        return {b["name"]: b["state"] for b in self.status()["backends"]}

    def post(self, name, action, token=TOKEN):
        return self.admin("POST", f"/backends/{name}/{action}", token=token)

    # -- reload --------------------------------------------------------------------------------
    def reload(self, expect="ok", timeout=15, sig=signal.SIGHUP, via=None):
        """SIGHUP (or `via()`) and wait until /status counts the reload; returns the new status."""
        before = self.status()
        if via is None:
            self.signal(sig)
        else:
            via()
        key = "reloads_ok" if expect == "ok" else "reloads_failed"
        other = "reloads_failed" if expect == "ok" else "reloads_ok"

        def done():
            s = self.status()
            if s[other] != before[other]:
                raise AssertionError(f"reload counted as {other}, expected {key}:\n"
                                     + self.stderr()[-4000:])
            return s if s[key] == before[key] + 1 else None
        after = wait_until(done, timeout, f"reload ({key}) to be counted in /status", interval=0.01)
        if expect == "ok":
            assert after["generation"] == before["generation"] + 1, (before, after)
        else:
            assert after["generation"] == before["generation"], (before, after)
        return after


def start_ops_limpet(cluster, backends=None, upstreams=None, listeners=None, server=None,
                     upstream=None, listener=None, name="limpet", **kw):
    """An OpsLimpet torn down with the cluster (SIGTERM, clean exit asserted)."""
    if upstreams is None:
        upstreams = [{"name": "app", "backends": list(backends), **(upstream or {})}]
        listeners = listeners or [{"upstream": "app", **(listener or {})}]
    lp = OpsLimpet(cluster.tmp_path, upstreams, server, listeners, name, **kw)
    cluster.limpets.append(lp)
    return lp.start()


# ---------------------------------------------------------------------------------------------
# process resources

def proc_resources(pid):
    """(threads, fds, rss bytes) of a process."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return threads, fds, rss


# ---------------------------------------------------------------------------------------------
# clients

def get(port, path="/echo", timeout=10):
    """One request on a new connection: (status, body bytes, headers dict)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "test.local"})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def backend_of(port, path="/echo"):
    status, body, headers = get(port, path)
    assert status == 200, f"GET {path}: {status} {body[:300]!r}"
    return json.loads(body)["backend"]


class HttpLoad:
    """Requests in a loop until stopped, from `keepalive` threads that reuse one connection and
    `fresh` threads that open a new connection per request. Every failure is recorded."""

    def __init__(self, port, keepalive=2, fresh=2, path="/echo", timeout=10):
        self.port, self.path, self.timeout = port, path, timeout
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._keepalive, daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _record(self, ok, what=None):
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failures.append(what)

    def _keepalive(self):
        conn = None
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("GET", f"{self.path}?k={n}", headers={"Host": "test.local"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self._record(False, f"keep-alive GET: {resp.status} {body[:200]!r} at {time.time():.3f}")
                else:
                    self._record(True)
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - recorded for the test
                self._record(False, f"keep-alive GET: {e!r} at {time.time():.3f}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            try:
                status, body, _ = get(self.port, f"{self.path}?f={n}", self.timeout)
                self._record(status == 200, f"new-connection GET: {status} {body[:200]!r} at {time.time():.3f}")
            except Exception as e:  # noqa: BLE001 - recorded for the test
                self._record(False, f"new-connection GET: {e!r} at {time.time():.3f}")

    def stop(self, timeout=20):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "HTTP load threads did not stop"


class WsFleet:
    """`count` WebSockets to ws://127.0.0.1:port/path held open by an event loop in a thread.
    With `interval` > 0 each one sends a message every `interval` s and checks the echo.
    Every tunnel records its messages exchanged and how it ended (close code or error)."""

    def __init__(self, port, count, path="/echo", interval=0.0, open_concurrency=50, msg_size=0):
        self.port, self.count, self.path, self.interval = port, count, path, interval
        self.msg_size = msg_size  # pad messages to this many bytes (large frames cross reads)
        self.open_concurrency = open_concurrency
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.conns = []
        self.exchanged = []    # per tunnel: echoes received
        self.first = []        # per tunnel: first message received (e.g. /hello names the backend)
        self.ended = {}        # tunnel index -> (monotonic time, close code or repr(error))
        self.errors = []       # echo mismatches and other surprises
        self.tasks = []
        self.stopping = False

    # -- helpers run in the loop ----------------------------------------------------------------
    async def _open_one(self, i, sem):
        async with sem:
            ws = await websockets.connect(f"ws://127.0.0.1:{self.port}{self.path}", ping_interval=None,
                                          open_timeout=30, close_timeout=5, max_queue=None,
                                          max_size=16 * 1024 * 1024, compression=None)
            if self.path.startswith("/hello"):
                self.first[i] = await asyncio.wait_for(ws.recv(), 10)
            self.conns[i] = ws

    async def _open_all(self):
        sem = asyncio.Semaphore(self.open_concurrency)
        self.conns = [None] * self.count
        self.first = [None] * self.count
        self.exchanged = [0] * self.count
        await asyncio.gather(*(self._open_one(i, sem) for i in range(self.count)))
        for i in range(self.count):
            self.tasks.append(asyncio.ensure_future(self._run(i)))

    async def _run(self, i):
        ws = self.conns[i]
        if self.interval <= 0:  # passive: wait for the end; echo_all() talks on it meanwhile
            await ws.wait_closed()
            if not self.stopping:
                self.ended[i] = (time.monotonic(), ws.close_code, ws.close_reason)
            return
        n = 0
        # Stagger the first message so the fleet's traffic is spread over the interval.
        if self.interval > 0:
            await asyncio.sleep(self.interval * i / max(1, self.count))
        try:
            while not self.stopping:
                n += 1
                msg = f"t{i}-m{n}-"
                if len(msg) < self.msg_size:
                    msg += "x" * (self.msg_size - len(msg))
                await ws.send(msg)
                back = await asyncio.wait_for(ws.recv(), 30)
                if back != msg:
                    self.errors.append(f"tunnel {i}: sent {msg!r}, got {back!r}")
                self.exchanged[i] += 1
                await asyncio.sleep(self.interval)
        except websockets.ConnectionClosed as e:
            if not self.stopping:
                self.ended[i] = (time.monotonic(), e.rcvd.code if e.rcvd else None,
                                 e.rcvd.reason if e.rcvd else None)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - recorded for the test
            if not self.stopping:
                self.ended[i] = (time.monotonic(), repr(e), None)

    def _call(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- API -----------------------------------------------------------------------------------
    def open(self, timeout=120):
        self.thread.start()
        self._call(self._open_all(), timeout)
        return self

    def open_count(self):
        return sum(1 for i in range(self.count) if i not in self.ended)

    def total_exchanged(self):
        return sum(self.exchanged)

    def echo_all(self, timeout=60):
        """Every tunnel still open sends one message and gets it back (only when interval == 0)."""
        async def one(i):
            ws = self.conns[i]
            msg = f"check-{i}-{time.monotonic()}"
            await ws.send(msg)
            return await asyncio.wait_for(ws.recv(), timeout) == msg
        async def all_():
            idx = [i for i in range(self.count) if i not in self.ended]
            res = await asyncio.gather(*(one(i) for i in idx), return_exceptions=True)
            return {i: r for i, r in zip(idx, res)}
        return self._call(all_(), timeout + 5)

    def close(self, timeout=60):
        if not self.thread.is_alive():
            return
        self.stopping = True

        async def shut():
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in self.conns if c is not None),
                                 return_exceptions=True)
        try:
            self._call(shut(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class RecordingWsBackend:
    """A WebSocket backend in this process (python websockets, in its own event loop thread) that
    records the close code and reason it received on every connection: what limpet sent toward
    the backend. websockets rejects an unmasked client frame (1002), so a recorded 1012 also
    shows that limpet masked the Close frame it injected."""

    def __init__(self, name):
        self.name = name
        self.closes = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(15)
        self.port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    async def _serve(self):
        return await websockets.serve(self._handler, "127.0.0.1", 0, ping_interval=None,
                                      max_size=16 * 1024 * 1024, compression=None)

    async def _handler(self, ws, *_):
        if ws.path.startswith("/hello"):
            await ws.send("hello from " + self.name)
        try:
            async for message in ws:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        self.closes.append((ws.close_code, ws.close_reason))

    def stop(self):
        async def shut():
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)
        try:
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# ---------------------------------------------------------------------------------------------
# headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
                  "--no-default-browser-check", "--proxy-server=direct://", "--proxy-bypass-list=*"]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is required for the status page tests and is not installed: "
                "apt-get install -y chromium (scripts/install-deps.sh should list it)")


def chromium_dump_dom(url, budget_ms=5000, timeout=90):
    """The DOM of `url` after `budget_ms` of virtual time (the page's own timers have run)."""
    with tempfile.TemporaryDirectory(prefix="limpet-chromium-") as profile:
        r = subprocess.run([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"chromium --dump-dom exited {r.returncode}:\n{r.stderr[-3000:]}"
    assert "<html" in r.stdout.lower(), f"no DOM from chromium:\n{r.stdout[:2000]}\n{r.stderr[-3000:]}"
    return r.stdout


class Chromium:
    """Headless Chromium with a DevTools endpoint: open a page, evaluate JavaScript in it."""

    def __init__(self, url, timeout=60):
        self.profile = tempfile.mkdtemp(prefix="limpet-chromium-")
        self.log = open(Path(self.profile) / "chromium.log", "wb")
        self.conn = None
        self.loop = None
        self.next_id = 0
        self.proc = subprocess.Popen([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                                      url],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        port_file = Path(self.profile) / "DevToolsActivePort"
        try:
            wait_until(lambda: (port_file.exists() and port_file.read_text().strip()) or self.proc.poll() is not None,
                       timeout, "chromium's DevTools port", interval=0.1)
            assert self.proc.poll() is None, f"chromium exited {self.proc.returncode}:\n{self.log_text()}"
            self.devtools_port = int(port_file.read_text().split()[0])
            self.ws_url = wait_until(lambda: self._page_ws(url), timeout, "chromium's page target", interval=0.1)
            self.loop = asyncio.new_event_loop()

            async def connect():  # created inside the loop that will use it
                return await websockets.connect(self.ws_url, max_size=64 * 1024 * 1024, ping_interval=None,
                                                open_timeout=30, close_timeout=5)
            self.conn = self.loop.run_until_complete(connect())
        except BaseException:
            self.close()
            raise

    def log_text(self):
        try:
            return (Path(self.profile) / "chromium.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _page_ws(self, url):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.devtools_port, timeout=5)
            conn.request("GET", "/json/list")
            targets = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            return None
        for t in targets:
            if t.get("type") == "page" and t.get("url", "").startswith(url.rstrip("/")):
                return t["webSocketDebuggerUrl"]
        return None

    async def _cmd(self, method, params):
        self.next_id += 1
        my_id = self.next_id
        await self.conn.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.conn.recv())
            if msg.get("id") == my_id:
                return msg

    def evaluate(self, expression, timeout=20):
        msg = self.loop.run_until_complete(asyncio.wait_for(
            self._cmd("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}), timeout))
        assert "error" not in msg, msg
        result = msg["result"]
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def close(self):
        try:
            if self.conn is not None:
                self.loop.run_until_complete(asyncio.wait_for(self.conn.close(), 10))
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        if self.loop is not None:
            self.loop.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def parse_rows(dom):
    """{backend name: {"state": ..., "cells": [...], "rate": ...}} from the status page's DOM."""
    rows = {}
    for m in re.finditer(r'<tr\b([^>]*)>(.*?)</tr>', dom, re.S):
        attrs, inner = m.group(1), m.group(2)
        name = re.search(r'data-backend="([^"]*)"', attrs)
        if not name:
            continue
        cells = [re.sub(r"<[^>]*>", "", c).strip()
                 for c in re.findall(r"<td\b[^>]*>(.*?)</td>", inner, re.S)]
        state = re.search(r'<td class="state">(.*?)</td>', inner, re.S)
        rate = re.search(r'<td class="rate">(.*?)</td>', inner, re.S)
        cls = re.search(r'class="([^"]*)"', attrs)
        rows[name.group(1)] = {"state": state.group(1).strip() if state else None,
                               "rate": rate.group(1).strip() if rate else None,
                               "class": cls.group(1) if cls else "", "cells": cells}
    return rows



# ---------------------------------------------------------------------------------------------
# binary upgrade and restarts (test_upgrade.py, test_signals.py)

def become_subreaper():
    """Orphans of our children become ours: the new process of a binary upgrade (a child of the
    old limpet) can then be waited for, and its exit status read, once the old one exits."""
    import ctypes
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def wait_pid_exit(pid, timeout):
    """Exit status of `pid` (our child or adopted orphan) within `timeout` s."""
    def reaped():
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done == pid else None
    (status,) = wait_until(reaped, timeout, f"pid {pid} to exit", interval=0.02)
    return os.waitstatus_to_exitcode(status)


def pid_in(path):
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def serves_all_ports(pid, ports):
    """Every listening socket of every port is held by `pid` (and only by it)."""
    mine = socket_inodes_of(pid)
    return all(listening_inodes(p) and listening_inodes(p) <= mine for p in ports)


def handshake(port, path="/socket.io/?EIO=4&transport=polling"):
    """A new Engine.IO polling session through limpet: (sid, node that issued it)."""
    status, body, _ = get(port, path)
    assert status == 200, (status, body[:300])
    sid = json.loads(body[1:])["sid"]
    return sid, sid.split("-")[0]


def session_node(port, sid):
    """The node a polling request of `sid` reached."""
    return backend_of(port, f"/socket.io/?EIO=4&transport=polling&sid={sid}")


class SessionTraffic:
    """Polling sessions in a loop: each thread sends the next request of a known session and
    checks it reached the node that issued the sid; every `handshake_every`-th turn it opens a
    new session first (so sessions learned by whichever process answers are checked too).
    Everything that goes wrong is recorded."""

    def __init__(self, port, sessions, threads=2, handshake_every=5):
        self.port, self.sessions = port, dict(sessions)
        self.handshake_every = handshake_every
        self.checked = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, t):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            try:
                if n % self.handshake_every == 0:
                    sid, node = handshake(self.port)
                    with self.lock:
                        self.sessions[sid] = node
                with self.lock:
                    items = list(self.sessions.items())
                sid, node = items[(n * 7 + t) % len(items)]
                got = session_node(self.port, sid)
                with self.lock:
                    self.checked += 1
                    if got != node:
                        self.failures.append(f"session {sid} of {node} reached {got} at {time.time():.3f}")
            except Exception as e:  # noqa: BLE001 - recorded for the test
                with self.lock:
                    self.failures.append(f"polling: {e!r} at {time.time():.3f}")

    def stop(self, timeout=20):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "session threads did not stop"
