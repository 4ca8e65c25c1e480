"""The loop: one master socket, one selector, every user's socket, and nothing else.

This is the article's `WebSocket` class (connectMaster, run, connect, disconnect,
doHandshake, send) made non-blocking and complete. It owns sockets, buffers and timers; the
protocol work is done by the sans-I/O modules, which it feeds with bytes:

    accept        -> a User in the HANDSHAKE state, registered for reading
    readable      -> recv into user.inbuf -> handshake.parse_request / receiver.receive
    events        -> process(user, message, server); pings answered; closes echoed
    send          -> frames queued on user.outbuf; flushed once per loop pass, and the
                     socket watched for writing only while something is left over
    errors        -> `_fail`, the one place a protocol error becomes a close code or an
                     HTTP status; only that user is dropped
    timers        -> handshake, closing and linger deadlines, in a heap

No threads. A slow client never blocks anybody: its frames wait in its own buffer, up to
`max_buffer` bytes, and then it alone is disconnected.
"""
from __future__ import annotations

import errno
import heapq
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import handshake, legacy
from .callbacks import Callbacks, load
from .errors import HttpError, InternalError, PolicyViolation, ProtocolError
from .frames import CloseCode, Opcode, describe_close_code, encode_close, frame_parts
from .http import serve
from .legacy import HixieReceiver
from .messages import (
    DEFAULT_MAX_INPUT_MEMORY,
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Event,
    InputBudget,
    Message,
    Ping,
    Pong,
    Receiver,
)
from .user import User, UserState

log = logging.getLogger("websocket")

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"
# Fair shares of one loop pass. Reading at most READ_SIZE bytes from a user, and parsing at
# most FRAMES_PER_TURN of its frames and queueing at most DELIVERIES_PER_TURN frames because
# of them, before the loop serves anybody else, bounds what one flood can cost everyone (a
# few milliseconds a pass): its next bytes wait in the kernel, not in us.
READ_SIZE = 64 * 1024
# ... except while a large frame's payload streams in: that is unmasked at C speed (~1 ms a
# MiB) straight into the message, never left over, so it is read in pieces this large.
PAYLOAD_READ_SIZE = 1024 * 1024
FRAMES_PER_BATCH = 64  # frames parsed at a time, their events handled before the next ones
FRAMES_PER_TURN = 1024  # ~3 ms of the tiniest frames
DELIVERIES_PER_TURN = 65536  # frames queued to users (fan-out), ~16 ms
ACCEPTS_PER_PASS = 64  # accept() at most this many connections per readiness event
MAX_IOVECS = 512  # frames handed to one sendmsg(); below every system's IOV_MAX
FD_SETSIZE = 1024  # select.select() cannot watch a descriptor at or above this
# What one queued frame costs beyond its bytes: a list slot and a bytes object's header
# (sys.getsizeof(b"") is 33), rounded up. The backlog limits count this, so a million
# two-byte pongs weigh what they really take, not 2 MB.
FRAME_COST = 48
DEFAULTS: dict[str, Any] = {
    "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,  # bytes per message (RFC 6455 and hixie)
    "max_request_size": handshake.MAX_REQUEST_SIZE,  # bytes of HTTP request head
    "handshake_timeout": 10.0,  # seconds to send a complete request (and between requests)
    "close_timeout": 5.0,  # seconds a user has to answer our close frame
    "ping_interval": 30.0,  # a silent user is pinged after this long, dropped after twice; 0: off
    "message_timeout": 60.0,  # seconds to finish a message once its first frame has begun
    "max_connections": 10_000,  # WebSocket users at once; beyond it, HTTP 503
    "max_buffer": 4 << 20,  # bytes of unsent output per user before it is dropped
    "max_input_memory": DEFAULT_MAX_INPUT_MEMORY,  # bytes of unfinished messages, all users
    "allowed_origins": None,  # pages (origins) whose users may join; None: any, as the article
}
LINGER_TIMEOUT = 2.0  # after our last bytes and a half-close, wait this long for the peer's EOF
SHUTDOWN_TIMEOUT = 2.0  # on Ctrl-C, how long users get to answer the 1001 close
TOO_SLOW = CloseCode.POLICY_VIOLATION  # for a user whose unsent output exceeds max_buffer
# Fair delivery. A user whose backlog passes a quarter of max_buffer is "behind": its own
# input waits, and so does the input of every user whose messages reach it, until it is
# back under an eighth. It holds the others back only while it keeps up: the kernel took
# some of its bytes in the last STALL_TIMEOUT seconds, and it has been behind for at most
# BEHIND_TIMEOUT seconds. One that does not keep up is left behind, and dropped (1008) once
# its backlog passes max_buffer.
STALL_TIMEOUT = 0.5
BEHIND_TIMEOUT = 1.0
THROTTLE_RECHECK = 0.05  # seconds between checks while users wait for one that is behind

# Why a user's input is on hold (User.hold, a bit set); no bit set: it is read and handled.
HOLD_THROTTLED = 1  # its messages reached users that are behind: wait for them (fair delivery)
HOLD_BEHIND = 2  # its own output is backed up (echoes, pongs): read again once it drains
HOLD_HTTP = 4  # an HTTP answer is being sent: the next request waits for it (RFC 9112 §9.3)
HOLD_CARRY = 8  # input left over from an earlier pass is handled before more is read

_ACCEPT = "accept"
_WAKEUP = "wakeup"


class ServerError(Exception):
    """The server cannot start (address in use, bad address...); one line for the CLI."""


class Server:
    """A WebSocket chat server: `Server(address, port).serve_forever()`.

    Methods for callbacks: `get_users()`, `send(user, message)`,
    `broadcast(message, exclude=None)`, `disconnect(user, code=1000, reason="")`, `log(...)`.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 8080,
                 callbacks: Callbacks | str | None = None, *,
                 selector: str = "default", client_dir: Path | str = CLIENT_DIR,
                 **limits: Any) -> None:
        unknown = set(limits) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        settings = {**DEFAULTS, **limits}
        self.address = address
        self.port = port
        self.callbacks = callbacks if isinstance(callbacks, Callbacks) else load(callbacks)
        self.max_message_size: int = settings["max_message_size"]
        self.max_request_size: int = settings["max_request_size"]
        self.handshake_timeout: float = settings["handshake_timeout"]
        self.close_timeout: float = settings["close_timeout"]
        self.ping_interval: float = settings["ping_interval"]
        self.message_timeout: float = settings["message_timeout"]
        self._next_sweep = float("inf")
        self.max_connections: int = settings["max_connections"]
        self.max_buffer: int = settings["max_buffer"]
        self._behind_mark = self.max_buffer // 4  # a backlog over this: the user is behind
        self._caught_up_mark = self.max_buffer // 8  # ... until it is back under this
        self.input_budget = InputBudget(settings["max_input_memory"])
        origins = settings["allowed_origins"]
        self.allowed_origins: frozenset[str] | None = (
            None if origins is None else frozenset(o.lower().rstrip("/") for o in origins))
        self.client_dir = Path(client_dir)
        self.use_select = selector == "select"
        self._selector: selectors.BaseSelector = (
            selectors.SelectSelector() if self.use_select else selectors.DefaultSelector())
        self.master: socket.socket | None = None
        self._users: dict[int, User] = {}  # every connection, by id
        self._open: dict[int, User] = {}  # WebSocket users (state OPEN), in order of arrival
        self._next_id = 1
        self._pending: dict[User, None] = {}  # users with output queued during this pass
        self._runnable: dict[User, None] = {}  # users with input left to handle (HOLD_CARRY)
        self._behind: dict[User, None] = {}  # users whose backlog is over the behind mark
        self._throttled: dict[User, None] = {}  # users waiting for those to catch up
        self._throttle = False  # set while handling a message that reached a user behind
        self._deliveries = 0  # frames queued to users, ever: the clock of DELIVERIES_PER_TURN
        self._now = time.monotonic()  # the current loop pass's time
        # (deadline, user id, kind, user) heap; kind 0: user.deadline, 1: message_deadline
        self._timers: list[tuple[float, int, int, User]] = []
        self._running = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._accept_paused_until = 0.0
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._debug = False
        self._trace = False
        self._signalled: int | None = None
        self._scratch = bytearray(PAYLOAD_READ_SIZE)
        self._scratch_view = memoryview(self._scratch)

    @property
    def selector_name(self) -> str:
        """The readiness API in use, e.g. 'EpollSelector' or 'SelectSelector'."""
        return type(self._selector).__name__

    # -- connectMaster -------------------------------------------------------------------

    def listen(self) -> None:
        """Create, bind and register the non-blocking master socket (`connectMaster`)."""
        try:
            infos = socket.getaddrinfo(self.address or None, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError, OverflowError) as exc:
            raise ServerError(f"bad address {self.address!r}: {exc}") from None
        family, kind, proto, _, sockaddr = infos[0]
        master = socket.socket(family, kind, proto)
        try:
            # A restarted server gets its port back at once, not after TIME_WAIT.
            master.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            master.bind(sockaddr)
            master.listen(socket.SOMAXCONN)
        except OSError as exc:
            master.close()
            what = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                what = "address already in use (is another server running on it?)"
            raise ServerError(f"cannot listen on {self.address} port {self.port}: "
                              f"{what.lower() if what[0].isupper() else what}") from None
        master.setblocking(False)
        self.master = master
        self.port = master.getsockname()[1]
        self._selector.register(master, selectors.EVENT_READ, _ACCEPT)
        self._raise_fd_limit()

    def _raise_fd_limit(self) -> None:
        """Each user is a file descriptor: lift the soft limit to the hard one."""
        try:
            import resource
        except ImportError:  # pragma: no cover - not on POSIX
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            try:
                target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        reachable = soft - 16 if soft != resource.RLIM_INFINITY else self.max_connections
        if self.use_select:
            reachable = min(reachable, FD_SETSIZE - 16)
        if reachable < self.max_connections:
            why = "select() watches descriptors below 1024" if self.use_select else \
                f"the open-file limit is {soft}"
            log.warning("--max-connections %d cannot be reached: %s; about %d users fit",
                        self.max_connections, why, reachable)

    # -- run -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """The loop (`run`): wait for readiness, serve it, flush output, run timers."""
        if self.master is None:
            self.listen()
        self._install_signal_handlers()
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._trace = self._debug
        self._running = True
        if self.ping_interval > 0:
            self._next_sweep = time.monotonic() + self.ping_interval / 2
        select = self._selector.select
        try:
            while True:
                if self._stopping and (not self._users or time.monotonic() >= self._stop_deadline):
                    break
                ready = select(self._timeout())
                self._now = time.monotonic()
                for key, mask in ready:
                    target = key.data
                    if target is _ACCEPT:
                        self._accept()
                    elif target is _WAKEUP:
                        self._drain_wakeup()
                    else:
                        try:
                            if mask & selectors.EVENT_READ:
                                self._read(target)
                            if (mask & selectors.EVENT_WRITE
                                    and target.state is not UserState.CLOSED):
                                self._flush(target)
                        except Exception:  # a bug of ours: it must cost one user, not all
                            self._internal_error(target)
                if self._runnable:
                    self._run_leftovers()
                if self._timers and self._timers[0][0] <= time.monotonic():
                    self._run_timers()
                if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
                    self._resume_accepting()
                if time.monotonic() >= self._next_sweep:
                    self._sweep_silent_users()
                if self._pending:
                    self._flush_pending()
                if self._throttled:
                    self._release_throttled()
        finally:
            for user in list(self._users.values()):
                self._close_socket(user, "server stopped")
            self._close_master()
            self._restore_signal_handlers()
            self._running = False
        log.info("Server stopped")

    def stop(self) -> None:
        """Begin a graceful shutdown: 1001 to every user, up to 2 s for their answers."""
        if self._stopping:
            self._stop_deadline = 0.0  # asked twice: stop now
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        self._close_master()
        log.info("Shutting down: closing %d user(s) with 1001 (going away)", len(self._open))
        for user in list(self._users.values()):
            if user.state is UserState.OPEN:
                self._send_close(user, CloseCode.GOING_AWAY, "server shutting down")
            elif user.state is UserState.HANDSHAKE and not user.outbuf:
                self._close_socket(user, "server shutting down")
        self._flush_pending()

    def _timeout(self) -> float | None:
        """How long select() may sleep: until the next timer, or for ever."""
        if self._runnable or self._pending:
            return 0.0  # input is waiting to be handled, or output to be sent
        deadlines = []
        if self._throttled:
            deadlines.append(self._now + THROTTLE_RECHECK)
        if self._timers:
            deadlines.append(self._timers[0][0])
        if self._stopping:
            deadlines.append(self._stop_deadline)
        if self._accept_paused_until:
            deadlines.append(self._accept_paused_until)
        if self._next_sweep != float("inf"):
            deadlines.append(self._next_sweep)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    # -- connect ---------------------------------------------------------------------------

    def _accept(self) -> None:
        """Accept waiting connections (the article's `connect`)."""
        assert self.master is not None
        for _ in range(ACCEPTS_PER_PASS):
            try:
                sock, address = self.master.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept: %s; pausing new connections for 0.1 s",
                              exc.strerror)
                    self._pause_accepting()
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.error("cannot accept: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # A chat line must not wait for Nagle's algorithm and a delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.use_select and sock.fileno() >= FD_SETSIZE - 1:
                self._refuse(sock, address, 503, "server full: select() cannot watch more "
                                                 "connections")
                continue
            user = User(self._next_id, sock, address)
            self._next_id += 1
            self._users[user.id] = user
            self._selector.register(sock, selectors.EVENT_READ, user)
            user.events = selectors.EVENT_READ
            self._set_deadline(user, self.handshake_timeout)
            if self._debug:
                log.debug("user %d (%s) connected", user.id, user.peer)

    def _refuse(self, sock: socket.socket, address: Any, status: int, reason: str) -> None:
        """Answer a connection we cannot even watch, without blocking, and close it."""
        log.warning("refusing %s: HTTP %d: %s", address, status, reason)
        try:
            sock.send(handshake.error_response(HttpError(status, reason)))
            sock.shutdown(socket.SHUT_WR)
            sock.recv(READ_SIZE)  # take what already arrived, so close() sends no RST
        except OSError:
            pass
        sock.close()

    def _pause_accepting(self) -> None:
        if self.master is not None and not self._accept_paused_until:
            self._selector.unregister(self.master)
        self._accept_paused_until = time.monotonic() + 0.1

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        if self.master is not None:
            self._selector.register(self.master, selectors.EVENT_READ, _ACCEPT)

    # -- reading ---------------------------------------------------------------------------

    def _read(self, user: User) -> None:
        # Into one reused buffer, at most READ_SIZE bytes: a user that sends faster than we
        # serve it waits in its own kernel buffer, costing nobody else a thing.
        wanted = READ_SIZE
        receiver = user.receiver
        if receiver is not None and receiver.remaining > READ_SIZE and not user.inbuf:
            # Nothing but payload of the current frame: read up to its end, and let the
            # receiver unmask it straight from the scratch buffer (no copy into inbuf).
            wanted = min(receiver.remaining, PAYLOAD_READ_SIZE)
        try:
            size = user.sock.recv_into(self._scratch, wanted)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close_socket(user, f"connection error: {exc.strerror or exc}")
            return
        if not size:
            self._close_socket(user, "connection closed by the client"
                               if user.state is not UserState.CLOSED else "")
            return
        if user.close_after_flush or user.state is UserState.CLOSED:
            return  # lingering after our last bytes: the rest is discarded
        user.last_seen = self._now
        user.pinged = False
        if wanted > READ_SIZE and user.state is UserState.OPEN:
            self._receive(user, payload_size=size)
            return
        user.inbuf += self._scratch_view[:size]
        self._handle_input(user)

    def _handle_input(self, user: User) -> None:
        if user.state is UserState.HANDSHAKE:
            self._handshake(user)
        elif user.receiver is not None:
            self._receive(user)

    def _run_leftovers(self) -> None:
        """Handle input that earlier passes left for later (HOLD_CARRY), one turn each."""
        runnable, self._runnable = self._runnable, {}
        for user in runnable:
            if user.state is UserState.CLOSED:
                continue
            try:
                user.hold &= ~HOLD_CARRY
                if not user.hold:
                    self._handle_input(user)
                self._update_interest(user)
            except Exception:  # a bug of ours: it must cost one user, not all
                self._internal_error(user)

    # -- holding input back: fair delivery and back-pressure ------------------------------

    def _hold(self, user: User, reason: int) -> None:
        """Stop reading and handling the user's input for `reason` (a HOLD_* bit)."""
        if not user.hold & reason:
            user.hold |= reason
            self._update_interest(user)

    def _unhold(self, user: User, reason: int) -> None:
        """Take `reason` away; with no reason left, input flows again, leftovers first."""
        if not user.hold & reason:
            return
        user.hold &= ~reason
        if not user.hold and user.inbuf and user.state is not UserState.CLOSED:
            user.hold = HOLD_CARRY  # what is already in inbuf goes before any new read
            self._runnable[user] = None
        self._update_interest(user)

    def _update_interest(self, user: User) -> None:
        """Watch the socket for reading unless input is on hold (a lingering socket is
        always read, to see the peer's EOF) and for writing while output is left over."""
        if user.state is UserState.CLOSED:
            return
        events = selectors.EVENT_READ if not user.hold or user.close_after_flush else 0
        if user.writing:
            events |= selectors.EVENT_WRITE
        if events == user.events:
            return
        if not user.events:
            self._selector.register(user.sock, events, user)
        elif not events:
            self._selector.unregister(user.sock)
        else:
            self._selector.modify(user.sock, events, user)
        user.events = events

    def _keeping_up(self, user: User) -> bool:
        """Is a user that is behind still worth waiting for? (See STALL_TIMEOUT.)"""
        now = self._now
        if user.writing and now - user.progress_at > STALL_TIMEOUT:
            return False  # the kernel has taken nothing of its output for a while
        return not (user.behind_since and now - user.behind_since > BEHIND_TIMEOUT)

    def _fall_behind(self, user: User) -> None:
        user.behind_since = self._now
        self._behind[user] = None
        self._hold(user, HOLD_BEHIND)

    def _catch_up(self, user: User) -> None:
        user.behind_since = 0.0
        self._behind.pop(user, None)
        self._unhold(user, HOLD_BEHIND)

    def _release_throttled(self) -> None:
        """Let the held senders go once no user they wait for is still keeping up."""
        for user in self._behind:
            if user.state is UserState.OPEN and self._keeping_up(user):
                return
        throttled, self._throttled = self._throttled, {}
        for user in throttled:
            self._unhold(user, HOLD_THROTTLED)

    # -- handshakes and messages ----------------------------------------------------------

    def _handshake(self, user: User) -> None:
        """Parse requests as they complete (`doHandshake`): upgrade, or serve the page.

        One request at a time (RFC 9112 §9.3): the next is not even parsed until the
        answer to this one has been sent, so pipelined requests cannot pile up answers.
        """
        while (user.state is UserState.HANDSHAKE and user.inbuf and not user.close_after_flush
               and not user.hold):
            try:
                parsed = handshake.parse_request(user.inbuf, self.max_request_size)
            except HttpError as exc:
                self._fail(user, exc)
                return
            if parsed is None:
                return
            request, consumed = parsed
            del user.inbuf[:consumed]
            try:
                if request.is_upgrade:
                    self._upgrade(user, request)
                else:
                    self._serve_http(user, request)
            except HttpError as exc:
                self._fail(user, exc, head_only=request.method == "HEAD")
                return
        if user.state is UserState.OPEN and user.inbuf:
            self._receive(user)  # frames that came in the same packet as the request

    def _upgrade(self, user: User, request: handshake.Request) -> None:
        upgrade = handshake.upgrade(request, allowed_origins=self.allowed_origins,
                                    subprotocols=self.callbacks.subprotocols)
        if len(self._open) >= self.max_connections:
            raise HttpError(503, f"server full ({self.max_connections} users)")
        user.protocol = upgrade.protocol
        user.resource = upgrade.resource
        user.host = upgrade.host
        user.origin = upgrade.origin
        user.subprotocol = upgrade.subprotocol
        user.headers = request.headers
        if upgrade.protocol == handshake.RFC6455:
            user.receiver = Receiver(self.max_message_size, budget=self.input_budget)
            if self._trace:
                user.receiver.on_frame = lambda opcode, fin, length: log.debug(
                    "user %d < %s%s %d bytes", user.id, opcode.name, "" if fin else " (more)",
                    length)
        else:
            user.receiver = HixieReceiver(self.max_message_size, budget=self.input_budget)
            if self._trace:
                user.receiver.on_frame = lambda kind, length: log.debug(
                    "user %d < hixie frame %#04x %d bytes", user.id, kind, length)
        user.state = UserState.OPEN
        user.deadline = None
        user.last_action = time.monotonic()
        self._open[user.id] = user
        self._queue(user, upgrade.response)
        log.info("user %d (%s) joined: %s, resource %s, origin %s", user.id, user.peer,
                 _PROTOCOL_NAMES[upgrade.protocol], user.resource, user.origin or "-")
        hook = self.callbacks.on_connect
        if hook is not None:
            self._call(hook, user, self)

    def _serve_http(self, user: User, request: handshake.Request) -> None:
        response = serve(request, self.client_dir)
        if self._debug:
            log.debug("user %d (%s): %s %s -> %d", user.id, user.peer, request.method,
                      request.target, response.status)
        self._queue(user, response.data)
        if response.keep_alive:
            self._set_deadline(user, self.handshake_timeout)
            self._hold(user, HOLD_HTTP)  # until the answer is sent (see _flush)
        else:
            user.close_after_flush = True

    def _receive(self, user: User, payload_size: int = 0) -> None:
        """Frames to events to actions (the article's `process` call, and more).

        One turn: frames are parsed FRAMES_PER_BATCH at a time, and their events handled,
        until the input runs out, the user's input goes on hold, or the turn's share is
        spent (FRAMES_PER_TURN, DELIVERIES_PER_TURN); the rest is left for the next pass.
        `payload_size`: the scratch buffer holds that many bytes of the current frame's
        payload, to be taken first (see `_read`).
        """
        receiver = user.receiver
        assert receiver is not None
        last_frame = receiver.frames + FRAMES_PER_TURN
        last_delivery = self._deliveries + DELIVERIES_PER_TURN
        while True:
            events: list[Event] = []
            error: ProtocolError | None = None
            before = receiver.frames
            try:
                if payload_size:  # (only RFC 6455 frames announce their length)
                    assert isinstance(receiver, Receiver)
                    receiver.receive_payload(self._scratch, payload_size, events)
                    payload_size = 0
                else:
                    receiver.receive(user.inbuf, events, FRAMES_PER_BATCH)
            except ProtocolError as exc:
                error = exc
            self._throttle = False
            for event in events:
                if type(event) is Message and user.state is UserState.OPEN:
                    # The article's process($user, $msg, $server): the common case, inline.
                    user.last_action = self._now
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
            if self._throttle and user.state is UserState.OPEN:
                # Its messages reached someone who is behind: wait with the rest for them.
                self._throttled[user] = None
                self._hold(user, HOLD_THROTTLED)
            if receiver.frames - before < FRAMES_PER_BATCH or not user.inbuf or user.hold:
                break  # all of the input is handled (what is left is not a whole frame)
            if receiver.frames >= last_frame or self._deliveries >= last_delivery:
                self._hold(user, HOLD_CARRY)
                self._runnable[user] = None
                break
        if receiver.in_message and receiver.message_serial != user.message_serial:
            # A message has begun: time it. One timer per user at most (see
            # _message_expired), however many messages come and go.
            user.message_serial = receiver.message_serial
            user.message_started = self._now
            if user.message_deadline is None:
                self._set_message_deadline(user, self._now + self.message_timeout)

    def _dispatch(self, user: User, event: Event) -> None:
        if isinstance(event, Message):
            if user.state is UserState.OPEN:  # while closing, data is discarded
                user.last_action = self._now
                if self._debug:
                    self._log_message(user, event.data)
                self._call(self.callbacks.process, user, event.data, self)
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
            self._close_socket(user, "closing handshake complete")
            return
        # The peer started it: "the endpoint MUST send a Close frame in response ...
        # typically echoing the status code it received" (§5.5.1).
        self._queue_close(user, None if event.code == CloseCode.NO_STATUS else event.code)
        # Both close frames are exchanged: the user has left the chat. The socket lingers
        # until our answer is flushed and the peer's EOF arrives (see `_linger`).
        user.close_after_flush = True
        self._announce_left(user, "closing handshake complete")

    def _send_close(self, user: User, code: int, reason: str) -> None:
        """Start the closing handshake ourselves and wait for the peer's answer (§7.1.2)."""
        if user.state is not UserState.OPEN:
            return
        user.close_code, user.close_reason = code, reason
        self._queue_close(user, code, reason)
        self._set_deadline(user, self.close_timeout)

    def _queue_close(self, user: User, code: int | None, reason: str = "") -> None:
        """Take the user out of the chat and queue our close frame in its protocol: RFC 6455
        §5.5.1 (a code, or none), or draft-76's 0xFF 0x00. The caller decides what follows."""
        self._leave_open(user)
        user.state = UserState.CLOSING
        if user.protocol == handshake.RFC6455:
            self._queue_frame(user, Opcode.CLOSE, encode_close(code, reason))
        else:
            self._queue(user, legacy.CLOSE_FRAME)

    def _fail(self, user: User, error: HttpError | ProtocolError, head_only: bool = False) -> None:
        """The one place where bad input becomes an answer: a close code or an HTTP status.

        RFC 6455 §7.1.7 "Fail the WebSocket Connection": send a close frame with the code,
        stop reading frames, and close the connection. Hixie users get 0xFF 0x00. Requests
        get the HTTP status with a one-line reason. Only this user is affected.
        """
        if isinstance(error, HttpError):
            log.warning("user %d (%s): HTTP %d: %s", user.id, user.peer, error.status,
                        error.reason)
            user.inbuf.clear()
            self._queue(user, handshake.error_response(error, head_only))
            user.close_after_flush = True
            return
        code = error.code
        log.warning("user %d (%s): closing with %d (%s): %s", user.id, user.peer, code,
                    describe_close_code(code), error.reason)
        user.close_code, user.close_reason = code, error.reason
        user.inbuf.clear()
        if user.receiver is not None:
            user.receiver.discard()
        user.receiver = None
        if user.state is UserState.OPEN:
            self._queue_close(user, code, error.reason)
        user.state = UserState.CLOSING
        user.close_after_flush = True

    def _internal_error(self, user: User) -> None:
        """An unexpected exception while serving `user`: log it, close with 1011 (§7.4.1)."""
        log.exception("internal error while serving user %d (%s); closing it with 1011",
                      user.id, user.peer)
        try:
            if user.state is UserState.OPEN:
                self._fail(user, InternalError("internal server error"))
            elif user.state is not UserState.CLOSED:
                self._close_socket(user, "internal error")
        except Exception:
            log.exception("could not close user %d cleanly", user.id)
            self._close_socket(user, "internal error")

    def _leave_open(self, user: User) -> None:
        """The user no longer takes part in the chat (its socket may still be flushing)."""
        self._open.pop(user.id, None)
        if self._throttled.pop(user, None) is not None or user.hold & HOLD_THROTTLED:
            self._unhold(user, HOLD_THROTTLED)  # it sends nothing to anyone any more

    def _close_socket(self, user: User, why: str) -> None:
        """Forget the user and close its socket (the article's `disconnect`)."""
        if user.state is UserState.CLOSED and user.sock.fileno() < 0:
            return
        was_websocket = user.protocol is not None and not user.left
        self._leave_open(user)
        self._users.pop(user.id, None)
        self._pending.pop(user, None)
        self._runnable.pop(user, None)
        self._behind.pop(user, None)
        if user.events:
            try:
                self._selector.unregister(user.sock)
            except (KeyError, ValueError):
                pass
            user.events = 0
        user.sock.close()
        user.state = UserState.CLOSED
        user.outbuf.clear()
        user.out_cost = user.out_offset = 0
        user.inbuf.clear()
        if user.receiver is not None:
            user.receiver.discard()  # its unfinished message no longer counts against anyone
        if not was_websocket:
            if self._debug:
                log.debug("user %d (%s) disconnected: %s", user.id, user.peer, why)
            return
        self._announce_left(user, why)

    def _announce_left(self, user: User, why: str) -> None:
        """Log a WebSocket user's departure with its close code, and call on_disconnect once."""
        if user.left:
            return
        user.left = True
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

    # -- writing ---------------------------------------------------------------------------

    def _queue(self, user: User, data: bytes) -> None:
        """Queue bytes for a user; they leave at the end of this loop pass.

        A user whose backlog is over the behind mark holds back the sender of this frame
        while it keeps up (fair delivery); one that has stopped reading is left behind,
        and dropped once its backlog passes `max_buffer` (one message larger than the limit
        still goes to a reader).
        """
        if user.out_cost > self._behind_mark and user.state is UserState.OPEN:
            if not user.behind_since:
                self._fall_behind(user)
            if self._keeping_up(user):
                self._throttle = True
            elif user.out_cost > self.max_buffer:
                self._overflow(user)
                return
        user.outbuf.append(data)
        user.out_cost += len(data) + FRAME_COST
        self._deliveries += 1
        if not user.writing:
            self._pending[user] = None

    def _queue_frame(self, user: User, opcode: Opcode, payload: bytes) -> None:
        if self._trace:
            log.debug("user %d > %s %d bytes", user.id, opcode.name, len(payload))
        for part in frame_parts(opcode, payload):
            self._queue(user, part)

    def _overflow(self, user: User) -> None:
        """A user that does not read while others talk: drop its backlog, and then it."""
        unsent = user.out_cost
        # Keep a frame already partly on the wire (cutting it would corrupt the stream).
        keep = user.outbuf[0] if user.out_offset else None
        user.outbuf.clear()
        user.out_cost = 0
        if keep is not None:
            user.outbuf.append(keep)
            user.out_cost = len(keep) - user.out_offset + FRAME_COST
        log.warning("user %d (%s) is not reading: %d bytes unsent (limit %d); disconnecting",
                    user.id, user.peer, unsent, self.max_buffer)
        self._send_close(user, TOO_SLOW, "too slow: output buffer full")
        user.close_after_flush = True

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, {}
        closed = UserState.CLOSED
        flush = self._flush
        for user in pending:
            if user.state is not closed:
                flush(user)

    def _flush(self, user: User) -> None:
        """Send what is queued until the kernel takes no more (scatter-gather, MAX_IOVECS
        frames per call); what is left waits for EVENT_WRITE."""
        out = user.outbuf
        while out:
            try:
                if len(out) == 1 and not user.out_offset:
                    handed = 1
                    sent = user.sock.send(out[0])
                else:
                    chunks: list[Any] = out[:MAX_IOVECS]
                    handed = len(chunks)
                    if user.out_offset:
                        chunks[0] = memoryview(chunks[0])[user.out_offset:]
                    sent = user.sock.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._close_socket(user, f"connection lost: {exc.strerror or exc}")
                return
            user.progress_at = self._now
            if sent == user.out_cost - FRAME_COST * len(out):  # the kernel took everything
                out.clear()
                user.out_cost = user.out_offset = 0
                break
            offset = user.out_offset + sent
            done = 0
            for chunk in out:
                if offset < len(chunk):
                    break
                offset -= len(chunk)
                done += 1
            del out[:done]
            user.out_cost -= sent + FRAME_COST * done
            user.out_offset = offset
            if done < handed:
                break  # the kernel refused the rest
        if out:
            if not user.writing:
                user.writing = True
                self._update_interest(user)
        else:
            if user.writing:
                user.writing = False
                self._update_interest(user)
            if user.hold & HOLD_HTTP:
                # The answer is out: the next request may come, within the keep-alive time.
                self._set_deadline(user, self.handshake_timeout)
                self._unhold(user, HOLD_HTTP)
            if user.close_after_flush and user.state is not UserState.CLOSED:
                self._linger(user)
        if user.behind_since and user.out_cost < self._caught_up_mark:
            self._catch_up(user)

    def _linger(self, user: User) -> None:
        """Everything is sent: half-close, and wait briefly for the peer's EOF.

        Closing at once with unread input would make the kernel send a reset, which can
        destroy our last response or close frame before the peer reads it.
        """
        try:
            user.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_socket(user, "")
            return
        if user.state is UserState.OPEN:
            self._leave_open(user)
        self._update_interest(user)  # read until the peer's EOF, whatever was on hold
        self._set_deadline(user, LINGER_TIMEOUT)

    # -- timers ------------------------------------------------------------------------------

    def _set_deadline(self, user: User, seconds: float) -> None:
        user.deadline = time.monotonic() + seconds
        heapq.heappush(self._timers, (user.deadline, user.id, 0, user))

    def _set_message_deadline(self, user: User, when: float) -> None:
        user.message_deadline = when
        heapq.heappush(self._timers, (when, user.id, 1, user))

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, user = heapq.heappop(timers)
            if user.state is UserState.CLOSED:
                continue
            if kind == 1:
                if user.message_deadline == deadline:
                    user.message_deadline = None
                    self._message_expired(user)
                continue
            if user.deadline != deadline:
                continue  # replaced by a later deadline
            user.deadline = None
            if user.close_after_flush:
                if user.outbuf:
                    self._close_socket(user, "could not deliver the last bytes in time")
                else:
                    self._close_socket(user, "")
            elif user.state is UserState.HANDSHAKE:
                if user.hold & HOLD_HTTP:
                    # Our answer has waited that long for the client to read it.
                    self._close_socket(user, "did not read our answer in time")
                elif user.inbuf:
                    self._fail(user, HttpError(408, f"request not complete within "
                                                    f"{self.handshake_timeout:g} s"))
                else:
                    self._close_socket(user, "idle")
            elif user.state is UserState.CLOSING:
                if user.close_code is not None and user.close_reason:
                    user.close_reason += " (no answer to our close)"
                self._close_socket(user, "no close frame in answer to ours")

    def _message_expired(self, user: User) -> None:
        """--message-timeout: the user's timer is due. Fail a message begun that long ago
        and still unfinished (1008); for a later one, check again when its time is up."""
        receiver = user.receiver
        if (user.state is not UserState.OPEN or receiver is None or not receiver.in_message
                or receiver.closed or receiver.message_serial != user.message_serial):
            return  # no message in progress (a new one re-arms the timer when it begins)
        due = user.message_started + self.message_timeout
        if due > time.monotonic():
            self._set_message_deadline(user, due)
            return
        self._fail(user, PolicyViolation(
            f"message not finished within {self.message_timeout:g} s"))

    def _sweep_silent_users(self) -> None:
        """Keepalive (RFC 6455 §5.5.2): ping users silent for `ping_interval`, drop them
        (1011) when still silent after twice that. A peer that vanished without a FIN (a
        pulled cable, a sleeping laptop) is found this way instead of holding its slot.
        Draft-75/76 have no ping: their users are left alone.
        """
        now = time.monotonic()
        self._next_sweep = now + self.ping_interval / 2
        for user in list(self._open.values()):
            if user.protocol != handshake.RFC6455 or user.hold & HOLD_THROTTLED:
                continue  # no pings in the drafts; a held user's silence is ours
            silent = now - user.last_seen
            if silent >= 2 * self.ping_interval:
                self._fail(user, InternalError(
                    f"no answer to a ping for {silent:.0f} s (keepalive timeout)"))
            elif silent >= self.ping_interval and not user.pinged:
                user.pinged = True
                self._queue_frame(user, Opcode.PING, b"keepalive")

    # -- the API for callbacks (the article's `send`, plus what a real chat needs) ----------

    def get_users(self) -> list[User]:
        """Every user with an open WebSocket, in order of arrival."""
        return list(self._open.values())

    def send(self, user: User, message: str | bytes) -> bool:
        """Queue one message for one user. False if it cannot go (closed, or binary to hixie)."""
        if user.state is not UserState.OPEN:
            return False
        if user.protocol == handshake.RFC6455:
            if isinstance(message, str):
                self._queue_frame(user, Opcode.TEXT, message.encode("utf-8"))
            else:
                self._queue_frame(user, Opcode.BINARY, bytes(message))
            return True
        if isinstance(message, str):
            self._queue(user, legacy.encode_text(message))
            return True
        if self._debug:
            log.debug("user %d (%s) cannot receive binary messages; skipped", user.id,
                      user.protocol)
        return False

    def broadcast(self, message: str | bytes,
                  exclude: User | Iterable[User] | None = None) -> int:
        """Queue a message for every open user (except `exclude`); return how many get it.

        The frame is encoded once per protocol, not once per user: every user's queue
        holds the same bytes object.
        """
        is_text = isinstance(message, str)
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        opcode = Opcode.TEXT if is_text else Opcode.BINARY
        # Large payloads stay one shared object, sent after a separate header.
        parts = frame_parts(opcode, payload)
        frame = parts[0] if len(parts) == 1 else None
        hixie: bytes | None = None
        if exclude is None:
            excluded: Any = ()
        elif isinstance(exclude, User):
            excluded = (exclude,)
        else:
            excluded = set(exclude)
        delivered = 0
        queue = self._queue
        rfc6455 = handshake.RFC6455
        trace = self._trace
        behind_mark = self._behind_mark
        pending = self._pending
        cost = len(frame) + FRAME_COST if frame is not None else 0
        for user in list(self._open.values()):
            if user in excluded:
                continue
            if user.protocol == rfc6455:
                if trace:
                    log.debug("user %d > %s %d bytes", user.id, opcode.name, len(payload))
                if frame is not None and user.out_cost <= behind_mark:
                    # `_queue` inlined for a user that is not behind: this runs once per
                    # user per message.
                    user.outbuf.append(frame)
                    user.out_cost += cost
                    if not user.writing:
                        pending[user] = None
                else:
                    for part in parts:
                        queue(user, part)
            elif is_text:
                if hixie is None:
                    hixie = b"\x00" + payload + b"\xff"  # draft-76 §4.2, built once
                queue(user, hixie)
            else:
                if self._debug:
                    log.debug("user %d (%s) cannot receive binary messages; skipped",
                              user.id, user.protocol)
                continue
            delivered += 1
        self._deliveries += delivered
        return delivered

    def disconnect(self, user: User, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close a user's WebSocket with `code` and `reason` (the closing handshake)."""
        if user.state is UserState.OPEN:
            self._send_close(user, code, reason)
        elif user.state is UserState.HANDSHAKE:
            self._close_socket(user, reason or "disconnected by the server")

    def log(self, *args: Any) -> None:
        """Log a line from a callback, at INFO level."""
        log.info(" ".join(str(arg) for arg in args))

    def _call(self, function: Any, *args: Any) -> None:
        """Run a callback; if it raises, log the traceback and carry on serving everyone."""
        try:
            function(*args)
        except Exception:
            name = getattr(function, "__name__", "callback")
            log.exception("callback %s() raised; the server carries on", name)

    # -- signals and the master socket ---------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        self._selector.register(reader, selectors.EVENT_READ, _WAKEUP)
        # A signal writes a byte to `writer`, which wakes select() at once.
        self._old_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._on_signal)
                              for sig in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = signum

    def _drain_wakeup(self) -> None:
        assert self._wakeup is not None
        try:
            while self._wakeup[0].recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        if self._signalled is not None:
            self._signalled = None
            self.stop()

    def _restore_signal_handlers(self) -> None:
        if self._wakeup is None:
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for sock in self._wakeup:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._wakeup = None

    def _close_master(self) -> None:
        if self.master is None:
            return
        if not self._accept_paused_until:
            try:
                self._selector.unregister(self.master)
            except (KeyError, ValueError):
                pass
        self.master.close()
        self.master = None


_PROTOCOL_NAMES = {
    handshake.RFC6455: "RFC 6455",
    handshake.HIXIE76: "draft-76 (hixie-76)",
    handshake.HIXIE75: "draft-75 (hixie-75)",
}

