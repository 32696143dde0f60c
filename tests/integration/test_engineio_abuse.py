"""Engine.IO abuse (issue 12): floods of unknown sids and broken handshake responses cost limpet
a count, never memory, a store write or a worker. With a session store too: a random sid costs at
most one lookup and is never written."""

import concurrent.futures
import json
import secrets

import pytest

from conftest import admin_metric, free_port, http_session
from store_util import Redis

UPSTREAM = {"balance": "least_sessions", "engineio_paths": ["/socket.io/"], "session_ttl": "60s"}


metric = admin_metric


def start(cluster, redis=None):
    """limpet (with an admin listener, and [session_store] on `redis` if given) before two nodes."""
    admin = f"127.0.0.1:{free_port()}"
    tables = {"[admin]": {"address": admin}}
    if redis:
        tables["[session_store]"] = {"address": redis.address, "key_prefix": "abuse:"}
    backends = [cluster.backend(f"node{i}") for i in (1, 2)]
    lp = cluster.limpet(backends, upstream=UPSTREAM, tables=tables)
    return lp, admin


def flood(lp, count, threads=4):
    """`count` polls with random sids, over `threads` keep-alive connections."""
    def run(n):
        with http_session() as s:
            for _ in range(n):
                r = s.get(lp.url(f"/socket.io/?EIO=4&transport=polling&sid={secrets.token_urlsafe(15)}"), timeout=10)
                assert r.status_code == 200
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [count // threads] * threads))


def test_random_sids_grow_nothing(cluster, tmp_path):
    # With a store: the same flood checks the local table and the store (a miss asks it once).
    redis = Redis(tmp_path).start()
    try:
        lp, admin = start(cluster, redis)
        with http_session() as s:
            for _ in range(10):  # some real sessions, which must stay
                r = s.get(lp.url("/socket.io/?EIO=4&transport=polling"), timeout=5)
                assert json.loads(r.text[1:])["sid"]
        assert metric(admin, "limpet_affinity_entries") == 10
        flood(lp, 10000)
        assert metric(admin, "limpet_affinity_entries") == 10
        lp.assert_alive()
        keys = redis.cli("--scan", "--pattern", "abuse:sid:*").split()
        assert len(keys) == 10  # only the real sessions were ever written
        asked = sum(metric(admin, "limpet_session_store_lookups_total", f'result="{r}"') or 0
                    for r in ("hit", "miss", "timeout", "error"))
        assert asked <= 10000  # at most one lookup each
    finally:
        redis.kill()


@pytest.mark.parametrize("abuse", ["long-sid", "not-json", "gzip"])
def test_broken_handshakes_are_counted_and_not_learned(cluster, abuse):
    lp, admin = start(cluster)
    with http_session() as s:
        for _ in range(20):
            r = s.get(lp.url(f"/socket.io/?EIO=4&transport=polling&abuse={abuse}"), timeout=5)
            assert r.status_code == 200  # passed through untouched: the client is the backend's business
        assert metric(admin, "limpet_handshakes_unparsable_total") == 20
        assert metric(admin, "limpet_affinity_entries") == 0
        r = s.get(lp.url("/socket.io/?EIO=4&transport=polling"), timeout=5)  # the worker is fine
        assert r.status_code == 200
    assert metric(admin, "limpet_affinity_entries") == 1
    lp.assert_alive()
