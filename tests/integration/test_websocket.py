"""WebSocket through limpet: echo of 1 B to 1 MB messages, refused upgrades, bytes that arrive with
either head, close codes in both directions, a backend dying under an open tunnel."""

import asyncio
import base64
import hashlib
import json
import os
import struct
import time

import pytest
import websockets

from conftest import RawHttp, pattern

SIZES = [1, 125, 126, 127, 65535, 65536, 65537, 1024 * 1024]


@pytest.fixture(scope="module")
def env(module_cluster):
    ws = module_cluster.backend("w1", kind="ws")
    hb = module_cluster.backend("wh1")
    lp = module_cluster.limpet(None, upstreams=[
        {"name": "ws", "backends": [(ws.name, ws.address)]},
        {"name": "http", "backends": [(hb.name, hb.address)]},
    ], listeners=[{"upstream": "ws"}, {"upstream": "http"}])
    return lp


@pytest.fixture
def lp(env):
    env.assert_alive()
    yield env
    env.assert_alive()


def ws_url(lp, path, listener=0):
    return f"ws://127.0.0.1:{lp.ports[listener]}{path}"


def run(coro, timeout=30):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def connect(url, **kw):
    return websockets.connect(url, max_size=16 * 1024 * 1024, open_timeout=10, close_timeout=5,
                              ping_interval=None, **kw)


def text_of(n):
    return (pattern.data(n).hex())[:n]


# ---- echo --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_sizes(lp, kind):
    async def go():
        async with connect(ws_url(lp, "/echo")) as ws:
            for n in SIZES:
                msg = text_of(n) if kind == "text" else pattern.data(n)
                await ws.send(msg)
                back = await ws.recv()
                assert type(back) is type(msg), f"{n}: {type(back)}"
                assert back == msg, f"{kind} message of {n} bytes came back different"
    run(go())


def test_many_messages_in_flight_keep_order(lp):
    async def go():
        async with connect(ws_url(lp, "/echo")) as ws:
            msgs = [f"message {i} " + "x" * (i % 700) for i in range(2000)]
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                assert await ws.recv() == m
    run(go())


def test_small_messages_round_trip_without_stalls(lp):
    """Both legs need TCP_NODELAY: a ping-pong of small frames must not wait on delayed ACKs
    (~40 ms each). 100 round trips in under 2 s leaves a 20x margin."""
    async def go():
        async with connect(ws_url(lp, "/echo")) as ws:
            await ws.send("warm-up")
            await ws.recv()
            t0 = time.monotonic()
            for i in range(100):
                await ws.send(f"ping {i}")
                assert await ws.recv() == f"ping {i}"
            return time.monotonic() - t0
    elapsed = run(go())
    assert elapsed < 2.0, f"{elapsed * 10:.1f} ms per round trip"


def test_concurrent_tunnels(lp):
    async def one(k):
        async with connect(ws_url(lp, "/echo")) as ws:
            for i in range(20):
                msg = pattern.data(1000 + k * 10 + i)
                await ws.send(msg)
                assert await ws.recv() == msg

    async def go():
        await asyncio.gather(*(one(k) for k in range(30)))
    run(go())


def test_close_code_from_client_echoed_by_backend(lp):
    async def go():
        ws = await connect(ws_url(lp, "/echo"))
        await ws.send("before close")
        assert await ws.recv() == "before close"
        await ws.close(code=4000, reason="client done")
        return ws.close_code, ws.close_reason
    code, reason = run(go())
    assert (code, reason) == (4000, "client done")


def test_close_code_from_backend_reaches_client(lp):
    async def go():
        async with connect(ws_url(lp, "/bye")) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code, info.value.rcvd.reason
    assert run(go()) == (4001, "bye")


# ---- upgrade handling --------------------------------------------------------------------------

def test_backend_sends_first(lp):
    async def go():
        async with connect(ws_url(lp, "/hello")) as ws:
            assert await ws.recv() == "hello from w1"
            await ws.send("and then echo")
            assert await ws.recv() == "and then echo"
    run(go())


def test_upgrade_refused_by_backend_passed_through(lp):
    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as info:
            async with connect(ws_url(lp, "/refuse")):
                pass
        return info.value.status_code
    assert run(go()) == 403
    with RawHttp(lp.port) as c:
        c.send(handshake("/refuse"))
        r = c.read_response()
    assert r.status == 403
    assert r.body == b"refused by w1\n"


def test_upgrade_headers_reach_backend(lp):
    key = base64.b64encode(os.urandom(16)).decode()
    with RawHttp(lp.port) as c:
        c.send(handshake("/headers", key=key, extra=[("Sec-WebSocket-Protocol", "chat"), ("Origin", "http://o.example")]))
        _, status, _, headers = c.read_head()
        assert status == 101
        assert header(headers, "Sec-WebSocket-Accept") == accept_of(key)
        assert header(headers, "Upgrade").lower() == "websocket"
        opcode, payload = read_frame(c)
    assert opcode == 1
    seen = {k.lower(): v for k, v in json.loads(payload)}
    assert seen["upgrade"].lower() == "websocket"
    assert "upgrade" in seen["connection"].lower()
    assert seen["sec-websocket-key"] == key
    assert seen["sec-websocket-version"] == "13"
    assert seen["sec-websocket-protocol"] == "chat"
    assert seen["origin"] == "http://o.example"
    assert seen["x-forwarded-for"].split(",")[-1].strip() == "127.0.0.1"


def test_client_frame_sent_with_the_upgrade_head(lp):
    """Bytes that arrive with the request head belong to the tunnel and must be forwarded."""
    with RawHttp(lp.port) as c:
        c.send(handshake("/echo") + client_frame(b"sent with the head"))
        _, status, _, _ = c.read_head()
        assert status == 101
        assert read_frame(c) == (1, b"sent with the head")


def test_backend_frame_sent_with_the_101(lp):
    """The raw backend writes the 101 and a first frame in one write()."""
    with RawHttp(lp.ports[1]) as c:
        c.send(handshake("/ws-raw-hello"))
        _, status, _, _ = c.read_head()
        assert status == 101
        assert read_frame(c) == (1, b"hello-after-101 from wh1")


def test_plain_request_on_a_websocket_listener_still_works(lp):
    with RawHttp(lp.ports[1]) as c:
        r = c.request("GET", "/echo?plain")
    assert r.status == 200 and r.json()["path"] == "/echo?plain"


def test_idle_tunnel_closed_after_tunnel_idle_timeout(cluster):
    ws = cluster.backend("wi", kind="ws")
    lp = cluster.limpet([ws], listener={"tunnel_idle_timeout": "1s"})

    async def go():
        async with connect(ws_url(lp, "/echo")) as conn:
            for i in range(4):  # traffic every 0.4 s keeps it open past the 1 s timeout
                if i:
                    await asyncio.sleep(0.4)
                await conn.send("busy")
                assert await conn.recv() == "busy"
            t0 = time.monotonic()  # idle from here
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(conn.recv(), 5)
            return time.monotonic() - t0
    idle = run(go())
    assert 0.8 <= idle <= 3.5, idle


def test_backend_killed_under_open_tunnel(cluster):
    ws = cluster.backend("wk", kind="ws")
    lp = cluster.limpet([ws])

    async def go():
        async with connect(ws_url(lp, "/echo")) as conn:
            await conn.send("alive?")
            assert await conn.recv() == "alive?"
            ws.kill()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(conn.recv(), 10)  # the tunnel closes; it does not hang
    run(go())
    lp.assert_alive()


# ---- raw WebSocket helpers ---------------------------------------------------------------------

def handshake(path, key="dGhlIHNhbXBsZSBub25jZQ==", extra=()):
    lines = [f"GET {path} HTTP/1.1", "Host: ws.test", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def accept_of(key):
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def client_frame(payload, opcode=1):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(c):
    b0, b1 = c.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", c.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", c.read_exact(8))[0]
    mask = c.read_exact(4) if b1 & 0x80 else None
    payload = c.read_exact(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


# ---- malformed client frames (issue 12): Close 1002 for that tunnel, nothing else disturbed ---

BAD_FRAMES = {
    "unmasked": struct.pack("!BB", 0x81, 3) + b"abc",
    "reserved_opcode": client_frame(b"x", opcode=3),
    "reserved_control_opcode": client_frame(b"x", opcode=0xB),
    "length_top_bit": struct.pack("!BBQ", 0x82, 0x80 | 127, (1 << 63) | 5) + os.urandom(4) + b"abcde",
    "fragmented_ping": bytes([0x09]) + client_frame(b"p", opcode=9)[1:],
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_malformed_client_frame_closes_that_tunnel_with_1002(lp, case):
    with RawHttp(lp.port) as neighbour, RawHttp(lp.port) as c:
        for conn in (neighbour, c):
            conn.send(handshake("/echo"))
            assert conn.read_head()[1] == 101
        c.send(client_frame(b"before"))
        assert read_frame(c) == (1, b"before")
        c.send(BAD_FRAMES[case])
        opcode, payload = read_frame(c)
        assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1002
        assert c.read_to_eof() == b""  # nothing after the Close, then closed
        neighbour.send(client_frame(b"still here"))  # the other tunnel of the same worker goes on
        assert read_frame(neighbour) == (1, b"still here")


def test_a_frame_split_byte_by_byte_and_100000_tiny_frames(lp):
    with RawHttp(lp.port) as neighbour, RawHttp(lp.port) as c:
        for conn in (neighbour, c):
            conn.send(handshake("/echo"))
            assert conn.read_head()[1] == 101
        for byte in client_frame(b"one byte at a time"):
            c.send(bytes([byte]))
        assert read_frame(c) == (1, b"one byte at a time")
        c.send(b"".join(client_frame(b"") for _ in range(100000)))
        neighbour.send(client_frame(b"not stalled"))
        assert read_frame(neighbour) == (1, b"not stalled")
        for _ in range(100000):
            assert read_frame(c) == (1, b"")
