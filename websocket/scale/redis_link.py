"""The link to Redis: one chat over many processes, through Redis pub/sub.

Every broadcast to a room is published to the room's channel (`--redis-prefix` + the room,
e.g. "chat:/python"; a broadcast to the whole server goes to prefix + "*"), and every
process subscribes to the channels of the rooms its users are in, and delivers what comes
to its own users there. Two connections, as Redis wants it: a subscribed connection may
only (un)subscribe and ping (Redis docs, "Pub/Sub": "a client subscribed to one or more
channels shouldn't issue commands"), so PUBLISH goes on the other one.

Both are non-blocking sockets in the server's one loop (`connection.Connection`, opened by
`connection.Connector`; with rediss://, TLS, by tls_client.py); the bytes are RESP2 (resp.py).

A published message is `<origin> <seq> <t|b> <payload>`: the origin is this process's
random id, so a process never delivers its own message again (it delivered it locally
already, at once); the sequence number counts up per origin (one counter for every
channel, so a room forgotten and used again never reuses one), so a message seen twice
(in a history list and live) is delivered once. Redis keeps each publisher's order on a
channel, so per-sender order holds.

Presence (who is in a room) travels on the same channels as
`<origin> 0 p <JSON [[user id, name], ...]>` (a process's users of the room, at most
presence.MAX_PER_ORIGIN: at most once per loop pass when they change, and every
PRESENCE_REFRESH seconds; an empty list when the last one leaves) and `<origin> 0 q` (a
process that just subscribed asks the others to say theirs). Each is a whole list, so a
lost one is made good by the next, and the receiver diffs it against the last one
(presence.py). Nothing is stored in Redis, so a process that dies simply stops refreshing
and the others forget its users after PRESENCE_TTL.

With --history, each publish to a room also goes to the room's capped list
(RPUSH, LTRIM to the newest N, EXPIRE after the idle time), and `load_history` reads its
newest N (LRANGE) for a room that gets its first local user.

What comes from Redis is held to the limits of what comes from a client, since anyone who
can reach Redis can publish on our channels or push to our lists (issue 18):
- An entry whose message is over --max-message-size, that is not an entry at all, whose
  text is not UTF-8, or presence that is not a list of at most 1,000 users named in at most 32
  characters, is dropped, counted (`rejected`, by kind) and logged: the first of a kind at
  once, then one line per kind per DROP_LOG_INTERVAL with how many more (ratelog.py). Live or in a
  history list alike; it never reaches a user. A value longer than the longest entry a
  chat server publishes is not even held: the reader drops its bytes as they come.
- Each connection's reply reader (resp.py) is sized to the replies that connection asks
  for (`reply_reader`): the subscriber gets pub/sub messages and (un)subscribe
  confirmations, the publisher integers, OK/PONG, errors and LRANGE lists of at most
  --history entries. Elements are counted over a whole reply and its memory is bounded as
  Python holds it; past a limit the link is dropped and reconnected, with one line saying
  what Redis sent.

Trouble (each logged once, when it starts, and once when it ends):
- Redis away at start, or lost later: the chat goes on locally, nothing is published
  meanwhile (pub/sub keeps nothing for subscribers that are away, so a buffer would only
  deliver stale messages to some), and the link reconnects with capped exponential backoff
  (RECONNECT_FIRST doubling up to RECONNECT_MAX), subscribes again, and logs how long
  cross-server delivery was interrupted and how many messages were not published.
- Redis slow: publishes wait in a backlog bounded by `max_backlog` bytes (the server's
  --max-buffer, like any slow reader); past it the oldest are dropped and counted.
- A wrong password, a missing one, or a port that does not speak Redis: a clear line,
  and the link keeps trying (the operator may fix Redis without restarting the chat).
- Redis closing the connection (e.g. a subscriber cut off by its client-output-buffer-limit)
  is logged as "connection closed by Redis": the connections' `peer` word is "Redis".
"""
from __future__ import annotations

import logging
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable

from ..net.connect import TlsConnector, connect, connection_of
from ..net.connection import Connection, Connector
from ..net.loop import Loop, Timer
from ..net.ratelog import RateLimitedLog
from ..protocol.messages import DEFAULT_MAX_MESSAGE_SIZE
from ..protocol.redis_entries import (
    BAD_PRESENCE,
    NOT_AN_ENTRY,
    TOO_BIG,
    EntryError,
    RedisAddress,
    decode_entry,
    decode_presence,
    describe,
    encode_entry,
    encode_presence,
    max_entry_bytes,
)
from ..protocol.resp import (
    ELEMENT_COST,
    MAX_LINE_BYTES,
    NEED_MORE,
    Reader,
    RedisError,
    Reply,
    ReplyLimitExceeded,
    RespProtocolError,
    Skipped,
    encode_command,
)

log = logging.getLogger("websocket")

CONNECT_TIMEOUT = 5.0  # seconds for Redis to accept the connection
RECONNECT_FIRST = 0.1  # seconds before the first retry; doubled each time ...
RECONNECT_MAX = 5.0  # ... up to this
PUBLISH_WINDOW = 256 * 1024  # bytes of PUBLISH handed to the socket before Redis answers
REPLIES_PER_TURN = 1024  # pub/sub messages delivered per loop pass, then everybody else
MAX_SEQUENCES = 10_000  # (origin, channel) pairs remembered for duplicate detection
ALL_ROOMS = "*"  # the channel suffix of a broadcast to every room (rooms start with "/")
PRESENCE_REFRESH = 20.0  # seconds between a process's presence announcements per room
PRESENCE_TTL = 3 * PRESENCE_REFRESH  # a process not heard of for this long has left
DROP_LOG_INTERVAL = 10.0  # seconds: at most one line per kind of entry dropped, with a count
# Elements of the largest reply the subscriber asks for: a pub/sub message is an array of 3
# ("message", channel, payload; "pmessage" has 4), a confirmation of 3 ("subscribe",
# channel, count), one array around them.
SUBSCRIBER_REPLY_ELEMENTS = 5


class _Session:
    """One connection to Redis (the publisher's or the subscriber's), as a Connection owner."""

    def __init__(self, link: RedisLink, role: str) -> None:
        self.link = link
        self.role = role  # "publish" or "subscribe"
        self.conn: Connection | None = None
        self.connector: Connector | TlsConnector | None = None
        self.reader = Reader()
        self.expect: deque[str] = deque()  # what the next non-push replies answer
        self.confirmations = 0  # (un)subscribe confirmations still to come
        self.ready = False

    def open(self) -> None:
        address = self.link.address
        self.reader = self.link.reply_reader(self.role)
        self.expect.clear()
        self.confirmations = 0
        self.ready = False
        self.connector = connect(self.link.loop, address.host, address.port, CONNECT_TIMEOUT,
                                 self.link.tls_context, self._connected, self._failed,
                                 self._tls_failed)  # TLS with a context (rediss://)

    def _connected(self, sock: socket.socket) -> None:
        self.connector = None
        self.conn = connection_of(self.link.loop, sock, self)
        self.conn.peer = "Redis"  # its end is "connection closed by Redis" (connection.py)
        address = self.link.address
        if address.password is not None:
            auth = ((address.username, address.password) if address.username
                    else (address.password,))
            self.send("auth", "AUTH", *auth)
        if address.db and self.role == "publish":
            self.send("select", "SELECT", address.db)
        if self.role == "publish":
            self.send("ping", "PING")
        else:
            self.send(None, "SUBSCRIBE", *self.link.channels())

    def _failed(self, why: str) -> None:
        self.connector = None
        self.link.session_lost(self, why)

    def _tls_failed(self, why: str) -> None:
        self.connector = None
        self.link.session_lost(self, f"Redis at {self.link.address}: {why}; chatting locally "
                               "and retrying", error=True)

    def send(self, expect: str | None, *command: str | bytes | int) -> None:
        if self.conn is None or self.conn.closed:
            return
        if expect is not None:
            self.expect.append(expect)
        if command[0] in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.confirmations += len(command) - 1
        self.conn.queue(encode_command(*command))

    def close(self) -> None:
        if self.connector is not None:
            self.connector.cancel()
            self.connector = None
        conn, self.conn = self.conn, None
        self.ready = False
        if conn is not None:
            conn.close("")

    # -- connection.Owner ----------------------------------------------------------------

    def data_received(self, conn: Connection) -> None:
        if conn is not self.conn:
            return
        if conn.inbuf:
            self.reader.feed(conn.inbuf)
            conn.inbuf.clear()
        for _ in range(REPLIES_PER_TURN):
            try:
                reply = self.reader.gets()
            except ReplyLimitExceeded as exc:
                self.link.session_lost(self, f"Redis sent more than the {self.role} "
                                       f"connection asks for: {exc}; connection dropped",
                                       error=True)
                return
            except RespProtocolError as exc:
                self.link.session_lost(self, f"{self.link.address} does not speak Redis "
                                       f"(RESP2): {exc}", error=True)
                return
            if reply is NEED_MORE:
                return
            self._reply(reply)
            if self.conn is not conn:
                return  # closed while handling it
        conn.defer()  # more in the reader: in the next pass, after everybody else

    def _reply(self, reply: Reply) -> None:
        if (self.role == "subscribe" and isinstance(reply, list) and reply
                and reply[0] in (b"message", b"subscribe", b"unsubscribe")):
            if reply[0] == b"message":
                # RESP §Pub/Sub: ["message", channel, payload] (a payload too long to be an
                # entry is Skipped, see reply_reader).
                channel, data = reply[1:] if len(reply) == 3 else (None, None)
                if not isinstance(channel, bytes) or not isinstance(data, (bytes, Skipped)):
                    self.link.session_lost(self, "Redis sent a pub/sub message that is not "
                                           "[message, channel, payload]; connection dropped",
                                           error=True)
                    return
                self.link.on_message(channel, data)
            else:
                # RESP §Pub/Sub: one confirmation per channel named in each (UN)SUBSCRIBE.
                self.confirmations -= 1
                if self.confirmations < 0 or len(reply) != 3:
                    self.link.session_lost(self, "Redis sent a confirmation the subscribe "
                                           "connection did not ask for; connection dropped",
                                           error=True)
                    return
                if reply[0] == b"subscribe":
                    if not self.ready:
                        self.ready = True
                        self.link.session_ready(self)
                    if isinstance(reply[1], bytes):
                        self.link.subscribed(reply[1])
            return
        if not self.expect and not isinstance(reply, RedisError):
            # Redis answers each command once, in order: nothing was asked (an error may
            # answer a SUBSCRIBE, which expects no other answer).
            self.link.session_lost(self, f"Redis sent a reply the {self.role} connection did "
                                   "not ask for; connection dropped", error=True)
            return
        what = self.expect.popleft() if self.expect else "?"
        if what.startswith("lrange "):
            self.link.history_loaded(what, reply)
            return
        if what == "history":
            if isinstance(reply, RedisError):
                self.link.publish_failed(reply, history=True)
            return
        if isinstance(reply, RedisError):
            if what == "publish":
                self.link.publish_failed(reply)
                return
            self.link.session_lost(self, describe(reply), error=True)
            return
        if what == "ping" and not self.ready:
            self.ready = True
            self.link.session_ready(self)
        elif what == "publish":
            self.link.in_flight -= 1

    def payload_received(self, conn: Connection, data: bytearray, size: int) -> None:
        pass  # never asked for (conn.direct stays 0)

    def flushed(self, conn: Connection) -> None:
        if conn is self.conn:
            self.link.pump()

    def connection_lost(self, conn: Connection, why: str) -> None:
        if conn is self.conn:
            self.conn = None
            self.ready = False
            self.link.session_lost(self, why or "connection closed by Redis")

    def internal_error(self, conn: Connection, exc: Exception) -> None:
        log.error("internal error on the Redis link; reconnecting", exc_info=exc)
        self.link.session_lost(self, "internal error")


class RedisLink:
    """The process's link to Redis; see the module docstring.

    `deliver(room, message, entry_id)` is called for every message another process
    published to a channel this one subscribes to (`room` None: to every room).
    """

    def __init__(self, loop: Loop, address: RedisAddress, prefix: str,
                 deliver: Callable[[str | None, str | bytes, str], None] | None = None, *,
                 max_backlog: int = 4 << 20, server_id: str | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.loop = loop
        self.max_message_size = max_message_size  # what is delivered from Redis, at most
        self.address = address
        self.tls_context = tls_context  # rediss:// (tls_client.py); None: plain TCP
        self.prefix = prefix
        self.deliver = deliver or (lambda room, message, entry_id: None)
        self.max_backlog = max_backlog
        self.server_id = server_id or secrets.token_hex(6)
        self.publisher = _Session(self, "publish")
        self.subscriber = _Session(self, "subscribe")
        self.rooms: dict[str, None] = {}  # rooms with local users: their channels
        self.up = False
        self.started = False
        self.closed = False
        self.ever_up = False
        self.down_since = time.monotonic()
        self.retry_delay = RECONNECT_FIRST
        self._retry: Timer | None = None
        self._reported = ""  # the trouble logged last (each kind once)
        self.backlog: deque[bytes] = deque()  # PUBLISH commands not yet given to the socket
        self.backlog_bytes = 0
        self.in_flight = 0
        self.seq = 0  # the last sequence number this process used
        self._last: dict[tuple[str, bytes], int] = {}  # others' last, per origin+channel
        # Counters (the log and the tests read them).
        self.published = 0
        self.unpublished = 0  # while the link was down
        self.dropped = 0  # oldest publishes dropped while Redis was slow
        self.received = 0
        self.duplicates = 0
        self.rejected = _Rejected(loop)  # entries from Redis dropped, by kind
        self.history_size = 0  # --history: the length of each room's list in Redis
        self.history_idle = 0.0  # ... and how long it outlives the room's last message
        self._loads: dict[str, Callable[[list[tuple[str, str | bytes]] | None], None]] = {}
        # Presence (rooms.py sets these): (user id, name) pairs from another process, and a
        # process that asks for ours; `on_live(room)`: a room's channel is live (subscribed,
        # link up).
        self.on_presence: Callable[[str, str, list[tuple[int, str]]], None] | None = None
        self.on_presence_query: Callable[[str], None] | None = None
        self.on_live: Callable[[str], None] | None = None
        self._dropping = False
        self._unpublished_at_down = 0

    # -- the server's side -----------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self._connect()

    def close(self) -> None:
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
        self.rejected.close()
        self.publisher.close()
        self.subscriber.close()

    def reply_reader(self, role: str) -> Reader:
        """A RESP reader sized to the replies `role`'s connection asks for (module docstring).

        A value longer than the longest entry (`max_entry_bytes`) is skipped, not held: the
        message it carries is dropped and counted. The subscriber's replies hold one entry
        and a channel; the publisher's, an LRANGE of --history entries (or, without
        --history, one line). A line (an error) is at most MAX_LINE_BYTES. Past these the
        reply is refused and the link reconnects.
        """
        entry = max_entry_bytes(self.max_message_size)
        if role == "subscribe":
            elements = SUBSCRIBER_REPLY_ELEMENTS
            memory = entry + MAX_LINE_BYTES + elements * ELEMENT_COST
        else:
            elements = 1 + self.history_size
            memory = self.history_size * entry + MAX_LINE_BYTES + elements * ELEMENT_COST
        return Reader(max_reply_bytes=memory, max_reply_memory=memory,
                      max_array_length=elements - 1, max_reply_elements=elements,
                      max_depth=1, skip_bulk_over=entry)

    def channel(self, room: str | None) -> bytes:
        return (self.prefix + (ALL_ROOMS if room is None else room)).encode()

    def channels(self) -> list[bytes]:
        return [self.channel(None)] + [self.channel(room) for room in self.rooms]

    def subscribe(self, room: str) -> None:
        """A room got its first local user: take its channel's messages."""
        self.rooms[room] = None
        self.subscriber.send(None, "SUBSCRIBE", self.channel(room))

    def unsubscribe(self, room: str) -> None:
        self.rooms.pop(room, None)
        channel = self.channel(room)
        self.subscriber.send(None, "UNSUBSCRIBE", channel)
        for key in [key for key in self._last if key[1] == channel]:
            del self._last[key]

    def history_key(self, room: str) -> bytes:
        return (self.prefix + "history:" + room).encode()

    def publish_presence(self, room: str, entries: list[tuple[int, str]] | None) -> None:
        """Tell the other processes who of the room is here, as (user id, name) pairs
        (None: ask them for theirs).

        Straight to the socket, never into the backlog: while Redis is slow it is skipped
        (the next refresh says it again), so the backlog and its drop count are messages."""
        conn = self.publisher.conn
        if not self.up or conn is None or self.backlog or conn.out_cost >= PUBLISH_WINDOW:
            return
        data = encode_presence(self.server_id, entries)
        self.publisher.expect.append("publish")
        conn.queue(encode_command("PUBLISH", self.channel(room), data))
        self.in_flight += 1

    def subscribed(self, channel: bytes) -> None:
        """Redis confirmed a SUBSCRIBE: the room's presence can be exchanged now."""
        suffix = channel[len(self.prefix):].decode("utf-8", "replace")
        if self.up and suffix != ALL_ROOMS and suffix in self.rooms and self.on_live:
            self.on_live(suffix)

    def _on_presence(self, room: str, data: bytes) -> bool:
        """A presence message (see the module docstring)? Handled here if so."""
        presence = decode_presence(data)
        if presence is None:
            return False
        origin, kind, entries = presence
        if kind == "p" and entries is None:
            self.rejected.add(BAD_PRESENCE, room, len(data))
        elif origin != self.server_id and kind == "q" and self.on_presence_query is not None:
            self.on_presence_query(room)
        elif origin != self.server_id and entries is not None and self.on_presence is not None:
            self.on_presence(room, origin, entries)
        return True

    def publish(self, room: str | None, message: str | bytes, seq: int = 0) -> None:
        """Send a local broadcast to the other processes (it was delivered here already);
        `seq`: its sequence number, if the caller numbered it already."""
        if not seq:
            self.seq += 1
            seq = self.seq
        if not self.up:
            self.unpublished += 1
            return
        channel = self.channel(room)
        data = encode_entry(self.server_id, seq, message)
        command = encode_command("PUBLISH", channel, data)
        if self.history_size and room is not None:
            key = self.history_key(room)
            command = b"".join((
                encode_command("RPUSH", key, data),
                encode_command("LTRIM", key, -self.history_size, -1),
                encode_command("EXPIRE", key, max(1, round(self.history_idle))),
                command))
        self._enqueue(command)

    def _enqueue(self, command: bytes) -> None:
        """Into the bounded backlog (the oldest go past `max_backlog`), then the socket."""
        self.backlog.append(command)
        self.backlog_bytes += len(command)
        while self.backlog_bytes > self.max_backlog and len(self.backlog) > 1:
            oldest = self.backlog.popleft()
            self.backlog_bytes -= len(oldest)
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("Redis is slow: more than %d bytes of publishes wait; dropping "
                            "the oldest (local chat is not affected)", self.max_backlog)
        self.pump()

    def pump(self) -> None:
        """Hand waiting publishes to the socket while Redis keeps up (PUBLISH_WINDOW)."""
        conn = self.publisher.conn
        if conn is None or not self.publisher.ready:
            return
        conn.notify = True
        while self.backlog and conn.out_cost < PUBLISH_WINDOW:
            command = self.backlog.popleft()
            self.backlog_bytes -= len(command)
            if command.startswith(b"*3\r\n$5\r\nRPUSH"):
                self.publisher.expect.extend(("history", "history", "history"))
            self.publisher.expect.append("publish")
            conn.queue(command)
            self.in_flight += 1
            self.published += 1
        if not self.backlog and self._dropping and conn.out_cost < PUBLISH_WINDOW:
            self._dropping = False
            log.warning("Redis caught up: %d publish(es) dropped in all so far", self.dropped)

    def publish_failed(self, reply: RedisError, history: bool = False) -> None:
        if not history:
            self.in_flight -= 1
        self._report(f"{'history list' if history else 'publish'} refused: {describe(reply)}")

    def on_message(self, channel: bytes, data: bytes | Skipped) -> None:
        """A message on a channel we subscribe to: deliver it unless it is our own, or
        drop it if a client could not have sent it (module docstring)."""
        suffix = channel[len(self.prefix):].decode("utf-8", "replace")
        if isinstance(data, Skipped):  # longer than any entry: its bytes are gone already
            self.rejected.add(TOO_BIG, suffix, data.length)
            return
        try:
            origin, seq, message = decode_entry(data, self.max_message_size)
        except EntryError as exc:
            if exc.kind != NOT_AN_ENTRY or not self._on_presence(suffix, data):
                self.rejected.add(exc.kind, suffix, len(data))
            return
        if origin == self.server_id:
            return  # delivered locally when it was sent
        if not self._is_new(origin, channel, seq):
            self.duplicates += 1
            return
        self.received += 1
        self.deliver(None if suffix == ALL_ROOMS else suffix, message, f"{origin}.{seq}")

    def _is_new(self, origin: str, channel: bytes, seq: int) -> bool:
        key = (origin, channel)
        last = self._last.get(key)
        if last is not None and seq <= last:
            return False
        if last is None and len(self._last) >= MAX_SEQUENCES:
            del self._last[next(iter(self._last))]
        self._last[key] = seq
        return True

    def load_history(self, room: str,
                     done: Callable[[list[tuple[str, str | bytes]] | None], None]) -> None:
        """Read the room's list (LRANGE); `done(entries)` with (id, message) pairs, oldest
        first, or `done(None)` if the link is down or goes down first."""
        if not self.up or self.publisher.conn is None:
            self.loop.call_soon(done, None)
            return
        self._loads[room] = done
        # The newest --history entries only: others may push to the list past its trim.
        self.publisher.send("lrange " + room, "LRANGE", self.history_key(room),
                            -max(1, self.history_size), -1)

    def history_loaded(self, what: str, reply: Reply) -> None:
        room = what[len("lrange "):]
        done = self._loads.pop(room, None)
        if done is None:
            return
        entries: list[tuple[str, str | bytes]] = []
        channel = self.channel(room)
        where = f"{room} (history)"
        for item in reply if isinstance(reply, list) else []:
            if isinstance(item, Skipped):
                self.rejected.add(TOO_BIG, where, item.length)
                continue
            if not isinstance(item, bytes):
                self.rejected.add(NOT_AN_ENTRY, where, 0)
                continue
            try:
                origin, seq, message = decode_entry(item, self.max_message_size)
            except EntryError as exc:
                self.rejected.add(exc.kind, where, len(item))
                continue
            entries.append((f"{origin}.{seq}", message))
            if origin != self.server_id:
                self._is_new(origin, channel, seq)  # live copies of these: duplicates
        done(entries)

    # -- the sessions' side ----------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        if self.closed:
            return
        self.publisher.open()
        self.subscriber.open()

    def session_ready(self, session: _Session) -> None:
        if not (self.publisher.ready and self.subscriber.ready) or self.up:
            return
        self.up = True
        self.retry_delay = RECONNECT_FIRST
        self._reported = ""
        if self.ever_up:
            gap = time.monotonic() - self.down_since
            log.warning("Redis link restored (%s): cross-server delivery was interrupted "
                        "for %.1f s; %d message(s) were not published meanwhile",
                        self.address, gap, self.unpublished - self._unpublished_at_down)
        else:
            log.info("Redis connected: %s, channels %s*, this server's id %s",
                     self.address, self.prefix, self.server_id)
        self.ever_up = True
        self.pump()
        if self.on_live is not None:
            for room in list(self.rooms):  # subscribed already: presence can go now
                self.on_live(room)

    def session_lost(self, session: _Session, why: str, error: bool = False) -> None:
        if self.closed:
            return
        was_up = self.up
        self.up = False
        self.publisher.close()
        self.subscriber.close()
        self.backlog.clear()  # pub/sub keeps nothing: stale messages would go to some only
        loads, self._loads = self._loads, {}
        for done in loads.values():
            done(None)
        self.backlog_bytes = 0
        self.in_flight = 0
        self._dropping = False
        if was_up:
            self.down_since = time.monotonic()
            self._unpublished_at_down = self.unpublished
            log.warning("Redis link lost (%s: %s); chatting locally, cross-server delivery "
                        "interrupted; reconnecting", self.address, why)
            self._reported = why
        elif error:
            self._report(why)
        elif not self.ever_up:
            self._report(f"Redis at {self.address} is unreachable ({why}); chatting locally "
                         f"and retrying every {RECONNECT_MAX:g} s at most", logging.WARNING)
        if self._retry is None:
            self._retry = self.loop.call_later(self.retry_delay, self._connect)
            self.retry_delay = min(self.retry_delay * 2, RECONNECT_MAX)

    def _report(self, trouble: str, level: int = logging.ERROR) -> None:
        """Log a kind of trouble once (not on every retry)."""
        if trouble != self._reported:
            self._reported = trouble
            log.log(level, "%s", trouble)


class _Rejected:
    """Entries from Redis dropped, counted by kind, and logged without flooding the log
    (ratelog.py, one line a kind and interval: the first at once, then the count)."""

    def __init__(self, loop: Loop) -> None:
        self.counts: dict[str, int] = {}  # every entry dropped, by kind (for tests, metrics)
        self._log = RateLimitedLog(log, loop, DROP_LOG_INTERVAL, burst=1)

    def add(self, kind: str, where: str, size: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self._log.warning(kind, "dropped a message from Redis on %s (%d bytes): %s; never "
                          "delivered", where, size, kind)

    def close(self) -> None:
        self._log.flush()
