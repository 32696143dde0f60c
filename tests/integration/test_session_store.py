"""[session_store]: two limpet instances share their learned Engine.IO sessions through a real
redis-server. A session handshaken through one instance is routed by the other to the node that
issued it; without the store (the control) most are not. Also: learn before release, no round
trip for known sids, garbage sids never written, a store that dies and comes back, requirepass,
an ACL user and TLS."""

import json
import secrets
import urllib.request

import pytest

from conftest import admin_metric, free_port, http_session, wait_until
from store_util import Redis

UPSTREAM = {"balance": "least_sessions", "engineio_paths": ["/socket.io/"], "session_ttl": "60s"}


@pytest.fixture
def client():
    with http_session() as s:
        yield s


def admin_get(lp, path):
    with urllib.request.urlopen(f"http://{lp.admin_address}{path}", timeout=5) as r:
        return r.read().decode()


def metric(lp, name, labels=""):
    return admin_metric(lp.admin_address, name, labels)


def start_pair(cluster, backends, store=None):
    """Two limpets in front of the same backends, with [session_store] = `store` (or none)."""
    pair = []
    for name in ("lb-a", "lb-b"):
        admin = f"127.0.0.1:{free_port()}"
        tables = {"[admin]": {"address": admin}}
        if store is not None:
            tables["[session_store]"] = {"key_prefix": "it:", "instance": name, **store}
        lp = cluster.limpet(backends, name=name, upstream=UPSTREAM, tables=tables)
        lp.admin_address = admin
        pair.append(lp)
    return pair


def handshake(session, lp):
    """An Engine.IO polling handshake: the sid (which names the backend that issued it)."""
    r = session.get(lp.url("/socket.io/?EIO=4&transport=polling"), timeout=5)
    assert r.status_code == 200, r.text
    return json.loads(r.text[1:])["sid"]


def poll(session, lp, sid):
    r = session.get(lp.url(f"/socket.io/?EIO=4&transport=polling&sid={sid}"), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["backend"]


def misrouted_by_b(cluster, client, store, sessions=30):
    backends = [cluster.backend(f"node{i}") for i in (1, 2, 3)]
    a, b = start_pair(cluster, backends, store)
    wrong = 0
    for _ in range(sessions):
        sid = handshake(client, a)
        issuer = sid.rsplit("-", 1)[0]
        wrong += poll(client, b, sid) != issuer
    return a, b, wrong


def test_without_a_store_the_second_instance_misroutes(cluster, client):
    # The control: if this passed with 0, the store tests below could not see what they fix.
    _, _, wrong = misrouted_by_b(cluster, client, store=None)
    assert wrong >= 10, f"only {wrong}/30 misrouted without a store"


@pytest.mark.parametrize("auth", ["none", "requirepass", "acl", "tls"])
def test_sessions_learned_by_one_instance_route_on_the_other(cluster, client, tmp_path, auth):
    lines = {"requirepass": ["requirepass sekrit"],
             "acl": ["user default off", "user limpet on >pw ~it:* +@all"]}.get(auth, [])
    redis = Redis(tmp_path, lines=lines, tls=auth == "tls").start()
    try:
        store = {"address": redis.address}
        if auth == "requirepass":
            store["password"] = "sekrit"
            redis.auth = ["-a", "sekrit", "--no-auth-warning"]
        if auth == "acl":
            store.update(username="limpet", password="pw")
            redis.auth = ["--user", "limpet", "--pass", "pw", "--no-auth-warning"]
        if auth == "tls":
            store["tls"] = {"ca_file": redis.ca_file}
        a, b, wrong = misrouted_by_b(cluster, client, store)
        assert wrong == 0
        assert metric(a, "limpet_session_store_up") == 1
        assert metric(b, "limpet_session_store_lookups_total", 'result="hit"') == 30
        # Learn before release: every sid was in Redis before its client saw it, under the
        # backend's name (B found all 30 above); the key names the upstream.
        keys = redis.cli("--scan", "--pattern", "it:sid:app:*").split()
        assert len(keys) == 30
        assert redis.cli("GET", keys[0]) in ("node1", "node2", "node3")
        # Known sids cost no round trip: B asks its own table from now on.
        sid = keys[0].rsplit(":", 1)[1]
        for _ in range(5):
            poll(client, b, sid)
        assert metric(b, "limpet_session_store_lookups_total", 'result="hit"') == 30
        assert metric(a, "limpet_session_store_publishes_total", 'result="stored"') == 30
    finally:
        redis.kill()


def test_garbage_sids_are_never_written_and_asked_once(cluster, client, tmp_path):
    redis = Redis(tmp_path).start()
    try:
        backends = [cluster.backend(f"node{i}") for i in (1, 2)]
        a, _ = start_pair(cluster, backends, {"address": redis.address})
        junk = [secrets.token_hex(10) for _ in range(40)]
        for sid in junk + junk:  # each one twice: the second is negatively cached
            poll(client, a, sid)
        assert redis.cli("DBSIZE") == "0" or all(not k.startswith("it:sid:")
                                                 for k in redis.cli("KEYS", "*").split())
        misses = metric(a, "limpet_session_store_lookups_total", 'result="miss"')
        cached = metric(a, "limpet_session_store_lookups_total", 'result="negative_cached"')
        # Two workers: a sid's second request may reach the other worker, which asks once too.
        assert 40 <= misses <= 80 and misses + cached == 80
    finally:
        redis.kill()


def test_a_store_that_dies_is_not_waited_for_and_is_used_again_when_back(cluster, client, tmp_path):
    redis = Redis(tmp_path).start()
    try:
        backends = [cluster.backend(f"node{i}") for i in (1, 2, 3)]
        a, b = start_pair(cluster, backends, {"address": redis.address, "store_timeout": "100ms"})
        wait_until(lambda: metric(a, "limpet_session_store_up") == 1, 10, "store up on A")
        before = [handshake(client, a) for _ in range(5)]
        redis.kill()
        wait_until(lambda: metric(a, "limpet_session_store_up") == 0, 10, "A to notice the store is gone")
        # Down: handshakes are not held, known sessions keep their node on the instance that knows them.
        for sid in before:
            assert poll(client, a, sid) == sid.rsplit("-", 1)[0]
        sid = handshake(client, a)
        assert poll(client, a, sid) == sid.rsplit("-", 1)[0]
        assert metric(a, "limpet_session_store_publishes_total", 'result="unavailable"') >= 1
        assert a.stderr().count("is down") == 1, a.stderr()
        redis.start()  # same port
        wait_until(lambda: metric(a, "limpet_session_store_up") == 1 and metric(b, "limpet_session_store_up") == 1,
                   15, "both instances back on the store")
        assert "session store " + redis.address + " is up" in a.stderr()
        sid = handshake(client, a)
        assert poll(client, b, sid) == sid.rsplit("-", 1)[0]
        a.assert_alive()
        b.assert_alive()
    finally:
        redis.kill()
