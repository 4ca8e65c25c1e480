"""Recent history: the last N broadcasts of each room, replayed to a newcomer (--history N).

A room's history is a bounded deque of entries, each with an id `<origin>.<seq>`: the
process that accepted the message and its sequence number (one counter per process, the
number the Redis link puts on the wire, redis_link.py). Every process keeps the history of the
rooms its users are in, fed by its own broadcasts and by those that reach it through
Redis; with Redis, the history also lives in a capped list per room, and a process whose
room gets its first user loads that list first (`load`), so a newcomer on any server sees
the same recent messages.

Memory is bounded, and counted in bytes as Python holds them: an entry costs
`sys.getsizeof` of its message and its id plus ENTRY_OVERHEAD, a room `sys.getsizeof` of
its name plus ROOM_OVERHEAD (both measured with tracemalloc: tests/test_history.py). A str
takes 1, 2 or 4 bytes a character, whichever its widest character needs, so one emoji in
a 1 MiB message makes it cost 4 MiB, and is counted so. The bounds:
- N entries per room;
- a room with no local user is forgotten `idle` seconds after its last message, or after
  the last sweep that found a user of ours in it (`forget_idle`, a bounded number of rooms
  a pass; in Redis, the list expires after as long);
- all rooms together cost at most `max_bytes` (HISTORY_MEMORY): past it the least recently
  used other rooms are forgotten first, then the current room's oldest entries (never its
  newest), so a client that opens thousands of rooms with a large message in each cannot
  grow the server.

`rooms` is kept in order of use (an OrderedDict: a message moves its room to the end), so
the least recently used room is the first one: forgetting it is O(1), and so is each room
the idle sweep looks at; nothing ever walks every room.

A newcomer's replay (replay.py) reads a room's entries where they are, by position
(`span`, `entry_at`): entry number `first` is the oldest one still kept, and the numbers
go on across the entries that are pushed out, so a replay that falls behind the history
finds out what it missed instead of keeping it alive.
"""
from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable
from typing import NamedTuple

HISTORY_MEMORY = 64 * 1024 * 1024  # bytes held by all rooms' histories together
# What sys.getsizeof does not see, measured with tracemalloc on CPython 3.11
# (tests/test_history.py, test_the_cost_is_what_python_holds, prints both):
# - an entry: its Entry object (56) and its cost, an int (28 past 256): 88 measured;
# - a room: its RoomHistory (96), its last-used float (24), and its cost, containers and
#   serial ints (28 each, some shared): 180 measured.
# Counted with a margin for the allocator's rounding (pymalloc: 16 bytes). Beside these,
# sys.getsizeof counts each message and id, each room's name, deque (with its blocks of
# 64 entries) and ids set (with its table), and the `rooms` table with its nodes. Counted
# so, a history holds 1.0-1.2 times less than its cost (1.45 with 1-character messages,
# which CPython shares): the test holds it between 1.0 and 1.25.
ENTRY_OVERHEAD = 96
ROOM_OVERHEAD = 256


class Entry:
    __slots__ = ("id", "message", "cost")

    def __init__(self, entry_id: str, message: str | bytes) -> None:
        self.id = entry_id
        self.message = message
        self.cost = sys.getsizeof(message) + sys.getsizeof(entry_id) + ENTRY_OVERHEAD

    def __repr__(self) -> str:
        return f"<Entry {self.id} {self.message!r:.40}>"


class Span(NamedTuple):
    """Where a room's history is: `serial` names this room's history (a room forgotten and
    started again has a new one); its entries are numbered `first` to `end - 1`."""
    serial: int
    first: int
    end: int


class RoomHistory:
    __slots__ = ("entries", "ids", "last_used", "loaded", "cost", "containers", "first",
                 "serial")

    def __init__(self, size: int, now: float, cost: int, serial: int) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self.ids: set[str] = set()  # of the entries, to drop a message arriving twice
        self.last_used = now
        self.loaded = False  # Redis's list for the room has been merged in
        self.containers = sys.getsizeof(self.entries) + sys.getsizeof(self.ids)
        self.cost = cost + self.containers  # of the room and its entries
        self.first = 0  # the number of entries[0]: how many were pushed out before it
        self.serial = serial


class History:
    """The recent messages of every room this process knows; see the module docstring."""

    def __init__(self, size: int, idle: float, max_bytes: int = HISTORY_MEMORY) -> None:
        if size < 1:
            raise ValueError("a history keeps at least 1 message")
        self.size = size
        self.idle = idle
        self.max_bytes = max_bytes
        # Least recently used first: a room moves to the end when it is used.
        self.rooms: OrderedDict[str, RoomHistory] = OrderedDict()
        self._table = sys.getsizeof(self.rooms)  # its table and its nodes (one a room)
        self.cost = self._table  # of every room and its entries, and of `rooms`
        self._serials = 0

    def _room(self, room: str, now: float) -> RoomHistory:
        found = self.rooms.get(room)
        if found is None:
            self._serials += 1
            found = self.rooms[room] = RoomHistory(
                self.size, now, sys.getsizeof(room) + ROOM_OVERHEAD, self._serials)
            table = sys.getsizeof(self.rooms)
            self.cost += found.cost + table - self._table
            self._table = table
        else:
            self.rooms.move_to_end(room)
        found.last_used = now
        return found

    def _recount(self, history: RoomHistory) -> None:
        """The room's deque and set have grown or shrunk: count what they take now."""
        containers = sys.getsizeof(history.entries) + sys.getsizeof(history.ids)
        change = containers - history.containers
        history.containers = containers
        history.cost += change
        self.cost += change

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
        self._recount(history)
        self._trim(room)
        return True

    def _drop_oldest(self, history: RoomHistory) -> None:
        oldest = history.entries.popleft()
        history.ids.discard(oldest.id)
        history.first += 1
        history.cost -= oldest.cost
        self.cost -= oldest.cost

    def _trim(self, keep: str) -> None:
        """Over max_bytes: forget the least recently used other rooms (the first ones: O(1)
        each), then the oldest of `keep`'s own entries (but its newest)."""
        rooms = self.rooms
        while self.cost > self.max_bytes:
            oldest = next(iter(rooms))
            if oldest != keep:
                self._forget(oldest)
                continue
            if len(rooms) > 1:  # (`keep` was just used, so it is last: not reached)
                rooms.move_to_end(keep)
                continue
            history = rooms[keep]
            if len(history.entries) <= 1:
                return
            self._drop_oldest(history)
            self._recount(history)

    def _forget(self, room: str) -> None:
        history = self.rooms.pop(room)
        table = sys.getsizeof(self.rooms)
        self.cost += table - self._table - history.cost
        self._table = table

    def entries(self, room: str) -> list[Entry]:
        history = self.rooms.get(room)
        return list(history.entries) if history is not None else []

    def span(self, room: str) -> Span:
        """Where the room's history is now (see Span); an empty span if it has none."""
        history = self.rooms.get(room)
        if history is None:
            return Span(0, 0, 0)
        return Span(history.serial, history.first, history.first + len(history.entries))

    def entry_at(self, room: str, serial: int, number: int) -> Entry | None:
        """Entry `number` of the room's history `serial`; None if it is no longer kept."""
        history = self.rooms.get(room)
        if history is None or history.serial != serial:
            return None
        index = number - history.first
        if not 0 <= index < len(history.entries):
            return None
        return history.entries[index]

    def number_of(self, room: str, entry_id: str) -> int | None:
        """The number of the room's entry with this id (see Span); None if not kept."""
        history = self.rooms.get(room)
        if history is None or entry_id not in history.ids:
            return None
        for index, entry in enumerate(history.entries):
            if entry.id == entry_id:
                return history.first + index
        return None  # pragma: no cover - `ids` holds the ids of the entries

    def loaded(self, room: str) -> bool:
        history = self.rooms.get(room)
        return history is not None and history.loaded

    def load(self, room: str, stored: Iterable[Entry], now: float) -> None:
        """Merge the room's list from Redis (oldest first) with what came here meanwhile:
        Redis's order first, then what it did not have yet; the newest `size` stay.
        The entries are renumbered: the room's history gets a new serial."""
        history = self._room(room, now)
        merged = list(stored)
        known = {entry.id for entry in merged}
        merged += [entry for entry in history.entries if entry.id not in known]
        history.entries = deque(merged[-self.size:], maxlen=self.size)
        history.ids = {entry.id for entry in history.entries}
        self._serials += 1
        history.serial = self._serials
        history.first = 0
        entries_cost = sum(entry.cost for entry in history.entries)
        history.containers = sys.getsizeof(history.entries) + sys.getsizeof(history.ids)
        cost = sys.getsizeof(room) + ROOM_OVERHEAD + history.containers + entries_cost
        self.cost += cost - history.cost
        history.cost = cost
        history.loaded = True
        self._trim(room)

    def forget_idle(self, now: float, in_use: Collection[str], most: int | None = None
                    ) -> int:
        """Forget rooms without local users and without messages for `idle` s; how many.

        The rooms are in order of use, so the idle ones are the first: the sweep stops at
        the first room used within `idle`, or after looking at `most` rooms (`idle_due`
        then says more are due). A room of ours (`in_use`) that it passes is marked used
        now and moved to the end, so it is looked at once per `idle` at most: a sweep
        costs O(rooms forgotten + rooms of ours gone quiet), never O(all rooms).
        """
        rooms = self.rooms
        forgotten = 0
        for _ in range(len(rooms) if most is None else min(most, len(rooms))):
            room, history = next(iter(rooms.items()))
            if now - history.last_used < self.idle:
                break
            if room in in_use:
                history.last_used = now
                rooms.move_to_end(room)
            else:
                self._forget(room)
                forgotten += 1
        return forgotten

    def idle_due(self, now: float) -> bool:
        """Is the least recently used room due for `forget_idle` (or a look, if in use)?"""
        for history in self.rooms.values():
            return now - history.last_used >= self.idle
        return False

    def unload(self, room: str) -> None:
        """The room lost its last local user: Redis's list is to be loaded again next time
        (other processes may add to it meanwhile)."""
        history = self.rooms.get(room)
        if history is not None:
            history.loaded = False
