"""The client's permessage-deflate (RFC 7692), against the `websockets` server from .venv
(code nobody here wrote, which negotiates it by default) and against scripted servers for
what no honest server sends (a deflate bomb, RSV1 where it is not allowed).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from conftest import ROOT
from test_client import ScriptedServer, read_events

from websocket.client import ConnectionClosed, HandshakeFailed, connect
from websocket.client.deflate import agree
from websocket.protocol.frames import Opcode, encode_frame
from websocket.protocol.messages import Close

try:
    import websockets.sync.server as websockets_sync  # requirements-dev.txt
except ImportError:  # pragma: no cover - .venv has it
    if os.environ.get("CI") == "true":
        raise  # under CI a missing tool is a failure, never a skip
    pytest.skip("the websockets package is not installed", allow_module_level=True)

TIMEOUT = 10.0
DEFLATE_ANSWER = b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"


@dataclass
class PeerServer:
    url: str
    extensions: list[str] = field(default_factory=list)  # what it agreed, per connection


@pytest.fixture
def websockets_echo() -> Iterator[PeerServer]:
    """The `websockets` library's own server, echoing, with its default compression."""
    seen: list[str] = []

    def echo(ws: websockets_sync.ServerConnection) -> None:
        seen.append(", ".join(type(ext).__name__ for ext in ws.protocol.extensions))
        for message in ws:
            ws.send(message)

    server = websockets_sync.serve(echo, "127.0.0.1", 0, compression="deflate")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    try:
        yield PeerServer(f"ws://127.0.0.1:{port}/", seen)
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_compressed_both_ways_with_the_websockets_server(websockets_echo: PeerServer) -> None:
    blocks: list[str] = []
    text = "the same words again and again " * 400  # 12,400 bytes that compress well
    with connect(websockets_echo.url, compression=True, trace=blocks.append) as ws:
        assert ws.deflate is not None
        ws.send(text)
        assert ws.recv(TIMEOUT) == text
        ws.send(bytes(50_000))
        assert ws.recv(TIMEOUT) == bytes(50_000)
        ws.send(text, fragment_size=100)  # compressed, then cut in frames (§6.1: RSV1 once)
        assert ws.recv(TIMEOUT) == text
        ws.send("hi")  # below DEFAULT_MIN_SIZE: sent as it is
        assert ws.recv(TIMEOUT) == "hi"
        assert ws.close() == (1000, "")
    assert websockets_echo.extensions == ["PerMessageDeflate"]  # it really agreed
    notes = [block for block in blocks if "bytes inflated (RFC 7692)" in block]
    sent = [note for note in notes if "client->server" in note.split("\n")[0]]
    received = [note for note in notes if "server->client" in note.split("\n")[0]]
    assert len(sent) == 3 and len(received) >= 3
    for note in sent[:1] + received[:1]:
        wire = int(note.split("permessage-deflate: ")[1].split(" ")[0])
        assert f"{wire} bytes on the wire, 12400 bytes inflated" in note and wire < 1000
    frames = [block for block in blocks if "RFC 6455 frame" in block]
    assert any("client->server" in b and "RSV1 1" in b for b in frames)
    assert any("server->client" in b and "RSV1 1" in b for b in frames)
    assert any("client->server" in b and "|hi|" in b and "RSV1 0" in b for b in frames)


def test_without_compression_nothing_is_offered(websockets_echo: PeerServer) -> None:
    with connect(websockets_echo.url) as ws:
        assert ws.deflate is None and ws.extensions == ()
        ws.send("plain " * 100)
        assert ws.recv(TIMEOUT) == "plain " * 100
    assert websockets_echo.extensions == [""]


def test_terminal_compresses_with_the_websockets_server(websockets_echo: PeerServer) -> None:
    line = "a terminal line, long enough to be compressed, " * 4
    proc = subprocess.run(
        [sys.executable, "-m", "websocket.client", websockets_echo.url, "--trace"],
        input=line + "\n", capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [line]
    assert "(permessage-deflate): type a line" in proc.stderr
    assert f"bytes on the wire, {len(line)} bytes inflated" in proc.stderr
    assert "closed: the server answered 1000 (normal)" in proc.stderr


def test_a_deflate_bomb_fails_with_1009_before_it_is_inflated() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert bomb.endswith(b"\x00\x00\xff\xff") and len(bomb) < 100_000

    def script(sock, receiver, inbuf) -> None:  # type: ignore[no-untyped-def]
        frame = bytearray(encode_frame(Opcode.BINARY, bomb[:-4]))
        frame[0] |= 0x40  # RSV1: compressed (RFC 7692 §6)
        sock.sendall(frame)
        (close,) = read_events(sock, receiver, inbuf, 1)
        assert isinstance(close, Close) and close.code == 1009

    server = ScriptedServer(script, answer=lambda response: response[:-2] + DEFLATE_ANSWER)
    ws = connect(server.url, compression=True, max_message_size=1 << 20)
    assert ws.deflate is not None
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert closed.value.code == 1009 and closed.value.by == "client"
    assert time.monotonic() - started < 5
    server.join()


@pytest.mark.parametrize("frames", [
    # RSV1 on a continuation frame (RFC 7692 §6.1: only the first frame carries it)
    [(0x01, b"x", False, True), (0x00, b"y", True, True)],
    # RSV1 on a control frame (§6.1: not for control frames)
    [(0x09, b"", True, True)],
])
def test_rsv1_where_it_does_not_belong_fails_with_1002(
        frames: list[tuple[int, bytes, bool, bool]]) -> None:
    def script(sock, receiver, inbuf) -> None:  # type: ignore[no-untyped-def]
        for opcode, payload, fin, rsv1 in frames:
            data = bytearray(encode_frame(opcode, zlib_piece(payload), fin))
            if rsv1:
                data[0] |= 0x40
            sock.sendall(data)
        (close,) = read_events(sock, receiver, inbuf, 1)
        assert isinstance(close, Close) and close.code == 1002

    server = ScriptedServer(script, answer=lambda response: response[:-2] + DEFLATE_ANSWER)
    ws = connect(server.url, compression=True)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert closed.value.code == 1002
    server.join()


def zlib_piece(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_rsv1_without_agreement_fails_with_1002() -> None:
    def script(sock, receiver, inbuf) -> None:  # type: ignore[no-untyped-def]
        sock.sendall(b"\xc1\x01x")  # FIN, RSV1, text: but nothing was agreed
        (close,) = read_events(sock, receiver, inbuf, 1)
        assert isinstance(close, Close) and close.code == 1002

    server = ScriptedServer(script)  # answers without the extension
    ws = connect(server.url, compression=True)
    assert ws.deflate is None
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert closed.value.code == 1002
    server.join()


def test_answers_the_client_accepts_and_refuses() -> None:
    agreed = agree("permessage-deflate; server_no_context_takeover; client_max_window_bits=10")
    assert agreed.server_no_context_takeover and not agreed.client_no_context_takeover
    assert (agreed.server_max_window_bits, agreed.client_max_window_bits) == (15, 10)
    assert agree("permessage-deflate; client_max_window_bits=8").deflater() is None
    for bad in ("permessage-deflate; foo", "permessage-deflate; server_max_window_bits=07",
                "permessage-deflate; server_max_window_bits=16",
                "permessage-deflate; server_max_window_bits",
                "permessage-deflate; client_no_context_takeover=1",
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                "permessage-deflate; a=\"", "x-webkit-deflate-frame"):
        with pytest.raises(HandshakeFailed):
            agree(bad)


def test_two_threads_sending_compressed_messages(websockets_echo: PeerServer) -> None:
    """One compressor, two senders: the stream must leave in the order it was compressed
    (the server's inflater follows it), and fragments must not interleave."""
    count = 400
    sent = [f"thread {who} message {n} " * 8 for who in (1, 2) for n in range(count)]
    with connect(websockets_echo.url, compression=True) as ws:
        def send(who: int) -> None:
            for text in sent[(who - 1) * count:who * count]:
                ws.send(text, fragment_size=5 if who == 2 else None)

        senders = [threading.Thread(target=send, args=(who,)) for who in (1, 2)]
        for sender in senders:
            sender.start()
        received = [ws.recv(TIMEOUT) for _ in sent]
        for sender in senders:
            sender.join(TIMEOUT)
    assert sorted(received) == sorted(sent)  # (websockets fails the connection otherwise)
