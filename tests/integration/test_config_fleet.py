"""Config for fleets and guardrails (issue 16): include, ${ENV}, limpet -T's round trip, the -t
checks that refuse or warn, and the listener's ready_path through a graceful stop."""

import os
import signal
import subprocess

from conftest import RawHttp, admin_metric, connect_refused, free_port, limpet_bin, render_config, wait_until

UPSTREAM = {"name": "app", "backends": ["127.0.0.1:18081"], "read_timeout": "60s"}


def run(*args, env=None, timeout=10):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def dump(path, env=None):
    r = run("-T", "-c", str(path), env=env)
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr
    return r.stdout


def body(text):
    """A dump without its first line, which names the file it came from."""
    return text.split("\n", 1)[1]


def test_dump_loads_back_to_itself(tmp_path):
    main = tmp_path / "main.toml"
    main.write_text(render_config([18080], [UPSTREAM], listeners=[{"upstream": "app", "ready_path": "/ready"}]))
    first = dump(main)
    assert 'ready_path = "/ready"' in first
    assert 'keepalive_timeout = "75s"' in first  # a default, written out
    effective = tmp_path / "effective.toml"
    effective.write_text(first)
    assert run("-t", "-c", str(effective)).returncode == 0
    assert body(dump(effective)) == body(first)


def test_include_and_env(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-chat.toml").write_text(
        '[[listener]]\naddress = "127.0.0.1:18090"\nupstream = "chat"\n'
        '[[upstream]]\nname = "chat"\nread_timeout = "60s"\n'
        '[[upstream.backend]]\nname = "c1"\naddress = "127.0.0.1:${CHAT_PORT}"\n')
    main = tmp_path / "main.toml"
    main.write_text('include = ["conf.d/*.toml"]\n[admin]\ntoken = "${LIMPET_TOKEN}"\n'
                    + render_config([18080], [UPSTREAM]))
    env = {"LIMPET_TOKEN": "from-the-env", "CHAT_PORT": "18091"}
    out = dump(main, env)
    assert 'token = "from-the-env"' in out
    assert 'name = "chat"' in out and 'address = "127.0.0.1:18091"' in out
    assert "include" not in body(out)  # merged in

    r = run("-t", "-c", str(main), env={"LIMPET_TOKEN": "x", "CHAT_PORT": ""})
    assert r.returncode == 1
    r = run("-t", "-c", str(main), env={"LIMPET_TOKEN": "x"})
    assert r.returncode == 1
    assert r.stderr.strip() == (f"limpet: {tmp_path}/conf.d/10-chat.toml:9:11: ${{CHAT_PORT}}: "
                                "the environment variable is not set")

    (tmp_path / "conf.d" / "20-dup.toml").write_text("[admin]\ntoken = \"again\"\n")
    r = run("-t", "-c", str(main), env=env)
    assert r.returncode == 1
    assert f"{tmp_path}/conf.d/20-dup.toml:2:9:" in r.stderr and f"{main}:3:9" in r.stderr, r.stderr


def check(tmp_path, text, env=None):
    path = tmp_path / "t.toml"
    path.write_text(text)
    return run("-t", "-c", str(path), env=env)


def test_guardrails(tmp_path):
    base = render_config([18080], [UPSTREAM])
    r = check(tmp_path, base.replace('"127.0.0.1:18081"', '"http://127.0.0.1:18081"'))
    assert r.returncode == 1 and "write HOST:PORT, without a scheme" in r.stderr, r.stderr

    r = check(tmp_path, '[admin]\naddress = "0.0.0.0:19090"\n' + base)
    assert r.returncode == 1 and "t.toml:2:11: address:" in r.stderr and "allow_public" in r.stderr, r.stderr
    assert check(tmp_path, '[admin]\naddress = "0.0.0.0:19090"\nallow_public = true\n' + base).returncode == 0

    pid_file = tmp_path / "missing" / "limpet.pid"
    r = check(tmp_path, base.replace("[server]\n", f'[server]\npid_file = "{pid_file}"\n'))
    assert r.returncode == 1 and str(pid_file) in r.stderr and "No such file or directory" in r.stderr, r.stderr

    r = check(tmp_path, render_config([18080], [{**UPSTREAM, "session_ttl": "30s"}]))
    assert r.returncode == 0, r.stderr
    assert "session_ttl" in r.stderr and "ping window" in r.stderr, r.stderr


def test_ready_path_turns_503_when_a_graceful_stop_starts(cluster):
    b = cluster.backend("r1")
    admin = f"127.0.0.1:{free_port()}"
    lp = cluster.limpet([b], listener={"ready_path": "/limpet-ready"}, server={"shutdown_timeout": "5s"},
                        tables={"[admin]": {"address": admin}})
    with RawHttp(lp.port) as c:
        c.send("GET /limpet-ready?probe=1 HTTP/1.1\r\nHost: lb\r\n\r\n")
        assert c.read_response().status == 200
    assert "/limpet-ready" not in b.paths(), "the readiness probe was proxied"

    # A probe whose head is half sent keeps limpet alive through the stop, and is answered then.
    with RawHttp(lp.port) as c:
        c.send("GET /limpet-ready HTTP/1.1\r\nHost: lb\r\n")
        # Accepted, not only in the kernel's backlog: the stop closes the listener, and a
        # connection still in its queue would be reset.
        wait_until(lambda: admin_metric(admin, "limpet_active_connections") == 1, 5,
                   "limpet to accept the probe's connection")
        lp.signal(signal.SIGQUIT)
        wait_until(lambda: connect_refused(lp.port), 5, "limpet to stop accepting")
        c.send("\r\n")
        resp = c.read_response()
        assert resp.status == 503
        assert (resp.header("Connection") or "").lower() == "close"
    assert lp.wait_exit(8) == 0
