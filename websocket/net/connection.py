"""One non-blocking stream socket: its input buffer, its queue of whole frames, the end.

The loop says the socket is readable or writable; the connection reads, queues, flushes,
holds its input back when asked to, half-closes and lingers, and closes. What the bytes
mean is its owner's business (the chat server's, for every user): the owner is told when
data has arrived, when the queue has made progress (if it asked), and when the connection
is gone. Like asyncio's selector transports and Tornado's IOStream, and unlike them: no
futures, no flow-control watermarks (the owner decides), no protocol state.

- Reading: at most READ_SIZE bytes a time into one scratch buffer shared by every
  connection, then appended to `inbuf`; or, when the owner sets `direct` (it knows that
  many bytes of one frame's payload come next), up to that many, handed over straight
  from the scratch buffer without a copy.
- Writing: `outbuf` holds whole frames (the same bytes object for every user a broadcast
  reaches, never a copy), `flush()` sends until the kernel refuses, scatter-gather, and
  the socket is watched for writing only while something is left over.
- `out_cost` is what the queue costs in memory: its unsent bytes plus FRAME_COST per frame.
- Tracing (`--trace`): a `tap`, when set, is shown every byte read and every byte the
  kernel took, in order (wiretap.py); None costs one test per read and per send call.
  A traced connection may read less at a time (`read_size`), to bound one read's trace.
- Connecting: `Connector` opens an outgoing socket without blocking the loop, for a link
  the server starts itself (the Redis link); the connected socket becomes a Connection.
- Closing: `close_after_flush()` sends what is queued, half-closes, and waits up to
  LINGER_TIMEOUT for the peer's EOF (closing at once with unread input would make the
  kernel send a reset, which can destroy our last bytes before the peer reads them).
"""
from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

from ..limits import DIRECT_READ_SIZE, FRAME_COST, LINGER_TIMEOUT, READ_SIZE
from .loop import READ, WRITE, Loop, Timer

MAX_IOVECS = 512  # frames handed to one sendmsg(); below every system's IOV_MAX

HOLD_CARRY = 1 << 7  # input left over from an earlier pass is handled before more is read

_SCRATCH = bytearray(DIRECT_READ_SIZE)  # every read goes here first: one buffer for all
_SCRATCH_VIEW = memoryview(_SCRATCH)


class ByteCounts:
    """Bytes read and written, counted by every connection that shares one of these (the
    server's metrics; a connection without one counts into a private object)."""

    __slots__ = ("received_bytes", "sent_bytes")

    def __init__(self) -> None:
        self.received_bytes = 0
        self.sent_bytes = 0


class Counts(Protocol):
    received_bytes: int
    sent_bytes: int


class Owner(Protocol):
    """What a connection tells the code that owns it (the chat server)."""

    def data_received(self, conn: Connection) -> None:
        """New bytes are at the end of `conn.inbuf`."""

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        """`data[:size]` are the next bytes, read straight from the socket because
        `conn.direct` asked for them; `data` is reused after this call."""

    def flushed(self, conn: Connection) -> None:
        """The kernel took some of the queue (only while `conn.notify` is set)."""

    def connection_lost(self, conn: Connection, why: str) -> None:
        """The socket is closed (EOF, an error, a timeout or `close()`); called once."""

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        """A bug while serving this connection (the loop caught `exc`)."""


class Tap(Protocol):
    """Sees every byte that passes, for the wire trace (wiretap.Tap); None: no trace."""

    def received(self, data: memoryview) -> None:
        """`data` was read from the socket (valid during the call only)."""

    def wants_sent(self, left: int) -> bool:
        """Does it want to be shown the bytes the kernel just took? `left`: the bytes
        still queued after them (the queue ends on a frame boundary)."""

    def sent(self, data: bytes | memoryview) -> None:
        """The kernel took `data` (a view is valid during the call only)."""


class Connection:
    """One accepted socket, registered with the loop. See the module docstring."""

    __slots__ = ("sock", "loop", "owner", "user", "inbuf", "outbuf", "out_cost", "out_offset",
                 "events", "hold", "writing", "direct", "notify", "progress_at",
                 "behind_since", "closing", "lingering", "closed", "timer", "counts", "tap",
                 "peer", "read_size")

    def __init__(self, loop: Loop, sock: socket.socket, owner: Owner,
                 counts: Counts | None = None) -> None:
        self.sock = sock
        self.counts: Counts = counts if counts is not None else ByteCounts()
        self.loop = loop
        self.owner = owner
        self.user: Any = None  # the owner's object for this connection (the chat's User)
        self.inbuf = bytearray()
        self.outbuf: list[bytes] = []  # whole frames; the first may be partly sent
        self.out_cost = 0
        self.out_offset = 0  # bytes of outbuf[0] already sent
        self.events = 0  # what the loop watches the socket for
        self.hold = 0  # why input waits (bits the owner defines); 0: read it
        self.writing = False  # output is left over from a flush: wait for WRITE
        self.direct = 0  # the next this-many bytes go to owner.payload_received
        self.read_size = READ_SIZE  # bytes read at a time (less while traced: wiretap.py)
        self.notify = False  # call owner.flushed() when the queue makes progress
        self.progress_at = loop.now  # when the kernel last took some of our output
        self.behind_since = 0.0  # for the owner's fair-delivery rules (0.0: not behind)
        self.closing = False  # close_after_flush() was called
        self.lingering = False  # ... and everything is sent: half-closed, waiting for EOF
        self.closed = False
        self.timer: Timer | None = None  # the one deadline of this connection
        self.tap: Tap | None = None  # --trace: shown every byte read and sent
        # Who is at the other end, in the owner's word, for the reason given when that end
        # closes ("connection closed by the client"; the Redis link says "Redis").
        self.peer = "the client"
        self.events = loop.watch(sock, self, READ, 0)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "closing" if self.closing else "open"
        return f"<Connection fd={self.sock.fileno()} {state} out={self.out_cost}>"

    # -- reading ---------------------------------------------------------------------------

    def on_readable(self) -> None:
        wanted = self.direct if self.direct else self.read_size
        try:
            size = self.sock.recv_into(_SCRATCH, wanted)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"connection error: {exc.strerror or exc}")
            return
        if not size:
            self.peer_closed()
            return
        self.counts.received_bytes += size
        if self.tap is not None:
            self.tap.received(_SCRATCH_VIEW[:size])
        if self.closing:
            return  # lingering after our last bytes: the rest is discarded
        if self.direct:
            self.direct = 0  # the owner sets it again if more of the payload is to come
            self.owner.payload_received(self, _SCRATCH, size)
        else:
            self.inbuf += _SCRATCH_VIEW[:size]
            self.owner.data_received(self)

    def peer_closed(self) -> None:
        """The peer's end came (EOF): close, saying who closed it unless we were closing."""
        self.close("" if self.closing else f"connection closed by {self.peer}")

    def hold_input(self, reason: int) -> None:
        """Stop reading (and the owner stops handling input) for `reason`, a bit."""
        if not self.hold & reason:
            self.hold |= reason
            self._update_events()

    def release_input(self, reason: int) -> None:
        """Take `reason` away. With no reason left, what is already in `inbuf` is handed
        to the owner again, in the next pass, before anything more is read."""
        if self.hold & reason:
            self.hold &= ~reason
            if not self.hold and self.inbuf and not self.closed:
                self.defer()
            else:
                self._update_events()

    def defer(self) -> None:
        """The owner has done its share for this pass: it gets `data_received` again in the
        next one for what is left in `inbuf` (reading waits till then)."""
        self.hold_input(HOLD_CARRY)
        self.loop.call_soon(self._carry_on)

    def _carry_on(self) -> None:
        if self.closed or not self.hold & HOLD_CARRY:
            return
        self.hold &= ~HOLD_CARRY
        self._update_events()
        if not self.hold:
            try:
                self.owner.data_received(self)
            except Exception as exc:  # a bug of the owner's: it costs this connection only
                self.owner.internal_error(self, exc)

    def _update_events(self) -> None:
        """Read unless input is on hold (while lingering, always: to see the EOF); write
        while output is left over."""
        if self.closed:
            return
        events = READ if not self.hold or self.closing else 0
        if self.writing:
            events |= WRITE
        self.events = self.loop.watch(self.sock, self, events, self.events)

    # -- writing ---------------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        """Queue bytes; they leave when the loop flushes before sleeping."""
        self.outbuf.append(data)
        self.out_cost += len(data) + FRAME_COST
        if not self.writing:
            self.loop.pending[self] = None

    def on_writable(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send what is queued until the kernel takes no more (MAX_IOVECS frames a call)."""
        out = self.outbuf
        if self.closed:
            return
        sent_any = False
        while out:
            try:
                if len(out) == 1 and not self.out_offset:
                    handed = 1
                    sent = self.sock.send(out[0])
                else:
                    chunks: list[Any] = out[:MAX_IOVECS]
                    handed = len(chunks)
                    if self.out_offset:
                        chunks[0] = memoryview(chunks[0])[self.out_offset:]
                    sent = self.sock.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(f"connection lost: {exc.strerror or exc}")
                return
            sent_any = True
            self.counts.sent_bytes += sent
            if self.tap is not None:
                self._trace_sent(sent)
            if sent == self.out_cost - FRAME_COST * len(out):  # the kernel took everything
                out.clear()
                self.out_cost = self.out_offset = 0
                break
            if self._consume(sent) < handed:
                break  # the kernel refused the rest
        self._sent(sent_any)

    def _consume(self, sent: int) -> int:
        """The kernel took `sent` more bytes of the queue: forget them; returns how many
        whole frames that finished."""
        out = self.outbuf
        offset = self.out_offset + sent
        done = 0
        for chunk in out:
            if offset < len(chunk):
                break
            offset -= len(chunk)
            done += 1
        del out[:done]
        self.out_cost -= sent + FRAME_COST * done
        self.out_offset = offset
        return done

    def _sent(self, sent_any: bool) -> None:
        """After a flush: watch for writing while output is left, half-close when the last
        bytes of a closing connection are out, tell the owner of the progress."""
        out = self.outbuf
        if sent_any:
            self.progress_at = self.loop.now
        if out:
            if not self.writing:
                self.writing = True
                self._update_events()
        else:
            if self.writing:
                self.writing = False
                self._update_events()
            if self.closing:
                self._half_close()
        if self.notify and sent_any:
            self.owner.flushed(self)

    def _trace_sent(self, sent: int) -> None:
        """Show the tap the `sent` bytes the kernel just took from the front of the queue
        (if it wants them): a frame sent whole as the bytes object it is, a part of one as
        a view."""
        tap = self.tap
        assert tap is not None
        if not tap.wants_sent(self.out_cost - FRAME_COST * len(self.outbuf) - sent):
            return
        offset = self.out_offset
        for chunk in self.outbuf:
            if sent <= 0:
                break
            if not offset and len(chunk) <= sent:
                tap.sent(chunk)
                sent -= len(chunk)
                continue
            with memoryview(chunk) as view:
                piece = view[offset:offset + sent]
                tap.sent(piece)
                sent -= len(piece)
                piece.release()
            offset = 0

    def drop_output(self) -> int:
        """Forget the queue (but a frame already partly sent, which must be finished for
        the stream to stay valid); returns what it cost."""
        cost = self.out_cost
        keep = self.outbuf[0] if self.out_offset else None
        self.outbuf.clear()
        self.out_cost = 0
        if keep is not None:
            self.outbuf.append(keep)
            self.out_cost = len(keep) - self.out_offset + FRAME_COST
        return cost

    # -- time and the end --------------------------------------------------------------------

    def set_timer(self, delay: float, callback: Any, *args: Any) -> None:
        """Replace this connection's deadline: `callback(*args)` in `delay` seconds."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback, *args)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close_after_flush(self, timeout: float) -> None:
        """Send what is queued, then half-close and linger; close after `timeout` if the
        peer will not take our last bytes."""
        if self.closing or self.closed:
            return
        self.closing = True
        self._update_events()  # read (and discard) whatever was on hold, to see the EOF
        if self.outbuf:
            self.set_timer(timeout, self._give_up)
        else:
            self._half_close()

    def _give_up(self) -> None:
        self.close("could not deliver the last bytes in time" if self.outbuf else "")

    def _half_close(self) -> None:
        if self.lingering:
            return
        self.lingering = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close("")
            return
        self.set_timer(LINGER_TIMEOUT, self.close, "")

    def close(self, why: str = "") -> None:
        """Close the socket now and tell the owner (once)."""
        if self.closed:
            return
        self.closed = True
        self.cancel_timer()
        if self.events:
            self.loop.forget(self.sock)
            self.events = 0
        self.loop.pending.pop(self, None)
        self.sock.close()
        self.outbuf.clear()
        self.out_cost = self.out_offset = 0
        self.inbuf = bytearray()
        self.owner.connection_lost(self, why)

    def on_error(self, exc: Exception) -> None:
        self.owner.internal_error(self, exc)


class Connector:
    """A non-blocking outgoing TCP connect, for a link the server opens itself (Redis).

    `done(sock)` gets the connected, non-blocking socket (TCP_NODELAY and keepalive on, so
    that a peer that vanished without a FIN is found); `failed(why)` a one-line reason.
    Exactly one of them is called, always from the loop, never from the constructor.
    The name is resolved with a blocking getaddrinfo(): instant for an IP address.
    """

    def __init__(self, loop: Loop, host: str, port: int, timeout: float,
                 done: Callable[[socket.socket], None],
                 failed: Callable[[str], None]) -> None:
        self.loop = loop
        self.done = done
        self.failed = failed
        self.sock: socket.socket | None = None
        self.finished = False
        self.timer: Timer | None = None
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM)[0]
            sock = self.sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            error = sock.connect_ex(address)
        except (OSError, UnicodeError, OverflowError) as exc:
            self._finish(None, _reason(exc))
            return
        if error == 0:
            self._finish(sock, "")
        elif error in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            loop.watch(sock, self, WRITE, 0)
            self.timer = loop.call_later(timeout, self._timed_out, timeout)
        else:
            self._finish(None, os.strerror(error))

    def on_readable(self) -> None:  # pragma: no cover - watched for WRITE only
        pass

    def on_writable(self) -> None:
        assert self.sock is not None
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.loop.forget(self.sock)
        self._finish(self.sock if not error else None, os.strerror(error) if error else "")

    def on_error(self, exc: Exception) -> None:
        self._finish(None, _reason(exc))

    def _timed_out(self, timeout: float) -> None:
        if self.sock is not None:
            self.loop.forget(self.sock)
        self._finish(None, f"no answer to connect within {timeout:g} s")

    def cancel(self) -> None:
        """Give up (no callback); a socket not yet handed over is closed."""
        if not self.finished:
            self.finished = True
            self._cleanup(None)

    def _cleanup(self, keep: socket.socket | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.sock is not None and self.sock is not keep:
            self.loop.forget(self.sock)
            self.sock.close()

    def _finish(self, sock: socket.socket | None, why: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._cleanup(sock)
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):  # Linux: probe after 10 s, give up at 40
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            except OSError:
                pass
            self.loop.call_soon(self.done, sock)
        else:
            self.loop.call_soon(self.failed, why)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
