"""permessage-deflate (RFC 7692 §7.2): the compressing and inflating streams, zlib only.

Sans-I/O. `DeflatePolicy` is what our compressors may use; `Deflater` (§7.2.1) compresses
one stream's messages (`00 00 ff ff` removed), `RoomStream` shares one stream among a
room's members plus stand-alone bytes for the rest (the measured default,
docs/compression.md), and `Inflater` (§7.2.2) inflates piece by piece with the limit on the
*inflated* size, so a bomb fails with `MessageTooBig` (1009) before its output exists; bad
data is 1007. Negotiation is `deflate.py`'s, which re-exports every name here.
Not here: RSV1 bits, frames and fragments (frames.py, messages.py), sockets.

The rule every design relies on: a peer's inflater keeps the history of every *compressed*
message it got (uncompressed ones do not enter it, §7.2.2). A compressor with context
takeover refers back into its own output, so a peer that follows its stream must get all
of it and no other compressed message. Stand-alone output refers to nothing before it and
can go to anyone whose window is large enough, mixed with anything.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidPayload, MessageTooBig

if TYPE_CHECKING:
    from .deflate import Agreed


# RFC 7692 §7.2.1: what a sync flush ends with, removed before sending, restored on receipt.
EMPTY_BLOCK_TAIL = b"\x00\x00\xff\xff"

# §7.1.2: window sizes are 2**8 .. 2**15 bytes. zlib compresses with 9 at least: asked for
# a raw 8-bit window, zlib >= 1.2.9 refuses (older ones silently used 9), see the note on
# `negotiate`. Inflating with 8 is fine.
MIN_WINDOW_BITS = 8
MIN_COMPRESS_WINDOW_BITS = 9
MAX_WINDOW_BITS = 15

# Messages shorter than this are sent uncompressed: compressed alone, they save 3 bytes
# or lose some (bench/deflate_study.py; docs/compression.md). Not ws's 1 KiB: that pays
# for a compression per recipient, while a room stream compresses once for all.
DEFAULT_MIN_SIZE = 32

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # as messages.DEFAULT_MAX_MESSAGE_SIZE

# A room stream restarts (so that newcomers can follow it) at most once per this many
# messages; newcomers get stand-alone bytes until then (see docs/compression.md).
DEFAULT_KEYFRAME_INTERVAL = 256


# --- What our compressors may use ------------------------------------------------------

@dataclass(frozen=True)
class DeflatePolicy:
    """What the server asks for, within what each offer allows.

    Attributes:
        server_max_window_bits: our compressors' largest window (9..15). Announced only to
            a client that offered the parameter (with the smaller value): a server may
            always use less than allowed, and some clients refuse it unasked.
        client_max_window_bits: asked of clients that offered the parameter (§7.1.2.2
            forbids it otherwise), 9..15: it bounds a kept inflater. Not 8: zlib-based
            clients cannot compress so (websockets' client fails the connection).
        server_no_context_takeover: announce it unasked (§7.1.1.1): every user then gets
            stand-alone bytes only. Agreed anyway for a client that asks.
        client_no_context_takeover: demand it (§7.1.1.2 allows that): each incoming
            message inflates from an empty window, so an idle user holds no inflater.
        mem_level, level: zlib's, for our compressors (memory is about
            2**(window_bits + 2) + 2**(mem_level + 9) bytes plus ~6 KiB each).
        min_size: messages shorter than this go uncompressed.
    """

    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = True
    mem_level: int = 8
    level: int = 6
    min_size: int = DEFAULT_MIN_SIZE

    def __post_init__(self) -> None:
        if not MIN_COMPRESS_WINDOW_BITS <= self.server_max_window_bits <= MAX_WINDOW_BITS:
            raise ValueError("server_max_window_bits must be 9..15 (zlib cannot compress "
                             "with 8)")
        if not MIN_COMPRESS_WINDOW_BITS <= self.client_max_window_bits <= MAX_WINDOW_BITS:
            raise ValueError("client_max_window_bits must be 9..15 (zlib-based clients "
                             "cannot compress with 8)")
        if not 1 <= self.mem_level <= 9 or not 0 <= self.level <= 9:
            raise ValueError("mem_level must be 1..9 and level 0..9")


DEFAULT_POLICY = DeflatePolicy()

# --- Compression: RFC 7692 §7.2.1 ------------------------------------------------------

def new_compressor(window_bits: int = MAX_WINDOW_BITS, mem_level: int = 8,
                   level: int = 6) -> zlib._Compress:
    """A raw-DEFLATE zlib compressor (negative wbits: no zlib header, §7.2.1).

    Raises:
        ValueError: `window_bits` is not 9..15 (zlib cannot compress with 8).
    """
    if not MIN_COMPRESS_WINDOW_BITS <= window_bits <= MAX_WINDOW_BITS:
        raise ValueError("a compressor's window_bits must be 9..15")
    return zlib.compressobj(level, zlib.DEFLATED, -window_bits, mem_level)


def compress_message(compressor: zlib._Compress, payload: bytes | bytearray | memoryview,
                     flush: int = zlib.Z_SYNC_FLUSH) -> bytes:
    """One message's compressed payload, per §7.2.1: compress, flush so that the data ends
    with an empty stored block, and remove that block's `00 00 ff ff`.

    With `zlib.Z_SYNC_FLUSH` the compressor keeps its window (context takeover); with
    `zlib.Z_FULL_FLUSH` the *next* message refers to nothing before it. An empty message
    gives b"\\x00", the 3 header bits of an empty stored block.
    """
    data = compressor.compress(payload) + compressor.flush(flush)
    if not data.endswith(EMPTY_BLOCK_TAIL):  # zlib always ends a sync/full flush so
        raise AssertionError("zlib flush did not end with an empty stored block")
    return data[:-4]


class Deflater:
    """Compresses the messages of one stream: one user's, one room's, or everyone's.

    - `context_takeover=True`: a message may refer to the ones before it (§7.2.1 "MAY").
      Its recipients must get the whole stream in order and no other compressed message;
      `restart()` lets a newcomer's fresh inflater follow from the next message on.
    - `context_takeover=False`: a full flush after each message, so the next refers to
      nothing before it: any peer with a window of at least `window_bits` inflates it,
      keeping context or not. Compress once, send to everyone.

    The zlib object is created on the first message and dropped by `release()`.
    """

    __slots__ = ("window_bits", "mem_level", "level", "context_takeover", "_zlib",
                 "_restart")

    def __init__(self, window_bits: int = MAX_WINDOW_BITS, mem_level: int = 8,
                 level: int = 6, context_takeover: bool = True) -> None:
        if not MIN_COMPRESS_WINDOW_BITS <= window_bits <= MAX_WINDOW_BITS:
            raise ValueError("a compressor's window_bits must be 9..15 (zlib cannot "
                             "compress with 8)")
        if not 1 <= mem_level <= 9 or not 0 <= level <= 9:
            raise ValueError("mem_level must be 1..9 and level 0..9")
        self.window_bits = window_bits
        self.mem_level = mem_level
        self.level = level
        self.context_takeover = context_takeover
        self._zlib: zlib._Compress | None = None
        self._restart = False

    @classmethod
    def for_policy(cls, policy: DeflatePolicy, context_takeover: bool = True,
                   window_bits: int | None = None) -> Deflater:
        """A Deflater with the policy's memLevel and level, and its window unless given."""
        bits = policy.server_max_window_bits if window_bits is None else window_bits
        return cls(bits, policy.mem_level, policy.level, context_takeover)

    def compress(self, payload: bytes | bytearray | memoryview) -> bytes:
        """The compressed payload of one whole message (RSV1 goes on its first frame)."""
        compressor = self._zlib
        if compressor is None:
            compressor = self._zlib = new_compressor(self.window_bits, self.mem_level,
                                                     self.level)
        elif self._restart:
            # Z_FULL_FLUSH with no input: an empty stored block (which carries no data and
            # so need not be sent: the previous message already ended on a byte boundary)
            # and the compressor forgets its history, so nothing after it refers back.
            tail = compressor.flush(zlib.Z_FULL_FLUSH)
            if tail and (tail[-4:] != EMPTY_BLOCK_TAIL or len(tail) > 5):
                raise AssertionError("zlib full flush did not give one empty stored block")
        self._restart = False
        flush = zlib.Z_SYNC_FLUSH if self.context_takeover else zlib.Z_FULL_FLUSH
        return compress_message(compressor, payload, flush)

    def restart(self) -> None:
        """Make the next message refer to nothing before it (RFC 7692 allows a server to
        start any message with an empty window). For a room: call it when a member joins,
        before the next room message is compressed. Costs nothing until that message."""
        self._restart = self._zlib is not None and self.context_takeover

    def release(self) -> None:
        """Free the zlib state (e.g. for a user idle for long); the next message starts
        afresh, which every peer can follow, as with `restart()`."""
        self._zlib = None
        self._restart = False


class RoomStream:
    """One broadcast compressed at most twice for a whole room, whatever the members: (c)+(a).

    Members that allow context takeover, with a window at least the stream's, follow one
    shared stream (a `Deflater` with context takeover: the best ratio, one compression per
    message). A newcomer waits for the next keyframe, a `restart()` of the stream done at
    most once per `keyframe_interval` messages so that joins cost the others little ratio;
    until then, and for good if it cannot follow (server_no_context_takeover, or a smaller
    window), it is one of the *others*. The others all get the same stand-alone bytes
    (`context_takeover=False`), compressed once with the smallest window any of them
    accepts: RFC 7692 §7.1.2.1 lets a server use any window up to the one agreed, and
    stand-alone data refers back at most that far, so every other member inflates it
    (docs/compression.md measures what the smaller window costs: nothing on chat lines).

    Members are hashable keys (users). Per message: `message = room.compress(data)`, then
    for each `(payload, members) in message.groups()` one frame (RSV1 set) to every member
    of the group, before the next `compress`. A message shorter than the policy's
    `min_size` gives None: send it uncompressed to all. A direct message to one member:
    `compress_direct` (None means uncompressed: a compressed message outside the stream
    would corrupt a follower's window).
    """

    __slots__ = ("policy", "keyframe_interval", "stream", "_alone", "_bits", "_followers",
                 "_others", "_windows", "_waiting", "_missing", "_since_keyframe")

    # In `_bits` values, beside the window bits: the member follows from the next keyframe.
    # (A flag rather than one more set: an idle member then costs one dict and one set entry.)
    _WAITING = 0x10
    _BITS = 0x0F

    def __init__(self, policy: DeflatePolicy = DEFAULT_POLICY,
                 keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL) -> None:
        self.policy = policy
        self.keyframe_interval = keyframe_interval
        self.stream = Deflater.for_policy(policy)
        # The others' stand-alone compressor, with the smallest window in `_windows` (made
        # again when that changes: it keeps no context, so nothing is lost).
        self._alone: Deflater | None = None
        # member -> window it agreed to (as bits), | _WAITING if it follows from the next
        # keyframe (it is then among the others until that keyframe)
        self._bits: dict[object, int] = {}
        self._followers: set[object] = set()
        self._others: set[object] = set()  # members not following: stand-alone bytes
        self._windows: dict[int, int] = {}  # window bits -> how many of the others have it
        self._waiting = 0  # how many members are _WAITING
        self._missing: set[object] = set()  # members that will not get the next message
        self._since_keyframe = 0

    def join(self, member: object, agreed: Agreed) -> None:
        """Add a member with the parameters it agreed to."""
        if member in self._bits:
            self.leave(member)
        bits = min(agreed.server_max_window_bits, self.policy.server_max_window_bits)
        self._add_other(member, bits)
        if agreed.can_receive(self.stream):
            bits |= self._WAITING
            self._waiting += 1
        self._bits[member] = bits

    def __len__(self) -> int:
        """How many members the stream has."""
        return len(self._bits)

    def leave(self, member: object) -> None:
        bits = self._bits.pop(member, None)
        if bits is not None:
            if member in self._followers:
                self._followers.discard(member)
            else:
                self._remove_other(member, bits & self._BITS)
            if bits & self._WAITING:
                self._waiting -= 1
        self._missing.discard(member)
        if not self._followers:
            self.stream.release()

    def _add_other(self, member: object, bits: int) -> None:
        self._others.add(member)
        self._windows[bits] = self._windows.get(bits, 0) + 1

    def _remove_other(self, member: object, bits: int) -> None:
        self._others.discard(member)
        left = self._windows[bits] - 1
        if left:
            self._windows[bits] = left
        else:
            del self._windows[bits]

    def miss(self, member: object) -> None:
        """The member will not get the next message (a broadcast that excludes it). A
        follower cannot follow the stream past a message it did not get: it waits for
        the next keyframe, with stand-alone bytes until then. Call before `compress`."""
        if member not in self._bits:
            return
        self._missing.add(member)
        if member in self._followers:
            self._followers.discard(member)
            bits = self._bits[member]
            self._add_other(member, bits)
            self._bits[member] = bits | self._WAITING
            self._waiting += 1

    def follows(self, member: object) -> bool:
        """The member receives the shared stream (and so no other compressed message)."""
        return member in self._followers

    def compress(self, payload: bytes | bytearray | memoryview) -> RoomMessage | None:
        """Compress a message for every member; None when it is to go uncompressed."""
        missing, self._missing = self._missing, set()
        if len(payload) < self.policy.min_size:
            return None
        if self._waiting and (not self._followers
                              or self._since_keyframe >= self.keyframe_interval):
            members = self._bits
            joining = [member for member in self._others
                       if members[member] & self._WAITING and member not in missing]
            if joining:
                self.stream.restart()  # the keyframe: newcomers follow from here
                for member in joining:
                    bits = members[member] & self._BITS
                    members[member] = bits
                    self._remove_other(member, bits)
                self._followers.update(joining)
                self._waiting -= len(joining)
                self._since_keyframe = 0
        self._since_keyframe += 1
        stream = self.stream.compress(payload) if self._followers else None
        return RoomMessage(self, payload, stream)

    def compress_direct(self, member: object, payload: bytes | bytearray | memoryview
                        ) -> bytes | None:
        """A message for one member alone: stand-alone bytes, or None (uncompressed)."""
        if member in self._followers or len(payload) < self.policy.min_size:
            return None
        return self._alone_deflater().compress(payload)  # the member is one of the others

    def _alone_deflater(self) -> Deflater:
        """The others' stand-alone compressor: the smallest window any of them agreed to,
        so that one compression serves them all (RFC 7692 §7.1.2.1). Needs an other."""
        bits = min(self._windows)
        deflater = self._alone
        if deflater is None or deflater.window_bits != bits:
            deflater = self._alone = Deflater.for_policy(
                self.policy, context_takeover=False, window_bits=bits)
        return deflater


class RoomMessage:
    """One message of a `RoomStream`: its payload for each group of members."""

    __slots__ = ("_room", "_payload", "stream")

    def __init__(self, room: RoomStream, payload: bytes | bytearray | memoryview,
                 stream: bytes | None) -> None:
        self._room = room
        self._payload = payload
        self.stream = stream  # what the followers get

    def groups(self) -> list[tuple[bytes, set[object]]]:
        """(compressed payload, the members that get it) pairs covering every member: at
        most two, the stream's followers and the others (one compression each). The sets
        are the room's own: read them, and deliver before the next compress."""
        room = self._room
        groups = [(self.stream, room._followers)] if self.stream is not None else []
        if room._others:
            groups.append((room._alone_deflater().compress(self._payload), room._others))
        return groups


# --- Decompression: RFC 7692 §7.2.2 ----------------------------------------------------

# Below this a final piece is joined with the 4-byte tail (one call); above, the tail gets
# its own call rather than a copy of the piece.
_JOIN_TAIL_BELOW = 4096


class Inflater:
    """Inflates one peer's compressed messages, piece by piece, within a size limit.

    Feed each piece of a message's (unmasked) payload as it arrives, `final=True` with the
    last; each call returns what it inflated, never more than the message may still grow
    by. The `00 00 ff ff` tail is appended after the last piece (§7.2.2).

    With `no_context_takeover` the zlib object exists only while a message is inflated, so
    an idle user holds none; otherwise one is kept (§7.2.2: "MUST decompress each new
    message using the LZ77 sliding window used to process the last compressed message").

    After a block with BFINAL set more blocks may follow (§7.2.1, §7.2.3.4). zlib stops
    there, so a new zlib object goes on, primed with the current message's output. Only a
    stream that then refers back past it into an *earlier* message fails (1007, never wrong
    data): zlib cannot hand its window over, and zlib-based senders cannot produce one.
    """

    __slots__ = ("window_bits", "no_context_takeover", "max_size", "_zlib", "_size",
                 "_recent", "_recent_size")

    def __init__(self, window_bits: int = MAX_WINDOW_BITS, no_context_takeover: bool = True,
                 max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if not MIN_WINDOW_BITS <= window_bits <= MAX_WINDOW_BITS:
            raise ValueError("window_bits must be 8..15")
        self.window_bits = window_bits
        self.no_context_takeover = no_context_takeover
        self.max_size = max_size
        self._zlib: zlib._Decompress | None = None
        self._size = 0  # inflated bytes of the current message so far
        # The current message's output, newest last, about one window's worth: what a
        # zlib object replacing one stopped by a BFINAL block is primed with.
        self._recent: list[bytes] = []
        self._recent_size = 0

    def feed(self, piece: bytes | bytearray | memoryview, final: bool = False) -> bytes:
        """Inflate the next piece of the current message; `final` for its last piece.

        Raises:
            MessageTooBig: 1009, the message inflates to more than `max_size` bytes;
                raised before more than `max_size + 1` bytes of it have been produced.
            InvalidPayload: 1007, the data is not valid DEFLATE.
        After either, the Inflater is unusable (the connection is to be failed).
        """
        if self._zlib is None:
            self._zlib = zlib.decompressobj(-self.window_bits)
        if final and len(piece) < _JOIN_TAIL_BELOW:
            output = self._inflate(bytes(piece) + EMPTY_BLOCK_TAIL)
        elif final:
            output = self._inflate(piece)
            output += self._inflate(EMPTY_BLOCK_TAIL)
        else:
            output = self._inflate(piece)
        if final:
            self.end_message()
        return output

    def end_message(self) -> None:
        """Forget the current message's count (done by `feed(..., final=True)`); without
        context takeover, also drop the zlib object. Call it to abandon a message."""
        self._size = 0
        if self._recent:
            self._recent = []
            self._recent_size = 0
        if self.no_context_takeover:
            self._zlib = None

    def _inflate(self, data: bytes | bytearray | memoryview) -> bytes:
        assert self._zlib is not None
        inflater = self._zlib
        budget = self.max_size - self._size
        chunks: list[bytes] = []
        while True:
            try:
                # max_length = budget + 1: one byte over the limit proves the message too
                # big, and zlib stops there, leaving the rest in unconsumed_tail.
                chunk = inflater.decompress(data, budget + 1)
            except zlib.error as exc:
                raise InvalidPayload(f"compressed message does not inflate ({exc})") from None
            if len(chunk) > budget:
                raise MessageTooBig(f"compressed message inflates to more than the "
                                    f"{self.max_size}-byte limit")
            if chunk:
                budget -= len(chunk)
                chunks.append(chunk)
                self._remember(chunk)
            if inflater.eof:
                # A block with BFINAL ended zlib's stream; what follows is the next block
                # (after padding), inflated with the same window (§7.2.1, §7.2.3.4).
                data = inflater.unused_data
                inflater = self._zlib = zlib.decompressobj(
                    -self.window_bits, zdict=b"".join(self._recent)[-(1 << self.window_bits):])
                if not data:
                    break
            else:
                data = inflater.unconsumed_tail  # non-empty only when max_length was hit
                if not data:
                    break
        self._size = self.max_size - budget
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _remember(self, chunk: bytes) -> None:
        """Keep at least the last window of the current message's output: appended as it
        comes, joined and cut back to one window only once twice that is held (amortized
        O(1) per byte; a message in many small pieces costs no per-piece trimming)."""
        window = 1 << self.window_bits
        if len(chunk) >= window:
            self._recent = [chunk]  # a reference, not a copy: cut when used
            self._recent_size = len(chunk)
            return
        self._recent.append(chunk)
        self._recent_size += len(chunk)
        if self._recent_size >= 2 * window:
            kept = b"".join(self._recent)[-window:]
            self._recent = [kept]
            self._recent_size = len(kept)
