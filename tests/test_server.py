"""The real server over real sockets: handshakes, chat, closes, and every bad input.

Each test starts `server.py` on a free loopback port (see conftest.py) and talks to it with
the raw client in wsclient.py. Tests wait on reads with timeouts, never on sleeps.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess
from wsclient import Client, close_payload, draft75_request, draft76_request, frame

Start = Callable[..., ServerProcess]


def joined(port: int, n: int = 1) -> list[Client]:
    return [Client(port).handshake() for _ in range(n)]


def assert_still_chatting(port: int, *users: Client) -> None:
    """A message from the first user reaches every user: the server carries on."""
    users[0].send_text("still here?")
    for user in users:
        assert user.recv_message() == "still here?"


# -- handshakes, three generations ------------------------------------------------------

def test_rfc6455_users_chat(chat_server: ServerProcess) -> None:
    a, b, c = joined(chat_server.port, 3)
    for sender, text in ((a, "hello from a"), (b, "héllo 👋 from b"), (c, "and c")):
        sender.send_text(text)
        for user in (a, b, c):
            assert user.recv_message() == text
    b.send_binary(b"\x00\x01\xfe\xff")
    for user in (a, b, c):
        assert user.recv_message() == b"\x00\x01\xfe\xff"
    chat_server.wait_for_log(r"user \d+ \(127\.0\.0\.1:\d+\) joined: RFC 6455, resource /")


def test_draft76_handshake_gives_the_drafts_answer(chat_server: ServerProcess) -> None:
    # Both in the room "/demo": a user's room is its path (tests/test_rooms.py).
    with Client(chat_server.port) as old, Client(chat_server.port).handshake("/demo") as new:
        old.send(draft76_request(chat_server.port, "/demo"))
        head = old.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n")
        assert b"\r\nSec-WebSocket-Location: ws://127.0.0.1:%d/demo\r\n" % chat_server.port in head
        assert b"\r\nSec-WebSocket-Origin: http://127.0.0.1:%d\r\n" % chat_server.port in head
        assert old.read_exactly(16) == b"8jKS'y:G*Co,Wxa-"
        old.send_hixie("from 2010")
        assert old.recv_hixie() == "from 2010"
        assert new.recv_message() == "from 2010"
        new.send_text("from today ✓")
        assert new.recv_message() == "from today ✓"
        assert old.recv_hixie() == "from today ✓"
        chat_server.wait_for_log(r"joined: draft-76")


def test_draft75_handshake_and_chat(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as old:
        old.send(draft75_request(chat_server.port, "/chat"))
        head = old.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Web Socket Protocol Handshake\r\n")
        assert b"\r\nWebSocket-Location: ws://127.0.0.1:%d/chat\r\n" % chat_server.port in head
        old.send_hixie("hi")
        assert old.recv_hixie() == "hi"
        old.send(b"\xff\x00")
        assert old.read_exactly(2) == b"\xff\x00"
        assert old.at_eof()


def test_binary_broadcast_skips_hixie_users(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as old, Client(chat_server.port).handshake() as new:
        old.send(draft76_request(chat_server.port))
        old.read_until(b"\r\n\r\n")
        old.read_exactly(16)
        new.send_binary(b"\x01\x02")
        assert new.recv_message() == b"\x01\x02"
        new.send_text("text")
        assert new.recv_message() == "text"
        assert old.recv_hixie() == "text"  # the binary message never reached it


def test_request_split_byte_by_byte(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request, _ = c.upgrade_request()
        for byte in request:
            c.send(bytes([byte]))
        status, headers, _ = c.http_response()
        assert status == 101
        c.send_text("done")
        assert c.recv_message() == "done"


def test_draft76_split_byte_by_byte_including_the_8_bytes(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in draft76_request(chat_server.port):
            c.send(bytes([byte]))
        c.read_until(b"\r\n\r\n")
        assert c.read_exactly(16) == b"8jKS'y:G*Co,Wxa-"


def test_request_and_first_frames_in_one_packet(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as c:
        request, _ = c.upgrade_request()
        c.send(request + frame(1, b"one") + frame(1, b"two"))
        assert c.http_response()[0] == 101
        assert [c.recv_message(), c.recv_message()] == ["one", "two"]


def test_several_messages_in_one_packet_arrive_in_order(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    a.send(b"".join(frame(1, f"message {i}".encode()) for i in range(50)))
    for user in (a, b):
        assert [user.recv_message() for _ in range(50)] == [f"message {i}" for i in range(50)]


def test_one_message_split_byte_by_byte(chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in frame(1, "split ✓".encode()):
        a.send(bytes([byte]))
    assert a.recv_message() == "split ✓"


def test_fragmented_message_with_a_ping_in_between(chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    a.send(frame(1, b"frag", fin=False) + frame(9, b"ping!") + frame(0, b"mented"))
    assert a.recv_frame() == (True, 0xA, b"ping!")
    assert a.recv_message() == "fragmented"


def test_one_mebibyte_message(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    text = ("0123456789abcdef" * 65536)
    assert len(text) == 1 << 20
    a.send_text(text)
    assert a.recv_message() == text
    assert b.recv_message() == text


def test_ping_is_answered_with_the_same_payload(chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    a.send_frame(0x9, b"are you there")
    assert a.recv_frame() == (True, 0xA, b"are you there")
    a.send_frame(0xA, b"unsolicited pong")  # §5.5.3: no answer
    a.send_frame(0x9, b"")
    assert a.recv_frame() == (True, 0xA, b"")


# -- closing --------------------------------------------------------------------------------

def test_client_close_is_echoed_and_server_closes_tcp(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    assert a.close_handshake(1000, "bye") == (1000, "")
    chat_server.wait_for_log(r"left: 1000 \(normal\) 'bye'")
    assert_still_chatting(chat_server.port, b)


def test_close_with_application_code_is_echoed(chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    assert a.close_handshake(4321)[0] == 4321


def test_close_without_code_gets_an_empty_close(chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    a.send_frame(0x8, b"")
    assert a.recv_frame() == (True, 0x8, b"")
    assert a.at_eof()


def test_vanishing_user_is_logged_as_1006(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    a.close()
    chat_server.wait_for_log(r"left: 1006 \(abnormal")
    assert_still_chatting(chat_server.port, b)


def test_reset_connection_does_not_disturb_others(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.send(frame(1, b"half a mess")[:5])
    a.close()  # RST
    chat_server.wait_for_log(r"left: 1006")
    assert_still_chatting(chat_server.port, b)


def test_sigint_closes_every_user_with_1001(chat_server: ServerProcess) -> None:
    a, b = joined(chat_server.port, 2)
    with Client(chat_server.port) as old:
        old.send(draft76_request(chat_server.port))
        old.read_until(b"\r\n\r\n")
        old.read_exactly(16)
        chat_server.proc.send_signal(signal.SIGINT)
        for user in (a, b):
            code, _ = user.recv_close()
            assert code == 1001
            user.send_frame(0x8, close_payload(1001))
        assert old.read_exactly(2) == b"\xff\x00"
        old.send(b"\xff\x00")
        assert chat_server.proc.wait(10) == 0
    assert a.at_eof() and b.at_eof()
    assert "Traceback" not in chat_server.log


def test_sigterm_stops_within_the_grace_period_even_if_users_stay_silent(
        chat_server: ServerProcess) -> None:
    (a,) = joined(chat_server.port)
    chat_server.proc.send_signal(signal.SIGTERM)
    assert a.recv_close()[0] == 1001
    assert chat_server.proc.wait(10) == 0  # did not answer: the server waited 2 s at most


# -- bad input: each gets its own answer, and the others keep chatting ------------------------

BAD_FRAMES = [
    ("unmasked frame", b"\x81\x05Hello", 1002),
    ("reserved bit", frame(1, b"x", rsv=4), 1002),
    ("reserved opcode", frame(3, b"x"), 1002),
    ("fragmented ping", frame(9, b"x", fin=False), 1002),
    ("ping over 125 bytes", frame(9, bytes(126)), 1002),
    ("continuation without start", frame(0, b"x"), 1002),
    ("new message inside a fragmented one", frame(1, b"a", fin=False) + frame(1, b"b"), 1002),
    ("one-byte close payload", frame(8, b"\x03"), 1002),
    ("reserved close code 1005", frame(8, close_payload(1005)), 1002),
    ("close code 5000", frame(8, close_payload(5000)), 1002),
    ("invalid UTF-8", frame(1, b"caf\xc3"), 1007),
    ("UTF-8 invalid mid fragment", frame(1, b"ok", fin=False) + frame(0, b"\xed\xa0\x80"), 1007),
    ("close reason not UTF-8", frame(8, b"\x03\xe8\xff"), 1007),
    ("message over the limit", b"\x82\xff" + (2 << 20).to_bytes(8, "big") + b"mask", 1009),
]


@pytest.mark.parametrize("name, data, code", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_get_their_close_code(chat_server: ServerProcess, name: str, data: bytes,
                                         code: int) -> None:
    bad, good = joined(chat_server.port, 2)
    bad.send(data)
    assert bad.recv_close()[0] == code
    assert bad.at_eof()
    chat_server.wait_for_log(rf"closing with {code} ")
    assert_still_chatting(chat_server.port, good)


def test_message_too_big_uses_the_configured_limit(start_server: Start) -> None:
    server = start_server("--max-message-size", "1000")
    bad, good = joined(server.port, 2)
    good.send_binary(bytes(1000))
    assert bad.recv_message() == bytes(1000)
    assert good.recv_message() == bytes(1000)
    bad.send(frame(2, bytes(1001))[:8])  # only the header: 1009 must not wait for the rest
    assert bad.recv_close()[0] == 1009
    assert_still_chatting(server.port, good)


BAD_REQUESTS = [
    ("version 8", {"Sec-WebSocket-Version: 13": "Sec-WebSocket-Version: 8"}, 426),
    ("key without version", {"Sec-WebSocket-Version: 13\r\n": ""}, 400),
    ("short key", {"KEY": "c2hvcnQ="}, 400),
    ("key not base64", {"KEY": "!!!!!!!!!!!!!!!!!!!!!!=="}, 400),
    ("no Host", {"Host: 127.0.0.1": "X-Host: 127.0.0.1"}, 400),
    ("POST upgrade", {"GET ": "POST "}, 405),
    ("HTTP/2.0", {"HTTP/1.1": "HTTP/2.0"}, 505),
    ("garbage request line", {"GET / HTTP/1.1": "HELLO"}, 400),
]


@pytest.mark.parametrize("name, edits, status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_upgrade_requests_get_an_http_status(chat_server: ServerProcess, name: str,
                                                 edits: dict[str, str], status: int) -> None:
    (good,) = joined(chat_server.port)
    with Client(chat_server.port) as bad:
        request, key = bad.upgrade_request()
        text = request.decode()
        for old, new in edits.items():
            text = text.replace(key if old == "KEY" else old, new, 1)
        bad.send(text.encode())
        got, headers, body = bad.http_response()
        assert got == status
        assert body.endswith(b"\n") and body.count(b"\n") == 1  # a one-line reason
        if status == 426:
            assert headers["sec-websocket-version"] == "13"
        assert bad.at_eof()
    chat_server.wait_for_log(rf"HTTP {status}: ")
    assert_still_chatting(chat_server.port, good)


@pytest.mark.parametrize("key1, status", [
    ("4294967296 ", 400),  # 2^32 with one space
    ("12345", 400),  # no spaces: the PHP original divided by zero
    ("1 2 3", 400),  # 123 is not a multiple of 2 spaces
])
def test_bad_draft76_keys_are_400(chat_server: ServerProcess, key1: str, status: int) -> None:
    (good,) = joined(chat_server.port)
    with Client(chat_server.port) as bad:
        bad.send(draft76_request(chat_server.port, key1=key1))
        assert bad.http_response()[0] == status
    assert_still_chatting(chat_server.port, good)


def test_oversized_request_is_431(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as bad:
        bad.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        assert bad.http_response()[0] == 431


def test_incomplete_request_times_out_with_408(start_server: Start) -> None:
    server = start_server("--handshake-timeout", "0.5")
    (good,) = joined(server.port)
    with Client(server.port) as slow:
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert slow.http_response()[0] == 408
    assert_still_chatting(server.port, good)


def test_hixie_invalid_utf8_and_oversize_get_ff00(start_server: Start) -> None:
    server = start_server("--max-message-size", "100")
    (good,) = joined(server.port)
    for bad_bytes in (b"\x00caf\xc3\x28\xff", b"\x00" + b"a" * 101):
        with Client(server.port) as old:
            old.send(draft76_request(server.port))
            old.read_until(b"\r\n\r\n")
            old.read_exactly(16)
            old.send(bad_bytes)
            assert old.read_exactly(2) == b"\xff\x00"
            assert old.at_eof()
    assert_still_chatting(server.port, good)


def test_tls_on_the_plain_port_is_400(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as c:
        c.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
        assert c.http_response()[0] == 400


# -- limits ---------------------------------------------------------------------------------

def test_max_connections_gives_503(start_server: Start) -> None:
    server = start_server("--max-connections", "2")
    a, b = joined(server.port, 2)
    with Client(server.port) as third:
        third.send(third.upgrade_request()[0])
        status, _, body = third.http_response()
        assert status == 503 and b"full" in body
    assert_still_chatting(server.port, a, b)
    a.close_handshake()
    server.wait_for_log(r"left: 1000")
    joined(server.port)  # a place is free again


def test_user_that_stops_reading_is_dropped_not_waited_for(start_server: Start) -> None:
    server = start_server("--max-buffer", "65536")
    talker, sleeper = joined(server.port, 2)
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "x" * 16000
    for _ in range(2000):  # up to 32 MB: more than loopback's kernel buffers can hide
        talker.send_text(chunk)
        assert talker.recv_message() == chunk
        if "is not reading" in server.log:
            break
    server.wait_for_log(r"user \d+ .* is not reading: \d+ bytes unsent \(limit 65536\)")
    assert_still_chatting(server.port, talker)


# -- callbacks ------------------------------------------------------------------------------

def test_callback_echo_answers_the_sender_only(echo_server: ServerProcess) -> None:
    a, b = joined(echo_server.port, 2)
    a.send_text("just me")
    assert a.recv_message() == "just me"
    b.send_text("me too")
    assert b.recv_message() == "me too"  # not a's message first: a's never came to b


DROP_IN = '''
def on_connect(user, server):
    user.data["name"] = f"user{user.id}"
    server.send(user, f"welcome {user.data['name']} ({len(server.get_users())} here)")

def process(user, message, server):
    if message == "boom":
        raise RuntimeError("the callback exploded")
    if message == "kick me":
        server.disconnect(user, 4000, "kicked")
        return
    server.log("relaying for", user.data["name"])
    server.broadcast(f"{user.data['name']}: {message}", exclude=user)

def on_disconnect(user, server):
    server.broadcast(f"{user.data['name']} left")
'''


@pytest.fixture
def drop_in(start_server: Start, tmp_path: Path) -> ServerProcess:
    script = tmp_path / "rooms.py"
    script.write_text(textwrap.dedent(DROP_IN))
    return start_server("--callback", str(script))


def test_drop_in_script(drop_in: ServerProcess) -> None:
    a = Client(drop_in.port).handshake()
    assert a.recv_message().startswith("welcome user")  # type: ignore[union-attr]
    b = Client(drop_in.port).handshake()
    welcome_b = b.recv_message()
    assert isinstance(welcome_b, str) and welcome_b.endswith("(2 here)")
    a.send_text("hi b")
    name_a = b.recv_message()
    assert isinstance(name_a, str) and name_a.endswith(": hi b")
    drop_in.wait_for_log(r"relaying for user")
    b.send_text("kick me")
    assert b.recv_close() == (4000, "kicked")
    b.send_frame(0x8, close_payload(4000))
    assert b.at_eof()
    left = a.recv_message()
    assert isinstance(left, str) and left.endswith(" left")


def test_raising_callback_is_logged_and_everyone_carries_on(drop_in: ServerProcess) -> None:
    a = Client(drop_in.port).handshake()
    a.recv_message()
    b = Client(drop_in.port).handshake()
    b.recv_message()
    a.send_text("boom")
    drop_in.wait_for_log(r"RuntimeError: the callback exploded")
    assert "Traceback" in drop_in.log
    a.send_text("after the boom")
    got = b.recv_message()
    assert isinstance(got, str) and got.endswith(": after the boom")


# -- plain HTTP on the same port --------------------------------------------------------------

def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with Client(port) as c:
        c.send(request)
        return c.http_response()


def test_the_chat_page_is_served(chat_server: ServerProcess) -> None:
    status, headers, body = http(chat_server.port, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    for element in ("error", "console", "handle", "connect", "disconnect", "message", "send"):
        assert f'id="{element}"'.encode() in body


@pytest.mark.parametrize("target, status", [
    ("/no-such-page.html", 404), ("/../server.py", 404), ("/%2e%2e/server.py", 404),
    ("/..%2fserver.py", 404), ("//etc/passwd", 404), ("/%00", 400), ("*", 400),
])
def test_unknown_and_escaping_paths(chat_server: ServerProcess, target: str, status: int) -> None:
    got, _, body = http(chat_server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert got == status
    assert b"import" not in body


def test_other_methods_405_and_head(chat_server: ServerProcess) -> None:
    status, headers, _ = http(chat_server.port, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    with Client(chat_server.port) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = c.read_until(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"Content-Length: " in head


def test_keep_alive_then_upgrade_on_the_same_connection(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /chat.css HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.http_response()[0] == 200
        status, headers, _ = c.http_response()
        assert status == 200 and headers["content-type"].startswith("text/css")
        c.handshake()
        c.send_text("upgraded after two pages")
        assert c.recv_message() == "upgraded after two pages"


def test_http_1_0_and_connection_close_end_the_connection(chat_server: ServerProcess) -> None:
    for request in (b"GET / HTTP/1.0\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        with Client(chat_server.port) as c:
            c.send(request)
            assert c.http_response()[0] == 200
            assert c.at_eof()


# -- other ways to run ---------------------------------------------------------------------------

def test_plain_select_selector(start_server: Start) -> None:
    server = start_server("--selector", "select")
    a, b = joined(server.port, 2)
    assert_still_chatting(server.port, a, b)
    server.wait_for_log(r"selector: SelectSelector")


def test_ipv6_loopback(start_server: Start) -> None:
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("this machine has no IPv6")
    server = start_server(address="::1")
    assert server.page_url == f"http://[::1]:{server.port}/"
    a = Client(server.port, host="::1").handshake()
    a.send_text("v6")
    assert a.recv_message() == "v6"


def test_readme_drop_in_example_works(start_server: Start, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("```python\n# rooms.py", 1)[1].split("```", 1)[0]
    script = tmp_path / "rooms.py"
    script.write_text("# rooms.py" + code)
    server = start_server("--callback", str(script))
    a = Client(server.port).handshake()
    assert a.recv_message() == "welcome, 1 here"
    b = Client(server.port).handshake()
    assert b.recv_message() == "welcome, 2 here"
    a.send_text("/nick ada")
    a.send_text("hello")
    assert b.recv_message() == "ada: hello"
    b.send_text("/quit")
    assert b.recv_close() == (1000, "bye")
    b.send_frame(0x8, close_payload(1000))
    assert a.recv_message() == "guest2 left"
    a.close_handshake()


def test_select_refuses_users_beyond_fd_setsize_cleanly(start_server: Start) -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file hard limit ({hard}) is below what this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    server = start_server("--selector", "select")
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
             for _ in range(1100)]
    try:
        answers = []
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            answers.append(sock.recv(64).split(b" ")[1])
        assert set(answers) == {b"101", b"503"}
        assert answers.count(b"101") > 900  # select() watches descriptors up to 1023
        assert answers[-1] == b"503"
    finally:
        for sock in socks:
            sock.close()
    assert server.proc.poll() is None
    assert "Traceback" not in server.log
    (a,) = joined(server.port)
    assert_still_chatting(server.port, a)


def test_max_request_size_is_configurable(start_server: Start) -> None:
    server = start_server("--max-request-size", "1024")
    with Client(server.port) as c:
        c.send(c.upgrade_request(extra="X-Padding: " + "p" * 900 + "\r\n")[0])
        assert c.http_response()[0] == 431
    c = Client(server.port).handshake()  # an ordinary request still fits
    c.close()


def test_close_that_is_never_answered_times_out(start_server: Start, tmp_path: Path) -> None:
    script = tmp_path / "kick.py"
    script.write_text("def process(user, message, server):\n"
                      "    server.disconnect(user, 4000, 'kicked')\n")
    server = start_server("--callback", str(script), "--close-timeout", "0.5")
    (a,) = joined(server.port)
    a.send_text("kick me")
    assert a.recv_close() == (4000, "kicked")
    assert a.at_eof(timeout=5)  # we never answer: the server gives up after 0.5 s
    server.wait_for_log(r"left: 4000 .*no close frame in answer to ours")


BUGGY_SERVER = '''
import sys
sys.path.insert(0, {root!r})
from websocket.protocol import messages
import server

real_receive = messages.Receiver.receive

def receive(self, buf, *args, **kwargs):
    if b"\\x00" in buf:  # a bug planted for the test: any masked payload byte 0x00
        raise RuntimeError("planted bug")
    return real_receive(self, buf, *args, **kwargs)

messages.Receiver.receive = receive
sys.exit(server.main())
'''


def test_a_bug_of_ours_costs_one_user_1011_not_the_server(start_server: Start,
                                                          tmp_path: Path) -> None:
    script = tmp_path / "buggy_server.py"
    root = str(Path(__file__).resolve().parent.parent)
    script.write_text(BUGGY_SERVER.format(root=root))
    server = start_server(script=script)
    victim, other = joined(server.port, 2)
    victim.send(frame(1, b"x", mask=b"\x00\x00\x00\x00"))  # masked with zeros: 0x00 on the wire
    assert victim.recv_close()[0] == 1011
    server.wait_for_log(r"internal error while serving user \d+ .* closing it with 1011")
    server.wait_for_log(r"RuntimeError: planted bug")
    assert server.proc.poll() is None
    other.send_frame(1, b"fine", mask=b"\x01\x02\x03\x04")
    assert other.recv_message() == "fine"


def test_allow_origin_restricts_who_can_join(start_server: Start) -> None:
    server = start_server("--allow-origin", "http://chat.example:8080",
                          "--allow-origin", "http://other.example")
    with Client(server.port) as stranger:
        stranger.send(stranger.upgrade_request(extra="")[0].replace(
            f"Origin: http://127.0.0.1:{server.port}".encode(), b"Origin: http://evil.example"))
        status, _, body = stranger.http_response()
        assert status == 403 and b"http://evil.example" in body
    with Client(server.port) as friend:
        request = friend.upgrade_request()[0].replace(
            f"Origin: http://127.0.0.1:{server.port}".encode(), b"Origin: HTTP://Chat.Example:8080")
        friend.send(request)
        assert friend.http_response()[0] == 101
    server.wait_for_log(r"HTTP 403: origin http://evil.example is not allowed")


def test_silent_users_are_pinged_and_dead_ones_dropped(start_server: Start) -> None:
    server = start_server("--ping-interval", "0.3")
    alive, dead = joined(server.port, 2)
    assert alive.recv_frame() == (True, 0x9, b"keepalive")
    alive.send_frame(0xA, b"keepalive")  # a browser answers pings by itself
    assert dead.recv_frame() == (True, 0x9, b"keepalive")  # ...this one never will
    assert dead.recv_close()[0] == 1011
    server.wait_for_log(r"closing with 1011 .*no answer to a ping")
    alive.send_text("still here")
    while True:  # more keepalive pings may come first; answer them
        fin, opcode, payload = alive.recv_frame()
        if opcode == 0x9:
            alive.send_frame(0xA, payload)
            continue
        assert (opcode, payload) == (0x1, b"still here")
        break
