"""Recent history (issue 13, point 2): --history N per room, replayed to newcomers before
live messages, bounded, forgotten when idle; with Redis, the same on every server."""
from __future__ import annotations

import re
import time
from collections.abc import Callable

from conftest import ServerProcess
from redis_server import RedisServer
from test_redis_link import linked, wait_subscribed
from test_rooms import nothing_arrives
from wsclient import Client, draft76_request

from websocket.history import Entry, History

Start = Callable[..., ServerProcess]


# -- the sans-I/O part -------------------------------------------------------------------------

def test_history_is_bounded_and_drops_duplicates() -> None:
    history = History(3, idle=10.0)
    for i in range(5):
        assert history.add("/r", f"a.{i}", f"m{i}", now=0.0)
    assert not history.add("/r", "a.4", "again", now=0.0)
    assert [e.message for e in history.entries("/r")] == ["m2", "m3", "m4"]
    assert history.add("/r", "a.1", "m1 (was pushed out: new again)", now=0.0)


def test_load_merges_redis_list_first_then_what_came_meanwhile() -> None:
    history = History(4, idle=10.0)
    history.add("/r", "b.9", "live, also in the list", now=0.0)
    history.add("/r", "b.10", "live, not in the list yet", now=0.0)
    history.load("/r", [Entry("a.1", "x"), Entry("a.2", "y"), Entry("b.9", "live, also in "
                                                                    "the list")], now=0.0)
    assert [e.id for e in history.entries("/r")] == ["a.1", "a.2", "b.9", "b.10"]
    assert history.loaded("/r")


def test_idle_rooms_are_forgotten() -> None:
    history = History(2, idle=10.0)
    history.add("/busy", "a.1", "x", now=0.0)
    history.add("/idle", "a.2", "y", now=0.0)
    history.add("/used", "a.3", "z", now=0.0)
    assert history.forget_idle(5.0, in_use=()) == 0
    assert history.forget_idle(10.0, in_use={"/used"}) == 2
    assert list(history.rooms) == ["/used"]


# -- one server ------------------------------------------------------------------------------

def test_off_by_default_as_the_article(chat_server: ServerProcess) -> None:
    with Client(chat_server.port).handshake() as a:
        a.send_text("before b")
        assert a.recv_message() == "before b"
        with Client(chat_server.port).handshake() as b:
            assert nothing_arrives(b)


def test_newcomer_gets_the_last_n_of_its_room_then_live(start_server: Start) -> None:
    server = start_server("--history", "5")
    with Client(server.port).handshake("/r") as a, Client(server.port).handshake("/") as lobby:
        for i in range(8):
            a.send_text(f"r{i}")
            assert a.recv_message() == f"r{i}"
        lobby.send_text("lobby")
        assert lobby.recv_message() == "lobby"
        a.send_binary(b"\x00bin")
        assert a.recv_message() == b"\x00bin"
        with Client(server.port).handshake("/r") as b:
            replay = [b.recv_message() for _ in range(5)]
            assert replay == ["r4", "r5", "r6", "r7", b"\x00bin"]  # not the lobby's
            a.send_text("live")
            assert b.recv_message() == "live" and a.recv_message() == "live"
            assert nothing_arrives(b)
        with Client(server.port) as old:  # draft-76: the text ones, as 0x00 ... 0xFF
            old.send(draft76_request(server.port, "/r"))
            old.read_until(b"\r\n\r\n")
            old.read_exactly(16)
            assert [old.recv_hixie() for _ in range(4)] == ["r5", "r6", "r7", "live"]
    server.wait_for_log(r"History        : the last 5 message\(s\) of each room")


def test_empty_rooms_forget_after_the_idle_time(start_server: Start) -> None:
    server = start_server("--history", "3", "--history-idle", "1")
    with Client(server.port).handshake("/r") as a:
        a.send_text("old news")
        assert a.recv_message() == "old news"
    with Client(server.port).handshake("/r") as b:  # at once: still kept
        assert b.recv_message() == "old news"
    time.sleep(2.5)  # empty for more than the idle time and a sweep (every idle / 2)
    with Client(server.port).handshake("/r") as c:
        assert nothing_arrives(c, 0.5)


def test_bad_history_option_is_one_error_line(start_server: Start) -> None:
    try:
        start_server("--history", "-1")
    except AssertionError as failed:
        assert "must be 0 or more" in str(failed) and "Traceback" not in str(failed)
    else:
        raise AssertionError("a negative --history was accepted")


# -- with Redis: the same history everywhere ----------------------------------------------

def test_history_replayed_across_servers(start_server: Start,
                                         start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    a, b, c = linked(start_server, redis, 3, "--history", "4")
    with Client(a.port).handshake("/h") as a1, Client(b.port).handshake("/h") as b1:
        wait_subscribed(redis, "/h", 2)
        for i in range(3):
            a1.send_text(f"a{i}")
            b1.send_text(f"b{i}")
        for user in (a1, b1):
            assert len([user.recv_message() for _ in range(6)]) == 6
        time.sleep(0.3)
        # c had nobody in /h: its newcomer gets Redis's list, the newest 4, in Redis's order.
        with redis.client() as client:
            stored = client.call("LRANGE", "chat:history:/h", 0, -1)
        assert isinstance(stored, list) and len(stored) == 4
        expected = [bytes(item).split(b" ", 3)[3].decode() for item in stored
                    if isinstance(item, bytes)]
        with Client(c.port).handshake("/h") as c1, Client(a.port).handshake("/h") as a2:
            assert [c1.recv_message() for _ in range(4)] == expected
            # a has the room already: its own copy, in the order messages reached it (each
            # sender's order kept), the newest 4.
            local = [a2.recv_message() for _ in range(4)]
            assert len(set(local)) == 4 and set(local) <= {f"{s}{i}" for s in "ab"
                                                          for i in range(3)}
            for sender in "ab":
                mine = [m for m in local if str(m).startswith(sender)]
                assert mine == sorted(mine)
            wait_subscribed(redis, "/h", 3)
            b1.send_text("live after")
            for user in (a1, b1, c1, a2):
                assert user.recv_message() == "live after"
            for user in (a1, b1, c1, a2):
                assert nothing_arrives(user)
        # The list is capped and expires: TTL set from --history-idle.
        with redis.client() as client:
            assert client.call("LLEN", "chat:history:/h") == 4
            ttl = client.call("TTL", "chat:history:/h")
            assert isinstance(ttl, int) and 0 < ttl <= 3600


# -- the chat page's channel: the TAGGED subprotocol -----------------------------------------

def tagged_client(port: int, path: str) -> Client:
    client = Client(port)
    request, _ = client.upgrade_request(path, extra="Sec-WebSocket-Protocol: chat.history.v1\r\n")
    client.send(request)
    status, headers, _ = client.http_response()
    assert status == 101 and headers["sec-websocket-protocol"] == "chat.history.v1"
    return client


def test_tagged_users_get_ids_resume_after_one_and_hear_of_gaps(start_server: Start) -> None:
    import json
    server = start_server("--history", "3")
    with Client(server.port).handshake("/t") as plain, \
            tagged_client(server.port, "/t?handle=ann") as ann:
        # Who is here: the full list once (ids unique, names the handles or "user N"), then
        # the delta of the pass ann came in, which names ann (tests/test_presence.py).
        listing = json.loads(ann.recv_message())["presence"]
        assert [entry["name"] for entry in listing] == ["user 1", "ann"]
        assert all(re.fullmatch(r"[0-9a-f]{12}\.\d+", entry["id"]) for entry in listing)
        assert json.loads(ann.recv_message()) == {
            "presence_delta": {"joined": [listing[1]], "left": []}}
        for i in range(4):
            plain.send_text(f"m{i}")
            assert plain.recv_message() == f"m{i}"  # plain text for everyone else
        tagged = [json.loads(ann.recv_message()) for _ in range(4)]
        assert [t["text"] for t in tagged] == ["m0", "m1", "m2", "m3"]
        ids = [t["id"] for t in tagged]
        assert len(set(ids)) == 4 and all(re.fullmatch(r"[0-9a-f]{12}\.\d+", i) for i in ids)
        # Resuming after m2: m3 only. After m0 (pushed out of the 3 kept): a notice, then all.
        with tagged_client(server.port, f"/t?handle=bo&after={ids[2]}") as bo:
            first = json.loads(bo.recv_message())
            assert first == {"id": ids[3], "text": "m3"}
        with tagged_client(server.port, f"/t?handle=cy&after={ids[0]}") as cy:
            assert json.loads(cy.recv_message()) == {"notice": "gap"}
            assert [json.loads(cy.recv_message())["id"] for _ in range(3)] == ids[1:]
        with Client(server.port).handshake("/t") as newcomer:  # plain: the last 3, as text
            assert [newcomer.recv_message() for _ in range(3)] == ["m1", "m2", "m3"]


def test_presence_across_servers(start_server: Start,
                                 start_redis: Callable[..., RedisServer]) -> None:
    import json
    redis = start_redis()
    a, b = linked(start_server, redis, 2)

    states: dict[Client, dict[str, str]] = {}
    full_lists: dict[Client, int] = {}

    def presence(client: Client, wanted: list[str]) -> None:
        """Until the client's list (its full list, then the deltas) holds `wanted`."""
        state = states.setdefault(client, {})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            value = json.loads(client.recv_message())
            if "presence" in value:
                full_lists[client] = full_lists.get(client, 0) + 1
                state.clear()
                state.update((entry["id"], entry["name"]) for entry in value["presence"])
            else:
                for entry_id in value["presence_delta"]["left"]:
                    del state[entry_id]
                for entry in value["presence_delta"]["joined"]:
                    state[entry["id"]] = entry["name"]
            if sorted(state.values()) == sorted(wanted):
                return
        raise AssertionError(f"presence {sorted(state.values())}, not {sorted(wanted)}")

    with tagged_client(a.port, "/p?handle=ann") as ann:
        presence(ann, ["ann"])
        with tagged_client(b.port, "/p?handle=bo") as bo, Client(b.port).handshake("/p"):
            presence(bo, ["ann", "bo", "user 2"])  # bo's server asked a for its list
            presence(ann, ["ann", "bo", "user 2"])
            origins = {entry_id.split(".")[0] for entry_id in states[ann]}
            assert len(origins) == 2 and states[ann] == states[bo]  # ids: <origin>.<user>
            with tagged_client(a.port, "/elsewhere?handle=cy") as cy:
                presence(cy, ["cy"])  # rooms apart
        presence(ann, ["ann"])  # both of b's users left: its empty list says so
        assert full_lists[ann] == 1  # once, on joining: the rest were deltas


def test_resume_after_a_server_restart_from_redis_history(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    """The history outlives the server in Redis: a page resuming on the restarted server
    gets exactly what came after its last id, with no gap notice."""
    import json
    redis = start_redis()
    (first,) = linked(start_server, redis, 1, "--history", "10")
    with tagged_client(first.port, "/r?handle=ann") as ann, \
            Client(first.port).handshake("/r") as plain:
        for i in range(5):
            plain.send_text(f"m{i}")
        ids = []
        while len(ids) < 5:
            value = json.loads(ann.recv_message())
            if "id" in value:
                ids.append(value["id"])
    assert first.stop() == 0
    (second,) = linked(start_server, redis, 1, "--history", "10")
    with tagged_client(second.port, f"/r?handle=ann&after={ids[1]}") as again:
        got = []
        while len(got) < 3:
            value = json.loads(again.recv_message())
            assert "notice" not in value
            if "text" in value:
                got.append((value["id"], value["text"]))
        assert got == [(ids[2], "m2"), (ids[3], "m3"), (ids[4], "m4")]
    with Client(second.port).handshake("/r") as newcomer:
        assert [newcomer.recv_message() for _ in range(5)] == [f"m{i}" for i in range(5)]


def test_all_rooms_together_are_bounded_in_bytes() -> None:
    """A client opening many rooms with a big message in each cannot grow the server."""
    history = History(10, idle=3600.0, max_bytes=10_000)
    for i in range(100):
        history.add(f"/room{i}", f"a.{i}", "x" * 1000, now=float(i))
        assert history.cost <= 10_000
    assert len(history.rooms) < 10 and "/room99" in history.rooms  # the newest survive
    assert history.cost == sum(e.cost for r in history.rooms.values() for e in r.entries)
    history.add("/big", "b.1", "y" * 20_000, now=200.0)  # larger than it all: kept alone
    assert list(history.rooms) == ["/big"] and len(history.entries("/big")) == 1
