"""TLS from our side: the client end of a link the server opens itself (rediss://).

`client_context(cafile)` is the context: the system's trust store (or only `cafile`, a
private CA's PEM) with the peer's name checked (RFC 6125; Python checks an IP address
against the certificate's IP subject alternative names). `TlsConnector` is a `Connector`
followed by a client-side TLS handshake, driven by readiness in the one loop as tls.py's
server side is: `wrap_socket(..., do_handshake_on_connect=False)`, then `do_handshake()`,
waiting for READ on SSLWantReadError and WRITE on SSLWantWriteError. The TCP connect and
the handshake together are bounded by one timeout. The finished SSLSocket goes to
`done(sock)` (a `tls.TlsConnection` carries the bytes from then on); a TCP failure goes
to `failed(why)`, a TLS one to `tls_failed(why)`: one line that says what to fix.
"""
from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from .connection import Connection, Connector
from .loop import READ, WRITE, Loop, Timer
from .tls import TlsConfigError, TlsConnection, describe

# OpenSSL's reasons when the peer does not answer with TLS at all (a plain port).
NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                   "UNEXPECTED_EOF_WHILE_READING", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """The client context: verify the peer's certificate and name, against `cafile` only
    when given, else the system's trust store.

    Raises:
        TlsConfigError: `cafile` cannot be read or holds no PEM certificate.
    """
    if cafile is None:
        context = ssl.create_default_context()  # the system's store, CERT_REQUIRED, names
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the same checks, cafile only
        try:
            context.load_verify_locations(cafile=cafile)
        except ssl.SSLError:
            raise TlsConfigError(f"{cafile} holds no PEM certificate") from None
        except OSError as exc:
            raise TlsConfigError(f"cannot read the CA file {cafile}: "
                                 f"{(exc.strerror or str(exc)).lower()}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TlsConnector:
    """A TCP connect, then a client TLS handshake with `host`; see the module docstring.

    Exactly one of `done`, `failed`, `tls_failed` is called, from the loop; `cancel()`
    calls none and closes what is open.
    """

    def __init__(self, loop: Loop, host: str, port: int, timeout: float,
                 context: ssl.SSLContext, done: Callable[[ssl.SSLSocket], None],
                 failed: Callable[[str], None], tls_failed: Callable[[str], None]) -> None:
        self.loop = loop
        self.host = host
        self.timeout = timeout
        self.context = context
        self.done = done
        self.failed = failed
        self.tls_failed = tls_failed
        self.sock: ssl.SSLSocket | None = None
        self.events = 0
        self.finished = False
        self.timer: Timer | None = loop.call_later(timeout, self._timed_out)
        self.tcp: Connector | None = Connector(loop, host, port, timeout, self._connected,
                                               self._tcp_failed)

    def _tcp_failed(self, why: str) -> None:
        self.tcp = None
        if not self.finished:
            self._end()
            self.failed(why)

    def _connected(self, plain: socket.socket) -> None:
        self.tcp = None
        if self.finished:
            plain.close()
            return
        try:
            self.sock = self.context.wrap_socket(plain, server_hostname=self.host,
                                                 do_handshake_on_connect=False)
        except (ssl.SSLError, OSError, ValueError) as exc:
            plain.close()
            self._fail(f"TLS setup failed: {describe(exc)}")
            return
        self._step()

    def _step(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.events = self.loop.watch(sock, self, READ, self.events)
            return
        except ssl.SSLWantWriteError:
            self.events = self.loop.watch(sock, self, WRITE, self.events)
            return
        except ssl.SSLCertVerificationError as exc:
            self._fail(f"TLS: the certificate of {self.host} does not verify "
                       f"({exc.verify_message or describe(exc)}); a private CA is given "
                       "with --redis-cafile")
            return
        except ssl.SSLError as exc:
            hint = ("; is that port plain Redis? (redis:// is without TLS)"
                    if exc.reason in NOT_TLS_REASONS or isinstance(exc, ssl.SSLEOFError)
                    else "")
            self._fail(f"TLS handshake failed: {describe(exc)}{hint}")
            return
        except OSError as exc:
            self._fail(f"TLS handshake failed: {describe(exc)}; is that port plain Redis? "
                       "(redis:// is without TLS)")
            return
        self.sock = None  # handed over
        if self.events:
            self.loop.forget(sock)
            self.events = 0
        self._end()
        self.done(sock)

    def on_readable(self) -> None:
        self._step()

    def on_writable(self) -> None:
        self._step()

    def on_error(self, exc: Exception) -> None:
        self._fail(f"TLS handshake: internal error: {describe(exc)}")

    def _timed_out(self) -> None:
        self.timer = None
        if self.tcp is not None:
            return  # the Connector's own timer (the same timeout) says it
        # A plain Redis reads the ClientHello as the start of a command and waits for more.
        self._fail(f"TLS handshake not complete within {self.timeout:g} s; is that port "
                   "plain Redis? (redis:// is without TLS)")

    def _fail(self, why: str) -> None:
        if not self.finished:
            self._end()
            self.tls_failed(why)

    def _end(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.tcp is not None:
            self.tcp.cancel()
            self.tcp = None
        if self.sock is not None:
            if self.events:
                self.loop.forget(self.sock)
                self.events = 0
            self.sock.close()
            self.sock = None

    def cancel(self) -> None:
        """Give up (no callback); whatever is open is closed."""
        if not self.finished:
            self._end()


def connect(loop: Loop, host: str, port: int, timeout: float, context: ssl.SSLContext | None,
            done: Callable[[socket.socket], None], failed: Callable[[str], None],
            tls_failed: Callable[[str], None]) -> Connector | TlsConnector:
    """A plain `Connector` without a context, else a `TlsConnector` with it."""
    if context is None:
        return Connector(loop, host, port, timeout, done, failed)
    return TlsConnector(loop, host, port, timeout, context, done, failed, tls_failed)


def connection_of(loop: Loop, sock: socket.socket, owner: Any) -> Connection:
    """The Connection for what `connect` gave: a TlsConnection for an SSLSocket."""
    if isinstance(sock, ssl.SSLSocket):
        return TlsConnection(loop, sock, owner)
    return Connection(loop, sock, owner)
