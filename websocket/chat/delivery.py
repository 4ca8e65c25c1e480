"""What leaves the server: every user's queue, the fan-out loop, and fair delivery.

Nobody's traffic may cost anybody else, and nothing accepted may be lost:

- A user whose backlog (`Connection.out_cost`) passes a quarter of `max_buffer` is
  *behind*. Its own input is held (HOLD_BEHIND: it gets nothing more read, so a user that
  floods pings or page requests and never reads the answers is stopped there) until the
  backlog is back under an eighth.
- Every user whose message reaches a user that is behind is held too (HOLD_THROTTLED), for
  as long as that user *keeps up*: the kernel took some of its bytes in the last
  STALL_TIMEOUT seconds, and it has been behind for at most BEHIND_TIMEOUT. So a flood is
  slowed to the pace of the slowest reader that reads, and a reader is never dropped
  because someone else sends fast.
- One that does not keep up is left behind: nobody waits for it any more, and once its
  backlog passes `max_buffer` it is dropped (`on_overflow`: the server closes it, 1008).
- A newcomer's history replay (replay.py) waits like a held sender, and what waits behind
  the replay counts with the backlog (`admit`).

It also knows who gets a broadcast: the server `join()`s every user whose WebSocket is open
and `leave()`s it when it is not; `broadcast()` encodes a message once per protocol
generation and queues the same bytes for every recipient. The server calls `queue()` for
every other frame, and `release()` before the loop sleeps. Which users are held and why is
recorded on their connections (`Connection.hold`); this module decides.

permessage-deflate (RFC 7692; the design and its numbers: docs/compression.md): the users
that agreed to it are members of one `RoomStream` per room and kind (`stream_key`: plain
text, or text tagged with ids for the chat page). A broadcast is compressed once per
stream, never once per recipient: the members that follow the stream get its bytes, the
others stand-alone bytes (one compression for all of them, with the smallest window any of
them agreed to), users without compression the plain frame: at most two compressions per
stream. Messages under the policy's `min_size` go uncompressed to all. A member excluded
from a broadcast cannot follow the stream past it, so it gets stand-alone bytes until the
next keyframe.
Direct messages (`send`) go uncompressed to a follower (a compressed message outside the
stream would break its window), stand-alone to the others. No per-user compressor exists.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import cast

from ..limits import BEHIND_TIMEOUT, FRAME_COST, STALL_TIMEOUT
from ..net.connection import Connection
from ..net.loop import Loop, Timer
from ..protocol.deflate import Agreed, DeflatePolicy, RoomStream
from ..protocol.frames import RSV1, Opcode, frame_parts

log = logging.getLogger("websocket")

RECHECK = 0.05  # seconds between checks while users wait for one that is behind

# Why a user's input is held (bits of Connection.hold); the server adds its own.
HOLD_THROTTLED = 1  # its messages reached users that are behind: wait for them
HOLD_BEHIND = 2  # its own output is backed up: read again once it drains



def stream_key(room: str, tagged: bool) -> str:
    """The compressed stream of a room's users of one kind: those that get the article's
    plain text, and those that get it tagged with ids (rooms.py), whose bytes differ."""
    return room + "\x00tagged" if tagged else room


class RoomMembers:
    """The users of one room who get its broadcasts, by protocol, in order of arrival."""

    __slots__ = ("rfc6455", "hixie", "tagged")

    def __init__(self) -> None:
        self.rfc6455: dict[Connection, None] = {}
        self.hixie: dict[Connection, None] = {}
        self.tagged: dict[Connection, None] = {}  # RFC 6455, text tagged with ids (rooms.py)


class Delivery:
    """The queues' policy for one server; see the module docstring."""

    def __init__(self, loop: Loop, max_buffer: int,
                 on_overflow: Callable[[Connection], None],
                 deflate: DeflatePolicy | None = None) -> None:
        self.loop = loop
        self.max_buffer = max_buffer
        self.behind_mark = max_buffer // 4  # a backlog over this: the user is behind
        self.caught_up_mark = max_buffer // 8  # ... until it is back under this
        self.on_overflow = on_overflow
        # Who gets a broadcast, in order of arrival: RFC 6455 users get frames, the 2010
        # drafts' users (text only) 0x00 ... 0xFF. Everyone, and each room's own (rooms.py).
        self.rfc6455: dict[Connection, None] = {}
        self.hixie: dict[Connection, None] = {}
        self.tagged: dict[Connection, None] = {}
        self.rooms: dict[str, RoomMembers] = {}
        self._room_of: dict[Connection, str] = {}
        # RFC 6455 users that agreed permessage-deflate (also in rfc6455 or tagged), and the
        # streams their broadcasts are compressed in: one per room and kind (stream_key).
        self.deflate = deflate
        self.compressed: dict[Connection, str] = {}  # user -> the key of its stream
        self.streams: dict[str, RoomStream] = {}
        self.behind: dict[Connection, None] = {}
        self.throttled: dict[Connection, None] = {}
        # Set while the server handles one user's input whenever a frame it causes reaches
        # a user that is behind and keeps up: the server then holds that input.
        self.throttle = False
        self.deliveries = 0  # frames queued, ever: the clock of the per-turn budget
        self._recheck: Timer | None = None
        self.trace = False  # log every frame queued (-v)

    def join(self, conn: Connection, rfc6455: bool, room: str = "/",
             tagged: bool = False, deflate: Agreed | None = None) -> None:
        """The user's WebSocket is open: it gets broadcasts (to everyone, and to `room`).
        `tagged`: its text comes as the `tagged` text the broadcaster gives (rooms.py).
        `deflate`: it agreed permessage-deflate with these parameters, so it follows the
        compressed stream of its room and kind (RFC 7692; docs/compression.md)."""
        self._group(self, rfc6455, tagged)[conn] = None
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = RoomMembers()
        self._group(members, rfc6455, tagged)[conn] = None
        self._room_of[conn] = room
        if deflate is not None and rfc6455:
            key = stream_key(room, tagged)
            stream = self.streams.get(key)
            if stream is None:
                stream = self.streams[key] = RoomStream(self.deflate or DeflatePolicy())
            stream.join(conn, deflate)
            self.compressed[conn] = key

    @staticmethod
    def _group(members: RoomMembers | Delivery, rfc6455: bool,
               tagged: bool) -> dict[Connection, None]:
        return members.tagged if tagged else members.rfc6455 if rfc6455 else members.hixie

    def leave_room(self, conn: Connection) -> None:
        """The user changes rooms: no broadcasts at all until it `join`s the next one."""
        self.rfc6455.pop(conn, None)
        self.hixie.pop(conn, None)
        self.tagged.pop(conn, None)
        self._exit(conn)

    def _exit(self, conn: Connection) -> None:
        key = self.compressed.pop(conn, None)
        if key is not None:
            stream = self.streams[key]
            stream.leave(conn)
            if not len(stream):
                del self.streams[key]  # the last one left: its zlib memory goes too
        room = self._room_of.pop(conn, None)
        if room is None:
            return
        members = self.rooms[room]
        members.rfc6455.pop(conn, None)
        members.hixie.pop(conn, None)
        members.tagged.pop(conn, None)
        if not members.rfc6455 and not members.hixie and not members.tagged:
            del self.rooms[room]

    def broadcast(self, message: str | bytes, excluded: Collection[Connection] = (),
                  room: str | None = None, tagged: bytes | None = None) -> int:
        """Queue `message` for every user that joined (of `room`, when given; but
        `excluded`); return how many. Tagged users get `tagged` (UTF-8) for a text message.

        Encoded once per protocol generation: every user's queue holds the same bytes.
        """
        is_text = isinstance(message, str)
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        opcode = Opcode.TEXT if is_text else Opcode.BINARY
        if excluded and self.compressed:
            for conn in excluded:  # they miss this message: they cannot follow their stream
                key = self.compressed.get(conn)
                if key is not None:
                    self.streams[key].miss(conn)
        members: RoomMembers | Delivery = self
        if room is not None:
            found = self.rooms.get(room)
            if found is None:
                return 0
            members = found
        conns = ([conn for conn in members.rfc6455 if conn not in excluded] if excluded
                 else list(members.rfc6455))
        if members.tagged:
            tagged_conns = [conn for conn in members.tagged if conn not in excluded]
            if is_text and tagged is not None:
                delivered = self._frame_out(tagged_conns, Opcode.TEXT, tagged, excluded)
                return delivered + self._rest(message, payload, opcode, conns, members,
                                              excluded)
            conns += tagged_conns  # binary: the same frame as everyone's
        return self._rest(message, payload, opcode, conns, members, excluded)

    def broadcast_tagged(self, room: str, text: bytes) -> int:
        """Queue one text message (`text`, UTF-8) for the TAGGED users of `room` only (the
        chat page's presence, rooms.py); return how many. Encoded once, compressed once
        per stream, as any broadcast: the room's tagged stream has no other members."""
        members = self.rooms.get(room)
        if members is None or not members.tagged:
            return 0
        return self._frame_out(list(members.tagged), Opcode.TEXT, text)

    def _rest(self, message: str | bytes, payload: bytes, opcode: Opcode,
              conns: list[Connection], members: RoomMembers | Delivery,
              excluded: Collection[Connection]) -> int:
        is_text = isinstance(message, str)
        delivered = self._frame_out(conns, opcode, payload, excluded)
        if members.hixie:
            if not is_text:
                log.debug("%d draft-75/76 user(s) cannot receive binary messages; skipped",
                          len(members.hixie))
                return delivered
            hixie = b"\x00" + payload + b"\xff"  # draft-76 §4.2, built once
            for conn in list(members.hixie):
                if not excluded or conn not in excluded:
                    self.queue(conn, hixie)
                    delivered += 1
        return delivered

    def _frame_out(self, conns: list[Connection], opcode: Opcode, payload: bytes,
                   excluded: Collection[Connection] = ()) -> int:
        """One message for many RFC 6455 users: encoded once, the same bytes in every
        queue; for the users that compress, at most twice per stream they are in (RFC 7692
        §7.2.1: once for the stream's followers, once for all the others), never per user."""
        compressed = self.compressed
        if not compressed:
            self._trace(conns, opcode, len(payload))
            return self.fan_out_parts(conns, frame_parts(opcode, payload))
        plain: list[Connection] = []
        by_stream: dict[str, None] = {}
        for conn in conns:
            key = compressed.get(conn)
            if key is None:
                plain.append(conn)
            else:
                by_stream[key] = None
        delivered = 0
        frame = None
        if plain:
            self._trace(plain, opcode, len(payload))
            frame = frame_parts(opcode, payload)
            delivered = self.fan_out_parts(plain, frame)
        for key in by_stream:
            # Every member of a stream is one of `conns` unless excluded (a stream holds
            # the users of one room and kind, and a broadcast goes to whole rooms).
            room_message = self.streams[key].compress(payload)
            if room_message is None:  # too short to pay: uncompressed to all
                group = [conn for conn in conns if compressed.get(conn) == key]
                self._trace(group, opcode, len(payload))
                delivered += self.fan_out_parts(group, frame or frame_parts(opcode, payload))
                continue
            for data, members in room_message.groups():
                group = cast(list[Connection],  # the members are the connections joined
                             [conn for conn in members if conn not in excluded] if excluded
                             else list(members))
                self._trace(group, opcode, len(payload), len(data))
                # §6: RSV1 on the (first and only) frame of a compressed message.
                delivered += self.fan_out_parts(group, frame_parts(opcode | RSV1, data))
        return delivered

    def _trace(self, conns: list[Connection], opcode: Opcode, size: int,
               compressed: int | None = None) -> None:
        if self.trace:
            how = "" if compressed is None else f", compressed to {compressed}"
            for conn in conns:
                log.debug("user %d > %s %d bytes%s", conn.user.id, opcode.name, size, how)

    # -- queueing ----------------------------------------------------------------------------

    def queue(self, conn: Connection, data: bytes, in_chat: bool = True) -> None:
        """Queue `data` for `conn`. `in_chat`: the fair-delivery rules apply (an open
        WebSocket user; answers to a handshake or a closing user's last frames do not)."""
        if in_chat and conn.out_cost > self.behind_mark and not self.admit(conn, conn.out_cost):
            return
        conn.queue(data)
        self.deliveries += 1

    def admit(self, conn: Connection, backlog: int) -> bool:
        """The rules above for a user with `backlog` bytes due: its queue, and what waits
        to be queued behind its history replay (replay.py). Over the behind mark it is
        behind; while it keeps up, the sender is held (`throttle`); once it does not, past
        max_buffer it is dropped (`on_overflow`) and False is returned."""
        if backlog > self.behind_mark:
            if not conn.behind_since:
                self.fall_behind(conn)
            if self.keeping_up(conn):
                self.throttle = True
            elif backlog > self.max_buffer:
                self.on_overflow(conn)
                return False
        return True

    def send(self, conn: Connection, message: str | bytes, rfc6455: bool) -> bool:
        """Queue one message for one user, framed for its protocol; False for a binary
        message to a draft-75/76 user, which has no way to receive one. A compressing
        user gets stand-alone compressed bytes, or the plain frame if it follows its
        room's stream (see the module docstring)."""
        if rfc6455:
            opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
            payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
            room = self.compressed.get(conn)
            if room is not None:
                data = self.streams[room].compress_direct(conn, payload)
                if data is not None:
                    if self.trace:
                        log.debug("user %d > %s %d bytes, compressed to %d", conn.user.id,
                                  opcode.name, len(payload), len(data))
                    for part in frame_parts(opcode | RSV1, data):
                        self.queue(conn, part)
                    return True
            self.queue_frame(conn, opcode, payload)
            return True
        if isinstance(message, str):
            self.queue(conn, b"\x00" + message.encode("utf-8") + b"\xff")  # draft-76 §4.2
            return True
        log.debug("user %d cannot receive binary messages (draft-75/76); skipped", conn.user.id)
        return False

    def queue_frame(self, conn: Connection, opcode: Opcode, payload: bytes,
                    in_chat: bool = True) -> None:
        """Queue one RFC 6455 frame (a large payload as a header and the payload itself)."""
        if self.trace:
            log.debug("user %d > %s %d bytes", conn.user.id, opcode.name, len(payload))
        for part in frame_parts(opcode, payload):
            self.queue(conn, part, in_chat)

    def fan_out_parts(self, conns: list[Connection], parts: tuple[bytes, ...]) -> int:
        """Queue one frame, as `frame_parts` made it, for every connection."""
        if len(parts) == 1:
            return self.fan_out(conns, parts[0])
        for conn in conns:
            for part in parts:
                self.queue(conn, part)
        return len(conns)

    def fan_out(self, conns: list[Connection], frame: bytes) -> int:
        """Queue one shared `frame` for every connection; return how many got it.

        This runs once per recipient per message: `Connection.queue` is inlined for the
        common case of a user that is not behind.
        """
        behind_mark = self.behind_mark
        pending = self.loop.pending
        cost = len(frame) + FRAME_COST
        queue = self.queue
        count = 0
        for conn in conns:
            if conn.out_cost <= behind_mark:
                conn.outbuf.append(frame)
                conn.out_cost += cost
                if not conn.writing:
                    pending[conn] = None
            else:
                queue(conn, frame)
            count += 1
        self.deliveries += count
        return count

    # -- behind, keeping up, caught up ---------------------------------------------------------

    def keeping_up(self, conn: Connection) -> bool:
        """Is a user that is behind still worth waiting for?"""
        now = self.loop.now
        if conn.writing and now - conn.progress_at > STALL_TIMEOUT:
            return False  # the kernel has taken nothing of its output for a while
        return not (conn.behind_since and now - conn.behind_since > BEHIND_TIMEOUT)

    def fall_behind(self, conn: Connection) -> None:
        conn.behind_since = self.loop.now
        conn.notify = True  # tell us when it drains (flushed)
        self.behind[conn] = None
        conn.hold_input(HOLD_BEHIND)

    def flushed(self, conn: Connection) -> None:
        """The kernel took some of a behind user's output: caught up yet?"""
        if conn.behind_since and conn.out_cost < self.caught_up_mark:
            conn.behind_since = 0.0
            self.behind.pop(conn, None)
            conn.release_input(HOLD_BEHIND)

    def hold_sender(self, conn: Connection) -> None:
        """`conn`'s message reached someone behind (`throttle`): hold its input."""
        self.throttled[conn] = None
        conn.hold_input(HOLD_THROTTLED)
        if self._recheck is None:
            self._recheck = self.loop.call_later(RECHECK, self._recheck_due)

    def _recheck_due(self) -> None:
        self._recheck = None
        if self.throttled:
            self.release()
            if self.throttled:
                self._recheck = self.loop.call_later(RECHECK, self._recheck_due)

    def release(self) -> None:
        """Let the held senders go once no user they wait for is still keeping up."""
        if not self.throttled:
            return
        for conn in self.behind:
            if self.keeping_up(conn):
                return
        throttled, self.throttled = self.throttled, {}
        for conn in throttled:
            conn.release_input(HOLD_THROTTLED)

    def leave(self, conn: Connection) -> None:
        """The user left the chat (its socket may still be flushing): it holds nobody back
        and waits for nobody. (If it is behind, its own input still waits to drain.)"""
        self.rfc6455.pop(conn, None)
        self.hixie.pop(conn, None)
        self.tagged.pop(conn, None)
        self._exit(conn)
        self.behind.pop(conn, None)
        if self.throttled.pop(conn, None) is not None or conn.hold & HOLD_THROTTLED:
            conn.release_input(HOLD_THROTTLED)

    def forget(self, conn: Connection) -> None:
        """The connection is closed."""
        self.behind.pop(conn, None)
        self.throttled.pop(conn, None)
