"""permessage-deflate (RFC 7692) over real sockets: the server as a user starts it.

The wire is checked against code nobody here wrote: frames are taken apart with struct,
compressed and inflated with the standard library's zlib, and the `websockets` client
negotiates and inflates on its own. (The Chromium page: tests/test_browser.py.)
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from tests.attack import Reader, cpu_seconds
from tests.conftest import ServerProcess
from tests.test_deflate import far_repeats, inflate_within_window
from tests.wsclient import Client, frame, wait_until

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1


class DeflateClient(Client):
    """A raw client that offers permessage-deflate and reads RSV1 itself."""

    def __init__(self, port: int, offer: str = OFFER, path: str = "/") -> None:
        super().__init__(port)
        request, _ = self.upgrade_request(path, extra=offer)
        self.send(request)
        status, self.headers, _ = self.http_response()
        assert status == 101, status
        # The server demands client_no_context_takeover: a fresh compressor per message.
        self.inflater = zlib.decompressobj(-15)  # the server may keep context: so do we

    def recv_raw(self) -> tuple[bool, int, int, bytes]:
        """(fin, rsv bits, opcode, payload) of the next server frame."""
        b1, b2 = self.read_exactly(2)
        assert not b2 & 0x80, "server frames are not masked"
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exactly(8))
        return bool(b1 & 0x80), (b1 >> 4) & 7, b1 & 0x0F, self.read_exactly(n)

    def recv_inflated(self) -> tuple[bool, str | bytes]:
        """The next data message, inflated by zlib when RSV1 is set: (was compressed, data)."""
        fin, rsv, opcode, payload = self.recv_raw()
        assert opcode in (1, 2), (opcode, payload)
        assert rsv in (0, 4), f"only RSV1 may be set, got {rsv:#x}"
        parts = [payload]
        while not fin:
            fin, more_rsv, cont, payload = self.recv_raw()
            assert cont == 0 and more_rsv == 0, "RSV1 only on the first frame (RFC 7692 §6)"
            parts.append(payload)
        data = b"".join(parts)
        if rsv:
            data = self.inflater.decompress(data + TAIL)
        return bool(rsv), data.decode() if opcode == 1 else data

    def send_compressed(self, text: str, pieces: int = 1) -> bytes:
        """A text message compressed by zlib, in `pieces` frames (RSV1 on the first)."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        data = data[:-4]
        step = max(1, -(-len(data) // pieces))
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        wire = b"".join(
            frame(1 if i == 0 else 0, chunk, fin=i == len(chunks) - 1, rsv=4 if i == 0 else 0)
            for i, chunk in enumerate(chunks))
        self.send(wire)
        return data

    def expect_close(self, code: int) -> None:
        while True:
            _, _, opcode, payload = self.recv_raw()
            if opcode == 8:
                assert struct.unpack("!H", payload[:2])[0] == code, payload
                return


WORDS = ("the a to and of is in it you that for on with this be are was have not at "
         "but we can so what just all about like do if my me no up out one time get know "
         "lunch meeting deploy build tomorrow server room ok thanks").split()


def json_message(i: int) -> str:
    """~200 bytes of chat-like JSON, as the benchmark sends: a few fields that change and
    a text of seeded random words (plus a number), so that it is no easier than chat."""
    rng = random.Random(i)
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
    return json.dumps({"type": "message", "id": 100_000 + i * 37, "room": "lobby",
                       "from": {"id": rng.randint(1, 999), "name": f"user{rng.randint(1, 200)}"},
                       "text": f"{text} {rng.randint(0, 99_999)}",
                       "ts": 1_764_633_600_000 + i * rng.randint(1, 5000)})


def test_compressing_and_plain_users_chat(chat_server: ServerProcess) -> None:
    """One user compresses both ways, one does not; each gets every message, in order,
    and only the compressing one gets RSV1 frames, which zlib inflates."""
    with DeflateClient(chat_server.port) as zipped, Client(chat_server.port) as plain:
        plain.handshake()
        assert zipped.headers["sec-websocket-extensions"] == (
            "permessage-deflate; client_no_context_takeover")
        compressed_seen = 0
        sent_bytes = received_bytes = 0
        for i in range(40):
            text = json_message(i)
            if i % 2:
                zipped.send_compressed(text, pieces=1 + i % 3)  # fragmented, too
            else:
                plain.send_text(text)
            was_compressed, got = zipped.recv_inflated()
            assert got == text
            compressed_seen += was_compressed
            assert plain.recv_message() == text
            sent_bytes += len(text)
            received_bytes += len(got)
        assert compressed_seen == 40  # every ~200-byte message: over the 32-byte threshold
        # Short messages stay uncompressed (RFC 7692 allows either, message by message).
        plain.send_text("hi")
        assert zipped.recv_inflated() == (False, "hi")
        assert plain.recv_message() == "hi"


def test_room_stream_bytes_on_the_wire_for_json(chat_server: ServerProcess) -> None:
    """The shared stream keeps context: 200-byte JSON costs well under half on the wire."""
    with DeflateClient(chat_server.port) as zipped:
        raw = wire = 0
        for i in range(300):
            text = json_message(i)
            zipped.send_compressed(text)
            fin, rsv, opcode, payload = zipped.recv_raw()
            assert (fin, rsv, opcode) == (True, 4, 1)
            assert zipped.inflater.decompress(payload + TAIL).decode() == text
            raw += 2 + len(text)
            wire += 2 + len(payload)
        print(f"JSON on the wire: {wire} of {raw} bytes uncompressed ({wire / raw:.0%})")
        assert wire / raw <= 0.40


def test_no_compression_option_and_no_offer(start_server: Callable[..., ServerProcess]
                                            ) -> None:
    server = start_server("--no-compression")
    server.wait_for_log(r"compression: off")
    with DeflateClient(server.port) as client:
        assert "sec-websocket-extensions" not in client.headers
        client.send_compressed(json_message(1))  # RSV1 without an agreed extension
        client.expect_close(1002)


def test_without_an_offer_rsv1_is_1002(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as client:
        client.handshake()
        client.send_frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)  # RFC 7692 §7.2.3.1
        assert client.recv_close()[0] == 1002
    chat_server.wait_for_log(r"closing with 1002 .*reserved bits")


@pytest.mark.parametrize("wire, why", [
    (frame(9, b"ping", rsv=4), "control frame"),
    (frame(1, b"\xf2\x48", fin=False, rsv=4) + frame(0, b"\xcd\xc9\xc9\x07\x00", rsv=4),
     "continuation frame"),
    (frame(1, b"Hel", fin=False) + frame(0, b"lo", rsv=4), "continuation frame"),
    (frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=2), "reserved bits"),  # RSV2
    (frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=6), "reserved bits"),
])
def test_rsv1_where_rfc_7692_forbids_it_is_1002(chat_server: ServerProcess, wire: bytes,
                                                 why: str) -> None:
    with DeflateClient(chat_server.port) as client:
        client.send(wire)
        client.expect_close(1002)
    chat_server.wait_for_log(rf"closing with 1002 .*{why}")


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x07" * 20, b"\x03\x00\x05"])
def test_data_that_does_not_inflate_is_1007(chat_server: ServerProcess, payload: bytes
                                           ) -> None:
    with DeflateClient(chat_server.port) as client, Client(chat_server.port) as other:
        other.handshake()
        client.send(frame(1, payload, rsv=4))
        client.expect_close(1007)
        other.send_text("still here")
        assert other.recv_message() == "still here"
    chat_server.wait_for_log(r"closing with 1007 .*does not inflate")


def test_inflated_text_that_is_not_utf8_is_1007(chat_server: ServerProcess) -> None:
    with DeflateClient(chat_server.port) as client:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = (compressor.compress(b"caf\xc3 bad" * 10) + compressor.flush(zlib.Z_SYNC_FLUSH))
        client.send(frame(1, data[:-4], rsv=4))
        client.expect_close(1007)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]


def test_decompression_bomb_while_another_user_chats(chat_server: ServerProcess) -> None:
    """256 MiB of zeros deflated to ~250 KiB, sent whole and then fragmented: closed with 1009
    once the inflated size passes the 1 MiB limit, the RSS grows by no more than a few
    MiB, and a user chatting meanwhile keeps its round trips short."""
    bomb = _bomb(256 << 20)
    assert len(bomb) < 300 * 1024
    stop = threading.Event()
    worst = [0.0]
    errors: list[BaseException] = []

    def chat() -> None:
        try:
            with Client(chat_server.port) as healthy:
                healthy.handshake()
                i = 0
                while not stop.is_set():
                    started = time.monotonic()
                    healthy.send_text(f"ping {i}")
                    while healthy.recv_message() != f"ping {i}":
                        pass  # other users' messages
                    worst[0] = max(worst[0], time.monotonic() - started)
                    i += 1
                    time.sleep(0.005)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    chatter = threading.Thread(target=chat)
    chatter.start()
    try:
        time.sleep(0.3)
        before = _rss_kib(chat_server.proc.pid)
        for pieces in (1, 64):
            with DeflateClient(chat_server.port) as attacker:
                step = -(-len(bomb) // pieces)
                chunks = [bomb[i:i + step] for i in range(0, len(bomb), step)]
                try:
                    for i, chunk in enumerate(chunks):
                        attacker.send(frame(1 if i == 0 else 0, chunk,
                                            fin=i == len(chunks) - 1, rsv=4 if i == 0 else 0))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed before all of it was sent: fine
                attacker.expect_close(1009)
        grown = _rss_kib(chat_server.proc.pid) - before
        time.sleep(0.3)
    finally:
        stop.set()
        chatter.join(20)
    assert not errors, errors
    print(f"bomb: RSS grew by {grown} KiB; healthy user's worst round trip "
          f"{worst[0] * 1000:.1f} ms")
    assert grown < 16 * 1024
    assert worst[0] < 1.0
    chat_server.wait_for_log(r"closing with 1009 .*inflates to more than")


def test_inflated_size_is_what_the_limit_counts(start_server: Callable[..., ServerProcess]
                                               ) -> None:
    """--max-message-size 1000: a 40-byte frame that inflates to 2,000 bytes is 1009; one
    that inflates to exactly 1,000 passes."""
    server = start_server("--max-message-size", "1000")
    with DeflateClient(server.port) as client:
        client.send_compressed("a" * 1000)
        assert client.recv_inflated() == (True, "a" * 1000)
        sent = client.send_compressed("a" * 1001, pieces=2)
        assert len(sent) < 40
        client.expect_close(1009)


def test_inflated_bytes_count_against_max_input_memory(
        start_server: Callable[..., ServerProcess]) -> None:
    """A fragmented compressed message holds its inflated bytes until it ends: they count
    against --max-input-memory (1013), not only the few compressed bytes."""
    server = start_server("--max-input-memory", "100000", "--max-message-size", "1M")
    with DeflateClient(server.port) as client, Client(server.port) as other:
        other.handshake()
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        first = compressor.compress(b"z" * 300_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert len(first) < 2000
        client.send(frame(1, first, fin=False, rsv=4))  # unfinished: 300 KB inflated
        client.expect_close(1013)
        other.send_text("fine")
        assert other.recv_message() == "fine"
    server.wait_for_log(r"closing with 1013 .*inflated piece")


def test_malformed_extensions_header_is_400(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as client:
        request, _ = client.upgrade_request(
            extra="Sec-WebSocket-Extensions: permessage-deflate; =15\r\n")
        client.send(request)
        status, _, body = client.http_response()
        assert status == 400
        assert b"malformed Sec-WebSocket-Extensions" in body


def test_declined_offer_falls_back_to_the_next(chat_server: ServerProcess) -> None:
    offer = ("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, "
             "permessage-deflate; server_no_context_takeover\r\n")
    with DeflateClient(chat_server.port, offer) as client:
        assert client.headers["sec-websocket-extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        # server_no_context_takeover: every message stands alone; a fresh inflater each.
        for i in range(5):
            client.send_text(json_message(i))
            fin, rsv, _, payload = client.recv_raw()
            assert rsv == 4
            assert zlib.decompressobj(-15).decompress(payload + TAIL).decode() == (
                json_message(i))


def test_verbose_log_says_what_was_negotiated(start_server: Callable[..., ServerProcess]
                                              ) -> None:
    server = start_server("-v")
    with DeflateClient(server.port):
        server.wait_for_log(r"permessage-deflate agreed: permessage-deflate; "
                            r"client_no_context_takeover")


# -- the websockets client (its own negotiation and zlib use) ------------------------------

async def _websockets_chat(port: int, script_users: int, rounds: int) -> list[str | None]:
    """Users with websockets' default compression and one without, each sending; every
    user checks it got every message in order. Returns the agreed extensions."""
    url = f"ws://127.0.0.1:{port}/"
    clients = [await connect(url) for _ in range(script_users)]
    clients.append(await connect(url, compression=None))
    try:
        headers = [c.response.headers.get("Sec-WebSocket-Extensions") for c in clients]
        for i in range(rounds):
            # One message at a time (the order between senders is not defined otherwise).
            text = json_message(i) if i % 4 else f"short {i}"
            await clients[i % len(clients)].send(text)
            for client in clients:
                assert await asyncio.wait_for(client.recv(), 10) == text
        return headers
    finally:
        for client in clients:
            await client.close()


def test_websockets_clients_negotiate_and_chat(chat_server: ServerProcess) -> None:
    headers = asyncio.run(_websockets_chat(chat_server.port, 4, 200))
    assert headers[:-1] == ["permessage-deflate; client_no_context_takeover"] * 4
    assert headers[-1] is None


EXCLUDE_SENDER = """
def process(user, message, server):
    server.broadcast(message, exclude=user)
    server.send(user, "ack " + message)
"""


def test_broadcast_excluding_the_sender_and_direct_sends(
        start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """A script that excludes the sender and answers it directly: whoever misses a stream
    message (and gets direct ones) must still inflate everything that follows."""
    script = tmp_path / "exclude.py"
    script.write_text(EXCLUDE_SENDER)
    server = start_server("--callback", str(script))

    async def run() -> None:
        url = f"ws://127.0.0.1:{server.port}/"
        clients = [await connect(url) for _ in range(4)]
        try:
            expected: list[list[str]] = [[] for _ in clients]
            for i in range(120):
                who = (i * 7) % len(clients)
                text = json_message(i)
                await clients[who].send(text)
                for j in range(len(clients)):
                    expected[j].append("ack " + text if j == who else text)
                # the sender's ack comes after the broadcast; wait to keep the order known
                got = await asyncio.wait_for(clients[who].recv(), 10)
                assert got == "ack " + text
                expected[who].pop()
                for j, client in enumerate(clients):
                    if j != who:
                        assert await asyncio.wait_for(client.recv(), 10) == expected[j].pop()
        finally:
            for client in clients:
                await client.close()

    asyncio.run(run())


def test_echo_sends_compressed_to_websockets(echo_server: ServerProcess) -> None:
    async def run() -> None:
        async with connect(echo_server.ws_url, max_size=None) as client:
            for size in (0, 1, 31, 32, 200, 70_000, 300_000):
                data = os.urandom(size // 2).hex()
                await client.send(data)
                assert await asyncio.wait_for(client.recv(), 10) == data
    asyncio.run(run())


def test_echo_stand_alone_bytes_inflate_with_a_fresh_zlib(echo_server: ServerProcess) -> None:
    """Direct sends to a user that does not follow a stream stand alone: each inflates with
    a fresh zlib inflater, even after others."""
    with DeflateClient(echo_server.port) as client:
        for i in range(5):
            client.send_compressed(json_message(i), pieces=2)
            _, rsv, _, payload = client.recv_raw()
            assert rsv == 4
            assert zlib.decompressobj(-15).decompress(payload + TAIL).decode() == (
                json_message(i))


def test_draft76_users_are_untouched(chat_server: ServerProcess) -> None:
    from tests.wsclient import draft76_request
    with DeflateClient(chat_server.port) as zipped, Client(chat_server.port) as old:
        old.send(draft76_request(chat_server.port))
        old.read_until(b"\r\n\r\n")
        old.read_exactly(16)
        zipped.send_compressed(json_message(3))
        assert old.recv_hixie() == json_message(3)
        assert zipped.recv_inflated() == (True, json_message(3))


def test_each_room_has_its_own_compressed_stream(chat_server: ServerProcess) -> None:
    """Rooms and compression together: messages in /a and /b, interleaved, from compressing
    and plain senders. Each compressing user's zlib inflater (one per connection, its
    context kept) follows only its own room's stream: every message of its room inflates,
    in order, and no other room's message arrives; a user that leaves frees nobody else's
    stream, and a newcomer to a busy room inflates from its first message."""
    with DeflateClient(chat_server.port, path="/a") as a1, \
            DeflateClient(chat_server.port, path="/a") as a2, \
            DeflateClient(chat_server.port, path="/b") as b1, \
            Client(chat_server.port) as plain_a, Client(chat_server.port) as plain_b:
        plain_a.handshake("/a")
        plain_b.handshake("/b")
        time.sleep(0.2)  # everyone is in before the first message
        rng = random.Random(7)
        expected: dict[str, list[str]] = {"/a": [], "/b": []}
        for i in range(60):
            room = rng.choice(["/a", "/b"])
            text = json_message(i)
            sender = rng.choice([a1, a2, plain_a] if room == "/a" else [b1, plain_b])
            if isinstance(sender, DeflateClient):
                sender.send_compressed(text)
            else:
                sender.send_text(text)
            expected[room].append(text)
            # Each room's users get it before the next message goes (per-room order).
            for user in ([a1, a2] if room == "/a" else [b1]):
                assert user.recv_inflated() == (True, text)
            assert (plain_a if room == "/a" else plain_b).recv_message() == text
        a2.close()
        with DeflateClient(chat_server.port, path="/a") as a3:
            time.sleep(0.2)
            for i in range(60, 70):
                text = json_message(i)
                plain_a.send_text(text)
                assert a1.recv_inflated() == (True, text)
                assert a3.recv_inflated() == (True, text)
                assert plain_a.recv_message() == text
        plain_b.send_text("the end of /b")
        assert b1.recv_inflated() == (False, "the end of /b")
        b1.sock.settimeout(0.3)
        a1.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            a1.recv_raw()  # nothing of /b ever reached /a


# -- every window 9..15 in one room: two compressions a broadcast (issue 18, item 7) -------

WINDOWS = range(9, 16)  # what zlib can compress with; RFC 7692 §7.1.2.1 allows 8..15


class WindowClient(DeflateClient):
    """A raw client offering `server_max_window_bits=bits`, inflating with zlib at that
    window, 64 bytes of output a call (`inflate_within_window`), its context kept."""

    def __init__(self, port: int, bits: int) -> None:
        super().__init__(port, offer="Sec-WebSocket-Extensions: permessage-deflate; "
                                     f"server_max_window_bits={bits}\r\n")
        assert self.headers["sec-websocket-extensions"] == (
            f"permessage-deflate; client_no_context_takeover; server_max_window_bits={bits}")
        self.bits = bits
        self.inflater = zlib.decompressobj(-bits)

    def recv_window(self) -> tuple[bytes, str]:
        """The next message: (its compressed payload, the text zlib inflates it to)."""
        fin, rsv, opcode, payload = self.recv_raw()
        assert (fin, rsv, opcode) == (True, 4, 1)
        inflated = inflate_within_window(self.inflater, payload + TAIL)
        return payload, inflated.decode()


def test_every_window_9_to_15_inflates_and_two_payloads_serve_all(
        chat_server: ServerProcess) -> None:
    """Seven users offering server_max_window_bits 9..15 and a plain sender: each inflates
    every message with zlib held to its own window, and the six that cannot follow the
    room's window-15 stream get the same stand-alone bytes (one compression for all); when
    the window-9 user leaves, the five left get bytes of window 10, the same for all."""
    users = {bits: WindowClient(chat_server.port, bits) for bits in WINDOWS}
    with Client(chat_server.port) as sender:
        sender.handshake()
        try:
            for i in range(24):
                if i == 12:
                    users.pop(9).close()
                    time.sleep(0.2)  # the server has seen it go
                size = (300, 3000, 20_000, 200_000)[i % 4]
                text = far_repeats(size, i).decode() if i % 2 else json_message(i)
                sender.send_text(text)
                assert sender.recv_message() == text
                payloads = {}
                for bits, user in users.items():
                    payload, inflated = user.recv_window()
                    assert inflated == text, (bits, i)
                    payloads[bits] = payload
                others = {payloads[bits] for bits in users if bits != 15}
                assert len(others) == 1, f"message {i}: {len(others)} stand-alone payloads"
                if size > 2048 and i % 2:  # repeats 600-9,000 bytes back: windows matter
                    assert others != {payloads[15]}
        finally:
            for user in users.values():
                user.close()


def test_websockets_clients_offering_every_window(chat_server: ServerProcess) -> None:
    """The `websockets` client offering each server_max_window_bits 9..15 (and one with
    its defaults): the answer names the window, and every message arrives."""
    async def run() -> None:
        url = f"ws://127.0.0.1:{chat_server.port}/"
        clients = [await connect(url, compression=None, max_size=None, extensions=[
            ClientPerMessageDeflateFactory(server_max_window_bits=bits)]) for bits in WINDOWS]
        clients.append(await connect(url, max_size=None))
        try:
            for bits, client in zip(WINDOWS, clients[:-1], strict=True):
                assert client.response.headers["Sec-WebSocket-Extensions"] == (
                    "permessage-deflate; client_no_context_takeover; "
                    f"server_max_window_bits={bits}")
            for i in range(16):
                text = far_repeats(20_000, i).decode() if i % 2 else json_message(i)
                await clients[i % len(clients)].send(text)
                for client in clients:
                    assert await asyncio.wait_for(client.recv(), 10) == text
        finally:
            for client in clients:
                await client.close()

    asyncio.run(run())



def _broadcast_cpu(port: int, pid: int, offers: list[int | None], texts: list[str]) -> float:
    """Server CPU seconds for broadcasting `texts` (from a plain sender) to users offering
    these windows (None: no server_max_window_bits), each read as fast as it comes."""
    users = [WindowClient(port, bits) if bits else DeflateClient(port) for bits in offers]
    sender = Client(port).handshake()
    got = [0] * (len(users) + 1)
    lock = threading.Lock()

    def counter(index: int) -> Callable[[bytes], None]:
        def count(payload: bytes) -> None:
            with lock:
                got[index] += 1
        return count

    readers = [Reader(user, flood_prefix=b"\x00none", on_text=counter(index))
               for index, user in enumerate([*users, sender])]
    for reader in readers:
        reader.start()
    try:
        before = cpu_seconds(pid)
        for text in texts:
            sender.send_text(text)
        assert wait_until(lambda: min(got) == len(texts), timeout=60), got
        return cpu_seconds(pid) - before
    finally:
        for reader in readers:
            reader.stopping = True
        for user in [*users, sender]:
            user.close()


def test_seven_windows_cost_two_compressions_not_seven(
        start_server: Callable[..., ServerProcess]) -> None:
    """10 broadcasts of ~1 MB of JSON lines to 7 users offering windows 9..15 cost the
    server what the same broadcasts cost to one stream follower and six users of window 9
    (the stream plus one stand-alone compression of window 9, in any design), not seven
    compressions. Server CPU from /proc/PID/stat: other processes' load counts little."""
    lines = "\n".join(json_message(i) for i in range(60_000))
    texts = [lines[i * 20_000:i * 20_000 + 1_000_000] for i in range(10)]  # under 1 MiB
    server = start_server()
    pid = server.proc.pid
    one_stream = _broadcast_cpu(server.port, pid, [None] * 7, texts)
    two = _broadcast_cpu(server.port, pid, [None] + [9] * 6, texts)
    windows = _broadcast_cpu(server.port, pid, list(WINDOWS), texts)
    print(f"10 x 1 MB to 7 users, server CPU: {one_stream:.2f} s when all follow the "
          f"stream, {two:.2f} s with 6 of window 9, {windows:.2f} s with windows 9..15 "
          f"({windows / two:.2f}x)")
    assert windows < 1.5 * two + 0.1
