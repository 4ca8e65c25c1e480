"""The server's wire trace (`--trace`, `--trace-page`): every connection's bytes, annotated.

A `Tap` sits on one connection (`Connection.tap`) and sees its bytes where they pass: what
`recv` returned, and what `send`/`sendmsg` took, in order. It feeds them to a
`trace.ConnectionTrace`, which finds the HTTP heads and the frames of all three protocol
generations, and hands each finished block to the `Tracer`: logged (`--trace`, logger
`websocket.trace`, one block per record) and/or published to the /wire viewers
(`--trace-page`, see wire.py).

Off, it costs nothing: the server makes no Tracer, every connection's `tap` stays None, and
the connection makes one `is not None` test per read and per send call.

Who reads the trace decides what it costs:

- Nobody (`--trace-page` alone, no viewer watching): no connection has a tap, so the
  trace costs what it costs off. Nothing is parsed, formatted, kept or thrown away.
- A /wire viewer arrives: every open WebSocket connection gets a tap at once, begun
  mid-stream at its next frame boundary each way. Output: after the bytes already queued
  (the queue holds whole frames, so it ends on a boundary). Input: after the rest of the
  frame in progress (the receiver knows how much of its payload is still to come; for a
  draft-75/76 text frame, up to its 0xFF). From then on the viewer sees whole frames. A
  connection still in its HTTP requests gets its tap when its next request is parsed, as
  under `--trace`. When the last viewer leaves, every tap goes.
- The viewers get at most WIRE_BLOCKS_PER_SECOND blocks a second (a token bucket holding
  WIRE_BURST): a person reads a page, not 75,000 frames a second. Beyond that rate the
  taps only follow the frames they read (parse each header, skip its payload: no hexdump,
  no JSON), and do not even look at a connection's output (`Tap.wants_sent`): when the
  rate allows again, its trace picks up where its queue ends, on a frame boundary. Every
  WIRE_NOTE_INTERVAL a line from connection 0 says how many blocks were not shown.
- The log (`--trace`) gets every block, and a block costs ten times what receiving its
  frame costs (limits.py has the numbers). So the turn of a user whose frames are traced
  is charged for them, in and out (limits.py TRACED_*, enforced in server.py `_receive`),
  and a traced connection reads TRACED_READ_SIZE bytes at a time, which bounds what one
  read costs to trace: a flooder under `--trace` slows itself, nobody else. (With viewers
  only, the shares are the FOLLOWED_* ones: following costs far less than formatting.)

A TLS connection (an `ssl.SSLSocket`, whose reads and writes are the plaintext) starts
with a line saying so, its version and cipher. A connection traced from its start gets its
tap when its first request is parsed (or fails to parse), fed every byte read until then,
so the trace starts at the connection's first byte; the /wire viewers' own connections
never get one, so the trace never shows itself.
"""
from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from ..limits import (
    FOLLOWED_DELIVERIES_PER_TURN,
    FOLLOWED_FRAMES_PER_TURN,
    FRAMES_PER_BATCH,
    READ_SIZE,
    TRACED_FRAMES_PER_TURN,
    TRACED_READ_SIZE,
)
from ..net.connection import Connection
from ..net.loop import Loop, Timer
from ..protocol.handshake import RFC6455
from .trace import CLIENT_TO_SERVER, DEFAULT_LIMIT, SERVER_TO_CLIENT, ConnectionTrace

if TYPE_CHECKING:
    from ..chat.user import User

trace_log = logging.getLogger("websocket.trace")

WIRE_BLOCKS_PER_SECOND = 200  # what the /wire viewers are sent, at most, a second ...
WIRE_BURST = 100  # ... and at once: ~5 ms of formatting, whatever arrives in one read
WIRE_NOTE_INTERVAL = 1.0  # seconds between the lines saying how many were not shown
NOTE_CONN = 0  # the connection number of the trace's own lines (no connection has it)


class Publisher(Protocol):
    """Where blocks go besides the log: the /wire viewers (wire.WireHub)."""

    def publish(self, conn_id: int, block: str) -> None: ...


class Tap:
    """One connection's trace: bytes in, blocks out to the tracer.

    The trace is never allowed to cost the user its connection: should it ever raise (it
    is written not to, and tests/test_trace.py feeds it arbitrary bytes), the error is
    logged once and this connection is traced no further.
    """

    __slots__ = ("trace", "tracer", "conn_id", "broken", "output_paused")

    def __init__(self, trace: ConnectionTrace, tracer: Tracer, conn_id: int) -> None:
        self.trace = trace
        self.tracer = tracer
        self.conn_id = conn_id
        self.broken = False
        self.output_paused = False  # the viewers' rate is spent: output not followed

    def wants_sent(self, left: int) -> bool:
        """Is the output the kernel just took to be followed? Not while the viewers' rate
        is spent (`Tracer.quiet`): the connection's frames are not even looked at then.
        Once it is back, the trace picks up after the `left` bytes still queued, where a
        whole frame begins."""
        if self.broken:
            return False
        try:
            if self.tracer.quiet:
                if self.output_paused or self.trace.pause_output():
                    self.output_paused = True
                    self.tracer.sends_passed += 1
                    return False
                return True
            if self.output_paused:
                self.output_paused = False
                self.trace.resume_output(left)
                return False
        except Exception:
            self._failed()
            return False
        return True

    def received(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the client sent (read from the socket)."""
        self._feed(self.trace.client_bytes, data)

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the kernel took from us (sent to the client)."""
        self._feed(self.trace.server_bytes, data)

    def _feed(self, direction: Callable[[bytes | bytearray | memoryview], list[str]],
              data: bytes | bytearray | memoryview) -> None:
        if self.broken:
            return
        try:
            blocks = direction(data)
        except Exception:
            self._failed()
            return
        if blocks:
            self.tracer.emit(self.conn_id, blocks)

    def _failed(self) -> None:
        self.broken = True
        trace_log.exception("trace of connection #%d failed; it is traced no further",
                            self.conn_id)


class Tracer:
    """The server's trace: makes the taps (while anyone reads them) and sends their blocks
    on; see the module docstring.

    `users()` lists the server's connections' users, for the taps a viewer's arrival
    makes; `loop` is the clock of the viewers' rate and times the lines about it.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, to_log: bool = True,
                 publisher: Publisher | None = None, *,
                 users: Callable[[], Iterable[User]] = lambda: (),
                 loop: Loop | None = None) -> None:
        if limit < 0:
            raise ValueError("the trace limit must be 0 or more")
        self.limit = limit
        self.to_log = to_log
        self.publisher = publisher
        self.users = users
        self.loop = loop
        self.viewers = 0  # /wire viewers watching (WireHub.adopt, connection_lost)
        self.tokens = float(WIRE_BURST)  # the viewers' rate, as a token bucket
        self.refilled = loop.now if loop is not None else time.monotonic()
        self.quiet_until = 0.0  # no token before then
        self.not_shown = 0  # blocks the viewers were not sent since the last note ...
        self.sends_passed = 0  # ... and sends whose output was not looked at
        self._note_timer: Timer | None = None

    @property
    def watched(self) -> bool:
        """Does anyone read the trace now (the log, or a viewer)?"""
        return self.to_log or self.viewers > 0

    @property
    def quiet(self) -> bool:
        """Viewers only, and their rate is spent for now: nothing would be shown."""
        return (not self.to_log and self.viewers > 0
                and (self.loop.now if self.loop is not None else time.monotonic())
                < self.quiet_until)

    @property
    def turn_share(self) -> tuple[int, int, int]:
        """What one turn of a traced user may do (limits.py): frames parsed, frames
        queued because of them, and frames parsed at a time."""
        if self.to_log:
            return TRACED_FRAMES_PER_TURN, TRACED_FRAMES_PER_TURN, 1
        return FOLLOWED_FRAMES_PER_TURN, FOLLOWED_DELIVERIES_PER_TURN, FRAMES_PER_BATCH

    # -- taps --------------------------------------------------------------------------------

    def attach(self, user: User) -> None:
        """Trace `user`'s connection from now on, starting with what it has read so far
        (its first request, or the one after the last answered), if anyone reads it."""
        conn = user.conn
        if conn.tap is not None or not self.watched:
            return
        tap = self._tap(user, None)
        if conn.outbuf:  # (an earlier answer still queued: its next one starts whole)
            tap.trace.skip(SERVER_TO_CLIENT, sum(map(len, conn.outbuf)) - conn.out_offset)
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):  # TLS: the tap is shown the decrypted bytes
            cipher = sock.cipher()
            self.emit(user.id, [tap.trace.tls(sock.version() or "TLS",
                                              cipher[0] if cipher else None)])
        if conn.inbuf:
            tap.received(bytes(conn.inbuf))

    def follow(self, user: User) -> bool:
        """Trace an open WebSocket connection from its next frame each way (a viewer has
        just arrived); False for a connection that gets no tap now."""
        conn = user.conn
        if conn.tap is not None or user.protocol is None or conn.closed:
            return False
        tap = self._tap(user, user.protocol)
        trace = tap.trace
        trace.skip(SERVER_TO_CLIENT, sum(map(len, conn.outbuf)) - conn.out_offset)
        receiver = user.receiver
        if receiver is not None and receiver.remaining:  # RFC 6455: the rest of a payload
            trace.skip(CLIENT_TO_SERVER, receiver.remaining)
        elif receiver is not None and receiver.in_message and user.protocol != RFC6455:
            # draft-75/76: a text frame runs to its 0xFF. (A length-prefixed frame, which
            # no browser sends and the server discards, would be shown from a wrong place:
            # the trace refuses nothing, it shows what it finds.)
            trace.skip(CLIENT_TO_SERVER, to_ff=True)
        agreed = user.deflate
        if agreed is not None:
            trace.deflate_agreed({
                CLIENT_TO_SERVER: (agreed.client_max_window_bits,
                                   agreed.client_no_context_takeover),
                SERVER_TO_CLIENT: (agreed.server_max_window_bits,
                                   agreed.server_no_context_takeover)})
        if conn.inbuf:
            tap.received(bytes(conn.inbuf))
        return True

    def _tap(self, user: User, protocol: str | None) -> Tap:
        conn = user.conn
        trace = ConnectionTrace(f"#{user.id} {user.peer}", self.limit, protocol,
                                None if self.to_log else self._wants)
        tap = conn.tap = Tap(trace, self, user.id)
        if self.to_log:
            conn.read_size = TRACED_READ_SIZE
        return tap

    @staticmethod
    def detach(conn: Connection) -> None:
        conn.tap = None
        conn.read_size = READ_SIZE

    def viewers_changed(self, count: int) -> None:
        """The /wire viewers now number `count`: the first one makes the taps, the last
        one to leave takes them away (unless the log wants them: --trace)."""
        before, self.viewers = self.viewers, count
        if self.to_log or bool(before) == bool(count):
            return
        if count:
            followed = sum(self.follow(user) for user in list(self.users()))
            if followed:
                self._note(f"the trace begins now: {followed} open WebSocket connection(s) "
                           "shown from their next frame each way, new ones from their request")
            return
        for user in list(self.users()):
            self.detach(user.conn)
        if self._note_timer is not None:
            self._note_timer.cancel()
            self._note_timer = None
        self.not_shown = self.sends_passed = 0

    # -- blocks ------------------------------------------------------------------------------

    def emit(self, conn_id: int, blocks: list[str]) -> None:
        publisher = self.publisher if self.viewers else None
        for block in blocks:
            if self.to_log:
                trace_log.info("%s", block)
                if publisher is not None and self._take():
                    publisher.publish(conn_id, block)
            elif publisher is not None:
                publisher.publish(conn_id, block)  # its frame took a token (`_wants`)

    def _wants(self) -> bool:
        """Viewers only: format the next block? Within their rate; beyond it the frame is
        followed, not formatted, and counted."""
        return self.viewers > 0 and self._take()

    def _take(self) -> bool:
        """One block's worth of the viewers' rate, if there is one left."""
        now = self.loop.now if self.loop is not None else time.monotonic()
        if now >= self.quiet_until:
            tokens = min(float(WIRE_BURST),
                         self.tokens + (now - self.refilled) * WIRE_BLOCKS_PER_SECOND)
            self.refilled = now
            if tokens >= 1.0:
                self.tokens = tokens - 1.0
                return True
            self.tokens = tokens
            self.quiet_until = now + (1.0 - tokens) / WIRE_BLOCKS_PER_SECOND  # the next one
            if self._note_timer is None and self.loop is not None:
                self._note_timer = self.loop.call_later(WIRE_NOTE_INTERVAL,
                                                        self._note_not_shown)
        self.not_shown += 1
        return False

    def _note_not_shown(self) -> None:
        self._note_timer = None
        if self.not_shown or self.sends_passed:
            self._note(f"over the rate of the /wire stream ({WIRE_BLOCKS_PER_SECOND} blocks a "
                       f"second; --trace logs them all): {self.not_shown:,} blocks and the "
                       f"output of {self.sends_passed:,} sends not shown")
        self.not_shown = self.sends_passed = 0

    def _note(self, text: str) -> None:
        """A line of the trace's own, to the viewers (connection 0)."""
        if self.publisher is not None and self.viewers:
            self.publisher.publish(NOTE_CONN, f"trace  {text}")
