"""One chat over many server processes through a real redis-server (issue 13, points 3-4).

Every test starts its own redis-server (tests/redis_server.py: a free loopback port,
persistence off) and real `server.py` processes with --redis, and talks to them with the raw
client. Without redis-server they skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable

import pytest
from conftest import ServerProcess
from redis_server import RedisServer, free_port
from test_rooms import nothing_arrives
from wsclient import Client, wait_until

from websocket.protocol.redis_entries import (
    MAX_PRESENCE_JSON,
    MAX_PRESENCE_NAME,
    MAX_PRESENCE_NAMES,
    NOT_AN_ENTRY,
    NOT_UTF8,
    TOO_BIG,
    EntryError,
    RedisAddress,
    RedisURLError,
    decode_entry,
    decode_presence,
    encode_presence,
    parse_redis_url,
)

Start = Callable[..., ServerProcess]


# -- the URL, no Redis needed ------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6380", RedisAddress("127.0.0.1", 6380)),
    ("redis://localhost", RedisAddress("localhost", 6379)),
    ("redis://:s3cr%40t@10.0.0.1:7000/2", RedisAddress("10.0.0.1", 7000, "s3cr@t", None, 2)),
    ("redis://alice:pw@[::1]:6379/0", RedisAddress("::1", 6379, "pw", "alice", 0)),
])
def test_redis_urls(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:6379", "not a redis:// or rediss:// URL"),
    ("redis://127.0.0.1:99999", "bad port"),
    ("redis://:pw@", "no host"),
    ("redis://127.0.0.1/zero", "must be a number"),
])
def test_bad_redis_urls(url: str, problem: str) -> None:
    with pytest.raises(RedisURLError, match=problem):
        parse_redis_url(url)


@pytest.mark.parametrize("data, expected", [
    (b"abc 0 q", ("abc", "q", None)),
    (b'abc 0 p [[1,"ann"],[7,"b\xc3\xa9a"]]', ("abc", "p", [(1, "ann"), (7, "b\u00e9a")])),
    (b"abc 0 p []", ("abc", "p", [])),
    (b'abc 0 p ["ann"]', ("abc", "p", None)),  # presence, but not (user id, name): ignored
    (b"abc 0 p [[1]]", ("abc", "p", None)),
    (b'abc 0 p [[-1,"x"]]', ("abc", "p", None)),
    (b'abc 0 p [[true,"x"]]', ("abc", "p", None)),
    (b'abc 0 p [["1","x"]]', ("abc", "p", None)),
    (b"abc 0 p {oops", ("abc", "p", None)),
    (b"a.b 0 q", None),  # an origin is letters and digits: ids are <origin>.<user id>
    (b"\xc3\xa9 0 q", None),
    (b"a" * 65 + b" 0 q", None),
    (b"abc 1 t hello", None),  # a message
    (b"abc 0 x", None),
    (b"abc", None),
])
def test_presence_entries(data: bytes, expected: object) -> None:
    assert decode_presence(data) == expected


@pytest.mark.parametrize("names, ok", [
    (["n"] * MAX_PRESENCE_NAMES, True),
    (["n"] * (MAX_PRESENCE_NAMES + 1), False),  # rooms.py keeps 1,000 per origin at most
    (["x" * MAX_PRESENCE_NAME], True),
    (["x" * (MAX_PRESENCE_NAME + 1)], False),  # longer than any handle the page allows
    (["\U0001f600" * MAX_PRESENCE_NAME], True),  # characters, not bytes
    (["\x01" * MAX_PRESENCE_NAME] * MAX_PRESENCE_NAMES, True),  # 6 bytes each in JSON
])
def test_presence_names_are_held_to_what_a_server_publishes(names: list[str], ok: bool) -> None:
    # The largest user ids too: the longest JSON an origin can publish still parses.
    entries = [(2**64 - 1 - number, name) for number, name in enumerate(names)]
    data = b"abc 0 p " + json.dumps(entries).encode()
    assert decode_presence(data) == ("abc", "p", entries if ok else None)


def test_presence_json_is_not_parsed_past_what_a_list_of_names_takes() -> None:
    assert decode_presence(b"abc 0 p " + b"[" * 100_000) == ("abc", "p", None)  # too deep
    long = b"abc 0 p [" + b" " * MAX_PRESENCE_JSON + b"]"  # valid JSON, but too long
    assert decode_presence(long) == ("abc", "p", None)


@pytest.mark.parametrize("data, kind", [
    (b"abc 1 t " + b"x" * 100, None),
    (b"abc 1 b " + b"\xff" * 100, None),
    (b"abc 1 t " + b"x" * 101, TOO_BIG),
    (b"abc 1 t " + "é".encode() * 51, TOO_BIG),  # bytes (102), not characters, as a client's
    (b"abc 1 t caf\xe9", NOT_UTF8),
    (b"abc 1 t \xed\xa0\x80", NOT_UTF8),  # a UTF-16 surrogate
    (b"hello world", NOT_AN_ENTRY),
    (b"abc 0 p []", NOT_AN_ENTRY),  # presence, not a message
    (b"abc " + b"9" * 5000 + b" t x", NOT_AN_ENTRY),  # int() would refuse (or take long)
    (b"a" * 65 + b" 1 t x", NOT_AN_ENTRY),
])
def test_entries_are_held_to_a_clients_limits(data: bytes, kind: str | None) -> None:
    if kind is None:
        assert decode_entry(data, 100)[0] == "abc"
    else:
        with pytest.raises(EntryError) as caught:
            decode_entry(data, 100)
        assert caught.value.kind == kind


def test_presence_round_trip() -> None:
    entries = [(1, "ann"), (22, 'b\u00e9a "<x>"')]
    assert decode_presence(encode_presence("f00d", entries)) == ("f00d", "p", entries)
    assert decode_presence(encode_presence("f00d", None)) == ("f00d", "q", None)


def test_a_bad_redis_url_is_one_error_line(start_server: Start) -> None:
    with pytest.raises(AssertionError) as failed:
        start_server("--redis", "redis://127.0.0.1/zero")
    assert "server.py: error: --redis: the database in " in str(failed.value)
    assert "Traceback" not in str(failed.value)


# -- fixtures ----------------------------------------------------------------------------------

def subscribers(redis: RedisServer, channel: str) -> int:
    with redis.client() as client:
        reply = client.call("PUBSUB", "NUMSUB", channel)
    assert isinstance(reply, list)
    count = reply[1]
    assert isinstance(count, int)
    return count


def wait_subscribed(redis: RedisServer, room: str, servers: int) -> None:
    """Until `servers` processes subscribe to the room's channel (SUBSCRIBE is asynchronous)."""
    assert wait_until(lambda: subscribers(redis, "chat:" + room) == servers), \
        f"{subscribers(redis, 'chat:' + room)} subscriber(s) of {room}, not {servers}"


def linked(start_server: Start, redis: RedisServer, n: int, *args: str) -> list[ServerProcess]:
    servers = [start_server("--redis", redis.url, *args) for _ in range(n)]
    for server in servers:
        server.wait_for_log(r"Redis connected")
    return servers


def chat_round(senders: list[Client], everyone: list[Client], count: int) -> None:
    """Each sender sends `count` messages; every user gets every one exactly once, each
    sender's in order, and nothing more."""
    tag = os.urandom(3).hex()
    for i in range(count):
        for s, sender in enumerate(senders):
            sender.send_text(f"{tag} {s} {i}")
    for user in everyone:
        got = [user.recv_message() for _ in range(count * len(senders))]
        for s in range(len(senders)):
            mine = [m for m in got if isinstance(m, str) and m.startswith(f"{tag} {s} ")]
            assert mine == [f"{tag} {s} {i}" for i in range(count)]
    for user in everyone:
        assert nothing_arrives(user, 0.2)


# -- chatting across servers -------------------------------------------------------------------

def test_two_servers_chat_as_one(start_server: Start,
                                 start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    a, b = linked(start_server, redis, 2)
    users = [Client(server.port).handshake("/") for server in (a, b, a, b)]
    wait_subscribed(redis, "/", 2)
    chat_round(users, users, 100)
    binary = os.urandom(300)
    users[1].send_binary(binary)
    for user in users:
        assert user.recv_message() == binary


def test_three_servers_rooms_apart_exactly_once_in_order(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    servers = linked(start_server, redis, 3)
    python = [Client(server.port).handshake("/python") for server in servers * 2]
    rust = [Client(servers[i].port).handshake("/rust") for i in (0, 2)]
    lobby = Client(servers[1].port).handshake("/")
    wait_subscribed(redis, "/python", 3)
    wait_subscribed(redis, "/rust", 2)
    chat_round(python, python, 50)
    for user in rust + [lobby]:
        assert nothing_arrives(user)
    chat_round(rust, rust, 20)
    for user in python + [lobby]:
        assert nothing_arrives(user)
    # A room whose last local user leaves is unsubscribed on that server.
    rust[1].close_handshake()
    wait_subscribed(redis, "/rust", 1)


def test_down_at_start_then_up(start_server: Start,
                               start_redis: Callable[..., RedisServer]) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    a = start_server("--redis", url)
    b = start_server("--redis", url)
    for server in (a, b):
        server.wait_for_log(r"Redis at 127\.0\.0\.1:\d+ is unreachable \(Connection refused\); "
                            r"chatting locally")
    with Client(a.port).handshake() as a1, Client(a.port).handshake() as a2, \
            Client(b.port).handshake() as b1:
        chat_round([a1], [a1, a2], 5)  # local chat works
        assert nothing_arrives(b1)
        redis = start_redis(port=port)
        for server in (a, b):
            server.wait_for_log(r"Redis connected", timeout=15)
        wait_subscribed(redis, "/", 2)
        chat_round([a1, b1], [a1, a2, b1], 20)
    for server in (a, b):
        assert server.log.count("is unreachable") == 1  # said once, not per retry


def test_redis_killed_and_restarted(start_server: Start,
                                    start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    a, b = linked(start_server, redis, 2)
    with Client(a.port).handshake() as a1, Client(a.port).handshake() as a2, \
            Client(b.port).handshake() as b1:
        wait_subscribed(redis, "/", 2)
        chat_round([a1, b1], [a1, a2, b1], 10)
        redis.kill()
        for server in (a, b):
            server.wait_for_log(r"Redis link lost \(.*\); chatting locally")
        chat_round([a1, a2], [a1, a2], 10)  # local chat never stops
        chat_round([b1], [b1], 5)
        assert nothing_arrives(a1)
        time.sleep(1.0)  # a few reconnect attempts, logged not at all
        redis.start()  # the same port
        for server in (a, b):
            found = server.wait_for_log(
                r"Redis link restored .*interrupted for (\d+\.\d) s; (\d+) message\(s\) were "
                r"not published", timeout=15)
            assert float(found.group(1)) >= 1.0
        assert int(re.findall(r"(\d+) message\(s\) were not published", a.log)[0]) == 20
        wait_subscribed(redis, "/", 2)
        chat_round([a1, b1], [a1, a2, b1], 10)  # cross-server chat resumed by itself
    for server in (a, b):
        assert server.log.count("Redis link lost") == 1


def test_redis_killed_for_good(start_server: Start,
                               start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    (a,) = linked(start_server, redis, 1)
    with Client(a.port).handshake() as a1, Client(a.port).handshake() as a2:
        redis.kill()
        a.wait_for_log(r"Redis link lost")
        deadline = time.monotonic() + 6.0  # past the longest backoff: several retries
        while time.monotonic() < deadline:
            chat_round([a1, a2], [a1, a2], 5)
            time.sleep(0.3)
    assert a.log.count("Redis link lost") == 1
    assert "Traceback" not in a.log
    assert a.stop() == 0


def test_slow_redis_drops_the_oldest_publishes_and_counts(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    a, b = linked(start_server, redis, 2, "--max-buffer", "256K")
    with Client(a.port).handshake() as a1, Client(a.port).handshake() as a2, \
            Client(b.port).handshake() as b1:
        wait_subscribed(redis, "/", 2)
        chat_round([a1], [a1, a2, b1], 5)
        redis.pause()  # SIGSTOP: connections open, nothing answered, nothing read
        try:
            text = "x" * 16000
            started = time.monotonic()
            for i in range(800):  # 12.8 MB: past the kernel's buffers and the backlog
                a1.send_text(f"{i} {text}")
                for user in (a1, a2):  # local chat goes on at full speed
                    assert user.recv_message() == f"{i} {text}"
            local = time.monotonic() - started
            a.wait_for_log(r"Redis is slow: more than 262144 bytes of publishes wait; "
                           r"dropping the oldest")
        finally:
            redis.resume()
        found = a.wait_for_log(r"Redis caught up: (\d+) publish\(es\) dropped", timeout=15)
        dropped = int(found.group(1))
        print(f"local delivery while Redis was paused: 800 x 16 kB in {local:.2f} s; "
              f"{dropped} publishes dropped")
        assert dropped > 0
        # What b got is what was published: a prefix of the ones sent before the pause
        # filled the buffers, then the newest, in order, none twice.
        got: list[int] = []
        while not nothing_arrives(b1, 1.0):
            message = b1.recv_message()
            assert isinstance(message, str)
            got.append(int(message.split(" ", 1)[0]))
        assert got == sorted(set(got)) and len(got) == 800 - dropped
        assert got[-1] == 799
        chat_round([a1, b1], [a1, a2, b1], 5)  # and then as before


def test_wrong_password_missing_password_not_redis(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis(password="s3cret")
    wrong = start_server("--redis", f"redis://:nope@127.0.0.1:{redis.port}")
    missing = start_server("--redis", f"redis://127.0.0.1:{redis.port}")
    right = start_server("--redis", redis.url)
    wrong.wait_for_log(r"ERROR   Redis refused the password \(WRONGPASS")
    missing.wait_for_log(r"ERROR   Redis requires a password: give it in the URL")
    right.wait_for_log(r"Redis connected")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def greet() -> None:  # an SSH server speaks first
            for _ in range(2):
                peer, _ = listener.accept()
                with peer:
                    peer.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
                    peer.settimeout(5)
                    try:
                        peer.recv(100)
                    except OSError:
                        pass

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        ssh = start_server("--redis", f"redis://127.0.0.1:{listener.getsockname()[1]}")
        ssh.wait_for_log(r"ERROR   127\.0\.0\.1:\d+ does not speak Redis \(RESP2\): type "
                         r"byte b'S'")
        with Client(ssh.port).handshake() as s1, Client(ssh.port).handshake() as s2:
            chat_round([s1], [s1, s2], 3)  # the chat itself is fine
    for server in (wrong, missing, ssh):
        assert "Traceback" not in server.log
