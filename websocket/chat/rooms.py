"""Rooms: a user's room is the path it connected to; who is in which room, its recent
history, and its link to the other processes.

`ws://host/` joins the lobby, "/"; `ws://host/python` joins "/python" (the query string is
not part of the room: RFC 3986 §3.3 and §3.4 tell the path from the query). With one page
and one path, everyone is in the lobby and the chat is the article's.

`Rooms` keeps the users of this process, room by room, in order of arrival (delivery.py
keeps the same membership as connections, for the fan-out), and ties in the two things a
room may have beyond its users:
- --history (history.py): a newcomer gets the room's recent messages before anything live,
  sent as it reads them (replay.py: its replay counts against --max-buffer, and it joins
  the room's broadcasts when the replay is done, what came meanwhile waiting behind it);
  with Redis, a room that gets its first user here loads Redis's list first, and its
  newcomers wait for it (their live messages too, so nothing comes out of order).
- --redis (redis_link.py): a room's channel is subscribed while the room has a user here;
  every broadcast is published, and what other processes publish is delivered here.

The chat page needs more than plain text for a reconnect that loses nothing and repeats
nothing, so it offers the subprotocol TAGGED (RFC 6455 §1.9) to the server it came from,
which always accepts it, and every other client keeps the article's plain text. A TAGGED
user's text frames are JSON objects:
`{"id": "<origin>.<seq>", "text": ...}` for a room's broadcast with --history (its id),
`{"text": ...}` for anything else, `{"notice": "gap"}` when the message it asked to resume
after (`?after=ID` on its URL) is no longer in the history, and who is in its room
(presence.py keeps it), every user of every process, each an entry
`{"id": "<origin>.<user id>", "name": "<?handle=NAME, or user N>"}` (names repeat, ids are
unique across processes):
- `{"presence": [entry, ...]}`, the room's full list, once, when it joins (no resync is
  ever needed: the deltas are exact);
- `{"presence_delta": {"joined": [entry, ...], "left": ["<id>", ...]}}`, at most one per
  room and loop pass, with every change of the pass (either list may be empty), broadcast
  to the room's TAGGED users like any message: encoded once, compressed once per room
  stream. A newcomer gets its list at the end of the pass it joined in, then that pass's
  delta, which names it too and changes nothing in its list.
Binary messages stay binary frames.

A user's query (query.py) is parsed once, at the upgrade: `?handle=` and `?after=` are
kept until they are used, never read again from the request target.
"""
from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..limits import IDLE_ROOMS_PER_TURN
from ..protocol import handshake
from ..protocol.query import Pairs, first
from ..scale.redis_link import PRESENCE_REFRESH, PRESENCE_TTL
from .history import Entry, History
from .presence import MAX_HANDLE, MAX_ORIGINS, Presence, encode_delta, encode_full
from .replay import Replays

if TYPE_CHECKING:
    from ..net.connection import Connection
    from ..net.loop import Loop, Repeating
    from ..scale.redis_link import RedisLink
    from .delivery import Delivery
    from .user import User

log = logging.getLogger("websocket")

LOBBY = "/"
MAX_ROOM_LENGTH = 256  # characters of a room name: a path, and a Redis channel name
TAGGED = "chat.history.v1"  # the chat page's subprotocol: JSON text with message ids


def tagged_text(message: str, entry_id: str | None = None) -> str:
    """A text message for a TAGGED user (see the module docstring)."""
    value = {"id": entry_id, "text": message} if entry_id else {"text": message}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def room_of(resource: str) -> str:
    """The room of a request target: its path (RFC 3986 §3.3), without the query (§3.4)."""
    path = resource.split("?", 1)[0].split("#", 1)[0]
    return path if path.startswith("/") else LOBBY


def check_room(room: str) -> str:
    """A room name given by a callback: a path of at most MAX_ROOM_LENGTH characters."""
    if not isinstance(room, str) or not room.startswith("/"):
        raise ValueError(f"a room is a path starting with '/', not {room!r}")
    if len(room) > MAX_ROOM_LENGTH:
        raise ValueError(f"a room name has at most {MAX_ROOM_LENGTH} characters")
    return room


class Rooms:
    """The local users of every room, their history and their link; see the docstring."""

    def __init__(self, delivery: Delivery, loop: Loop, history: History | None = None,
                 link: RedisLink | None = None) -> None:
        self.delivery = delivery
        self.loop = loop
        self.history = history
        self.link = link
        self.members: dict[str, dict[int, User]] = {}
        self.server_id = link.server_id if link is not None else secrets.token_hex(6)
        self.seq = 0  # numbers this process's messages (history ids: server_id.seq)
        self.loading: dict[str, list[User]] = {}  # newcomers waiting for Redis's history
        # Newcomers being sent their room's history, what comes meanwhile behind it.
        self.replays = (Replays(delivery, loop, history, tagged_text)
                        if history is not None else None)
        # Who is in each room (presence.py), sent once per pass (`_send_presence`); the
        # page users who joined a room this pass, for its full list; our users' names
        # (?handle=) and the ids they resume after (?after=), from their query.
        self.presence = Presence(self.server_id, always=link is not None)
        self._presence_soon = False
        self._newcomers: dict[str, list[User]] = {}
        self._names: dict[int, str] = {}
        self._after: dict[int, str] = {}
        self._origins_warned = False
        self._refresh: Repeating | None = None
        self._sweep: Repeating | None = None
        if link is not None:
            link.deliver = self._deliver_remote
            link.on_presence = self._remote_presence
            link.on_presence_query = self._presence_asked
            link.on_live = self._room_live
            if history is not None:
                link.history_size = history.size
                link.history_idle = history.idle

    def start(self) -> None:
        if self.link is not None:
            self.link.start()
            self._refresh = self.loop.call_every(PRESENCE_REFRESH, self._refresh_presence)
        if self.history is not None:
            self._sweep = self.loop.call_every(min(60.0, self.history.idle / 2),
                                               self._forget_idle)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        for timer in (self._sweep, self._refresh):
            if timer is not None:
                timer.cancel()

    # -- who is where ------------------------------------------------------------------------

    def users(self, room: str) -> list[User]:
        return list(self.members.get(room, {}).values())

    def names(self) -> list[str]:
        """Every room with a local user, in order of creation."""
        return list(self.members)

    def _add(self, user: User) -> None:
        users = self.members.get(user.room)
        if users is None:
            users = self.members[user.room] = {}
            if self.link is not None:
                self.presence.open(user.room)  # the others' lists count from now on
                self.link.subscribe(user.room)
        users[user.id] = user

    def _remove(self, user: User) -> None:
        room = user.room
        if self.replays is not None:
            self.replays.cancel(user.conn)
        waiting = self.loading.get(room)
        if waiting is not None and user in waiting:
            waiting.remove(user)
        users = self.members.get(room)
        if users is None or users.pop(user.id, None) is None:
            return
        self.presence.leave(room, user.id, user.subprotocol == TAGGED)
        self._presence_soon_due()
        if not users:
            del self.members[room]
            self.presence.close(room)
            if self.link is not None:
                self.link.unsubscribe(room)
                if self.history is not None:
                    self.history.unload(room)  # others may add to Redis's list meanwhile

    def enter(self, user: User, query: Pairs | None = None) -> None:
        """A WebSocket user is open: its room's history, then the room's broadcasts.
        `query`: its request's (query.py), parsed once at the upgrade: its presence name
        (`?handle=`) and, for a page, the message it resumes after (`?after=`)."""
        if query is not None:
            handle = (first(query, "handle") or "")[:MAX_HANDLE]
            if handle:
                self._names[user.id] = handle
            after = first(query, "after")
            if after and user.subprotocol == TAGGED:
                self._after[user.id] = after
        self._add(user)
        room = user.room
        history, link = self.history, self.link
        if history is not None and link is not None and link.up and not history.loaded(room):
            # The room is new here and its history is in Redis: live messages wait too.
            waiting = self.loading.get(room)
            if waiting is None:
                self.loading[room] = [user]
                link.load_history(room, lambda entries: self._loaded(room, entries))
            else:
                waiting.append(user)
            return
        self._replay_and_join(user)

    def leave(self, user: User) -> None:
        """The user left the chat (delivery.leave does the rest)."""
        self._remove(user)
        self._names.pop(user.id, None)
        self._after.pop(user.id, None)

    def move(self, user: User, room: str) -> None:
        """server.join: the user gets `room`'s history and broadcasts from now on."""
        if self.replays is not None:
            self.replays.stop(user.conn)  # (what was sent to it in its old room is queued)
            if not user.is_open:
                return  # ... and that was more than it could take
        self._remove(user)
        self.delivery.leave_room(user.conn)
        user.room = room
        self.enter(user)

    def _replay_and_join(self, user: User) -> None:
        """The room's history as the user drains it (replay.py), then its broadcasts."""
        if self.replays is None:
            self._join(user)
            return
        tagged = user.subprotocol == TAGGED
        # Resuming after a message (?after=, the room it connected to only): only what
        # came after it (the replay tells of a gap).
        after = self._after.pop(user.id, "") if tagged else ""
        self.replays.start(user, tagged, after, self._join)

    def _join(self, user: User) -> None:
        """The user gets its room's broadcasts from now on (its replay, if any, is done),
        and the room's presence counts it: a page user gets the full list in this pass."""
        tagged = user.subprotocol == TAGGED
        self.delivery.join(user.conn, rfc6455=user.protocol == handshake.RFC6455,
                           room=user.room, tagged=tagged, deflate=user.deflate)
        room = user.room
        if tagged and room not in self.presence.rooms:  # its first page user: who is here
            self.presence.open(room, ((other.id, self._name(other))
                                      for other in self.members[room].values()
                                      if other is not user))
        if room in self.presence.rooms:  # (kept: a page user is there, or with Redis)
            self.presence.enter(room, user.id, self._name(user), tagged)
        if tagged:
            self._newcomers.setdefault(room, []).append(user)
        self._presence_soon_due()

    def flushed(self, conn: Connection) -> None:
        """The kernel took some of a behind user's output (Server.flushed): a replay that
        waits for it may go on."""
        if self.replays is not None:
            self.replays.flushed(conn)

    def send(self, user: User, message: str | bytes) -> bool:
        """server.send: one message for one user; behind its replay while one is sent."""
        if self.replays is not None:
            waited = self.replays.send(user.conn, message)
            if waited is not None:
                return waited
        return self.delivery.send(user.conn, message, user.protocol == handshake.RFC6455)

    def _name(self, user: User) -> str:
        """Its presence name: its `?handle=`, or `user N`."""
        return self._names.get(user.id) or f"user {user.id}"

    # -- presence (presence.py): a newcomer's full list, then one delta per room and pass --

    def _presence_soon_due(self) -> None:
        if not self._presence_soon:
            self._presence_soon = True
            self.loop.call_soon(self._send_presence)

    def _send_presence(self) -> None:
        """Once per pass, for each room that changed: our list to the other processes
        (when ours changed, or they asked), the full list to the room's page users that
        joined in this pass, then the pass's changes as one delta to all its page users,
        encoded once and compressed once for the room (Delivery.broadcast_tagged). A
        newcomer gets the delta too: its list is the pass's end state, so the delta
        changes nothing in it."""
        self._presence_soon = False
        presence, link = self.presence, self.link
        for room in presence.take_due():
            state = presence.rooms.get(room)
            if state is None:
                continue
            if state.publish and link is not None:
                entries = state.to_publish()
                if entries is not None:
                    link.publish_presence(room, entries)
            users = self.members.get(room)
            if users is None or not presence.needed(room):  # nobody to tell
                presence.forget(room)
                self._newcomers.pop(room, None)
                continue
            newcomers = self._newcomers.pop(room, ())
            if newcomers:
                full = encode_full(state.here.values())
                for user in newcomers:
                    if user.is_open and users.get(user.id) is user:
                        self.delivery.send(user.conn, full, True)
            joined, left = state.take_delta()
            if joined or left:
                self.delivery.broadcast_tagged(room, encode_delta(joined, left).encode())

    def _remote_presence(self, room: str, origin: str, entries: list[tuple[int, str]]
                         ) -> None:
        """Another process's whole list of its users in `room` (redis_link.py)."""
        if (not self.presence.heard(room, origin, entries, self.loop.now + PRESENCE_TTL)
                and not self._origins_warned):
            self._origins_warned = True
            log.warning("presence: more than %d other processes have users in %s; the "
                        "users of the others are not listed (logged once)", MAX_ORIGINS,
                        room)
        if self.presence.due:
            self._presence_soon_due()

    def _presence_asked(self, room: str) -> None:
        """Another process asks who of ours is in `room`."""
        self.presence.ask(room)
        self._presence_soon_due()

    def _room_live(self, room: str) -> None:
        """Our subscription to the room is live: ask the others who is there, say ours."""
        assert self.link is not None
        self.link.publish_presence(room, None)
        self._presence_asked(room)

    def _refresh_presence(self) -> None:
        """Every PRESENCE_REFRESH (with Redis): our lists again, to the others only, and
        the processes not heard from in PRESENCE_TTL leave."""
        self.presence.expire(self.loop.now)
        self.presence.refresh()
        if self.presence.due:
            self._presence_soon_due()

    def _loaded(self, room: str, entries: list[tuple[str, str | bytes]] | None) -> None:
        assert self.history is not None
        if entries is not None:
            self.history.load(room, (Entry(*pair) for pair in entries), self.loop.now)
        for user in self.loading.pop(room, []):
            if user.is_open and user.room == room:
                # (None: Redis went away first; the history this process has.)
                self._replay_and_join(user)

    def _forget_idle(self) -> None:
        """The idle sweep, IDLE_ROOMS_PER_TURN rooms a pass (42,000 rooms forgotten at once
        would stall the loop ~0.1 s); the rest in the next passes."""
        assert self.history is not None
        self.history.forget_idle(self.loop.now, self.members, IDLE_ROOMS_PER_TURN)
        if self.history.idle_due(self.loop.now):
            self.loop.call_soon(self._forget_idle)

    # -- messages ----------------------------------------------------------------------------

    def broadcast(self, message: str | bytes, excluded: Collection[Connection],
                  room: str | None) -> int:
        """server.broadcast: kept in the room's history, published, delivered here."""
        seq = 0
        entry_id: str | None = None
        if self.history is not None and room is not None:
            self.seq = seq = self.seq + 1
            entry_id = f"{self.server_id}.{seq}"
            self.history.add(room, entry_id, message, self.loop.now)
        if self.link is not None:
            self.link.publish(room, message, seq)
        delivered = self.delivery.broadcast(message, excluded, room,
                                            self._tag(message, entry_id))
        if self.replays is not None:  # the users still replaying: behind their replay
            delivered += self.replays.broadcast(message, room, entry_id or "", excluded)
        return delivered

    def _tag(self, message: str | bytes, entry_id: str | None) -> bytes | None:
        if not self.delivery.tagged or not isinstance(message, str):
            return None  # nobody to tag it for
        return tagged_text(message, entry_id).encode("utf-8")

    def _deliver_remote(self, room: str | None, message: str | bytes, entry_id: str) -> None:
        """A broadcast from another process (--redis): to our users of that room."""
        if self.history is not None and room is not None:
            if not self.history.add(room, entry_id, message, self.loop.now):
                return  # had it already (from the room's list in Redis)
        else:
            entry_id = ""
        self.delivery.broadcast(message, room=room, tagged=self._tag(message, entry_id or None))
        if self.replays is not None:
            self.replays.broadcast(message, room, entry_id)
