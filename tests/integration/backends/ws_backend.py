#!/usr/bin/env python3
"""WebSocket backend for limpet's integration tests (Debian python3-websockets 10.x, asyncio).

Paths:
  /echo      echoes every message (text stays text, binary stays binary)
  /hello     sends "hello from NAME" right after the handshake, then echoes
  /headers   sends the upgrade request's headers as JSON first, then echoes
  /refuse    refuses the upgrade: 403 with body "refused by NAME"
  /bye       closes the connection at once with code 4001, reason "bye"
  anything else: echo

--port 0 picks a free port; it is printed as "PORT <n>" and written to --port-file.
"""

import argparse
import asyncio
import json
import os
import signal
from http import HTTPStatus

import websockets

NAME = "ws"


async def process_request(path, headers):
    if path.split("?")[0] == "/refuse":
        body = ("refused by %s\n" % NAME).encode()
        return (HTTPStatus.FORBIDDEN,
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                 ("X-Backend", NAME)],
                body)
    return None


async def handler(ws):
    path = ws.path.split("?")[0]
    if path == "/hello":
        await ws.send("hello from " + NAME)
    elif path == "/bye":
        await ws.close(4001, "bye")
        return
    elif path == "/headers":
        await ws.send(json.dumps([[k, v] for k, v in ws.request_headers.raw_items()]))
    async for message in ws:
        await ws.send(message)


async def serve(args):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with websockets.serve(handler, args.host, args.port,
                                process_request=process_request,
                                max_size=16 * 1024 * 1024,
                                compression=None,
                                ping_interval=None,
                                server_header="limpet-test-ws-backend") as server:
        port = server.sockets[0].getsockname()[1]
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, args.port_file)
        print("PORT %d" % port, flush=True)
        await stop


def main():
    global NAME
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="ws")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    NAME = args.name
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
