"""Rooms (issue 13, point 1): a user's room is its path; the built-in `all` echoes to the
sender's room; the callback API moves users and lists rooms. The real server, real sockets."""
from __future__ import annotations

import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess
from wsclient import Client, draft76_request

Start = Callable[..., ServerProcess]


def nothing_arrives(client: Client, wait: float = 0.3) -> bool:
    """True if no frame arrives within `wait` seconds (the socket stays usable)."""
    client.sock.settimeout(wait)
    try:
        data = client.sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return not client.buf
    finally:
        client.sock.settimeout(10.0)
    return not data and not client.buf


def test_each_path_is_a_room_and_rooms_are_kept_apart(chat_server: ServerProcess) -> None:
    port = chat_server.port
    with Client(port).handshake("/") as lobby1, Client(port).handshake("/?x=1") as lobby2, \
            Client(port).handshake("/python") as py1, \
            Client(port).handshake("/python?room=ignored") as py2, \
            Client(port).handshake("/rust") as rust:
        py1.send_text("py: hello")
        assert py1.recv_message() == "py: hello"
        assert py2.recv_message() == "py: hello"
        lobby2.send_text("lobby: hi")
        assert lobby1.recv_message() == "lobby: hi"
        assert lobby2.recv_message() == "lobby: hi"
        rust.send_text("rust: alone")
        assert rust.recv_message() == "rust: alone"
        for other in (lobby1, lobby2, py1, py2):
            assert nothing_arrives(other)
        # Everyone in a room sees the same order, and each sender's order.
        for i in range(50):
            (py1 if i % 2 else py2).send_text(f"m{i}")
        seen = [[user.recv_message() for _ in range(50)] for user in (py1, py2)]
        assert seen[0] == seen[1]
        assert sorted(seen[0], key=lambda m: int(str(m)[1:])) == [f"m{i}" for i in range(50)]
        for parity in (0, 1):
            mine = [m for m in seen[0] if int(str(m)[1:]) % 2 == parity]
            assert mine == [f"m{i}" for i in range(parity, 50, 2)]
        assert nothing_arrives(lobby1) and nothing_arrives(rust)


def test_draft76_users_have_rooms_too(chat_server: ServerProcess) -> None:
    port = chat_server.port
    with Client(port) as old, Client(port).handshake("/old") as new, \
            Client(port).handshake("/") as lobby:
        old.send(draft76_request(port, "/old"))
        old.read_until(b"\r\n\r\n")
        old.read_exactly(16)
        new.send_text("to the old room")
        assert new.recv_message() == "to the old room"
        assert old.recv_hixie() == "to the old room"
        assert nothing_arrives(lobby)


def test_a_path_too_long_for_a_room_is_400(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as client:
        request, _ = client.upgrade_request("/" + "r" * 300)
        client.send(request)
        status, _, body = client.http_response()
        assert status == 400 and b"room name" in body
    chat_server.wait_for_log(r"HTTP 400: room name")


ROOM_SCRIPT = '''
def process(user, message, server):
    if message.startswith("/join "):
        before = user.room
        server.join(user, message[6:])
        server.send(user, f"moved from {before} to {user.room}")
    elif message == "/rooms":
        server.send(user, ",".join(sorted(server.rooms())))
    elif message == "/who":
        here = [u.id for u in server.get_users(room=user.room)]
        server.send(user, f"{len(here)} of {len(server.get_users())}")
    elif message.startswith("/everyone "):
        server.broadcast(message[10:])
    elif message == "/bad":
        try:
            server.join(user, "no-slash")
        except ValueError as exc:
            server.send(user, f"refused: {exc}")
    else:
        server.broadcast(message, exclude=user, room=user.room)
'''


def test_callback_api_join_rooms_get_users_broadcast(start_server: Start,
                                                     tmp_path: Path) -> None:
    script = tmp_path / "rooms_api.py"
    script.write_text(textwrap.dedent(ROOM_SCRIPT))
    server = start_server("--callback", str(script))
    port = server.port
    with Client(port).handshake("/a") as a1, Client(port).handshake("/a") as a2, \
            Client(port).handshake("/b") as b1:
        a1.send_text("/rooms")
        assert a1.recv_message() == "/a,/b"
        a1.send_text("/who")
        assert a1.recv_message() == "2 of 3"
        a1.send_text("to a")  # room broadcast, sender excluded
        assert a2.recv_message() == "to a"
        assert nothing_arrives(a1) and nothing_arrives(b1)
        a2.send_text("/join /b")
        assert a2.recv_message() == "moved from /a to /b"
        b1.send_text("to b")
        assert a2.recv_message() == "to b"
        assert nothing_arrives(a1)
        a2.send_text("/who")
        assert a2.recv_message() == "2 of 3"
        a1.send_text("/everyone all of you")  # room=None: the whole server, as before
        for user in (a1, a2, b1):
            assert user.recv_message() == "all of you"
        a1.send_text("/join /b")
        assert a1.recv_message() == "moved from /a to /b"
        a1.send_text("/rooms")
        assert a1.recv_message() == "/b"  # /a is empty: gone
        a1.send_text("/bad")
        assert a1.recv_message().startswith("refused: a room is a path")


@pytest.mark.parametrize("path", ["/", "/lobby"])
def test_the_article_chat_is_unchanged_on_one_path(chat_server: ServerProcess,
                                                   path: str) -> None:
    with Client(chat_server.port).handshake(path) as a, \
            Client(chat_server.port).handshake(path) as b:
        a.send_text("same as 2010")
        assert a.recv_message() == b.recv_message() == "same as 2010"
