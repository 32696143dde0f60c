"""Stopping, as nginx users expect it: SIGQUIT finishes in-flight requests and exits 0 within
shutdown_timeout, SIGTERM/SIGINT are the fast stop, a second stop signal exits at once, idle
connections and tunnels do not hold limpet up. (test_signals.py: the -s forms, the pid file.)"""

import asyncio
import signal
import time

import pytest
import websockets

from conftest import InFlight, RawHttp, connect_refused, wait_until


def arrived(backend, path):
    return lambda: path in backend.paths()


@pytest.mark.parametrize("sig", [signal.SIGQUIT])
def test_graceful_stop_finishes_in_flight_request(cluster, sig):
    b = cluster.backend("g1")
    lp = cluster.limpet([b], server={"shutdown_timeout": "5s"})
    req = InFlight(lp, "/slow?ms=1500")
    wait_until(arrived(b, "/slow?ms=1500"), 5, "the slow request to reach the backend")
    t0 = time.monotonic()
    lp.signal(sig)
    wait_until(lambda: connect_refused(lp.port), 2, "limpet to stop accepting")
    r = req.join(10)
    assert req.error is None, repr(req.error)
    assert r.status == 200 and r.body == b"slow 1500\n"
    assert lp.wait_exit(6) == 0, lp.stderr()
    assert time.monotonic() - t0 < 5.5
    lp.check_sanitizers()


def test_idle_keepalive_connections_do_not_delay_stop(cluster):
    b = cluster.backend("g2")
    lp = cluster.limpet([b], server={"shutdown_timeout": "5s"})
    idle = [RawHttp(lp.port) for _ in range(5)]
    for c in idle:
        assert c.request("GET", "/echo").status == 200
    t0 = time.monotonic()
    lp.signal(signal.SIGQUIT)
    assert lp.wait_exit(6) == 0
    assert time.monotonic() - t0 < 2, "idle keep-alive connections held limpet up"
    for c in idle:
        assert c.closed_by_peer(timeout=1)
        c.close()


def test_shutdown_timeout_bounds_the_wait(cluster):
    b = cluster.backend("g3")
    lp = cluster.limpet([b], server={"shutdown_timeout": "1s"}, upstream={"read_timeout": "30s"})
    req = InFlight(lp, "/hang")
    wait_until(arrived(b, "/hang"), 5, "the hanging request to reach the backend")
    t0 = time.monotonic()
    lp.signal(signal.SIGQUIT)
    rc = lp.wait_exit(4)
    assert rc >= 0, f"killed by signal {-rc}"
    assert time.monotonic() - t0 < 2.5
    req.join(5)  # the client is not left hanging either


def test_second_stop_signal_exits_at_once(cluster):
    b = cluster.backend("g4")
    lp = cluster.limpet([b], server={"shutdown_timeout": "20s"}, upstream={"read_timeout": "30s"})
    req = InFlight(lp, "/hang")
    wait_until(arrived(b, "/hang"), 5, "the hanging request to reach the backend")
    lp.signal(signal.SIGQUIT)
    wait_until(lambda: connect_refused(lp.port), 2, "limpet to stop accepting")
    assert lp.alive(), "limpet did not wait for the in-flight request"
    t0 = time.monotonic()
    lp.signal(signal.SIGTERM)
    rc = lp.wait_exit(3)
    assert rc >= 0, f"killed by signal {-rc}"
    assert time.monotonic() - t0 < 1.5
    req.join(5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_fast_stop_does_not_wait_for_requests_in_flight(cluster, sig):
    b = cluster.backend("g5")
    lp = cluster.limpet([b], server={"shutdown_timeout": "20s"}, upstream={"read_timeout": "30s"})
    req = InFlight(lp, "/hang")
    wait_until(arrived(b, "/hang"), 5, "the hanging request to reach the backend")
    t0 = time.monotonic()
    lp.signal(sig)
    rc = lp.wait_exit(3)
    assert rc >= 0, f"killed by signal {-rc}"
    assert time.monotonic() - t0 < 1.5
    req.join(5)


def test_open_tunnel_closed_cleanly_on_stop(cluster):
    ws = cluster.backend("gw", kind="ws")
    lp = cluster.limpet([ws], server={"shutdown_timeout": "5s", "close_spread": "100ms"})

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{lp.port}/echo", ping_interval=None,
                                      open_timeout=10, close_timeout=5) as conn:
            await conn.send("hi")
            assert await conn.recv() == "hi"
            lp.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(conn.recv(), 6)
            return info.value.rcvd.code if info.value.rcvd else None

    t0 = time.monotonic()
    code = asyncio.run(go())
    assert code == 1001, f"close code {code}, expected 1001 (going away)"
    assert lp.wait_exit(6) == 0, lp.stderr()
    assert time.monotonic() - t0 < 5.5
    lp.check_sanitizers()
