"""Operations (issue 4): reload on SIGHUP and `limpet -s`, listeners and backends changed by a
reload, drain with WebSocket Close frames (1012 on drain, 1001 on stop), log reopen, the admin
API (token), /metrics parsed by prometheus_client, 100 reloads under load with resources flat, and
the time from SIGHUP to the new config serving with 1000 open tunnels.

Counts, not timings, decide pass or fail; the few time bounds are deadlines with wide margins.
"""

import collections
import json
import os
import re
import signal
import statistics
import subprocess
import time
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import InFlight, connect_refused, limpet_bin, listening_inodes, wait_until
from ops_util import (TOKEN, HttpLoad, RecordingWsBackend, WsFleet, backend_of, free_port, get,
                      proc_resources, start_ops_limpet)

MB = 1024 * 1024


def on_port(port):
    return types.SimpleNamespace(port=port)


def arrived(backend, path):
    return lambda: path in backend.paths()


def spread_of(names):
    return collections.Counter(names)


def new_stderr(lp, offset):
    return lp.stderr()[offset:]


# ---------------------------------------------------------------------------------------------
# reload: invalid files

def bad_files(good):
    """(id, lines, line of the culprit) for three kinds of mistakes in an otherwise good file."""
    lines = good.splitlines()
    out = []
    # 1. TOML syntax: a value missing after "=".
    t = list(lines)
    t.insert(1, "workers = ")
    out.append(("toml-syntax", t, 2))
    # 2. A bad duration: right syntax, wrong value.
    t = list(lines)
    t.insert(1, 'drain_timeout = "soon"')
    out.append(("bad-duration", t, 2))
    # 3. A listener naming an upstream that does not exist.
    t = list(lines)
    i = next(n for n, line in enumerate(t) if line.startswith("upstream = "))
    t[i] = 'upstream = "nope"'
    out.append(("missing-upstream", t, i + 1))
    return out


def test_reload_with_invalid_file_keeps_serving_old_config(cluster):
    b1, b2 = cluster.backend("i1"), cluster.backend("i2")
    lp = start_ops_limpet(cluster, [b1])
    good = lp.config_path.read_text()
    load = HttpLoad(lp.port, keepalive=1, fresh=1).start()
    try:
        for n, (what, lines, line_no) in enumerate(bad_files(good), 1):
            # The bad file also adds b2: nothing of it may take effect.
            text = "\n".join(lines) + f'\n[[upstream.backend]]\nname = "i2"\naddress = "{b2.address}"\n'
            offset = len(lp.stderr())
            lp.write_config(text=text)
            lp.reload(expect="failed")
            log = new_stderr(lp, offset)
            m = re.search(re.escape(str(lp.config_path)) + r":(\d+):(\d+): ?(\S.*)", log)
            assert m, f"{what}: no {lp.config_path}:LINE:COL: in the log after the failed reload:\n{log}"
            assert int(m.group(1)) == line_no, f"{what}: error at line {m.group(1)}, expected {line_no}:\n{log}"
            assert int(m.group(2)) >= 1
            samples, _ = samples_of(lp.metrics_text())
            assert value(samples, "limpet_reloads_total", result="failed") == n
            assert value(samples, "limpet_reloads_total", result="ok") == 0
            for i in range(10):
                assert backend_of(lp.port, f"/echo?after-{what}-{i}") == "i1"
            lp.assert_alive()
        assert "i2" not in [b["name"] for b in lp.status()["backends"]]
        assert not b2.paths(), "a backend from a rejected file received requests"
        # The file fixed: the same change now applies.
        lp.write_config(upstreams=[{"name": "app", "backends": [b1, b2]}])
        lp.reload()
        seen = {backend_of(lp.port, f"/echo?fixed-{i}") for i in range(20)}
        assert seen == {"i1", "i2"}, seen
    finally:
        load.stop()
    assert load.ok > 0
    assert not load.failures, f"{len(load.failures)} requests failed around failed reloads: {load.failures[:5]}"


# ---------------------------------------------------------------------------------------------
# reload: listeners

def test_reload_adds_and_removes_listeners(cluster):
    b = cluster.backend("ls1")
    lp = start_ops_limpet(cluster, [b], listeners=[{"upstream": "app"}, {"upstream": "app"}])
    keep, gone = lp.ports
    keep_inodes = listening_inodes(keep)
    assert get(gone)[0] == 200
    slow = InFlight(on_port(gone), "/slow?ms=2500")
    wait_until(arrived(b, "/slow?ms=2500"), 5, "the slow request on the listener to be removed")
    load = HttpLoad(keep, keepalive=1, fresh=2).start()
    try:
        new = free_port()
        lp.write_config(listeners=[{"upstream": "app", "port": keep}, {"upstream": "app", "port": new}])
        lp.reload()
        status = wait_until(lambda: not connect_refused(new) and get(new)[0], 5, "the new listener to serve")
        assert status == 200
        wait_until(lambda: connect_refused(gone), 5, f"the removed listener's port {gone} to refuse")
        r = slow.join(10)
        assert slow.error is None, f"in-flight request on the removed listener: {slow.error!r}"
        assert r.status == 200 and r.body == b"slow 2500\n", r
        assert listening_inodes(keep) == keep_inodes, "the kept listener's sockets were replaced"
    finally:
        load.stop()
    assert load.ok > 0
    assert not load.failures, f"requests on the kept listener failed: {load.failures[:5]}"


# ---------------------------------------------------------------------------------------------
# reload: backends

def test_reload_adds_and_removes_backends(cluster):
    b1, b2, b3 = cluster.backend("rb1"), cluster.backend("rb2"), cluster.backend("rb3")
    lp = start_ops_limpet(cluster, [b1, b2])
    assert {backend_of(lp.port, f"/echo?a{i}") for i in range(12)} == {"rb1", "rb2"}

    lp.write_config(upstreams=[{"name": "app", "backends": [b1, b2, b3]}])
    lp.reload()
    assert {backend_of(lp.port, f"/echo?b{i}") for i in range(18)} == {"rb1", "rb2", "rb3"}

    # Requests in flight on rb1 when it is removed: they finish.
    slows = []
    for i in range(8):
        slows.append(InFlight(lp, f"/slow?ms=2000&i={i}"))
    wait_until(lambda: sum("/slow" in p for b in (b1, b2, b3) for p in b.paths()) == 8, 10,
               "the slow requests to reach the backends")
    on_rb1 = sum("/slow" in p for p in b1.paths())
    assert on_rb1 > 0, "no slow request landed on rb1 (round robin over 3 backends, 8 requests)"
    b1.request_log(clear=True)
    lp.write_config(upstreams=[{"name": "app", "backends": [b2, b3]}])
    lp.reload()
    names = [backend_of(lp.port, f"/echo?c{i}") for i in range(20)]
    assert set(names) == {"rb2", "rb3"}, spread_of(names)
    for s in slows:
        r = s.join(10)
        assert s.error is None and r.status == 200, (s.error, r)
    assert not [p for p in b1.paths() if "/echo" in p], "the removed backend received new requests"
    # rb1 drains: listed until drain_timeout for the sessions it still has.
    assert {b["name"]: b["state"] for b in lp.status()["backends"]} == \
        {"rb1": "draining", "rb2": "up", "rb3": "up"}


def test_removed_backend_keeps_its_known_sessions_until_drain_timeout(cluster):
    b1, b2 = cluster.backend("sk1"), cluster.backend("sk2")
    lp = start_ops_limpet(cluster, [b1, b2], server={"drain_timeout": "2s"})
    sessions = {}
    while len(sessions) < 2:  # one session on each backend
        code, body, _ = get(lp.port, "/socket.io/?EIO=4&transport=polling")
        assert code == 200, body
        sid = json.loads(body[1:])["sid"]
        sessions[sid.split("-")[0]] = sid
    lp.write_config(upstreams=[{"name": "app", "backends": [b1]}])
    lp.reload()
    removed_at = time.monotonic()
    # Known sessions of the removed backend still reach it; new sessions go elsewhere.
    for _ in range(5):
        assert backend_of(lp.port, f"/socket.io/?EIO=4&transport=polling&sid={sessions['sk2']}") == "sk2"
        assert backend_of(lp.port, f"/socket.io/?EIO=4&transport=polling&sid={sessions['sk1']}") == "sk1"
        code, body, _ = get(lp.port, "/socket.io/?EIO=4&transport=polling")
        assert json.loads(body[1:])["sid"].startswith("sk1-")
    assert time.monotonic() - removed_at < 2, "too slow to check within drain_timeout"
    # Once the drain ends the backend is gone and its session is placed anew.
    wait_until(lambda: [b["name"] for b in lp.status()["backends"]] == ["sk1"], 10, "sk2 to leave")
    assert backend_of(lp.port, f"/socket.io/?EIO=4&transport=polling&sid={sessions['sk2']}") == "sk1"


def key_map(lp, keys):
    return {k: backend_of(lp.port, f"/echo?room={k}") for k in keys}


def test_reload_moves_only_the_expected_share_of_hash_keys(cluster):
    hs = [cluster.backend(f"h{i}") for i in range(1, 6)]
    up = {"name": "app", "hash_keys": ["query:room"]}
    lp = start_ops_limpet(cluster, hs[:4], upstream=up)
    keys = [f"room-{i}" for i in range(400)]
    n = len(keys)
    m0 = key_map(lp, keys)
    assert set(m0.values()) == {"h1", "h2", "h3", "h4"}, spread_of(m0.values())
    assert key_map(lp, keys[:50]) == {k: m0[k] for k in keys[:50]}, "hashing is not stable"

    def moves(before, after):
        return [k for k in keys if before[k] != after[k]]

    report = {}
    # Add h5: about 1/5 of the keys move, all of them to h5.
    lp.write_config(upstreams=[{**up, "backends": hs}])
    lp.reload()
    m1 = key_map(lp, keys)
    moved = moves(m0, m1)
    stray = [k for k in moved if m1[k] != "h5"]
    report["add h5"] = (len(moved) / n, len(stray) / n)
    assert 0.12 <= len(moved) / n <= 0.28, f"adding 1 backend to 4 moved {len(moved)}/{n} keys"
    assert len(stray) <= 0.03 * n, f"{len(stray)} keys moved between backends that did not change"

    # Reweight h1 from 1 to 3 (share 1/5 -> 3/7): about 23% of keys move, to h1.
    lp.write_config(upstreams=[{**up, "backends": [{"name": "h1", "address": hs[0].address, "weight": 3},
                                                  *hs[1:]]}])
    lp.reload()
    m2 = key_map(lp, keys)
    moved = moves(m1, m2)
    stray = [k for k in moved if m2[k] != "h1"]
    report["h1 weight 3"] = (len(moved) / n, len(stray) / n)
    assert 0.14 <= len(moved) / n <= 0.33, f"reweighting h1 1->3 moved {len(moved)}/{n} keys"
    assert len(stray) <= 0.04 * n, f"{len(stray)} keys moved to a backend other than the reweighted h1"
    share = sum(1 for k in keys if m2[k] == "h1") / n
    assert 0.33 <= share <= 0.53, f"h1 (weight 3 of 7) holds {share:.2f} of the keys"

    # Remove h2: its keys move, the others stay.
    lp.write_config(upstreams=[{**up, "backends": [{"name": "h1", "address": hs[0].address, "weight": 3},
                                                  *hs[2:]]}])
    lp.reload()
    m3 = key_map(lp, keys)
    moved = moves(m2, m3)
    stray = [k for k in moved if m2[k] != "h2"]
    report["remove h2"] = (len(moved) / n, len(stray) / n)
    assert all(m3[k] != "h2" for k in keys)
    assert len(stray) <= 0.03 * n, f"removing h2 moved {len(stray)} keys that were not on h2"
    print("\nhash keys moved (share moved, share moved elsewhere than the changed backend):",
          {k: (round(a, 3), round(b, 3)) for k, (a, b) in report.items()})


# ---------------------------------------------------------------------------------------------
# drain: WebSocket Close frames seen by a real client

def test_removed_backend_tunnels_close_with_1012_spread(cluster):
    """Tunnels busy with 48 KB messages both ways (frames that cross reads) when the drain comes:
    the client gets Close 1012 at a frame boundary (else its parser fails: 1002/1006), the backend
    gets a masked Close 1012 (websockets refuses unmasked client frames with 1002)."""
    w1 = RecordingWsBackend("dw1")
    try:
        w2 = cluster.backend("dw2", kind="ws")
        lp = start_ops_limpet(cluster, [w1, w2], server={"drain_timeout": "1s", "close_spread": "500ms"})
        fleet = WsFleet(lp.port, 24, path="/hello", interval=0.05, msg_size=48 * 1024).open()
        try:
            on_w1 = [i for i, f in enumerate(fleet.first) if f == "hello from dw1"]
            on_w2 = [i for i, f in enumerate(fleet.first) if f == "hello from dw2"]
            assert len(on_w1) >= 8 and len(on_w2) >= 4, collections.Counter(fleet.first)
            wait_until(lambda: all(fleet.exchanged), 20, "every tunnel to exchange messages")

            lp.write_config(upstreams=[{"name": "app", "backends": [w2]}])
            t0 = time.monotonic()
            lp.reload()
            at_reload = list(fleet.exchanged)
            # New tunnels go to the remaining backend.
            extra = WsFleet(lp.port, 4, path="/hello").open()
            assert set(extra.first) == {"hello from dw2"}, extra.first
            extra.close()

            wait_until(lambda: all(i in fleet.ended for i in on_w1), 8,
                       "the tunnels to the removed backend to be closed")
            ended = {i: fleet.ended[i] for i in on_w1}
            assert {e[1:] for e in ended.values()} == {(1012, "service restart")}, ended
            # Until drain_timeout the tunnels to the removed backend kept working.
            idle = [i for i in on_w1 if fleet.exchanged[i] <= at_reload[i]]
            assert not idle, f"tunnels to the removed backend exchanged nothing after the reload: {idle}"
            times = sorted(e[0] - t0 for e in ended.values())
            assert times[0] >= 0.9, f"first 1012 {times[0]:.3f}s after SIGHUP, drain_timeout is 1s"
            assert times[-1] <= 1.0 + 1.0 + 0.5 + 2.0, f"last 1012 {times[-1]:.3f}s after SIGHUP"
            span = times[-1] - times[0]
            assert 0.1 <= span <= 0.5 + 0.6, \
                f"{len(times)} closes spread over {span:.3f}s with close_spread 500ms: {times}"
            assert not fleet.errors, fleet.errors[:5]
            # What the backend received: a (masked) Close 1012 on every drained tunnel.
            wait_until(lambda: len(w1.closes) >= len(on_w1), 5, "the removed backend to see the closes")
            assert collections.Counter(w1.closes) == {(1012, "service restart"): len(on_w1)}, w1.closes
            # The tunnels to the remaining backend are untouched and still busy.
            assert not [i for i in on_w2 if i in fleet.ended], {i: fleet.ended[i] for i in on_w2 if i in fleet.ended}
            now = list(fleet.exchanged)
            wait_until(lambda: all(fleet.exchanged[i] > now[i] for i in on_w2), 10,
                       "the remaining backend's tunnels to keep exchanging")
            print(f"\n{len(times)} closes 1012 at {times[0]:.3f}..{times[-1]:.3f}s after SIGHUP "
                  f"(drain_timeout 1s, close_spread 500ms)")
        finally:
            fleet.close()
    finally:
        # limpet first (its exit is checked by the teardown), then the in-process backend.
        for x in cluster.limpets:
            if x.alive():
                x.signal(signal.SIGTERM)
                try:
                    x.proc.wait(10)
                    x.stopped_at = time.monotonic()
                except subprocess.TimeoutExpired:
                    pass
        w1.stop()


def test_admin_drain_closes_tunnels_with_1012(cluster):
    w1, w2 = cluster.backend("aw1", kind="ws"), cluster.backend("aw2", kind="ws")
    lp = start_ops_limpet(cluster, [w1, w2], server={"drain_timeout": "1s", "close_spread": "300ms"})
    fleet = WsFleet(lp.port, 8, path="/hello").open()
    try:
        on_w1 = [i for i, f in enumerate(fleet.first) if f == "hello from aw1"]
        assert on_w1, collections.Counter(fleet.first)
        code, _, body = lp.post("aw1", "drain")
        assert code == 200, body
        assert lp.backend_states()["aw1"] == "draining"
        extra = WsFleet(lp.port, 4, path="/hello").open()
        assert set(extra.first) == {"hello from aw2"}, extra.first
        extra.close()
        wait_until(lambda: all(i in fleet.ended for i in on_w1), 8, "the drained backend's tunnels to close")
        assert {fleet.ended[i][1] for i in on_w1} == {1012}, {i: fleet.ended[i] for i in on_w1}
        assert len(fleet.ended) == len(on_w1), "tunnels to the other backend were closed too"
    finally:
        fleet.close()


def test_sigterm_closes_every_tunnel_with_1001(cluster):
    w = cluster.backend("tw1", kind="ws")
    lp = start_ops_limpet(cluster, [w], server={"close_spread": "500ms", "shutdown_timeout": "5s"})
    fleet = WsFleet(lp.port, 16).open()
    try:
        assert all(fleet.echo_all(timeout=10).values())
        t0 = time.monotonic()
        lp.signal(signal.SIGTERM)
        wait_until(lambda: len(fleet.ended) == 16, 5, "every tunnel to be closed on SIGTERM")
        codes = collections.Counter(e[1] for e in fleet.ended.values())
        assert codes == {1001: 16}, codes
        assert lp.wait_exit(6) == 0, lp.stderr()[-4000:]
        assert time.monotonic() - t0 < 5
        lp.check_sanitizers()
    finally:
        fleet.close()


# ---------------------------------------------------------------------------------------------
# limpet -s, pid file, log reopen

def run_cli(*args, timeout=15):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def wait_line(path, marker, timeout=5):
    def found():
        try:
            return [line for line in path.read_text().splitlines() if marker in line]
        except FileNotFoundError:
            return None
    return wait_until(found, timeout, f"a line with {marker!r} in {path}")


def test_cli_signals_through_the_pid_file(cluster, tmp_path):
    b1, b2 = cluster.backend("c1"), cluster.backend("c2")
    pid_file, access = tmp_path / "limpet.pid", tmp_path / "access.log"
    lp = start_ops_limpet(cluster, [b1], server={"pid_file": str(pid_file), "access_log": str(access)})
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() == str(lp.proc.pid), 5,
               "the pid file to name limpet")
    cfg = str(lp.config_path)

    # -s reload
    lp.write_config(upstreams=[{"name": "app", "backends": [b1, b2]}])

    def cli_reload():
        r = run_cli("-s", "reload", "-c", cfg)
        assert r.returncode == 0, r.stdout + r.stderr
    lp.reload(via=cli_reload)
    assert {backend_of(lp.port, f"/echo?r{i}") for i in range(10)} == {"c1", "c2"}

    # -s reopen: the access log was moved away; the next line lands in a new file at the path.
    assert get(lp.port, "/echo?before-reopen")[0] == 200
    wait_line(access, "before-reopen")
    access.rename(tmp_path / "access.log.1")
    r = run_cli("-s", "reopen", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(access.exists, 5, "limpet to reopen the access log at its path")
    assert get(lp.port, "/echo?after-reopen")[0] == 200
    wait_line(access, "after-reopen")
    assert "after-reopen" not in (tmp_path / "access.log.1").read_text()

    # -s stop: clean exit, pid file removed.
    r = run_cli("-s", "stop", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    lp.signalled = True
    assert lp.wait_exit(8) == 0, lp.stderr()[-4000:]
    assert not pid_file.exists(), "the pid file outlived limpet"
    lp.check_sanitizers()
    r = run_cli("-s", "reload", "-c", cfg)
    assert r.returncode != 0, "limpet -s reload succeeded with no limpet running"


def test_cli_signal_without_pid_file_fails(cluster):
    b = cluster.backend("c3")
    lp = start_ops_limpet(cluster, [b])
    r = run_cli("-s", "reload", "-c", str(lp.config_path))
    assert r.returncode != 0
    assert "pid_file" in r.stderr, r.stderr
    lp.assert_alive()


def test_json_access_log(cluster, tmp_path):
    b = cluster.backend("js1")
    access = tmp_path / "access.json"
    lp = start_ops_limpet(cluster, [b], server={"access_log": str(access), "access_log_format": "json"})
    assert get(lp.port, "/echo?json-line&q=%22quoted%22")[0] == 200
    entry = json.loads(wait_line(access, "json-line")[0])
    assert entry["method"] == "GET" and entry["target"] == "/echo?json-line&q=%22quoted%22", entry
    assert entry["status"] == 200 and entry["backend"] == "js1" and entry["reason"] == "placement", entry
    assert entry["client"] == "127.0.0.1" and entry["upstream"] == "app" and entry["bytes"] > 0, entry


def test_sigusr1_reopens_access_and_error_logs(cluster, tmp_path):
    b = cluster.backend("lg1")
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    lp = start_ops_limpet(cluster, [b], server={"access_log": str(access), "error_log": str(errors)})
    assert get(lp.port, "/echo?first-file")[0] == 200
    wait_line(access, "first-file")
    access.rename(tmp_path / "access.log.1")
    errors.rename(tmp_path / "error.log.1")
    lp.signal(signal.SIGUSR1)
    wait_until(lambda: access.exists() and errors.exists(), 5, "limpet to reopen both logs at their paths")
    assert get(lp.port, "/echo?second-file")[0] == 200
    line = wait_line(access, "second-file")[0]
    assert re.search(r'"GET /echo\?second-file HTTP/1\.1" 200 \d+ .*backend=lg1', line), line
    assert "second-file" not in (tmp_path / "access.log.1").read_text()
    assert "first-file" in (tmp_path / "access.log.1").read_text()
    # The error log too: a reload's lines land in the new file.
    lp.reload()
    wait_line(errors, "generation 2", timeout=5)
    assert "generation 2" not in (tmp_path / "error.log.1").read_text()


# ---------------------------------------------------------------------------------------------
# admin API

def test_admin_write_operations_need_the_token(cluster):
    b1, b2 = cluster.backend("ad1"), cluster.backend("ad2")
    lp = start_ops_limpet(cluster, [b1, b2])
    for action in ("drain", "enable", "disable"):
        path = f"/backends/ad1/{action}"
        code, _, body = lp.admin("POST", path)
        assert code == 401, f"POST {path} without a token: {code} {body}"
        for auth in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer wrong", f"Basic {TOKEN}",
                     f"bearer{TOKEN}", "Bearer "):
            code, _, body = lp.admin("POST", path, authorization=auth)
            assert code == 403, f"POST {path} with Authorization {auth!r}: {code} {body}"
    assert lp.backend_states() == {"ad1": "up", "ad2": "up"}, "a refused write changed a backend"

    code, _, body = lp.post("nosuch", "drain")
    assert code == 404, body
    code, _, body = lp.admin("GET", "/backends/ad1/drain", token=TOKEN)
    assert code in (404, 405), f"GET on a write operation: {code} {body}"

    def names(n, tag):
        return [backend_of(lp.port, f"/echo?{tag}{i}") for i in range(n)]

    code, _, body = lp.post("ad1", "drain")
    assert code == 200, body
    assert lp.backend_states() == {"ad1": "draining", "ad2": "up"}
    assert 'limpet_backend_draining{upstream="app",backend="ad1"} 1' in lp.metrics_text()
    assert set(names(12, "drained")) == {"ad2"}, "a draining backend got new requests"

    code, _, body = lp.post("ad1", "enable")
    assert code == 200, body
    assert lp.backend_states() == {"ad1": "up", "ad2": "up"}
    assert set(names(12, "enabled")) == {"ad1", "ad2"}

    code, _, body = lp.post("ad1", "disable")
    assert code == 200, body
    assert lp.backend_states()["ad1"] == "disabled"
    assert set(names(12, "disabled")) == {"ad2"}, "a disabled backend got requests"
    code, _, body = lp.post("ad1", "enable")
    assert code == 200 and lp.backend_states()["ad1"] == "up", body


@pytest.mark.parametrize("action,state", [("drain", "draining"), ("disable", "disabled")])
def test_admin_state_survives_a_reload(cluster, action, state):
    """Backends are matched by name across reloads: a reload that does not touch a backend must
    not undo what an operator did to it (put a drained backend back into rotation)."""
    b1, b2 = cluster.backend("as1"), cluster.backend("as2")
    lp = start_ops_limpet(cluster, [b1, b2])
    code, _, body = lp.post("as2", action)
    assert code == 200, body
    assert lp.backend_states() == {"as1": "up", "as2": state}
    lp.reload()  # the same file
    assert lp.backend_states() == {"as1": "up", "as2": state}, \
        f"a reload of an unchanged file undid '{action}' on as2"
    names = {backend_of(lp.port, f"/echo?after-reload-{i}") for i in range(12)}
    assert names == {"as1"}, f"{action}ed backend as2 got new requests after a reload"


def test_admin_without_a_configured_token_refuses_writes(cluster):
    b = cluster.backend("ad3")
    lp = start_ops_limpet(cluster, [b], token="")
    for auth in ("Bearer ", "Bearer x", f"Bearer {TOKEN}"):
        code, _, body = lp.admin("POST", "/backends/ad3/drain", authorization=auth)
        assert code == 403, f"{auth!r}: {code} {body}"
    assert lp.admin("POST", "/backends/ad3/drain")[0] == 401
    assert lp.backend_states() == {"ad3": "up"}


def samples_of(text):
    """{(sample name, frozenset(labels)): value} and {family name: type} via prometheus_client."""
    samples, types_ = {}, {}
    for fam in text_string_to_metric_families(text):
        types_[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, types_


def value(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k[0] for k in samples)[:80]}"
    return samples[key]


def check_histogram(samples, name):
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == name + "_bucket"))
    assert buckets, f"no {name}_bucket samples"
    assert buckets[-1][0] == float("inf"), f"{name}: no +Inf bucket"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name}: buckets not cumulative: {buckets}"
    assert counts[-1] == value(samples, name + "_count"), f"{name}: +Inf bucket != _count"
    assert value(samples, name + "_sum") >= 0
    return counts[-1]


def test_metrics_parse_with_prometheus_client(cluster):
    b1, b2, w = cluster.backend("m1"), cluster.backend("m2"), cluster.backend("mw", kind="ws")
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": [b1, b2]},
                                              {"name": "ws", "backends": [w]}],
                          listeners=[{"upstream": "app"}, {"upstream": "ws"}])
    ok, not_found = 36, 4
    for i in range(ok):
        assert get(lp.port, f"/echo?m{i}")[0] == 200
    for i in range(not_found):
        assert get(lp.port, "/status/404")[0] == 404
    fleet = WsFleet(lp.ports[1], 3).open()
    try:
        for _ in range(5):
            assert all(fleet.echo_all(timeout=10).values())
        code, headers, text = lp.admin("GET", "/metrics")
        assert code == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
        samples, types_ = samples_of(text)
        assert value(samples, "limpet_backend_tunnels", upstream="ws", backend="mw") == 3
    finally:
        fleet.close()
    wait_until(lambda: 'limpet_backend_tunnels{upstream="ws",backend="mw"} 0' in lp.metrics_text(), 5,
               "the tunnel gauge to fall back to 0")
    lp.write_config(text="[server]\nworkers = \n")
    lp.reload(expect="failed")
    lp.write_config()
    lp.reload()

    text = lp.metrics_text()
    samples, types_ = samples_of(text)
    # limpet's own families, and the Prometheus client libraries' standard process_* ones.
    assert types_ and all(name.startswith(("limpet_", "process_")) for name in types_), sorted(types_)
    for fam in ("process_cpu_seconds", "process_open_fds", "process_resident_memory_bytes"):
        assert fam in types_, (fam, sorted(types_))
    for fam in ("limpet_reloads", "limpet_responses", "limpet_backend_requests", "limpet_bytes",
                "limpet_websocket_messages", "limpet_tunnels_opened", "limpet_affinity_lookups"):
        assert types_.get(fam) == "counter", (fam, types_.get(fam))
    for fam in ("limpet_active_connections", "limpet_backend_up", "limpet_backend_tunnels",
                "limpet_affinity_entries", "limpet_config_generation"):
        assert types_.get(fam) == "gauge", (fam, types_.get(fam))
    for fam in ("limpet_request_duration_seconds", "limpet_upstream_connect_duration_seconds",
                "limpet_upstream_first_byte_seconds", "limpet_tunnel_duration_seconds"):
        assert types_.get(fam) == "histogram", (fam, types_.get(fam))

    # Requests per backend: what the backends themselves received.
    for b in (b1, b2):
        got = value(samples, "limpet_backend_requests_total", upstream="app", backend=b.name)
        assert got == len(b.request_log()), f"{b.name}: limpet counts {got}, backend saw {len(b.request_log())}"
    assert value(samples, "limpet_backend_requests_total", upstream="app", backend="m1") + \
        value(samples, "limpet_backend_requests_total", upstream="app", backend="m2") == ok + not_found
    assert value(samples, "limpet_responses_total", code="2xx") == ok
    assert value(samples, "limpet_responses_total", code="4xx") == not_found
    assert value(samples, "limpet_responses_total", code="5xx") == 0
    assert value(samples, "limpet_reloads_total", result="ok") == 1
    assert value(samples, "limpet_reloads_total", result="failed") == 1
    assert value(samples, "limpet_config_generation") == 2
    assert value(samples, "limpet_tunnels_opened_total") == 3
    assert value(samples, "limpet_websocket_messages_total", direction="to_backend") >= 15
    assert value(samples, "limpet_websocket_messages_total", direction="to_client") >= 15
    assert value(samples, "limpet_bytes_total", direction="in") > 0
    assert value(samples, "limpet_bytes_total", direction="out") > 0
    for name in ("m1", "m2"):
        assert value(samples, "limpet_backend_up", upstream="app", backend=name) == 1
        assert value(samples, "limpet_backend_in_flight", upstream="app", backend=name) == 0
    assert value(samples, "limpet_backend_tunnels", upstream="ws", backend="mw") == 0
    assert value(samples, "limpet_uptime_seconds") > 0
    n = check_histogram(samples, "limpet_request_duration_seconds")
    assert n >= ok + not_found, f"request histogram counts {n} requests, {ok + not_found} were made"
    assert check_histogram(samples, "limpet_upstream_connect_duration_seconds") >= 1
    # The JSON status agrees.
    st = lp.status()
    assert st["generation"] == 2 and st["reloads_ok"] == 1 and st["reloads_failed"] == 1
    assert {b["name"]: b["requests"] for b in st["backends"] if b["upstream"] == "app"} == \
        {b.name: len(b.request_log()) for b in (b1, b2)}


# ---------------------------------------------------------------------------------------------
# 100 reloads under load; SIGHUP -> serving with 1000 open tunnels

def reload_ws_count():
    return int(os.environ.get("LIMPET_RELOAD_WS", "1000"))


def write_json(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(data)}")
    return path


def asan_env():
    # ASan keeps freed memory in quarantine (256 MB by default) instead of reusing it, so RSS grows
    # with every allocation whether or not anything leaks; a small quarantine makes RSS growth
    # mean something. No effect on a build without ASan.
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=8"}


def test_hundred_reloads_under_load(cluster, tmp_path, record_property):
    h1, h2, h3 = cluster.backend("u1"), cluster.backend("u2"), cluster.backend("u3")
    w1, w2 = cluster.backend("uw1", kind="ws"), cluster.backend("uw2", kind="ws")
    n_ws = reload_ws_count()
    ups = lambda extra: [{"name": "app", "backends": [h1, h2] + extra},  # noqa: E731
                         {"name": "ws", "backends": [w1, w2]}]
    lp = start_ops_limpet(cluster, upstreams=ups([]), listeners=[{"upstream": "app"}, {"upstream": "ws"}],
                          server={"workers": 2, "access_log": "off", "drain_timeout": "1s"}, env=asan_env())
    t_start = time.monotonic()
    fleet = WsFleet(lp.ports[1], n_ws, interval=max(0.5, n_ws / 400)).open(timeout=180)
    t_open = time.monotonic() - t_start
    load = HttpLoad(lp.port, keepalive=2, fresh=2).start()
    reload_ms = []
    try:
        def one_reload(i):
            # Alternate: u3 joins, u3 leaves (drained), so every reload changes backends.
            lp.write_config(upstreams=ups([h3] if i % 2 == 0 else []))
            t0 = time.monotonic()
            lp.reload(timeout=15)
            reload_ms.append((time.monotonic() - t0) * 1000)

        for i in range(10):  # warm-up: pools, buffers, every code path once
            one_reload(i)
        wait_until(lambda: fleet.total_exchanged() >= n_ws, 60, "every tunnel to exchange messages")
        base = proc_resources(lp.proc.pid)
        for i in range(10, 60):
            one_reload(i)
        mid = proc_resources(lp.proc.pid)
        for i in range(60, 110):
            one_reload(i)
        after_last = list(fleet.exchanged)
        # Every tunnel keeps exchanging after the last reload.
        wait_until(lambda: all(a > b for a, b in zip(fleet.exchanged, after_last)) or fleet.ended, 60,
                   "every tunnel to exchange a message after the last reload")
        final = proc_resources(lp.proc.pid)
    finally:
        load.stop()
        dropped = dict(fleet.ended)
        ws_errors = list(fleet.errors)
        exchanged = fleet.total_exchanged()
        fleet.close()
    figures = {
        "reloads": 110, "websockets": n_ws, "websocket_open_s": round(t_open, 2),
        "http_requests_ok": load.ok, "http_requests_failed": len(load.failures),
        "ws_messages_echoed": exchanged, "tunnels_dropped": len(dropped),
        "reload_ms_median": round(statistics.median(reload_ms), 1),
        "reload_ms_max": round(max(reload_ms), 1),
        "threads": [base[0], mid[0], final[0]], "fds": [base[1], mid[1], final[1]],
        "rss_mb": [round(x[2] / MB, 1) for x in (base, mid, final)],
        "duration_s": round(time.monotonic() - t_start, 1),
    }
    write_json(tmp_path, "reload_under_load.json", figures)
    for k, v in figures.items():
        record_property(k, v)
    assert not load.failures, f"{len(load.failures)} of {load.ok + len(load.failures)} requests failed " \
                              f"during 100 reloads; first: {load.failures[:5]}"
    assert not dropped, f"{len(dropped)} of {n_ws} tunnels dropped during reloads: {list(dropped.items())[:5]}"
    assert not ws_errors, ws_errors[:5]
    assert load.ok > 200, f"only {load.ok} requests went through: the load loop did not run"
    assert final[0] == base[0], f"threads grew from {base[0]} to {final[0]}"
    assert final[1] <= base[1] + 16, f"fds grew from {base[1]} to {final[1]}"
    assert final[2] <= base[2] + 24 * MB, f"RSS grew from {base[2] // MB} MB to {final[2] // MB} MB"
    assert final[2] <= mid[2] + 12 * MB, f"RSS still growing: {mid[2] // MB} MB -> {final[2] // MB} MB"


def test_time_from_sighup_to_new_config_serving(cluster, tmp_path, record_property):
    """With N (default 1000) open tunnels: SIGHUP adds a listener; time until /status shows the
    new generation and until the new listener answers a request."""
    b = cluster.backend("t1")
    w = cluster.backend("tw", kind="ws")
    n = int(os.environ.get("LIMPET_LATENCY_TUNNELS", "1000"))
    base_listeners = [{"upstream": "app"}, {"upstream": "ws"}]
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": [b]}, {"name": "ws", "backends": [w]}],
                          listeners=base_listeners, server={"access_log": "off"})
    fleet = WsFleet(lp.ports[1], n).open(timeout=180)
    kept = [dict(x) for x in lp.listeners]
    to_status, to_serving = [], []
    try:
        for i in range(5):
            new = free_port()
            lp.write_config(listeners=kept + [{"upstream": "app", "port": new}])
            before = lp.status()["generation"]
            t0 = time.monotonic()
            lp.signal(signal.SIGHUP)
            wait_until(lambda: lp.status()["generation"] > before, 10, "the new generation", interval=0.001)
            to_status.append(time.monotonic() - t0)

            def serves():
                try:
                    return get(new, timeout=5)[0] == 200
                except OSError:
                    return False
            wait_until(serves, 10, "the new listener to answer", interval=0.001)
            to_serving.append(time.monotonic() - t0)
            lp.write_config(listeners=kept)
            lp.reload()
        assert not fleet.ended, f"tunnels closed by reloads: {list(fleet.ended.items())[:5]}"
        echoed = fleet.echo_all(timeout=60)
        assert len(echoed) == n and all(v is True for v in echoed.values()), \
            f"{sum(v is not True for v in echoed.values())} tunnels did not echo after the reloads"
    finally:
        fleet.close()
    figures = {
        "open_tunnels": n,
        "sighup_to_status_ms": [round(x * 1000, 1) for x in to_status],
        "sighup_to_serving_ms": [round(x * 1000, 1) for x in to_serving],
        "sighup_to_serving_ms_median": round(statistics.median(to_serving) * 1000, 1),
    }
    write_json(tmp_path, "reload_latency.json", figures)
    for k, v in figures.items():
        record_property(k, v)
