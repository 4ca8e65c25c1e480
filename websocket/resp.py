"""RESP2, the Redis serialization protocol: a command encoder and an incremental reply reader.

Sans-I/O, shaped like hiredis's reader: `Reader.feed(data)` appends what a socket delivered,
`Reader.gets()` returns the next whole reply or `NEED_MORE`; `encode_command` makes the bytes
to send. "RESP §X" cites section X of the Redis serialization protocol specification
(redis.io/docs/reference/protocol-spec), RESP2 parts. Replies become plain values:
`+OK` str, `-ERR x` RedisError (a str: a value, not raised), `:1` int, `$5 hello` bytes,
`*2 ...` list (nested), `$-1` and `*-1` None.

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
from typing import Final, TypeAlias


class RedisError(str):
    """RESP §Simple errors: an error reply, e.g. "ERR unknown command 'x'".

    A value, not an exception: in a pipeline it answers one command; the caller decides.
    """

    @property
    def prefix(self) -> str:
        """RESP §Simple errors: "the first upper-case word after the -": ERR, NOAUTH, WRONGPASS."""
        return self.split(" ", 1)[0]


Reply: TypeAlias = str | int | bytes | None | list["Reply"]


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
    `max_reply_bytes` on the wire) and the unparsed rest of one element: a line of at most
    `max_line_bytes`, or bulk data whose declared length passed every limit first.
    """

    def __init__(self, *, max_bulk_bytes: int = MAX_BULK_BYTES,
                 max_reply_bytes: int = MAX_REPLY_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
                 max_array_length: int = MAX_ARRAY_LENGTH, max_depth: int = MAX_DEPTH) -> None:
        self.max_bulk_bytes = max_bulk_bytes
        self.max_reply_bytes = max_reply_bytes
        self.max_line_bytes = max_line_bytes
        self.max_array_length = max_array_length
        self.max_depth = max_depth
        self._buf = bytearray()
        self._pos = 0  # next unparsed byte of _buf
        self._dropped = 0  # bytes deleted from the front of _buf: stream offset = _dropped + index
        self._scanned = 0  # bytes of the current line already known to hold no CRLF
        self._bulk: int | None = None  # declared length of a bulk string whose data is awaited
        self._arrays: list[list[Reply]] = []  # arrays being filled, outermost first
        self._missing: list[int] = []  # how many elements each of them still lacks
        self._reply_start = 0  # stream offset of the current reply's first byte
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
            self._check_reply_size(self._pos + number + 2, start)
            self._bulk = number
            return self._read_bulk_data(number)  # often here already
        # RESP §Arrays: "*<number-of-elements>\r\n<element-1>...<element-n>".
        if number > self.max_array_length:
            raise self._fail(f"array of {number} elements, over the limit of "
                             f"{self.max_array_length}", start, limit=True)
        if len(self._arrays) >= self.max_depth:
            raise self._fail(f"arrays nested deeper than {self.max_depth}", start, limit=True)
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

    def _read_bulk_data(self, length: int) -> bytes | NeedMore:
        # RESP §Bulk strings: "$<length>\r\n<data>\r\n"; the data is never scanned.
        buf, start = self._buf, self._pos
        end = start + length
        if len(buf) < end + 2:
            tail = buf[end:]  # checked byte by byte as it arrives, like a type byte
            if tail != CRLF[:len(tail)]:
                raise self._fail(f"bulk string of {length} bytes not followed by CRLF", end)
            return NEED_MORE
        if buf[end] != CRLF[0] or buf[end + 1] != CRLF[1]:
            raise self._fail(f"bulk string of {length} bytes not followed by CRLF", end)
        if length < 4096:
            value = bytes(buf[start:end])
        else:
            with memoryview(buf) as view:  # one copy, not two (a bytearray slice, then bytes)
                value = bytes(view[start:end])
        self._bulk = None
        self._pos = end + 2
        return value

    def _check_reply_size(self, end: int, start: int) -> None:
        size = self._dropped + end - self._reply_start
        if size > self.max_reply_bytes:
            raise self._fail(f"reply of at least {size} bytes, over the limit of "
                             f"{self.max_reply_bytes}", start, limit=True)

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
