"""Who may connect: `--path`, `--trust-proxy` and the `on_request(request, server)` hook.

Sans-I/O: a parsed upgrade request in, an `HttpError` (or nothing) out. The server calls
these in `_upgrade`, after the request has been checked as a WebSocket handshake and before
the 101 is sent:

    check_path(request.target, paths)           # --path: HttpError(404) elsewhere
    hook_request = UpgradeRequest.from_request(request, address)
    refusal = refusal_from(on_request(hook_request, server))   # None: accept

`client_address` turns the nearest proxy's `Forwarded` / `X-Forwarded-For` into an address
(only with --trust-proxy; see proxy.py for which part of those headers is believed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..errors import HttpError
from ..protocol import proxy
from ..protocol.query import Pairs, first_values, query_of

MAX_REASON = 200  # characters of a hook's reason sent back (it becomes the body's one line)
HOOK_FAILED = "the server's on_request check failed"


def path_of(target: str) -> str:
    """The path of an origin-form request target, without its query (RFC 9112 §3.2.1)."""
    return target.split("?", 1)[0]


def check_path(target: str, paths: frozenset[str] | None) -> None:
    """--path: raise HttpError(404) unless the target's path is one of `paths` (None: any).

    Exact matches of the path as sent: "/chat" allows "/chat" and "/chat?room=1", not
    "/chat/" or "/chat/x".
    """
    if paths is None:
        return
    path = path_of(target)
    if path not in paths:
        raise HttpError(404, f"no WebSocket at {path}: this server's WebSocket is at "
                             f"{', '.join(sorted(paths))}")


def parse_cookies(values: Iterable[str]) -> dict[str, str]:
    """The `Cookie` header(s) as a dict (RFC 6265 §4.2.1: `name=value; name2=value2`).

    Lenient as browsers are (§5.4 lets the user agent write them): pieces without "=" are
    skipped, names and values are stripped of spaces, a quoted value loses its quotes, and
    the first of a repeated name wins (§5.4 puts the most specific path first).
    """
    cookies: dict[str, str] = {}
    for value in values:
        for piece in value.split(";"):
            name, equals, text = piece.partition("=")
            name = name.strip()
            if not equals or not name:
                continue
            text = text.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            cookies.setdefault(name, text)
    return cookies


@dataclass(frozen=True)
class UpgradeRequest:
    """The upgrade request as `on_request(request, server)` sees it, before the 101.

    Attributes:
        path: the path of the request target, percent-decoded ("/chat").
        target: the request target as sent ("/chat?token=abc%20d").
        query: each query parameter's first value ({"token": "abc d"}).
        query_pairs: every (name, value) pair of the query, in order (query.py says how
            any query is read: "+" is a space, a bad escape stays as sent, bytes that are
            not UTF-8 become U+FFFD, empty fields are skipped).
        headers: every request header, in order, as (name, value) pairs.
        cookies: the `Cookie` header's cookies by name.
        address: the client's (host, port): the socket's, or with --trust-proxy the one
            the proxy reported (its port may be None).
        origin: the Origin header (None when absent; browsers always send it).
        host: the Host the request was for.
    """

    # Tokens and sessions live in the query, the headers and the cookies: the repr (what a
    # log line of the request would print) leaves them out.
    path: str
    target: str = field(repr=False)
    query: dict[str, str] = field(repr=False)
    query_pairs: tuple[tuple[str, str], ...] = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    cookies: dict[str, str] = field(repr=False)
    address: Any = None
    origin: str | None = None
    host: str = ""

    @classmethod
    def from_request(cls, target: str, headers: tuple[tuple[str, str], ...], address: Any,
                     origin: str | None, host: str, query: Pairs | None = None
                     ) -> UpgradeRequest:
        """`query`: the target's, parsed already (query.query_of); parsed here if None."""
        pairs = query_of(target) if query is None else query
        cookies = parse_cookies(value for name, value in headers if name.lower() == "cookie")
        return cls(unquote(path_of(target)), target, first_values(pairs), pairs, headers,
                   cookies, address, origin, host)

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case); repeated headers joined by ", "."""
        lower = name.lower()
        values = [value for key, value in self.headers if key.lower() == lower]
        return ", ".join(values) if values else None


class HookResultError(Exception):
    """on_request returned something that is neither an acceptance nor a refusal."""


def refusal_from(result: object) -> HttpError | None:
    """What `on_request` returned, as the answer to send: None accepts the upgrade.

    An int is an HTTP status (400-599) refusing it, with a standard reason; a
    `(status, reason)` pair refuses it with that reason (one line, at most MAX_REASON
    characters).

    Raises:
        HookResultError: any other value (the server answers 500 and logs it).
    """
    if result is None:
        return None
    reason = "refused by the server's on_request check"
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        pair: tuple[object, str] = result
        result, reason = pair[0], _one_line(pair[1]) or reason
    if isinstance(result, bool) or not isinstance(result, int) or not 400 <= result <= 599:
        raise HookResultError(f"on_request must return None, an HTTP status from 400 to 599 "
                              f"or (status, reason), not {result!r}")
    return HttpError(result, reason)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())  # CR, LF and tabs included: the reason is one line
    return flat if len(flat) <= MAX_REASON else flat[:MAX_REASON - 3] + "..."


def ask(hook: Callable[[UpgradeRequest, Any], object], request: UpgradeRequest,
        server: Any) -> tuple[HttpError | None, BaseException | str | None]:
    """Call `on_request(request, server)`; return (the refusal or None, what went wrong).

    What went wrong is the exception it raised, or a sentence on what it returned, for the
    caller to log; either way the refusal is then a 500 (the script's bug is not the
    client's, and never the server's end).
    """
    try:
        result = hook(request, server)
    except Exception as exc:
        return HttpError(500, HOOK_FAILED), exc
    try:
        return refusal_from(result), None
    except HookResultError as exc:
        return HttpError(500, HOOK_FAILED), str(exc)


def client_address(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, int | None] | None,
                                                                 bool]:
    """--trust-proxy: the address the nearest proxy reports, and whether it sent a header.

    Returns ((host, port), True) when usable; (None, True) when a forwarding header is there
    but unusable (malformed, "unknown", obfuscated: the caller logs it); (None, False) when
    there is none.
    """
    headers = tuple(headers)
    present = any(name.lower() in ("forwarded", "x-forwarded-for") for name, _ in headers)
    if not present:
        return None, False
    node = proxy.client_address(headers)
    return (None if node is None else (node.host, node.port)), True
