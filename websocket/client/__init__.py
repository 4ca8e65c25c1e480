"""A small blocking WebSocket client (RFC 6455), and a chat in the terminal.

As a module, for tests, examples and scripts:

    with connect("ws://127.0.0.1:8080/") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))

As a program: `python3 -m websocket.client ws://127.0.0.1:8080/` sends each line typed and
prints each message received; Ctrl-D closes with 1000 (`--help` lists the options). The
program is `websocket.terminal`; the handshake's sans-I/O half is `websocket.client_handshake`.

It speaks the client side of RFC 6455 only: every frame it sends is masked with a fresh
random key (§5.3), it checks the server's Sec-WebSocket-Accept (§4.1), answers pings by
itself (§5.5.2), and closes with the closing handshake (§7.1.1: send a close, read up to
the server's, then wait for the server to end TCP). Server frames are taken apart by the
project's own codecs (`messages.Receiver`, which joins fragments and checks UTF-8), so a
server bug shared with them shows up in `tests/wsclient.py` instead, which parses by hand.

permessage-deflate (RFC 7692) with `connect(..., compression=True)` (the terminal program
offers it by default): messages of DEFAULT_MIN_SIZE bytes or more are sent compressed, and
compressed messages from the server are inflated within `max_message_size`
(client_deflate.py). Not here: draft-75/76 (only the server speaks them), proxies and
redirects.

Threads: read (`recv`, `wait_pong`, `close`) from one thread at a time; `send` and
`ping` may come from another: a lock keeps each message's frames together (and a
compressed stream in order), so a pong may wait for a message being sent. With wss://,
reading and writing from two threads at once is not safe in OpenSSL, so the terminal
program uses one thread and a selector.
"""
from __future__ import annotations

import base64
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType

from ..errors import ProtocolError
from ..observe.trace import DEFAULT_LIMIT, ConnectionTrace
from ..protocol.deflate import DEFAULT_MIN_SIZE, EXTENSION_NAME
from ..protocol.frames import CloseCode, Opcode, describe_close_code, encode_close, encode_frame
from ..protocol.messages import Close, Event, Message, Ping, Pong, Receiver
from .deflate import OFFER, RSV1, ClientAgreement, CompressedReader, agree
from .handshake import (
    DEFAULT_PORTS,
    ClientError,
    HandshakeFailed,
    Response,
    Target,
    build_request,
    check_response,
    parse_response,
    parse_url,
)

__all__ = ["DEFAULT_PORTS", "ClientError", "Connection", "ConnectionClosed", "HandshakeFailed",
           "Response", "Target", "build_request", "check_response", "connect", "main",
           "parse_response", "parse_url"]

DEFAULT_MAX_MESSAGE_SIZE = 64 << 20  # a client is one user: generous, but bounded
MAX_RESPONSE_HEAD = 64 * 1024  # the server's 101 answer is a few hundred bytes
READ_SIZE = 256 * 1024

class ConnectionClosed(ClientError):
    """The connection is over: `code` and `reason` of the close (RFC 6455 §7.1.5, §7.1.6).

    `by` says who sent the close frame: "server", "client" (this one: on a protocol error
    from the server, or when the server never answered), or None for 1006, when the
    connection ended without one.
    """

    def __init__(self, code: int, reason: str = "", by: str | None = "server") -> None:
        self.code = code
        self.reason = reason
        self.by = by if code != CloseCode.ABNORMAL else None
        super().__init__(str(self))

    def __str__(self) -> str:
        what = f"{self.code} ({describe_close_code(self.code)})"
        if self.by is None:
            return f"connection lost: {what}" + (f", {self.reason}" if self.reason else "")
        return f"closed by the {self.by}: {what}" + (f" {self.reason!r}" if self.reason else "")



class Connection:
    """An open RFC 6455 connection, client side. Made by `connect`."""

    def __init__(self, sock: socket.socket, *, subprotocol: str | None = None,
                 extensions: tuple[str, ...] = (), received: bytes = b"",
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, close_timeout: float = 10.0,
                 trace: ConnectionTrace | None = None,
                 on_trace: Callable[[str], object] | None = None,
                 deflate: ClientAgreement | None = None) -> None:
        self.sock = sock
        self.subprotocol = subprotocol  # as the server chose it (§4.2.2), or None
        self.extensions = extensions  # as the server accepted them: the RFC 7692 hook
        self.close_timeout = close_timeout
        self._receiver = Receiver(max_message_size, require_mask=False)
        self.deflate = deflate  # the permessage-deflate parameters agreed on, or None
        self._deflater = deflate.deflater() if deflate is not None else None
        self._reader = None if deflate is None else CompressedReader(
            deflate, self._receiver, max_message_size)
        self._inbuf = bytearray(received)  # bytes after the 101 answer belong to frames
        self._messages: deque[str | bytes] = deque()
        self._pongs: deque[bytes] = deque()
        # Held for a whole message (its frames must not interleave with another's, and a
        # compressed stream must go out in the order it was compressed); re-entered per frame.
        self._send_lock = threading.RLock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._trace = trace
        self._on_trace = on_trace
        self._close_sent = False
        self._closed: ConnectionClosed | None = None  # set once the connection is over
        if self._inbuf:
            self._process()

    # -- the API --------------------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview, *,
             fragment_size: int | None = None) -> None:
        """Send a text (`str`) or binary message, in frames of `fragment_size` bytes if
        given (§5.4: a first frame, then continuation frames, the last one with FIN).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if isinstance(message, str):
            opcode, payload = Opcode.TEXT, message.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, bytes(message)
        if fragment_size is not None and fragment_size < 1:
            raise ValueError("fragment_size must be at least 1")
        compressed = self._deflater is not None and len(payload) >= DEFAULT_MIN_SIZE
        with self._send_lock:
            if compressed:
                assert self._deflater is not None
                payload = self._deflater.compress(payload)  # the trace shows both sizes
            size = fragment_size or len(payload) or 1
            for start in range(0, max(len(payload), 1), size):
                last = start + size >= len(payload)
                # RFC 7692 §6.1: RSV1 on the first frame of a compressed message only.
                self._send_frame(opcode if start == 0 else Opcode.CONTINUATION,
                                 payload[start:start + size], fin=last,
                                 rsv1=compressed and start == 0)

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message: `str` for text, `bytes` for binary. Pings are answered and
        pongs kept for `wait_pong` meanwhile.

        Args:
            timeout: seconds to wait; None waits for ever, 0 takes only what is there.

        Raises:
            TimeoutError: no whole message within `timeout`.
            ConnectionClosed: the connection is over (messages received before the close
                are returned first).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            self._check_open()
            if not self._fill(deadline):
                raise TimeoutError(f"no message within {timeout:g} s")
        return self._messages.popleft()

    def ping(self, data: bytes = b"") -> None:
        """Send a ping (§5.5.2); the server's pong is for `wait_pong`."""
        if len(data) > 125:
            raise ValueError("a ping carries at most 125 bytes (RFC 6455 §5.5)")
        self._send_frame(Opcode.PING, bytes(data))

    def wait_pong(self, timeout: float | None = None) -> bytes:
        """The payload of the next pong (§5.5.3); messages arriving meanwhile are kept.

        Raises:
            TimeoutError, ConnectionClosed: as `recv`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pongs:
            self._check_open()
            if not self._fill(deadline):
                raise TimeoutError(f"no pong within {timeout:g} s")
        return self._pongs.popleft()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "",
              timeout: float | None = None) -> tuple[int, str]:
        """The closing handshake (§7.1.2, §7.1.1): send a close frame, read until the
        server's close frame, then wait for the server to end TCP, and close the socket.

        Messages that arrive meanwhile are kept for `recv`. Returns the server's (code,
        reason); (1006, why) when it did not answer within `timeout` (default:
        `close_timeout`). Closing a closed connection returns the same again.
        """
        if self._closed is None:
            deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
            try:
                if not self._close_sent:
                    self._send_close(code, reason)
                while self._closed is None:
                    if not self._fill(deadline):
                        self._end(ConnectionClosed(
                            CloseCode.ABNORMAL, "no close frame from the server in time"))
            except ConnectionClosed:
                pass  # the connection ended first: _closed says how
        assert self._closed is not None
        return self._closed.code, self._closed.reason

    @property
    def closed(self) -> ConnectionClosed | None:
        """None while open; then how it ended."""
        return self._closed

    def fileno(self) -> int:
        """The socket's descriptor, for a selector (see also `recv(timeout=0)`)."""
        return self.sock.fileno()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close(CloseCode.NORMAL if kind is None else CloseCode.GOING_AWAY)
        except OSError:
            pass

    # -- input ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionClosed(self._closed.code, self._closed.reason, self._closed.by)

    def _fill(self, deadline: float | None) -> bool:
        """Read once and handle the events; False if nothing came before `deadline`."""
        sock = self.sock
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            # TLS may hold decrypted bytes the selector cannot see: read those first.
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._selector.select(wait):
                return False
        try:
            data = sock.recv(READ_SIZE)
        except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
            return True  # part of a TLS record: the rest is still on its way
        except OSError as exc:
            self._end(ConnectionClosed(CloseCode.ABNORMAL, f"{exc.strerror or exc}"))
            return True
        if not data:
            self._end(ConnectionClosed(CloseCode.ABNORMAL, "closed without a close frame"))
            return True
        self._traced_input(data)
        self._inbuf += data
        self._process()
        return True

    def _process(self) -> None:
        events: list[Event] = []
        error: ProtocolError | None = None
        try:
            if self._reader is not None:
                self._reader.receive(self._inbuf, events)
            else:
                self._receiver.receive(self._inbuf, events)
        except ProtocolError as exc:
            error = exc
        for event in events:
            if isinstance(event, Message):
                self._messages.append(event.data)
            elif isinstance(event, Ping):
                # §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame
                # in response, unless it already received a Close frame"; and §5.5.1:
                # nothing more after our own close.
                if not self._close_sent:
                    try:
                        self._send_frame(Opcode.PONG, event.payload)
                    except ConnectionClosed:
                        pass  # recorded in _closed; the messages before it still count
            elif isinstance(event, Pong):
                self._pongs.append(event.payload)
            elif isinstance(event, Close):
                self._on_close(event)
        if error is not None and self._closed is None:
            # §7.1.7: Fail the WebSocket Connection, with the close code the error carries.
            if not self._close_sent:
                self._send_close(error.code, error.reason, quiet=True)
            self._end(ConnectionClosed(error.code, error.reason, by="client"))

    def _on_close(self, event: Close) -> None:
        """§5.5.1: answer a close frame not yet answered (echoing its code), then §7.1.1:
        wait for the server to close TCP first, and close our end."""
        if not self._close_sent:
            self._send_close(None if event.code == CloseCode.NO_STATUS else event.code,
                             quiet=True)
        deadline = time.monotonic() + self.close_timeout
        while True:
            wait = max(0.0, deadline - time.monotonic())
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()) and \
                    not self._selector.select(wait):
                break
            try:
                data = self.sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
                continue
            except OSError:
                break
            if not data:
                break
            self._traced_input(data)  # after a close nothing counts (§5.5.1); shown anyway
        self._end(ConnectionClosed(event.code, event.reason, by="server"))

    def _end(self, how: ConnectionClosed) -> None:
        """The connection is over: remember how, and close the socket."""
        if self._closed is None:
            self._closed = how
            self._close_sent = True
            self._selector.close()
            self.sock.close()

    # -- output ---------------------------------------------------------------------------

    def _send_close(self, code: int | None, reason: str = "", quiet: bool = False) -> None:
        try:
            self._send_frame(Opcode.CLOSE, encode_close(code, reason), closing=True)
        except ConnectionClosed:
            if not quiet:
                raise

    def _send_frame(self, opcode: Opcode, payload: bytes, fin: bool = True,
                    closing: bool = False, rsv1: bool = False) -> None:
        """Mask and send one frame. §5.3: a fresh key per frame, from a strong source of
        entropy, so a page's script cannot choose the bytes on the wire."""
        self._check_open()
        if self._close_sent and not closing:
            raise ConnectionClosed(CloseCode.NORMAL, "the client is closing", by="client")
        data = encode_frame(opcode, payload, fin, mask=os.urandom(4))
        if rsv1:
            data = bytes((data[0] | RSV1,)) + data[1:]
        with self._send_lock:
            if closing:
                self._close_sent = True
            if self._trace is not None:
                self._emit(self._trace.client_bytes(data))
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._end(ConnectionClosed(CloseCode.ABNORMAL, f"{exc.strerror or exc}"))
                self._check_open()

    # -- trace ----------------------------------------------------------------------------

    def _traced_input(self, data: bytes) -> None:
        if self._trace is not None:
            self._emit(self._trace.server_bytes(data))

    def _emit(self, blocks: list[str]) -> None:
        if self._on_trace is not None:
            for block in blocks:
                self._on_trace(block)


def connect(url: str, *, origin: str | None = None, subprotocols: Sequence[str] = (),
            headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0,
            ssl_context: ssl.SSLContext | None = None, extensions: Sequence[str] = (),
            max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
            trace: Callable[[str], object] | None = None,
            trace_limit: int = DEFAULT_LIMIT, compression: bool = False) -> Connection:
    """Open a WebSocket connection: TCP (and TLS for wss://), then the opening handshake.

    Args:
        url: ws://host[:port]/path?query or wss://...
        origin: sent as the Origin header (a server may refuse some, as `--allow-origin`).
        subprotocols: offered in Sec-WebSocket-Protocol; `Connection.subprotocol` is the
            server's choice.
        headers: more (name, value) header fields for the request (cookies, tokens).
        timeout: seconds for connecting, the handshake, and each later send.
        ssl_context: for wss://; default `ssl.create_default_context()` (the system's
            CAs). Pass one with your own CA for a self-signed test certificate.
        extensions: offered in Sec-WebSocket-Extensions, as given (not interpreted).
        compression: offer permessage-deflate (RFC 7692) and use it if the server agrees
            (`Connection.deflate` says what was agreed).
        max_message_size: larger messages from the server fail the connection (1009).
        trace: called with each block of the wire trace (`websocket.trace`) when given.
        trace_limit: payload bytes shown per frame in the trace.

    Raises:
        ValueError: a bad URL or header.
        OSError: the connection could not be made (refused, DNS, TLS certificate...).
        HandshakeFailed: the server refused the upgrade or answered it wrongly.
    """
    target = parse_url(url)
    if compression:
        extensions = (*extensions, OFFER)
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    try:
        tracer = ConnectionTrace(f"{target.host_header}", trace_limit) if trace else None
        if target.secure:
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=target.host)
            if tracer is not None and trace is not None:
                cipher = sock.cipher()
                trace(tracer.tls(sock.version() or "TLS", cipher[0] if cipher else None))
        # §4.1: "a nonce consisting of a randomly selected 16-byte value ... base64-encoded"
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = build_request(target, key, origin=origin, subprotocols=subprotocols,
                                extensions=extensions, headers=headers)
        if tracer is not None and trace is not None:
            for block in tracer.client_bytes(request):
                trace(block)
        sock.sendall(request)
        head, rest = _read_head(sock, tracer, trace)
        response = parse_response(head)
        if response.status != 101:
            body = _read_body(sock, response, rest)
            detail = f": {body}" if body else ""
            raise HandshakeFailed(f"server refused the handshake: HTTP {response.status} "
                                  f"{response.reason}{detail}", response.status)
        subprotocol, accepted = check_response(response, key, subprotocols, extensions)
        agreement = None
        for item in accepted:
            if compression and item.split(";")[0].strip().lower() == EXTENSION_NAME:
                agreement = agree(item)
    except BaseException:
        sock.close()
        raise
    return Connection(sock, subprotocol=subprotocol, extensions=accepted, received=rest,
                      max_message_size=max_message_size, close_timeout=timeout,
                      trace=tracer, on_trace=trace, deflate=agreement)


def _read_head(sock: socket.socket, tracer: ConnectionTrace | None,
               trace: Callable[[str], object] | None) -> tuple[bytes, bytes]:
    """Read up to the response's empty line: (head, the bytes after it)."""
    buf = bytearray()
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            return bytes(buf[:end + 4]), bytes(buf[end + 4:])
        if len(buf) > MAX_RESPONSE_HEAD:
            raise HandshakeFailed(f"no end of the response head within {MAX_RESPONSE_HEAD} "
                                  "bytes")
        data = sock.recv(65536)
        if not data:
            raise HandshakeFailed("the server closed the connection before answering")
        if tracer is not None and trace is not None:
            for block in tracer.server_bytes(data):
                trace(block)
        buf += data


def _read_body(sock: socket.socket, response: Response, received: bytes) -> str:
    """The first line of a refusal's body (the server says why there), if it comes soon."""
    length = response.header("Content-Length")
    want = min(int(length), 4096) if length and length.isdigit() else 0
    body = bytearray(received)
    try:
        while len(body) < want:
            data = sock.recv(want - len(body))
            if not data:
                break
            body += data
    except OSError:
        pass
    return body[:want].decode("utf-8", "replace").strip().split("\n")[0]

