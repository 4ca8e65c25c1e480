"""What comes from Redis, the attacker's way (issue 18, items 9 and 10, and the log line of a
subscriber Redis cuts off).

- Item 9, with a real redis-server: anyone who can reach Redis publishes entries over
  --max-message-size (just over, and 24 MiB), junk, text that is not UTF-8, presence with
  too many or too long names, pipelined as fast as possible, and pushes such entries into
  a room's history list: none reaches a user, each kind is logged once and then counted
  (one line per kind per 10 s), the link stays up, memory stays flat.
- Item 10, with a fake Redis (a raw socket server here, answering what the link asks and
  sending what it is told, as fast as it can, never reading more than it must): replies
  of a million elements, deep nesting, a declared 512 MB bulk string, an LRANGE answer of
  a million entries or of entries of 20 MiB. Each refused reply drops and reconnects the
  link with one line; the server's RSS growth is bounded and printed; a real redis-server
  started on the fake's port afterwards is linked again.
- Redis cutting off a slow subscriber (client-output-buffer-limit pubsub) is logged as
  "connection closed by Redis".

A healthy user chats every 100 ms throughout (`Healthy`, tests/attack.py): its worst round
trip stays under 1 s and at least 90 % of its answers come within 100 ms.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from attack import Healthy, Reader, RssPeak
from conftest import ServerProcess
from redis_server import RedisServer, RespClient
from test_redis_link import wait_subscribed
from wsclient import Client, wait_until

from websocket.protocol.resp import NEED_MORE, encode_command
from websocket.protocol.resp import Reader as RespReader

Start = Callable[..., ServerProcess]
MiB = 1 << 20
LIMIT = MiB  # the server's default --max-message-size


# -- tools -------------------------------------------------------------------------------------

def count_lines(server: ServerProcess, pattern: str) -> int:
    return len(re.findall(pattern, server.log, re.MULTILINE))


def wait_lines(server: ServerProcess, pattern: str, count: int, timeout: float = 15.0) -> None:
    assert wait_until(lambda: count_lines(server, pattern) >= count, timeout=timeout), \
        f"fewer than {count} log lines matching {pattern!r}; log:\n{server.log}"


class FakeRedis:
    """A Redis enough for the chat's link, on a loopback port: it answers PING, AUTH,
    SELECT, (UN)SUBSCRIBE, PUBLISH, RPUSH, LTRIM, EXPIRE and LRANGE (`lrange`: the bytes of
    the answer), and `attack(role, data)` sends anything on the subscriber's or the
    publisher's connection, as fast as the socket takes it. Every thread ends by itself
    (timeouts) or when `close()` is called."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.lrange = b"*0\r\n"
        self.conns: dict[str, socket.socket] = {}  # "subscribe" / "publish": the latest
        self.locks: dict[socket.socket, threading.Lock] = {}
        self.closing = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            self.locks[conn] = threading.Lock()
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _send(self, conn: socket.socket, data: bytes) -> None:
        with self.locks[conn]:
            conn.settimeout(10)
            try:
                conn.sendall(data)
            finally:
                conn.settimeout(0.2)

    def _serve(self, conn: socket.socket) -> None:
        reader = RespReader()
        try:
            while not self.closing:
                try:
                    data = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    return
                reader.feed(data)
                while (command := reader.gets()) is not NEED_MORE:
                    assert isinstance(command, list)
                    self._answer(conn, [arg for arg in command if isinstance(arg, bytes)])
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, command: list[bytes]) -> None:
        name = command[0].upper()
        if name == b"PING":
            self.conns["publish"] = conn
            self._send(conn, b"+PONG\r\n")
        elif name in (b"SUBSCRIBE", b"UNSUBSCRIBE"):
            self.conns["subscribe"] = conn
            kind = name.lower()  # RESP §Pub/Sub: ["subscribe", channel, count], one a channel
            self._send(conn, b"".join(
                b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:1\r\n" % (len(kind), kind, len(channel), channel)
                for channel in command[1:]))
        elif name in (b"PUBLISH", b"RPUSH", b"EXPIRE"):
            self._send(conn, b":1\r\n")
        elif name == b"LRANGE":
            self._send(conn, self.lrange)
        else:  # AUTH, SELECT, LTRIM
            self._send(conn, b"+OK\r\n")

    def attack(self, role: str, data: bytes, then_close: bool = False) -> threading.Thread:
        """Send `data` on `role`'s connection from a thread (until sent or refused)."""
        conn = self.conns[role]

        def send() -> None:
            try:
                self._send(conn, data)
                if then_close:
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the link dropped the connection first: refused, as it should be

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop answering and close every connection (again: nothing more)."""
        self.closing = True
        self.listener.close()
        for conn in list(self.locks):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def fake_redis() -> Iterator[FakeRedis]:
    fake = FakeRedis()
    yield fake
    fake.close()


def message(channel: bytes, payload_header: bytes) -> bytes:
    """The start of a pub/sub message as Redis sends it, its payload's header last."""
    return (b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n" % (len(channel), channel)) + payload_header


# -- item 10: a fake or broken Redis -----------------------------------------------------------

EMPTY_ARRAYS = (b"*1000000\r\n" + b"*0\r\n" * 1_000_000) * 4  # 16 MiB: +295 MiB before
DECLARED_512MB = message(b"chat:/", b"$536870912\r\n") + b"x" * (96 * MiB)  # +110 MiB before

ATTACKS = {
    "4 arrays of a million empty arrays": (
        "subscribe", EMPTY_ARRAYS, False,
        r"sent more than the subscribe connection asks for: array of 1000000 elements, over "
        r"the limit of 4"),
    "a pub/sub message carrying a million empty arrays": (
        "subscribe", message(b"chat:/", b"*1000000\r\n") + b"*0\r\n" * 1_000_000, False,
        r"sent more than the subscribe connection asks for: array of 1000000 elements"),
    "arrays nested 100,000 deep": (
        "subscribe", b"*1\r\n" * 100_000, False, r"arrays nested deeper than 1"),
    "a declared 512 MB bulk string, 96 MiB of it, then the end": (
        "subscribe", DECLARED_512MB, True, r"Redis link lost \(.*: connection closed by Redis\)"),
    "a million elements to the publisher": (
        "publish", EMPTY_ARRAYS, False,
        r"sent more than the publish connection asks for: array of 1000000 elements, over "
        r"the limit of 0"),
    "a million small integers to the publisher, one reply each, pipelined": (
        "publish", b":1\r\n" * 1_000_000, False,
        r"Redis sent a reply the publish connection did not ask for"),
    "a pub/sub message without its payload": (
        "subscribe", b"*2\r\n$7\r\nmessage\r\n$6\r\nchat:/\r\n", False,
        r"Redis sent a pub/sub message that is not \[message, channel, payload\]"),
    "a million pub/sub confirmations to the subscriber": (
        "subscribe", b"*3\r\n$9\r\nsubscribe\r\n$6\r\nchat:/\r\n:1\r\n" * 1_000_000, False,
        r"Redis sent a confirmation the subscribe connection did not ask for"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_fake_redis_cannot_grow_the_server(name: str, start_server: Start,
                                             fake_redis: FakeRedis) -> None:
    """Each attack as fast as the socket takes it: refused at the header that passes what
    the link asks for (or dropped unread as it comes), one line, the link reconnected to
    the same (now well-behaved) fake, the local chat untouched, RSS growth bounded."""
    role, data, then_close, expected = ATTACKS[name]
    server = start_server("--redis", fake_redis.url)
    server.wait_for_log(r"Redis connected")
    assert wait_until(lambda: role in fake_redis.conns)
    healthy = Healthy(server.port, interval=0.1)
    sampler = RssPeak(server.proc.pid)
    time.sleep(0.5)
    started = time.monotonic()
    sender = fake_redis.attack(role, data, then_close)
    refused = wait_until(lambda: re.search(expected, server.log) is not None, timeout=20)
    lost = time.monotonic() - started
    restored = wait_until(lambda: "Redis link restored" in server.log, timeout=15)
    sender.join(30)
    time.sleep(0.5)
    growth = sampler.growth()
    print(f"{name}: {len(data) / MiB:.1f} MiB sent; "
          + (f"link dropped after {lost:.2f} s" if refused else "never refused")
          + f"; server RSS +{growth / MiB:.1f} MiB at most")
    healthy.check(name, min_on_time=0.9)
    assert refused and restored, server.log
    assert growth < 16 * MiB
    assert count_lines(server, r"Redis link lost") == 1
    assert "Traceback" not in server.log


def test_a_fake_redis_answering_lrange_with_too_much(start_server: Start,
                                                     fake_redis: FakeRedis) -> None:
    """With --history 5: a history list of five 20 MiB entries is read without holding
    one (each dropped unread as it comes, counted, one line), and a list of a million
    entries is refused at its header (the link reconnects); newcomers get an empty history
    and chat on."""
    server = start_server("--redis", fake_redis.url, "--history", "5")
    server.wait_for_log(r"Redis connected")
    healthy = Healthy(server.port, interval=0.1)
    sampler = RssPeak(server.proc.pid)
    started = time.monotonic()
    time.sleep(0.3)
    big = b"x" * (20 * MiB)
    fake_redis.lrange = b"*5\r\n" + (b"$%d\r\nevil 1 t %s\r\n" % (len(big) + 9, big)) * 5
    with Client(server.port).handshake("/big") as newcomer:
        newcomer.sock.settimeout(30)
        newcomer.send_text("after the history")
        history = []
        while (got := newcomer.recv_message()) != "after the history":
            history.append(got)
        print(f"LRANGE of 5 x 20 MiB: the newcomer got {len(history)} of them; server RSS "
              f"+{sampler.growth(stop=False) / MiB:.1f} MiB at most")
        assert history == []
        wait_lines(server, r"dropped a message from Redis on /big \(history\) \(20971529 "
                           r"bytes\): over --max-message-size", 1, timeout=5)
    fake_redis.lrange = b"*1000000\r\n" + b"$11\r\nevil 1 t hi\r\n" * 1_000_000
    with Client(server.port).handshake("/many") as newcomer:
        server.wait_for_log(r"sent more than the publish connection asks for: array of "
                            r"1000000 elements, over the limit of 5")
        newcomer.send_text("still here")
        assert newcomer.recv_message() == "still here"
    server.wait_for_log(r"Redis link restored", timeout=15)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))  # enough healthy round trips
    growth = sampler.growth()
    print(f"LRANGE of 5 x 20 MiB, then of a million entries: server RSS +{growth / MiB:.1f} "
          f"MiB at most")
    healthy.check("LRANGE attacks", min_on_time=0.9)
    assert growth < 16 * MiB
    assert count_lines(server, r"\(history\)") == 1  # the other four: counted, not logged
    assert "Traceback" not in server.log


def test_the_link_recovers_when_a_real_redis_is_back(
        start_server: Start, start_redis: Callable[..., RedisServer],
        fake_redis: FakeRedis) -> None:
    """After an attack, the fake goes away and a real redis-server takes its port: the
    link is restored on its own, and a second server on the same Redis chats with it."""
    server = start_server("--redis", fake_redis.url)
    server.wait_for_log(r"Redis connected")
    assert wait_until(lambda: "subscribe" in fake_redis.conns)
    fake_redis.attack("subscribe", EMPTY_ARRAYS)
    server.wait_for_log(r"array of 1000000 elements", timeout=30)
    port = fake_redis.port
    fake_redis.close()
    redis = start_redis(port=port)
    server.wait_for_log(r"Redis link restored", timeout=20)
    other = start_server("--redis", redis.url)
    other.wait_for_log(r"Redis connected")
    with Client(server.port).handshake() as here, Client(other.port).handshake() as there:
        wait_subscribed(redis, "/", 2)
        here.send_text("across")
        assert here.recv_message() == "across"
        assert there.recv_message() == "across"
    assert "Traceback" not in server.log


# -- item 9: a real Redis, and anyone who can publish on it ---------------------------------------

def entry(origin: bytes, seq: int, payload: bytes, kind: bytes = b"t") -> bytes:
    return b"%s %d %s %s" % (origin, seq, kind, payload)


def test_entries_past_the_limits_from_redis_never_reach_a_user(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    """Published on chat:/ by anyone, pipelined as fast as Redis takes them: a 24 MiB
    entry, 20 just over --max-message-size (1 MiB + 1) and 20 of 2 MiB, 500 that are not
    entries, 200 texts that are not UTF-8, presence with 1,001 names, a 33-character name,
    and JSON nested 100,000 deep. None reaches the two local users; an entry of exactly
    1 MiB and a last small one do, in order. Each kind is logged once, then counted every
    10 s; the link stays up; the server's memory does not follow the bytes."""
    # No output limit for subscribers in Redis: our subscriber reading slower than Redis
    # takes the publishes must not get the link cut here (that case is the last test's).
    redis = start_redis("--client-output-buffer-limit", "pubsub 0 0 0")
    server = start_server("--redis", redis.url)
    server.wait_for_log(r"Redis connected")
    got: list[bytes] = []
    listener = Client(server.port).handshake()
    reader = Reader(listener, flood_prefix=b"healthy ",  # the healthy user's: not counted
                    on_text=got.append)
    reader.start()
    healthy = Healthy(server.port, interval=0.1)
    wait_subscribed(redis, "/", 1)
    sampler = RssPeak(server.proc.pid)
    time.sleep(0.3)
    too_big = [entry(b"evil", 1, b"x" * (24 * MiB))]
    too_big += [entry(b"evil", 2 + i, b"y" * (LIMIT + 1)) for i in range(20)]
    too_big += [entry(b"evil", 30 + i, b"z" * (2 * MiB), b"b") for i in range(20)]
    junk = [b"hello %d" % i for i in range(500)]
    not_utf8 = [entry(b"evil", 100 + i, b"caf\xe9 \xff\xfe") for i in range(200)]
    presence = [b"evil 0 p " + json.dumps([f"n{i}" for i in range(1001)]).encode(),
                b"evil 0 p " + json.dumps(["x" * 33]).encode(),
                b"evil 0 p " + b"[" * 100_000]
    exactly = entry(b"fine", 1, b"w" * LIMIT)
    last = entry(b"fine", 2, b"the end")
    with RespClient(redis.host, redis.port, timeout=30) as publisher:
        commands = [encode_command("PUBLISH", "chat:/", data)
                    for data in [*too_big, *junk, *not_utf8, *presence, exactly, last]]
        started = time.monotonic()
        publisher.send_raw(b"".join(commands))
        for _ in commands:
            assert publisher.read_reply() == 1  # one subscriber got each
        took = time.monotonic() - started
    wait_until(lambda: got[-1:] == [b"the end"], timeout=30)
    time.sleep(0.3)
    growth = sampler.growth()
    sent = sum(map(len, commands))
    print(f"{sent / MiB:.0f} MiB published in {took:.2f} s; the user got {len(got)} "
          f"message(s) of {sum(map(len, got)) / MiB:.1f} MiB; server RSS "
          f"+{growth / MiB:.1f} MiB at most")
    assert got == [b"w" * LIMIT, b"the end"]
    for kind, count in (("over --max-message-size", len(too_big)),
                        ("not an entry a chat server publishes", len(junk)),
                        ("text that is not UTF-8", len(not_utf8)),
                        ("presence that is not a list", len(presence))):
        first = rf"dropped a message from Redis on / \(\d+ bytes\): {kind}[^;\n]*; never delivered$"
        assert count_lines(server, first) == 1, kind
        more = (rf"dropped a message from Redis on / \(\d+ bytes\): {kind}[^;\n]*; never "
                rf"delivered \(and {count - 2:,} more like it in the last \d+ s\)")
        wait_lines(server, more, 1, timeout=15)
    healthy.check("entries past the limits", min_on_time=0.9)
    reader.stopping = True
    listener.close()
    assert "Redis link lost" not in server.log
    assert "Traceback" not in server.log
    assert growth < 16 * MiB  # before: a 24 MiB entry alone cost +113 MiB


def test_history_entries_past_the_limits_are_dropped(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    """Pushed straight into a room's list (no trim): 20 old entries, then the newest five
    of which two are fine and three are not (over --max-message-size, not an entry, not
    UTF-8). A newcomer gets the two fine ones of the newest five, nothing older."""
    redis = start_redis()
    server = start_server("--redis", redis.url, "--history", "5")
    server.wait_for_log(r"Redis connected")
    key = "chat:history:/room"
    newest = [entry(b"fine", 21, b"first"), entry(b"evil", 22, b"y" * (LIMIT + 1)),
              b"not an entry", entry(b"evil", 23, b"\xc3\x28"), entry(b"fine", 24, b"second")]
    with redis.client() as client:
        for i in range(20):
            assert client.call("RPUSH", key, entry(b"old", i + 1, b"old %d" % i)) == i + 1
        for data in newest:
            client.call("RPUSH", key, data)
    with Client(server.port).handshake("/room") as newcomer:
        assert newcomer.recv_message() == "first"
        assert newcomer.recv_message() == "second"
        newcomer.send_text("live")
        assert newcomer.recv_message() == "live"
    for kind in ("over --max-message-size", "not an entry a chat server publishes",
                 "text that is not UTF-8"):
        assert count_lines(server, rf"on /room \(history\) \(\d+ bytes\): {kind}") == 1
    assert "Traceback" not in server.log


# -- also seen: who closed the connection ------------------------------------------------------

def test_redis_cutting_off_a_subscriber_says_redis_closed_it(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    """Redis closes a subscriber whose output passes its client-output-buffer-limit
    (here 64 KiB, hard): the log says Redis closed it, not "the client"; the link is
    restored."""
    redis = start_redis("--client-output-buffer-limit", "pubsub 64kb 0 0")
    server = start_server("--redis", redis.url)
    server.wait_for_log(r"Redis connected")
    with Client(server.port).handshake():
        wait_subscribed(redis, "/", 1)
        with redis.client() as client:
            client.call("PUBLISH", "chat:/", entry(b"other", 1, b"v" * 200_000))
        server.wait_for_log(r"Redis link lost \(127\.0\.0\.1:\d+: connection closed by "
                            r"Redis\)")
        server.wait_for_log(r"Redis link restored", timeout=15)
    assert "closed by the client" not in server.log
    assert "client-output-buffer-limit" in redis.log or "scheduled to be closed" in redis.log
