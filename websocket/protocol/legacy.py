"""The 2010 protocols: draft-75 and draft-76 (hixie-76, hybi-00) handshakes and framing.

This is what the original phpwebsocket spoke. Sans-I/O, like the RFC 6455 modules:

- `challenge_response(key1, key2, key3)`: draft-76 §5.2 steps, MD5 over two numbers and
  the 8 bytes that follow the request's blank line (the part the PHP divided blindly).
- `accept_response(...)`: the 101 answers of draft-75 and draft-76.
- `HixieReceiver`: `0x00 <utf-8> 0xFF` text frames, the `0xFF 0x00` closing handshake, and
  length-prefixed frames that are skipped (draft-76 §5.3), with the same events as RFC 6455.

There are no close codes, no binary messages and no pings in these drafts.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from ..errors import HttpError, InvalidPayload, MessageTooBig, ProtocolError, TryAgainLater
from .messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Event,
    InputBudget,
    Message,
    TextBuilder,
)

CLOSE_FRAME = b"\xff\x00"  # draft-76 §4.2 / §5.3: the closing handshake
MAX_KEY_NUMBER = 4_294_967_295  # draft-76 §5.2: "greater than 4,294,967,295 ... abort"


def key_part(key: str) -> int:
    """Draft-76 §5.2: the digits of a key, as a number, divided by its number of spaces.

    Raises HttpError(400) where the PHP original divided blindly: no spaces, no digits, a
    number of 2^32 or more, or a number that is not an exact multiple of the spaces.
    """
    digits = "".join(ch for ch in key if "0" <= ch <= "9")
    spaces = key.count(" ")
    if not digits:
        raise HttpError(400, "Sec-WebSocket-Key has no digits")
    if len(digits.lstrip("0")) > len(str(MAX_KEY_NUMBER)):
        # Checked on the text: int() of thousands of digits is slow, and refused past 4300.
        raise HttpError(400, "Sec-WebSocket-Key number is 2^32 or more")
    number = int(digits)
    if number > MAX_KEY_NUMBER:
        raise HttpError(400, "Sec-WebSocket-Key number is 2^32 or more")
    if spaces == 0:
        raise HttpError(400, "Sec-WebSocket-Key has no spaces")
    if number % spaces:
        raise HttpError(400, "Sec-WebSocket-Key number is not a multiple of its spaces")
    return number // spaces


def challenge_response(key1: str, key2: str, key3: bytes) -> bytes:
    """Draft-76 §5.2: MD5 of the two key parts (big-endian 32-bit) and the 8-byte key3."""
    if len(key3) != 8:
        raise HttpError(400, "draft-76 request needs exactly 8 bytes after the headers")
    challenge = struct.pack("!II", key_part(key1), key_part(key2)) + key3
    return hashlib.md5(challenge).digest()


def accept_response(draft: int, origin: str, location: str, protocol: str | None = None,
                    challenge: bytes = b"") -> bytes:
    """The 101 response of draft-75 (`draft=75`) or draft-76 (`draft=76`, with the MD5)."""
    prefix = "Sec-" if draft == 76 else ""
    lines = [
        "HTTP/1.1 101 WebSocket Protocol Handshake" if draft == 76
        else "HTTP/1.1 101 Web Socket Protocol Handshake",
        "Upgrade: WebSocket",
        "Connection: Upgrade",
        f"{prefix}WebSocket-Origin: {origin}",
        f"{prefix}WebSocket-Location: {location}",
    ]
    if protocol:
        lines.append(f"{prefix}WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + challenge


def encode_text(text: str) -> bytes:
    """Draft-76 §4.2: a text frame is 0x00, the UTF-8 bytes, 0xFF."""
    return b"\x00" + text.encode("utf-8") + b"\xff"


MAX_LENGTH_BYTES = 9  # 9 x 7 bits covers any length we would accept


class HixieReceiver:
    """Turns what a draft-75/76 client sends into events (draft-76 §5.3)."""

    __slots__ = ("max_message_size", "budget", "closed", "frames", "in_message", "message_serial",
                 "remaining",
                 "on_frame",
                 "_frame_type", "_text", "_size", "_skip")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 budget: InputBudget | None = None) -> None:
        self.max_message_size = max_message_size
        # Shared by every receiver (--max-input-memory): the bytes of a text frame are
        # reserved as they arrive, since these frames announce no length.
        self.budget = budget
        self.closed = False
        self.frames = 0  # frames begun so far (the caller's measure of work done)
        self.in_message = False  # a frame is only partly received (the server times it)
        self.message_serial = 0  # how many frames have begun: tells one from the next
        self.remaining = 0  # these frames announce no length: nothing known to be coming
        self._frame_type: int | None = None  # None: between frames
        self._text: TextBuilder | None = None  # the text frame so far
        self._size = 0
        self._skip = 0  # bytes of a length-prefixed frame still to discard
        # Called with (frame type, length) for each frame, when set (for -v logs).
        self.on_frame: Callable[[int, int], object] | None = None

    def discard(self) -> None:
        """Abandon the frame in progress (the connection is gone): free its budget."""
        self._release()
        self._frame_type = None
        self._text = None
        self.in_message = False

    def _release(self) -> None:
        if self.budget is not None and self._frame_type is not None:
            self.budget.give_back(self._size)
        self._size = 0

    def receive(self, buf: bytearray, events: list[Event] | None = None,
                max_frames: int = 1 << 62) -> list[Event]:
        """Consume what can be acted on from the front of `buf`; return events.

        Stops after `max_frames` frames, like `messages.Receiver.receive`. Raises
        ProtocolError subclasses like it, and keeps the events before the error in
        `events` when the caller passes its own list.
        """
        if events is None:
            events = []
        pos = 0
        end = len(buf)
        stop_at = self.frames + max_frames
        try:
            while pos < end and not self.closed:
                if self._skip:
                    step = min(self._skip, end - pos)
                    pos += step
                    self._skip -= step
                    self.in_message = self._skip > 0
                    continue
                if self._frame_type is None:
                    if self.frames >= stop_at:
                        break
                    self.frames += 1
                    frame_type = buf[pos]
                    if frame_type & 0x80:
                        # A length-prefixed frame: 7 bits per byte, high bit = "more".
                        length = 0
                        i = pos + 1
                        while True:
                            if i >= end:
                                self.frames -= 1  # counted again when it is complete
                                return events
                            if i - pos > MAX_LENGTH_BYTES:
                                raise ProtocolError("length-prefixed frame length too long")
                            byte = buf[i]
                            length = (length << 7) | (byte & 0x7F)
                            i += 1
                            if not byte & 0x80:
                                break
                        pos = i
                        if self.on_frame is not None:
                            self.on_frame(frame_type, length)
                        if frame_type == 0xFF and length == 0:
                            self.closed = True  # the closing handshake
                            events.append(Close(1005))
                            break
                        if length > self.max_message_size:
                            raise MessageTooBig(f"frame over the {self.max_message_size}-byte"
                                                " limit")
                        self._skip = length  # draft-76: read and discard
                        self.in_message = length > 0
                        self.message_serial += 1
                        continue
                    self._frame_type = frame_type
                    self.in_message = True
                    self.message_serial += 1
                    self._text = TextBuilder() if frame_type == 0x00 else None
                    self._size = 0
                    pos += 1
                # Inside a sentinel-terminated frame: data runs to the next 0xFF.
                stop = buf.find(b"\xff", pos, end)
                chunk_end = end if stop < 0 else stop
                if self._size + chunk_end - pos > self.max_message_size:
                    raise MessageTooBig(f"message over the {self.max_message_size}-byte limit")
                if self.budget is not None and not self.budget.take(chunk_end - pos):
                    raise TryAgainLater(f"the server holds {self.budget.held} bytes of "
                                        "unfinished messages; this frame must wait")
                self._size += chunk_end - pos
                if self._text is not None:
                    self._add(buf[pos:chunk_end])
                pos = chunk_end
                if stop < 0:
                    break
                pos += 1  # the 0xFF
                if self.on_frame is not None:
                    self.on_frame(self._frame_type, self._size)
                if self._text is not None:
                    events.append(Message(self._finish_text()))
                self._release()
                self._frame_type = None
                self.in_message = False
                self._text = None
        finally:
            del buf[:pos]
        return events

    def _add(self, chunk: bytearray) -> None:
        assert self._text is not None
        try:
            self._text.add(chunk)
        except UnicodeDecodeError:
            raise InvalidPayload("text frame is not valid UTF-8") from None

    def _finish_text(self) -> str:
        assert self._text is not None
        try:
            return self._text.finish()
        except UnicodeDecodeError:
            raise InvalidPayload("text frame is not valid UTF-8") from None
