"""Presence: who is in each room, as the chat page is told it, as state and changes.

No I/O: rooms.py feeds it (a user of ours is in a room or not; another process listed its
users) and, once per loop pass, takes each changed room's delta and the full list for its
newcomers, and sends them (the wire format is in rooms.py's docstring).

A room is kept only while someone needs it: a page user (TAGGED) is in it, or, with Redis
(`always`), a user of ours, whose list the others are told. A room of clients that are no
pages, in a process alone, costs nothing here; its first page user `open`s it with
everyone already there.

Everyone in a room is an entry: an id, `<origin>.<user id>` (the origin is the process's
server id, so ids are unique across processes; names are not), and a name, the user's
`?handle=` (at most MAX_HANDLE characters) or `user N`. A room's state is what its users
are told: `here`, every entry in order of arrival. Changes in one pass are gathered per
room, so a delta says each entry once, with its end state: an id that came and went in the
same pass says nothing. A newcomer's full list is taken at the end of the pass, just
before the delta, so the delta (which it gets too) changes nothing in it: "joined" names
only entries present at the end, "left" only ids absent at the end.

Another process's entries come as its whole list (redis_link.py, at most MAX_PER_ORIGIN,
from at most MAX_ORIGINS processes per room) and are diffed against what it said before,
so only what changed becomes a delta; an origin not heard from until its deadline
(PRESENCE_TTL) is forgotten, its entries a "left".
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import islice

MAX_HANDLE = 32  # characters of a presence name (the page's handle rule)
MAX_PER_ORIGIN = 1000  # entries one process publishes of a room, and is believed for
MAX_ORIGINS = 64  # other processes whose lists a room holds; more are not listed


def encode_entry(entry_id: str, name: str) -> str:
    """`{"id": ..., "name": ...}`: one entry, as every list and delta holds it."""
    return json.dumps({"id": entry_id, "name": name}, ensure_ascii=False,
                      separators=(",", ":"))


def encode_full(entries: Iterable[str]) -> str:
    """`{"presence": [entry, ...]}`: a newcomer's full list, of encoded entries."""
    return '{"presence":[' + ",".join(entries) + "]}"


def encode_delta(joined: list[str], left: list[str]) -> str:
    """`{"presence_delta": {"joined": [entry, ...], "left": [id, ...]}}`: one pass's
    changes, `joined` encoded entries."""
    return ('{"presence_delta":{"joined":[' + ",".join(joined) + '],"left":'
            + json.dumps(left, ensure_ascii=False, separators=(",", ":")) + "}}")


class RoomPresence:
    """One room's entries, and what changed in them this pass.

    Each entry is kept encoded (`encode_entry`), once, when it changes: a newcomer's full
    list is then one join of strings, not the encoding of every entry again."""

    __slots__ = ("here", "local", "pages", "remote", "before", "publish", "published")

    def __init__(self) -> None:
        self.here: dict[str, str] = {}  # id -> encoded entry: everyone, in order of arrival
        self.local: dict[int, str] = {}  # this process's users: user id -> name
        self.pages = 0  # how many of them are page users (TAGGED): told of the room
        # other processes: origin -> (their entries, id -> name; when they expire)
        self.remote: dict[str, tuple[dict[str, str], float]] = {}
        self.before: dict[str, str | None] = {}  # ids changed this pass -> entry at its start
        self.publish = False  # our users changed (or were asked for): tell the others
        self.published: tuple[int, ...] | None = None  # who we said last (None: say it)

    def _set(self, entry_id: str, name: str | None) -> None:
        """Entry `entry_id` is now called `name` (None: gone)."""
        old = self.here.get(entry_id)
        if name is None:
            if old is None:
                return
            del self.here[entry_id]
        else:
            self.here[entry_id] = encode_entry(entry_id, name)
        if entry_id not in self.before:
            self.before[entry_id] = old

    def take_delta(self) -> tuple[list[str], list[str]]:
        """(joined, left) since the last call: each changed entry once, in its end state;
        joined as encoded entries, left as ids."""
        joined: list[str] = []
        left: list[str] = []
        here = self.here
        for entry_id, old in self.before.items():
            new = here.get(entry_id)
            if new == old:
                continue  # came and went (or went and came back) within the pass
            if new is None:
                left.append(entry_id)
            else:
                joined.append(new)
        self.before = {}
        return joined, left

    def to_publish(self) -> list[tuple[int, str]] | None:
        """Ours for the others, (user id, name) of the first MAX_PER_ORIGIN, if we are to
        say them: they differ from what we said last, or we were asked (`published` None).
        A change past the first MAX_PER_ORIGIN (the 1,001st user reloading its page) is
        not said again: the others would not believe it."""
        self.publish = False
        ids = tuple(islice(self.local, MAX_PER_ORIGIN))
        if ids == self.published:
            return None
        self.published = ids
        local = self.local
        return [(user_id, local[user_id]) for user_id in ids]


class Presence:
    """Every room's presence in this process (see the module docstring)."""

    def __init__(self, origin: str, always: bool = False) -> None:
        self.origin = origin
        self.always = always  # keep every room with a user of ours (Redis: we publish)
        self.rooms: dict[str, RoomPresence] = {}
        self.due: dict[str, None] = {}  # rooms changed (or to be published) this pass

    def entry_id(self, user_id: int) -> str:
        return f"{self.origin}.{user_id}"

    def open(self, room: str, present: Iterable[tuple[int, str]] = ()) -> None:
        """Keep `room` from now on, with our users `present` already (no change to tell:
        nobody who is told was there)."""
        if room in self.rooms:
            return
        state = self.rooms[room] = RoomPresence()
        for user_id, name in present:
            state.local[user_id] = name
            state.here[self.entry_id(user_id)] = encode_entry(self.entry_id(user_id), name)

    def enter(self, room: str, user_id: int, name: str, page: bool = False) -> None:
        """A user of ours is in `room` from now on (`page`: a page user, told of it). A
        room not kept (`open`) ignores it."""
        state = self.rooms.get(room)
        if state is None:
            return
        state.local[user_id] = name
        state.pages += page
        state._set(self.entry_id(user_id), name)
        state.publish = True
        self.due[room] = None

    def leave(self, room: str, user_id: int, page: bool = False) -> None:
        """A user of ours left `room` (nothing if it was not there)."""
        state = self.rooms.get(room)
        if state is None or state.local.pop(user_id, None) is None:
            return
        state.pages -= page
        state._set(self.entry_id(user_id), None)
        state.publish = True
        self.due[room] = None

    def needed(self, room: str) -> bool:
        """Is the room still to be kept? (With a page user, or `always`.)"""
        state = self.rooms.get(room)
        return state is not None and (self.always or state.pages > 0)

    def ask(self, room: str) -> None:
        """Another process asks who of ours is in `room`: publish our list this pass."""
        state = self.rooms.get(room)
        if state is not None:
            state.publish = True
            state.published = None
            self.due[room] = None

    def heard(self, room: str, origin: str, entries: list[tuple[int, str]],
              until: float) -> bool:
        """Process `origin` says these are its users of `room` (all of them), believed
        until `until`; an empty list: it has none any more. False if it is not listed:
        the room holds MAX_ORIGINS others already."""
        state = self.rooms.get(room)
        if state is None or origin == self.origin:
            return True  # nobody of ours there to tell; or our own words back
        previous = state.remote.get(origin)
        if previous is None and not entries:
            return True
        if previous is None and len(state.remote) >= MAX_ORIGINS:
            return False
        new = {f"{origin}.{user_id}": name[:MAX_HANDLE]
               for user_id, name in islice(entries, MAX_PER_ORIGIN)}
        old = previous[0] if previous is not None else {}
        for entry_id in old:
            if entry_id not in new:
                state._set(entry_id, None)
        for entry_id, name in new.items():
            if old.get(entry_id) != name:
                state._set(entry_id, name)
        if new:
            state.remote[origin] = (new, until)
        else:
            del state.remote[origin]
        if state.before:
            self.due[room] = None
        return True

    def expire(self, now: float) -> None:
        """Forget the processes not heard from in time: their entries leave."""
        for room, state in self.rooms.items():
            gone = [origin for origin, (_, until) in state.remote.items() if until <= now]
            for origin in gone:
                for entry_id in state.remote.pop(origin)[0]:
                    state._set(entry_id, None)
            if gone:
                self.due[room] = None

    def refresh(self) -> None:
        """Every room with users of ours publishes its list again (the others' deadline)."""
        for room, state in self.rooms.items():
            if state.local:
                state.publish = True
                state.published = None
                self.due[room] = None

    def take_due(self) -> list[str]:
        due, self.due = self.due, {}
        return list(due)

    def close(self, room: str) -> None:
        """`room` has no user of ours any more: forgotten once this pass is sent (our
        empty list still goes out)."""
        if room in self.rooms:
            self.due[room] = None

    def forget(self, room: str) -> None:
        """Nobody here to tell: the room's state goes."""
        self.rooms.pop(room, None)
