"""The wire trace of compressed messages (permessage-deflate, RFC 7692).

`ConnectionTrace` (trace.py) learns from the 101 answer whether permessage-deflate was
agreed and with which windows, and then follows each direction's compressed messages with
an `InflateCounter` of its own: it only reads the bytes that pass (the server's and the
client's own inflaters are not touched), so the trace shows both sizes of every
compressed message, and its first bytes inflated, wherever it runs.
"""
from __future__ import annotations

import zlib

from ..errors import HttpError
from ..protocol.deflate import (
    EMPTY_BLOCK_TAIL,
    EXTENSION_NAME,
    MAX_WINDOW_BITS,
    MIN_WINDOW_BITS,
    parse_extensions,
)
from .trace_format import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    Direction,
    _dump,
    _field,
    compression_note,
)

MAX_INFLATE = 64 << 20  # a compressed message inflating to more is not followed by the trace


class InflateCounter:
    """Follows one direction's compressed messages (RFC 7692 §7.2.2) to show each one's
    inflated size and first bytes. The output is counted, never kept beyond `limit`
    bytes, and a message that inflates past MAX_INFLATE is not followed further."""

    def __init__(self, window_bits: int, no_context_takeover: bool, limit: int) -> None:
        self.window_bits = window_bits
        self.no_context_takeover = no_context_takeover
        self.limit = limit
        self.zlib: zlib._Decompress | None = None
        self.size = 0
        self.head = bytearray()
        self.failed: str | None = None
        # Why messages cannot be inflated any more: with context takeover, one message not
        # followed (or a trace that began after the first) leaves the window unknown.
        self.lost: str | None = None

    def start(self) -> None:
        if self.zlib is None or self.no_context_takeover:
            self.zlib = zlib.decompressobj(-self.window_bits)
        self.size = 0
        self.head.clear()
        self.failed = self.lost

    def feed(self, data: bytes, final: bool = False) -> None:
        if final:
            data += EMPTY_BLOCK_TAIL  # §7.2.2: the receiver appends 00 00 ff ff
        if self.failed is not None or self.zlib is None:
            return
        try:
            while True:
                out = self.zlib.decompress(data, 1 << 16)
                self.size += len(out)
                if len(self.head) < self.limit:
                    self.head += out[:self.limit - len(self.head)]
                if self.size > MAX_INFLATE:
                    self.failed = f"inflates to more than {MAX_INFLATE} bytes: not followed"
                    self._lose()
                    return
                if self.zlib.eof:  # a block with BFINAL: the next one starts afresh
                    data = self.zlib.unused_data
                    self.zlib = zlib.decompressobj(-self.window_bits)
                else:
                    data = self.zlib.unconsumed_tail
                if not data and len(out) < 1 << 16:
                    return
        except zlib.error as exc:
            self.failed = f"does not inflate ({exc}): the receiver fails with 1007"
            self._lose()

    def _lose(self) -> None:
        if not self.no_context_takeover:
            self.lost = "an earlier message could not be followed"


def agreed_deflate(value: str | None) -> dict[str, tuple[int, bool]] | None:
    """The permessage-deflate parameters of a 101 answer, or None (RFC 7692 §7.1)."""
    if not value:
        return None
    try:
        extensions = parse_extensions(value)
    except HttpError:
        return None
    for name, params in extensions:
        if name.lower() == EXTENSION_NAME:
            given = {key.lower(): argument for key, argument in params}
            return {CLIENT_TO_SERVER: (_bits(given, "client_max_window_bits"),
                                       "client_no_context_takeover" in given),
                    SERVER_TO_CLIENT: (_bits(given, "server_max_window_bits"),
                                       "server_no_context_takeover" in given)}
    return None


def _bits(given: dict[str, str | None], key: str) -> int:
    """A window size as the answer gave it (§7.1.2), 15 when it gave none (or nonsense)."""
    argument = given.get(key)
    if argument and argument.isdigit() and MIN_WINDOW_BITS <= int(argument) <= MAX_WINDOW_BITS:
        return int(argument)
    return MAX_WINDOW_BITS


def inflated_block(direction: Direction, label: str, wire_size: int,
                   counter: InflateCounter, text: bool) -> str:
    """The block that ends a compressed message: both sizes, then its first bytes inflated."""
    lines = [compression_note(direction, wire_size, counter.size, label=label)]
    if counter.head:
        lines += _dump("inflated", counter.head)
        if text and any(b >= 0x80 for b in counter.head):
            lines.append(_field("text", repr(bytes(counter.head).decode("utf-8", "replace"))))
    if counter.size > len(counter.head):
        lines.append(_field("cut", f"{counter.size - len(counter.head)} more inflated bytes "
                                   f"not shown (limit {counter.limit})"))
    if counter.failed is not None:
        lines.append(_field("note", counter.failed))
    return "\n".join(lines)
