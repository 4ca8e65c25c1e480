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
    keepalive, the message and idle timeouts.

`Server` is one class in four modules, each read on its own: this one (start, stop, the
connections' events, messages, closing), handshaking.py's `Handshakes` (the opening
handshake and the page), sweeps.py's `Timers` (deadlines, keepalive, idle users, --reload)
and api.py's `CallbackAPI` (what callbacks call: send, broadcast, timers...).
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

from .. import limits
from ..errors import HttpError, InternalError, ProtocolError
from ..net.connect import client_context
from ..net.connection import Connection
from ..net.listener import FD_SETSIZE, Listener, ListenError, raise_fd_limit
from ..net.loop import Loop
from ..net.ratelog import RateLimitedLog
from ..net.tls import TlsAcceptor, TlsConfigError, TlsConnection
from ..observe.metrics import ServerMetrics
from ..observe.tap import Tracer
from ..observe.trace import DEFAULT_LIMIT as DEFAULT_TRACE_BYTES
from ..observe.wire import WireHub, parse_networks
from ..protocol import handshake, legacy
from ..protocol.deflate import Agreed, DeflatePolicy
from ..protocol.frames import CloseCode, Opcode, describe_close_code, encode_close
from ..protocol.messages import Close, Event, InputBudget, Message, Ping, Pong, Receiver
from ..protocol.redis_entries import RedisURLError, parse_redis_url
from ..scale.redis_link import RedisLink
from .callbacks import Callbacks, ScriptTimers, ScriptWatcher, load
from .delivery import Delivery
from .handshakes import Handshakes
from .history import History
from .keepalive import HOLD_HTTP
from .rooms import Rooms
from .user import User, UserState

log = logging.getLogger("websocket")

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
TOO_SLOW = CloseCode.POLICY_VIOLATION  # for a user whose unsent output exceeds max_buffer

class ServerError(Exception):
    """The server cannot start (address in use, bad address...); one line for the CLI."""


class Server(Handshakes):
    """A WebSocket chat server: `Server(address, port).serve_forever()`.

    Methods for callbacks: `get_users(room=None)`, `send(user, message)`,
    `broadcast(message, exclude=None, room=None)`, `join(user, room)`, `rooms()`,
    `disconnect(user, code=1000, reason="")`, `log(...)`,
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
        self.reuse_port: bool = settings["reuse_port"]
        self.loop = Loop(selector)
        # Warnings anybody can cause once per connection: ten of a kind, then a count (ratelog.py).
        self.warnings = RateLimitedLog(log, self.loop)
        self.delivery = Delivery(self.loop, self.max_buffer, self._overflow, self.deflate)
        self.loop.before_sleep(self.delivery.release)
        self.listener: Listener | None = None
        # TLS (tls.py): with a context, every connection is https:// or wss://.
        self.ssl_context = ssl_context
        self.secure = ssl_context is not None
        self._tls: TlsAcceptor | None = None
        self._users: dict[int, User] = {}  # every connection's user, by id
        self._open: dict[int, User] = {}  # WebSocket users (state OPEN), in order of arrival
        link: RedisLink | None = None  # --redis: the other processes (redis_link.py)
        if settings["redis"]:
            try:
                redis_address = parse_redis_url(settings["redis"])
            except RedisURLError as exc:
                raise ServerError(f"--redis: {exc}") from None
            try:  # rediss://: the certificate is checked (the system's CAs or --redis-cafile)
                redis_tls = (client_context(settings["redis_cafile"])
                             if redis_address.tls else None)
            except TlsConfigError as exc:
                raise ServerError(f"--redis-cafile: {exc}") from None
            link = RedisLink(self.loop, redis_address, settings["redis_prefix"],
                             max_backlog=self.max_buffer, tls_context=redis_tls,
                             max_message_size=self.max_message_size)
        history = (History(settings["history"], settings["history_idle"])
                   if settings["history"] else None)
        self._rooms = Rooms(self.delivery, self.loop, history, link)  # rooms.py
        self._next_id = 1
        self._stopping = False
        self._stop_deadline = 0.0
        self._debug = self._trace = False
        # --reload: poll the script's file every `reload` seconds (0: never). The timers a
        # script starts are kept here, to be cancelled when a new version takes over.
        self.reload_interval = reload if self.callbacks.source is not None else 0.0
        self._script_timers = ScriptTimers()
        # --trace, --trace-page (wiretap.py, wire.py): None, and no tap anywhere, when off
        # (and, with --trace-page alone, while no viewer watches).
        self.wire: WireHub | None = None
        self.tracer: Tracer | None = None
        if trace or trace_page:
            self.tracer = Tracer(trace_bytes, to_log=trace,
                                 users=lambda: self._users.values(), loop=self.loop)
        if trace_page:
            assert self.tracer is not None
            self.wire = self.tracer.publisher = WireHub(
                self.max_buffer, self.close_timeout, parse_networks(trace_page_from),
                on_viewers=self.tracer.viewers_changed)

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
                                    self._accept, self.warnings)
            on_accept = self._tls.accept
        try:
            self.listener = Listener(self.loop, self.address, self.port, on_accept,
                                     FD_SETSIZE - 1 if self.use_select else None, refusal,
                                     self.reuse_port)
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
        self._rooms.start()
        try:
            self.loop.run(until=lambda: self._stopping and (
                not self._users or time.monotonic() >= self._stop_deadline))
        finally:
            for handle in (sweep, watcher, idle_sweep):
                if handle is not None:
                    handle.cancel()
            self._rooms.close()
            for user in list(self._users.values()):
                user.conn.close("server stopped")
            if self.wire is not None:
                self.wire.close_all()
            if self.listener is not None:
                self.listener.close()
            if self._tls is not None:
                self._tls.close_all()
            self.loop.remove_signal_handlers()
            self.warnings.flush()
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
            conn = TlsConnection(self.loop, sock, self, self.metrics, self.warnings)
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
        self._rooms.flushed(conn)  # a history replay waiting for it goes on (replay.py)

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

    # -- messages ------------------------------------------------------------------------

    def _receive(self, user: User, payload: tuple[bytearray, int] | None = None) -> None:
        """Frames to events to actions (the article's `process` call, and more).

        One turn: frames are parsed FRAMES_PER_BATCH at a time, and their events handled,
        until the input runs out, the user's input goes on hold, or the turn's share is
        spent (FRAMES_PER_TURN, DELIVERIES_PER_TURN: limits.py; smaller shares when the
        user is traced, since the trace's cost counts in: `Tracer.turn_share`); the rest
        waits for the next pass.
        `payload`: the connection read that many bytes of the current frame's payload
        straight into its scratch buffer (`Connection.direct`), to be taken first.
        """
        receiver = user.receiver
        assert receiver is not None
        conn = user.conn
        delivery = self.delivery
        batch = limits.FRAMES_PER_BATCH
        last_frame = receiver.frames + limits.FRAMES_PER_TURN
        last_delivery = delivery.deliveries + limits.DELIVERIES_PER_TURN
        if conn.tap is not None and self.tracer is not None:  # its trace's cost counts in
            frames, deliveries, batch = self.tracer.turn_share
            last_frame = receiver.frames + frames
            last_delivery = delivery.deliveries + deliveries
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
                    receiver.receive(conn.inbuf, events, batch)
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
            if receiver.frames - before < batch or not conn.inbuf or conn.hold:
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
            self.warnings.warning(f"HTTP {error.status}", "user %d (%s): HTTP %d: %s", user.id,
                                  user.peer, error.status, error.reason)
            self.delivery.queue(conn, handshake.error_response(error, head_only), in_chat=False)
            conn.close_after_flush(self.handshake_timeout)
            return
        code = error.code
        self.warnings.warning(f"close {code}", "user %d (%s): closing with %d (%s): %s",
                              user.id, user.peer, code, describe_close_code(code),
                              error.reason)
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
            self._rooms.leave(user)
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
