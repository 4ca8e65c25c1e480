"""Recent history: the last N broadcasts of each room, replayed to a newcomer (--history N).

A room's history is a bounded deque of entries, each with an id `<origin>.<seq>`: the
process that accepted the message and its sequence number (one counter per process, the
number the Redis link puts on the wire, redis_link.py). Every process keeps the history of the
rooms its users are in, fed by its own broadcasts and by those that reach it through
Redis; with Redis, the history also lives in a capped list per room, and a process whose
room gets its first user loads that list first (`load`), so a newcomer on any server sees
the same recent messages.

Memory is bounded: N entries per room, a room with no local user and no message for
`idle` seconds is forgotten (`forget_idle`; in Redis, the list expires after as long), and
all rooms together hold at most `max_bytes` (HISTORY_MEMORY): past it the least recently
used other rooms are forgotten first, then the current room's oldest entries, so a client
that opens thousands of rooms with a large message in each cannot grow the server.
The wire format of a replay is the article's plain text: the newcomer simply gets the
messages, in order, before anything live.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable

HISTORY_MEMORY = 64 * 1024 * 1024  # bytes of messages kept by all rooms' histories together
ENTRY_COST = 100  # what an entry costs beyond its message (objects, the id), roughly


class Entry:
    __slots__ = ("id", "message", "cost")

    def __init__(self, entry_id: str, message: str | bytes) -> None:
        self.id = entry_id
        self.message = message
        self.cost = len(message) + len(entry_id) + ENTRY_COST  # str: ~1 byte a character

    def __repr__(self) -> str:
        return f"<Entry {self.id} {self.message!r:.40}>"


class RoomHistory:
    __slots__ = ("entries", "ids", "last_used", "loaded", "cost")

    def __init__(self, size: int, now: float) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self.ids: set[str] = set()  # of the entries, to drop a message arriving twice
        self.last_used = now
        self.loaded = False  # Redis's list for the room has been merged in
        self.cost = 0  # of its entries


class History:
    """The recent messages of every room this process knows; see the module docstring."""

    def __init__(self, size: int, idle: float, max_bytes: int = HISTORY_MEMORY) -> None:
        if size < 1:
            raise ValueError("a history keeps at least 1 message")
        self.size = size
        self.idle = idle
        self.max_bytes = max_bytes
        self.cost = 0  # of every room's entries
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
            self._drop_oldest(history)
        entry = Entry(entry_id, message)
        history.entries.append(entry)
        history.ids.add(entry_id)
        history.cost += entry.cost
        self.cost += entry.cost
        self._trim(room)
        return True

    def _drop_oldest(self, history: RoomHistory) -> None:
        oldest = history.entries.popleft()
        history.ids.discard(oldest.id)
        history.cost -= oldest.cost
        self.cost -= oldest.cost

    def _trim(self, keep: str) -> None:
        """Over max_bytes: forget the least recently used other rooms, then the oldest of
        `keep`'s own entries (but its newest)."""
        while self.cost > self.max_bytes:
            others = [(h.last_used, name) for name, h in self.rooms.items() if name != keep]
            if others:
                self._forget(min(others)[1])
                continue
            history = self.rooms[keep]
            if len(history.entries) <= 1:
                return
            self._drop_oldest(history)

    def _forget(self, room: str) -> None:
        history = self.rooms.pop(room)
        self.cost -= history.cost

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
        self.cost -= history.cost
        history.cost = sum(entry.cost for entry in history.entries)
        self.cost += history.cost
        history.loaded = True
        self._trim(room)

    def forget_idle(self, now: float, in_use: Collection[str]) -> int:
        """Forget rooms without local users and without messages for `idle` s; how many."""
        idle = [room for room, history in self.rooms.items()
                if room not in in_use and now - history.last_used >= self.idle]
        for room in idle:
            self._forget(room)
        return len(idle)

    def unload(self, room: str) -> None:
        """The room lost its last local user: Redis's list is to be loaded again next time
        (other processes may add to it meanwhile)."""
        history = self.rooms.get(room)
        if history is not None:
            history.loaded = False
