"""What the server does with messages: the built-in callbacks and drop-in scripts.

A callback mirrors the article's `process($user, $msg, $server)`:

    def process(user, message, server):   # message: str (text) or bytes (binary)
        server.broadcast(message)

A drop-in script is a Python file defining `process` and, optionally,
`on_connect(user, server)`, `on_disconnect(user, server)`, `on_start(server)` (called once
when the server starts serving: the place to start timers with `server.call_every`),
`on_request(request, server)` (called with each upgrade request, an
`access.UpgradeRequest`, before the 101: return None to accept, or an HTTP status or
`(status, reason)` to refuse; if it raises, the request gets a 500 and the traceback is
logged) and `SUBPROTOCOLS`, the RFC 6455 subprotocols it speaks in order of preference
(e.g. `["chat.v2", "chat"]`), and `PAGES`, a folder of its own pages (relative to the
script) that the server serves instead of `client/`, with the same path rules.

`ScriptWatcher` is `--reload`: it notices when the script's file changes and loads it
again; a script that fails to load raises `CallbackError` and the caller keeps the old one.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .access import UpgradeRequest
    from .user import User

log = logging.getLogger("websocket")


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
RequestHook = Callable[["UpgradeRequest", Server], Any]  # None, a status or (status, reason)


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
    on_request: RequestHook | None = None
    name: str = "echo to all"
    subprotocols: tuple[str, ...] = ()  # RFC 6455 subprotocols, in order of preference
    pages: Path | None = None  # the script's own page folder, served instead of client/
    source: Path | None = None  # the script's file (None for the built-in callbacks)


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
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # during exec, as an import would (dataclasses need it)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # any error in someone else's script: one line, no traceback
        _restore(module_name, previous)
        raise CallbackError(f"callback script {spec} failed to load: "
                            f"{type(exc).__name__}: {exc}") from exc
    try:
        return _callbacks_of(module, spec, path)
    except CallbackError:
        _restore(module_name, previous)
        raise


def _restore(module_name: str, previous: object) -> None:
    """Put back the module a failed load replaced (a failed --reload keeps the old one)."""
    if previous is None:
        sys.modules.pop(module_name, None)
    else:
        sys.modules[module_name] = previous  # type: ignore[assignment]


def _callbacks_of(module: Any, spec: str, path: Path) -> Callbacks:
    process = getattr(module, "process", None)
    if not callable(process):
        raise CallbackError(f"callback script {spec} does not define process(user, message, "
                            "server)")
    hooks = {name: getattr(module, name, None)
             for name in ("on_connect", "on_disconnect", "on_start", "on_request")}
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise CallbackError(f"{name} in {spec} is not a function")
    subprotocols = getattr(module, "SUBPROTOCOLS", ())
    if isinstance(subprotocols, str) or not all(isinstance(p, str) for p in subprotocols):
        raise CallbackError(f"SUBPROTOCOLS in {spec} must be a list of strings")
    pages_name = getattr(module, "PAGES", None)
    pages = None
    if pages_name is not None:
        if not isinstance(pages_name, str):
            raise CallbackError(f"PAGES in {spec} must be a folder name (a string)")
        pages = (path.resolve().parent / pages_name).resolve()
        if not pages.is_dir():
            raise CallbackError(f"PAGES in {spec}: {pages} is not a folder")
    return Callbacks(process, hooks["on_connect"], hooks["on_disconnect"], hooks["on_start"],
                     hooks["on_request"], name=str(path), subprotocols=tuple(subprotocols),
                     pages=pages,
                     source=path)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next: mtime, size and inode (an editor
    that saves by renaming makes a new inode); None while the file is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


class ScriptWatcher:
    """`--reload`: polled from a loop timer (no threads), it loads the script again when its
    file has changed since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = _stamp(path)

    def poll(self) -> Callbacks | None:
        """The newly loaded callbacks if the file changed, else None.

        Raises:
            CallbackError: the changed file does not load (the caller keeps the old one;
                the next change is tried again).
        """
        stamp = _stamp(self.path)
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        return load(str(self.path))

    def reload(self) -> Callbacks | None:
        """`poll`, with a failure logged (one line; the traceback at debug level) as None."""
        try:
            return self.poll()
        except CallbackError as exc:
            log.error("reload failed, the previous version keeps running: %s", exc)
            log.debug("why %s did not load", self.path, exc_info=exc.__cause__ or exc)
            return None


class ScriptTimers:
    """The timers a script started with `call_later` and `call_every`: `--reload` cancels
    them when a new version takes over (its `on_start` starts its own)."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def keep(self, handle: Any) -> None:
        """Remember `handle` (a loop Timer or Repeating); now and then forget the ones that
        are cancelled or have run, so that a script's one-shot timers do not pile up."""
        handles = self._handles
        handles.append(handle)
        if len(handles) >= 64 and len(handles) & (len(handles) - 1) == 0:
            handles[:] = [h for h in handles if not h.cancelled
                          and getattr(h, "when", float("inf")) > time.monotonic()]

    def cancel_all(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
