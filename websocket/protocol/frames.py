"""RFC 6455 frames: opcodes, close codes, header parsing, encoding and masking (§5, §7.4).

Sans-I/O: bytes in, values out. This module knows single frames only; turning frames into
messages (fragments, UTF-8, size limits) is `messages.py`'s job. It never touches a socket.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from ..errors import InvalidPayload, ProtocolError


class Opcode(IntEnum):
    """RFC 6455 §5.2 / §11.8: the frame opcodes; 0x3-0x7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
KNOWN_OPCODES = {int(op): op for op in Opcode}


class CloseCode(IntEnum):
    """RFC 6455 §7.4.1: the defined status codes (and the IANA registry's 1012-1014)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS = 1005  # never on the wire: "no code was present"
    ABNORMAL = 1006  # never on the wire: "closed without a close frame"
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# RFC 6455 §7.4.1/§7.4.2: codes a peer may put in a close frame. 1004-1006 and 1015 are
# reserved or "MUST NOT be set as a status code"; 0-999 and 1016-2999 are not used;
# 3000-3999 are registered by libraries and 4000-4999 are private use.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """True when `code` may appear in a close frame (RFC 6455 §7.4)."""
    return code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def describe_close_code(code: int) -> str:
    """A short name for logs: 'normal', 'going away', ... or 'application'."""
    try:
        return CloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        return "application" if 3000 <= code <= 4999 else "unknown"


# RFC 6455 §5.2 Base Framing Protocol: the bits of the first two bytes.
FIN = 0x80
RSV_BITS = 0x70
# RFC 7692 §6: permessage-deflate's "Per-Message Compressed" bit, on a message's first frame.
RSV1 = 0x40
OPCODE_BITS = 0x0F
MASK_BIT = 0x80
LENGTH_BITS = 0x7F
LENGTH_16 = 126  # "the following 2 bytes interpreted as a 16-bit unsigned integer"
LENGTH_64 = 127  # "the following 8 bytes interpreted as a 64-bit unsigned integer"
# §5.5: "All control frames MUST have a payload length of 125 bytes or less".
MAX_CONTROL_PAYLOAD = 125


class Header(NamedTuple):
    """A parsed frame header (RFC 6455 §5.2); the payload follows it.

    A NamedTuple rather than a frozen dataclass: one is built per frame, and this is
    about three times cheaper to create.
    """

    fin: bool
    opcode: Opcode
    length: int  # payload length in bytes
    mask: bytes | None  # the 4-byte masking key, or None when unmasked
    size: int  # how many bytes the header itself took
    compressed: bool = False  # RSV1 with permessage-deflate: the message is compressed


@dataclass(frozen=True)
class Frame:
    """A whole frame with its payload already unmasked."""

    opcode: Opcode
    payload: bytes
    fin: bool = True


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0,
                 require_mask: bool = True, allow_rsv1: bool = False) -> Header | None:
    """Parse the frame header starting at `buf[pos]`.

    `allow_rsv1`: permessage-deflate was negotiated, so RSV1 may mark the first frame of a
    compressed data message (RFC 7692 §6); `Header.compressed` says so.

    Returns None while the header is incomplete. Raises ProtocolError (1002) for anything
    §5.2 and §5.5 (and RFC 7692 §6.1) forbid, as soon as the bytes that show it have arrived.
    """
    available = len(buf) - pos
    if available < 2:
        return None
    first, second = buf[pos], buf[pos + 1]
    opcode = KNOWN_OPCODES.get(first & OPCODE_BITS)
    compressed = False
    if first & RSV_BITS:
        # §5.2: "MUST be 0 unless an extension is negotiated that defines meanings for
        # non-zero values"; permessage-deflate defines RSV1 only.
        if first & RSV_BITS != RSV1 or not allow_rsv1:
            raise ProtocolError("reserved bits set without an extension that defines them")
        # RFC 7692 §6.1: RSV1 set on a control frame or on a non-first fragment of a data
        # message: "the client or server MUST _Fail the WebSocket Connection_".
        if opcode is not None and opcode >= Opcode.CLOSE:
            raise ProtocolError("RSV1 (compressed) set on a control frame")
        if opcode is Opcode.CONTINUATION:
            raise ProtocolError("RSV1 (compressed) set on a continuation frame")
        compressed = True
    if opcode is None:
        # §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail_".
        raise ProtocolError(f"reserved opcode {first & OPCODE_BITS:#x}")
    fin = bool(first & FIN)
    masked = bool(second & MASK_BIT)
    if require_mask and not masked:
        # §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
        raise ProtocolError("client frame is not masked")
    length = second & LENGTH_BITS
    if opcode in CONTROL_OPCODES:
        # §5.5: control frames are at most 125 bytes and "MUST NOT be fragmented".
        if length > MAX_CONTROL_PAYLOAD:
            raise ProtocolError("control frame payload longer than 125 bytes")
        if not fin:
            raise ProtocolError("fragmented control frame")
    size = 2
    if length == LENGTH_16:
        if available < 4:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        size = 4
    elif length == LENGTH_64:
        if available < 10:
            return None
        (length,) = struct.unpack_from("!Q", buf, pos + 2)
        if length >> 63:
            # §5.2: "the most significant bit MUST be 0".
            raise ProtocolError("64-bit payload length with its top bit set")
        size = 10
    mask = None
    if masked:
        if available < size + 4:
            return None
        mask = bytes(buf[pos + size:pos + size + 4])
        size += 4
    return Header(fin, opcode, length, mask, size, compressed)


# 256 translation tables, one per key byte: table[k][b] == b ^ k.
_XOR_TABLES = [bytes(b ^ key for b in range(256)) for key in range(256)]
_STRIDED_FROM = 2048  # from this size on, four strided translate() calls beat big integers


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0,
               start: int = 0, stop: int | None = None) -> bytes | bytearray:
    """XOR `data[start:stop]` with the 4-byte `mask` (RFC 6455 §5.3) from key byte `offset % 4`.

    Pure Python but fast: small payloads are XORed as one big integer; large ones as four
    strided slices, each one a single C-level `bytes.translate` with a one-byte key, read
    straight from `data` (no copy of the range first).
    """
    if stop is None:
        stop = len(data)
    n = stop - start
    if n <= 0:
        return b""
    if offset % 4:
        shift = offset % 4
        mask = mask[shift:] + mask[:shift]
    if n < _STRIDED_FROM:
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data[start:stop], "little")
                ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    source = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    out = bytearray(n)
    for i in range(4):
        out[i::4] = source[start + i:stop:4].translate(_XOR_TABLES[mask[i]])
    return out


def unmask_in_place(buf: bytearray, mask: bytes, offset: int, size: int) -> None:
    """XOR `buf[:size]` with the mask, in place (RFC 6455 §5.3), from key byte `offset % 4`:
    for a buffer of the caller's that is read again, so no output buffer is allocated."""
    if offset % 4:
        shift = offset % 4
        mask = mask[shift:] + mask[:shift]
    for i in range(4):
        buf[i:size:4] = buf[i:size:4].translate(_XOR_TABLES[mask[i]])


def encode_header(opcode: int, length: int, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Build a frame header for a payload of `length` bytes (RFC 6455 §5.2)."""
    first = (FIN if fin else 0) | opcode
    mask_bit = MASK_BIT if mask is not None else 0
    if length < LENGTH_16:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | LENGTH_16, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | LENGTH_64, length)
    return header + mask if mask is not None else header


def encode_frame(opcode: int, payload: bytes | bytearray = b"", fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """One whole frame. Servers send unmasked frames (§5.1); clients pass a 4-byte `mask`."""
    if mask is not None:
        payload = apply_mask(payload, mask)
    return encode_header(opcode, len(payload), fin, mask) + payload


def frame_parts(opcode: int, payload: bytes) -> tuple[bytes, ...]:
    """A server frame as buffers for scatter-gather output: large payloads are not copied."""
    if len(payload) < 65536:
        return (encode_header(opcode, len(payload)) + payload,)
    return (encode_header(opcode, len(payload)), payload)


def parse_frame(buf: bytes | bytearray, require_mask: bool = True) -> tuple[Frame, int] | None:
    """Parse one whole frame from the start of `buf`: (frame, bytes consumed), or None.

    A convenience over `parse_header` for tests and simple clients; the server streams
    payloads through `messages.Receiver` instead, so it never waits for a whole frame.
    """
    header = parse_header(buf, 0, require_mask)
    if header is None or len(buf) < header.size + header.length:
        return None
    payload = bytes(buf[header.size:header.size + header.length])
    if header.mask is not None:
        payload = bytes(apply_mask(payload, header.mask))
    return Frame(header.opcode, payload, header.fin), header.size + header.length


def encode_close(code: int | None = None, reason: str = "") -> bytes:
    """The payload of a close frame (§5.5.1): 2-byte code and UTF-8 reason, or empty."""
    if code is None:
        return b""
    data = reason.encode("utf-8")
    # §5.5: the whole payload must fit a control frame; cut the reason on a character boundary.
    while len(data) > MAX_CONTROL_PAYLOAD - 2:
        reason = reason[:-1]
        data = reason.encode("utf-8")
    return struct.pack("!H", code) + data


def parse_close(payload: bytes) -> tuple[int, str]:
    """Read a close frame's payload (§5.5.1, §7.1.5): (code, reason).

    An empty payload means "no status code" and gives (1005, ""). Raises ProtocolError for a
    one-byte payload or a code §7.4 forbids, InvalidPayload (1007) for a reason not in UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a one-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("close reason is not valid UTF-8") from None
    return code, reason
