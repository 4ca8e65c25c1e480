"""Benchmark adapter: `simple-websocket-server` (dpallot), a select.select() loop.

Chat fan-out sends to every entry of the server's `connections`; echo answers the sender. Only
the listen backlog is changed (its default is 5). Like any select() server it cannot watch file
descriptors above FD_SETSIZE (1,024): past that, select() raises and the process ends.
"""
from __future__ import annotations

from _common import BACKLOG, announce, parse_args, raise_nofile, server_context
from simple_websocket_server import WebSocket, WebSocketServer


class Server(WebSocketServer):
    request_queue_size = BACKLOG


class Chat(WebSocket):
    def handle(self) -> None:
        for user in list(self.server.connections.values()):
            if user.handshaked:
                user.send_message(self.data)


class Echo(WebSocket):
    def handle(self) -> None:
        self.send_message(self.data)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    # wss://: its ssl_context= (the TLS handshake is done inside its select() loop).
    server = Server(args.host, args.port, Chat if args.mode == "chat" else Echo,
                    ssl_context=server_context(args))
    announce(args.host, server.serversocket.getsockname()[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
