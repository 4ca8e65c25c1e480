"""The opening handshake on the server's side (the article's `doHandshake`), and the page.

`Server` (server.py) inherits `Handshakes`. A connection's bytes are parsed one request at
a time (RFC 9112 §9.3); an upgrade passes `--path`, the protocol checks (handshake.py,
RFC 6455 §4.2 and the 2010 drafts), `--max-connections` and the script's `on_request`
before its 101, and the user joins its room; any other request is answered (/healthz,
/metrics, the /wire page, the chat page's files). Errors are raised as `HttpError` and
answered by the server's one `_fail`. The attributes and methods used here are the
server's, declared below for the type checker.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import HttpError
from ..observe import health as ops
from ..observe.tap import Tracer
from ..observe.wire import WireHub, is_wire_request, page_request
from ..protocol import handshake
from ..protocol.deflate import Agreed, DeflatePolicy
from ..protocol.legacy import HixieReceiver
from ..protocol.messages import InputBudget, Receiver
from ..protocol.query import Pairs, query_of
from . import access
from .keepalive import HOLD_HTTP, Timers
from .pages import serve
from .rooms import MAX_ROOM_LENGTH, TAGGED, Rooms, room_of
from .user import User, UserState, format_peer

log = logging.getLogger("websocket")

_PROTOCOL_NAMES = {
    handshake.RFC6455: "RFC 6455",
    handshake.HIXIE76: "draft-76 (hixie-76)",
    handshake.HIXIE75: "draft-75 (hixie-75)",
}


class Handshakes(Timers):
    """`_handshake` (parse, then `_upgrade` or `_serve_http`) and what they need."""

    # The server's (server.py sets them in __init__).
    max_request_size: int
    max_message_size: int
    max_connections: int
    input_budget: InputBudget
    allowed_origins: frozenset[str] | None
    paths: frozenset[str] | None
    page_path: str
    trust_proxy: bool
    metrics_enabled: bool
    client_dir: Path
    secure: bool
    deflate: DeflatePolicy | None
    tracer: Tracer | None
    wire: WireHub | None
    _agreements: dict[Agreed, Agreed]
    _rooms: Rooms
    _debug: bool
    _trace: bool

    def _receive(self, user: User, payload: tuple[bytearray, int] | None = None) -> None:
        raise NotImplementedError  # the server's: frames to events to callbacks

    def _handshake(self, user: User) -> None:
        """Parse requests as they complete (`doHandshake`): upgrade, or serve the page.

        One request at a time (RFC 9112 §9.3): the next is not even parsed until the
        answer to this one has been sent, so pipelined requests cannot pile up answers.
        """
        conn = user.conn
        while (user.state is UserState.HANDSHAKE and conn.inbuf and not conn.closing
               and not conn.hold):
            try:
                parsed = handshake.parse_request(conn.inbuf, self.max_request_size)
            except HttpError as exc:
                self._fail(user, exc)
                return
            if parsed is None:
                return
            request, consumed = parsed
            if self.tracer is not None and conn.tap is None and not self._is_wire(request):
                self.tracer.attach(user)  # from the first byte, this request included
            del conn.inbuf[:consumed]
            if self.trust_proxy:
                self._take_proxy_address(user, request)
            try:
                if request.is_upgrade:
                    self._upgrade(user, request)
                else:
                    self._serve_http(user, request)
            except HttpError as exc:
                self._fail(user, exc, head_only=request.method == "HEAD")
                return
        if user.state is UserState.OPEN and conn.inbuf:
            self._receive(user)  # frames that came in the same packet as the request

    def _take_proxy_address(self, user: User, request: handshake.Request) -> None:
        """--trust-proxy: the client's address as the nearest proxy reports it (proxy.py),
        for the log and `user.address`; the socket's stays in `user.via`."""
        address, present = access.client_address(request.headers)
        if user.via is None:
            user.via = user.address
        if address is not None:
            user.address = address
        else:
            user.address = user.via
            if present:
                log.info("user %d (%s): unusable Forwarded / X-Forwarded-For header; using "
                         "the socket's address", user.id, user.peer)

    def _upgrade(self, user: User, request: handshake.Request) -> None:
        wire = self._is_wire(request)  # /wire is not a chat path: --path does not apply
        if not wire:
            access.check_path(request.target, self.paths)  # --path: 404 elsewhere
        # The chat page's own, for message ids and presence (rooms.py), after the script's.
        subprotocols = self.callbacks.subprotocols + (() if wire else (TAGGED,))
        upgrade = handshake.upgrade(request, secure=self.secure,
                                    allowed_origins=self.allowed_origins,
                                    subprotocols=subprotocols,
                                    deflate=None if wire else self.deflate)
        if wire:
            self._watch_wire(user, upgrade)
            return
        if len(self._open) >= self.max_connections:
            raise HttpError(503, f"server full ({self.max_connections} users)")
        query = query_of(upgrade.resource)  # parsed once: on_request's and the room's
        if self.callbacks.on_request is not None:
            self._check_request(user, request, upgrade, query)
        user.protocol = upgrade.protocol
        user.resource = upgrade.resource
        user.host = upgrade.host
        user.origin = upgrade.origin
        user.subprotocol = upgrade.subprotocol
        user.headers = request.headers
        user.room = room_of(upgrade.resource)
        if len(user.room) > MAX_ROOM_LENGTH:
            raise HttpError(400, f"room name (the path) longer than {MAX_ROOM_LENGTH} characters")
        receiver: Receiver | HixieReceiver
        agreed = upgrade.deflate
        if agreed is not None:
            agreed = self._agreements.setdefault(agreed, agreed)
            if self._debug:
                log.debug("user %d: permessage-deflate agreed: %s", user.id, agreed.response)
        if upgrade.protocol == handshake.RFC6455:
            receiver = Receiver(self.max_message_size, budget=self.input_budget,
                                deflate=agreed)
            if self._trace:
                rfc_receiver = receiver
                receiver.on_frame = lambda opcode, fin, length: log.debug(
                    "user %d < %s%s%s %d bytes", user.id, opcode.name,
                    " (compressed)" if rfc_receiver.frame_compressed else "",
                    "" if fin else " (more)", length)
        else:
            receiver = HixieReceiver(self.max_message_size, budget=self.input_budget)
            if self._trace:
                receiver.on_frame = lambda kind, length: log.debug(
                    "user %d < hixie frame %#04x %d bytes", user.id, kind, length)
        user.receiver = receiver
        user.state = UserState.OPEN
        user.conn.cancel_timer()
        user.last_action = time.monotonic()
        self._open[user.id] = user
        self.metrics.users_open[upgrade.protocol] += 1
        self.delivery.queue(user.conn, upgrade.response, in_chat=False)
        user.deflate = agreed
        self._rooms.enter(user, query)  # its room's history, then its broadcasts
        via = "" if user.via is None else f" via {format_peer(user.via)}"
        log.info("user %d (%s%s) joined: %s, resource %s, origin %s", user.id, user.peer, via,
                 _PROTOCOL_NAMES[upgrade.protocol], user.resource, user.origin or "-")
        hook = self.callbacks.on_connect
        if hook is not None:
            self._call(hook, user, self)

    def _is_wire(self, request: handshake.Request) -> bool:
        """A request for the /wire page or its stream, with --trace-page on."""
        return self.wire is not None and is_wire_request(request)

    def _watch_wire(self, user: User, upgrade: handshake.Upgrade) -> None:
        """The /wire stream: the connection becomes a viewer's (wire.py), not a user's."""
        assert self.wire is not None
        self.wire.check_viewer(upgrade, user.address)  # raises HttpError (403...)
        self._users.pop(user.id, None)
        self.delivery.forget(user.conn)
        user.state = UserState.OPEN
        self.wire.adopt(user.conn, upgrade.response, user.peer)

    def _check_request(self, user: User, request: handshake.Request,
                       upgrade: handshake.Upgrade, query: Pairs) -> None:
        """The script's on_request(request, server), before the 101 (access.ask)."""
        assert self.callbacks.on_request is not None
        seen = access.UpgradeRequest.from_request(request.target, request.headers,
                                                  user.address, upgrade.origin, upgrade.host,
                                                  query)
        started = time.perf_counter()
        refusal, failure = access.ask(self.callbacks.on_request, seen, self)
        self.metrics.callback_seconds += time.perf_counter() - started
        if isinstance(failure, BaseException):
            log.error("user %d (%s): on_request() raised; refusing with 500", user.id,
                      user.peer, exc_info=failure)
        elif failure is not None:
            log.error("user %d (%s): %s; refusing with 500", user.id, user.peer, failure)
        if refusal is not None:
            raise refusal

    def _serve_http(self, user: User, request: handshake.Request) -> None:
        response = ops.answer(request, self._render_metrics if self.metrics_enabled else None)
        if response is None and is_wire_request(request):
            # The /wire page's files: with --trace-page only, to those who may watch, and
            # from client/ whatever the script's PAGES.
            response = serve(page_request(self.wire, request, user.address), self.client_dir)
        if response is None:
            response = serve(request, self.callbacks.pages or self.client_dir, self.page_path)
        if self._debug:
            log.debug("user %d (%s): %s %s -> %d", user.id, user.peer, request.method,
                      request.target, response.status)
        conn = user.conn
        self.delivery.queue(conn, response.data, in_chat=False)
        if response.keep_alive:
            # Until the answer is sent (see `flushed`); a client that leaves it unread that
            # long is closed.
            conn.set_timer(self.handshake_timeout, self._deadline, user)
            conn.notify = True
            conn.hold_input(HOLD_HTTP)
        else:
            conn.close_after_flush(self.handshake_timeout)
