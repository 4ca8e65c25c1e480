"""websocket/protocol/resp.py against a real redis-server (tests/redis_server.py), over sockets.

Besides checking the codec on Redis's own bytes, these tests pin down the Redis behaviour the
server's Redis link relies on: what a subscribed connection may send, that channels ignore
SELECT, that pub/sub keeps nothing for a subscriber that is away, that Redis drops a
subscriber that stops reading, what AUTH answers, and how a capped history list behaves.

Without redis-server these tests are skipped, except under CI=true, where they fail
(apt-get install redis-server). The non-Redis peer tests need no Redis and always run.
"""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis_server import RedisServer, RespClient, redis_server_path

from websocket.protocol.resp import RedisError, RespProtocolError, encode_command


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the Redis tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def redis_path() -> str:
    path = redis_server_path()
    if path is None:
        _unavailable("redis-server is not installed (apt-get install redis-server)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def redis(redis_path: str) -> Iterator[RedisServer]:
    """One server shared by the tests that leave it as they found it."""
    with RedisServer(executable=redis_path) as server:
        yield server


@pytest.fixture
def start_redis(redis_path: str) -> Iterator[Callable[..., RedisServer]]:
    """A server of the test's own (to kill, pause, or start with a password)."""
    started: list[RedisServer] = []

    def start(*args: str, password: str | None = None) -> RedisServer:
        server = RedisServer(password, *args, executable=redis_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def client(redis: RedisServer) -> Iterator[RespClient]:
    with redis.client() as connection:
        connection.call("FLUSHALL")
        yield connection


def test_ping(client: RespClient) -> None:
    reply = client.call("PING")
    assert reply == "PONG" and type(reply) is str


def test_started_without_persistence_on_loopback(redis: RedisServer, client: RespClient) -> None:
    assert client.call("CONFIG", "GET", "save") == [b"save", b""]
    assert client.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert client.call("CONFIG", "GET", "bind") == [b"bind", b"127.0.0.1"]
    assert client.call("CONFIG", "GET", "port") == [b"port", str(redis.port).encode()]


def test_set_get_and_reply_types(client: RespClient) -> None:
    assert client.call("SET", "k", "v") == "OK"
    assert client.call("GET", "k") == b"v"
    assert client.call("GET", "missing") is None
    tricky = b"\r\n$5\r\n*1\r\n\x00\xff" * 3
    assert client.call("SET", "bin", tricky) == "OK" and client.call("GET", "bin") == tricky
    assert client.call("INCR", "n") == 1 and client.call("INCRBY", "n", -5) == -4
    assert client.call("LRANGE", "nothing", 0, -1) == []
    big = os.urandom(4 * 1024 * 1024)  # many recv()s: the reply arrives in pieces
    assert client.call("SET", "big", big) == "OK" and client.call("GET", "big") == big


def test_error_replies_are_values_and_the_connection_lives_on(client: RespClient) -> None:
    reply = client.call("NOSUCHCOMMAND", "x")
    assert isinstance(reply, RedisError) and reply.prefix == "ERR"
    client.call("RPUSH", "list", "a")
    wrong = client.call("GET", "list")
    assert isinstance(wrong, RedisError) and wrong.prefix == "WRONGTYPE"
    assert client.call("PING") == "PONG"


def test_pipelined_replies_come_back_in_order(client: RespClient) -> None:
    client.send_raw(b"".join(encode_command("INCR", "seq") for _ in range(500)))
    assert [client.read_reply() for _ in range(500)] == list(range(1, 501))


def test_subscribe_on_one_connection_publish_on_another(redis: RedisServer) -> None:
    payload = "alice: héllo\r\n*1\r\n".encode()
    with redis.client() as sub, redis.client() as pub:
        assert sub.call("SUBSCRIBE", "chat:/", "chat:/python") == [b"subscribe", b"chat:/", 1]
        assert sub.read_reply() == [b"subscribe", b"chat:/python", 2]
        assert pub.call("PUBLISH", "chat:/", payload) == 1  # one subscriber received it
        assert sub.read_reply() == [b"message", b"chat:/", payload]
        assert pub.call("PUBLISH", "chat:/elsewhere", "x") == 0
        assert sub.call("PSUBSCRIBE", "chat:*") == [b"psubscribe", b"chat:*", 3]
        assert pub.call("PUBLISH", "chat:/python", "hi") == 2  # the channel and the pattern
        got = [sub.read_reply(), sub.read_reply()]
        assert [b"message", b"chat:/python", b"hi"] in got
        assert [b"pmessage", b"chat:*", b"chat:/python", b"hi"] in got


def test_a_subscribed_connection_takes_only_pubsub_commands(redis: RedisServer) -> None:
    with redis.client() as sub, redis.client() as pub:
        sub.call("SUBSCRIBE", "c")
        assert sub.call("PING") == [b"pong", b""]  # an array here, not +PONG
        for command in (("GET", "k"), ("SELECT", "1"), ("AUTH", "x")):
            reply = sub.call(*command)
            assert isinstance(reply, RedisError) and "only (P|S)SUBSCRIBE" in reply
        assert sub.call("RESET") == "RESET"  # back to normal mode, subscriptions gone
        assert sub.call("PING") == "PONG" and pub.call("PUBLISH", "c", "x") == 0


def test_channels_ignore_the_database_number(redis: RedisServer) -> None:
    """Pub/sub is global: a /DB in the --redis URL separates history keys, not channels."""
    with redis.client() as sub, redis.client() as pub:
        assert sub.call("SELECT", "3") == "OK"
        sub.call("SUBSCRIBE", "c")
        assert pub.call("SELECT", "5") == "OK"
        assert pub.call("PUBLISH", "c", "across databases") == 1
        assert sub.read_reply() == [b"message", b"c", b"across databases"]


def test_messages_published_while_away_are_lost(redis: RedisServer) -> None:
    with redis.client() as pub:
        with redis.client() as sub:
            sub.call("SUBSCRIBE", "c")
        deadline = time.monotonic() + 5  # until Redis has noticed the close
        while pub.call("PUBSUB", "NUMSUB", "c") != [b"c", 0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pub.call("PUBLISH", "c", "while away") == 0  # delivered to nobody, kept nowhere
        with redis.client() as sub:
            sub.call("SUBSCRIBE", "c")
            assert pub.call("PUBLISH", "c", "after") == 1
            assert sub.read_reply() == [b"message", b"c", b"after"]
            with pytest.raises(TimeoutError):
                sub.read_reply(timeout=0.2)


def test_a_subscriber_that_stops_reading_is_dropped(
        start_redis: Callable[..., RedisServer]) -> None:
    """Redis bounds each subscriber's output buffer (client-output-buffer-limit pubsub,
    default 32 MiB hard, or 8 MiB for 60 s) and closes the connection past it."""
    server = start_redis()
    with server.client() as admin, server.client(rcvbuf=4096) as sub:
        assert admin.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256kb 0 0") == "OK"
        sub.call("SUBSCRIBE", "c")
        chunk = b"x" * 16384
        for _ in range(1024):  # 16 MiB: more than the socket buffers hold
            admin.send("PUBLISH", "c", chunk)
        receivers = [admin.read_reply() for _ in range(1024)]
        assert receivers[0] == 1 and receivers[-1] == 0  # it was dropped on the way
        assert "overcoming of output buffer limits" in server.log
        with pytest.raises(ConnectionError):
            while True:
                sub.read_reply()


def test_capped_history_list(client: RespClient) -> None:
    """RPUSH + LTRIM in MULTI/EXEC keeps the last N messages of a room, oldest first."""
    for i in range(8):
        client.send_raw(encode_command("MULTI") + encode_command("RPUSH", "h", f"m{i}")
                        + encode_command("LTRIM", "h", -5, -1) + encode_command("EXEC"))
        replies = [client.read_reply() for _ in range(4)]
        assert replies == ["OK", "QUEUED", "QUEUED", [min(i + 1, 6), "OK"]]
    assert client.call("LRANGE", "h", 0, -1) == [b"m3", b"m4", b"m5", b"m6", b"m7"]
    assert client.call("LLEN", "h") == 5


# One round trip numbers a room's message, stores it in the capped history and publishes it,
# atomically: every subscriber and every LRANGE sees the same ids in the same order.
PUBLISH_SCRIPT = """
local id = redis.call('INCR', KEYS[1])
local entry = id .. ' ' .. ARGV[1]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PUBLISH', KEYS[3], entry)
return id
"""


def test_one_script_numbers_stores_and_publishes(redis: RedisServer, client: RespClient) -> None:
    with redis.client() as sub:
        sub.call("SUBSCRIBE", "chat:/")
        ids = [client.call("EVAL", PUBLISH_SCRIPT, 3, "chat:seq:/", "chat:history:/", "chat:/",
                           f"server-a:{n} alice: hi {n}", 3) for n in range(5)]
        assert ids == [1, 2, 3, 4, 5]
        got = [sub.read_reply() for _ in range(5)]
        assert got == [[b"message", b"chat:/", b"%d server-a:%d alice: hi %d" % (i, i - 1, i - 1)]
                       for i in range(1, 6)]
    assert client.call("LRANGE", "chat:history:/", 0, -1) == [
        b"3 server-a:2 alice: hi 2", b"4 server-a:3 alice: hi 3", b"5 server-a:4 alice: hi 4"]


def test_auth(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis(password="s3cret")
    with server.client(auth=False) as anonymous:
        for command in (("PING",), ("SUBSCRIBE", "c"), ("PUBLISH", "c", "x")):
            reply = anonymous.call(*command)
            assert isinstance(reply, RedisError) and reply.prefix == "NOAUTH", reply
        wrong = anonymous.call("AUTH", "guess")
        assert isinstance(wrong, RedisError) and wrong.prefix == "WRONGPASS", wrong
        assert anonymous.call("PING") == RedisError("NOAUTH Authentication required.")
        assert anonymous.call("AUTH", "s3cret") == "OK"  # the same connection, still open
        assert anonymous.call("PING") == "PONG"
    assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}"


def test_auth_without_a_password_configured(client: RespClient) -> None:
    reply = client.call("AUTH", "anything")
    assert isinstance(reply, RedisError) and reply.prefix == "ERR"
    assert "without any password configured" in reply


def test_before_auth_redis_refuses_big_arguments(start_redis: Callable[..., RedisServer]) -> None:
    """Unauthenticated, Redis 7 takes no argument over 16 KiB and no command of more than
    10 arguments, and closes the connection; AUTH pipelined in front is enough."""
    server = start_redis(password="s3cret")
    big = b"x" * 20000
    with server.client(auth=False) as anonymous:
        reply = anonymous.call("PUBLISH", "c", big)
        assert reply == RedisError("ERR Protocol error: unauthenticated bulk length")
        with pytest.raises(OSError):  # ConnectionError: reset or closed
            anonymous.call("PING")
    with server.client(auth=False) as client:
        client.send_raw(encode_command("AUTH", "s3cret") + encode_command("PUBLISH", "c", big))
        assert [client.read_reply(), client.read_reply()] == ["OK", 0]


def test_kill_and_restart_on_the_same_port(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    port, pid = server.port, server.pid
    connection = server.client()
    assert connection.call("SET", "k", "v") == "OK"
    server.kill()
    with pytest.raises(OSError):  # reset, or EOF (ConnectionError)
        connection.call("PING")
    connection.close()
    with pytest.raises(ConnectionRefusedError):
        RespClient(server.host, port)
    server.restart()
    assert server.port == port and server.pid != pid
    with server.client() as fresh:
        assert fresh.call("PING") == "PONG"
        assert fresh.call("GET", "k") is None  # nothing was persisted


def test_pause_and_resume(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    with server.client() as connection:
        server.pause()
        connection.send("PING")
        with pytest.raises(TimeoutError):
            connection.read_reply(timeout=0.3)
        with RespClient(server.host, server.port) as late:  # the kernel still accepts
            late.send("PING")
            with pytest.raises(TimeoutError):
                late.read_reply(timeout=0.1)
            server.resume()
            assert connection.read_reply() == "PONG" and late.read_reply() == "PONG"


def test_debug_sleep_stalls_everyone(redis: RedisServer, client: RespClient) -> None:
    sleeper = redis.debug_sleep(0.5)
    try:
        time.sleep(0.05)  # let Redis read the command before ours
        started = time.monotonic()
        assert client.call("PING") == "PONG"
        assert time.monotonic() - started >= 0.3
        assert sleeper.read_reply() == "OK"
    finally:
        sleeper.close()


def test_stop_by_pid(start_redis: Callable[..., RedisServer]) -> None:
    server = start_redis()
    server.stop()
    assert server.proc is not None and server.proc.returncode == 0  # SIGTERM: a clean exit
    with pytest.raises(ConnectionRefusedError):
        RespClient(server.host, server.port)


# -- peers that are not Redis -----------------------------------------------------------------
class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_http_server_is_a_protocol_error() -> None:
    """Our PING is a bad request to it. (Python's http.server takes the request line "*1" for
    HTTP/0.9 and answers with the bare HTML error page: "<!DOCTYPE HTML>...".)"""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with RespClient("127.0.0.1", httpd.server_address[1], timeout=5) as client:
            with pytest.raises(RespProtocolError) as caught:
                client.call("PING")
        assert caught.value.position == 0 and "not a RESP2 type" in str(caught.value)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_a_server_speaking_first_is_a_protocol_error() -> None:
    """An SSH or SMTP port greets before we send anything."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def greet() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
                peer.recv(1)  # until the client goes

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        with RespClient("127.0.0.1", listener.getsockname()[1], timeout=5) as client:
            with pytest.raises(RespProtocolError, match="type byte b'S'"):
                client.read_reply()
        thread.join(5)
