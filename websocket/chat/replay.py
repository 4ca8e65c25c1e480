"""A newcomer's replay of its room's recent history, sent as it drains (--history; rooms.py).

A room's history can hold far more than one user may have queued: 50 messages of 1 MiB
against a --max-buffer of 4 MiB. So a replay is not queued at once; it goes through the
same back-pressure as live traffic (delivery.py), as if the history were a sender:
- a step queues the next messages while the user's backlog (`Connection.out_cost`) is
  under the behind mark, REPLAY_FRAMES_PER_TURN at most (a share of the pass, as a
  sender's is: limits.py); the rest in the next pass;
- past the mark the user is behind (`Delivery.fall_behind`) and, while it keeps up, the
  replay waits for it, as a held sender would: the connection reports the progress
  (`flushed`), and once the user has caught up the next step comes in the next pass;
- once it no longer keeps up (`Delivery.keeping_up`: the kernel took nothing for
  STALL_TIMEOUT, or it has been behind for BEHIND_TIMEOUT; a timer looks again then), the
  replay is queued without waiting, as a flood would be: past --max-buffer the user is
  dropped (1008), like any user that stops reading.

The user joins its room's broadcasts only when the replay is done. Until then whatever
would reach it waits behind the replay, in order: the room's broadcasts, broadcasts to
everyone, messages sent to it alone. What waits counts with its backlog against the same
marks (`Delivery.admit`): its senders are held while it keeps up, and past --max-buffer
it is dropped. So every message comes after the replay, in the order it was sent, once.

A replay reads the history where it is, by number (history.Span), not a copy of it: a
newcomer that reads slowly cannot keep messages the history has forgotten alive beyond
its cap. An entry pushed out of the history before the replay reached it is skipped; a
TAGGED user (the chat page) is told, as when it resumes after a message no longer kept:
`{"notice": "gap"}`.
"""
from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Callable, Collection

from ..limits import BEHIND_TIMEOUT, FRAME_COST, REPLAY_FRAMES_PER_TURN
from ..net.connection import Connection
from ..net.loop import Loop, Timer
from ..protocol import handshake
from .delivery import Delivery
from .history import History
from .user import User

GAP = json.dumps({"notice": "gap"})  # to a TAGGED user: messages are missing here
RECHECK_AFTER = 0.01  # seconds past the time a user stops keeping up at the latest

# A message waiting behind a replay, and how it is tagged for a TAGGED user: with the
# history id (a room's broadcast), "" (a broadcast without one), or None (as it is: a
# message sent to the user alone is tagged by its sender, api.py).
Waiting = tuple[str | bytes, str | None]


class Replay:
    """One user's replay: where it is in the room's history, and what waits behind it."""

    __slots__ = ("user", "conn", "room", "rfc6455", "tagged", "serial", "next", "end",
                 "waiting", "waiting_cost", "gap", "paused", "timer", "soon", "done",
                 "on_done")

    def __init__(self, user: User, tagged: bool, serial: int, start: int, end: int,
                 gap: bool, on_done: Callable[[User], None]) -> None:
        self.user = user
        self.conn = user.conn
        self.room = user.room
        self.rfc6455 = user.protocol == handshake.RFC6455
        self.tagged = tagged
        self.serial = serial  # the room's history being replayed
        self.next = start  # the number of the next entry to send
        self.end = end  # ... up to here: what came later waits in `waiting`
        self.waiting: deque[Waiting] = deque()
        self.waiting_cost = 0  # bytes: counted with the user's backlog
        self.gap = gap  # a TAGGED user is to hear of missing messages before the next one
        self.paused = False  # the user is behind: wait for it to catch up
        self.timer: Timer | None = None  # ... or for it to stop keeping up
        self.soon = False  # a step is due in the next pass
        self.done = False
        self.on_done = on_done


class Replays:
    """Every replay still being sent, by connection and by room; see the module docstring."""

    def __init__(self, delivery: Delivery, loop: Loop, history: History,
                 tag: Callable[[str, str | None], str]) -> None:
        self.delivery = delivery
        self.loop = loop
        self.history = history
        self.tag = tag  # a text message as a TAGGED user gets it (rooms.tagged_text)
        self.by_conn: dict[Connection, Replay] = {}
        self.by_room: dict[str, dict[Connection, Replay]] = {}

    def start(self, user: User, tagged: bool, after: str,
              on_done: Callable[[User], None]) -> None:
        """Replay the user's room to it, then `on_done(user)` (which joins it to the
        room's broadcasts), at once if there is nothing to replay. `after`: a TAGGED
        user's last message id; only what came after it, or a gap notice and everything
        if it is no longer kept."""
        self.cancel(user.conn)  # (one replay a user: the room it is in now)
        room = user.room
        span = self.history.span(room)
        start, gap = span.first, False
        if after:
            found = self.history.number_of(room, after)
            if found is None:
                gap = True
            else:
                start = found + 1
        if start >= span.end and not gap:
            on_done(user)
            return
        replay = Replay(user, tagged, span.serial, start, span.end, gap, on_done)
        self.by_conn[replay.conn] = replay
        self.by_room.setdefault(room, {})[replay.conn] = replay
        self._step(replay)

    # -- sending, as the user drains ----------------------------------------------------------

    def _step(self, replay: Replay) -> None:
        """Queue the next messages while the user keeps up with them (its share of a pass)."""
        replay.soon = False
        if replay.done:
            return
        conn = replay.conn
        delivery = self.delivery
        for _ in range(REPLAY_FRAMES_PER_TURN):
            if conn.out_cost > delivery.behind_mark:
                if not conn.behind_since:
                    delivery.fall_behind(conn)
                if delivery.keeping_up(conn):
                    self._pause(replay)
                    return
                # It does not keep up: queue on, and past max_buffer it is dropped.
            message = self._next(replay)
            if message is None:
                self._finish(replay)
                return
            delivery.send(conn, message, replay.rfc6455)
            if replay.done:
                return  # it was dropped (Delivery.on_overflow: rooms.leave cancelled it)
        self._soon(replay)

    def _next(self, replay: Replay) -> str | bytes | None:
        """The next message for the user: a gap notice, an entry of the history, then
        what waits behind the replay; None when there is nothing left."""
        history = self.history
        entry = None
        while replay.next < replay.end:
            entry = history.entry_at(replay.room, replay.serial, replay.next)
            if entry is not None:
                break
            # Pushed out (or the room forgotten) before the replay got to it: skip what is
            # gone. (A history renumbered by `load` is a new serial: all of it is gone.)
            span = history.span(replay.room)
            resume = span.first if span.serial == replay.serial else replay.end
            replay.next = min(max(resume, replay.next + 1), replay.end)
            replay.gap = replay.tagged
        if replay.gap:
            replay.gap = False
            return GAP
        if entry is not None:
            replay.next += 1
            return self._render(replay, entry.message, entry.id)
        if replay.waiting:
            message, tag = replay.waiting.popleft()
            replay.waiting_cost -= _cost(message)
            return self._render(replay, message, tag)
        return None

    def _render(self, replay: Replay, message: str | bytes, tag: str | None) -> str | bytes:
        if replay.tagged and tag is not None and isinstance(message, str):
            return self.tag(message, tag or None)
        return message

    def _pause(self, replay: Replay) -> None:
        """Wait for the user to catch up (flushed), or to stop keeping up (the timer)."""
        replay.paused = True
        conn = replay.conn
        # keeping_up() is False by then at the latest (earlier if the kernel stalls).
        deadline = conn.behind_since + BEHIND_TIMEOUT + RECHECK_AFTER
        if replay.timer is not None:
            replay.timer.cancel()
        replay.timer = self.loop.call_at(max(deadline, self.loop.now), self._recheck, replay)

    def _recheck(self, replay: Replay) -> None:
        replay.timer = None
        if replay.paused and not replay.done:
            replay.paused = False
            self._step(replay)

    def flushed(self, conn: Connection) -> None:
        """The kernel took some of the user's output (Server.flushed, after
        Delivery.flushed): once it has caught up, the replay goes on in the next pass."""
        replay = self.by_conn.get(conn)
        if replay is not None and replay.paused and not conn.behind_since:
            replay.paused = False
            if replay.timer is not None:
                replay.timer.cancel()
                replay.timer = None
            self._soon(replay)

    def _soon(self, replay: Replay) -> None:
        if not replay.soon:
            replay.soon = True
            self.loop.call_soon(self._step, replay)

    def _finish(self, replay: Replay) -> None:
        """Nothing left: the user joins the room's broadcasts, in this same call, so no
        message can come between."""
        self._forget(replay)
        replay.on_done(replay.user)

    # -- what arrives meanwhile ---------------------------------------------------------------

    def broadcast(self, message: str | bytes, room: str | None, tag: str,
                  excluded: Collection[Connection] = ()) -> int:
        """A broadcast (to `room`, or to everyone) reaches the users still replaying: it
        waits behind their replay. Returns how many."""
        replays = self.by_conn if room is None else self.by_room.get(room)
        if not replays:
            return 0
        count = 0
        for conn, replay in list(replays.items()):
            if (not excluded or conn not in excluded) and self._wait(replay, message, tag):
                count += 1
        return count

    def send(self, conn: Connection, message: str | bytes) -> bool | None:
        """A message to one user alone: behind its replay if one is being sent (True, or
        False if that dropped it); None if there is none (the caller sends it)."""
        replay = self.by_conn.get(conn)
        if replay is None:
            return None
        return self._wait(replay, message, None)

    def _wait(self, replay: Replay, message: str | bytes, tag: str | None) -> bool:
        """Keep a message behind the replay, counted with the user's backlog against the
        fair-delivery marks; False if that dropped the user."""
        conn = replay.conn
        cost = _cost(message)
        if not self.delivery.admit(conn, conn.out_cost + replay.waiting_cost + cost):
            return False
        replay.waiting.append((message, tag))
        replay.waiting_cost += cost
        return True

    # -- the end ------------------------------------------------------------------------------

    def cancel(self, conn: Connection) -> None:
        """The user left the room (or the chat): its replay and what waits behind it go."""
        replay = self.by_conn.get(conn)
        if replay is not None:
            self._forget(replay)

    def stop(self, conn: Connection) -> None:
        """The user moves to another room: the rest of this room's history is not for it,
        but what waits behind the replay was sent while it was here: queued now."""
        replay = self.by_conn.get(conn)
        if replay is None:
            return
        self._forget(replay)
        while replay.waiting and replay.user.is_open:
            message, tag = replay.waiting.popleft()
            self.delivery.send(conn, self._render(replay, message, tag), replay.rfc6455)

    def _forget(self, replay: Replay) -> None:
        replay.done = True
        if replay.timer is not None:
            replay.timer.cancel()
            replay.timer = None
        self.by_conn.pop(replay.conn, None)
        room = self.by_room.get(replay.room)
        if room is not None:
            room.pop(replay.conn, None)
            if not room:
                del self.by_room[replay.room]


def _cost(message: str | bytes) -> int:
    """What a waiting message holds: the object, and a queued frame's share (FRAME_COST)."""
    return sys.getsizeof(message) + FRAME_COST
