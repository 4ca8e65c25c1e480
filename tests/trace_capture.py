"""One real chat recorded by the server's own `--trace`, for docs/walkthrough.md.

    python3 tests/trace_capture.py > capture.txt

starts `server.py 127.0.0.1 0 --trace`, runs one chat (alice and bob over RFC 6455, carol
over draft-76 as in the article, then the three closing handshakes) and prints the server's
log from its first traced block to its last: exactly what an operator sees with --trace.
tests/test_walkthrough.py runs it again and compares the shape of what it prints (block by
block; keys, masks and ports differ from run to run) with the capture in the walkthrough.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import ServerProcess  # noqa: E402
from wsclient import Client, draft76_request  # noqa: E402

from websocket.client import connect  # noqa: E402

TIMEOUT = 10.0
# A block's first line in the log: time, level, connection, peer, direction, what.
TITLE = re.compile(r"^\d\d:\d\d:\d\d INFO +(#\d+) \S+ (client->server|server->client) +(.*)$",
                   re.M)


def titles(log: str) -> list[str]:
    """Each traced block's title without the time and the client's port: comparable."""
    return [f"{number} {direction} {what}" for number, direction, what in TITLE.findall(log)]


def settle() -> None:
    """Let one step of the chat cross both ways before the next, so the capture reads in
    the order things happened."""
    time.sleep(0.2)


def chat(limit: int = 64) -> str:
    """One chat with a `--trace` server; returns the traced part of its log."""
    server = ServerProcess("--trace", "--trace-bytes", str(limit))
    url = f"ws://127.0.0.1:{server.port}/"
    try:
        alice = connect(url, origin=f"http://127.0.0.1:{server.port}")
        settle()
        bob = connect(url, origin=f"http://127.0.0.1:{server.port}")
        settle()
        carol = Client(server.port)  # draft-76, the article's generation, by hand
        carol.send(draft76_request(server.port))
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
    lines = server.log.splitlines()
    first = next(i for i, line in enumerate(lines) if TITLE.match(line))
    last = max(i for i, line in enumerate(lines) if TITLE.match(line) or line.startswith("  "))
    return "\n".join(lines[first:last + 1]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(chat())
