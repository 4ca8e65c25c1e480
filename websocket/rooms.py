"""Rooms: a user's room is the path it connected to; who is in which room, here.

`ws://host/` joins the lobby, "/"; `ws://host/python` joins "/python" (the query string is
not part of the room: RFC 3986 §3.3 and §3.4 tell the path from the query). With one page
and one path, everyone is in the lobby and the chat is the article's.

`Rooms` keeps the users of this process, room by room, in order of arrival; delivery.py
keeps the same membership as connections for the fan-out. A room exists while it has a
local user. `on_first` / `on_empty` tell the Redis link (redis_link.py) when to subscribe
to a room's channel and when to stop.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .user import User

LOBBY = "/"
MAX_ROOM_LENGTH = 256  # characters of a room name: a path, and a Redis channel name


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
    """The local users of every room, in order of arrival."""

    def __init__(self) -> None:
        self.members: dict[str, dict[int, User]] = {}
        self.on_first: Callable[[str], None] | None = None  # a room got its first user
        self.on_empty: Callable[[str], None] | None = None  # ... and lost its last one

    def add(self, user: User, room: str) -> None:
        users = self.members.get(room)
        if users is None:
            users = self.members[room] = {}
            if self.on_first is not None:
                self.on_first(room)
        users[user.id] = user

    def remove(self, user: User, room: str) -> None:
        users = self.members.get(room)
        if users is None or users.pop(user.id, None) is None:
            return
        if not users:
            del self.members[room]
            if self.on_empty is not None:
                self.on_empty(room)

    def users(self, room: str) -> list[User]:
        return list(self.members.get(room, {}).values())

    def names(self) -> list[str]:
        """Every room with a local user, in order of creation."""
        return list(self.members)
