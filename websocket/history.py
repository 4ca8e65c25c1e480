"""Recent history: the last N broadcasts of each room, replayed to a newcomer (--history N).

A room's history is a bounded deque of entries, each with an id `<origin>.<seq>`: the
process that accepted the message and its sequence number (one counter per process, the
number the Redis link puts on the wire, redis_link.py). Every process keeps the history of the
rooms its users are in, fed by its own broadcasts and by those that reach it through
Redis; with Redis, the history also lives in a capped list per room, and a process whose
room gets its first user loads that list first (`load`), so a newcomer on any server sees
the same recent messages.

Memory is bounded: N entries per room, and a room with no local user and no message for
`idle` seconds is forgotten (`forget_idle`; in Redis, the list expires after as long).
The wire format of a replay is the article's plain text: the newcomer simply gets the
messages, in order, before anything live.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable


class Entry:
    __slots__ = ("id", "message")

    def __init__(self, entry_id: str, message: str | bytes) -> None:
        self.id = entry_id
        self.message = message

    def __repr__(self) -> str:
        return f"<Entry {self.id} {self.message!r:.40}>"


class RoomHistory:
    __slots__ = ("entries", "ids", "last_used", "loaded")

    def __init__(self, size: int, now: float) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self.ids: set[str] = set()  # of the entries, to drop a message arriving twice
        self.last_used = now
        self.loaded = False  # Redis's list for the room has been merged in


class History:
    """The recent messages of every room this process knows; see the module docstring."""

    def __init__(self, size: int, idle: float) -> None:
        if size < 1:
            raise ValueError("a history keeps at least 1 message")
        self.size = size
        self.idle = idle
        self.rooms: dict[str, RoomHistory] = {}

    def _room(self, room: str, now: float) -> RoomHistory:
        found = self.rooms.get(room)
        if found is None:
            found = self.rooms[room] = RoomHistory(self.size, now)
        found.last_used = now
        return found

    def add(self, room: str, entry_id: str, message: str | bytes, now: float) -> bool:
        """Keep a message; False (and nothing kept) if the room has it already."""
        history = self._room(room, now)
        if entry_id in history.ids:
            return False
        if len(history.entries) == self.size:
            history.ids.discard(history.entries[0].id)
        history.entries.append(Entry(entry_id, message))
        history.ids.add(entry_id)
        return True

    def entries(self, room: str) -> list[Entry]:
        history = self.rooms.get(room)
        return list(history.entries) if history is not None else []

    def loaded(self, room: str) -> bool:
        history = self.rooms.get(room)
        return history is not None and history.loaded

    def load(self, room: str, stored: Iterable[Entry], now: float) -> None:
        """Merge the room's list from Redis (oldest first) with what came here meanwhile:
        Redis's order first, then what it did not have yet; the newest `size` stay."""
        history = self._room(room, now)
        merged = list(stored)
        known = {entry.id for entry in merged}
        merged += [entry for entry in history.entries if entry.id not in known]
        history.entries = deque(merged[-self.size:], maxlen=self.size)
        history.ids = {entry.id for entry in history.entries}
        history.loaded = True

    def forget_idle(self, now: float, in_use: Collection[str]) -> int:
        """Forget rooms without local users and without messages for `idle` s; how many."""
        idle = [room for room, history in self.rooms.items()
                if room not in in_use and now - history.last_used >= self.idle]
        for room in idle:
            del self.rooms[room]
        return len(idle)

    def unload(self, room: str) -> None:
        """The room lost its last local user: Redis's list is to be loaded again next time
        (other processes may add to it meanwhile)."""
        history = self.rooms.get(room)
        if history is not None:
            history.loaded = False
