"""The /wire page's stream (`--trace-page`): the live trace, to viewers of its own.

`GET /wire` is the page (client/wire.html); a WebSocket to `/wire` is the stream. Its
viewers are not chat users: once upgraded, their connections are owned by the `WireHub`
(not by the chat server), so they are never in `get_users()`, never get a chat message,
never reach a callback, and are never traced themselves (they get no tap, wiretap.py).

Each trace block goes to every viewer as one text frame holding JSON,
`{"conn": 3, "text": "#3 127.0.0.1:50312 client->server  RFC 6455 frame, ..."}`: the
frame is encoded once and the same bytes queued for everyone. A viewer is a consumer like
any other: one whose unsent output passes `max_buffer` is dropped (1008, logged) rather
than held in memory; what it sends is read (pings answered, its close echoed) but no
message of its own means anything, and one over MAX_VIEWER_MESSAGE fails it with 1009.

Who may watch: the trace shows everyone's messages, so only loopback peers, and the
addresses or networks given with `--trace-page-from`; others get HTTP 403.

What is traced depends on who watches: the hub tells `on_viewers` (the Tracer) how many
viewers there are whenever that changes, so that nothing is traced while nobody watches
(wiretap.py).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import HttpError, ProtocolError
from ..net.connection import Connection
from ..protocol.frames import CloseCode, Opcode, encode_close, encode_frame
from ..protocol.handshake import RFC6455, Request, Upgrade
from ..protocol.messages import Close, Event, Ping, Receiver

log = logging.getLogger("websocket")

WIRE_PATH = "/wire"  # the page and its stream
PAGE_FILE = "wire.html"
# The page's own files: served only with --trace-page, and only to whoever may watch.
PAGE_PATHS = frozenset({WIRE_PATH, "/wire.html", "/wire.js", "/wire.css"})
MAX_VIEWERS = 16  # more get HTTP 503: each one costs a copy of the whole trace
MAX_VIEWER_MESSAGE = 125  # a viewer has nothing to say; a close reason fits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(addresses: Iterable[str]) -> list[Network]:
    """`--trace-page-from` values: an address (10.0.0.7) or a network (10.0.0.0/24).

    Raises:
        ValueError: not an IP address or network.
    """
    return [ipaddress.ip_network(text.strip(), strict=False) for text in addresses]


def request_path(target: str) -> str:
    return target.split("?", 1)[0]


def is_wire_request(request: Request) -> bool:
    """A request for the /wire page, its files or its stream."""
    return request_path(request.target) in PAGE_PATHS


def page_request(hub: WireHub | None, request: Request, address: Any) -> Request:
    """The request to serve for one of the page's files: `GET /wire` is wire.html.

    Raises:
        HttpError: 404 without --trace-page (the page does not exist then), 403 for an
            address that may not watch.
    """
    if hub is None:
        raise HttpError(404, "not found")
    if not hub.may_watch(address):
        raise HttpError(403, "the wire page is for loopback only (see --trace-page-from)")
    if request_path(request.target) == WIRE_PATH:
        return dataclasses.replace(request, target="/" + PAGE_FILE)
    return request


class WireHub:
    """Every /wire viewer: who may connect, what each is sent, and how each ends."""

    def __init__(self, max_buffer: int, close_timeout: float,
                 allowed: Iterable[Network] = (),
                 on_viewers: Callable[[int], None] | None = None) -> None:
        self.max_buffer = max_buffer
        self.close_timeout = close_timeout
        self.allowed = list(allowed)
        self.viewers: dict[Connection, Receiver] = {}
        self.on_viewers = on_viewers  # told how many watch, each time that changes

    def may_watch(self, address: Any) -> bool:
        """Loopback, or an address `--trace-page-from` allows."""
        try:
            host = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except (TypeError, IndexError, ValueError):
            return False  # a Unix socket or something stranger: not known to be local
        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        return host.is_loopback or any(host in network for network in self.allowed)

    def check_viewer(self, upgrade: Upgrade, address: Any) -> None:
        """May this upgrade become a viewer?

        Raises:
            HttpError: 404 for another path than /wire, 403 for an address that may not
                watch, 400 for draft-75/76, 503 beyond MAX_VIEWERS.
        """
        if request_path(upgrade.resource) != WIRE_PATH:
            raise HttpError(404, "not found")
        if not self.may_watch(address):
            raise HttpError(403, "the wire trace is for loopback only (see --trace-page-from)")
        if upgrade.protocol != RFC6455:
            raise HttpError(400, "the wire trace is streamed over RFC 6455 only")
        if len(self.viewers) >= MAX_VIEWERS:
            raise HttpError(503, f"too many wire viewers ({MAX_VIEWERS})")

    def adopt(self, conn: Connection, response: bytes, peer: str) -> None:
        """An accepted upgrade to /wire: from now on this connection is a viewer's."""
        conn.owner = self
        conn.tap = None  # never traced: the trace would show itself, without end
        conn.cancel_timer()
        self.viewers[conn] = Receiver(MAX_VIEWER_MESSAGE)
        conn.queue(response)
        log.info("wire viewer %s connected (%d watching)", peer, len(self.viewers))
        if self.on_viewers is not None:
            self.on_viewers(len(self.viewers))

    def publish(self, conn_id: int, block: str) -> None:
        """One trace block to every viewer (cut already: --trace-bytes)."""
        if not self.viewers:
            return
        text = json.dumps({"conn": conn_id, "text": block}, ensure_ascii=False)
        frame = encode_frame(Opcode.TEXT, text.encode("utf-8"))
        for conn in list(self.viewers):
            if conn.closing:
                continue
            if conn.out_cost + len(frame) > self.max_buffer:
                self._too_slow(conn)
            else:
                conn.queue(frame)

    def stop(self) -> None:
        """The server shuts down: 1001 to every viewer (RFC 6455 §7.4.1)."""
        for conn in list(self.viewers):
            self._close(conn, CloseCode.GOING_AWAY, "server shutting down")

    def close_all(self) -> None:
        for conn in list(self.viewers):
            conn.close("server stopped")

    # -- connection.Owner ------------------------------------------------------------------

    def data_received(self, conn: Connection) -> None:
        receiver = self.viewers.get(conn)
        if receiver is None or conn.closing:
            conn.inbuf.clear()
            return
        events: list[Event] = []
        try:
            receiver.receive(conn.inbuf, events)
        except ProtocolError as exc:
            log.warning("wire viewer: closing with %d: %s", exc.code, exc.reason)
            conn.inbuf.clear()
            self._close(conn, exc.code, exc.reason)
            return
        for event in events:
            if isinstance(event, Ping):
                conn.queue(encode_frame(Opcode.PONG, event.payload))  # §5.5.2
            elif isinstance(event, Close):
                # §5.5.1: echo the code, then close once our answer is out (§7.1.1).
                code = None if event.code == CloseCode.NO_STATUS else event.code
                conn.queue(encode_frame(Opcode.CLOSE, encode_close(code)))
                conn.close_after_flush(self.close_timeout)
                return
            # A message or a pong from a viewer means nothing: ignored.

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        conn.close("unexpected direct read")  # never asked for (`direct` stays 0)

    def flushed(self, conn: Connection) -> None:
        pass  # `notify` is never set for a viewer

    def connection_lost(self, conn: Connection, why: str) -> None:
        if self.viewers.pop(conn, None) is not None:
            log.info("wire viewer left%s (%d watching)", f": {why}" if why else "",
                     len(self.viewers))
            if self.on_viewers is not None:
                self.on_viewers(len(self.viewers))

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        log.error("internal error while serving a wire viewer; closing it", exc_info=exc)
        conn.close("internal error")

    # -- the end ---------------------------------------------------------------------------

    def _too_slow(self, conn: Connection) -> None:
        unsent = conn.drop_output()
        log.warning("wire viewer is not reading: %d bytes unsent (limit %d); disconnecting",
                    unsent, self.max_buffer)
        self._close(conn, CloseCode.POLICY_VIOLATION, "too slow: output buffer full")

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        if conn.closing or conn.closed:
            return
        conn.queue(encode_frame(Opcode.CLOSE, encode_close(code, reason)))
        conn.close_after_flush(self.close_timeout)
