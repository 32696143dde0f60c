"""Backend choice for requests without stickiness: round_robin and least_conn."""

import collections

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
