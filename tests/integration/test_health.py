"""Health (issue 4): active HTTP checks with rise/fall, passive marking from connect failures,
retry after fail_timeout, and what /status, /metrics and the log say about it. The Engine.IO
check runs against a real Socket.IO cluster in tests/e2e."""

import re
import time

from conftest import free_port, wait_until
from ops_util import backend_of, get, start_ops_limpet

HTTP_CHECK = {"type": "http", "path": "/healthz", "interval": "100ms", "timeout": "500ms",
              "rise": 2, "fall": 2}


def set_health(backend, status):
    code, _, _ = get(backend.port, f"/_healthz?status={status}")
    assert code == 200


def wait_state(lp, name, state, timeout=10):
    wait_until(lambda: lp.backend_states().get(name) == state, timeout, f"{name} to be {state}")


def health_of(lp, name):
    return next(b for b in lp.status()["backends"] if b["name"] == name).get("health")


def test_http_check_takes_a_failing_backend_out_and_back(cluster):
    b1, b2 = cluster.backend("h1"), cluster.backend("h2")
    lp = start_ops_limpet(cluster, [b1, b2], upstream={"health": HTTP_CHECK})
    wait_until(lambda: (health_of(lp, "h2") or {}).get("ok", 0) >= 2, 10, "checks of h2 to pass")
    assert {backend_of(lp.port) for _ in range(8)} == {"h1", "h2"}

    set_health(b2, 503)
    wait_state(lp, "h2", "down")
    assert re.search(r"backend h2 \(\S+\) of upstream app is down: 2 checks failed "
                     r"\(last: HTTP 503, expected 200-399\)", lp.stderr()), lp.stderr()
    assert health_of(lp, "h2")["last"] == "HTTP 503, expected 200-399"
    assert {backend_of(lp.port) for _ in range(20)} == {"h1"}, "a down backend still got requests"
    assert lp.backend_states()["h1"] == "up"

    set_health(b2, 200)
    wait_state(lp, "h2", "up")
    assert re.search(r"backend h2 \(\S+\) of upstream app is up: 2 checks passed \(HTTP 200\)", lp.stderr())
    assert {backend_of(lp.port) for _ in range(8)} == {"h1", "h2"}

    metrics = lp.metrics_text()
    failed = re.search(r'limpet_health_checks_total\{upstream="app",backend="h2",result="failed"\} (\d+)', metrics)
    ok = re.search(r'limpet_health_checks_total\{upstream="app",backend="h1",result="ok"\} (\d+)', metrics)
    assert failed and int(failed.group(1)) >= 2, metrics
    assert ok and int(ok.group(1)) >= 2, metrics
    # The checks asked the configured path with limpet's user agent.
    checks = [e for e in b1.request_log() if e["path"] == "/healthz"]
    assert checks and all(dict(e["headers"]).get("User-Agent") == "limpet-health-check" for e in checks)


def test_http_check_marks_a_killed_backend_down_and_a_restarted_one_up(cluster):
    b1, b2 = cluster.backend("k1"), cluster.backend("k2")
    lp = start_ops_limpet(cluster, [b1, b2], upstream={"health": HTTP_CHECK})
    wait_until(lambda: (health_of(lp, "k2") or {}).get("ok", 0) >= 1, 10, "a check of k2 to pass")

    b2.kill()
    wait_state(lp, "k2", "down")
    assert "connect: connection refused" in health_of(lp, "k2")["last"]
    assert re.search(r"backend k2 \(\S+\) of upstream app is down: 2 checks failed "
                     r"\(last: connect: connection refused\)", lp.stderr())
    for _ in range(10):
        assert get(lp.port)[0] == 200  # never sent to the dead one, so never a retry or a 502
    retries = re.search(r"limpet_upstream_retries_total (\d+)", lp.metrics_text())
    assert retries and int(retries.group(1)) == 0

    restarted = cluster.backend("k2", args=("--port", str(b2.port)))  # same name, same port
    wait_state(lp, "k2", "up")
    assert re.search(r"backend k2 \(\S+\) of upstream app is up: 2 checks passed", lp.stderr())
    wait_until(lambda: "k2" in {backend_of(lp.port) for _ in range(4)}, 5, "requests to reach k2 again")
    assert [p for p in restarted.paths() if p.startswith("/echo")]


def test_dead_from_the_start(cluster):
    b1 = cluster.backend("d1")
    lp = start_ops_limpet(cluster, [b1, ("d2", f"127.0.0.1:{free_port()}")], upstream={"health": HTTP_CHECK})
    wait_state(lp, "d2", "down")
    assert all(get(lp.port)[0] == 200 for _ in range(10))


def test_status_range_and_single_status(cluster):
    b1, b2 = cluster.backend("s1"), cluster.backend("s2")
    set_health(b2, 204)
    lp = start_ops_limpet(cluster, [b1, b2],
                          upstream={"health": {**HTTP_CHECK, "status": 204}})
    wait_state(lp, "s1", "down")  # 200 is not 204
    assert lp.backend_states()["s2"] == "up"
    assert health_of(lp, "s2")["last"] == "HTTP 204"


def test_passive_failures_mark_down_and_fail_timeout_retries(cluster):
    b1 = cluster.backend("p1")
    dead = ("p2", f"127.0.0.1:{free_port()}")
    lp = start_ops_limpet(cluster, [b1, dead],
                          upstream={"health": {"max_fails": 2, "fail_timeout": "1500ms"}})
    statuses = [get(lp.port)[0] for _ in range(10)]
    assert statuses == [200] * 10, statuses  # refused connections are retried on p1
    assert lp.backend_states()["p2"] == "down"
    assert re.search(r"backend p2 \(\S+\) of upstream app is down: 2 failures within 1500 ms "
                     r"\(last: connect failed\); retried after fail_timeout", lp.stderr()), lp.stderr()
    assert health_of(lp, "p2") is None  # no active check configured
    retries = int(re.search(r"limpet_upstream_retries_total (\d+)", lp.metrics_text()).group(1))
    assert retries == 2, "only the failures before p2 was marked down are retried"

    wait_state(lp, "p2", "up", timeout=5)
    assert re.search(r"backend p2 \(\S+\) of upstream app: fail_timeout passed, trying it again", lp.stderr())
    for _ in range(6):
        assert get(lp.port)[0] == 200
    wait_state(lp, "p2", "down")  # still dead: two more failures take it out again


def test_passive_marking_off_with_zero_max_fails(cluster):
    b1 = cluster.backend("z1")
    lp = start_ops_limpet(cluster, [b1, ("z2", f"127.0.0.1:{free_port()}")],
                          upstream={"health": {"max_fails": 0}})
    for _ in range(10):
        assert get(lp.port)[0] == 200
    assert lp.backend_states()["z2"] == "up"
    assert "of upstream app is down" not in lp.stderr()


def test_health_settings_reload_keeps_state_and_restarts_changed_probes(cluster):
    b1, b2 = cluster.backend("r1"), cluster.backend("r2")
    lp = start_ops_limpet(cluster, [b1, b2], upstream={"health": HTTP_CHECK})
    set_health(b2, 500)
    wait_state(lp, "r2", "down")
    # A reload that changes nothing about r2 keeps it down (state lives with the backend's name).
    lp.write_config(upstreams=[{"name": "app", "backends": [b1, b2], "health": {**HTTP_CHECK, "rise": 3}}])
    lp.reload()
    assert lp.backend_states()["r2"] == "down"
    # Checks switched off: nobody is left to bring r2 back, so it returns to service, and r1 is
    # no longer asked.
    lp.write_config(upstreams=[{"name": "app", "backends": [b1, b2], "health": {"type": "none"}}])
    lp.reload()
    assert lp.backend_states()["r2"] == "up"
    assert "backend r2 (" in lp.stderr() and "is up: health checks are off" in lp.stderr()
    asked = sum(1 for e in b1.request_log() if e["path"] == "/healthz")
    time.sleep(0.5)  # five check intervals
    assert sum(1 for e in b1.request_log() if e["path"] == "/healthz") == asked


def test_responses_counted_per_backend_by_status_class(cluster):
    b1 = cluster.backend("c1")
    dead = ("c2", f"127.0.0.1:{free_port()}")
    lp = start_ops_limpet(cluster, [b1, dead], upstream={"max_tries": 1, "health": {"max_fails": 0}})
    statuses = [get(lp.port, path)[0] for path in ["/echo", "/status/404", "/status/503"] for _ in range(4)]
    assert statuses.count(502) > 0, statuses  # max_tries 1: a request placed on c2 fails
    metrics = lp.metrics_text()

    def count(backend, code):
        m = re.search(r'limpet_backend_responses_total\{upstream="app",backend="%s",code="%s"\} (\d+)'
                      % (backend, code), metrics)
        assert m, metrics
        return int(m.group(1))
    ok_on_c1 = sum(1 for s in statuses if s != 502)
    assert count("c1", "2xx") + count("c1", "4xx") + count("c1", "5xx") == ok_on_c1
    assert count("c1", "4xx") == statuses.count(404)
    assert count("c1", "5xx") == statuses.count(503)
    assert count("c2", "5xx") == statuses.count(502)  # limpet's 502 for the backend it could not reach
    assert count("c2", "2xx") == 0
    backends = {b["name"]: b for b in lp.status()["backends"]}
    assert backends["c2"]["responses"]["5xx"] == statuses.count(502)
