"""RESP2, the Redis serialization protocol: a command encoder and an incremental reply reader.

Sans-I/O, shaped like hiredis's reader: `Reader.feed(data)` appends what a socket delivered,
`Reader.gets()` returns the next whole reply or `NEED_MORE`; `encode_command` makes the bytes
to send. "RESP §X" cites section X of the Redis serialization protocol specification
(redis.io/docs/reference/protocol-spec), RESP2 parts. Replies become plain values:
`+OK` str, `-ERR x` RedisError (a str: a value, not raised), `:1` int, `$5 hello` bytes,
`*2 ...` list (nested), `$-1` and `*-1` None; a bulk string longer than the Reader's
`skip_bulk_over` is read and thrown away as it comes, and stands in the reply as `Skipped`.

Not here: RESP3 (we never send HELLO 3, so Redis never uses its types; their type bytes are
protocol errors), inline commands, sockets, reconnecting, the meaning of pub/sub messages.

Bad bytes raise `RespProtocolError` (with the stream position) and nothing else. It is not in
the `websocket.errors` tree on purpose: those carry the close code or HTTP status owed to the
*user* whose bytes raised them, and the loop's one handler sends it. A RESP error means our
own upstream link is broken (a wrong port, a proxy, a bug): drop and reconnect the link and
log it, never close a user with 1002. Apart, one cannot be mistaken for the other.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias


class RedisError(str):
    """RESP §Simple errors: an error reply, e.g. "ERR unknown command 'x'".

    A value, not an exception: in a pipeline it answers one command; the caller decides.
    """

    @property
    def prefix(self) -> str:
        """RESP §Simple errors: "the first upper-case word after the -": ERR, NOAUTH, WRONGPASS."""
        return self.split(" ", 1)[0]


@dataclass(frozen=True)
class Skipped:
    """A bulk string longer than the Reader's `skip_bulk_over`: its bytes were read and
    dropped as they arrived (never held); only its length is left."""

    length: int


Reply: TypeAlias = str | int | bytes | Skipped | None | list["Reply"]


class NeedMore(enum.Enum):
    NEED_MORE = "need more"  # `gets()` has no whole reply yet


NEED_MORE: Final = NeedMore.NEED_MORE


class _Started(enum.Enum):
    STARTED = "started"  # an array or bulk string header was read; its contents follow


_STARTED: Final = _Started.STARTED


class RespProtocolError(Exception):
    """The bytes are not RESP2: a bad type byte, a bad length, a missing CRLF.

    `position` is the offset in the stream (counted from the Reader's first byte) of the
    element that is wrong. After one, the Reader raises it again on every `gets()`: the
    stream cannot be resynchronised, so the connection has to go.
    """

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} (at byte {position})")
        self.reason = reason
        self.position = position


class ReplyLimitExceeded(RespProtocolError):
    """Well-formed RESP, but past one of the Reader's limits (refused before buffering it)."""


# RESP §Bulk strings: "by default, Redis limits it to 512 MB (see the proto-max-bulk-len
# configuration directive)". Redis stores no longer value, so it sends none.
MAX_BULK_BYTES: Final = 512 * 1024 * 1024
# The longest reply held at once (wire bytes, whole arrays included): by default one value
# of the largest size and room around it (a pub/sub message adds its channel name). The
# Redis link may pass less, sized from what it asks for.
MAX_REPLY_BYTES: Final = MAX_BULK_BYTES + 64 * 1024
# Simple strings and errors are one line each ("OK", "PONG", error messages). Redis reads at
# most 64 KiB for a line of its own (PROTO_INLINE_MAX_SIZE); no reply line comes near that.
MAX_LINE_BYTES: Final = 64 * 1024
# RESP §Integers: "a signed 64-bit integer", so at most 20 characters ("-9223372036854775808").
# Bulk and array lengths are written the same way.
MAX_NUMBER_CHARS: Final = 20
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# Elements of one array. hiredis allows 2^32-1 and callocs that many pointers for the header
# alone; we never preallocate, but a list of 2^20 already holds 8 MiB of pointers. This client
# asks for pub/sub messages (3 or 4 elements) and LRANGE over a history of --history entries.
MAX_ARRAY_LENGTH: Final = 1024 * 1024
# Arrays open inside each other. Pub/sub messages nest 1 deep; the deepest replies of Redis
# 7.0 measured here are COMMAND DOCS (12), COMMAND (8) and XINFO STREAM FULL (7).
MAX_DEPTH: Final = 16
# Elements of one whole reply, nested arrays and their elements included (an array of a
# million empty arrays is a million and one), whatever each array's own length. By default
# as many as full arrays at every depth: no limit beyond those (and the memory's below);
# the Redis link passes what its replies can have.
MAX_REPLY_ELEMENTS: Final = MAX_DEPTH * MAX_ARRAY_LENGTH + 1
# What an element of a reply costs in memory beyond its data: measured with tracemalloc
# (Python 3.11, 200,000 of each in one reply, list slots included) 41 bytes for a bulk
# string, 40-44 for an integer, 57 for "OK", 64 for an empty array, 130 for an error reply
# (a str subclass); pymalloc rounds each up (4 arrays of a million empty arrays: ~77 bytes
# each of RSS). Counted high, once for every element, so the sum bounds what a reply holds
# (tests/test_resp.py measures it for each kind).
ELEMENT_COST: Final = 160
# The memory one reply may hold while it is built (data + ELEMENT_COST per element): by
# default the largest reply and a full array's elements. The Redis link passes far less.
MAX_REPLY_MEMORY: Final = MAX_REPLY_BYTES + MAX_ARRAY_LENGTH * ELEMENT_COST

# RESP §RESP protocol description: "the first byte of data determines its type".
SIMPLE_STRING: Final = ord("+")
ERROR: Final = ord("-")
INTEGER: Final = ord(":")
BULK_STRING: Final = ord("$")
ARRAY: Final = ord("*")
_RESP2_TYPES: Final = frozenset({SIMPLE_STRING, ERROR, INTEGER, BULK_STRING, ARRAY})
_RESP3_TYPES: Final = frozenset(b"_#,(!=%~>|")
CRLF: Final = b"\r\n"


def encode_command(*args: str | bytes | bytearray | int) -> bytes:
    """One command as RESP §Sending commands: "an array consisting of only bulk strings".

    str goes as UTF-8, int in decimal: `encode_command("LTRIM", key, -100, -1)`.

    Raises:
        ValueError: no arguments (Redis answers "*0" with nothing at all: a pipeline's
            replies would shift by one), or one longer than Redis accepts.
        TypeError: another type (bool and float too: ambiguous).
    """
    if not args:
        raise ValueError("a command needs at least its name")
    parts: list[bytes | bytearray] = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data: bytes | bytearray = arg.encode()
        elif isinstance(arg, (bytes, bytearray)):
            data = arg
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"a Redis argument is str, bytes or int, not {type(arg).__name__}")
        if len(data) > MAX_BULK_BYTES:
            # Redis answers "invalid bulk length" and closes the connection.
            raise ValueError(f"argument of {len(data)} bytes; Redis takes {MAX_BULK_BYTES}")
        parts += (b"$%d\r\n" % len(data), data, CRLF)
    return b"".join(parts)


class Reader:
    """Incremental RESP2 reply parser (hiredis's redisReaderFeed / redisReaderGetReply).

    Feed bytes as they arrive, then call `gets()` until it returns `NEED_MORE`. Nothing is
    parsed twice: bulk data is awaited by its length alone, a line's scanned bytes are not
    searched again, arrays are filled in place; a reply in many pieces costs linear time.
    After `NEED_MORE` it holds the values so far of one unfinished reply (at most
    `max_reply_bytes` on the wire, `max_reply_memory` as Python objects, counting
    ELEMENT_COST per element, `max_reply_elements` elements in all) and the unparsed rest of
    one element: a line of at most `max_line_bytes`, or bulk data whose declared length
    passed every limit first. Each limit is checked on a header, before what it announces
    is read. A bulk string longer than `skip_bulk_over` (if given) is not kept: its bytes
    are dropped as they come and the reply holds `Skipped(length)` in its place, so a
    caller can refuse one oversized value and carry on with the stream.
    """

    def __init__(self, *, max_bulk_bytes: int = MAX_BULK_BYTES,
                 max_reply_bytes: int = MAX_REPLY_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
                 max_array_length: int = MAX_ARRAY_LENGTH, max_depth: int = MAX_DEPTH,
                 max_reply_elements: int = MAX_REPLY_ELEMENTS,
                 max_reply_memory: int = MAX_REPLY_MEMORY,
                 skip_bulk_over: int | None = None) -> None:
        self.max_bulk_bytes = max_bulk_bytes
        self.max_reply_bytes = max_reply_bytes
        self.max_line_bytes = max_line_bytes
        self.max_array_length = max_array_length
        self.max_depth = max_depth
        self.max_reply_elements = max_reply_elements
        self.max_reply_memory = max_reply_memory
        self.skip_bulk_over = skip_bulk_over
        self._buf = bytearray()
        self._pos = 0  # next unparsed byte of _buf
        self._dropped = 0  # bytes deleted from the front of _buf: stream offset = _dropped + index
        self._scanned = 0  # bytes of the current line already known to hold no CRLF
        self._bulk: int | None = None  # declared length of a bulk string whose data is awaited
        self._arrays: list[list[Reply]] = []  # arrays being filled, outermost first
        self._missing: list[int] = []  # how many elements each of them still lacks
        self._reply_start = 0  # stream offset of the current reply's first byte
        self._elements = 0  # elements of the current reply announced so far
        self._held = 0  # what the current reply holds: data + ELEMENT_COST per element
        self._skipped = 0  # bytes of the current reply dropped unread (skipped bulk data)
        self._skip_left = 0  # data bytes of the skipped bulk string still to drop
        self._skipping = False  # the bulk string whose data is awaited is being skipped
        self._error: RespProtocolError | None = None

    @property
    def position(self) -> int:
        """Stream bytes consumed so far (the end of the last element parsed)."""
        return self._dropped + self._pos

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from Redis (any amount, cut anywhere)."""
        if self._pos:
            # Consumed bytes go first; CPython drops a bytearray's prefix without copying.
            del self._buf[:self._pos]
            self._dropped += self._pos
            self._pos = 0
        self._buf += data

    def gets(self) -> Reply | NeedMore:
        """The next whole reply, or `NEED_MORE` until its last byte has been fed.

        Raises:
            RespProtocolError: not RESP2 (`ReplyLimitExceeded`: past a limit); raised again
                on every later call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_reply()
        except RespProtocolError as exc:
            self._error = exc
            raise

    def _next_reply(self) -> Reply | NeedMore:
        while True:
            if self._bulk is not None:
                value: Reply | NeedMore | _Started = self._read_bulk_data(self._bulk)
            else:
                value = self._read_element()
            if value is NEED_MORE:
                return NEED_MORE
            if value is _STARTED:
                continue
            # A whole element: it fills a slot of the innermost open array, or is the reply.
            while self._arrays:
                items = self._arrays[-1]
                items.append(value)
                self._missing[-1] -= 1
                if self._missing[-1]:
                    break
                self._arrays.pop()
                self._missing.pop()
                value = items
            else:
                return value

    def _fail(self, reason: str, index: int, limit: bool = False) -> RespProtocolError:
        error = ReplyLimitExceeded if limit else RespProtocolError
        return error(reason, self._dropped + index)

    def _read_element(self) -> Reply | NeedMore | _Started:
        buf, start = self._buf, self._pos
        if start >= len(buf):
            return NEED_MORE
        kind = buf[start]
        if not self._arrays:
            self._reply_start = self._dropped + start
            self._elements = 1
            self._held = self._skipped = 0
        if kind not in _RESP2_TYPES:
            # Checked on the first byte: a peer that is not Redis fails at once.
            what = "a RESP3 type (this client speaks RESP2)" if kind in _RESP3_TYPES else "not"
            raise self._fail(f"type byte {bytes([kind])!r}: {what} a RESP2 type", start)
        textual = kind == SIMPLE_STRING or kind == ERROR
        limit = self.max_line_bytes if textual else MAX_NUMBER_CHARS
        # Never search past the longest allowed line, nor again what an earlier call searched.
        end = buf.find(CRLF, start + 1 + self._scanned, start + limit + 3)
        if end < 0:
            return self._line_incomplete(limit, textual)
        line = bytes(buf[start + 1:end])
        self._pos, self._scanned = end + 2, 0
        self._check_reply_size(self._pos, start)
        self._hold(len(line) if textual else 0, start)
        if textual:
            # RESP §Simple strings: "The string mustn't contain a CR or LF character".
            if b"\r" in line or b"\n" in line:
                raise self._fail("CR or LF inside a simple string or error", start)
            text = line.decode("utf-8", "backslashreplace")
            return text if kind == SIMPLE_STRING else RedisError(text)
        number = self._parse_number(line, start)
        if kind == INTEGER:
            return number
        if number == -1:
            # RESP §Null bulk strings ("$-1") and §Null arrays ("*-1"): "a nil object".
            return None
        if number < 0:
            raise self._fail(f"negative length {number}", start)
        if kind == BULK_STRING:
            if number > self.max_bulk_bytes:
                raise self._fail(f"bulk string of {number} bytes, over the limit of "
                                 f"{self.max_bulk_bytes}", start, limit=True)
            if self.skip_bulk_over is not None and number > self.skip_bulk_over:
                self._skipping, self._skip_left = True, number  # held: nothing but its length
            else:
                self._check_reply_size(self._pos + number + 2, start)
                self._hold(number, start, elements=0)  # the element was counted on its line
            self._bulk = number
            return self._read_bulk_data(number)  # often here already
        # RESP §Arrays: "*<number-of-elements>\r\n<element-1>...<element-n>".
        if number > self.max_array_length:
            raise self._fail(f"array of {number} elements, over the limit of "
                             f"{self.max_array_length}", start, limit=True)
        if len(self._arrays) >= self.max_depth:
            raise self._fail(f"arrays nested deeper than {self.max_depth}", start, limit=True)
        self._elements += number
        if self._elements > self.max_reply_elements:
            raise self._fail(f"reply of more than {self.max_reply_elements} elements (arrays "
                             f"and their elements, nested ones too)", start, limit=True)
        if number == 0:
            return []
        self._arrays.append([])
        self._missing.append(number)
        return _STARTED

    def _line_incomplete(self, limit: int, textual: bool) -> NeedMore:
        """No CRLF yet after the type byte at `_pos`: too long already, or wait for more."""
        have = len(self._buf) - self._pos - 1
        if have > limit + 1 or have > limit and self._buf[-1] != CRLF[0]:
            what = f"line longer than {limit} bytes" if textual else "number too long"
            raise self._fail(what, self._pos, limit=textual)
        self._scanned = max(0, have - 1)  # the last byte may be a CR: search it again
        return NEED_MORE

    def _parse_number(self, line: bytes, start: int) -> int:
        # RESP §Integers. Redis writes numbers with ll2string: no sign but "-", no leading
        # zero, no spaces; Python's int() would also take "+1", " 1", "1_0" and "٣".
        digits = line[1:] if line[:1] == b"-" else line
        if not digits.isdigit() or digits[0] == 0x30 and line != b"0":
            raise self._fail(f"not a RESP integer: {line!r}", start)
        number = int(line)
        if len(digits) >= 19 and not INT64_MIN <= number <= INT64_MAX:
            raise self._fail(f"integer {number} is not 64-bit", start)
        return number

    def _read_bulk_data(self, length: int) -> bytes | Skipped | NeedMore:
        # RESP §Bulk strings: "$<length>\r\n<data>\r\n"; the data is never scanned.
        buf, start = self._buf, self._pos
        if self._skipping:
            # Data not to keep: consumed as it comes (feed() frees it), then the CRLF.
            taken = min(self._skip_left, len(buf) - start)
            self._skip_left -= taken
            self._skipped += taken
            start = self._pos = start + taken
            if self._skip_left:
                return NEED_MORE
            end = start
        else:
            end = start + length
        if len(buf) < end + 2:
            tail = buf[end:]  # checked byte by byte as it arrives, like a type byte
            if tail != CRLF[:len(tail)]:
                raise self._fail(f"bulk string of {length} bytes not followed by CRLF", end)
            return NEED_MORE
        if buf[end] != CRLF[0] or buf[end + 1] != CRLF[1]:
            raise self._fail(f"bulk string of {length} bytes not followed by CRLF", end)
        if self._skipping:
            self._skipping = False
            self._bulk = None
            self._pos = end + 2
            return Skipped(length)
        if length < 4096:
            value = bytes(buf[start:end])
        else:
            with memoryview(buf) as view:  # one copy, not two (a bytearray slice, then bytes)
                value = bytes(view[start:end])
        self._bulk = None
        self._pos = end + 2
        return value

    def _check_reply_size(self, end: int, start: int) -> None:
        size = self._dropped + end - self._reply_start - self._skipped
        if size > self.max_reply_bytes:
            raise self._fail(f"reply of at least {size} bytes, over the limit of "
                             f"{self.max_reply_bytes}", start, limit=True)

    def _hold(self, data: int, start: int, elements: int = 1) -> None:
        """The current reply holds `data` bytes and `elements` elements more: still within
        the memory a reply may hold? (Checked on a header, before its data is read.)"""
        self._held += data + elements * ELEMENT_COST
        if self._held > self.max_reply_memory:
            raise self._fail(f"reply holding at least {self._held} bytes in memory (an element "
                             f"costs its data and {ELEMENT_COST}), over the limit of "
                             f"{self.max_reply_memory}", start, limit=True)


def parse(buf: bytes | bytearray, pos: int = 0) -> tuple[Reply, int] | None:
    """One reply from `buf[pos:]`: `(reply, consumed)`, or None while it is incomplete.

    The codecs' common contract, for whole buffers; it copies and starts afresh on each call,
    so on a stream keep one `Reader` instead.

    Raises:
        RespProtocolError: as `Reader.gets`.
    """
    reader = Reader()
    with memoryview(buf) as view:
        reader.feed(view[pos:])
    reply = reader.gets()
    if reply is NEED_MORE:
        return None
    return reply, reader.position
