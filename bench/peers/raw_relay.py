"""Benchmark baseline: a raw-TCP relay, no WebSocket and no framing at all (stdlib only).

One process, a `selectors` loop; whatever bytes a user sends are passed on as they are, read
--chunk bytes at a time (the benchmark's message size: one recv() per message), one
send() per delivery: to every connected user (chat) or back to the sender (echo). What is left
unsent when a socket is full waits in that user's buffer until it is writable. This is what the
system calls alone cost a pure-Python single process: a floor for any Python WebSocket server.
"""
from __future__ import annotations

import argparse
import selectors
import socket

from _common import BACKLOG, announce, raise_nofile

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("chat", "echo"), default="chat")
    parser.add_argument("--chunk", type=int, default=65536,
                        help="bytes per recv(): the benchmark passes its message size, so that "
                        "every message is one recv() and every delivery one send()")
    args = parser.parse_args()
    chunk = args.chunk
    raise_nofile()
    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    sel.register(listener, READ)
    pending: dict[socket.socket, bytearray] = {}  # user -> bytes waiting for writability
    chat = args.mode == "chat"

    def drop(user: socket.socket) -> None:
        if user in pending:
            sel.unregister(user)
            del pending[user]
            user.close()

    def deliver(user: socket.socket, data: bytes) -> None:
        backlog = pending[user]
        if backlog:
            backlog += data
            return
        try:
            sent = user.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            drop(user)
            return
        if sent < len(data):
            backlog += data[sent:]
            sel.modify(user, READ | WRITE)

    announce(args.host, listener.getsockname()[1])
    while True:
        for key, events in sel.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    user, _ = listener.accept()
                except BlockingIOError:
                    continue
                user.setblocking(False)
                user.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending[user] = bytearray()
                sel.register(user, READ)
                continue
            assert isinstance(sock, socket.socket)
            if events & WRITE and sock in pending:
                backlog = pending[sock]
                try:
                    sent = sock.send(backlog)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    drop(sock)
                    continue
                del backlog[:sent]
                if not backlog:
                    sel.modify(sock, READ)
            if events & READ and sock in pending:
                try:
                    data = sock.recv(chunk)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    drop(sock)
                    continue
                if chat:
                    for user in list(pending):
                        deliver(user, data)
                else:
                    deliver(sock, data)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
