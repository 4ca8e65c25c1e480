"""The User: one client's protocol state and metadata. No I/O happens here.

The PHP original's User had an id, a socket and a `handshake` flag; ours adds what a
callback needs to know about who is talking (address, protocol, resource, Host, Origin,
headers, times) and the protocol state the server keeps for it (the receiver, the close
code). Its socket, buffers and queue are its `Connection`'s (websocket/net/connection.py).
"""
from __future__ import annotations

import time
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..protocol.legacy import HixieReceiver
from ..protocol.messages import Receiver
from ..protocol.query import first_values, query_of

if TYPE_CHECKING:
    from ..net.connection import Connection
    from ..net.loop import Timer
    from ..protocol.deflate import Agreed


def format_peer(address: Any) -> str:
    """A socket address as 'host:port' ('[::1]:port' for IPv6, 'host' without a port)."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return shown if port is None else f"{shown}:{port}"


class UserState(Enum):
    HANDSHAKE = "handshake"  # reading an HTTP request (upgrade, or a page between requests)
    OPEN = "open"  # WebSocket established: messages flow
    CLOSING = "closing"  # our close frame is sent or queued; waiting for the peer's
    CLOSED = "closed"  # socket closed; the object may still be held by a callback


class User:
    """One connected client. Callbacks read these attributes; only the server changes them.

    Attributes:
        id: a number unique for the life of the server, in order of connection.
        address: the peer's (host, port) as `accept()` returned it; with --trust-proxy, the
            client's as the nearest proxy reports it (port None when it gives none).
        via: with --trust-proxy, the socket's own address (the proxy's); else None.
        state: a `UserState`; `handshake` is True once the WebSocket is established.
        protocol: "rfc6455", "hixie76" or "hixie75" after the handshake, else None.
        subprotocol: the RFC 6455 subprotocol selected from the script's SUBPROTOCOLS.
        resource: the request target the client connected to (e.g. "/" or
            "/chat?token=abc"); `query` has its query's parameters.
        room: the room it is in: the path of `resource` ("/" the lobby), until
            `server.join(user, room)` moves it.
        host, origin: the request's Host and Origin headers (origin may be None).
        headers: every request header, in order, as (name, value) pairs.
        connected_at: wall-clock time (time.time()) of the connection.
        last_action: time.monotonic() of the last message received.
        data: a free dict for callbacks' own per-user data (a nickname, a room...).
    """

    __slots__ = (
        "id", "conn", "address", "state", "protocol", "subprotocol", "resource", "host",
        "origin", "_headers", "connected_at", "last_action", "last_seen", "pinged", "_data",
        "receiver", "message_started", "message_serial", "message_timer", "close_code",
        "close_reason", "left", "via", "room", "deflate", "__weakref__",
    )

    def __init__(self, user_id: int, conn: Connection, address: Any,
                 now: float | None = None, wall_now: float | None = None) -> None:
        self.id = user_id
        self.conn = conn
        self.address = address
        self.via: Any = None  # --trust-proxy: the socket's address when `address` is not
        self.state = UserState.HANDSHAKE
        self.protocol: str | None = None
        self.subprotocol: str | None = None  # the RFC 6455 subprotocol agreed on, if any
        self.resource = ""
        self.room = "/"  # the room it is in: its path at first (rooms.py), or server.join's
        self.deflate: Agreed | None = None  # permessage-deflate, as agreed (RFC 7692)
        self.host = ""
        self.origin: str | None = None
        # The request headers, kept as one string (a browser sends ~12 headers: as tuples of
        # strings they would cost more memory than everything else an idle user holds).
        self._headers = ""
        # The loop's times of the current pass, when given: one float shared by everyone who
        # connected in that pass instead of two new ones per user.
        self.connected_at = time.time() if wall_now is None else wall_now
        self.last_action = time.monotonic() if now is None else now
        self.last_seen = self.last_action  # monotonic time of the last bytes received
        self.pinged = False  # a keepalive ping is out and unanswered
        self._data: dict[str, Any] | None = None  # made on first use (most users never do)
        self.receiver: Receiver | HixieReceiver | None = None
        # --message-timeout: when the message in progress began (its receiver's serial
        # number tells it from the next), and the one timer that checks on it.
        self.message_started = 0.0
        self.message_serial = 0
        self.message_timer: Timer | None = None
        self.close_code: int | None = None  # what the connection ended with (for the log)
        self.close_reason = ""
        self.left = False  # its departure was logged and on_disconnect called

    @property
    def data(self) -> dict[str, Any]:
        """A free dict for the callbacks' own per-user values."""
        if self._data is None:
            self._data = {}
        return self._data

    @property
    def handshake(self) -> bool:
        """The PHP original's flag: True once the WebSocket handshake is done."""
        return self.state in (UserState.OPEN, UserState.CLOSING)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every request header, in order, as (name, value) pairs."""
        pairs = (line.partition(":") for line in self._headers.split("\n") if line)
        return tuple((name, value.strip()) for name, _, value in pairs)

    @headers.setter
    def headers(self, headers: tuple[tuple[str, str], ...]) -> None:
        self._headers = "".join(f"{name}:{value}\n" for name, value in headers)

    @property
    def query(self) -> dict[str, str]:
        """Each parameter of the query of `resource`, its first value, read as on_request's
        `request.query` (query.py); parsed again at each call, so read it once."""
        return first_values(query_of(self.resource))

    @property
    def is_open(self) -> bool:
        return self.state is UserState.OPEN

    @property
    def peer(self) -> str:
        """The address as 'host:port' ('[::1]:port' for IPv6), for logs."""
        return format_peer(self.address)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.peer} {self.state.value} {self.protocol or ''}>".replace(
            " >", ">")
