"""What the server does with messages: the built-in callbacks and drop-in scripts.

A callback mirrors the article's `process($user, $msg, $server)`:

    def process(user, message, server):   # message: str (text) or bytes (binary)
        server.broadcast(message)

A drop-in script is a Python file defining `process` and, optionally,
`on_connect(user, server)`, `on_disconnect(user, server)`, `on_start(server)` (called once
when the server starts serving: the place to start timers with `server.call_every`) and
`SUBPROTOCOLS`, the RFC 6455 subprotocols it speaks in order of preference (e.g.
`["chat.v2", "chat"]`).
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .user import User


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Server(Protocol):
    """What a callback may call on the server (server.py implements it; described here so
    that this module, which the server imports, need not import the server)."""

    def get_users(self, room: str | None = None) -> list[User]: ...
    def send(self, user: User, message: str | bytes) -> bool: ...
    def broadcast(self, message: str | bytes,
                  exclude: User | Iterable[User] | None = None,
                  room: str | None = None) -> int: ...
    def join(self, user: User, room: str) -> None: ...
    def rooms(self) -> list[str]: ...
    def disconnect(self, user: User, code: int = 1000, reason: str = "") -> None: ...
    def log(self, *args: Any) -> None: ...
    def call_later(self, seconds: float, function: Callable[..., Any],
                   *args: Any) -> Cancellable: ...
    def call_every(self, seconds: float, function: Callable[..., Any],
                   *args: Any) -> Cancellable: ...


Process = Callable[["User", "str | bytes", Server], Any]
Hook = Callable[["User", Server], Any]
StartHook = Callable[[Server], Any]


def echo_to_all(user: User, message: str | bytes, server: Server) -> None:
    """The article's behaviour: every message goes to every user (of the sender's room)."""
    server.broadcast(message, room=user.room)


def echo_to_sender(user: User, message: str | bytes, server: Server) -> None:
    """`--callback echo`: answer the sender only (what Autobahn's test cases expect)."""
    server.send(user, message)


@dataclass(frozen=True)
class Callbacks:
    process: Process
    on_connect: Hook | None = None
    on_disconnect: Hook | None = None
    on_start: StartHook | None = None
    name: str = "echo to all"
    subprotocols: tuple[str, ...] = ()  # RFC 6455 subprotocols, in order of preference


BUILTIN = {
    "all": Callbacks(echo_to_all, name="echo to all"),
    "echo": Callbacks(echo_to_sender, name="echo to sender"),
}


class CallbackError(Exception):
    """A drop-in script could not be loaded (reported by the CLI in one line)."""


def load(spec: str | None) -> Callbacks:
    """`None` or "all": echo to all; "echo": echo to sender; else a path to a script."""
    if spec is None:
        return BUILTIN["all"]
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise CallbackError(f"callback script not found: {spec} (or use 'all' or 'echo')")
    module_name = f"websocket_callback_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise CallbackError(f"cannot load callback script {spec}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # any error in someone else's script: one line, no traceback
        raise CallbackError(f"callback script {spec} failed to load: "
                            f"{type(exc).__name__}: {exc}") from exc
    process = getattr(module, "process", None)
    if not callable(process):
        raise CallbackError(f"callback script {spec} does not define process(user, message, "
                            "server)")
    hooks = {name: getattr(module, name, None)
             for name in ("on_connect", "on_disconnect", "on_start")}
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise CallbackError(f"{name} in {spec} is not a function")
    subprotocols = getattr(module, "SUBPROTOCOLS", ())
    if isinstance(subprotocols, str) or not all(isinstance(p, str) for p in subprotocols):
        raise CallbackError(f"SUBPROTOCOLS in {spec} must be a list of strings")
    return Callbacks(process, hooks["on_connect"], hooks["on_disconnect"], hooks["on_start"],
                     name=str(path), subprotocols=tuple(subprotocols))
