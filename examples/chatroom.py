"""A chat room with handles, /who, /me, join and leave notices, and a history that
survives a restart of the server.

    CHATROOM_DB=chat.sqlite3 python3 server.py 127.0.0.1 8080 --callback examples/chatroom.py

Then open http://127.0.0.1:8080/ in two tabs. Commands:

    /nick NAME   take a handle (1-32 letters, digits, - or _; not one in use)
    /who         who is here
    /me ACTION   "* alice waves"

The last 100 lines are kept in SQLite (the standard library's sqlite3), in the file that
CHATROOM_DB names (default: chatroom.sqlite3 in the current folder), and replayed to every
newcomer. Join, leave and nick notices are not kept: they are about the moment.
"""
from __future__ import annotations

import os
import re
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the type hints only: a script needs nothing from the server
    from websocket.chat.callbacks import Server
    from websocket.chat.user import User

HISTORY = 100  # lines kept and replayed
NICK = re.compile(r"[A-Za-z0-9_-]{1,32}")
_db: sqlite3.Connection | None = None


def db() -> sqlite3.Connection:
    """The history database, opened (and created) on first use."""
    global _db
    if _db is None:
        _db = sqlite3.connect(os.environ.get("CHATROOM_DB", "chatroom.sqlite3"))
        # The server's one loop waits for every write: WAL with synchronous=NORMAL makes a
        # commit an append without an fsync each time. A line survives a restart of the
        # server (the process), though not necessarily a power cut.
        _db.execute("PRAGMA journal_mode=WAL")
        _db.execute("PRAGMA synchronous=NORMAL")
        _db.execute("CREATE TABLE IF NOT EXISTS history "
                    "(id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL)")
        _db.commit()
    return _db


def remember(line: str) -> None:
    """Keep `line` and forget whatever is older than the last HISTORY lines."""
    with db() as conn:  # one transaction: committed on success
        conn.execute("INSERT INTO history (line) VALUES (?)", (line,))
        conn.execute("DELETE FROM history WHERE id <= "
                     "(SELECT MAX(id) FROM history) - ?", (HISTORY,))


def history() -> list[str]:
    rows = db().execute("SELECT line FROM history ORDER BY id DESC LIMIT ?", (HISTORY,))
    return [line for (line,) in reversed(rows.fetchall())]


def nick(user: User) -> str:
    return str(user.data["nick"])


def on_start(server: Server) -> None:
    db()  # a bad CHATROOM_DB shows at start, not at the first message


def on_connect(user: User, server: Server) -> None:
    user.data["nick"] = f"guest{user.id}"
    for line in history():  # the newcomer catches up first
        server.send(user, line)
    server.send(user, f"* you are {nick(user)}; /nick NAME to change it, /who, /me ACTION")
    server.broadcast(f"* {nick(user)} joined", exclude=user)


def on_disconnect(user: User, server: Server) -> None:
    server.broadcast(f"* {nick(user)} left")


def process(user: User, message: str | bytes, server: Server) -> None:
    if not isinstance(message, str):
        server.send(user, "* only text messages here")
        return
    if message.startswith("/"):
        command, _, rest = message.partition(" ")
        rest = rest.strip()
        if command == "/nick":
            change_nick(user, rest, server)
        elif command == "/who":
            names = ", ".join(nick(other) for other in server.get_users())
            server.send(user, f"* here: {names}")
        elif command == "/me" and rest:
            say(server, f"* {nick(user)} {rest}")
        else:
            server.send(user, "* commands: /nick NAME, /who, /me ACTION")
        return
    say(server, f"{nick(user)}: {message}")


def change_nick(user: User, name: str, server: Server) -> None:
    if not NICK.fullmatch(name):
        server.send(user, "* a handle is 1-32 letters, digits, - or _")
    elif any(nick(other).lower() == name.lower() for other in server.get_users()):
        server.send(user, f"* {name} is taken")
    else:
        server.broadcast(f"* {nick(user)} is now {name}")
        user.data["nick"] = name


def say(server: Server, line: str) -> None:
    remember(line)
    server.broadcast(line)
