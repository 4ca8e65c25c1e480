"""The chat server: the article's `WebSocket` class, on the loop, made right.

The article's one class did everything. Here the loop (loop.py) only waits and dispatches,
each socket's bytes and queue are a Connection's (connection.py), the master socket is a
Listener (listener.py) and the queues' fairness is Delivery's (delivery.py). What is left is
the chat's own work, which this module does for every connection it owns:

    accept        -> a Connection and a User in the HANDSHAKE state
    data          -> handshake.parse_request (one request at a time) -> upgrade, or the page
    upgrade       -> a receiver (RFC 6455 or the 2010 drafts) for the bytes that follow
    events        -> process(user, message, server); pings answered; closes echoed
    send          -> frames queued on the user's connection, flushed before the loop sleeps
    errors        -> `_fail`, the one place a protocol error becomes a close code or an
                     HTTP status; only that user is dropped
    keepalive, the message and idle timeouts. The API that callbacks use (send,
    broadcast, timers...) is api.py's `CallbackAPI`, which `Server` inherits.
"""
from __future__ import annotations

import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import access, handshake, legacy, limits, ops
from .api import CallbackAPI
from .callbacks import Callbacks, ScriptTimers, ScriptWatcher, load
from .connection import Connection
from .deflate import Agreed, DeflatePolicy
from .delivery import HOLD_THROTTLED, Delivery
from .errors import HttpError, InternalError, PolicyViolation, ProtocolError
from .frames import CloseCode, Opcode, describe_close_code, encode_close
from .http import serve
from .legacy import HixieReceiver
from .listener import FD_SETSIZE, Listener, ListenError, raise_fd_limit
from .loop import Loop
from .messages import Close, Event, InputBudget, Message, Ping, Pong, Receiver
from .metrics import ServerMetrics
from .tls import TlsAcceptor, TlsConnection
from .trace import DEFAULT_LIMIT as DEFAULT_TRACE_BYTES
from .user import User, UserState, format_peer
from .wire import WireHub, is_wire_request, page_request, parse_networks
from .wiretap import Tracer

log = logging.getLogger("websocket")

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"
TOO_SLOW = CloseCode.POLICY_VIOLATION  # for a user whose unsent output exceeds max_buffer
HOLD_HTTP = 4  # an HTTP answer is being sent: the next request waits for it (RFC 9112 §9.3)

_PROTOCOL_NAMES = {
    handshake.RFC6455: "RFC 6455",
    handshake.HIXIE76: "draft-76 (hixie-76)",
    handshake.HIXIE75: "draft-75 (hixie-75)",
}


class ServerError(Exception):
    """The server cannot start (address in use, bad address...); one line for the CLI."""


class Server(CallbackAPI):
    """A WebSocket chat server: `Server(address, port).serve_forever()`.

    Methods for callbacks: `get_users()`, `send(user, message)`,
    `broadcast(message, exclude=None)`, `disconnect(user, code=1000, reason="")`, `log(...)`,
    `call_later(seconds, function, *args)`, `call_every(seconds, function, *args)`.

    `ssl_context` (tls.load_context): every connection is TLS, https:// and wss://.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 8080,
                 callbacks: Callbacks | str | None = None, *,
                 selector: str = "default", client_dir: Path | str = CLIENT_DIR,
                 trace: bool = False, trace_bytes: int = DEFAULT_TRACE_BYTES,
                 trace_page: bool = False, trace_page_from: Iterable[str] = (),
                 reload: float = 0.0, ssl_context: ssl.SSLContext | None = None,
                 **options: Any) -> None:
        """`trace`: log every connection's bytes (--trace), `trace_bytes` payload bytes per
        frame; `trace_page`: serve /wire (--trace-page) to loopback and `trace_page_from`."""
        unknown = set(options) - set(limits.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        settings = {**limits.DEFAULTS, **options}
        self.address = address
        self.port = port
        self.callbacks = callbacks if isinstance(callbacks, Callbacks) else load(callbacks)
        self.max_message_size: int = settings["max_message_size"]
        self.max_request_size: int = settings["max_request_size"]
        self.handshake_timeout: float = settings["handshake_timeout"]
        self.close_timeout: float = settings["close_timeout"]
        self.ping_interval: float = settings["ping_interval"]
        self.message_timeout: float = settings["message_timeout"]
        self.max_connections: int = settings["max_connections"]
        self.max_buffer: int = settings["max_buffer"]
        self.input_budget = InputBudget(settings["max_input_memory"])
        origins = settings["allowed_origins"]
        self.allowed_origins: frozenset[str] | None = (
            None if origins is None else frozenset(o.lower().rstrip("/") for o in origins))
        paths = settings["paths"]
        self.paths: frozenset[str] | None = None if not paths else frozenset(paths)
        self.page_path = "/" if not paths else paths[0]  # where the page connects
        self.trust_proxy: bool = settings["trust_proxy"]
        self.idle_timeout: float = settings["idle_timeout"]
        self.metrics_enabled: bool = settings["metrics"]
        self.metrics = ServerMetrics()  # counted always (plain arithmetic), shown on request
        self.client_dir = Path(client_dir)
        self.use_select = selector == "select"
        # RFC 7692 permessage-deflate, unless --no-compression (docs/compression.md).
        self.deflate: DeflatePolicy | None = DeflatePolicy() if settings["compression"] else None
        self._agreements: dict[Agreed, Agreed] = {}  # one object per kind of agreement
        self.loop = Loop(selector)
        self.delivery = Delivery(self.loop, self.max_buffer, self._overflow, self.deflate)
        self.loop.before_sleep(self.delivery.release)
        self.listener: Listener | None = None
        # TLS (tls.py): with a context, every connection is https:// or wss://.
        self.ssl_context = ssl_context
        self.secure = ssl_context is not None
        self._tls: TlsAcceptor | None = None
        self._users: dict[int, User] = {}  # every connection's user, by id
        self._open: dict[int, User] = {}  # WebSocket users (state OPEN), in order of arrival
        self._next_id = 1
        self._stopping = False
        self._stop_deadline = 0.0
        self._debug = self._trace = False
        # --reload: poll the script's file every `reload` seconds (0: never). The timers a
        # script starts are kept here, to be cancelled when a new version takes over.
        self.reload_interval = reload if self.callbacks.source is not None else 0.0
        self._script_timers = ScriptTimers()
        # --trace, --trace-page (wiretap.py, wire.py): None, and no tap anywhere, when off.
        self.wire: WireHub | None = None
        self.tracer: Tracer | None = None
        if trace_page:
            self.wire = WireHub(self.max_buffer, self.close_timeout,
                                parse_networks(trace_page_from))
        if trace or trace_page:
            self.tracer = Tracer(trace_bytes, to_log=trace, publisher=self.wire)

    @property
    def selector_name(self) -> str:
        """The readiness API in use, e.g. 'EpollSelector' or 'SelectSelector'."""
        return self.loop.selector_name

    @property
    def master(self) -> socket.socket | None:
        """The listening socket (the article's master socket), while it listens."""
        return self.listener.sock if self.listener is not None else None

    @property
    def tls_handshake_failures(self) -> int:
        """TLS handshakes that failed or timed out, and plain HTTP sent to the TLS port."""
        return self._tls.failures if self._tls is not None else 0

    def _render_metrics(self) -> bytes:
        self.metrics.tls_handshake_failures = self.tls_handshake_failures
        return super()._render_metrics()

    # -- connectMaster and run -------------------------------------------------------------

    def listen(self) -> None:
        """Create, bind and register the non-blocking master socket (`connectMaster`)."""
        refusal = handshake.error_response(HttpError(
            503, "server full: select() cannot watch more connections"))
        on_accept: Callable[[socket.socket, Any], None] = self._accept
        if self.ssl_context is not None:
            self._tls = TlsAcceptor(self.loop, self.ssl_context, self.handshake_timeout,
                                    self._accept)
            on_accept = self._tls.accept
        try:
            self.listener = Listener(self.loop, self.address, self.port, on_accept,
                                     FD_SETSIZE - 1 if self.use_select else None, refusal)
        except ListenError as exc:
            raise ServerError(str(exc)) from None
        self.port = self.listener.port
        raise_fd_limit(self.max_connections, self.use_select)

    def serve_forever(self) -> None:
        """The loop (`run`): until Ctrl-C or SIGTERM, and then a graceful shutdown."""
        if self.listener is None:
            self.listen()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, self.stop)
        self._debug = self._trace = self.delivery.trace = log.isEnabledFor(logging.DEBUG)
        sweep = (self.loop.call_every(self.ping_interval / 2, self._sweep_silent_users)
                 if self.ping_interval > 0 else None)
        watcher = None
        if self.reload_interval > 0 and self.callbacks.source is not None:
            script = ScriptWatcher(self.callbacks.source)
            watcher = self.loop.call_every(self.reload_interval, self._reload, script)
        idle_sweep = (self.loop.call_every(limits.idle_sweep_interval(self.idle_timeout),
                                           self._sweep_idle_users)
                      if self.idle_timeout > 0 else None)
        if self.callbacks.on_start is not None:
            self._call(self.callbacks.on_start, self)
        try:
            self.loop.run(until=lambda: self._stopping and (
                not self._users or time.monotonic() >= self._stop_deadline))
        finally:
            for handle in (sweep, watcher, idle_sweep):
                if handle is not None:
                    handle.cancel()
            for user in list(self._users.values()):
                user.conn.close("server stopped")
            if self.wire is not None:
                self.wire.close_all()
            if self.listener is not None:
                self.listener.close()
            if self._tls is not None:
                self._tls.close_all()
            self.loop.remove_signal_handlers()
        log.info("Server stopped")

    def stop(self) -> None:
        """Begin a graceful shutdown: 1001 to every user, up to 2 s for their answers."""
        if self._stopping:
            self._stop_deadline = 0.0  # asked twice: stop now
            self.loop.stop()
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + limits.SHUTDOWN_TIMEOUT
        self.loop.call_at(self._stop_deadline, self.loop.stop)
        if self.listener is not None:
            self.listener.close()
        if self._tls is not None:
            self._tls.close_all()  # TLS handshakes in progress: no user yet
        log.info("Shutting down: closing %d user(s) with 1001 (going away)", len(self._open))
        if self.wire is not None:
            self.wire.stop()
        for user in list(self._users.values()):
            if user.state is UserState.OPEN:
                self._send_close(user, CloseCode.GOING_AWAY, "server shutting down")
            elif user.state is UserState.HANDSHAKE and not user.conn.outbuf:
                user.conn.close("server shutting down")

    # -- connect ---------------------------------------------------------------------------

    def _accept(self, sock: socket.socket, address: Any) -> None:
        """A new connection (the article's `connect`): a User in the HANDSHAKE state.
        With TLS, `sock` is an SSLSocket whose TLS handshake is done (tls.TlsAcceptor)."""
        conn: Connection
        if isinstance(sock, ssl.SSLSocket):
            conn = TlsConnection(self.loop, sock, self, self.metrics)
        else:
            conn = Connection(self.loop, sock, self, self.metrics)
        self.metrics.connections += 1
        user = conn.user = User(self._next_id, conn, address, self.loop.now,
                                self.loop.wall_now)
        self._next_id += 1
        self._users[user.id] = user
        conn.set_timer(self.handshake_timeout, self._deadline, user)
        if self._debug:
            log.debug("user %d (%s) connected", user.id, user.peer)

    # -- what the connections tell us (connection.Owner) ------------------------------------

    def data_received(self, conn: Connection) -> None:
        user: User = conn.user
        user.last_seen = self.loop.now
        user.pinged = False
        if user.state is UserState.HANDSHAKE:
            self._handshake(user)
        elif user.receiver is not None:
            self._receive(user)

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        user: User = conn.user
        user.last_seen = self.loop.now
        user.pinged = False
        if user.receiver is not None:
            self._receive(user, payload=(data, size))

    def flushed(self, conn: Connection) -> None:
        if conn.hold & HOLD_HTTP and not conn.outbuf:
            # The answer is out: the next request may come, within the keep-alive time.
            conn.notify = bool(conn.behind_since)
            conn.set_timer(self.handshake_timeout, self._deadline, conn.user)
            conn.release_input(HOLD_HTTP)
        self.delivery.flushed(conn)

    def connection_lost(self, conn: Connection, why: str) -> None:
        """Forget the user (the article's `disconnect`)."""
        user: User = conn.user
        was_websocket = user.protocol is not None and not user.left
        self._leave_open(user)
        self.delivery.forget(conn)
        self._users.pop(user.id, None)
        if user.message_timer is not None:
            user.message_timer.cancel()
        if user.receiver is not None:
            user.receiver.discard()  # its unfinished message no longer counts against anyone
        user.state = UserState.CLOSED
        if was_websocket:
            self._announce_left(user, why)
        elif self._debug:
            log.debug("user %d (%s) disconnected: %s", user.id, user.peer, why)

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        """A bug of ours while serving one user: log it, close that user with 1011 (§7.4.1)."""
        user: User = conn.user
        log.error("internal error while serving user %d (%s); closing it with 1011",
                  user.id, user.peer, exc_info=exc)
        try:
            if user.state is UserState.OPEN:
                self._fail(user, InternalError("internal server error"))
            else:
                conn.close("internal error")
        except Exception:
            log.exception("could not close user %d cleanly", user.id)
            conn.close("internal error")

    # -- handshakes and messages ----------------------------------------------------------

    def _handshake(self, user: User) -> None:
        """Parse requests as they complete (`doHandshake`): upgrade, or serve the page.

        One request at a time (RFC 9112 §9.3): the next is not even parsed until the
        answer to this one has been sent, so pipelined requests cannot pile up answers.
        """
        conn = user.conn
        while (user.state is UserState.HANDSHAKE and conn.inbuf and not conn.closing
               and not conn.hold):
            try:
                parsed = handshake.parse_request(conn.inbuf, self.max_request_size)
            except HttpError as exc:
                self._fail(user, exc)
                return
            if parsed is None:
                return
            request, consumed = parsed
            if self.tracer is not None and conn.tap is None and not self._is_wire(request):
                self.tracer.attach(user)  # from the first byte, this request included
            del conn.inbuf[:consumed]
            if self.trust_proxy:
                self._take_proxy_address(user, request)
            try:
                if request.is_upgrade:
                    self._upgrade(user, request)
                else:
                    self._serve_http(user, request)
            except HttpError as exc:
                self._fail(user, exc, head_only=request.method == "HEAD")
                return
        if user.state is UserState.OPEN and conn.inbuf:
            self._receive(user)  # frames that came in the same packet as the request

    def _take_proxy_address(self, user: User, request: handshake.Request) -> None:
        """--trust-proxy: the client's address as the nearest proxy reports it (proxy.py),
        for the log and `user.address`; the socket's stays in `user.via`."""
        address, present = access.client_address(request.headers)
        if user.via is None:
            user.via = user.address
        if address is not None:
            user.address = address
        else:
            user.address = user.via
            if present:
                log.info("user %d (%s): unusable Forwarded / X-Forwarded-For header; using "
                         "the socket's address", user.id, user.peer)

    def _upgrade(self, user: User, request: handshake.Request) -> None:
        wire = self._is_wire(request)  # /wire is not a chat path: --path does not apply
        if not wire:
            access.check_path(request.target, self.paths)  # --path: 404 elsewhere
        upgrade = handshake.upgrade(request, secure=self.secure,
                                    allowed_origins=self.allowed_origins,
                                    subprotocols=self.callbacks.subprotocols,
                                    deflate=None if wire else self.deflate)
        if wire:
            self._watch_wire(user, upgrade)
            return
        if len(self._open) >= self.max_connections:
            raise HttpError(503, f"server full ({self.max_connections} users)")
        if self.callbacks.on_request is not None:
            self._check_request(user, request, upgrade)
        user.protocol = upgrade.protocol
        user.resource = upgrade.resource
        user.host = upgrade.host
        user.origin = upgrade.origin
        user.subprotocol = upgrade.subprotocol
        user.headers = request.headers
        receiver: Receiver | HixieReceiver
        agreed = upgrade.deflate
        if agreed is not None:
            agreed = self._agreements.setdefault(agreed, agreed)
            if self._debug:
                log.debug("user %d: permessage-deflate agreed: %s", user.id, agreed.response)
        if upgrade.protocol == handshake.RFC6455:
            receiver = Receiver(self.max_message_size, budget=self.input_budget,
                                deflate=agreed)
            if self._trace:
                rfc_receiver = receiver
                receiver.on_frame = lambda opcode, fin, length: log.debug(
                    "user %d < %s%s%s %d bytes", user.id, opcode.name,
                    " (compressed)" if rfc_receiver.frame_compressed else "",
                    "" if fin else " (more)", length)
        else:
            receiver = HixieReceiver(self.max_message_size, budget=self.input_budget)
            if self._trace:
                receiver.on_frame = lambda kind, length: log.debug(
                    "user %d < hixie frame %#04x %d bytes", user.id, kind, length)
        user.receiver = receiver
        user.state = UserState.OPEN
        user.conn.cancel_timer()
        user.last_action = time.monotonic()
        self._open[user.id] = user
        self.metrics.users_open[upgrade.protocol] += 1
        self.delivery.queue(user.conn, upgrade.response, in_chat=False)
        self.delivery.join(user.conn, rfc6455=upgrade.protocol == handshake.RFC6455,
                           deflate=agreed)
        via = "" if user.via is None else f" via {format_peer(user.via)}"
        log.info("user %d (%s%s) joined: %s, resource %s, origin %s", user.id, user.peer, via,
                 _PROTOCOL_NAMES[upgrade.protocol], user.resource, user.origin or "-")
        hook = self.callbacks.on_connect
        if hook is not None:
            self._call(hook, user, self)

    def _is_wire(self, request: handshake.Request) -> bool:
        """A request for the /wire page or its stream, with --trace-page on."""
        return self.wire is not None and is_wire_request(request)

    def _watch_wire(self, user: User, upgrade: handshake.Upgrade) -> None:
        """The /wire stream: the connection becomes a viewer's (wire.py), not a user's."""
        assert self.wire is not None
        self.wire.check_viewer(upgrade, user.address)  # raises HttpError (403...)
        self._users.pop(user.id, None)
        self.delivery.forget(user.conn)
        user.state = UserState.OPEN
        self.wire.adopt(user.conn, upgrade.response, user.peer)

    def _check_request(self, user: User, request: handshake.Request,
                       upgrade: handshake.Upgrade) -> None:
        """The script's on_request(request, server), before the 101 (access.ask)."""
        assert self.callbacks.on_request is not None
        seen = access.UpgradeRequest.from_request(request.target, request.headers,
                                                  user.address, upgrade.origin, upgrade.host)
        started = time.perf_counter()
        refusal, failure = access.ask(self.callbacks.on_request, seen, self)
        self.metrics.callback_seconds += time.perf_counter() - started
        if isinstance(failure, BaseException):
            log.error("user %d (%s): on_request() raised; refusing with 500", user.id,
                      user.peer, exc_info=failure)
        elif failure is not None:
            log.error("user %d (%s): %s; refusing with 500", user.id, user.peer, failure)
        if refusal is not None:
            raise refusal

    def _serve_http(self, user: User, request: handshake.Request) -> None:
        response = ops.answer(request, self._render_metrics if self.metrics_enabled else None)
        if response is None and is_wire_request(request):
            # The /wire page's files: with --trace-page only, to those who may watch, and
            # from client/ whatever the script's PAGES.
            response = serve(page_request(self.wire, request, user.address), self.client_dir)
        if response is None:
            response = serve(request, self.callbacks.pages or self.client_dir, self.page_path)
        if self._debug:
            log.debug("user %d (%s): %s %s -> %d", user.id, user.peer, request.method,
                      request.target, response.status)
        conn = user.conn
        self.delivery.queue(conn, response.data, in_chat=False)
        if response.keep_alive:
            # Until the answer is sent (see `flushed`); a client that leaves it unread that
            # long is closed.
            conn.set_timer(self.handshake_timeout, self._deadline, user)
            conn.notify = True
            conn.hold_input(HOLD_HTTP)
        else:
            conn.close_after_flush(self.handshake_timeout)

    def _receive(self, user: User, payload: tuple[bytearray, int] | None = None) -> None:
        """Frames to events to actions (the article's `process` call, and more).

        One turn: frames are parsed FRAMES_PER_BATCH at a time, and their events handled,
        until the input runs out, the user's input goes on hold, or the turn's share is
        spent (FRAMES_PER_TURN, DELIVERIES_PER_TURN: limits.py); the rest waits for the
        next pass.
        `payload`: the connection read that many bytes of the current frame's payload
        straight into its scratch buffer (`Connection.direct`), to be taken first.
        """
        receiver = user.receiver
        assert receiver is not None
        conn = user.conn
        delivery = self.delivery
        last_frame = receiver.frames + limits.FRAMES_PER_TURN
        last_delivery = delivery.deliveries + limits.DELIVERIES_PER_TURN
        while True:
            events: list[Event] = []
            error: ProtocolError | None = None
            before = receiver.frames
            try:
                if payload is not None:  # (only RFC 6455 frames announce their length)
                    assert isinstance(receiver, Receiver)
                    receiver.receive_payload(payload[0], payload[1], events)
                    payload = None
                else:
                    receiver.receive(conn.inbuf, events, limits.FRAMES_PER_BATCH)
            except ProtocolError as exc:
                error = exc
            delivery.throttle = False
            for event in events:
                if type(event) is Message and user.state is UserState.OPEN:
                    # The article's process($user, $msg, $server): the common case, inline.
                    user.last_action = self.loop.now
                    self.metrics.messages_received += 1
                    if self._debug:
                        self._log_message(user, event.data)
                    self._call(self.callbacks.process, user, event.data, self)
                else:
                    self._dispatch(user, event)
                if user.state is UserState.CLOSED:
                    return
            if error is not None:
                self._fail(user, error)
                return
            if delivery.throttle and user.state is UserState.OPEN:
                delivery.hold_sender(conn)  # its messages reached someone who is behind
            if receiver.frames - before < limits.FRAMES_PER_BATCH or not conn.inbuf or conn.hold:
                break  # all of the input is handled (what is left is not a whole frame)
            if receiver.frames >= last_frame or delivery.deliveries >= last_delivery:
                conn.defer()  # the rest in the next pass, after everybody else
                break
        if receiver.remaining > limits.READ_SIZE and not conn.inbuf:
            # Nothing but the current frame's payload comes next: let the connection read
            # up to its end straight into its scratch buffer (see Receiver.receive_payload).
            conn.direct = min(receiver.remaining, limits.DIRECT_READ_SIZE)
        if receiver.in_message and receiver.message_serial != user.message_serial:
            # A message has begun: time it, with one timer per user at most (see
            # _message_expired), however many messages come and go.
            user.message_serial = receiver.message_serial
            user.message_started = self.loop.now
            if user.message_timer is None:
                user.message_timer = self.loop.call_at(
                    self.loop.now + self.message_timeout, self._message_expired, user)

    def _dispatch(self, user: User, event: Event) -> None:
        if isinstance(event, Message):
            pass  # data after our close frame: discarded (RFC 6455 §7.1.2 closing state)
        elif isinstance(event, Ping):
            # RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
            # frame in response ... the Application data of the Ping".
            if user.state is UserState.OPEN:
                self._queue_frame(user, Opcode.PONG, event.payload)
        elif isinstance(event, Pong):
            pass  # §5.5.3: an unsolicited Pong needs no answer
        elif isinstance(event, Close):
            self._on_close(user, event)

    def _log_message(self, user: User, data: str | bytes) -> None:
        if isinstance(data, str):
            shown = data if len(data) <= 200 else data[:200] + "..."
            log.debug("user %d says %r", user.id, shown)
        else:
            log.debug("user %d sent %d binary bytes", user.id, len(data))

    # -- closing ---------------------------------------------------------------------------

    def _on_close(self, user: User, event: Close) -> None:
        """The peer's close frame (RFC 6455 §5.5.1, §7.1.2; draft-76 0xFF 0x00)."""
        if user.close_code is None:
            user.close_code, user.close_reason = event.code, event.reason
        if user.state is UserState.CLOSING:
            # The answer to our close: the closing handshake is complete and, §7.1.1, "the
            # server SHOULD close the underlying TCP connection" first.
            user.conn.close("closing handshake complete")
            return
        # The peer started it: "the endpoint MUST send a Close frame in response ...
        # typically echoing the status code it received" (§5.5.1).
        self._queue_close(user, None if event.code == CloseCode.NO_STATUS else event.code)
        # Both close frames are exchanged: the user has left the chat. The socket lingers
        # until our answer is flushed and the peer's EOF arrives.
        user.conn.close_after_flush(self.close_timeout)
        self._announce_left(user, "closing handshake complete")

    def _send_close(self, user: User, code: int, reason: str) -> None:
        """Start the closing handshake ourselves and wait for the peer's answer (§7.1.2)."""
        if user.state is not UserState.OPEN:
            return
        user.close_code, user.close_reason = code, reason
        self._queue_close(user, code, reason)
        user.conn.set_timer(self.close_timeout, self._deadline, user)

    def _queue_close(self, user: User, code: int | None, reason: str = "") -> None:
        """Take the user out of the chat and queue our close frame in its protocol: RFC 6455
        §5.5.1 (a code, or none), or draft-76's 0xFF 0x00. The caller decides what follows."""
        self._leave_open(user)
        user.state = UserState.CLOSING
        if user.protocol == handshake.RFC6455:
            self._queue_frame(user, Opcode.CLOSE, encode_close(code, reason))
        else:
            self.delivery.queue(user.conn, legacy.CLOSE_FRAME, in_chat=False)

    def _fail(self, user: User, error: HttpError | ProtocolError, head_only: bool = False) -> None:
        """The one place where bad input becomes an answer: a close code or an HTTP status.

        RFC 6455 §7.1.7 "Fail the WebSocket Connection": send a close frame with the code,
        stop reading frames, and close the connection. Hixie users get 0xFF 0x00. Requests
        get the HTTP status with a one-line reason. Only this user is affected.
        """
        conn = user.conn
        if self.tracer is not None and conn.tap is None and user.state is UserState.HANDSHAKE:
            self.tracer.attach(user)  # a request that never parsed: show what came
        conn.inbuf.clear()
        if isinstance(error, HttpError):
            self.metrics.refused[error.status] += 1
            log.warning("user %d (%s): HTTP %d: %s", user.id, user.peer, error.status,
                        error.reason)
            self.delivery.queue(conn, handshake.error_response(error, head_only), in_chat=False)
            conn.close_after_flush(self.handshake_timeout)
            return
        code = error.code
        log.warning("user %d (%s): closing with %d (%s): %s", user.id, user.peer, code,
                    describe_close_code(code), error.reason)
        user.close_code, user.close_reason = code, error.reason
        if user.receiver is not None:
            user.receiver.discard()
        user.receiver = None
        if user.state is UserState.OPEN:
            self._queue_close(user, code, error.reason)
        user.state = UserState.CLOSING
        conn.close_after_flush(self.close_timeout)

    def _leave_open(self, user: User) -> None:
        """The user no longer takes part in the chat (its socket may still be flushing)."""
        if self._open.pop(user.id, None) is not None:
            self.delivery.leave(user.conn)
            self.metrics.users_open[user.protocol or ""] -= 1

    def _announce_left(self, user: User, why: str) -> None:
        """Log a WebSocket user's departure with its close code, and call on_disconnect once."""
        if user.left:
            return
        user.left = True
        self.metrics.closes[int(CloseCode.ABNORMAL if user.close_code is None
                                else user.close_code)] += 1
        if user.close_code is None:
            code_text = "1006 (abnormal: no close frame)"
        else:
            code_text = f"{user.close_code} ({describe_close_code(user.close_code)})"
            if user.close_reason:
                code_text += f" {user.close_reason!r}"
        log.info("user %d (%s) left: %s%s", user.id, user.peer, code_text,
                 f"; {why}" if why else "")
        hook = self.callbacks.on_disconnect
        if hook is not None:
            self._call(hook, user, self)

    def _overflow(self, conn: Connection) -> None:
        """A user that does not read while others talk: drop its backlog, and then it."""
        user: User = conn.user
        unsent = conn.drop_output()
        self.metrics.slow_users_dropped += 1
        log.warning("user %d (%s) is not reading: %d bytes unsent (limit %d); disconnecting",
                    user.id, user.peer, unsent, self.max_buffer)
        self._send_close(user, TOO_SLOW, "too slow: output buffer full")
        conn.close_after_flush(self.close_timeout)

    def _queue_frame(self, user: User, opcode: Opcode, payload: bytes) -> None:
        self.delivery.queue_frame(user.conn, opcode, payload, user.state is UserState.OPEN)

    # -- timers ------------------------------------------------------------------------------

    def _deadline(self, user: User) -> None:
        """The user's connection timer is due (handshake, keep-alive, or close answer)."""
        conn = user.conn
        conn.timer = None
        if user.state is UserState.HANDSHAKE:
            if conn.hold & HOLD_HTTP:
                # Our answer has waited that long for the client to read it.
                conn.close("did not read our answer in time")
            elif conn.inbuf:
                self._fail(user, HttpError(408, f"request not complete within "
                                                f"{self.handshake_timeout:g} s"))
            else:
                conn.close("idle")
        elif user.state is UserState.CLOSING:
            if user.close_code is not None and user.close_reason:
                user.close_reason += " (no answer to our close)"
            conn.close("no close frame in answer to ours")

    def _message_expired(self, user: User) -> None:
        """--message-timeout: the user's timer is due. Fail a message begun that long ago
        and still unfinished (1008); for a later one, check again when its time is up."""
        user.message_timer = None
        receiver = user.receiver
        if (user.state is not UserState.OPEN or receiver is None or not receiver.in_message
                or receiver.closed or receiver.message_serial != user.message_serial):
            return  # no message in progress (a new one starts the timer again)
        due = user.message_started + self.message_timeout
        if due > time.monotonic():
            user.message_timer = self.loop.call_at(due, self._message_expired, user)
            return
        self._fail(user, PolicyViolation(
            f"message not finished within {self.message_timeout:g} s"))

    def _reload(self, script: ScriptWatcher) -> None:
        """--reload: if the script's file changed, load it and let it take over. Users stay
        connected (their `data` too); the old script's timers are cancelled and the new
        `on_start` is called. A version that fails to load leaves the old one running."""
        fresh = script.reload()
        if fresh is None:
            return  # unchanged, or failed to load (logged)
        self._script_timers.cancel_all()
        self.callbacks = fresh
        log.info("reloaded %s; %d user(s) stay connected", fresh.name, len(self._open))
        if fresh.on_start is not None:
            self._call(fresh.on_start, self)

    def _sweep_idle_users(self) -> None:
        """--idle-timeout: close (1000) users that sent no message for that long. One pass
        over the users every idle_sweep_interval(); a message costs nothing (it only sets
        `last_action`, as it always did). A user whose input we hold is not idle."""
        now = time.monotonic()
        limit = self.idle_timeout
        for user in list(self._open.values()):
            if now - user.last_action >= limit and not user.conn.hold:
                log.info("user %d (%s): no message for %g s; closing it", user.id, user.peer,
                         limit)
                # RFC 6455 §7.4.1: 1000 "the purpose for which the connection was
                # established has been fulfilled" (it is not an error of the peer's).
                self._send_close(user, CloseCode.NORMAL, f"idle for {limit:g} s")

    def _sweep_silent_users(self) -> None:
        """Keepalive (RFC 6455 §5.5.2): ping users silent for `ping_interval`, drop them
        (1011) when still silent after twice that. A peer that vanished without a FIN (a
        pulled cable, a sleeping laptop) is found this way instead of holding its slot.
        Draft-75/76 have no ping: their users are left alone.
        """
        now = time.monotonic()
        for user in list(self._open.values()):
            if user.protocol != handshake.RFC6455 or user.conn.hold & HOLD_THROTTLED:
                continue  # no pings in the drafts; a held user's silence is ours
            silent = now - user.last_seen
            if silent >= 2 * self.ping_interval:
                self._fail(user, InternalError(
                    f"no answer to a ping for {silent:.0f} s (keepalive timeout)"))
            elif silent >= self.ping_interval and not user.pinged:
                user.pinged = True
                self._queue_frame(user, Opcode.PING, b"keepalive")
