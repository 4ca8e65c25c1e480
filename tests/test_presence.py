"""Presence as deltas (issue 18, point 1): a newcomer gets its room's full list once, then
one delta per room and loop pass, the same bytes for every page user of the room.

The state and its changes (websocket/chat/presence.py) are held against a model with
hypothesis: any sequence of joins, leaves, other processes' lists and expiries, cut into
passes, leaves every client (one that has been there all along, one whose full list was
taken in the middle of a pass) with exactly the room's list. On the wire, the `websockets`
library (code we did not write) is the page user, with permessage-deflate: it must inflate
what the server compressed, and see the list once, then deltas with unique ids.
"""
from __future__ import annotations

import json
import re
import signal
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess
from hypothesis import given
from hypothesis import strategies as st
from redis_server import RedisServer
from test_rooms import nothing_arrives
from websockets.sync.client import ClientConnection, connect
from wsclient import Client

from websocket.chat.presence import (
    MAX_ORIGINS,
    MAX_PER_ORIGIN,
    Presence,
    encode_delta,
    encode_full,
)

Start = Callable[..., ServerProcess]
TAGGED = "chat.history.v1"
ENTRY_ID = re.compile(r"[0-9a-f]{12}\.\d+")


# -- the state and its changes, without a server -----------------------------------------------

def apply(state: dict[str, str], message: dict[str, Any]) -> dict[str, str]:
    """What the page does with a presence message (client/chat.js `onTagged`)."""
    if "presence" in message:
        state.clear()
        state.update((entry["id"], entry["name"]) for entry in message["presence"])
        return state
    delta = message["presence_delta"]
    for entry_id in delta["left"]:
        state.pop(entry_id, None)
    for entry in delta["joined"]:
        state[entry["id"]] = entry["name"]
    return state


def listed(presence: Presence, room: str) -> dict[str, str]:
    full = json.loads(encode_full(presence.rooms[room].here.values()))
    return apply({}, full)


def test_the_wire_format() -> None:
    presence = Presence("abc123")
    presence.enter("/r", 1, "nobody told")  # a room not kept (no page user): nothing
    assert "/r" not in presence.rooms and not presence.needed("/r")
    presence.open("/r")
    presence.enter("/r", 1, 'ann "the <b>"', page=True)
    assert presence.needed("/r")
    presence.enter("/r", 2, "b\u00e9a")
    assert json.loads(encode_full(presence.rooms["/r"].here.values())) == {"presence": [
        {"id": "abc123.1", "name": 'ann "the <b>"'}, {"id": "abc123.2", "name": "b\u00e9a"}]}
    joined, left = presence.rooms["/r"].take_delta()
    assert json.loads(encode_delta(joined, left)) == {"presence_delta": {
        "joined": [{"id": "abc123.1", "name": 'ann "the <b>"'},
                   {"id": "abc123.2", "name": "b\u00e9a"}], "left": []}}
    presence.leave("/r", 1, page=True)
    presence.enter("/r", 3, "cy")
    presence.enter("/r", 4, "gone at once")
    presence.leave("/r", 4)  # came and went in one pass: not in the delta at all
    joined, left = presence.rooms["/r"].take_delta()
    assert json.loads(encode_delta(joined, left)) == {"presence_delta": {
        "joined": [{"id": "abc123.3", "name": "cy"}], "left": ["abc123.1"]}}
    assert presence.rooms["/r"].take_delta() == ([], [])  # nothing new: nothing to send
    assert not presence.needed("/r")  # no page user left: rooms.py forgets it
    assert Presence("x", always=True).needed("/r") is False  # (only rooms it keeps)


def test_a_room_opened_with_users_already_there_has_nothing_to_tell() -> None:
    presence = Presence("o")
    presence.open("/r", [(1, "ann"), (2, "user 2")])
    assert listed(presence, "/r") == {"o.1": "ann", "o.2": "user 2"}
    presence.enter("/r", 3, "page", page=True)
    joined, left = presence.rooms["/r"].take_delta()
    assert joined == ['{"id":"o.3","name":"page"}'] and left == []


def test_another_process_is_diffed_and_expires() -> None:
    presence = Presence("ours")
    presence.open("/r")
    presence.heard("/r", "them", [(1, "ann"), (2, "bo")], until=10.0)
    assert presence.rooms["/r"].take_delta()[0] == [
        '{"id":"them.1","name":"ann"}', '{"id":"them.2","name":"bo"}']
    presence.heard("/r", "them", [(1, "ann"), (2, "bo")], until=20.0)  # a refresh
    assert presence.rooms["/r"].take_delta() == ([], [])
    presence.heard("/r", "them", [(2, "bo"), (3, "cy")], until=30.0)
    assert presence.rooms["/r"].take_delta() == (['{"id":"them.3","name":"cy"}'], ["them.1"])
    presence.expire(now=29.0)
    assert presence.rooms["/r"].take_delta() == ([], [])
    presence.expire(now=30.0)  # not heard of in time: its users left
    assert presence.rooms["/r"].take_delta() == ([], ["them.2", "them.3"])
    presence.heard("/r", "ours", [(9, "echo")], until=40.0)  # our own words: ignored
    presence.heard("/elsewhere", "them", [(1, "ann")], until=40.0)  # no user of ours there
    assert presence.rooms["/r"].here == {} and "/elsewhere" not in presence.rooms
    presence.heard("/r", "big", [(n, "x") for n in range(MAX_PER_ORIGIN + 5)], until=50.0)
    assert len(presence.rooms["/r"].here) == MAX_PER_ORIGIN
    assert presence.rooms["/r"].here["big.0"] == '{"id":"big.0","name":"x"}'
    for n in range(MAX_ORIGINS - 1):
        assert presence.heard("/r", f"p{n}", [(1, "y" * 40)], until=50.0)
    assert not presence.heard("/r", "onetoomany", [(1, "z")], until=50.0)
    assert presence.rooms["/r"].here["p0.1"] == '{"id":"p0.1","name":"%s"}' % ("y" * 32)
    assert "onetoomany.1" not in presence.rooms["/r"].here


def test_our_list_for_the_others_is_capped_and_said_when_it_changes() -> None:
    presence = Presence("o", always=True)
    presence.open("/r")
    for user_id in range(1, MAX_PER_ORIGIN + 3):
        presence.enter("/r", user_id, f"u{user_id}")
    state = presence.rooms["/r"]
    said = state.to_publish()
    assert said is not None and len(said) == MAX_PER_ORIGIN and said[0] == (1, "u1")
    presence.leave("/r", MAX_PER_ORIGIN + 2)  # past the cap: the others would not see it
    assert state.to_publish() is None
    presence.refresh()  # their deadline: said again, unchanged
    assert state.to_publish() == said
    presence.leave("/r", 1)  # the first: the 1,001st moves up
    assert state.to_publish() == said[1:] + [(MAX_PER_ORIGIN + 1, f"u{MAX_PER_ORIGIN + 1}")]
    presence.ask("/r")
    assert state.to_publish() is not None


OPS = st.one_of(
    st.tuples(st.just("enter"), st.integers(1, 8), st.sampled_from(["ann", "bo", "ann"])),
    st.tuples(st.just("leave"), st.integers(1, 8), st.just("")),
    st.tuples(st.just("heard"), st.sampled_from(["p", "q"]),
              st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["ann", "cy", "dee"])),
                       max_size=5)),
    st.tuples(st.just("expire"), st.integers(0, 30), st.just("")),
    st.tuples(st.just("newcomer"), st.just(0), st.just("")),
    st.tuples(st.just("pass"), st.just(0), st.just("")),
)


@given(st.lists(OPS, max_size=60))
def test_deltas_keep_every_client_exact(ops: list[tuple[str, Any, Any]]) -> None:
    """A client there from the start, and newcomers (their full list taken at the end of
    the pass they came in, before its delta, as rooms.py sends it), all end every pass
    with exactly the room's list."""
    presence = Presence("o")
    presence.open("/r")
    clients: list[dict[str, str]] = [{}]
    newcomers = 0
    now = 0.0
    for op, arg, more in [*ops, ("pass", 0, "")]:
        if op == "enter" and arg not in presence.rooms["/r"].local:
            presence.enter("/r", arg, more)
        elif op == "leave":
            presence.leave("/r", arg)
        elif op == "heard":
            now += 1
            presence.heard("/r", arg, more, until=now + 10)
        elif op == "expire":
            presence.expire(now + arg)
        elif op == "newcomer":
            newcomers += 1
        elif op == "pass":
            clients += [listed(presence, "/r") for _ in range(newcomers)]
            newcomers = 0
            joined, left = presence.rooms["/r"].take_delta()
            delta = json.loads(encode_delta(joined, left))
            assert not set(entry["id"] for entry in delta["presence_delta"]["joined"]) & set(
                delta["presence_delta"]["left"])
            for client in clients:
                apply(client, delta)
            expected = listed(presence, "/r")
            for client in clients:
                assert client == expected


# -- on the wire: the websockets library as the page user --------------------------------------

def presence_messages(ws: ClientConnection, count: int,
                      timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next `count` presence messages (anything else fails the test)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        assert set(message) <= {"presence", "presence_delta"}, message
        got.append(message)
    return got


def nothing_more(ws: ClientConnection, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        message = ws.recv(timeout=wait)
        raise AssertionError(f"unexpected {message!r}")


@contextmanager
def joined_page(port: int, path: str) -> Iterator[tuple[ClientConnection, dict[str, Any],
                                                        dict[str, str]]]:
    """A page user (the `websockets` library, offering permessage-deflate) that joined:
    its full list, then the delta of the pass it came in (which names it too and changes
    nothing in the list). Yields the connection, the list, and the state it then has."""
    with connect(f"ws://127.0.0.1:{port}{path}", subprotocols=[TAGGED],  # type: ignore[list-item]
                 compression="deflate", open_timeout=10) as ws:
        assert ws.subprotocol == TAGGED
        assert (ws.response.headers.get("Sec-WebSocket-Extensions") or "").startswith(
            "permessage-deflate")
        full, own = presence_messages(ws, 2)
        state = apply({}, full)
        assert apply(dict(state), own) == state
        yield ws, full, state


def test_a_newcomer_gets_the_list_once_then_deltas(chat_server: ServerProcess) -> None:
    port = chat_server.port
    with joined_page(port, "/room?handle=ann") as (ann, first, state):
        [mine] = first["presence"]
        assert mine["name"] == "ann" and ENTRY_ID.fullmatch(mine["id"])
        with joined_page(port, "/room?handle=ann") as (twin, twin_list, twin_state):
            # names repeat; ids do not
            [delta] = presence_messages(ann, 1)
            [joined] = delta["presence_delta"]["joined"]
            assert joined["name"] == "ann" and joined["id"] != mine["id"]
            assert delta["presence_delta"]["left"] == []
            assert twin_list["presence"] == [mine, joined]  # in order of arrival
            assert apply(state, delta) == twin_state
            with Client(port).handshake("/room?handle=plain"):  # a plain client: listed,
                [delta] = presence_messages(ann, 1)           # by its handle
                [plain] = delta["presence_delta"]["joined"]
                assert plain["name"] == "plain" and ENTRY_ID.fullmatch(plain["id"])
                apply(state, delta)
            [delta] = presence_messages(ann, 1)
            assert delta == {"presence_delta": {"joined": [], "left": [plain["id"]]}}
            apply(state, delta)
            for message in presence_messages(twin, 2):  # the twin saw the same
                apply(twin_state, message)
            assert twin_state == state
            with Client(port).handshake("/elsewhere"):  # another room: nothing here
                nothing_more(ann)
        [delta] = presence_messages(ann, 1)
        assert delta == {"presence_delta": {"joined": [], "left": [joined["id"]]}}
        assert apply(state, delta) == {mine["id"]: "ann"}
        nothing_more(ann)  # never the full list again
        ids = [mine["id"], joined["id"], plain["id"]]
        assert len(set(ids)) == 3


def test_deltas_are_compressed_once_for_the_room(chat_server: ServerProcess) -> None:
    """Raw clients offering permessage-deflate as Chromium does get the deltas compressed
    (RSV1) and inflate them with zlib to the same deltas and the right list."""
    port = chat_server.port
    offer = ("Sec-WebSocket-Protocol: chat.history.v1\r\n"
             "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    watchers = []
    for n in range(3):
        watcher = Client(port)
        watcher.send(watcher.upgrade_request(f"/z?handle=w{n}", extra=offer)[0])
        assert watcher.http_response()[0] == 101
        watchers.append(watcher)
    with joined_page(port, "/z?handle=ws") as (ws, _, _):
        for n in range(5):
            with Client(port).handshake(f"/z?handle=churn{n}"):
                presence_messages(ws, 1)
            presence_messages(ws, 1)
    deltas = []
    for watcher in watchers:
        inflater = zlib.decompressobj(-15)  # the server keeps its context (RFC 7692 §7.2.3)
        messages: list[dict[str, Any]] = []
        compressed: list[bool] = []
        watcher.sock.settimeout(0.5)
        try:
            while True:
                rsv1, payload = compressed_frame(watcher)
                # §7.2.2: a compressed message is inflated with the 4-byte tail appended.
                text = inflater.decompress(payload + b"\x00\x00\xff\xff") if rsv1 else payload
                messages.append(json.loads(text))
                compressed.append(rsv1)
        except TimeoutError:
            pass
        assert all(compressed[-12:])  # the deltas (ws in, 5 x in and out, ws out)
        deltas.append(messages[-12:])
        state: dict[str, str] = {}
        for message in messages:
            apply(state, message)
        assert sorted(state.values()) == sorted(f"w{n}" for n in range(3))
    for watcher in watchers:
        watcher.close()
    assert deltas[0] == deltas[1] == deltas[2]
    assert all("presence_delta" in delta for delta in deltas[0])


def compressed_frame(client: Client) -> tuple[bool, bytes]:
    """One whole unmasked text frame, RSV1 allowed (RFC 7692 §6): (rsv1, payload)."""
    b1, b2 = client.read_exactly(2)
    assert b1 & 0x8F == 0x81, hex(b1)  # FIN, text; RSV2 and RSV3 clear
    n = b2 & 0x7F
    if n == 126:
        n = int.from_bytes(client.read_exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(client.read_exactly(8), "big")
    return bool(b1 & 0x40), client.read_exactly(n)


# -- across processes (Redis): other processes' lists become deltas here ----------------------

# A server whose presence refresh is 0.5 s and whose deadline for other processes is 1.5 s
# (instead of 20 s and 60 s), so that silence can be waited for.
SHORT_REFRESH_SERVER = '''
import sys
sys.path.insert(0, {root!r})
import server
from websocket.chat import rooms
rooms.PRESENCE_REFRESH = 0.5
rooms.PRESENCE_TTL = 1.5
sys.exit(server.main())
'''


class Page:
    """A raw chat-page connection that keeps its presence list (as client/chat.js does)."""

    def __init__(self, port: int, path: str) -> None:
        self.client = Client(port)
        self.client.send(self.client.upgrade_request(
            path, extra=f"Sec-WebSocket-Protocol: {TAGGED}\r\n")[0])
        assert self.client.http_response()[0] == 101
        self.state: dict[str, str] = {}
        self.full_lists = 0

    def read(self) -> dict[str, Any]:
        message = json.loads(self.client.recv_message())
        self.full_lists += "presence" in message
        apply(self.state, message)
        return message

    def until(self, names: list[str], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        self.client.sock.settimeout(timeout)
        while sorted(self.state.values()) != sorted(names):
            assert time.monotonic() < deadline, f"{sorted(self.state.values())}, not {names}"
            self.read()

    def silent(self, seconds: float) -> None:
        assert nothing_arrives(self.client, seconds), self.read()


def test_other_processes_become_deltas_and_the_silent_leave(
        start_server: Start, start_redis: Callable[..., RedisServer], tmp_path: Path) -> None:
    redis = start_redis()
    script = tmp_path / "short_refresh_server.py"
    script.write_text(SHORT_REFRESH_SERVER.format(root=str(Path(__file__).parent.parent)))
    a, b = (start_server("--redis", redis.url, script=script) for _ in range(2))
    for server in (a, b):
        server.wait_for_log(r"Redis connected")
    ann = Page(a.port, "/p?handle=ann")
    ann.until(["ann"])
    bo = Page(b.port, "/p?handle=bo")
    ann.until(["ann", "bo"])
    bo.until(["ann", "bo"])
    assert ann.state == bo.state
    ann.silent(2.0)  # four refreshes: the lists go to Redis, nothing to the users
    # A process that says its list once and then nothing: joins, then leaves at its deadline.
    with redis.client() as publisher:
        publisher.call("PUBLISH", "chat:/p", 'ghost1 0 p [[1,"ghost"],[2,"ghost"]]')
    assert ann.read() == {"presence_delta": {"joined": [
        {"id": "ghost1.1", "name": "ghost"}, {"id": "ghost1.2", "name": "ghost"}], "left": []}}
    started = time.monotonic()
    assert ann.read() == {"presence_delta": {"joined": [], "left": ["ghost1.1", "ghost1.2"]}}
    assert 1.0 < time.monotonic() - started < 3.0
    # A process killed outright (no empty list said): its users leave at its deadline.
    b.stop(signal.SIGKILL)
    bo_id = next(entry_id for entry_id, name in ann.state.items() if name == "bo")
    started = time.monotonic()
    assert ann.read() == {"presence_delta": {"joined": [], "left": [bo_id]}}
    assert 1.0 < time.monotonic() - started < 3.0
    assert ann.full_lists == 1 and bo.full_lists == 1
    ann.silent(1.0)
    assert "Traceback" not in a.log
