"""The server's timers: deadlines, the message timeout, keepalive, idle users, --reload.

`Server` (server.py) inherits `Timers`. Every timer here is a loop timer (loop.py): one per
connection for its deadline (`Connection.set_timer`), one per user for an unfinished message,
and a few sweeps over all users (pings, idle users) and the script's file; none of them
costs a message anything. The attributes and methods they use are the server's, declared
below for the type checker.
"""
from __future__ import annotations

import logging
import time

from ..errors import HttpError, InternalError, PolicyViolation, ProtocolError
from ..protocol import handshake
from ..protocol.frames import CloseCode, Opcode
from .api import CallbackAPI
from .callbacks import Callbacks, ScriptWatcher
from .delivery import HOLD_THROTTLED
from .user import User, UserState

log = logging.getLogger("websocket")

HOLD_HTTP = 4  # an HTTP answer is being sent: the next request waits for it (RFC 9112 §9.3)


class Timers(CallbackAPI):
    """`_deadline`, `_message_expired`, `_sweep_silent_users`, `_sweep_idle_users`,
    `_reload`: what the server does when a timer is due."""

    # The server's (server.py sets them in __init__).
    callbacks: Callbacks
    handshake_timeout: float
    message_timeout: float
    ping_interval: float
    idle_timeout: float

    def _fail(self, user: User, error: HttpError | ProtocolError, head_only: bool = False) -> None:
        raise NotImplementedError  # the server's one place errors become answers

    def _queue_frame(self, user: User, opcode: Opcode, payload: bytes) -> None:
        raise NotImplementedError  # the server's

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
