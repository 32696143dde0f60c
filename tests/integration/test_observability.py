"""Tunnel observability and honest process metrics (issue 16, part 3): an access-log line when a
WebSocket closes (who closed, why, the close code, bytes and messages each way), the tunnel
duration and backend first-byte histograms, the `listener` label, process_* and
limpet_build_info on /metrics."""

import asyncio
import json
import os
import re
import signal
import time

import websockets

from conftest import wait_until
from ops_util import start_ops_limpet

CLOSE_LINE = re.compile(r'^(\S+) \[[^\]]+\] "WEBSOCKET closed" 101 (\d+) ([0-9.]+) (.*)$', re.M)


def run(coro, timeout=30):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def connect(port, path="/echo"):
    return websockets.connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10, close_timeout=5, ping_interval=None)


def close_lines(lp):
    """Every tunnel-close line so far, as dicts (key=value fields plus bytes_to_client, duration)."""
    lines = []
    for m in CLOSE_LINE.finditer(lp.stderr()):
        fields = dict(kv.split("=", 1) for kv in m.group(4).split())
        fields.update(client=m.group(1), bytes_to_client=m.group(2), duration=float(m.group(3)))
        lines.append(fields)
    return lines


def next_close_line(lp, seen):
    lines = wait_until(lambda: (lambda ls: ls if len(ls) > seen else None)(close_lines(lp)), 10,
                       f"tunnel-close line #{seen + 1} in limpet's access log")
    assert len(lines) == seen + 1, lines
    return lines[-1]


def metric_samples(text, name):
    """{labels text: value} of every sample of `name` (exactly that name) in a /metrics text."""
    return {m.group(1) or "": float(m.group(2))
            for m in re.finditer(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$", text, re.M)}


def test_a_close_line_says_who_closed_why_and_with_which_code(cluster):
    ws = cluster.backend("ow1", kind="ws")
    lp = start_ops_limpet(cluster, [ws], listener={"tunnel_idle_timeout": "1s"})

    async def client_closes():
        async with connect(lp.port) as conn:
            for i in range(3):
                await conn.send(f"message {i}")
                assert await conn.recv() == f"message {i}"
            await conn.close(code=4000, reason="client done")
    run(client_closes())
    line = next_close_line(lp, 0)
    assert (line["closed_by"], line["close_reason"], line["close_code"]) == ("client", "closed", "4000"), line
    assert (line["messages_to_backend"], line["messages_to_client"]) == ("3", "3"), line
    assert (line["upstream"], line["backend"], line["sid"]) == ("app", "ow1", "-"), line
    # 3 masked frames of 9 bytes plus the Close; 3 unmasked echoes plus the backend's Close.
    assert int(line["bytes_to_backend"]) == 3 * (2 + 4 + 9) + (2 + 4 + 2 + len("client done")), line
    assert int(line["bytes_to_client"]) == 3 * (2 + 9) + (2 + 2 + len("client done")), line

    async def backend_closes():
        async with connect(lp.port, "/bye") as conn:
            try:
                await conn.recv()
            except websockets.ConnectionClosed:
                pass
    run(backend_closes())
    line = next_close_line(lp, 1)
    assert (line["closed_by"], line["close_reason"], line["close_code"]) == ("backend", "closed", "4001"), line

    async def idle():
        async with connect(lp.port) as conn:
            try:
                await asyncio.wait_for(conn.recv(), 10)
            except websockets.ConnectionClosed:
                pass
    run(idle())
    line = next_close_line(lp, 2)
    assert (line["closed_by"], line["close_reason"], line["close_code"]) == ("limpet", "idle", "0"), line
    assert line["duration"] >= 1.0, line

    # The duration histogram saw all three, the idle one (>= 1 s) above the le="1" bound.
    text = lp.metrics_text()
    count = metric_samples(text, "limpet_tunnel_duration_seconds_count")
    buckets = metric_samples(text, "limpet_tunnel_duration_seconds_bucket")
    assert count == {"": 3.0}, count
    assert buckets['le="1"'] == 2 and buckets['le="5"'] == 3 and buckets['le="+Inf"'] == 3, buckets
    # Every upgrade's 101 is a first byte from the backend.
    first = metric_samples(text, "limpet_upstream_first_byte_seconds_count")
    assert first == {"": 3.0}, first


def test_drain_and_shutdown_are_named_in_the_close_line(cluster):
    w1, w2 = cluster.backend("od1", kind="ws"), cluster.backend("od2", kind="ws")
    lp = start_ops_limpet(cluster, [w1, w2], server={"drain_timeout": "100ms", "close_spread": "0s"},
                          upstream={"balance": "round_robin"})

    async def scenario():
        a = await connect(lp.port, "/hello")
        b = await connect(lp.port, "/hello")
        hellos = {await a.recv(): a, await b.recv(): b}
        assert set(hellos) == {"hello from od1", "hello from od2"}, hellos
        on_w1, on_w2 = hellos["hello from od1"], hellos["hello from od2"]
        lp.write_config(upstreams=[{"name": "app", "backends": [w2]}])
        lp.reload()
        try:
            await asyncio.wait_for(on_w1.recv(), 10)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd.code == 1012, closed
        line = await asyncio.to_thread(next_close_line, lp, 0)
        assert (line["closed_by"], line["close_reason"], line["close_code"], line["backend"]) == \
            ("limpet", "drain", "1012", "od1"), line
        lp.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(on_w2.recv(), 10)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd.code == 1001, closed
    run(scenario())
    assert lp.wait_exit(10) == 0, lp.stderr()
    line = close_lines(lp)[1]
    assert (line["closed_by"], line["close_reason"], line["close_code"], line["backend"]) == \
        ("limpet", "shutdown", "1001", "od2"), line


def test_the_json_close_line(cluster):
    ws = cluster.backend("oj1", kind="ws")
    lp = start_ops_limpet(cluster, [ws], server={"access_log_format": "json"})

    async def go():
        async with connect(lp.port) as conn:
            await conn.send("x" * 1000)
            assert len(await conn.recv()) == 1000
            await conn.close(code=1000)
    run(go())

    def json_close():
        for raw in lp.stderr().splitlines():
            if raw.startswith("{") and '"websocket_closed"' in raw:
                return json.loads(raw)
        return None
    entry = wait_until(json_close, 10, "the JSON tunnel-close line")
    assert entry["event"] == "websocket_closed" and entry["client"] == "127.0.0.1", entry
    assert (entry["closed_by"], entry["close_reason"], entry["close_code"]) == ("client", "closed", 1000), entry
    assert (entry["messages_to_backend"], entry["messages_to_client"]) == (1, 1), entry
    assert entry["bytes_to_backend"] == (4 + 4 + 1000) + (2 + 4 + 2), entry
    assert entry["bytes_to_client"] == (4 + 1000) + (2 + 2), entry
    assert entry["backend"] == "oj1" and entry["upstream"] == "app" and entry["duration"] >= 0, entry


def test_listener_label_and_process_metrics(cluster):
    ws = cluster.backend("ol1", kind="ws")
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": [ws]}],
                          listeners=[{"name": "public", "upstream": "app"}, {"name": "quiet", "upstream": "app"}])
    started = time.time()

    async def two_tunnels_on_public():
        conns = [await connect(lp.ports[0]) for _ in range(2)]
        for c in conns:
            await c.send("hi")
            assert await c.recv() == "hi"
        samples = metric_samples(await asyncio.to_thread(lp.metrics_text), "limpet_listener_tunnels")
        for c in conns:
            await c.close()
        return samples
    open_tunnels = run(two_tunnels_on_public())
    public = f'listener="public",address="127.0.0.1:{lp.ports[0]}"'
    quiet = f'listener="quiet",address="127.0.0.1:{lp.ports[1]}"'
    assert open_tunnels == {public: 2.0, quiet: 0.0}, open_tunnels

    def settled():
        text = lp.metrics_text()
        active = metric_samples(text, "limpet_listener_active_connections")
        return text if active == {public: 0.0, quiet: 0.0} else None
    text = wait_until(settled, 10, "both tunnels' connections to be closed")
    assert metric_samples(text, "limpet_listener_connections_accepted_total") == {public: 2.0, quiet: 0.0}
    assert metric_samples(text, "limpet_listener_tunnels") == {public: 0.0, quiet: 0.0}

    # process_*: what the kernel says about the same process.
    fds = len(os.listdir(f"/proc/{lp.proc.pid}/fd"))
    text = lp.metrics_text()
    fds_after = len(os.listdir(f"/proc/{lp.proc.pid}/fd"))
    open_fds = metric_samples(text, "process_open_fds")[""]
    assert min(fds, fds_after) - 2 <= open_fds <= max(fds, fds_after) + 2, (open_fds, fds, fds_after)
    with open(f"/proc/{lp.proc.pid}/status") as f:
        rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))
    rss = metric_samples(text, "process_resident_memory_bytes")[""]
    assert 0.5 * rss_kb * 1024 <= rss <= 2 * rss_kb * 1024, (rss, rss_kb)
    start = metric_samples(text, "process_start_time_seconds")[""]
    assert abs(start - started) < 30, (start, started)
    with open(f"/proc/{lp.proc.pid}/limits") as f:
        soft = int(re.search(r"^Max open files\s+(\d+)", f.read(), re.M).group(1))
    assert metric_samples(text, "process_max_fds") == {"": float(soft)}
    assert metric_samples(text, "process_cpu_seconds_total")[""] >= 0
    info = metric_samples(text, "limpet_build_info")
    assert len(info) == 1 and list(info.values()) == [1.0], info
    labels = dict(re.findall(r'(\w+)="([^"]*)"', next(iter(info))))
    assert labels["version"] == lp.status()["version"], labels
    assert re.fullmatch(r"\d+\.\d+\.\d+", labels["libuv"]), labels
    assert labels["openssl"].startswith("OpenSSL 3."), labels
    assert labels["compiler"], labels
