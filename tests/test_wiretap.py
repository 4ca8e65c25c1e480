"""`--trace` and `--trace-page` on the real server: every byte of a handshake and a message,
for all three protocol generations, in the log and on the /wire stream.

The expected values come from the RFCs and drafts (RFC 6455 §5.7 "Hello", the draft-76
worked example), not from the trace's own code.
"""
from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from conftest import ServerProcess
from tls import Certificates, certificates
from wsclient import Client, draft75_request, draft76_request, frame

from websocket.client import Connection, ConnectionClosed, HandshakeFailed, connect
from websocket.observe.tap import Tap, Tracer
from websocket.observe.trace import ConnectionTrace
from websocket.observe.wire import WireHub, parse_networks

__all__ = ["certificates"]  # a fixture, used by name
HELLO_MASK = bytes.fromhex("37fa213d")  # RFC 6455 §5.7
TIMEOUT = 10.0


def block_of(server: ServerProcess, start: str, timeout: float = TIMEOUT) -> str:
    """The first logged block whose first line contains `start`, with its lines."""
    server.wait_for_log(start, timeout)
    deadline = time.monotonic() + 2.0
    while True:
        lines = server.log.split("\n")
        first = next(i for i, line in enumerate(lines) if start in line)
        end = next((j for j in range(first + 1, len(lines))
                    if lines[j][:2] != "  "), None)
        if end is not None or time.monotonic() > deadline:
            return "\n".join(lines[first:end])
        time.sleep(0.05)  # the block's last lines may still be on their way


def test_rfc6455_handshake_and_hello_both_ways(start_server: Callable[..., ServerProcess]
                                               ) -> None:
    server = start_server("--trace")
    with Client(server.port) as client:
        client.handshake("/chat")
        client.send(frame(0x1, b"Hello", mask=HELLO_MASK))
        assert client.recv_message() == "Hello"
        client.close_handshake()
    request = block_of(server, "client->server  HTTP request head")
    assert "| GET /chat HTTP/1.1" in request
    assert "accept    Sec-WebSocket-Accept = base64(SHA-1(key + GUID))" in request
    response = block_of(server, "server->client  HTTP response head")
    assert "| HTTP/1.1 101 Switching Protocols" in response
    assert "Sec-WebSocket-Accept matches the key (RFC 6455 §4.1)" in response
    masked = block_of(server, "client->server  RFC 6455 frame, 11 bytes")
    assert "header    81 85 37 fa 21 3d" in masked  # RFC 6455 §5.7, masked "Hello"
    assert "mask      MASK 1, key 37 fa 21 3d" in masked
    assert "length    5 (7-bit form)" in masked
    assert "masked    00000000  7f 9f 4d 51 58" in masked
    assert "unmasked  00000000  48 65 6c 6c 6f" in masked and "|Hello|" in masked
    echoed = block_of(server, "server->client  RFC 6455 frame, 7 bytes")
    assert "header    81 05" in echoed and "MASK 0 (no key)" in echoed  # §5.7 unmasked
    closing = block_of(server, "server->client  RFC 6455 frame, 4 bytes")
    assert "close     code 1000 (normal)" in closing
    assert server.log.index("HTTP request head") < server.log.index("HTTP response head")


def test_length_forms_and_the_trace_bytes_cut(start_server: Callable[..., ServerProcess]
                                              ) -> None:
    server = start_server("--trace", "--trace-bytes", "8", "--callback", "echo")
    with Client(server.port) as client:
        client.handshake()
        client.send(frame(0x2, bytes(256)))
        assert client.recv_message() == bytes(256)
        client.send(frame(0x2, bytes(65536)))
        assert client.recv_message() == bytes(65536)
    medium = block_of(server, "server->client  RFC 6455 frame, 260 bytes")
    assert "header    82 7e 01 00" in medium  # RFC 6455 §5.7: 256 bytes
    assert "length    256 (16-bit form: 126, then 01 00)" in medium
    assert "cut       248 more payload bytes not shown (limit 8)" in medium
    large = block_of(server, "server->client  RFC 6455 frame, 65546 bytes")
    assert "header    82 7f 00 00 00 00 00 01 00 00" in large  # §5.7: 64 KiB
    assert "(64-bit form: 127, then 00 00 00 00 00 01 00 00)" in large


def test_draft76_key_arithmetic_step_by_step(start_server: Callable[..., ServerProcess]
                                             ) -> None:
    server = start_server("--trace")
    with Client(server.port) as client:
        client.send(draft76_request(server.port, "/demo"))
        client.read_until(b"\r\n\r\n")
        assert client.read_exactly(16) == b"8jKS'y:G*Co,Wxa-"  # the draft's answer
        client.send_hixie("Hi")
        assert client.recv_hixie() == "Hi"
        client.send(b"\xff\x00")
    request = block_of(server, "client->server  HTTP request head")
    # draft-76 §5.2's worked example: digits / spaces, for each key.
    assert "digits 4146546015, spaces 5: 4146546015 / 5 = 829309203" in request
    assert "digits 1299853100, spaces 5: 1299853100 / 5 = 259970620" in request
    assert "key3      5e 6e 3a 64 73 5b 34 55" in request  # "^n:ds[4U"
    assert "MD5 in    00000000  31 6e 41 13 0f 7e d6 3c  5e 6e 3a 64 73 5b 34 55" in request
    assert "|8jKS'y:G*Co,Wxa-|" in request
    response = block_of(server, "server->client  HTTP response head")
    assert "matches the MD5 of the request's keys (draft-76 §4.1)" in response
    text = block_of(server, "client->server  draft-75/76 text frame, 4 bytes")
    assert "frame     00 ... ff: 0x00, 2 bytes of UTF-8 text, then 0xff" in text
    assert "|Hi|" in text
    assert "draft-76 closing frame" in block_of(server, "client->server  draft-76 closing")


def test_draft75_frames(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace")
    with Client(server.port) as client:
        client.send(draft75_request(server.port))
        client.read_until(b"\r\n\r\n")
        client.send_hixie("old")
        assert client.recv_hixie() == "old"
    assert "| Upgrade: WebSocket" in block_of(server, "client->server  HTTP request head")
    assert "|old|" in block_of(server, "server->client  draft-75/76 text frame, 5 bytes")


def test_bad_request_is_traced_with_its_answer(start_server: Callable[..., ServerProcess]
                                               ) -> None:
    server = start_server("--trace")
    with Client(server.port) as client:
        client.send(b"NONSENSE\r\n\r\n")
        status, _, _ = client.http_response()
    assert status == 400
    assert "| NONSENSE" in block_of(server, "client->server  HTTP request head")
    assert "| HTTP/1.1 400" in block_of(server, "server->client  HTTP response head")


def test_without_trace_nothing_is_traced(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as client:
        client.handshake()
        client.send_text("quiet")
        assert client.recv_message() == "quiet"
        client.close_handshake()
    chat_server.wait_for_log("left: 1000")
    assert "client->server" not in chat_server.log
    assert "server->client" not in chat_server.log


# -- the /wire stream ---------------------------------------------------------------------


def wire_items(viewer: Connection, until: Callable[[dict[str, object]], bool]
               ) -> list[dict[str, object]]:
    """Messages from a /wire viewer until one satisfies `until` (or fail on timeout)."""
    items = []
    deadline = time.monotonic() + TIMEOUT
    while True:
        data = viewer.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(data, str)
        item = json.loads(data)
        items.append(item)
        if until(item):
            return items


def test_wire_stream_shows_a_chat_message_and_never_itself(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page")
    server.wait_for_log(r"Wire page\s*: http://127\.0\.0\.1:\d+/wire")
    with connect(f"ws://127.0.0.1:{server.port}/wire") as viewer:
        with connect(server.ws_url) as alice:
            alice.send("over the wire")
            assert alice.recv(timeout=TIMEOUT) == "over the wire"
            items = wire_items(viewer, lambda item: "|over the wire|" in str(item["text"])
                               and "server->client" in str(item["text"]))
        texts = [str(item["text"]) for item in items]
        assert any("client->server  HTTP request head" in text for text in texts)
        assert any("unmasked" in text and "|over the wire|" in text for text in texts)
        try:
            while True:  # the rest: alice's closing handshake
                data = viewer.recv(timeout=0.5)
                assert isinstance(data, str)
                items.append(json.loads(data))  # every message is a trace block...
        except TimeoutError:
            pass
        assert all(set(item) == {"conn", "text"} for item in items)  # ... not a chat line
        assert any("close     code 1000" in str(item["text"]) for item in items)
        ids = {item["conn"] for item in items}
        assert len(ids) == 1  # alice's connection only: the viewer's is not traced
    assert "client->server" not in server.log  # --trace-page alone does not log blocks


def test_wire_viewer_is_not_a_chat_user(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page")
    with connect(f"ws://127.0.0.1:{server.port}/wire") as viewer:
        with connect(server.ws_url) as alice:
            alice.send("hello")
            assert alice.recv(timeout=TIMEOUT) == "hello"
        server.wait_for_log("user 2 .* left: 1000")
        for item in wire_items(viewer, lambda item: "close" in str(item["text"])
                               and "server->client" in str(item["text"])):
            assert item["conn"] == 2  # the viewer was connection 1: never shown
    server.wait_for_log("wire viewer left")
    assert "user 1 " not in server.log  # the viewer never joined the chat


def test_wire_page_exists_only_with_the_option(chat_server: ServerProcess) -> None:
    for path in ("/wire", "/wire.html", "/wire.js", "/wire.css"):
        with Client(chat_server.port) as client:
            client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, _ = client.http_response()
            assert status == 404, path


def test_wire_page_is_served(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page")
    with Client(server.port) as client:
        client.send(b"GET /wire HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = client.http_response()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="wire.js" defer></script>' in body
    assert b"Content-Security-Policy" in body


def test_who_may_watch() -> None:
    hub = WireHub(1 << 20, 1.0, parse_networks(["10.1.2.0/24", "2001:db8::7"]))
    assert hub.may_watch(("127.0.0.1", 5000)) and hub.may_watch(("127.8.9.10", 5000))
    assert hub.may_watch(("::1", 5000, 0, 0)) and hub.may_watch(("::ffff:127.0.0.1", 1))
    assert hub.may_watch(("10.1.2.99", 5000)) and hub.may_watch(("2001:db8::7", 1, 0, 0))
    assert not hub.may_watch(("10.1.3.1", 5000)) and not hub.may_watch(("192.168.1.2", 1))
    assert not hub.may_watch(("2001:db8::8", 1, 0, 0)) and not hub.may_watch("/tmp/sock")
    with pytest.raises(ValueError):
        parse_networks(["not-an-address"])


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (the route to a public address)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for a UDP connect
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_wire_refused_from_outside_unless_allowed(start_server: Callable[..., ServerProcess]
                                                  ) -> None:
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    server = start_server("--trace-page", address="0.0.0.0")
    with pytest.raises(HandshakeFailed) as refused:
        connect(f"ws://{outside}:{server.port}/wire")
    assert refused.value.status == 403
    with Client(server.port, host=outside) as client:
        client.send(b"GET /wire HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = client.http_response()
    assert status == 403 and b"--trace-page-from" in body
    allowed = start_server("--trace-page", "--trace-page-from", outside, address="0.0.0.0")
    with connect(f"ws://{outside}:{allowed.port}/wire") as viewer:
        with connect(allowed.ws_url) as alice:
            alice.send("seen outside")
            wire_items(viewer, lambda item: "|seen outside|" in str(item["text"]))


def test_a_viewer_that_does_not_read_is_dropped_and_the_chat_goes_on(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page", "--max-buffer", "256K", "--trace-bytes", "1024")
    stalled = Client(server.port)  # a viewer that upgrades and then never reads
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.send(stalled.upgrade_request("/wire")[0])
    try:
        with connect(server.ws_url) as alice:
            worst = 0.0
            deadline = time.monotonic() + 30
            line = "x" * 1000
            count = 0
            while "wire viewer is not reading" not in server.log:
                assert time.monotonic() < deadline, "the stalled viewer was never dropped"
                start = time.monotonic()
                alice.send(f"{count} {line}")
                assert alice.recv(timeout=TIMEOUT) == f"{count} {line}"
                worst = max(worst, time.monotonic() - start)
                count += 1
            alice.send("after")
            assert alice.recv(timeout=TIMEOUT) == "after"
        print(f"viewer dropped after {count} messages; healthy user's worst round trip "
              f"{worst * 1000:.1f} ms")
        assert worst < 1.0
    finally:
        stalled.close()


def test_a_failing_trace_stops_the_trace_not_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(ConnectionTrace):
        def client_bytes(self, data: bytes | bytearray | memoryview) -> list[str]:
            raise RuntimeError("a bug in the trace")

    emitted: list[tuple[int, str]] = []

    class Collect:
        def publish(self, conn_id: int, block: str) -> None:
            emitted.append((conn_id, block))

    tap = Tap(Broken("#9"), Tracer(64, to_log=False, publisher=Collect()), 9)
    with caplog.at_level(logging.ERROR, logger="websocket.trace"):
        tap.received(b"GET / HTTP/1.1\r\n\r\n")  # does not raise
        tap.received(b"more")  # and is not tried again
    assert tap.broken and emitted == []
    assert [r.getMessage() for r in caplog.records] == [
        "trace of connection #9 failed; it is traced no further"]
    tap.sent(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert emitted == []  # nothing more from this connection, either way


def test_a_tls_connection_says_so_first(certificates: Certificates) -> None:
    """A connection whose socket is TLS (as the TLS issue's connections are) starts its
    trace with the version and cipher, then shows the decrypted bytes."""
    plain_server, plain_client = socket.socketpair()
    with plain_server, plain_client:
        server_side = certificates.server_context().wrap_socket(
            plain_server, server_side=True, do_handshake_on_connect=False)
        client_side = certificates.client_context().wrap_socket(
            plain_client, server_hostname="localhost", do_handshake_on_connect=False)
        shaking = threading.Thread(target=client_side.do_handshake)
        shaking.start()
        server_side.do_handshake()
        shaking.join(TIMEOUT)
        emitted: list[str] = []

        class Collect:
            def publish(self, conn_id: int, block: str) -> None:
                emitted.append(block)

        @dataclass
        class FakeConnection:
            sock: ssl.SSLSocket
            inbuf: bytearray = field(default_factory=bytearray)
            tap: Tap | None = None
            outbuf: list[bytes] = field(default_factory=list)
            out_offset: int = 0

        @dataclass
        class FakeUser:
            conn: FakeConnection
            id: int = 4
            peer: str = "127.0.0.1:4444"

        conn = FakeConnection(server_side, bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        tracer = Tracer(64, to_log=False, publisher=Collect())
        tracer.viewers_changed(1)  # someone watches: connections get their taps
        tracer.attach(FakeUser(conn))  # type: ignore[arg-type]
        assert len(emitted) == 2
        assert emitted[0].startswith("#4 127.0.0.1:4444 TLS  TLSv1.")
        assert emitted[0].endswith(": the bytes below are shown decrypted")
        assert server_side.cipher()[0] in emitted[0]  # type: ignore[index]
        assert emitted[1].startswith("#4 127.0.0.1:4444 client->server  HTTP request head")
        client_side.close()
        server_side.close()


def test_frames_in_the_request_packet_are_traced_once_in_order(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace", "--callback", "echo")
    with Client(server.port) as client:
        request, _ = client.upgrade_request()
        client.send(request + frame(0x1, b"Hello", mask=HELLO_MASK)
                    + frame(0x1, b"again", mask=HELLO_MASK))  # one packet: head and frames
        client.read_until(b"\r\n\r\n")
        assert client.recv_message() == "Hello"
        assert client.recv_message() == "again"
    deadline = time.monotonic() + TIMEOUT
    while server.log.count("|again|") < 2:  # the echo's block may still be on its way
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    log = server.log
    assert log.count("client->server  HTTP request head") == 1
    assert log.count("|Hello|") == 2 and log.count("|again|") == 2  # in, then out
    assert log.index("HTTP request head") < log.index("7f 9f 4d 51 58") < log.index("|again|")


def test_shutdown_closes_viewers_with_1001(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page")
    viewer = connect(f"ws://127.0.0.1:{server.port}/wire")
    try:
        server.wait_for_log("wire viewer 127.0.0.1:\\d+ connected")
        assert server.stop() == 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                viewer.recv(TIMEOUT)  # (trace blocks of nobody: none come)
        assert closed.value.code == 1001
    finally:
        viewer.sock.close()


def test_wire_page_is_served_beside_a_scripts_own_pages(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--trace-page", "--callback", "examples/game.py")
    for path, wanted in (("/wire", b'<script src="wire.js" defer></script>'),
                         ("/wire.js", b"JSON.parse"), ("/", b"game.js")):
        with Client(server.port) as client:
            client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = client.http_response()
        assert status == 200 and wanted in body, path


def test_wire_with_path_and_behind_a_trusted_proxy(start_server: Callable[..., ServerProcess]
                                                   ) -> None:
    server = start_server("--trace-page", "--path", "/chat", "--trust-proxy")
    with connect(f"ws://127.0.0.1:{server.port}/wire") as viewer:  # --path is for the chat
        with connect(f"ws://127.0.0.1:{server.port}/chat") as alice:
            alice.send("via path")
            wire_items(viewer, lambda item: "|via path|" in str(item["text"]))
    # Behind a proxy every peer is the proxy: with --trust-proxy the client it names counts.
    with pytest.raises(HandshakeFailed) as refused:
        connect(f"ws://127.0.0.1:{server.port}/wire",
                headers=[("X-Forwarded-For", "203.0.113.9")])
    assert refused.value.status == 403
    with Client(server.port) as client:
        client.send(b"GET /wire HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
        status, _, _ = client.http_response()
    assert status == 403


def test_trace_over_a_real_wss_connection(start_server: Callable[..., ServerProcess],
                                          certificates: Certificates) -> None:
    """--trace with --certfile: the server says the connection is TLS and shows the bytes
    decrypted, both ways (what the TLS connection reads and what OpenSSL took)."""
    server = start_server("--trace", "--certfile", str(certificates.cert),
                          "--keyfile", str(certificates.key))
    client = Client(server.port, timeout=TIMEOUT)
    client.sock = certificates.client_context().wrap_socket(client.sock,
                                                            server_hostname="localhost")
    with client:
        client.handshake("/chat")
        client.send(frame(0x1, b"Hello", mask=HELLO_MASK))
        assert client.recv_message() == "Hello"
        client.close_handshake()
    assert "TLS  TLSv1." in block_of(server, "TLS  TLSv1.")
    assert "| GET /chat HTTP/1.1" in block_of(server, "client->server  HTTP request head")
    assert "| HTTP/1.1 101 Switching Protocols" in block_of(
        server, "server->client  HTTP response head")
    masked = block_of(server, "client->server  RFC 6455 frame, 11 bytes")
    assert "unmasked  00000000  48 65 6c 6c 6f" in masked
    assert "header    81 05" in block_of(server, "server->client  RFC 6455 frame, 7 bytes")


def test_trace_of_the_servers_own_tls_shows_the_decrypted_bytes(
        start_server: Callable[..., ServerProcess], certificates: Certificates) -> None:
    server = start_server("--trace", "--certfile", str(certificates.cert),
                          "--keyfile", str(certificates.key))
    with connect(f"wss://localhost:{server.port}/",
                 ssl_context=certificates.client_context()) as alice:
        alice.send("Hello over TLS")
        assert alice.recv(TIMEOUT) == "Hello over TLS"
    tls = block_of(server, " TLS  TLSv1.")
    assert tls.endswith(": the bytes below are shown decrypted")
    assert "| GET / HTTP/1.1" in block_of(server, "client->server  HTTP request head")
    assert "|Hello over TLS|" in block_of(server, "client->server  RFC 6455 frame, 20 bytes")
    assert "|Hello over TLS|" in block_of(server, "server->client  RFC 6455 frame, 16 bytes")
    log = server.log
    assert log.index(" TLS  TLSv1.") < log.index("HTTP request head")


def test_compressed_messages_show_both_sizes(start_server: Callable[..., ServerProcess]
                                             ) -> None:
    """permessage-deflate (the server negotiates it): the trace inflates what crosses and
    ends each compressed message with its size on the wire and inflated."""
    server = start_server("--trace", "--callback", "echo")
    text = "the same words again and again " * 20  # 620 bytes that compress well
    with connect(server.ws_url, compression=True) as alice:
        assert alice.deflate is not None
        alice.send(text)
        assert alice.recv(TIMEOUT) == text
    response = block_of(server, "server->client  HTTP response head")
    assert "| Sec-WebSocket-Extensions: permessage-deflate" in response
    frame_in = block_of(server, "client->server  RFC 6455 frame")
    assert "RSV1 1" in frame_in and "the payload is DEFLATE data" in frame_in
    assert "note" not in frame_in  # RSV1 is allowed once agreed
    for direction in ("client->server", "server->client"):
        note = block_of(server, f"{direction}  permessage-deflate: ")
        wire = int(note.split("permessage-deflate: ")[1].split(" ")[0])
        assert f"{wire} bytes on the wire, 620 bytes inflated (RFC 7692)" in note
        assert wire < 100 and "|the same words a|" in note


def test_a_viewer_arriving_mid_frame_sees_whole_frames_from_then_on(
        start_server: Callable[..., ServerProcess]) -> None:
    """--trace-page alone: nothing is traced until a viewer arrives; then every open
    connection is shown from its next frame each way, never from the middle of one."""
    server = start_server("--trace-page", "-v", "--callback", "echo")
    with Client(server.port) as alice:
        alice.handshake()
        alice.send(frame(0x1, b"before", mask=HELLO_MASK))
        assert alice.recv_message() == "before"  # nobody watched: nobody traced it
        big = frame(0x1, b"y" * 1000, mask=HELLO_MASK)
        alice.send(big[:300])  # a frame in progress when the viewer arrives
        server.wait_for_log("user 1 < TEXT 1000 bytes")  # its header is read
        with connect(f"ws://127.0.0.1:{server.port}/wire") as viewer:
            server.wait_for_log("wire viewer .* connected")
            alice.send(big[300:] + frame(0x1, b"Hello", mask=HELLO_MASK))
            assert alice.recv_message() == "y" * 1000
            assert alice.recv_message() == "Hello"
            items = wire_items(viewer, lambda item: "server->client  RFC 6455 frame, 7 bytes"
                               in str(item["text"]))
    texts = [str(item["text"]) for item in items]
    assert items[0]["conn"] == 0 and texts[0].startswith("trace  the trace begins now: 1 ")
    heads = [text.split("\n")[0].split(" ", 2) for text in texts[1:]]
    assert [head[0] for head in heads] == ["#1"] * 3  # alice's connection only
    assert [head[2] for head in heads] == [
        "client->server  RFC 6455 frame, 11 bytes",  # after the rest of the big one
        "server->client  RFC 6455 frame, 1004 bytes",  # its echo, queued after
        "server->client  RFC 6455 frame, 7 bytes"]
    assert "|Hello|" in texts[1] and "|yyyyyyyyyyyyyyyy|" in texts[2]
    assert not any("note " in text or "before" in text for text in texts)


def test_taps_come_with_the_first_viewer_and_go_with_the_last() -> None:
    """The tracer's side of it, on stand-ins: no viewer, no tap; the first viewer gives
    every open connection one (begun after its queued output); the last takes them."""

    @dataclass
    class FakeConnection:
        outbuf: list[bytes] = field(default_factory=list)
        out_offset: int = 0
        inbuf: bytearray = field(default_factory=bytearray)
        closed: bool = False
        tap: Tap | None = None
        read_size: int = 0

    @dataclass
    class FakeUser:
        conn: FakeConnection
        id: int
        peer: str = "127.0.0.1:1"
        protocol: str | None = "rfc6455"
        receiver: object = None
        deflate: object = None

    published: list[tuple[int, str]] = []

    class Collect:
        def publish(self, conn_id: int, block: str) -> None:
            published.append((conn_id, block))

    users = [FakeUser(FakeConnection(outbuf=[b"queued", b"\x81\x02hi"], out_offset=3), 1),
             FakeUser(FakeConnection(), 2, protocol=None)]  # still in its HTTP requests
    tracer = Tracer(64, to_log=False, publisher=Collect(), users=lambda: users)
    tracer.attach(users[1])  # type: ignore[arg-type]
    assert users[1].conn.tap is None  # nobody watches: no tap
    tracer.viewers_changed(1)
    tap = users[0].conn.tap
    assert tap is not None and users[1].conn.tap is None  # (its next request attaches it)
    assert published == [(0, "trace  the trace begins now: 1 open WebSocket connection(s) "
                             "shown from their next frame each way, new ones from their "
                             "request")]
    tap.sent(b"ued\x81\x02hi")  # what was queued when the trace began: not shown
    assert len(published) == 1
    tap.sent(HELLO_FRAME)
    assert published[-1][1].startswith("#1 127.0.0.1:1 server->client  RFC 6455 frame, 7")
    tracer.viewers_changed(2)
    tracer.viewers_changed(0)
    assert users[0].conn.tap is None


HELLO_FRAME = bytes.fromhex("810548656c6c6f")  # RFC 6455 §5.7


def test_trace_and_trace_page_together(start_server: Callable[..., ServerProcess]) -> None:
    """--trace with --trace-page: every block logged, and the viewer sent them too (within
    its rate), the handshake included since the log needs every connection traced."""
    server = start_server("--trace", "--trace-page")
    with connect(f"ws://127.0.0.1:{server.port}/wire") as viewer:
        with connect(server.ws_url) as alice:
            alice.send("both ways")
            assert alice.recv(timeout=TIMEOUT) == "both ways"
            items = wire_items(viewer, lambda item: "|both ways|" in str(item["text"])
                               and "server->client" in str(item["text"]))
    assert any("client->server  HTTP request head" in str(item["text"]) for item in items)
    block_of(server, "server->client  RFC 6455 frame, 11 bytes")
    assert "|both ways|" in server.log
