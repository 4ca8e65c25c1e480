"""Presence under attack (issue 18, point 1): a page reload in a busy room must not cost the
room more than one small message.

2,000 chat-page users (subprotocol chat.history.v1, a 32-character `?handle=`, offering
permessage-deflate with `client_max_window_bits` as Chromium does) sit in one room, reading;
one client joins and leaves as fast as it can for ~15 s; a healthy user chats in the same
room throughout. Each join or leave is one change of the room's presence: it must go out as
one delta, encoded once and compressed once for the room (rooms.py, presence.py), not as the
whole list to every user. The printout says the join/leave cycles achieved, the server's CPU
seconds (/proc/PID/stat) and the bytes the room's users received per change.

Raw sockets for the 2,000 (tests/wsclient.py): one thread reads them all with epoll and
discards what comes, counting bytes, so the server rightly keeps them.
"""
from __future__ import annotations

import resource
import selectors
import threading
import time
from collections.abc import Callable

import pytest
from attack import Healthy, Start, cpu_seconds, rss
from redis_server import RedisServer
from wsclient import Client

CROWD = 2_000
HANDLE_LENGTH = 32  # the page's longest handle
CHURN_SECONDS = 15.0
QUIET_CYCLES = 20  # join/leave cycles with nobody else talking: the bytes of a change
TAGGED_DEFLATE = ("Sec-WebSocket-Protocol: chat.history.v1\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")


def raise_open_file_limit(wanted: int) -> None:
    """Up to the hard limit, if the soft one is below `wanted` (2,000 sockets and more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted, \
        "the open-file limit is too low for this test"



def handle(n: int) -> str:
    return f"page-user-{n:05d}".ljust(HANDLE_LENGTH, "x")


def page_user(port: int, n: int) -> Client:
    """A chat page's upgrade, sent (the answer is read by `answered`)."""
    client = Client(port, timeout=30)
    client.send(client.upgrade_request(f"/?handle={handle(n)}", extra=TAGGED_DEFLATE)[0])
    return client


def answered(client: Client) -> None:
    status, headers, _ = client.http_response()
    assert status == 101, status
    assert headers.get("sec-websocket-protocol") == "chat.history.v1"
    assert headers.get("sec-websocket-extensions", "").startswith("permessage-deflate")


def reload_page(port: int, n: int) -> None:
    """One join and leave: a page reload (the socket goes once the 101 is in, no close
    frame, as a browser's tab does)."""
    client = page_user(port, n)
    answered(client)
    client.close()


class Crowd(threading.Thread):
    """Reads every socket it is given (epoll) and discards the bytes, counting them; a
    socket the server closes is counted too. It reads every 200 ms at most, so each recv
    takes what a few changes left in the kernel's buffer, not one frame at a time, and the
    thread leaves the healthy user's threads their share of the interpreter."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.new: list[Client] = []
        self.clients: list[Client] = []
        self.received = 0
        self.closed = 0
        self.stopping = False

    def add(self, client: Client) -> None:
        client.sock.setblocking(False)
        with self.lock:
            self.new.append(client)

    def run(self) -> None:
        while not self.stopping:
            with self.lock:
                new, self.new = self.new, []
            for client in new:
                self.clients.append(client)
                self.selector.register(client.sock, selectors.EVENT_READ, client)
            for key, _ in self.selector.select(0.2):
                try:
                    data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.received += len(data)
                else:
                    self.closed += 1
                    self.selector.unregister(key.fileobj)
            time.sleep(0.2)

    def close(self) -> None:
        self.stopping = True
        self.join(5)
        for client in self.clients:
            client.close()
        self.selector.close()


@pytest.mark.parametrize("linked", [False, True], ids=["alone", "redis"])
def test_a_page_reload_in_a_room_of_2000_costs_one_delta(
        start_server: Start, start_redis: Callable[..., RedisServer], linked: bool) -> None:
    """With `redis`, a second process linked through Redis has a page user in the room:
    the first publishes its list (the first MAX_PER_ORIGIN of its users) once per pass
    with a change, and the second diffs it; both processes' CPU is stated."""
    raise_open_file_limit(CROWD + 200)
    redis = start_redis() if linked else None
    options = ("--redis", redis.url) if redis is not None else ()
    server = start_server(*options)
    pid = server.proc.pid
    other = start_server(*options) if linked else None
    crowd = Crowd()
    crowd.start()
    started = time.monotonic()
    try:
        if other is not None:
            for process in (server, other):
                process.wait_for_log(r"Redis connected")
            far = page_user(other.port, 0)  # one page user over there
            answered(far)
            crowd.add(far)
        for first in range(0, CROWD, 100):  # pipelined a hundred at a time
            batch = [page_user(server.port, n) for n in range(first, first + 100)]
            for client in batch:
                answered(client)
                crowd.add(client)
        setup = time.monotonic() - started
        base_rss = rss(pid)
        time.sleep(1.0)  # the crowd's last full lists and deltas drain
        # Bytes per change, measured alone first (the healthy user's chat would count too).
        received_before = crowd.received
        for n in range(QUIET_CYCLES):
            reload_page(server.port, CROWD + n)
        time.sleep(1.0)
        per_change = (crowd.received - received_before) / (2 * QUIET_CYCLES)
        healthy = Healthy(server.port, interval=0.1)
        cpu_before = cpu_seconds(pid)
        other_before = cpu_seconds(other.proc.pid) if other is not None else 0.0
        cycles = 0
        churn_started = time.monotonic()
        while time.monotonic() - churn_started < CHURN_SECONDS:
            reload_page(server.port, CROWD + QUIET_CYCLES + cycles)
            cycles += 1
        churn = time.monotonic() - churn_started
        cpu = cpu_seconds(pid) - cpu_before
        linked_cpu = ("" if other is None else
                      f", the linked process {cpu_seconds(other.proc.pid) - other_before:.1f} s")
        print(f"\npresence attack ({'redis' if linked else 'alone'}): {CROWD} page users "
              f"joined in {setup:.1f} s, RSS {base_rss >> 20} MiB; {per_change:,.0f} bytes to "
              f"the crowd per change ({per_change / CROWD:.1f} per user); {cycles} join/leave "
              f"cycles in {churn:.1f} s, server CPU {cpu:.1f} s{linked_cpu}; RSS after "
              f"{rss(pid) >> 20} MiB")
        healthy.check("presence attack", min_on_time=0.9)
        assert crowd.closed == 0, f"{crowd.closed} of the crowd were dropped"
        # Every change reached every user of the crowd (a delta of at least a few bytes),
        # and cost about one small message each, not the list.
        assert CROWD * 8 <= per_change <= CROWD * 200, per_change
        assert cycles >= 50, f"only {cycles} join/leave cycles in {churn:.1f} s"
        for process in (server, other):
            assert process is None or "Traceback" not in process.log
    finally:
        crowd.close()
