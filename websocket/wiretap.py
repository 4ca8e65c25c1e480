"""The server's wire trace (`--trace`, `--trace-page`): every connection's bytes, annotated.

A `Tap` sits on one connection (`Connection.tap`) and sees its bytes where they pass: what
`recv` returned, and what `send`/`sendmsg` took, in order. It feeds them to a
`trace.ConnectionTrace`, which finds the HTTP heads and the frames of all three protocol
generations, and hands each finished block to the `Tracer`: logged (`--trace`, logger
`websocket.trace`, one block per record) and/or published to the /wire viewers
(`--trace-page`, see wire.py).

Off, it costs nothing: the server makes no Tracer, every connection's `tap` stays None, and
the connection makes one `is not None` test per read and per send call.

A TLS connection (an `ssl.SSLSocket`, whose reads and writes are the plaintext) starts
with a line saying so, its version and cipher. A connection gets its tap when its first
request is parsed (or fails to parse), fed every
byte read until then, so the trace starts at the connection's first byte; the /wire
viewers' own connections never get one, so the trace never shows itself.
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .trace import DEFAULT_LIMIT, ConnectionTrace

if TYPE_CHECKING:
    from .user import User

trace_log = logging.getLogger("websocket.trace")


class Publisher(Protocol):
    """Where blocks go besides the log: the /wire viewers (wire.WireHub)."""

    def publish(self, conn_id: int, block: str) -> None: ...


class Tap:
    """One connection's trace: bytes in, blocks out to the tracer.

    The trace is never allowed to cost the user its connection: should it ever raise (it
    is written not to, and tests/test_trace.py feeds it arbitrary bytes), the error is
    logged once and this connection is traced no further.
    """

    __slots__ = ("trace", "tracer", "conn_id", "broken")

    def __init__(self, trace: ConnectionTrace, tracer: Tracer, conn_id: int) -> None:
        self.trace = trace
        self.tracer = tracer
        self.conn_id = conn_id
        self.broken = False

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
            self.broken = True
            trace_log.exception("trace of connection #%d failed; it is traced no further",
                                self.conn_id)
            return
        if blocks:
            self.tracer.emit(self.conn_id, blocks)


class Tracer:
    """The server's trace: makes the taps and sends their blocks on."""

    def __init__(self, limit: int = DEFAULT_LIMIT, to_log: bool = True,
                 publisher: Publisher | None = None) -> None:
        if limit < 0:
            raise ValueError("the trace limit must be 0 or more")
        self.limit = limit
        self.to_log = to_log
        self.publisher = publisher

    def attach(self, user: User) -> None:
        """Trace `user`'s connection from now on, starting with what it has read so far."""
        conn = user.conn
        if conn.tap is not None:
            return
        tap = conn.tap = Tap(ConnectionTrace(f"#{user.id} {user.peer}", self.limit), self,
                             user.id)
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):  # TLS: the tap is shown the decrypted bytes
            cipher = sock.cipher()
            self.emit(user.id, [tap.trace.tls(sock.version() or "TLS",
                                              cipher[0] if cipher else None)])
        if conn.inbuf:
            tap.received(bytes(conn.inbuf))

    def emit(self, conn_id: int, blocks: list[str]) -> None:
        for block in blocks:
            if self.to_log:
                trace_log.info("%s", block)
            if self.publisher is not None:
                self.publisher.publish(conn_id, block)
