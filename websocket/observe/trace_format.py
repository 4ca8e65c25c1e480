"""The wire trace's formatters: one piece of the wire already in hand, as annotated text.

Sans-I/O and free of side effects: bytes in, text out (see `websocket.trace`, which feeds
them a connection's bytes as they pass, and re-exports every public name here):
`format_frame` (RFC 6455 §5.2), `format_hixie_frame` (draft-75/76 `00 ... ff`),
`format_http_head`, `explain_draft76` (the draft-76 key arithmetic, step by step),
`explain_accept` (RFC 6455 §4.2.2), `tls_note`, `compression_note` and `hexdump` (the
layout of `hexdump -C`). Nothing is refused: a frame the codecs would reject is shown
with a `note` line saying which rule it breaks.
"""
from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

from ..errors import HttpError, ProtocolError
from ..protocol.frames import (
    MAX_CONTROL_PAYLOAD,
    Opcode,
    apply_mask,
    describe_close_code,
    parse_close,
)
from ..protocol.handshake import GUID, accept_key
from ..protocol.legacy import key_part

Direction = Literal["client->server", "server->client"]
CLIENT_TO_SERVER: Direction = "client->server"
SERVER_TO_CLIENT: Direction = "server->client"

DEFAULT_LIMIT = 64  # payload bytes shown per frame (`--trace-bytes`)
MAX_HEAD = 64 * 1024  # an HTTP head longer than this is shown raw, not waited for
BYTES_PER_LINE = 16  # as hexdump -C
FIELD_WIDTH = 10  # "  unmasked  ": the names of the annotation lines, then their values
_INDENT = "  " + " " * FIELD_WIDTH
_DRAFT76_KEY3 = 8  # draft-76 §4.1: 8 bytes follow the request's empty line
_DRAFT76_ANSWER = 16  # draft-76 §4.2: the MD5 answer follows the response's empty line

_OPCODE_NAMES = {int(op): op.name.lower() for op in Opcode}
# hexdump -C's text column: printable ASCII as it is, every other byte as a dot.
_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))


# -- building blocks -----------------------------------------------------------------------


def hexdump(data: bytes | bytearray | memoryview, start: int = 0) -> list[str]:
    """`data` as `hexdump -C` lines: offset, 16 bytes in hex, the printable ASCII beside.

    Args:
        data: the bytes to show (all of them: cutting is the caller's business).
        start: the offset printed for the first byte.
    """
    data = bytes(data)
    lines = []
    for pos in range(0, len(data), BYTES_PER_LINE):
        row = data[pos:pos + BYTES_PER_LINE]
        text = row.translate(_PRINTABLE).decode("ascii")
        lines.append(f"{start + pos:08x}  {row[:8].hex(' '):<23}  {row[8:].hex(' '):<23}  "
                     f"|{text}|")
    return lines


def hex_bytes(data: bytes | bytearray) -> str:
    """`data` as spaced hex pairs on one line: `81 85 37 fa`."""
    return data.hex(" ")


def _field(name: str, value: str) -> str:
    return f"  {name:<{FIELD_WIDTH}}{value}"


def _dump(name: str, data: bytes | bytearray) -> list[str]:
    """A `hexdump -C` block whose first line carries the field name."""
    rows = hexdump(data) or ["(empty)"]
    return [_field(name, rows[0])] + [_INDENT + row for row in rows[1:]]


def _title(label: str, direction: str, what: str) -> str:
    return f"{label} {direction}  {what}" if label else f"{direction}  {what}"


def _printable(line: str) -> str:
    """A head line with its control characters (other than tab) made visible."""
    return "".join(ch if ch == "\t" or 0x20 <= ord(ch) < 0x7F or ord(ch) > 0x9F
                   else f"\\x{ord(ch):02x}" for ch in line)


def tls_note(version: str, cipher: str | None = None, *, label: str = "") -> str:
    """One line for a connection that runs over TLS: the trace shows its bytes decrypted."""
    suite = f", {cipher}" if cipher else ""
    return _title(label, "TLS", f"{version}{suite}: the bytes below are shown decrypted")


def compression_note(direction: Direction, wire_size: int, inflated_size: int, *,
                     label: str = "") -> str:
    """One line for a compressed message (RFC 7692): its size on the wire and inflated."""
    return _title(label, direction, _deflate_value(wire_size, inflated_size))


def _deflate_value(wire_size: int, inflated_size: int) -> str:
    return (f"permessage-deflate: {wire_size} bytes on the wire, {inflated_size} bytes "
            "inflated (RFC 7692)")


# -- RFC 6455 frames ------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameHead:
    """A frame header as it was sent (RFC 6455 §5.2), valid or not: nothing is refused."""

    fin: bool
    rsv: tuple[int, int, int]
    opcode: int
    mask: bytes | None
    length: int
    form: int  # 7, 16 or 64: which length field carried `length`
    size: int  # bytes of the header itself


def parse_frame_head(buf: bytes | bytearray) -> FrameHead | None:
    """The header at the start of `buf`, or None while it is incomplete. Never raises."""
    if len(buf) < 2:
        return None
    first, second = buf[0], buf[1]
    length, form, size = second & 0x7F, 7, 2
    if length == 126:
        if len(buf) < 4:
            return None
        (length,), form, size = struct.unpack_from("!H", buf, 2), 16, 4
    elif length == 127:
        if len(buf) < 10:
            return None
        (length,), form, size = struct.unpack_from("!Q", buf, 2), 64, 10
    mask = None
    if second & 0x80:
        if len(buf) < size + 4:
            return None
        mask = bytes(buf[size:size + 4])
        size += 4
    rsv = ((first >> 6) & 1, (first >> 5) & 1, (first >> 4) & 1)
    return FrameHead(bool(first & 0x80), rsv, first & 0x0F, mask, length, form, size)


def _unmask(data: bytes | bytearray, mask: bytes) -> bytes:
    return bytes(apply_mask(data, mask))  # RFC 6455 §5.3, as the codecs do it


def _length_value(head: FrameHead, header: bytes) -> str:
    if head.form == 7:
        value = f"{head.length} (7-bit form)"
    else:
        field_value = 126 if head.form == 16 else 127
        extended = hex_bytes(header[2:2 + head.form // 8])
        value = f"{head.length} ({head.form}-bit form: {field_value}, then {extended})"
    minimal = 7 if head.length < 126 else 16 if head.length < 1 << 16 else 64
    if head.form != minimal:
        value += f"; not minimal: §5.2 wants the {minimal}-bit form"
    return value


def _frame_notes(head: FrameHead, direction: str, deflate: bool = False) -> list[str]:
    """The rules of RFC 6455 this header breaks, one line each (what a codec would refuse).
    `deflate`: permessage-deflate was agreed, so RSV1 may start a data message (RFC 7692
    §6.1) and only RSV1 elsewhere, or RSV2/RSV3, is a fault."""
    notes = []
    if deflate and head.rsv[0] and (head.opcode == Opcode.CONTINUATION or head.opcode >= 0x8):
        notes.append("RSV1 on a continuation or control frame: only a message's first "
                     "frame may carry it (RFC 7692 §6.1)")
    if (any(head.rsv[1:]) if deflate else any(head.rsv)):
        notes.append("RSV bits set: only an extension may set them (§5.2), e.g. RSV1 for "
                     "permessage-deflate (RFC 7692)")
    if head.opcode not in _OPCODE_NAMES:
        notes.append("reserved opcode: the receiver must fail the connection (§5.2)")
    if head.opcode >= 0x8:
        if head.length > MAX_CONTROL_PAYLOAD:
            notes.append("control frame over 125 bytes: a protocol error (§5.5)")
        if not head.fin:
            notes.append("fragmented control frame: a protocol error (§5.5)")
    if head.form == 64 and head.length >> 63:
        notes.append("64-bit length with its top bit set: a protocol error (§5.2)")
    if direction == CLIENT_TO_SERVER and head.mask is None:
        notes.append("unmasked client frame: the server must close the connection (§5.1)")
    if direction == SERVER_TO_CLIENT and head.mask is not None:
        notes.append("masked server frame: the client must close the connection (§5.1)")
    return notes


def _close_value(payload: bytes) -> str:
    """§5.5.1: the close frame's code and reason, or what is wrong with them."""
    if not payload:
        return "no status code (the receiver reports 1005)"
    try:
        code, reason = parse_close(payload)
    except ProtocolError as exc:
        return f"invalid: {exc.reason} (§5.5.1, §7.4)"
    return f"code {code} ({describe_close_code(code)}), reason {reason!r}"


def _frame_block(head: FrameHead, header: bytes, shown: bytes, direction: str, label: str,
                 limit: int, message_opcode: int | None = None,
                 close_payload: bytes | None = None, inflated_size: int | None = None,
                 deflate: bool = False, compressed: bool = False) -> str:
    """The annotated block of one RFC 6455 frame whose first `len(shown)` payload bytes
    (as sent, masked or not) are known. `message_opcode` says what a continuation
    continues; `close_payload` is the whole payload of a close frame as sent, when more
    of it is known than is shown; `deflate`: permessage-deflate is agreed; `compressed`:
    this frame is part of a compressed message (its payload is DEFLATE data)."""
    name = _OPCODE_NAMES.get(head.opcode, "reserved")
    if head.opcode == Opcode.CONTINUATION and message_opcode is not None:
        name += f" of a {_OPCODE_NAMES.get(message_opcode, 'reserved')} message"
    fin = "final" if head.fin else "more fragments follow"
    lines = [
        _title(label, direction, f"RFC 6455 frame, {head.size + head.length} bytes"),
        _field("header", hex_bytes(header)),
        _field("bits", f"FIN {int(head.fin)} ({fin}), RSV1 {head.rsv[0]}, RSV2 {head.rsv[1]},"
                       f" RSV3 {head.rsv[2]}, opcode {head.opcode:#x} ({name})"),
        _field("mask", f"MASK 1, key {hex_bytes(head.mask)}" if head.mask is not None
               else "MASK 0 (no key)"),
        _field("length", _length_value(head, header)),
    ]
    plain = _unmask(shown, head.mask) if head.mask is not None else shown
    if shown:
        if head.mask is not None:
            lines += _dump("masked", shown)
            lines += _dump("unmasked", plain)
        else:
            lines += _dump("payload", plain)
    kind = message_opcode if head.opcode == Opcode.CONTINUATION else head.opcode
    if compressed:
        lines.append(_field("deflate", "compressed message (RSV1 on its first frame, RFC "
                                       "7692 §6): the payload is DEFLATE data"))
    elif kind == Opcode.TEXT and any(b >= 0x80 for b in plain):
        lines.append(_field("text", repr(plain.decode("utf-8", "replace"))))
    if head.opcode == Opcode.CLOSE:
        whole = shown if close_payload is None else close_payload
        if head.mask is not None:
            whole = _unmask(whole, head.mask)
        lines.append(_field("close", _close_value(whole)))
    if head.length > len(shown):
        why = f"limit {limit}" if len(shown) >= limit else "not in the bytes given"
        lines.append(_field("cut", f"{head.length - len(shown)} more payload bytes not shown "
                                   f"({why})"))
    if inflated_size is not None:
        lines.append(_field("deflate", _deflate_value(head.length, inflated_size)))
    lines += [_field("note", note) for note in _frame_notes(head, direction, deflate)]
    return "\n".join(lines)


def format_frame(data: bytes | bytearray, direction: Direction, *, label: str = "",
                 limit: int = DEFAULT_LIMIT, inflated_size: int | None = None) -> str:
    """One RFC 6455 frame (its header and as much of its payload as `data` holds) as an
    annotated hex dump: FIN, RSV1-3, opcode, MASK and key, length and its form, then the
    payload masked and unmasked, cut after `limit` bytes; a close frame's code and reason.

    Args:
        data: the frame's bytes, from its first header byte.
        direction: CLIENT_TO_SERVER or SERVER_TO_CLIENT (decides which mask rule applies).
        label: names the connection, e.g. "#3 127.0.0.1:50312".
        limit: payload bytes shown at most.
        inflated_size: for a compressed message, its size after inflating (RFC 7692).

    Raises:
        ValueError: `data` does not hold a whole frame header.
    """
    head = parse_frame_head(data)
    if head is None:
        raise ValueError("format_frame: incomplete frame header")
    payload = bytes(data[head.size:head.size + head.length])
    close_payload = payload if head.opcode == Opcode.CLOSE else None
    return _frame_block(head, bytes(data[:head.size]), payload[:limit], direction, label,
                        limit, close_payload=close_payload, inflated_size=inflated_size)


# -- draft-75/76 frames ---------------------------------------------------------------------


def _hixie_text_block(frame_type: int, shown: bytes, size: int, direction: str, label: str,
                      limit: int) -> str:
    kind = "text frame" if frame_type == 0 else f"frame of unknown type {frame_type:#04x}"
    lines = [
        _title(label, direction, f"draft-75/76 {kind}, {size + 2} bytes"),
        _field("frame", f"{frame_type:02x} ... ff: {frame_type:#04x}, {size} bytes of "
                        f"{'UTF-8 text' if frame_type == 0 else 'data'}, then 0xff"),
    ]
    if size:
        lines += _dump("payload", shown)
    if frame_type == 0 and any(b >= 0x80 for b in shown):
        lines.append(_field("text", repr(shown.decode("utf-8", "replace"))))
    if size > len(shown):
        lines.append(_field("cut", f"{size - len(shown)} more payload bytes not shown "
                                   f"(limit {limit})"))
    if frame_type != 0:
        lines.append(_field("note", "only type 0x00 carries text: the receiver discards "
                                    "this frame (draft-76 §5.3)"))
    return "\n".join(lines)


def _hixie_length_block(frame_type: int, length_bytes: bytes, length: int, shown: bytes,
                        direction: str, label: str, limit: int) -> str:
    if frame_type == 0xFF and length == 0:
        return "\n".join([
            _title(label, direction, "draft-76 closing frame, 2 bytes"),
            _field("frame", "ff 00: the closing handshake (draft-76 §4.2, §5.3); draft-75 "
                            "had none"),
        ])
    lines = [
        _title(label, direction, f"draft-75/76 length-prefixed frame, "
                                 f"{1 + len(length_bytes) + length} bytes"),
        _field("frame", f"{frame_type:02x} {hex_bytes(length_bytes)}: type {frame_type:#04x}, "
                        f"length {length} in 7-bit groups; the receiver discards it "
                        "(draft-76 §5.3)"),
    ]
    if length:
        lines += _dump("payload", shown)
    if length > len(shown):
        lines.append(_field("cut", f"{length - len(shown)} more payload bytes not shown "
                                   f"(limit {limit})"))
    return "\n".join(lines)


def format_hixie_frame(data: bytes | bytearray, direction: Direction, *, label: str = "",
                       limit: int = DEFAULT_LIMIT) -> str:
    """One whole draft-75/76 frame: `00 <UTF-8> ff`, `ff 00` (close) or length-prefixed.

    Raises:
        ValueError: `data` does not hold one whole frame.
    """
    data = bytes(data)
    if not data:
        raise ValueError("format_hixie_frame: no bytes")
    frame_type = data[0]
    if not frame_type & 0x80:
        end = data.find(b"\xff", 1)
        if end < 0:
            raise ValueError("format_hixie_frame: no 0xff at the end of the frame")
        payload = data[1:end]
        return _hixie_text_block(frame_type, payload[:limit], len(payload), direction, label,
                                 limit)
    length, pos = 0, 1
    while True:
        if pos >= len(data):
            raise ValueError("format_hixie_frame: incomplete length")
        byte = data[pos]
        length = (length << 7) | (byte & 0x7F)
        pos += 1
        if not byte & 0x80:
            break
    return _hixie_length_block(frame_type, data[1:pos], length, data[pos:pos + min(length, limit)],
                               direction, label, limit)


# -- the opening handshake ------------------------------------------------------------------


def explain_accept(key: str) -> str:
    """RFC 6455 §4.2.2 item 5.4 step by step: key + GUID, SHA-1, base64."""
    digest = hashlib.sha1((key + GUID).encode("latin-1", "replace")).digest()
    answer = base64.b64encode(digest).decode("ascii")
    assert answer == accept_key(key)  # the same computation as the handshake's
    return "\n".join([
        _field("accept", "Sec-WebSocket-Accept = base64(SHA-1(key + GUID)), RFC 6455 §4.2.2"),
        _field("key", repr(key)),
        _field("+ GUID", f"{GUID!r} (RFC 6455 §1.3)"),
        _field("SHA-1", hex_bytes(digest)),
        _field("base64", repr(answer)),
    ])


def _explain_key(name: str, key: str) -> tuple[list[str], int | None]:
    """Draft-76 §5.2 for one key: its digits, its spaces, the quotient (or why none)."""
    digits = "".join(ch for ch in key if "0" <= ch <= "9")
    spaces = key.count(" ")
    lines = [_field(name, repr(key))]
    steps = f"digits {digits or '(none)'}, spaces {spaces}"
    try:
        part = key_part(key)  # the server's own check, so the two cannot disagree
    except HttpError as exc:
        lines.append(_INDENT + f"{steps}: {exc.reason} (the server answers HTTP 400)")
        return lines, None
    lines.append(_INDENT + f"{steps}: {int(digits)} / {spaces} = {part}")
    return lines, part


def explain_draft76(key1: str, key2: str, key3: bytes) -> str:
    """The draft-76 challenge (§5.2) as the 2010 article walks through it: for each key the
    digits, the number of spaces and the quotient, then the 16-byte MD5 input (the two
    quotients as big-endian 32-bit numbers, then the 8 bytes of key3) and the MD5 answer."""
    lines = [_field("challenge", "draft-76 §5.2, step by step")]
    first, part1 = _explain_key("key1", key1)
    second, part2 = _explain_key("key2", key2)
    lines += first + second
    lines.append(_field("key3", f"{hex_bytes(key3)} (the 8 bytes after the empty line)"))
    if part1 is None or part2 is None or len(key3) != _DRAFT76_KEY3:
        lines.append(_field("MD5", "not computed: the handshake fails"))
        return "\n".join(lines)
    md5_input = struct.pack("!II", part1, part2) + key3
    lines += _dump("MD5 in", md5_input)
    lines.append(_INDENT + f"{part1} and {part2} as big-endian 32-bit numbers, then key3")
    lines += _dump("MD5 out", hashlib.md5(md5_input).digest())
    lines.append(_INDENT + "the 16 bytes the server sends after its empty line")
    return "\n".join(lines)


def _expected_challenge(key1: str, key2: str, key3: bytes) -> bytes | None:
    try:
        return hashlib.md5(struct.pack("!II", key_part(key1), key_part(key2)) + key3).digest()
    except HttpError:
        return None


@dataclass
class _Head:
    """An HTTP head taken apart loosely: the first line and the header fields."""

    first_line: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def has_token(self, name: str, token: str) -> bool:
        return token in (part.strip().lower() for part in (self.get(name) or "").split(","))


def _split_head(head: bytes) -> tuple[_Head, list[str]]:
    text = head.decode("iso-8859-1")
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip(" \t")))
    return _Head(lines[0] if lines else "", headers), lines


def format_http_head(head: bytes | bytearray, direction: Direction, *,
                     label: str = "") -> str:
    """An HTTP request or response head as text, with the key arithmetic of an upgrade
    request (RFC 6455 accept, or draft-76 challenge when `head` ends with key3's 8 bytes).

    Args:
        head: the head up to and including its empty line, plus draft-76's 8-byte key3 or
            16-byte answer when they follow it.
    """
    end = bytes(head).find(b"\r\n\r\n")
    text_end = len(head) if end < 0 else end + 4
    return _head_block(bytes(head[:text_end]), bytes(head[text_end:]), direction, label)


def _head_block(head: bytes, extra: bytes, direction: str, label: str,
                expected_accept: str | None = None,
                expected_answer: bytes | None = None) -> str:
    parsed, lines = _split_head(head)
    kind = "request" if direction == CLIENT_TO_SERVER else "response"
    out = [_title(label, direction, f"HTTP {kind} head, {len(head)} bytes")]
    out += ["  | " + _printable(line) for line in lines]
    out.append("  | (empty line: end of the head)")
    if direction == CLIENT_TO_SERVER:
        key = parsed.get("sec-websocket-key")
        key1, key2 = parsed.get("sec-websocket-key1"), parsed.get("sec-websocket-key2")
        if key is not None:
            out.append(explain_accept(key))
        elif key1 is not None and key2 is not None:
            out.append(explain_draft76(key1, key2, extra))
        elif extra:
            out += _dump("after", extra)
        return "\n".join(out)
    accept = parsed.get("sec-websocket-accept")
    if accept is not None and expected_accept is not None:
        if accept == expected_accept:
            out.append(_field("check", "Sec-WebSocket-Accept matches the key (RFC 6455 §4.1)"))
        else:
            out.append(_field("note", f"Sec-WebSocket-Accept should be {expected_accept!r}: "
                                      "the client must fail the connection (RFC 6455 §4.1)"))
    if extra:
        out += _dump("answer", extra)
        if expected_answer is not None:
            verdict = ("matches the MD5 of the request's keys (draft-76 §4.1)"
                       if extra == expected_answer else
                       f"should be {hex_bytes(expected_answer)}: the client must fail")
            out.append(_INDENT + verdict)
    return "\n".join(out)


def _raw_block(data: bytes, total: int, direction: str, label: str, limit: int,
               why: str) -> str:
    lines = [_title(label, direction, f"{total} bytes, {why}")]
    if data[:limit]:
        lines += _dump("bytes", data[:limit])
    if total > len(data[:limit]):
        lines.append(_field("cut", f"{total - len(data[:limit])} more bytes not shown "
                                   f"(limit {limit})"))
    return "\n".join(lines)
