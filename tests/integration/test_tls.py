"""TLS through limpet with clients and servers that share no code with it: curl, `openssl s_client`,
Python's ssl and websockets, an HTTPS backend on Python's ssl. Certificates come from a CA made at
test time (tls_util.Pki). Covers HTTPS and WSS termination, versions, ALPN, SNI, resumption,
plaintext on the TLS port, stalled handshakes, certificate reload under load, TLS to backends."""

import asyncio
import json
import signal
import socket
import ssl
import struct
import threading
import time

import pytest
import websockets

from conftest import RawHttp, http_session, wait_until
from test_backpressure import GROWTH_LIMIT, MB, rss
from tls_util import (HttpsBackend, Pki, WssBackend, client_context, https_get, run_cmd, tls_connect,
                      write_atomically)

WS_SIZES = [1, 125, 126, 65535, 65536, 1024 * 1024]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki):
    return {
        "default": pki.issue("default", dns=["localhost"], ips=["127.0.0.1"]),
        "api": pki.issue("api", dns=["api.example.test"]),
        "apps": pki.issue("apps", dns=["*.apps.example.test"]),
    }


def listener_tls(certs, **settings):
    """`tls` of a listener: the default certificate, api.example.test by explicit name and
    *.apps.example.test by the names in its certificate."""
    cert, key, _ = certs["default"]
    return {"cert": cert, "key": key, **settings, "certificates": [
        {"names": ["api.example.test"], "cert": certs["api"][0], "key": certs["api"][1]},
        {"cert": certs["apps"][0], "key": certs["apps"][1]},
    ]}


@pytest.fixture(scope="module")
def env(module_cluster, certs):
    """Listener 0: HTTPS to an HTTP backend; 1: WSS to a WebSocket backend; 2: plain HTTP."""
    hb = module_cluster.backend("th1")
    ws = module_cluster.backend("tw1", kind="ws")
    tls = listener_tls(certs)
    return module_cluster.limpet(None, upstreams=[
        {"name": "http", "backends": [(hb.name, hb.address)]},
        {"name": "ws", "backends": [(ws.name, ws.address)]},
    ], listeners=[{"upstream": "http", "tls": tls}, {"upstream": "ws", "tls": tls}, {"upstream": "http"}])


@pytest.fixture
def lp(env):
    env.assert_alive()
    yield env
    env.assert_alive()


def curl(pki, port, *args, host="localhost", path="/echo"):
    """curl against limpet's TLS listener, `host` resolved to 127.0.0.1 (SNI and verification
    use `host`)."""
    return run_cmd(["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--cacert", str(pki.ca_file),
                    "--resolve", f"{host}:{port}:127.0.0.1", *args, f"https://{host}:{port}{path}"])


def header(echo, name):
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


# ---------------------------------------------------------------------------------------------
# HTTPS with curl


def test_https_with_curl_sets_x_forwarded_proto(lp, pki):
    rc, out, err = curl(pki, lp.port, "-w", "\n%{http_code} %{http_version} %{ssl_verify_result}")
    assert rc == 0, err
    body, _, facts = out.rpartition("\n")
    assert facts == "200 1.1 0"
    echo = json.loads(body)
    assert header(echo, "X-Forwarded-Proto") == ["https"]
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]
    # The same backend through the plain listener: http.
    with http_session() as s:
        assert s.get(lp.url("/echo", listener=2), timeout=10).json()["headers"].count(["X-Forwarded-Proto", "http"]) == 1


def test_curl_offering_http2_gets_http11(lp, pki):
    rc, out, err = curl(pki, lp.port, "--http2", "-o", "/dev/null", "-w", "%{http_version}")
    assert rc == 0, err
    assert out == "1.1"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls12_and_tls13_accepted(lp, pki, version):
    rc, out, err = curl(pki, lp.port, f"--tlsv{version}", "--tls-max", version, "-v", "-o", "/dev/null")
    assert rc == 0, err
    assert f"TLSv{version}" in err


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_tls10_and_tls11_refused(lp, pki, version):
    # SECLEVEL=0 so that curl's own OpenSSL really offers the old version: the refusal is limpet's.
    rc, _, err = curl(pki, lp.port, f"--tlsv{version}", "--tls-max", version, "--ciphers", "DEFAULT@SECLEVEL=0")
    assert rc == 35, err
    assert "alert protocol version" in err
    assert "TLS handshake with client 127.0.0.1 failed: unsupported protocol" in lp.stderr()


def test_sni_exact_wildcard_and_default(lp, pki):
    port = lp.port
    # Verification against each name succeeds only if limpet chose the certificate for it.
    for host in ["localhost", "api.example.test", "x.apps.example.test", "API.Example.Test"]:
        rc, out, err = curl(pki, port, "-o", "/dev/null", "-w", "%{http_code}", host=host)
        assert (rc, out) == (0, "200"), (host, err)
    # --connect-to: the URL's name for SNI, the connection to limpet's port.
    rc, out, err = run_cmd(["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--cacert", str(pki.ca_file),
                            "--connect-to", f"y.apps.example.test:443:127.0.0.1:{port}", "-o", "/dev/null",
                            "-w", "%{http_code}", "https://y.apps.example.test/echo"])
    assert (rc, out) == (0, "200"), err
    # A wildcard covers one label; unknown names get the default certificate (for localhost).
    for host in ["a.b.apps.example.test", "unknown.example.test"]:
        rc, _, err = curl(pki, port, "-o", "/dev/null", host=host)
        assert rc == 60, (host, err)  # certificate does not match the name
        assert "localhost" in err or "subject" in err.lower() or "no alternative" in err, err


def test_sni_certificate_seen_by_python(lp, pki, certs):
    ctx = client_context(pki)
    ctx.check_hostname = False  # look at what was served, whatever it is
    for name, expected in [("api.example.test", "api"), ("z.apps.example.test", "apps"), ("other.test", "default")]:
        _, _, facts = https_get(lp.port, ctx, server_name=name)
        assert facts["fingerprint"] == certs[expected][2], name


# ---------------------------------------------------------------------------------------------
# openssl s_client


def s_client(pki, port, *args):
    return run_cmd(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                    "-CAfile", str(pki.ca_file), *args], stdin=b"")


def test_s_client_alpn(lp, pki):
    rc, out, err = s_client(pki, lp.port, "-alpn", "h2,http/1.1")
    assert rc == 0, err
    assert "ALPN protocol: http/1.1" in out
    assert "Verify return code: 0 (ok)" in out
    # h2 alone: refused cleanly with the no_application_protocol alert (no fallback to 1.1).
    rc, out, err = s_client(pki, lp.port, "-alpn", "h2")
    assert rc != 0
    assert "no application protocol" in err, err
    assert "ALPN: the client does not offer http/1.1" in lp.stderr()
    # No ALPN at all: fine.
    rc, out, err = s_client(pki, lp.port)
    assert rc == 0, err
    assert "No ALPN negotiated" in out


def test_s_client_tls11_refused(lp, pki):
    rc, out, err = s_client(pki, lp.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0
    assert "alert protocol version" in err, err


# ---------------------------------------------------------------------------------------------
# Python ssl: versions, ciphers, resumption


def test_session_resumption(lp, pki):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(pki)
        ctx.maximum_version = version
        status, _, first = https_get(lp.port, ctx)
        assert status == 200
        assert not first["reused"]
        status, _, second = https_get(lp.port, ctx, session=first["session"])
        assert status == 200
        assert second["reused"], version
        assert second["alpn"] == "http/1.1"


def test_modern_ciphers_only(lp, pki):
    ctx = client_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")  # no forward secrecy
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|handshake failure"):
        tls_connect(lp.port, ctx)
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with tls_connect(lp.port, ctx) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"  # the server's preference wins


# ---------------------------------------------------------------------------------------------
# WSS


def test_wss_echo(lp, pki):
    async def run():
        async with websockets.connect(f"wss://localhost:{lp.ports[1]}/echo", ssl=client_context(pki),
                                      host="127.0.0.1", max_size=16 * MB, compression=None) as ws:
            for size in WS_SIZES:
                text = "t" * size
                await ws.send(text)
                assert await ws.recv() == text
                data = bytes(i % 251 for i in range(size))
                await ws.send(data)
                assert await ws.recv() == data
            await ws.close(1000, "done")
        assert ws.close_code == 1000

    asyncio.run(asyncio.wait_for(run(), 30))


def test_wss_upgrade_carries_x_forwarded_proto(lp, pki):
    async def run():
        async with websockets.connect(f"wss://localhost:{lp.ports[1]}/headers", ssl=client_context(pki),
                                      host="127.0.0.1") as ws:
                    return json.loads(await ws.recv())

    headers = asyncio.run(asyncio.wait_for(run(), 10))
    assert ["X-Forwarded-Proto", "https"] in headers


def test_wss_tunnel_keeps_backpressure(cluster, certs):
    ws = cluster.backend("tw2", kind="ws")
    lp = cluster.limpet([ws], server={"workers": 1}, listener={"tls": listener_tls(certs)})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    base = rss(lp)
    with tls_connect(lp.port, ctx) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        payload = b"\xab" * 60000
        frame = struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload
        s.settimeout(2.0)
        sent = 0
        try:
            while sent < 400 * MB:
                s.sendall(frame)  # echoes are never read
                sent += len(frame)
        except (socket.timeout, ssl.SSLError):
            pass
        grown = rss(lp) - base
        assert sent < 200 * MB, f"sent {sent // MB} MB without reading an echo: nothing pushed back"
        # Under ASan freed blocks wait in its quarantine (256 MB), and TLS frees its scratch
        # buffers after every large read: RSS says nothing there.
        if not sanitized(lp):
            assert grown < GROWTH_LIMIT, f"limpet grew by {grown // MB} MB"
    lp.assert_alive()


def sanitized(lp):
    with open(f"/proc/{lp.proc.pid}/maps") as f:
        return "libasan" in f.read()


# ---------------------------------------------------------------------------------------------
# misbehaving clients


def test_plain_http_on_the_tls_port(lp):
    with RawHttp(lp.port) as c:
        resp = c.request("GET", "/echo")
        assert resp.status == 400
        assert b"use https://" in resp.body
        assert c.closed_by_peer()
    assert "plain HTTP from client 127.0.0.1 on a TLS listener: answered 400" in lp.stderr()
    # curl with http:// to the TLS port sees the same answer.
    rc, out, _ = run_cmd(["curl", "-sS", "--max-time", "10", "--noproxy", "*", f"http://127.0.0.1:{lp.port}/"])
    assert rc == 0 and "use https://" in out


def client_hello():
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_client_stalling_mid_handshake_is_disconnected(lp):
    hello = client_hello()
    with socket.create_connection(("127.0.0.1", lp.port), timeout=10) as s:
        s.sendall(hello[: len(hello) // 2])  # half a ClientHello, then nothing
        started = time.monotonic()
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    assert 1.0 <= waited <= 5.0, f"disconnected after {waited:.1f}s (header_timeout 2s)"
    wait_until(lambda: "TLS handshake with client 127.0.0.1 not completed" in lp.stderr(), 5, "the log line")
    # A client that completes its ClientHello but never answers the server's flight: the same.
    with socket.create_connection(("127.0.0.1", lp.port), timeout=10) as s:
        s.sendall(hello)
        started = time.monotonic()
        data = b""
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        except ConnectionResetError:
            pass
        assert data, "the server's flight came"
        assert time.monotonic() - started <= 5.0


def test_garbage_on_the_tls_port(lp):
    with socket.create_connection(("127.0.0.1", lp.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x10" + b"\xff" * 16)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP")
    with http_session() as session:  # still serving
        assert session.get(lp.url("/echo", listener=2), timeout=10).status_code == 200


# ---------------------------------------------------------------------------------------------
# certificate reload


class Hammer:
    """Threads doing one HTTPS request per new connection, as fast as they can, recording
    failures and the certificates they saw."""

    def __init__(self, port, ctx, threads=4):
        self.port, self.ctx = port, ctx
        self.ok = 0
        self.failures = []
        self.fingerprints = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                status, _, facts = https_get(self.port, self.ctx, path="/echo")
                with self.lock:
                    if status != 200:
                        self.failures.append(f"status {status}")
                    else:
                        self.ok += 1
                        if not self.fingerprints or self.fingerprints[-1] != facts["fingerprint"]:
                            self.fingerprints.append(facts["fingerprint"])
            except (OSError, ssl.SSLError) as e:
                with self.lock:
                    self.failures.append(repr(e))

    def last_fingerprint(self):
        with self.lock:
            return self.fingerprints[-1] if self.fingerprints else None

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(20)


def test_certificate_reload_under_load(cluster, pki, tmp_path):
    b = cluster.backend("tr1")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    _, _, first = pki.issue("live1", dns=["localhost"], cert_path=cert, key_path=key)
    lp = cluster.limpet([b], listener={"tls": {"cert": str(cert), "key": str(key)}})
    hammer = Hammer(lp.port, client_context(pki))
    try:
        wait_until(lambda: hammer.ok >= 20, 20, "requests before the reload")
        assert hammer.last_fingerprint() == first

        # A renewed certificate: new connections get it, and no handshake fails on the way.
        _, _, second = pki.issue("live2", dns=["localhost"], cert_path=cert, key_path=key)
        lp.signal(signal.SIGHUP)
        wait_until(lambda: "reloaded: generation 2" in lp.stderr(), 10, "the reload")
        wait_until(lambda: hammer.last_fingerprint() == second, 10, "the new certificate in use")
        seen = hammer.ok
        wait_until(lambda: hammer.ok >= seen + 20, 20, "requests after the reload")

        # Broken files are refused with the file named; the running certificate keeps serving.
        stray_cert, stray_key, _ = pki.issue("stray", dns=["localhost"])
        expired_cert, expired_key, _ = pki.issue("expired", dns=["localhost"], not_before_days=-30,
                                                 not_after_days=-1)
        good_cert, good_key = cert.read_bytes(), key.read_bytes()
        cases = [
            ("garbage", lambda: write_atomically(cert, b"not a certificate\n"),
             f"{cert}: no PEM certificate"),
            ("mismatch", lambda: write_atomically(key, open(stray_key, "rb").read()),
             f"{key}: private key does not match the certificate in {cert}"),
            ("expired", lambda: (write_atomically(cert, open(expired_cert, "rb").read()),
                                 write_atomically(key, open(expired_key, "rb").read())),
             f"{cert}: certificate expired on"),
            ("missing", lambda: key.unlink(), f"{key}: cannot open: No such file or directory"),
        ]
        for failures, (what, breakage, message) in enumerate(cases, start=1):
            breakage()
            lp.signal(signal.SIGHUP)
            wait_until(lambda: lp.stderr().count("reload failed") == failures, 10, f"the {what} reload to fail")
            assert message in lp.stderr(), what
            seen = hammer.ok
            wait_until(lambda: hammer.ok >= seen + 10, 20, f"requests after the {what} reload")
            assert hammer.last_fingerprint() == second, what
            write_atomically(cert, good_cert)
            write_atomically(key, good_key)
        assert stray_cert  # issued only for its key
    finally:
        hammer.finish()
    assert hammer.failures == [], hammer.failures[:5]
    assert hammer.ok > 100


# ---------------------------------------------------------------------------------------------
# TLS to backends


@pytest.fixture(scope="module")
def tls_backends(pki):
    files = pki.issue("backend", dns=["backend.test"], ips=["127.0.0.1"])[:2]
    good = HttpsBackend(*files, name="good")
    expired = HttpsBackend(*pki.issue("backend-old", dns=["backend.test"], ips=["127.0.0.1"],
                                      not_before_days=-30, not_after_days=-1)[:2], name="expired")
    wss = WssBackend(*files)
    yield {"good": good, "expired": expired, "wss": wss}
    good.close()
    expired.close()
    wss.close()


@pytest.fixture(scope="module")
def upstream_env(module_cluster, pki, certs, tls_backends):
    """One plain listener per case, in this order; listener 7 is HTTPS in and out, 8 WSS in and out."""
    good, expired = tls_backends["good"].address, tls_backends["expired"].address
    ca = str(pki.ca_file)
    cases = [
        ("by_name", good, {"ca_file": ca, "server_name": "backend.test"}),
        ("by_ip", good, {"ca_file": ca}),
        ("wrong_name", good, {"ca_file": ca, "server_name": "wrong.test"}),
        ("expired", expired, {"ca_file": ca, "server_name": "backend.test"}),
        ("no_verify", expired, {"verify": False, "server_name": "wrong.test"}),
        ("system_store", good, True),
        ("wss", tls_backends["wss"].address, {"ca_file": ca, "server_name": "backend.test"}),
    ]
    upstreams = [{"name": name, "backends": [("tb-" + name, addr)], "tls": tls} for name, addr, tls in cases]
    listeners = [{"upstream": name} for name, _, _ in cases]
    listeners.append({"upstream": "by_name", "tls": listener_tls(certs)})
    listeners.append({"upstream": "wss", "tls": listener_tls(certs)})
    return module_cluster.limpet(None, upstreams=upstreams, listeners=listeners)


def test_backend_verified_by_name_with_sni(upstream_env, tls_backends):
    with http_session() as s:
        r = s.get(upstream_env.url("/echo", listener=0), timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["backend"] == "good"
        assert r.json()["sni"] == "backend.test"
        # Keep-alive to the backend works over TLS: one backend connection for several requests.
        ids = {s.get(upstream_env.url("/conn", listener=0), timeout=10).text for _ in range(4)}
        assert len(ids) == 1, ids


def test_backend_verified_by_ip_without_sni(upstream_env):
    with http_session() as s:
        r = s.get(upstream_env.url("/echo", listener=1), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sni"] is None  # an address is no SNI name (RFC 6066)


@pytest.mark.parametrize("listener,reason", [(2, "hostname mismatch"), (3, "certificate has expired"),
                                             (5, "unable to get local issuer certificate")])
def test_untrusted_backends_are_refused(upstream_env, listener, reason):
    with http_session() as s:
        r = s.get(upstream_env.url("/echo", listener=listener), timeout=10)
    assert r.status_code == 502
    wait_until(lambda: f"certificate verify failed: {reason}" in upstream_env.stderr(), 5,
               f"the log line about {reason}")


def test_verify_false_accepts_anything_and_warns(upstream_env):
    with http_session() as s:
        r = s.get(upstream_env.url("/echo", listener=4), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["backend"] == "expired"
    assert 'upstream "no_verify": tls.verify = false: backend certificates are not checked' in upstream_env.stderr()


def test_https_in_and_out(upstream_env, pki):
    status, body, facts = https_get(upstream_env.ports[7], client_context(pki))
    assert status == 200
    echo = json.loads(body)
    assert echo["backend"] == "good"
    assert header(echo, "X-Forwarded-Proto") == ["https"]


def test_wss_in_and_out(upstream_env, pki):
    """A WebSocket tunnel with TLS on both sides: limpet decrypts, follows frames, encrypts again."""
    async def run():
        async with websockets.connect(f"wss://localhost:{upstream_env.ports[8]}/echo", ssl=client_context(pki),
                                      host="127.0.0.1", max_size=16 * MB, compression=None) as ws:
            for size in WS_SIZES:
                data = bytes(i % 253 for i in range(size))
                await ws.send(data)
                assert await ws.recv() == data
            await ws.send("text")
            assert await ws.recv() == "text"
            closing = time.monotonic()
        # The backend's TLS stack sends close_notify and waits for ours before its FIN: limpet
        # must take close_notify as the end, or the close handshake hangs until a timeout.
        assert ws.close_code == 1000
        return time.monotonic() - closing

    assert asyncio.run(asyncio.wait_for(run(), 30)) < 2.0
    with http_session() as s:  # ws over TLS to the backend from a plain listener too
        assert s.get(upstream_env.url("/", listener=6), timeout=10).status_code in (400, 426)
