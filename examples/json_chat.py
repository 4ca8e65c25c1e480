"""A chat in structured JSON: every message is checked, every mistake gets a clear reply.

    python3 server.py 127.0.0.1 8080 --callback examples/json_chat.py

What a client sends (one JSON object per text message):

    {"type": "say", "text": "hello"}         1-1000 characters
    {"type": "nick", "name": "alice"}        1-32 letters, digits, - or _
    {"type": "who"}

What it receives:

    {"type": "welcome", "you": "guest1"}
    {"type": "said", "from": "alice", "text": "hello", "at": "2026-12-02T10:00:00Z"}
    {"type": "nick", "from": "guest1", "to": "alice"}
    {"type": "who", "users": ["alice", "bob"]}
    {"type": "joined", "name": "..."} / {"type": "left", "name": "..."}
    {"type": "error", "error": "bad-json", "detail": "Expecting value at character 0"}

An error reply names the problem (`bad-json`, `not-an-object`, `unknown-type`,
`bad-field`, `binary`) and says what was wrong in `detail`; the connection stays open.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the type hints only: a script needs nothing from the server
    from websocket.chat.callbacks import Server
    from websocket.chat.user import User

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TEXT = 1000
# For each type: its fields and the check each field's value must pass.
FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "say": {"text": lambda v: isinstance(v, str) and 1 <= len(v) <= MAX_TEXT},
    "nick": {"name": lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None},
    "who": {},
}
RULES = {"text": f"a string of 1-{MAX_TEXT} characters",
         "name": "1-32 letters, digits, - or _"}


class Invalid(Exception):
    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error, self.detail = error, detail


def send(server: Server, user: User, **fields: Any) -> None:
    server.send(user, json.dumps(fields, ensure_ascii=False))


def broadcast(server: Server, **fields: Any) -> None:
    server.broadcast(json.dumps(fields, ensure_ascii=False))


def parse(message: str | bytes) -> dict[str, Any]:
    """The validated request as a dict, or raise Invalid."""
    if not isinstance(message, str):
        raise Invalid("binary", "send JSON in text messages")
    try:
        request = json.loads(message)
    except json.JSONDecodeError as exc:
        raise Invalid("bad-json", f"{exc.msg} at character {exc.pos}") from None
    if not isinstance(request, dict):
        raise Invalid("not-an-object", "a message is a JSON object with a \"type\"")
    kind = request.get("type")
    if kind not in FIELDS:
        raise Invalid("unknown-type", f"type must be one of {', '.join(sorted(FIELDS))}")
    expected = FIELDS[kind]
    extra = set(request) - set(expected) - {"type"}
    if extra:
        raise Invalid("bad-field", f"unexpected field(s) for {kind}: {', '.join(sorted(extra))}")
    for field, check in expected.items():
        if field not in request:
            raise Invalid("bad-field", f"{kind} needs {field}: {RULES[field]}")
        if not check(request[field]):
            raise Invalid("bad-field", f"{field} must be {RULES[field]}")
    return request


def on_connect(user: User, server: Server) -> None:
    user.data["name"] = f"guest{user.id}"
    send(server, user, type="welcome", you=user.data["name"])
    broadcast(server, type="joined", name=user.data["name"])


def on_disconnect(user: User, server: Server) -> None:
    broadcast(server, type="left", name=user.data["name"])


def process(user: User, message: str | bytes, server: Server) -> None:
    try:
        request = parse(message)
    except Invalid as why:
        send(server, user, type="error", error=why.error, detail=why.detail)
        return
    kind = request["type"]
    if kind == "say":
        broadcast(server, type="said", **{"from": user.data["name"]}, text=request["text"],
                  at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    elif kind == "nick":
        taken = {other.data.get("name") for other in server.get_users() if other is not user}
        if request["name"] in taken:
            send(server, user, type="error", error="bad-field", detail="name is taken")
            return
        broadcast(server, type="nick", **{"from": user.data["name"]}, to=request["name"])
        user.data["name"] = request["name"]
    else:
        send(server, user, type="who", users=[u.data["name"] for u in server.get_users()])
