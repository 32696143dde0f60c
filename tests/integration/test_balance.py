"""Backend choice for requests without stickiness: round_robin and least_conn."""

import collections

import pytest

from conftest import InFlight, RawHttp, wait_until


def test_round_robin_alternates_with_one_worker(cluster):
    b1, b2, b3 = cluster.backend("r1"), cluster.backend("r2"), cluster.backend("r3")
    lp = cluster.limpet([b1, b2, b3], server={"workers": 1}, upstream={"balance": "round_robin"})
    order = []
    for i in range(9):
        with RawHttp(lp.port) as c:
            order.append(c.request("GET", f"/echo?i={i}").json()["backend"])
    assert collections.Counter(order) == {"r1": 3, "r2": 3, "r3": 3}, order
    assert len(set(order[:3])) == 3, order


def test_least_conn_avoids_the_busy_backend(cluster):
    b1, b2 = cluster.backend("l1"), cluster.backend("l2")
    lp = cluster.limpet([b1, b2], server={"workers": 1}, upstream={"balance": "least_conn"})
    busy = InFlight(lp, "/slow?ms=2000")
    wait_until(lambda: any("/slow?ms=2000" in b.paths() for b in (b1, b2)), 5,
               "the slow request to reach a backend")
    busy_name = "l1" if "/slow?ms=2000" in b1.paths() else "l2"
    chosen = []
    for i in range(6):
        with RawHttp(lp.port) as c:
            chosen.append(c.request("GET", f"/echo?i={i}").json()["backend"])
    assert busy_name not in chosen, f"least_conn sent requests to {busy_name}, busy with one: {chosen}"
    assert busy.join(10).status == 200


def _websocket_burst(lp, clients):
    """Open `clients` WebSockets at once (all from 127.0.0.1); the backend each one reached."""
    import asyncio

    import websockets

    async def one():
        async with websockets.connect(f"ws://127.0.0.1:{lp.port}/hello", open_timeout=20,
                                      ping_interval=None, compression=None) as ws:
            hello = await asyncio.wait_for(ws.recv(), 20)
            ready.append(hello.removeprefix("hello from "))
            await release.wait()  # every tunnel stays open until all are counted
            return ready[-1]

    async def burst():
        nonlocal release
        release = asyncio.Event()
        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        while len(ready) < clients and not any(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks)

    ready, release = [], None
    asyncio.run(asyncio.wait_for(burst(), 60))
    return collections.Counter(ready)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("clients,limit", [(12, 1.1), (300, 1.05)])
def test_a_burst_of_websocket_upgrades_spreads_evenly(cluster, workers, clients, limit):
    """Upgrades placed but not yet answered count where they were placed (their lease), so a
    burst that arrives before any 101 does not herd onto the node that looked emptiest."""
    nodes = [cluster.backend(f"w{i}", kind="ws") for i in range(3)]
    lp = cluster.limpet(nodes, server={"workers": workers}, upstream={"balance": "least_sessions"})
    spread = _websocket_burst(lp, clients)
    assert sum(spread.values()) == clients
    assert max(spread.values()) / (clients / 3) <= limit, spread
