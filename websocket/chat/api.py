"""What a callback may call on the server: the article's `send`, plus what a real chat needs.

`Server` (server.py) inherits these; they are here so that server.py holds the protocol and
this module the small API of callbacks.py's `Server` protocol, with the metrics they keep.
The attributes and `_send_close` they use are the server's, declared below for the type
checker.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..net.loop import Loop, Repeating, Timer
from ..observe.metrics import ServerMetrics
from ..protocol.frames import CloseCode
from ..scale.redis_link import RedisLink
from .callbacks import ScriptTimers
from .delivery import Delivery
from .history import History
from .rooms import TAGGED, Rooms, check_room, tagged_text
from .user import User, UserState

log = logging.getLogger("websocket")


class CallbackAPI:
    """`get_users(room=None)`, `send()`, `broadcast(..., room=None)`, `join()`, `rooms()`,
    `disconnect()`, `log()`, `call_later()`, `call_every()`; and `_call()`, which runs a
    callback and survives it."""

    # The server's (server.py sets them in __init__).
    loop: Loop
    delivery: Delivery
    metrics: ServerMetrics
    _users: dict[int, User]
    _open: dict[int, User]
    _script_timers: ScriptTimers  # --reload cancels a script's timers (callbacks.py)
    _rooms: Rooms  # rooms, their history and the Redis link (rooms.py)

    def _send_close(self, user: User, code: int, reason: str) -> None:
        raise NotImplementedError  # the server's closing handshake

    def get_users(self, room: str | None = None) -> list[User]:
        """Every user of this process with an open WebSocket (in `room`, when given), in
        order of arrival."""
        if room is None:
            return list(self._open.values())
        return self._rooms.users(room)

    def rooms(self) -> list[str]:
        """Every room with a user of this process, in order of creation."""
        return self._rooms.names()

    def join(self, user: User, room: str) -> None:
        """Move `user` to `room` (a path, e.g. "/python"): it gets that room's history
        (--history) and broadcasts from now on. Raises ValueError for a name that is not a
        path."""
        check_room(room)
        if user.state is not UserState.OPEN:
            user.room = room
            return
        if room == user.room:
            return
        self._rooms.move(user, room)

    @property
    def history(self) -> History | None:
        """--history: the recent messages of each room (history.py), or None."""
        return self._rooms.history

    @property
    def link(self) -> RedisLink | None:
        """--redis: the link to the other processes (redis_link.py), or None."""
        return self._rooms.link

    def send(self, user: User, message: str | bytes) -> bool:
        """Queue one message for one user (behind its history replay, if one is still being
        sent: rooms.py). False if it cannot go (closed, or binary to hixie)."""
        if user.state is not UserState.OPEN:
            return False
        if user.subprotocol == TAGGED and isinstance(message, str):
            message = tagged_text(message)  # the chat page's channel (rooms.py)
        sent = self._rooms.send(user, message)
        self.metrics.messages_sent += sent
        return sent

    def broadcast(self, message: str | bytes,
                  exclude: User | Iterable[User] | None = None,
                  room: str | None = None) -> int:
        """Queue a message for every open user (of `room`, when given; but `exclude`);
        return how many here get it. With --redis it goes to the other processes too, and
        with --history a room's broadcast is kept for newcomers (rooms.py).

        The frame is encoded once per protocol, not once per user: every user's queue
        holds the same bytes object (see Delivery.broadcast).
        """
        if exclude is None:
            delivered = self._rooms.broadcast(message, (), room)
        else:
            users = (exclude,) if isinstance(exclude, User) else exclude
            delivered = self._rooms.broadcast(message, {user.conn for user in users}, room)
        metrics = self.metrics
        metrics.broadcasts += 1
        metrics.broadcast_deliveries += delivered
        metrics.messages_sent += delivered
        return delivered

    def disconnect(self, user: User, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close a user's WebSocket with `code` and `reason` (the closing handshake)."""
        if user.state is UserState.OPEN:
            self._send_close(user, code, reason)
        elif user.state is UserState.HANDSHAKE:
            user.conn.close(reason or "disconnected by the server")

    def log(self, *args: Any) -> None:
        """Log a line from a callback, at INFO level."""
        log.info(" ".join(str(arg) for arg in args))

    def call_later(self, seconds: float, function: Callable[..., Any], *args: Any) -> Timer:
        """Call `function(*args)` once, `seconds` from now; `.cancel()` the handle to stop
        it. If it raises, the traceback is logged and the server carries on."""
        timer = self.loop.call_later(seconds, function, *args)
        self._script_timers.keep(timer)
        return timer

    def call_every(self, seconds: float, function: Callable[..., Any], *args: Any) -> Repeating:
        """Call `function(*args)` every `seconds` until `.cancel()`: the schedule holds
        whatever one call costs, and a call that raises is logged, the next one still comes."""
        handle = self.loop.call_every(seconds, function, *args)
        self._script_timers.keep(handle)
        return handle

    def _render_metrics(self) -> bytes:
        """GET /metrics: the gauges read now, then every family (metrics.py)."""
        self.metrics.connections_open = len(self._users)
        self.metrics.loop_passes = self.loop.passes
        return self.metrics.render()

    def _call(self, function: Any, *args: Any) -> None:
        """Run a callback; if it raises, log the traceback and carry on serving everyone.
        Its time counts in the metrics (two clock reads per call)."""
        started = time.perf_counter()
        try:
            function(*args)
        except Exception:
            name = getattr(function, "__name__", "callback")
            log.exception("callback %s() raised; the server carries on", name)
        self.metrics.callback_seconds += time.perf_counter() - started

