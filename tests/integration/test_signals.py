"""Signals as nginx users expect them (SIGQUIT / -s quit graceful, SIGTERM / -s stop fast), the
pid file gone after every kind of exit and left alone when stale, a second instance refused on a
live address, sd_notify (READY, RELOADING, MAINPID after an upgrade) on a real notify socket, and
the installed systemd unit checked by systemd-analyze."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import websockets  # noqa: F401  (WsFleet needs it)

from conftest import InFlight, connect_refused, free_port, limpet_bin, wait_until
from ops_util import (WsFleet, become_subreaper, pid_in, serves_all_ports, start_ops_limpet,
                      wait_pid_exit)


def run_cli(*args, timeout=15):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def arrived(backend, path):
    return lambda: path in backend.paths()


def pool(cluster, tmp_path, server=None, **kw):
    b = cluster.backend("s1")
    w = cluster.backend("sw", kind="ws")
    pid_file = tmp_path / "limpet.pid"
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": [b], "read_timeout": "30s"},
                                              {"name": "ws", "backends": [w]}],
                          listeners=[{"upstream": "app"}, {"upstream": "ws"}],
                          server={"pid_file": str(pid_file), "close_spread": "300ms", **(server or {})}, **kw)
    wait_until(lambda: pid_in(pid_file) == lp.proc.pid, 5, "the pid file")
    return lp, b, pid_file


def test_quit_is_graceful(cluster, tmp_path):
    lp, b, pid_file = pool(cluster, tmp_path, server={"shutdown_timeout": "8s"})
    fleet = WsFleet(lp.ports[1], 5).open()
    try:
        req = InFlight(lp, "/slow?ms=1500")
        wait_until(arrived(b, "/slow?ms=1500"), 5, "the slow request to reach the backend")
        r = run_cli("-s", "quit", "-c", str(lp.config_path))
        assert r.returncode == 0, r.stderr
        lp.signalled = True
        wait_until(lambda: connect_refused(lp.port), 3, "limpet to stop accepting")
        resp = req.join(10)
        assert req.error is None and resp.status == 200 and resp.body == b"slow 1500\n", (req.error, resp)
        wait_until(lambda: len(fleet.ended) == 5, 5, "the tunnels to close")
        assert {e[1] for e in fleet.ended.values()} == {1001}
        assert lp.wait_exit(10) == 0
    finally:
        fleet.close()
    assert not pid_file.exists(), "graceful stop left the pid file"
    lp.check_sanitizers()


def test_stop_is_fast(cluster, tmp_path):
    lp, b, pid_file = pool(cluster, tmp_path, server={"shutdown_timeout": "20s", "close_spread": "10s"})
    fleet = WsFleet(lp.ports[1], 5).open()
    try:
        req = InFlight(lp, "/hang")
        wait_until(arrived(b, "/hang"), 5, "the hanging request to reach the backend")
        t0 = time.monotonic()
        r = run_cli("-s", "stop", "-c", str(lp.config_path))
        assert r.returncode == 0, r.stderr
        lp.signalled = True
        assert lp.wait_exit(5) == 0
        # Neither the request in flight (20 s allowed) nor the 10 s close spread held it up.
        assert time.monotonic() - t0 < 3, "a fast stop waited"
        wait_until(lambda: len(fleet.ended) == 5, 5, "the tunnels to end")
        assert {e[1] for e in fleet.ended.values()} == {1001}, fleet.ended
        req.join(5)
    finally:
        fleet.close()
    assert not pid_file.exists(), "fast stop left the pid file"
    lp.check_sanitizers()


@pytest.mark.parametrize("how", ["second-signal", "stop-deadline"])
def test_pid_file_removed_when_exiting_at_once(cluster, tmp_path, how):
    lp, b, pid_file = pool(cluster, tmp_path, server={"shutdown_timeout": "1s" if how == "stop-deadline" else "20s"})
    req = InFlight(lp, "/hang")
    wait_until(arrived(b, "/hang"), 5, "the hanging request to reach the backend")
    lp.signal(signal.SIGQUIT)
    wait_until(lambda: connect_refused(lp.port), 3, "limpet to stop accepting")
    if how == "second-signal":
        lp.signal(signal.SIGQUIT)
    assert lp.wait_exit(5) == 0
    assert not pid_file.exists(), f"exit on {how} left the pid file"
    req.join(5)


def test_stale_pid_file_is_reported_and_left_alone(cluster, tmp_path):
    lp, b, pid_file = pool(cluster, tmp_path)
    lp.kill()  # SIGKILL: the one exit that cannot clean up
    lp.exit_checked = True
    assert pid_in(pid_file) == lp.proc.pid
    for sig in ("reload", "stop", "quit", "upgrade"):
        r = run_cli("-s", sig, "-c", str(lp.config_path))
        assert r.returncode == 1
        assert "not running" in r.stderr and str(lp.proc.pid) in r.stderr, r.stderr
    assert pid_in(pid_file) == lp.proc.pid, "limpet -s touched a pid file it does not own"
    pid_file.write_text(f"{os.getpid()}\n")  # a reused number: some other program
    r = run_cli("-s", "stop", "-c", str(lp.config_path))
    assert r.returncode == 1 and "not limpet" in r.stderr, r.stderr
    assert pid_in(pid_file) == os.getpid()


def second_instance(lp, tmp_path, shared):
    config = tmp_path / "second.toml"
    text = lp.config_path.read_text().replace(str(tmp_path / "limpet.pid"), str(tmp_path / "second.pid"))
    text = re.sub(r'(\[admin\]\naddress = )"[^"]*"', r'\g<1>"127.0.0.1:%d"' % free_port(), text)
    if shared:
        text = text.replace("[server]\n", "[server]\nshared_listeners = true\n", 1)
    config.write_text(text)
    log = open(tmp_path / "second.stderr", "wb")
    return subprocess.Popen([str(limpet_bin()), "-c", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log), tmp_path / "second.stderr"


def test_second_instance_on_a_live_address_is_refused(cluster, tmp_path):
    lp, b, pid_file = pool(cluster, tmp_path)
    proc, log = second_instance(lp, tmp_path, shared=False)
    assert proc.wait(10) == 1
    text = log.read_text()
    assert f"127.0.0.1:{lp.port} is already in use by pid {lp.proc.pid} (limpet)" in text, text
    assert "shared_listeners" in text
    assert serves_all_ports(lp.proc.pid, lp.ports), "the refused instance took a socket"
    assert pid_in(pid_file) == lp.proc.pid
    # Asked for explicitly, it shares the address (SO_REUSEPORT).
    proc, log = second_instance(lp, tmp_path, shared=True)
    try:
        wait_until(lambda: proc.poll() is not None or "limpet started" in log.read_text(), 10,
                   "the second instance to start")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(10) == 0


class NotifySocket:
    """A real sd_notify endpoint: what systemd would receive."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []

    def poll(self):
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except socket.timeout:
            pass
        return self.messages

    def wait_for(self, pred, what, timeout=10):
        return wait_until(lambda: [m for m in self.poll() if pred(m)], timeout, what)


def test_sd_notify_ready_reload_and_upgrade(cluster, tmp_path):
    become_subreaper()
    notify = NotifySocket(tmp_path)
    lp, b, pid_file = pool(cluster, tmp_path, env={"NOTIFY_SOCKET": notify.path})
    notify.wait_for(lambda m: m.startswith("READY=1"), "READY=1")
    lp.reload()
    reloading = notify.wait_for(lambda m: "RELOADING=1" in m, "RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading[0]
    notify.wait_for(lambda m: m.startswith("READY=1") and "reloaded, generation 2" in m, "READY=1 after the reload")
    r = run_cli("-s", "upgrade", "-c", str(lp.config_path))
    assert r.returncode == 0, r.stderr
    moved = notify.wait_for(lambda m: m.startswith("MAINPID="), "MAINPID= of the new process")
    new_pid = int(moved[0].split("\n")[0].split("=")[1])
    assert new_pid != lp.proc.pid
    wait_until(lambda: pid_in(pid_file) == new_pid, 5, "the pid file to name the new process")
    assert lp.wait_exit(10) == 0
    assert not any("STOPPING=1" in m for m in notify.poll()), "the old process told systemd it stops"
    os.kill(new_pid, signal.SIGQUIT)
    assert wait_pid_exit(new_pid, 10) == 0
    notify.wait_for(lambda m: "STOPPING=1" in m, "STOPPING=1 from the new process")


def installed_unit(tmp_path):
    unit = limpet_bin().parent / "conf" / "limpet.service"
    assert unit.is_file(), f"{unit} not built"
    text = re.sub(r"/\S*/sbin/limpet", str(limpet_bin()), unit.read_text())  # where the binary is
    local = tmp_path / "limpet.service"
    local.write_text(text)
    return local


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies_and_is_sandboxed(tmp_path):
    unit = installed_unit(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for limpet\.service: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 4.0, r.stdout
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=" + str(limpet_bin()) + " -t -c" in text
