"""The reactor and the connection layer on their own: timers, handlers, partial writes,
holds and lingering, driven over socket.socketpair() (no WebSocket involved)."""
from __future__ import annotations

import gc
import socket
import time
import weakref
from typing import Any

import pytest

from websocket.net.connection import FRAME_COST, Connection
from websocket.net.loop import COMPACT_MIN, READ, Loop


def run_for(loop: Loop, seconds: float) -> None:
    end = time.monotonic() + seconds
    loop.call_at(end, lambda: None)  # a wake-up at the end
    loop.run(until=lambda: time.monotonic() >= end)


def test_timers_run_in_order_and_cancelled_ones_never() -> None:
    loop = Loop()
    ran: list[str] = []
    loop.call_later(0.06, ran.append, "c")
    loop.call_later(0.02, ran.append, "a")
    loop.call_later(0.04, ran.append, "b")
    loop.call_later(0.03, ran.append, "cancelled").cancel()
    run_for(loop, 0.15)
    assert ran == ["a", "b", "c"]


def test_call_every_keeps_its_schedule_when_the_callback_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = Loop()
    calls: list[float] = []

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("boom")

    handle = loop.call_every(0.05, tick)
    run_for(loop, 0.28)
    handle.cancel()
    count = len(calls)
    run_for(loop, 0.12)
    assert 4 <= count <= 6 and len(calls) == count  # cancelled: no more calls
    assert "boom" in caplog.text and "raised; the server carries on" in caplog.text


def test_call_soon_runs_in_the_next_pass_and_pending_objects_are_flushed() -> None:
    loop = Loop()
    order: list[str] = []

    class Pending:
        def flush(self) -> None:
            order.append("flush")

    loop.call_soon(order.append, "soon")
    loop.pending[Pending()] = None
    loop.before_sleep(lambda: order.append("before sleep"))
    loop.run_once()
    assert order == ["soon", "flush", "before sleep"]


class Owner:
    """A connection owner that records what it is told."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: list[str] = []
        self.errors: list[Exception] = []
        self.flushes = 0
        self.fail_on: bytes | None = None

    def data_received(self, conn: Connection) -> None:
        if self.fail_on is not None and self.fail_on in conn.inbuf:
            raise RuntimeError("planted")
        self.data.append(bytes(conn.inbuf))
        conn.inbuf.clear()

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        self.data.append(bytes(data[:size]))

    def flushed(self, conn: Connection) -> None:
        self.flushes += 1

    def connection_lost(self, conn: Connection, why: str) -> None:
        self.lost.append(why)

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        self.errors.append(exc)
        conn.close("internal error")


def pair(loop: Loop) -> tuple[Connection, socket.socket, Owner]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    owner = Owner()
    return Connection(loop, ours, owner), theirs, owner


def test_reading_holding_and_releasing_input() -> None:
    loop = Loop()
    conn, peer, owner = pair(loop)
    peer.sendall(b"hello")
    run_for(loop, 0.05)
    assert owner.data == [b"hello"]
    conn.hold_input(1)
    assert conn.events == 0  # nothing watched: neither reading nor output left over
    peer.sendall(b"later")
    run_for(loop, 0.05)
    assert owner.data == [b"hello"]  # held: not even read
    conn.release_input(1)
    run_for(loop, 0.05)
    assert owner.data == [b"hello", b"later"]
    peer.close()
    run_for(loop, 0.05)
    assert owner.lost == ["connection closed by the client"]


def test_leftover_input_is_handed_over_again_in_the_next_pass() -> None:
    loop = Loop()
    conn, peer, owner = pair(loop)
    conn.inbuf += b"left over"
    conn.defer()
    assert conn.events == 0
    loop.run_once()
    assert owner.data == [b"left over"] and conn.events == READ
    peer.close()


def test_partial_writes_wait_for_the_kernel_and_keep_the_order() -> None:
    loop = Loop()
    conn, peer, owner = pair(loop)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frames = [bytes([i % 251]) * 1000 for i in range(3000)]  # 3 MB: more than the kernel takes
    for frame in frames:
        conn.queue(frame)
    assert conn.out_cost == 3000 * (1000 + FRAME_COST)
    loop.run_once()  # one flush: the kernel refuses the rest
    assert conn.writing and conn.outbuf and conn.out_cost < 3000 * (1000 + FRAME_COST)
    received = bytearray()
    peer.settimeout(0.01)
    deadline = time.monotonic() + 10
    while len(received) < 3_000_000 and time.monotonic() < deadline:
        try:
            received += peer.recv(1 << 20)
        except TimeoutError:
            pass
        loop.call_later(0.01, lambda: None)  # one pass, never a wait for ever
        loop.run_once()
    assert bytes(received) == b"".join(frames)
    assert not conn.writing and conn.out_cost == 0
    peer.close()


def test_close_after_flush_half_closes_and_lingers_until_the_eof() -> None:
    loop = Loop()
    conn, peer, owner = pair(loop)
    conn.queue(b"last words")
    conn.close_after_flush(5.0)
    loop.run_once()
    assert peer.recv(100) == b"last words"
    assert peer.recv(100) == b""  # our half-close
    assert not conn.closed  # waiting for the peer's EOF
    peer.sendall(b"ignored")
    run_for(loop, 0.05)
    assert owner.data == [] and not conn.closed  # read and discarded
    peer.close()
    run_for(loop, 0.05)
    assert conn.closed and owner.lost == [""]


def test_a_bug_in_the_owner_costs_that_connection_only() -> None:
    loop = Loop()
    conn, peer, owner = pair(loop)
    other, other_peer, other_owner = pair(loop)
    owner.fail_on = b"boom"
    peer.sendall(b"boom")
    other_peer.sendall(b"fine")
    run_for(loop, 0.05)
    assert [type(e) for e in owner.errors] == [RuntimeError] and conn.closed
    assert other_owner.data == [b"fine"] and not other.closed
    for sock in (peer, other_peer):
        sock.close()


def test_signals_are_delivered_in_the_loop() -> None:
    import os
    import signal
    loop = Loop()
    seen: list[Any] = []
    assert loop.add_signal_handler(signal.SIGUSR1, lambda: seen.append("usr1"))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        run_for(loop, 0.05)
    finally:
        loop.remove_signal_handlers()
    assert seen == ["usr1"]


def test_a_closed_connection_is_not_kept_by_its_cancelled_deadline() -> None:
    """A handshake deadline holds the user, and so the connection: cancelled when the
    connection closes, it must let go at once, not when it would have fallen due."""
    loop = Loop()
    conn, peer, owner = pair(loop)

    class User:  # what the server's deadline is called with
        def __init__(self, conn: Connection) -> None:
            self.conn = conn

    user = User(conn)
    conn.set_timer(10.0, owner.lost.append, user)
    gone = weakref.ref(user)
    conn.close("closed by the test")
    peer.close()
    del conn, user
    gc.collect()
    assert gone() is None  # nothing holds it, nor its connection: not the timer ...
    assert not [obj for obj in gc.get_objects() if isinstance(obj, Connection)]
    assert len(loop._timers) == 1 and loop._timers[0].args == ()  # ... still in the heap


def test_connections_that_come_and_go_leave_no_trail_of_timers() -> None:
    """10,000 connect/close cycles, each with a deadline cancelled by the close: the heap
    keeps at most as many cancelled timers as live ones (beyond a few), and live timers
    still run in their order."""
    loop = Loop()
    ran: list[int] = []
    for n in range(10):
        loop.call_later(0.05 + n / 1000, ran.append, n)
    most = 0
    for _ in range(10_000):
        conn, peer, owner = pair(loop)
        conn.set_timer(10.0, owner.lost.append, conn)
        conn.close("gone")
        peer.close()
        most = max(most, len(loop._timers))
    print(f"heap: at most {most} timers for 10 live ones, over 10,000 connections")
    assert most <= 2 * COMPACT_MIN + 10
    run_for(loop, 0.1)
    assert ran == list(range(10))
