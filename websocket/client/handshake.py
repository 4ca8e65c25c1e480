"""The client's side of the opening handshake (RFC 6455 §3, §4.1), sans-I/O.

Taking a ws:// or wss:// URL apart, the request with its key, and the checks of the
server's answer. `websocket.client` sends and reads these; re-exported there.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol.handshake import accept_key

DEFAULT_PORTS = {"ws": 80, "wss": 443}  # RFC 6455 §3


class ClientError(Exception):
    """Base class of what the client reports (socket errors stay OSError)."""


class HandshakeFailed(ClientError):
    """The server did not accept the opening handshake (RFC 6455 §4.1).

    `status` is the HTTP status it answered, or None when the answer was not one.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status




@dataclass(frozen=True)
class Target:
    """Where a ws:// or wss:// URL points (RFC 6455 §3)."""

    secure: bool
    host: str  # without brackets: what to connect to and what TLS checks
    port: int
    resource: str  # path and query: the request target
    host_header: str  # host[:port] as the Host header wants it


def parse_url(url: str) -> Target:
    """Take a ws:// or wss:// URL apart (RFC 6455 §3).

    Raises:
        ValueError: another scheme, no host, a bad port, user information or a fragment
            ("Fragment identifiers ... MUST NOT be used on these URIs").
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError("a WebSocket URL has no #fragment (RFC 6455 §3)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("user information in a WebSocket URL is not supported")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or DEFAULT_PORTS[scheme]  # parts.port raises ValueError when bad
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return Target(scheme == "wss", host, port, resource, host_header)


def build_request(target: Target, key: str, *, origin: str | None = None,
                  subprotocols: Sequence[str] = (), extensions: Sequence[str] = (),
                  headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The opening handshake's request (RFC 6455 §4.1), with the client's `key`.

    Raises:
        ValueError: a header name or value that would break the head (CR, LF, colon).
    """
    fields = [("Host", target.host_header), ("Upgrade", "websocket"),
              ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
              ("Sec-WebSocket-Version", "13")]
    if origin is not None:
        fields.append(("Origin", origin))
    if subprotocols:
        fields.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if extensions:
        fields.append(("Sec-WebSocket-Extensions", ", ".join(extensions)))
    fields += list(headers)
    lines = [f"GET {target.resource} HTTP/1.1"]
    for name, value in fields:
        if not name or any(ch in name for ch in ":\r\n \t") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


@dataclass(frozen=True)
class Response:
    """An HTTP response head."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive); repeated ones joined by ", "."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        return [part.strip() for part in (self.header(name) or "").split(",") if part.strip()]


def parse_response(head: bytes) -> Response:
    """Parse a response head (up to its empty line) loosely: status line and fields.

    Raises:
        HandshakeFailed: the first line is not an HTTP status line.
    """
    lines = head.decode("iso-8859-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not (status.isdigit() and len(status) == 3):
        raise HandshakeFailed(f"not an HTTP response: {lines[0][:80]!r}")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip(" \t")))
    return Response(int(status), reason, tuple(fields))


def check_response(response: Response, key: str, subprotocols: Sequence[str] = (),
                   extensions: Sequence[str] = ()) -> tuple[str | None, tuple[str, ...]]:
    """RFC 6455 §4.1, the client's checks of a 101 answer: (subprotocol, extensions).

    Raises:
        HandshakeFailed: "the client MUST _Fail the WebSocket Connection_" for a missing
            Upgrade or Connection token, a wrong Sec-WebSocket-Accept, or an extension or
            subprotocol the client did not offer.
    """
    if response.status != 101:
        raise HandshakeFailed(f"HTTP {response.status} {response.reason}", response.status)
    if "websocket" not in (token.lower() for token in response.tokens("Upgrade")):
        raise HandshakeFailed("the answer has no 'Upgrade: websocket' (RFC 6455 §4.1)", 101)
    if "upgrade" not in (token.lower() for token in response.tokens("Connection")):
        raise HandshakeFailed("the answer has no 'Connection: Upgrade' (RFC 6455 §4.1)", 101)
    accept = response.header("Sec-WebSocket-Accept")
    if accept != accept_key(key):
        raise HandshakeFailed(f"wrong Sec-WebSocket-Accept {accept!r}, expected "
                              f"{accept_key(key)!r} (RFC 6455 §4.1)", 101)
    offered = {item.split(";")[0].strip().lower() for item in extensions}
    accepted = tuple(response.tokens("Sec-WebSocket-Extensions"))
    for item in accepted:
        if item.split(";")[0].strip().lower() not in offered:
            raise HandshakeFailed(f"the server accepted extension {item!r}, which was not "
                                  "offered (RFC 6455 §4.1)", 101)
    chosen = response.header("Sec-WebSocket-Protocol")
    if chosen is not None and chosen not in subprotocols:
        raise HandshakeFailed(f"the server chose subprotocol {chosen!r}, which was not "
                              "offered (RFC 6455 §4.1)", 101)
    return chosen, accepted
