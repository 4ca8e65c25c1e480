"""TLS in the one loop: https:// and wss:// on the same port, with the standard `ssl` module.

Three pieces, each a handler of the same loop as every other socket (nothing here blocks):

- `load_context(certfile, keyfile, minimum)`: the server's `ssl.SSLContext`, or a
  `TlsConfigError` whose message is one line for the CLI (missing, unreadable, not PEM,
  a key that does not match the certificate).
- `TlsAcceptor`: what the listener hands every accepted TCP socket to. It peeks at the
  first byte: a TLS record starts with 0x16 (handshake, RFC 8446 §5.1, RFC 5246 §6.2.1);
  anything else is plain HTTP sent to the TLS port, which gets a short HTTP 400 saying to
  use https:// (as nginx answers), then the close. Otherwise it wraps the socket
  (`server_side=True, do_handshake_on_connect=False`) and drives `do_handshake()` by
  readiness: SSLWantReadError means wait for READ, SSLWantWriteError for WRITE. The whole
  TLS handshake is bounded by the handshake timeout: a client that sends nothing, or stops
  half-way through its ClientHello, holds one socket until then and nobody's time. A
  finished handshake becomes a `TlsConnection` (the owner's `accept` callback); a failed
  one is one log line and closes that socket only; `failures` counts both kinds. Anybody
  can fail handshakes (or send plain HTTP) as fast as they connect, so these warnings go
  through a `ratelog.RateLimitedLog`: one line per kind (per reason) every 10 s, and a count.
- `TlsConnection`: a Connection whose reads and writes go through the SSLSocket.
  Reads loop until OpenSSL wants more ciphertext (one call returns at most one TLS record)
  and, since bytes OpenSSL has already decrypted (`pending()`) are invisible to the
  selector, a connection with some left is read again in the next pass, whenever its
  input is not on hold. Writes cannot use sendmsg(): frames are joined (or a big one
  sliced) into one chunk of at most TLS_WRITE_SIZE bytes; OpenSSL's write is all or
  nothing, and after SSLWantWriteError the same chunk is offered again (the mode CPython
  sets, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, allows a new buffer with the same bytes).
  The queue is the same `outbuf`, so --max-buffer bounds a TLS user exactly as a plain one.
  The half-close sends close_notify first (RFC 8446 §6.1), without waiting for the peer's.

What this module does not do: client certificates, SNI for several certificates, reloading
a renewed certificate without a restart, session resumption tuning.
"""
from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ..errors import HttpError
from ..limits import FRAME_COST
from ..protocol.handshake import error_response
from .connection import _SCRATCH, _SCRATCH_VIEW, Connection, Counts
from .loop import READ, WRITE, Loop, Timer
from .ratelog import RateLimitedLog

log = logging.getLogger("websocket")

TLS_RECORD_HANDSHAKE = 0x16  # ContentType.handshake: the first byte of every ClientHello
TLS_WRITE_SIZE = 256 * 1024  # bytes handed to one SSL write (OpenSSL cuts 16 KiB records)
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
PLAIN_HTTP_REASON = "this port speaks TLS: use https:// for the page and wss:// for the chat"


class TlsConfigError(Exception):
    """The certificate or key cannot be used; the message is one line for the CLI."""


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey  # a passphrase would be asked on the terminal: refuse instead


def load_context(certfile: str, keyfile: str | None = None,
                 minimum: str = "1.2") -> ssl.SSLContext:
    """The server's TLS context for `certfile` (the certificate, then its intermediates)
    and `keyfile` (its private key; None: it is in `certfile` too).

    Raises:
        TlsConfigError: a file is missing, unreadable, not PEM, encrypted, or the key does
            not match the certificate; or `minimum` is not "1.2" or "1.3".
    """
    if minimum not in TLS_VERSIONS:
        raise TlsConfigError(f"--tls-min must be 1.2 or 1.3, not {minimum!r}")
    for what, path in (("certificate", certfile), ("key", keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise TlsConfigError(f"cannot read the {what} file {path}: "
                                 f"{(exc.strerror or str(exc)).lower()}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[minimum]
    # Renegotiation (TLS 1.2) lets a client make us do handshakes on demand: off.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])  # the page and the upgrade are HTTP/1.1
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _EncryptedKey:
        raise TlsConfigError(f"the key in {keyfile or certfile} is encrypted: give the chat "
                             "an unencrypted key (readable by its user only)") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(f"the key in {keyfile or certfile} does not match the "
                                 f"certificate in {certfile}") from None
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            probe.load_verify_locations(cafile=certfile)
        except (ssl.SSLError, OSError):
            raise TlsConfigError(f"{certfile} holds no PEM certificate") from None
        raise TlsConfigError(f"{keyfile or certfile} holds no PEM private key for the "
                             f"certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsConfigError(f"cannot load the certificate: {exc.strerror or exc}") from None
    return context


def peer_of(address: Any) -> str:
    """'host:port' ('[::1]:port' for IPv6) for logs, as User.peer writes it."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def describe(exc: Exception) -> str:
    """One line for a TLS error: OpenSSL's reason when it has one."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class TlsAcceptor:
    """Runs the TLS handshakes of one listener's sockets; see the module docstring.

    `accept(sock, address)` is the listener's callback; every finished handshake goes to
    `on_secure(ssl_sock, address)`. `failures` counts handshakes that failed or timed out
    and plain HTTP sent to this port.
    """

    def __init__(self, loop: Loop, context: ssl.SSLContext, timeout: float,
                 on_secure: Callable[[ssl.SSLSocket, Any], None],
                 warnings: RateLimitedLog | None = None) -> None:
        self.loop = loop
        self.context = context
        self.timeout = timeout
        self.on_secure = on_secure
        # Plain HTTP and failed handshakes: as many as connections, so rate-limited.
        self.warnings = warnings if warnings is not None else RateLimitedLog(log, loop)
        self.failures = 0
        self.handshakes: set[_TlsHandshake] = set()  # in progress

    def accept(self, sock: socket.socket, address: Any) -> None:
        self.handshakes.add(_TlsHandshake(self, sock, address))

    def close_all(self) -> None:
        """Abandon every handshake in progress (the server is stopping)."""
        for shake in list(self.handshakes):
            shake.close()


class _TlsHandshake:
    """One socket from accept() until its TLS handshake is done (or is not)."""

    __slots__ = ("acceptor", "sock", "address", "events", "timer", "wrapped")

    def __init__(self, acceptor: TlsAcceptor, sock: socket.socket, address: Any) -> None:
        self.acceptor = acceptor
        self.sock: socket.socket = sock
        self.address = address
        self.wrapped = False
        loop = acceptor.loop
        self.events = loop.watch(sock, self, READ, 0)
        self.timer: Timer | None = loop.call_later(acceptor.timeout, self._timed_out)

    def on_readable(self) -> None:
        if not self.wrapped:
            self._first_byte()
        else:
            self._step()

    def on_writable(self) -> None:
        self._step()

    def on_error(self, exc: Exception) -> None:
        log.error("TLS handshake with %s: internal error", peer_of(self.address), exc_info=exc)
        self.close()

    def _first_byte(self) -> None:
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"connection error before the TLS handshake: {describe(exc)}")
            return
        if not first:
            # Connected and closed without a byte (a port check, a browser's spare
            # connection): nothing failed.
            log.debug("%s closed before the TLS handshake", peer_of(self.address))
            self.close()
            return
        if first[0] != TLS_RECORD_HANDSHAKE:
            self._refuse_plain_http()
            return
        loop = self.acceptor.loop
        # The SSLSocket takes over the descriptor (the plain socket object is detached):
        # the selector must watch the new object.
        self.events = loop.watch(self.sock, self, 0, self.events)
        try:
            self.sock = self.acceptor.context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            self._fail(f"TLS setup failed: {describe(exc)}")
            return
        self.wrapped = True
        self._step()

    def _step(self) -> None:
        """One more round of the handshake, as far as the bytes that are here allow."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(f"TLS handshake failed: {describe(exc)}")
            return
        self._forget()
        self.acceptor.handshakes.discard(self)
        log.debug("%s: %s, %s", peer_of(self.address), sock.version(),
                  (sock.cipher() or ("?",))[0])
        self.acceptor.on_secure(sock, self.address)

    def _watch(self, events: int) -> None:
        self.events = self.acceptor.loop.watch(self.sock, self, events, self.events)

    def _refuse_plain_http(self) -> None:
        """Plain HTTP on the TLS port: a 400 saying so, sent and closed as any answer."""
        self.acceptor.failures += 1
        self.acceptor.warnings.warning("plain HTTP", "%s: HTTP 400: plain HTTP sent to the "
                                       "TLS port", peer_of(self.address))
        self._forget()
        self.acceptor.handshakes.discard(self)
        conn = Connection(self.acceptor.loop, self.sock, _Refused())
        conn.queue(error_response(HttpError(400, PLAIN_HTTP_REASON)))
        conn.close_after_flush(self.acceptor.timeout)

    def _timed_out(self) -> None:
        self.timer = None
        state = "sent nothing" if not self.wrapped else "did not finish it"
        self._fail(f"TLS handshake not complete within {self.acceptor.timeout:g} s "
                   f"(the client {state})")

    def _fail(self, why: str) -> None:
        self.acceptor.failures += 1
        self.acceptor.warnings.warning(why, "%s: %s; closing that connection",  # `why` is ours
                                       peer_of(self.address), why)
        self.close()

    def _forget(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.events:
            self.acceptor.loop.forget(self.sock)
            self.events = 0

    def close(self) -> None:
        self._forget()
        self.acceptor.handshakes.discard(self)
        self.sock.close()


class _Refused:
    """The owner of a plain-HTTP connection refused on the TLS port: nothing to do but end."""

    def data_received(self, conn: Connection) -> None:  # pragma: no cover - closing: discarded
        pass

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        pass  # pragma: no cover - never asked for

    def flushed(self, conn: Connection) -> None:
        pass

    def connection_lost(self, conn: Connection, why: str) -> None:
        pass

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        log.error("refusing plain HTTP: internal error", exc_info=exc)
        conn.close()


class TlsConnection(Connection):
    """A Connection over an SSLSocket whose handshake is done; see the module docstring."""

    __slots__ = ("chunk", "write_wants_read", "read_wants_write", "read_soon", "eof",
                 "warnings")

    sock: ssl.SSLSocket

    def __init__(self, loop: Loop, sock: ssl.SSLSocket, owner: Any,
                 counts: Counts | None = None, warnings: RateLimitedLog | None = None) -> None:
        self.warnings = warnings  # where a TLS error is told (None: the log, as it comes)
        self.chunk: bytes | memoryview | None = None  # being written: offered again as is
        self.write_wants_read = False  # OpenSSL must read before the chunk can go
        self.read_wants_write = False  # ... or write before it can read more
        self.read_soon = False  # a read of decrypted bytes is scheduled
        self.eof = False  # the peer's end came with the last bytes read
        super().__init__(loop, sock, owner, counts)
        self._update_events()  # bytes decrypted with the handshake's last record, if any

    # -- reading ---------------------------------------------------------------------------

    def on_readable(self) -> None:
        if self.write_wants_read:
            self.write_wants_read = False
            self.flush()
            if self.closed or (self.hold and not self.closing):
                return
        if self.eof:
            self.peer_closed()
            return
        sock = self.sock
        wanted = self.direct if self.direct else self.read_size
        got = 0
        try:
            while got < wanted:
                size = sock.recv_into(_SCRATCH_VIEW[got:wanted], wanted - got)
                if not size:
                    self.eof = True
                    break
                got += size
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            pass
        except ssl.SSLWantWriteError:
            self.read_wants_write = True  # (a TLS 1.3 KeyUpdate to answer, the socket full)
            self._update_events()
        except ssl.SSLEOFError:
            self.eof = True  # the TCP connection ended without close_notify: an end all the same
        except ssl.SSLError as exc:
            self._tls_error(exc)
            return
        except OSError as exc:
            self.close(f"connection error: {exc.strerror or exc}")
            return
        self.counts.received_bytes += got
        if got and self.tap is not None:
            self.tap.received(_SCRATCH_VIEW[:got])
        if got and not self.closing:
            if self.direct:
                self.direct = 0  # the owner sets it again if more of the payload is to come
                self.owner.payload_received(self, _SCRATCH, got)
            else:
                self.inbuf += _SCRATCH_VIEW[:got]
                self.owner.data_received(self)
        if self.closed:
            return
        if self.eof and (not got or self.closing):
            self.peer_closed()
            return
        self._read_decrypted_later()

    def _read_decrypted_later(self) -> None:
        """Bytes already decrypted (or the end after them) are invisible to the selector:
        read them in the next pass, if input is not on hold then."""
        if (not self.read_soon and not self.closed and (not self.hold or self.closing)
                and (self.eof or self.sock.pending())):
            self.read_soon = True
            self.loop.call_soon(self._read_decrypted)

    def _read_decrypted(self) -> None:
        self.read_soon = False
        if self.closed or (self.hold and not self.closing):
            return  # release_input() schedules it again
        try:
            self.on_readable()
        except Exception as exc:  # a bug of the owner's: it costs this connection only
            self.on_error(exc)

    def _update_events(self) -> None:
        if self.closed:
            return
        events = READ if not self.hold or self.closing or self.write_wants_read else 0
        if (self.writing and not self.write_wants_read) or self.read_wants_write:
            events |= WRITE
        self.events = self.loop.watch(self.sock, self, events, self.events)
        if events & READ:
            self._read_decrypted_later()

    def _tls_error(self, exc: ssl.SSLError) -> None:
        address = getattr(self.user, "address", None)
        if address is None:  # not a user's (the Redis link's): its owner logs the loss
            try:
                address = self.sock.getpeername()
            except OSError:
                address = "a TLS peer"
        why = describe(exc)
        if self.warnings is not None:
            self.warnings.warning(f"TLS error: {why}", "%s: TLS error: %s; closing that "
                                  "connection", peer_of(address), why)
        else:
            log.warning("%s: TLS error: %s; closing that connection", peer_of(address), why)
        self.close(f"TLS error: {why}")

    # -- writing ---------------------------------------------------------------------------

    def on_writable(self) -> None:
        if self.read_wants_write:
            self.read_wants_write = False
            self._update_events()
            self.on_readable()
            if self.closed:
                return
        self.flush()

    def flush(self) -> None:
        """Send what is queued, a chunk at a time, until OpenSSL takes no more."""
        if self.closed:
            return
        out = self.outbuf
        sent_any = False
        while out:
            chunk = self.chunk if self.chunk is not None else self._next_chunk()
            try:
                sent = self.sock.send(chunk)
            except ssl.SSLWantWriteError:
                self.chunk = chunk
                break
            except ssl.SSLWantReadError:
                self.chunk = chunk
                self.write_wants_read = True
                break
            except ssl.SSLEOFError:
                self.close(f"connection lost: closed by {self.peer}")
                return
            except ssl.SSLError as exc:
                self._tls_error(exc)
                return
            except OSError as exc:
                self.close(f"connection lost: {exc.strerror or exc}")
                return
            self.chunk = None
            sent_any = True
            self.counts.sent_bytes += sent
            if self.tap is not None:
                self._trace_sent(sent)
            self._consume(sent)
        if self.write_wants_read and not self.writing:
            self._update_events()
        self._sent(sent_any)

    def _next_chunk(self) -> bytes | memoryview:
        """The next bytes to write: a slice of a big frame, or small frames joined."""
        out = self.outbuf
        first = out[0]
        offset = self.out_offset
        if len(out) == 1 or len(first) - offset >= TLS_WRITE_SIZE:
            if not offset and len(first) <= TLS_WRITE_SIZE:
                return first
            return memoryview(first)[offset:offset + TLS_WRITE_SIZE]
        parts: list[Any] = [memoryview(first)[offset:] if offset else first]
        size = len(first) - offset
        for frame in out[1:]:
            if size + len(frame) > TLS_WRITE_SIZE:
                break
            parts.append(frame)
            size += len(frame)
        return b"".join(parts) if len(parts) > 1 else parts[0]

    def drop_output(self) -> int:
        """As Connection's, but the frames of a chunk OpenSSL has begun stay: it must be
        offered again, byte for byte."""
        if self.chunk is None:
            return super().drop_output()
        cost = self.out_cost
        need = self.out_offset + len(self.chunk)
        keep = 0
        for frame in self.outbuf:
            keep += 1
            need -= len(frame)
            if need <= 0:
                break
        del self.outbuf[keep:]
        self.out_cost = (sum(len(frame) for frame in self.outbuf) - self.out_offset
                         + FRAME_COST * keep)
        return cost

    # -- the end -------------------------------------------------------------------------------

    def _half_close(self) -> None:
        if self.lingering:
            return
        try:
            # Sends close_notify; waiting for the peer's would block (RFC 8446 §6.1 lets
            # us close without it), so its SSLWantReadError is the expected answer.
            self.sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass
        super()._half_close()  # SSLSocket.shutdown() drops the TLS layer, then SHUT_WR
