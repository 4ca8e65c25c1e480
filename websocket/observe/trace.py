"""The wire trace (`--trace`): every byte of a connection, annotated for a reader.

Sans-I/O and free of side effects: bytes in, text out. Nothing here prints, logs, or
touches a socket; the caller decides where the text goes. Two ways in:

- formatters for one piece already in hand, in `trace_format` and re-exported here:
  `format_frame` (RFC 6455, §5.2), `format_hixie_frame` (draft-75/76 `00 ... ff`),
  `format_http_head`, `explain_draft76` (the draft-76 key arithmetic, step by step),
  `explain_accept` (RFC 6455 §4.2.2), `tls_note`, `compression_note` and `hexdump`;
- `ConnectionTrace`, one per connection, fed each direction's bytes as they pass, in
  pieces of any size. It finds the HTTP heads and the frames of all three protocol
  generations by itself and returns one block of text for each; when the 101 answer
  agrees permessage-deflate, each compressed message also ends with a block giving both
  sizes and its first bytes inflated (trace_deflate.py).

It never refuses anything: a frame the codecs would reject is shown with a `note` line
saying which rule it breaks. It never decides anything either (no close codes, no
answers): that stays in the codecs.

A trace may begin in the middle of a connection (the server's, when a /wire viewer
arrives: wiretap.py): `protocol` names the generation, `skip()` passes over the rest of
the frame in progress and the output queued before, and `deflate_agreed()` gives the
permessage-deflate terms; from then on every frame is whole.

Cost: none when tracing is off, as long as the caller then makes no call and keeps no
`ConnectionTrace` (one `is not None` test where bytes pass). When it is on, a frame's
payload is held only up to `limit` bytes; the rest is counted and skipped, so a 1 GiB
message costs its header and `limit` bytes of memory. With `wants`, each head and frame
asks first whether anyone will read its block: when not, the stream only follows it
(parses its header, skips its payload) and formats nothing.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol.frames import MAX_CONTROL_PAYLOAD, Opcode, apply_mask
from ..protocol.handshake import HIXIE75, HIXIE76, RFC6455, accept_key
from ..protocol.legacy import MAX_LENGTH_BYTES
from .trace_deflate import InflateCounter, agreed_deflate, inflated_block
from .trace_format import (
    _DRAFT76_ANSWER,
    _DRAFT76_KEY3,
    CLIENT_TO_SERVER,
    DEFAULT_LIMIT,
    MAX_HEAD,
    SERVER_TO_CLIENT,
    Direction,
    FrameHead,
    _dump,
    _expected_challenge,
    _field,
    _frame_block,
    _Head,
    _head_block,
    _hixie_length_block,
    _hixie_text_block,
    _raw_block,
    _split_head,
    _title,
    compression_note,
    explain_accept,
    explain_draft76,
    format_frame,
    format_hixie_frame,
    format_http_head,
    hex_bytes,
    hexdump,
    parse_frame_head,
    tls_note,
)

__all__ = ["CLIENT_TO_SERVER", "DEFAULT_LIMIT", "SERVER_TO_CLIENT", "ConnectionTrace",
           "Direction", "FrameHead", "compression_note", "explain_accept", "explain_draft76",
           "format_frame", "format_hixie_frame", "format_http_head", "hex_bytes", "hexdump",
           "parse_frame_head", "tls_note"]

# -- one connection, both directions, as the bytes pass -------------------------------------


@dataclass
class _Shared:
    """What one direction learns that the other needs: the request's protocol and keys."""

    generation: str | None = None
    accept: str | None = None
    answer: bytes | None = None
    methods: deque[str] = field(default_factory=deque)
    # permessage-deflate as the 101 answer agreed it (RFC 7692 §7.1), per direction:
    # (window bits, no context takeover).
    deflate: dict[str, tuple[int, bool]] | None = None
    # The trace began after the agreement (mid-stream): a direction with context
    # takeover cannot be inflated, since the window its first messages built is unknown.
    window_unknown: bool = False


_HEAD, _BODY, _FRAMES, _RAW = "head", "body", "frames", "raw"


class _Stream:
    """One direction of one connection: heads, then bodies or frames, in pieces."""

    def __init__(self, direction: Direction, shared: _Shared, label: str, limit: int,
                 wants: Callable[[], bool] | None) -> None:
        self.direction = direction
        self.shared = shared
        self.label = label
        self.limit = limit
        self.wants = wants  # asked before each block: will anyone read it? (None: yes)
        self.showing = True  # the current head, body or frame gets its block
        self.granted = False  # `wants` said yes to the frame `_pass_over` stopped at
        self.skip = 0  # bytes to pass over unread first (a trace begun mid-stream)
        self.to_ff = False  # ... or up to and including the next 0xFF (draft-75/76 text)
        self.mode = _HEAD
        self.generation: str | None = None
        self.buf = bytearray()  # a head, or a frame header, still incomplete
        self.head_end = -1  # where the head in `buf` ends, once its empty line is in
        self.frame: FrameHead | None = None  # the RFC 6455 frame whose payload is passing
        self.hixie: tuple[int, bytes, int] | None = None  # type, length bytes, length
        self.header = b""
        self.kept = bytearray()  # the payload bytes to show (at most `keep`)
        self.keep = 0
        self.shown = False  # the block of the current frame or body has been returned
        self.total = 0  # bytes of the current HTTP body
        self.remaining = 0  # payload or body bytes still to pass
        self.message_opcode: int | None = None  # what continuation frames continue
        self.inflate: InflateCounter | None = None  # permessage-deflate, once agreed
        self.compressed = False  # the message in progress has RSV1 on its first frame
        self.wire_size = 0  # its compressed payload bytes so far

    def feed(self, data: bytes) -> list[str]:
        blocks: list[str] = []
        pos = self._skip(data) if self.skip or self.to_ff else 0
        while pos < len(data):
            if self.mode == _HEAD:
                pos = self._head(data, pos, blocks)
            elif self.mode == _BODY:
                pos = self._body(data, pos, blocks)
            elif self.mode == _RAW:
                if self._show():
                    blocks.append(_raw_block(data[pos:], len(data) - pos, self.direction,
                                             self.label, self.limit, "not parsed"))
                pos = len(data)
            elif self.generation == RFC6455:
                pos = self._rfc6455(data, pos, blocks)
            else:
                pos = self._hixie(data, pos, blocks)
        return blocks

    def _skip(self, data: bytes) -> int:
        """Pass over what comes before the first whole frame of a trace begun mid-stream."""
        pos = min(self.skip, len(data))
        self.skip -= pos
        if self.to_ff and pos < len(data):
            stop = data.find(b"\xff", pos)
            if stop < 0:
                return len(data)
            self.to_ff = False
            pos = stop + 1
        return pos

    def _show(self) -> bool:
        """Will the next block be read? (Asked once per head, body and frame.)"""
        if self.granted:
            self.granted = False
            self.showing = True
        else:
            self.showing = self.wants is None or self.wants()
        return self.showing

    def _head(self, data: bytes, pos: int, blocks: list[str]) -> int:
        if not self.buf and data[pos] in (0x16, 0x80):
            self.mode = _RAW
            if self._show():
                blocks.append(_raw_block(data[pos:], len(data) - pos, self.direction,
                                         self.label, self.limit,
                                         "a TLS handshake on a plain connection"))
            return len(data)
        start = len(self.buf)
        self.buf += data[pos:]
        end = self.head_end
        if end < 0:
            end = self.head_end = self.buf.find(b"\r\n\r\n", max(0, start - 3))
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.mode = _RAW
                if self._show():
                    blocks.append(_raw_block(bytes(self.buf), len(self.buf), self.direction,
                                             self.label, self.limit,
                                             f"no end of an HTTP head within {MAX_HEAD} bytes"))
                self.buf.clear()
            return len(data)
        head_size = end + 4
        parsed, _ = _split_head(bytes(self.buf[:head_size]))
        extra = self._extra_size(parsed)
        if len(self.buf) < head_size + extra:
            return len(data)  # draft-76: key3 or the answer is still to come
        used = head_size + extra - start  # of `data`, from `pos`
        head, after = bytes(self.buf[:head_size]), bytes(self.buf[head_size:head_size + extra])
        self.buf.clear()
        self.head_end = -1
        shown = self._show()
        if self.direction == CLIENT_TO_SERVER:
            if shown:
                blocks.append(_head_block(head, after, self.direction, self.label))
            self._after_request(parsed, after)
        else:
            if shown:
                blocks.append(_head_block(head, after, self.direction, self.label,
                                          self.shared.accept, self.shared.answer))
            self._after_response(parsed)
        return pos + used

    def _extra_size(self, parsed: _Head) -> int:
        if self.direction == CLIENT_TO_SERVER:
            draft76 = (parsed.first_line.startswith("GET ")
                       and parsed.get("sec-websocket-key1") is not None
                       and parsed.get("sec-websocket-key2") is not None
                       and parsed.get("sec-websocket-version") is None)
            return _DRAFT76_KEY3 if draft76 else 0
        status = parsed.first_line.split(" ")[1:2]
        return _DRAFT76_ANSWER if status == ["101"] and self.shared.generation == HIXIE76 else 0

    def _after_request(self, parsed: _Head, key3: bytes) -> None:
        self.shared.methods.append(parsed.first_line.split(" ")[0])
        if not parsed.has_token("upgrade", "websocket"):
            body = parsed.get("content-length") not in (None, "0")
            self.mode = _RAW if body or parsed.get("transfer-encoding") else _HEAD
            return
        key = parsed.get("sec-websocket-key")
        key1, key2 = parsed.get("sec-websocket-key1"), parsed.get("sec-websocket-key2")
        if parsed.get("sec-websocket-version") is not None:
            self.generation = RFC6455
            self.shared.accept = accept_key(key) if key is not None else None
        elif key1 is not None and key2 is not None:
            self.generation = HIXIE76
            self.shared.answer = _expected_challenge(key1, key2, key3)
        else:
            self.generation = HIXIE75
        self.shared.generation = self.generation
        self.mode = _FRAMES

    def _after_response(self, parsed: _Head) -> None:
        parts = parsed.first_line.split(" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        method = self.shared.methods.popleft() if self.shared.methods else "GET"
        if status == 101:
            self.generation = self.shared.generation or (
                RFC6455 if parsed.get("sec-websocket-accept") is not None else HIXIE75)
            self.mode = _FRAMES
            self.shared.deflate = agreed_deflate(parsed.get("sec-websocket-extensions"))
            return
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return  # no body; the next head follows
        length = parsed.get("content-length")
        if length is not None and length.isdigit():
            self.total = int(length)
            self._start_payload(self.total, min(self.total, self.limit))
            self.mode = _BODY if self.total else _HEAD
        else:
            self.mode = _RAW  # chunked, or up to the end of the connection

    def _start_payload(self, length: int, keep: int) -> None:
        """A body or frame payload of `length` bytes begins; its first `keep` are kept for
        its block, if it gets one."""
        self.remaining = length
        self.keep = keep if self._show() else 0
        self.kept.clear()
        self.shown = False

    def _take(self, data: bytes, pos: int) -> int:
        """Pass payload bytes from `data[pos:]`, keeping the first `keep`; returns the end."""
        take = min(self.remaining, len(data) - pos)
        want = self.keep - len(self.kept)
        if want > 0:
            self.kept += data[pos:pos + min(want, take)]
        self.remaining -= take
        return pos + take

    def _ready(self) -> bool:
        """True once, when the kept bytes are all in: the time to show the block (never
        for a body or frame nobody will read)."""
        if self.shown or len(self.kept) < self.keep:
            return False
        self.shown = True
        return self.showing

    def _body(self, data: bytes, pos: int, blocks: list[str]) -> int:
        pos = self._take(data, pos)
        if self._ready():
            lines = [_title(self.label, self.direction, f"HTTP body, {self.total} bytes")]
            if self.kept:
                lines += _dump("body", self.kept)
            if self.total > self.keep:
                lines.append(_field("cut", f"{self.total - self.keep} more bytes not shown "
                                           f"(limit {self.limit})"))
            blocks.append("\n".join(lines))
        if not self.remaining:
            self.mode = _HEAD
        return pos

    def _pass_over(self, data: bytes, pos: int) -> int:
        """Whole frames nobody will read, in a tight loop: each header read only as far
        as its size (RFC 6455 §5.2), the payload skipped, no block. Stops at a frame that
        is not whole in `data` or that `wants` a block; returns where it stopped."""
        end = len(data)
        wants = self.wants
        assert wants is not None
        while end - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length, size = second & 0x7F, 2
            if length >= 126:
                size = 4 if length == 126 else 10
                if end - pos < size:
                    break
                length = int.from_bytes(data[pos + 2:pos + size], "big")
            if second & 0x80:
                size += 4  # the masking key
            if end - pos < size + length:
                break
            if wants():
                self.granted = True
                break
            opcode = first & 0x0F
            if opcode < 0x8:  # data: what a continuation continues, as `_rfc6455` keeps it
                if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                    self.message_opcode = opcode
                if first & 0x80:
                    self.message_opcode = None
            pos += size + length
        return pos

    def _rfc6455(self, data: bytes, pos: int, blocks: list[str]) -> int:
        if (self.frame is None and not self.buf and self.wants is not None
                and self.shared.deflate is None):
            pos = self._pass_over(data, pos)
            if pos == len(data):
                return pos
        if self.frame is None:
            start = len(self.buf)
            self.buf += data[pos:pos + 14 - start]  # 14: the longest header
            head = parse_frame_head(self.buf)
            if head is None:
                return pos + len(self.buf) - start
            pos += head.size - start
            self.header = bytes(self.buf[:head.size])
            self.buf.clear()
            self.frame = head
            # A close frame is kept whole (at most 125 bytes if valid) for its reason.
            keep = max(self.limit, MAX_CONTROL_PAYLOAD) if head.opcode == Opcode.CLOSE \
                else self.limit
            self._start_payload(head.length, min(head.length, keep))
            if head.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._start_message(head)
        head = self.frame
        data_frame = head.opcode < 0x8
        if self.compressed and data_frame:
            take = min(self.remaining, len(data) - pos)
            self._inflate(data[pos:pos + take], head.mask, head.length - self.remaining)
            self.wire_size += take
        pos = self._take(data, pos)
        if self._ready():
            close_payload = bytes(self.kept) if head.opcode == Opcode.CLOSE else None
            blocks.append(_frame_block(head, self.header, bytes(self.kept[:self.limit]),
                                       self.direction, self.label, self.limit,
                                       self.message_opcode, close_payload,
                                       deflate=self.inflate is not None,
                                       compressed=self.compressed and data_frame))
        if head.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.message_opcode = head.opcode
        if not self.remaining:
            if head.fin and data_frame:
                if self.compressed and self.inflate is not None:
                    self.inflate.feed(b"", final=True)
                    if self.showing:
                        blocks.append(inflated_block(self.direction, self.label,
                                                     self.wire_size, self.inflate,
                                                     self.message_opcode == Opcode.TEXT))
                self.compressed = False
                self.message_opcode = None
            self.frame = None
        return pos

    def _start_message(self, head: FrameHead) -> None:
        """A text or binary frame begins a message: compressed if RSV1 and agreed (§6.1)."""
        agreed = self.shared.deflate
        if self.inflate is None and agreed is not None:
            bits, no_context_takeover = agreed[self.direction]
            self.inflate = InflateCounter(bits, no_context_takeover, self.limit)
            if self.shared.window_unknown and not no_context_takeover:
                self.inflate.lost = ("not inflated: the trace began after this connection's "
                                     "first messages, so the window they built is unknown")
        self.compressed = bool(head.rsv[0]) and self.inflate is not None
        if self.compressed:
            assert self.inflate is not None
            self.inflate.start()
            self.wire_size = 0

    def _inflate(self, piece: bytes, mask: bytes | None, offset: int) -> None:
        if self.inflate is not None and piece:
            self.inflate.feed(bytes(apply_mask(piece, mask, offset)) if mask else piece)

    def _hixie(self, data: bytes, pos: int, blocks: list[str]) -> int:
        if self.hixie is None:
            if not self.buf and not data[pos] & 0x80:
                self.hixie = (data[pos], b"", -1)  # 0x00 ... 0xff: no length
                self._start_payload(0, self.limit)  # (keeps `limit` bytes if shown)
                return pos + 1
            # Length-prefixed (draft-76 §5.3): the type, then 7-bit groups, high bit = more.
            while pos < len(data):
                self.buf.append(data[pos])
                pos += 1
                if len(self.buf) > 1 and not self.buf[-1] & 0x80:
                    break
                if len(self.buf) > 1 + MAX_LENGTH_BYTES:
                    self.mode = _RAW
                    if self._show():
                        blocks.append(_raw_block(bytes(self.buf), len(self.buf),
                                                 self.direction, self.label, self.limit,
                                                 "a frame length too long"))
                    self.buf.clear()
                    return pos
            else:
                return pos  # the length is not complete yet
            length = 0
            for byte in self.buf[1:]:
                length = (length << 7) | (byte & 0x7F)
            self.hixie = (self.buf[0], bytes(self.buf[1:]), length)
            self.buf.clear()
            self._start_payload(length, min(length, self.limit))
        frame_type, length_bytes, length = self.hixie
        if length < 0:
            stop = data.find(b"\xff", pos)
            end = len(data) if stop < 0 else stop
            want = self.keep - len(self.kept)
            if want > 0:
                self.kept += data[pos:min(end, pos + want)]
            self.remaining += end - pos  # here: the bytes seen so far
            if stop < 0:
                return len(data)
            if self.showing:
                blocks.append(_hixie_text_block(frame_type, bytes(self.kept), self.remaining,
                                                self.direction, self.label, self.limit))
            self.hixie = None
            return stop + 1
        pos = self._take(data, pos)
        if self._ready():
            blocks.append(_hixie_length_block(frame_type, length_bytes, length,
                                              bytes(self.kept), self.direction, self.label,
                                              self.limit))
        if not self.remaining:
            self.hixie = None
        return pos


class ConnectionTrace:
    """The trace of one connection: feed it each direction's bytes as they pass.

    Both ends use it the same way: a server calls `client_bytes` with what it read and
    `server_bytes` with what it queued; a client does the reverse. Each call returns the
    blocks of text completed by those bytes (a head, a frame; often none, sometimes
    several), for the caller to log or print. Pieces may be of any size: a frame header
    split across calls is joined, and a payload is shown once its first `limit` bytes
    (or all of it) have passed.

    It learns from the request what the response and the frames will be (RFC 6455,
    draft-76 or draft-75; the accept value or the MD5 answer to check).
    """

    def __init__(self, label: str = "", limit: int = DEFAULT_LIMIT,
                 protocol: str | None = None,
                 wants: Callable[[], bool] | None = None) -> None:
        """Args:
            label: starts each block, to tell connections apart ("#3 127.0.0.1:50312").
            limit: payload bytes shown per frame (`--trace-bytes`).
            protocol: None to begin with the HTTP request; RFC6455, HIXIE76 or HIXIE75
                (from `handshake`) to begin with that generation's frames, for a trace
                that starts after the handshake.
            wants: asked before each head and frame: False, and it is followed without
                a block (nobody would read it); None: every one gets its block.
        """
        if limit < 0:
            raise ValueError("limit must be 0 or more")
        if protocol not in (None, RFC6455, HIXIE76, HIXIE75):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.label = label
        self.limit = limit
        self._shared = shared = _Shared(generation=protocol)
        self._client = _Stream(CLIENT_TO_SERVER, shared, label, limit, wants)
        self._server = _Stream(SERVER_TO_CLIENT, shared, label, limit, wants)
        if protocol is not None:
            for stream in (self._client, self._server):
                stream.mode, stream.generation = _FRAMES, protocol

    def client_bytes(self, data: bytes | bytearray | memoryview) -> list[str]:
        """Bytes the client sent (a server's input, a client's output), in order."""
        return self._client.feed(bytes(data))

    def server_bytes(self, data: bytes | bytearray | memoryview) -> list[str]:
        """Bytes the server sent (a server's output, a client's input), in order."""
        return self._server.feed(bytes(data))

    def skip(self, direction: Direction, count: int = 0, to_ff: bool = False) -> None:
        """For a trace begun mid-stream: `direction`'s first whole frame (or head) comes
        after `count` bytes (the rest of a frame in progress, or output queued before the
        trace began), or, with `to_ff`, just after the next 0xFF (the end of a draft-75/76
        text frame in progress, draft-76 §5.3)."""
        stream = self._client if direction == CLIENT_TO_SERVER else self._server
        stream.skip += count
        stream.to_ff = to_ff

    def pause_output(self) -> bool:
        """Stop following the server's bytes (nobody would read their blocks) until
        `resume_output`; False, and nothing paused, before the connection's frames begin
        (its HTTP heads are always followed: they say what comes after them)."""
        return self._server.mode == _FRAMES

    def resume_output(self, skip: int) -> None:
        """Follow the server's bytes again, after `skip` bytes: where a whole frame will
        begin (the end of what the server has queued). The message in progress is not
        known: with context takeover the compressed window is lost (see `deflate_agreed`)."""
        stream = self._server
        stream.buf.clear()
        stream.frame = None
        stream.hixie = None
        stream.message_opcode = None
        stream.compressed = False
        stream.skip = skip
        stream.to_ff = False
        counter = stream.inflate
        if counter is not None and not counter.no_context_takeover:
            counter.lost = ("not inflated: the trace passed over some of this connection's "
                            "messages, so the window they built is unknown")

    def deflate_agreed(self, agreed: dict[str, tuple[int, bool]]) -> None:
        """For a trace begun after the 101 answer: the permessage-deflate terms it agreed
        (per direction: window bits, no context takeover; RFC 7692 §7.1). A direction
        with context takeover is not inflated: its window is unknown."""
        self._shared.deflate = agreed
        self._shared.window_unknown = True

    def tls(self, version: str, cipher: str | None = None) -> str:
        """The one-line TLS note for this connection (see `tls_note`)."""
        return tls_note(version, cipher, label=self.label)

    def compressed(self, direction: Direction, wire_size: int, inflated_size: int) -> str:
        """The one-line note for a compressed message (see `compression_note`)."""
        return compression_note(direction, wire_size, inflated_size, label=self.label)
