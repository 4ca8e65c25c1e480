"""RFC 6455 frames to messages: fragments, incremental UTF-8, size limits (§5.4, §5.6, §8.1).

Sans-I/O. `Receiver.receive(buf)` consumes whatever complete information `buf` holds and
returns events; it never waits for a whole frame before acting on what it has already seen:

- a frame header that announces a message over the limit fails at once (1009), before any
  of the payload is buffered;
- the payload of a text frame goes through an incremental UTF-8 decoder as it arrives, so
  invalid UTF-8 fails (1007) as soon as the bad byte is in, even mid-frame;
- with permessage-deflate (RFC 7692), a compressed message (RSV1 on its first frame) is
  inflated as its pieces arrive, the limit checked on the inflated size while inflating
  (1009 before the memory is spent) and bad data failing with 1007; the inflated bytes
  count against the shared `InputBudget` too.

The events are shared with the draft-75/76 receiver in `legacy.py`.
"""
from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidPayload, MessageTooBig, ProtocolError, TryAgainLater
from .deflate import Agreed
from .deflate_streams import Inflater
from .frames import Opcode, apply_mask, parse_close, parse_header, unmask_in_place

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB, as websockets' default max_size
# --max-input-memory: all unfinished messages together. 256 x the default message size: a
# few hundred users may each be in the middle of a 1 MiB message at once, not 10,000.
DEFAULT_MAX_INPUT_MEMORY = 256 << 20
SMALL_PIECES = 4096  # fragments smaller than this are joined as they arrive


# A compressed message's frames may announce a little more than --max-message-size, which
# bounds the *inflated* size: stored (incompressible) DEFLATE blocks add 5 bytes per 65,535
# (RFC 1951 §3.2.4), far less than this slack of 1/1024 plus 64 bytes.
def compressed_wire_limit(max_message_size: int) -> int:
    """The most compressed bytes a message within `max_message_size` may take."""
    return max_message_size + (max_message_size >> 10) + 64


class InputBudget:
    """The bytes that every unfinished incoming message may hold together.

    Shared by all receivers of one server. A receiver reserves a frame's announced length
    before it keeps any of its payload, and gives it all back when the message is finished
    or abandoned, so the total never passes `limit` however many users are mid-message.
    """

    __slots__ = ("limit", "held")

    def __init__(self, limit: int = DEFAULT_MAX_INPUT_MEMORY) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (and nothing reserved) if that would pass the limit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


@dataclass(frozen=True)
class Message:
    """A whole data message: `str` for text, `bytes` for binary."""

    data: str | bytes


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    """The peer's close frame (§5.5.1); code 1005 when it carried none."""

    code: int
    reason: str = ""


Event = Message | Ping | Pong | Close


def add_piece(parts: list[bytes | bytearray], chunk: bytes | bytearray) -> None:
    """Keep the next piece of a message: large ones as they are, small ones joined into
    the last bytearray while it is under SMALL_PIECES bytes (see `Receiver`)."""
    if len(chunk) >= SMALL_PIECES:
        parts.append(chunk)
    elif parts and isinstance(parts[-1], bytearray) and len(parts[-1]) < SMALL_PIECES:
        parts[-1] += chunk
    else:
        parts.append(bytearray(chunk))



class Utf8Decoder:
    """Incremental UTF-8 (RFC 3629) for text that arrives in pieces (RFC 6455 §8.1).

    Like `codecs.getincrementaldecoder("utf-8")`, but it copies a piece only when the
    previous one ended inside a character, not on every call. Raises UnicodeDecodeError
    as soon as a byte makes the text invalid.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""  # the start of a character cut by the previous piece (< 4 bytes)

    def decode(self, piece: bytes | bytearray | memoryview, final: bool = False) -> str:
        data = self._pending + piece if self._pending else piece
        text, used = codecs.utf_8_decode(data, "strict", final)
        self._pending = bytes(data[used:])
        return text



class TextBuilder:
    """A text message arriving in pieces: decoded as it comes, so that invalid UTF-8 fails
    at the first bad byte (RFC 6455 §8.1), and kept so that it costs about its characters
    however small the pieces: small pieces are joined into one string per SMALL_PIECES
    characters (one string per two-byte fragment would cost ~50 bytes each).
    """

    __slots__ = ("_decoder", "_parts", "_small", "_small_size")

    def __init__(self) -> None:
        self._decoder = Utf8Decoder()
        self._parts: list[str] = []
        self._small: list[str] = []
        self._small_size = 0

    def add(self, piece: bytes | bytearray | memoryview) -> None:
        """The next piece; raises UnicodeDecodeError as soon as the text is invalid."""
        text = self._decoder.decode(piece)
        if len(text) >= SMALL_PIECES:
            if self._small:
                self._join_small()
            self._parts.append(text)
        elif text:
            self._small.append(text)
            self._small_size += len(text)
            if self._small_size >= SMALL_PIECES:
                self._join_small()

    def _join_small(self) -> None:
        self._parts.append("".join(self._small))
        self._small = []
        self._small_size = 0

    def finish(self) -> str:
        """The whole text; raises UnicodeDecodeError if it ends inside a character."""
        tail = self._decoder.decode(b"", final=True)
        return "".join(self._parts) + "".join(self._small) + tail


class Receiver:
    """Turns the bytes a client sends into events, for one RFC 6455 connection."""

    __slots__ = ("max_message_size", "require_mask", "budget", "closed", "frames", "on_frame",
                 "in_message", "message_serial", "remaining", "inflater", "deflate", "_fin",
                 "_mask", "_offset", "_in_frame", "_message_opcode", "_message_size", "_parts",
                 "_reserved", "_text", "_compressed", "frame_compressed")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 require_mask: bool = True, budget: InputBudget | None = None,
                 inflater: Inflater | None = None, deflate: Agreed | None = None) -> None:
        self.max_message_size = max_message_size
        self.require_mask = require_mask
        self.budget = budget  # shared with every other receiver (--max-input-memory)
        # permessage-deflate was agreed: RSV1 marks compressed messages, inflated by this
        # (its max_size is the message limit). None: RSV1 is a protocol error (1002),
        # unless `deflate` is given: then an Inflater for these parameters is made when a
        # compressed message begins, and with client_no_context_takeover dropped when it
        # ends, so that an idle user holds none (RFC 7692 §7.1.1.2).
        self.inflater = inflater
        self.deflate = deflate
        self._compressed = False  # the message in progress is compressed
        self.closed = False  # a close frame was received: §5.5.1 nothing after it counts
        self.frames = 0  # frame headers parsed so far (the caller's measure of work done)
        # Called with (opcode, fin, length) for every frame header, when set (for -v logs).
        self.on_frame: Callable[[Opcode, bool, int], object] | None = None
        self.frame_compressed = False  # RSV1 on that frame (set only while on_frame is)
        # The frame whose payload is still arriving, and how much of it has been read.
        self._fin = True
        self._mask: bytes | None = None
        self.remaining = 0  # payload bytes of the current data frame still to come
        self._offset = 0
        self._in_frame = False
        # The data message being assembled from fragments (§5.4), if any: True from its
        # first frame's header until its last byte (the server times it).
        self.in_message = False
        self.message_serial = 0  # how many messages have begun: tells one from the next
        self._message_opcode: Opcode | None = None
        self._message_size = 0
        # Its payload so far, text or binary. Either way large pieces are kept as they
        # came and small ones joined as they arrive, so a message cut into a million tiny
        # fragments costs about its bytes (one object per piece would cost ~40 bytes each).
        self._text: TextBuilder | None = None
        self._parts: list[bytes | bytearray] = []
        self._reserved = 0  # bytes of `budget` this message holds

    def discard(self) -> None:
        """Abandon the message in progress (the connection is gone): free its budget."""
        if self._reserved and self.budget is not None:
            self.budget.give_back(self._reserved)
        self._reserved = 0
        self._parts = []
        self._text = None
        self._message_opcode = None
        self._in_frame = False
        self.in_message = False
        if self._compressed and self.inflater is not None:
            self.inflater.end_message()  # its zlib object is dropped (no context takeover)
            self._inflated()
        self._compressed = False

    def receive(self, buf: bytearray, events: list[Event] | None = None,
                max_frames: int = 1 << 62) -> list[Event]:
        """Consume from the front of `buf` everything that can be acted on; return events.

        Stops after `max_frames` frame headers, leaving the rest of `buf` for the next call:
        the caller bounds the work one connection's input causes at a time (`frames`
        counts them).

        Raises a `ProtocolError` subclass (carrying its close code) when the data breaks
        RFC 6455; the caller must then fail the connection and not call this again. Pass
        your own `events` list to keep the events that came before the error.
        """
        if events is None:
            events = []
        pos = 0
        end = len(buf)
        stop_at = self.frames + max_frames
        allow_rsv1 = self.inflater is not None or self.deflate is not None
        try:
            while pos < end and not self.closed:
                if not self._in_frame:
                    if self.frames >= stop_at:
                        break
                    header = parse_header(buf, pos, self.require_mask, allow_rsv1)
                    if header is None:
                        break
                    self.frames += 1
                    opcode, length = header.opcode, header.length
                    if self.on_frame is not None:
                        self.frame_compressed = header.compressed
                        self.on_frame(opcode, header.fin, length)
                    if opcode >= Opcode.CLOSE:
                        # Control frames (§5.5) are small: wait for all of it, then act.
                        if end - pos < header.size + length:
                            self.frames -= 1  # counted again when it is complete
                            break
                        pos += header.size
                        control = bytes(buf[pos:pos + length])
                        pos += length
                        if header.mask is not None:
                            control = bytes(apply_mask(control, header.mask))
                        events.append(self._control(opcode, control))
                        continue
                    compressed = header.compressed
                    self._start_frame(opcode, length, compressed)
                    pos += header.size
                    if (self._message_opcode is None and header.fin
                            and end - pos >= length):
                        # Fast path: a whole unfragmented message is already here.
                        if header.mask is not None:
                            payload = apply_mask(buf, header.mask, 0, pos, pos + length)
                        else:
                            payload = bytes(buf[pos:pos + length])
                        pos += length
                        if compressed:
                            payload = self._inflate_whole(payload)
                        events.append(Message(self._whole(opcode, payload)))
                        continue
                    self._begin_fragment(opcode, header.fin, length, header.mask,
                                         compressed)
                # Payload of a data frame, possibly only part of it.
                take = min(self.remaining, end - pos)
                self._take_payload(buf, pos, take, events)
                pos += take
                if self.remaining:
                    break
        finally:
            del buf[:pos]
        return events

    def receive_payload(self, data: bytearray, size: int, events: list[Event]) -> None:
        """Take `data[:size]`, all of it payload of the data frame in progress (the caller
        read at most `remaining` bytes), straight from the caller's scratch buffer, which
        is unmasked in place: a large message streams in without an input buffer, and
        without a masked copy of each piece. `data` may be overwritten afterwards."""
        if not self._in_frame or size > self.remaining:
            raise ValueError("receive_payload: not inside a frame's payload")
        if self._mask is not None:
            unmask_in_place(data, self._mask, self._offset, size)
        with memoryview(data) as view:
            piece = view[:size]
            self._offset += size
            self.remaining -= size
            if self._compressed:
                self._keep(self._inflate_piece(piece))
            elif self._text is not None:
                try:  # decoded into a new str: nothing refers to `data` afterwards
                    self._text.add(piece)
                except UnicodeDecodeError:
                    raise InvalidPayload("text message is not valid UTF-8") from None
            else:
                add_piece(self._parts, bytes(piece))
            piece.release()
        if not self.remaining:
            self._in_frame = False
            if self._fin:
                events.append(Message(self._finish()))

    def _take_payload(self, data: bytes | bytearray, pos: int, take: int,
                      events: list[Event]) -> None:
        if self._mask is not None:
            chunk = apply_mask(data, self._mask, self._offset, pos, pos + take)
        else:
            chunk = bytes(data[pos:pos + take])
        self._offset += take
        self.remaining -= take
        self._add(chunk)
        if not self.remaining:
            self._in_frame = False
            if self._fin:
                events.append(Message(self._finish()))

    def _start_frame(self, opcode: Opcode, length: int, compressed: bool) -> None:
        """Check a data frame's header against the message in progress (§5.4) and limits.
        A compressed message's frames are checked against `compressed_wire_limit` here,
        its inflated size by the Inflater as it inflates."""
        if opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError("continuation frame without a message to continue")
            compressed = self._compressed
        elif self._message_opcode is not None:
            raise ProtocolError("new data frame while a fragmented message is unfinished")
        limit = (compressed_wire_limit(self.max_message_size) if compressed
                 else self.max_message_size)
        if self._message_size + length > limit:
            # Checked on the header, before a byte of the payload is kept.
            raise MessageTooBig(
                f"message over the {self.max_message_size}-byte limit "
                f"({self._message_size + length} bytes announced)")

    def _begin_fragment(self, opcode: Opcode, fin: bool, length: int,
                        mask: bytes | None, compressed: bool = False) -> None:
        if self.budget is not None and length:  # (inline: once per fragment)
            if not self.budget.take(length):
                raise TryAgainLater(
                    f"the server holds {self.budget.held} bytes of unfinished messages "
                    f"(limit {self.budget.limit}); this {length}-byte frame must wait")
            self._reserved += length
        self._in_frame = True
        self.in_message = True
        self._fin = fin
        self._mask = mask
        self.remaining = length
        self._offset = 0
        if opcode != Opcode.CONTINUATION:
            self._message_opcode = opcode
            self._compressed = compressed
            self.message_serial += 1
            if opcode == Opcode.TEXT:
                self._text = TextBuilder()
        self._message_size += length

    def _reserve(self, size: int, what: str) -> None:
        """Count `size` more bytes of this message against the shared budget (1013)."""
        if self.budget is not None and size:
            if not self.budget.take(size):
                raise TryAgainLater(
                    f"the server holds {self.budget.held} bytes of unfinished messages "
                    f"(limit {self.budget.limit}); this {size}-byte {what} must wait")
            self._reserved += size

    def _inflate_whole(self, payload: bytes | bytearray) -> bytes:
        """A whole compressed message, inflated (RFC 7692 §7.2.2)."""
        inflated = self._inflater().feed(payload, final=True)
        self._inflated()
        return inflated

    def _inflate_piece(self, piece: bytes | bytearray | memoryview) -> bytes:
        """The next piece of a compressed message, inflated; its last piece (the end of
        the final frame) with the `00 00 ff ff` tail restored (RFC 7692 §7.2.2). The
        inflated bytes are held until the message ends, so they count against the budget."""
        final = self._fin and not self.remaining
        inflated = self._inflater().feed(piece, final=final)
        if final:
            self._inflated()
        self._reserve(len(inflated), "inflated piece")
        return inflated

    def _inflater(self) -> Inflater:
        inflater = self.inflater
        if inflater is None:
            assert self.deflate is not None  # parse_header allowed RSV1 only with one
            inflater = self.inflater = self.deflate.inflater(self.max_message_size)
        return inflater

    def _inflated(self) -> None:
        """A compressed message is over: an Inflater made for it alone goes."""
        if self.deflate is not None and self.deflate.client_no_context_takeover:
            self.inflater = None

    def _add(self, chunk: bytes | bytearray) -> None:
        # (the same as _keep, inline: this runs once per fragment)
        if self._compressed:
            chunk = self._inflate_piece(chunk)
        if self._text is not None:
            try:
                self._text.add(chunk)
            except UnicodeDecodeError:
                raise InvalidPayload("text message is not valid UTF-8") from None
        else:
            add_piece(self._parts, chunk)

    def _keep(self, chunk: bytes | bytearray) -> None:
        if self._text is not None:
            try:
                self._text.add(chunk)
            except UnicodeDecodeError:
                raise InvalidPayload("text message is not valid UTF-8") from None
        else:
            add_piece(self._parts, chunk)

    def _finish(self) -> str | bytes:
        data: str | bytes
        if self._text is not None:
            try:
                data = self._text.finish()
            except UnicodeDecodeError:
                raise InvalidPayload("text message ends inside a UTF-8 sequence") from None
        else:
            data = b"".join(self._parts)
        if self._reserved and self.budget is not None:
            self.budget.give_back(self._reserved)
        self._reserved = 0
        self._message_opcode = None
        self.in_message = False
        self._message_size = 0
        self._parts = []
        self._text = None
        self._compressed = False
        return data

    @staticmethod
    def _whole(opcode: Opcode, payload: bytes | bytearray) -> str | bytes:
        if opcode == Opcode.TEXT:
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPayload("text message is not valid UTF-8") from None
        return payload if isinstance(payload, bytes) else bytes(payload)

    def _control(self, opcode: Opcode, payload: bytes) -> Event:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        code, reason = parse_close(payload)
        self.closed = True
        return Close(code, reason)
