"""Benchmark adapter: `websocket-server` (Pithikos), one thread per connection.

Chat fan-out is its `send_message_to_all`; echo is `send_message` to the sender. Only the listen
backlog is changed (socketserver's default is 5), so that the connect phase is not throttled.
"""
from __future__ import annotations

import logging

from _common import BACKLOG, announce, parse_args, raise_nofile
from websocket_server import WebsocketServer


class Server(WebsocketServer):
    request_queue_size = BACKLOG


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    server = Server(host=args.host, port=args.port, loglevel=logging.ERROR,
                    key=args.keyfile, cert=args.certfile)  # wss://: its key=/cert= (per thread)

    def chat(client: dict[str, object], srv: WebsocketServer, message: str) -> None:
        srv.send_message_to_all(message)

    def echo(client: dict[str, object], srv: WebsocketServer, message: str) -> None:
        srv.send_message(client, message)

    server.set_fn_message_received(chat if args.mode == "chat" else echo)
    announce(args.host, server.port)
    try:
        server.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
