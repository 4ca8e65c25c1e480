"""A loopback relay that records a real chat with websocket.trace's ConnectionTrace.

`--trace` is not in the server yet (another branch), so docs/walkthrough.md's capture is
made here instead: the real server (`server.py 127.0.0.1 0`), real clients, and between
them a relay that passes every byte on unchanged and feeds a copy of each direction to a
ConnectionTrace per connection. The bytes are exactly those of the chat; only where they
are read differs from what `--trace` will do inside the server.

    python3 tests/trace_relay.py > capture.txt

runs one chat (alice and bob over RFC 6455, carol over draft-76 as in the article) and
prints the trace. tests/test_walkthrough.py runs it again and compares the shape of what
it prints with the capture in the walkthrough.
"""
from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import ServerProcess  # noqa: E402
from wsclient import Client, draft76_request  # noqa: E402

from websocket.client import connect  # noqa: E402
from websocket.trace import ConnectionTrace  # noqa: E402

TIMEOUT = 10.0


class Relay:
    """Listens on a loopback port; each connection is passed on to `target` and traced."""

    def __init__(self, target: int, limit: int = 64) -> None:
        self.target = target
        self.limit = limit
        self.blocks: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._count = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed (or nobody came within TIMEOUT)
            self._count += 1
            server = socket.create_connection(("127.0.0.1", self.target), timeout=TIMEOUT)
            trace = ConnectionTrace(f"#{self._count}", self.limit)
            for source, sink, feed in ((client, server, trace.client_bytes),
                                       (server, client, trace.server_bytes)):
                thread = threading.Thread(target=self._pump, args=(source, sink, feed),
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, feed: object) -> None:
        source.settimeout(TIMEOUT)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)  # pass the FIN on
                except OSError:
                    pass
                return
            with self._lock:  # the trace sees each piece before it is passed on
                self.blocks.extend(feed(data))  # type: ignore[operator]
            sink.sendall(data)

    def close(self) -> None:
        self.sock.close()
        for thread in self._threads:
            thread.join(TIMEOUT)


def settle() -> None:
    """Let one step of the chat cross both ways before the next, so the capture reads in
    the order things happened (the relay's threads take turns)."""
    time.sleep(0.2)


def chat(limit: int = 64) -> str:
    """One chat through the relay; returns the trace text."""
    server = ServerProcess()
    relay = Relay(server.port, limit)
    url = f"ws://127.0.0.1:{relay.port}/"
    try:
        alice = connect(url, origin=f"http://127.0.0.1:{relay.port}")
        settle()
        bob = connect(url, origin=f"http://127.0.0.1:{relay.port}")
        settle()
        carol = Client(relay.port)  # draft-76, the article's generation, by hand
        carol.send(draft76_request(relay.port))
        carol.read_until(b"\r\n\r\n")
        carol.read_exactly(16)
        settle()
        alice.send("alice: hello bob")
        for user in (alice, bob):
            assert user.recv(TIMEOUT) == "alice: hello bob"
        assert carol.recv_hixie() == "alice: hello bob"
        settle()
        carol.send_hixie("carol: hi from 2010")
        for user in (alice, bob):
            assert user.recv(TIMEOUT) == "carol: hi from 2010"
        assert carol.recv_hixie() == "carol: hi from 2010"
        settle()
        carol.send(b"\xff\x00")  # draft-76's closing handshake
        assert carol.read_exactly(2) == b"\xff\x00"
        carol.close()
        settle()
        assert bob.close(1000, "bye")[0] == 1000
        settle()
        alice.close()
        settle()
    finally:
        server.stop()
        relay.close()
    return "\n".join(relay.blocks) + "\n"


if __name__ == "__main__":
    sys.stdout.write(chat())
