"""Binary upgrade (limpet -s upgrade, SIGUSR2): the new process takes the listening sockets
over SCM_RIGHTS and the learned sessions, the old one stops accepting, closes its tunnels with
1001 over the drain window and exits. Under load nothing is refused, no request fails, every
polling session stays on its node; a plain stop + start, the negative control, loses both. A
new process that cannot start leaves the old one serving."""

import collections
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import connect_refused, limpet_bin, wait_until
from h2_util import H2
from ops_util import (HttpLoad, SessionTraffic, WsFleet, become_subreaper, get, handshake, pid_in,
                      serves_all_ports, session_node, start_ops_limpet, wait_pid_exit)

SPREAD_S = 2
SHUTDOWN_S = 5
SERVER = {"workers": 2, "close_spread": f"{SPREAD_S}s", "shutdown_timeout": f"{SHUTDOWN_S}s",
          "access_log": "off"}


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()  # the upgraded process is the old one's child: we wait for it


def run_cli(*args, timeout=15):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def sessions_on_every_node(port, nodes, count):
    sessions = {}
    while len(sessions) < count:
        sid, node = handshake(port)
        sessions[sid] = node
    assert set(sessions.values()) == set(nodes), sessions
    return sessions


def start_pool(cluster, tmp_path, server=None):
    nodes = [cluster.backend(f"n{i}") for i in (1, 2, 3)]
    ws = cluster.backend("w1", kind="ws")
    pid_file = tmp_path / "limpet.pid"
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": nodes},
                                              {"name": "ws", "backends": [ws]}],
                          listeners=[{"upstream": "app"}, {"upstream": "ws"}],
                          server={**SERVER, "pid_file": str(pid_file), **(server or {})})
    wait_until(lambda: pid_in(pid_file) == lp.proc.pid, 5, "the pid file to name limpet")
    return lp, [n.name for n in nodes], pid_file


class Upgraded:
    """The process an upgrade started (our adopted grandchild): stopped and reaped at the end."""

    def __init__(self, pid):
        self.pid = pid
        self.exit_code = None

    def stop(self, sig=signal.SIGQUIT, timeout=SHUTDOWN_S + 3):
        if self.exit_code is None:
            os.kill(self.pid, sig)
            self.exit_code = wait_pid_exit(self.pid, timeout)
        return self.exit_code

    def kill(self):
        if self.exit_code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                self.exit_code = wait_pid_exit(self.pid, 10)
            except ProcessLookupError:
                pass


def upgrade(lp, pid_file):
    r = run_cli("-s", "upgrade", "-c", str(lp.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    new_pid = wait_until(lambda: (pid_in(pid_file) or lp.proc.pid) != lp.proc.pid and pid_in(pid_file), 15,
                         "the new process to write the pid file")
    # The old process drains for at least SPREAD_S after the new one writes the pid file.
    assert pid_in(pid_file.with_name(pid_file.name + ".oldbin")) == lp.proc.pid, \
        "the old pid is not in limpet.pid.oldbin while it drains"
    upgraded = Upgraded(new_pid)
    # The same sockets (inodes) as the old process's: passed, not bound anew.
    wait_until(lambda: serves_all_ports(new_pid, lp.ports + [lp.admin_port]), 15,
               "the new process to hold every listening socket")
    return upgraded


def test_upgrade_under_load_refuses_nothing_and_keeps_every_session(cluster, tmp_path, record_property):
    lp, nodes, pid_file = start_pool(cluster, tmp_path)
    sessions = sessions_on_every_node(lp.port, nodes, 30)
    fleet = WsFleet(lp.ports[1], 1000, open_concurrency=100).open()
    upgraded = None
    try:
        assert all(fleet.echo_all(timeout=30).values())
        load = HttpLoad(lp.port, keepalive=2, fresh=2).start()
        traffic = SessionTraffic(lp.port, sessions).start()
        wait_until(lambda: load.ok > 50 and traffic.checked > 20, 15, "traffic before the upgrade")

        upgraded = upgrade(lp, pid_file)
        # Right after the hand-over every tunnel is still served by the old process (or already
        # closed with 1001, its slot in the spread having come).
        echoed = fleet.echo_all(timeout=30)
        rc = lp.wait_exit(SPREAD_S + SHUTDOWN_S + 2)
        assert rc == 0, lp.stderr()[-4000:]
        wait_until(lambda: len(fleet.ended) == 1000, 10, "every tunnel of the old process to end")
        checked_before_stop = traffic.checked
        wait_until(lambda: traffic.checked > checked_before_stop + 20, 15, "traffic through the new process")
        load.stop()
        traffic.stop()

        refused = [f for f in load.failures if "Refused" in f]
        record_property("http_ok", load.ok)
        record_property("http_failed", len(load.failures))
        record_property("refused", len(refused))
        record_property("session_requests", traffic.checked)
        record_property("sessions", len(traffic.sessions))
        assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} failed: " \
            f"{load.failures[:5]}"
        assert traffic.failures == [], traffic.failures[:5]
        codes = collections.Counter(e[1] for e in fleet.ended.values())
        assert codes == {1001: 1000}, codes
        assert all(ok is True or fleet.ended.get(i, (0, None))[1] == 1001 for i, ok in echoed.items()), \
            [r for r in echoed.values() if r is not True][:3]
        # Every session, old and learned during the upgrade, on its node through the new process.
        lost = {sid: node for sid, node in traffic.sessions.items() if session_node(lp.port, sid) != node}
        assert lost == {}, f"{len(lost)} of {len(traffic.sessions)} sessions moved: {list(lost.items())[:5]}"
        assert not (tmp_path / "limpet.pid.oldbin").exists(), "the old process left limpet.pid.oldbin"

        # The new process serves WebSockets and the admin listener; its stop removes the pid file.
        second = WsFleet(lp.ports[1], 20).open()
        try:
            assert all(second.echo_all(timeout=10).values())
        finally:
            second.close()
        assert upgraded.stop() == 0, lp.stderr()[-4000:]
        assert not pid_file.exists(), "the new process left its pid file"
        lp.check_sanitizers()
    finally:
        fleet.close()
        if upgraded:
            upgraded.kill()


def test_stop_and_start_loses_connections_and_sessions(cluster, tmp_path, record_property):
    """The negative control: the same measurements across a restart find the losses."""
    lp, nodes, pid_file = start_pool(cluster, tmp_path)
    sessions = sessions_on_every_node(lp.port, nodes, 30)
    load = HttpLoad(lp.port, keepalive=2, fresh=2).start()
    restarted = None
    try:
        wait_until(lambda: load.ok > 50, 15, "traffic before the restart")
        r = run_cli("-s", "quit", "-c", str(lp.config_path))
        assert r.returncode == 0, r.stdout + r.stderr
        lp.signalled = True
        assert lp.wait_exit(SHUTDOWN_S + 3) == 0
        wait_until(lambda: any("Refused" in f for f in load.failures), 10,
                   "a refused connection while no limpet runs")
        with open(lp.log_path, "ab") as log:
            restarted = subprocess.Popen([str(limpet_bin()), "-c", str(lp.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(lambda: serves_all_ports(restarted.pid, lp.ports), 15, "the restarted limpet to listen")
        ok_before = load.ok
        wait_until(lambda: load.ok > ok_before + 20, 15, "traffic through the restarted limpet")
        load.stop()
        by_node = sorted(sessions.items(), key=lambda kv: kv[1])  # one node's sessions in a row
        lost = [sid for sid, node in by_node if session_node(lp.port, sid) != node]
        refused = [f for f in load.failures if "Refused" in f]
        record_property("refused", len(refused))
        record_property("sessions_lost", len(lost))
        assert refused, "the restart refused no connection: the measurement cannot see losses"
        assert lost, "every session kept its node across a restart: the measurement cannot see losses"
    finally:
        load.stop_flag.set()
        if restarted is not None:
            restarted.send_signal(signal.SIGQUIT)
            assert restarted.wait(SHUTDOWN_S + 3) == 0
    assert not pid_file.exists()


def test_failed_upgrade_keeps_the_old_process_serving(cluster, tmp_path):
    """The new configuration adds a listener on an address another program holds: the new
    process refuses to start, says why, and the old one keeps serving (and reloading)."""
    lp, nodes, pid_file = start_pool(cluster, tmp_path)
    sid, node = handshake(lp.port)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    try:
        taken = squatter.getsockname()[1]
        lp.write_config(listeners=lp.listeners + [{"upstream": "app", "port": taken}])
        r = run_cli("-s", "upgrade", "-c", str(lp.config_path))
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: "upgrade failed, this process" in lp.stderr(), 15,
                   "the old process to report the failed upgrade")
        assert f"127.0.0.1:{taken} is already in use" in lp.stderr(), lp.stderr()[-3000:]
    finally:
        squatter.close()
    wait_until(lambda: pid_in(pid_file) == lp.proc.pid, 5, "the pid file to name the old process again")
    assert not (tmp_path / "limpet.pid.oldbin").exists()
    assert serves_all_ports(lp.proc.pid, lp.ports[:2])
    assert session_node(lp.port, sid) == node
    assert get(lp.port)[0] == 200
    lp.reload()  # the upgrade is over: reloads work again (and open the new listener)
    assert get(lp.ports[2])[0] == 200


def test_upgrade_with_a_backend_gone_from_the_config(cluster, tmp_path):
    """The new configuration may differ: sessions of a backend it no longer names are dropped
    (placed anew), the others keep their node."""
    lp, nodes, pid_file = start_pool(cluster, tmp_path)
    sessions = sessions_on_every_node(lp.port, nodes, 9)
    upstreams = [dict(u) for u in lp.upstreams]
    upstreams[0]["backends"] = [b for b in upstreams[0]["backends"] if b.name != "n3"]
    lp.write_config(upstreams=upstreams)
    upgraded = upgrade(lp, pid_file)
    try:
        assert lp.wait_exit(SPREAD_S + SHUTDOWN_S + 2) == 0
        for sid, node in sessions.items():
            got = session_node(lp.port, sid)
            assert got == node if node != "n3" else got in ("n1", "n2"), (sid, node, got)
        gone = sum(1 for node in sessions.values() if node == "n3")
        assert f"{gone} for backends not configured any more" in lp.stderr(), lp.stderr()[-3000:]
        assert upgraded.stop() == 0
    finally:
        upgraded.kill()


def test_upgrade_sends_goaway_to_http2_clients_and_finishes_their_streams(cluster, tmp_path):
    """An HTTP/2 connection to the old process gets GOAWAY (NO_ERROR) at the hand-over, so its
    client's next connection goes to the new process; the stream in flight still gets its answer."""
    node = cluster.backend("h2n1")
    pid_file = tmp_path / "limpet.pid"
    lp = start_ops_limpet(cluster, [node], listener={"http2": True},
                          server={**SERVER, "pid_file": str(pid_file)})
    wait_until(lambda: pid_in(pid_file) == lp.proc.pid, 5, "the pid file to name limpet")
    client = H2(None, lp, tls=False, listener=0)
    client.strip_goaway = True
    try:
        slow = client.request("/slow?ms=1500")
        wait_until(lambda: any(p.startswith("/slow") for p in node.paths()), 10, "the request to reach the node")
        upgraded = upgrade(lp, pid_file)
        try:
            client.wait(lambda: client.goaway_codes, 10, "GOAWAY from the old process")
            assert client.goaway_codes == [0]
            assert client.response(slow)["headers"][":status"] == "200"
            fresh = H2(None, lp, tls=False, listener=0)
            try:
                assert fresh.response(fresh.request("/echo"))["headers"][":status"] == "200"
            finally:
                fresh.close()
            assert lp.wait_exit(SPREAD_S + SHUTDOWN_S + 2) == 0
            assert upgraded.stop() == 0
        finally:
            upgraded.kill()
    finally:
        client.close()
