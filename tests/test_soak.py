"""The chaos soak, short version (issue 5, part 4), and single requests that must not kill it.

`test_chaos_soak` runs tests/soak.py for 8 s against the real server with small limits: 200
healthy users chatting (sequence-numbered messages, a few draft-76 users, fragments with
pings between them) while ~30 connections a second misbehave (RST, half-close, half-open,
byte-by-byte handshakes, garbage, oversized frames, idle, page fetches) and three users stop
reading and flood pings until --max-buffer drops them. See soak.py for what is checked.
About 11 s here. The long version is `make soak` (SOAK_DURATION=180 by default).

SOAK_SEED=N picks another sequence of chaos (the default is fixed, for reproducible runs).
"""
from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable

import pytest
import soak
from conftest import ServerProcess
from wsclient import Client, close_payload, frame


def test_chaos_soak(start_server: Callable[..., ServerProcess]) -> None:
    config = soak.Config(users=200, duration=8.0, seed=int(os.environ.get("SOAK_SEED", "5")))
    server = start_server(*config.server_args())
    report = soak.run(server.port, server.proc.pid, lambda: server.log,
                      lambda: server.proc.poll() is None, config)
    print(report.summary())  # shown with -s, or when the test fails
    assert report.problem_count == 0, report.summary()
    assert report.stats["accepted"] > 1000 and report.stats["deliveries"] > 200_000
    assert report.stats["dropped_slow"] >= config.flooders
    assert server.stop() == 0, server.log[-2000:]
    assert "Traceback" not in server.log


# One request each, found by tests/test_properties.py, that used to stop the whole server
# (fixed in 2cf76f8): the loop catches HttpError and ProtocolError only, so any other
# exception from the handshake path ended `serve_forever`, and every connected user with it.
HOSTILE_REQUESTS = {
    # legacy.key_part(): int() of more than 4300 digits raised ValueError (Python >= 3.10.7).
    "draft-76 key of 4301 digits": (
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key1: " + b"1" * 4301 + b" \r\nSec-WebSocket-Key2: 1 2\r\n\r\n12345678",
        400),
    # http.resolve(): Path.is_dir() raised OSError(ENAMETOOLONG) for a 256-byte file name.
    "page path with a 256-byte name": (
        b"GET /" + b"a" * 256 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 404),
}


@pytest.mark.parametrize("name", list(HOSTILE_REQUESTS))
def test_one_request_cannot_stop_the_server(chat_server: ServerProcess, name: str) -> None:
    request, status = HOSTILE_REQUESTS[name]
    with Client(chat_server.port, timeout=5) as bystander:
        bystander.handshake()
        with Client(chat_server.port, timeout=5) as attacker:
            attacker.send(request)
            try:
                answer = attacker.read_to_eof()
            except OSError as exc:  # reset: the server process is gone
                answer = repr(exc).encode()
        time.sleep(0.3)
        assert chat_server.proc.poll() is None, (
            f"the server exited ({chat_server.proc.returncode}) on one request:\n"
            + chat_server.log[-1500:])
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert "Traceback" not in chat_server.log
        bystander.send_text("still here")  # the other user was not affected
        assert bystander.recv_message() == "still here"


def test_close_answer_survives_a_ping_after_the_peers_close(echo_server: ServerProcess) -> None:
    """A client sends a 300 kB message and its close frame, reads slowly, and sends one ping
    after its close (RFC 6455 §5.5.1 forbids only *data* frames after a close; Autobahn 7.1.6
    does the same). It must still receive the whole echo and the server's close frame.

    Fails since 2cf76f8 ("close at once after a peer's close"): the server hands its last
    bytes to the kernel and close()s the socket at once; the ping then reaches an orphaned
    socket, Linux answers it with a RST and discards the unsent data, so the client gets
    ~16 kB, no close frame, and ECONNRESET. Before (ea84b9c) the server half-closed and kept
    reading until the peer's EOF (`_linger`), and the client got all 300014 bytes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a slow reader
    sock.settimeout(5)
    with sock:
        sock.connect(("127.0.0.1", echo_server.port))
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "no handshake answer"
            data += chunk
        data = data.split(b"\r\n\r\n", 1)[1]
        sock.sendall(frame(0x2, b"z" * 300_000) + frame(0x8, close_payload(1000)))
        data += sock.recv(4096)
        time.sleep(0.2)  # the server has queued everything by now
        sock.sendall(frame(0x9, b"still there?"))
        error = None
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            error = exc
    expected = struct.pack("!BBQ", 0x82, 127, 300_000) + b"z" * 300_000 + b"\x88\x02\x03\xe8"
    assert error is None and data == expected, (
        f"got {len(data)} of {len(expected)} bytes, close frame at the end: "
        f"{data.endswith(expected[-4:])}, error: {error!r}")
