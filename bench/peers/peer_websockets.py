"""Benchmark adapter: the `websockets` library (asyncio), chat fan-out with its `broadcast()`.

Compression is off (permessage-deflate would measure zlib, not the server) unless --deflate:
then it is websockets' default (`compression="deflate"`: a compressor and an inflater per
connection, context takeover, 12-bit windows). Keepalive pings are off (they would be extra
frames), and incoming messages may be up to 16 MiB. wss://: its `ssl=`.
"""
from __future__ import annotations

import asyncio

from _common import BACKLOG, MAX_MESSAGE, announce, parse_args, raise_nofile, server_context
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


async def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    users: set[ServerConnection] = set()

    async def chat(ws: ServerConnection) -> None:
        users.add(ws)
        try:
            async for message in ws:
                broadcast(users, message)
        except ConnectionClosed:  # the benchmark resets its connections when it is done
            pass
        finally:
            users.discard(ws)

    async def echo(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass

    handler = chat if args.mode == "chat" else echo
    compression = "deflate" if args.deflate else None
    async with serve(handler, args.host, args.port, compression=compression, ping_interval=None,
                     max_size=MAX_MESSAGE, backlog=BACKLOG,
                     ssl=server_context(args)) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        announce(args.host, port)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
