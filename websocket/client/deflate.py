"""permessage-deflate for the client (RFC 7692): the offer, the answer, and RSV1 messages.

The compression itself is deflate.py's (`Deflater`, the bounded `Inflater`); here is what
only a client needs:
- `OFFER`, and `agree(answer)`: the server's `Sec-WebSocket-Extensions` answer checked
  against RFC 7692 §7.1 (a parameter we did not offer, an unknown one, a bad window
  size: the client "MUST _Fail the WebSocket Connection_", §5);
- `CompressedReader`: between the socket's bytes and `messages.Receiver`. A message whose
  first frame has RSV1 set (§6.1) is taken apart here, each fragment's payload inflated
  as it comes, within the message size limit on the *inflated* size (a deflate bomb fails
  with 1009 before its output exists); every other frame goes to the Receiver whole, so
  plain frames get exactly the checks they get without compression.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import HttpError, InvalidPayload, MessageTooBig, ProtocolError
from ..observe.trace_format import parse_frame_head
from ..protocol.deflate import (
    EXTENSION_NAME,
    MAX_WINDOW_BITS,
    MIN_COMPRESS_WINDOW_BITS,
    MIN_WINDOW_BITS,
    Deflater,
    Inflater,
    parse_extensions,
)
from ..protocol.frames import Opcode
from ..protocol.messages import Event, Message, Receiver
from .handshake import HandshakeFailed

# §7.1.2.2: "client_max_window_bits" without a value: we can use whatever the server says.
OFFER = f"{EXTENSION_NAME}; client_max_window_bits"
RSV1, RSV2_RSV3 = 0x40, 0x30


@dataclass(frozen=True)
class ClientAgreement:
    """What the server's answer allows (§7.1): windows are 15 where it names none."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS

    def deflater(self) -> Deflater | None:
        """Our compressor, or None when the server asks for a window zlib cannot compress
        with (8 bits): then we send uncompressed messages, which is always allowed."""
        if self.client_max_window_bits < MIN_COMPRESS_WINDOW_BITS:
            return None
        return Deflater(self.client_max_window_bits,
                        context_takeover=not self.client_no_context_takeover)

    def inflater(self, max_size: int) -> Inflater:
        return Inflater(self.server_max_window_bits, self.server_no_context_takeover,
                        max_size)


def agree(answer: str) -> ClientAgreement:
    """The parameters of the server's permessage-deflate answer (one extension value).

    Raises:
        HandshakeFailed: the answer breaks RFC 7692 §7.1 or RFC 6455 §9.1's grammar.
    """
    try:
        extensions = parse_extensions(answer)
    except HttpError as exc:
        raise HandshakeFailed(f"bad Sec-WebSocket-Extensions answer: {exc.reason}",
                              101) from None
    if len(extensions) != 1 or extensions[0][0].lower() != EXTENSION_NAME:
        raise HandshakeFailed(f"unexpected extension answer {answer!r} (RFC 7692 §5)", 101)
    seen: dict[str, str | None] = {}
    for name, value in extensions[0][1]:
        key = name.lower()
        if key in seen:
            raise HandshakeFailed(f"permessage-deflate parameter {name} twice (§7.1)", 101)
        seen[key] = value
    unknown = set(seen) - {"server_no_context_takeover", "client_no_context_takeover",
                           "server_max_window_bits", "client_max_window_bits"}
    if unknown:
        raise HandshakeFailed(f"unknown permessage-deflate parameter {sorted(unknown)[0]} "
                              "(RFC 7692 §7.1)", 101)
    for key in ("server_no_context_takeover", "client_no_context_takeover"):
        if seen.get(key, None) is not None:
            raise HandshakeFailed(f"{key} has no value (RFC 7692 §7.1.1)", 101)
    return ClientAgreement(
        "server_no_context_takeover" in seen, "client_no_context_takeover" in seen,
        _bits(seen, "server_max_window_bits"), _bits(seen, "client_max_window_bits"))


def _bits(seen: dict[str, str | None], key: str) -> int:
    if key not in seen:
        return MAX_WINDOW_BITS
    value = seen[key]
    # §7.1.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive"
    if value is None or not value.isdigit() or value.startswith("0") or \
            not MIN_WINDOW_BITS <= int(value) <= MAX_WINDOW_BITS:
        raise HandshakeFailed(f"bad {key} value {value!r} (RFC 7692 §7.1.2)", 101)
    return int(value)


class CompressedReader:
    """Frames to events, with RSV1 messages inflated (RFC 7692 §6.2); see the docstring."""

    def __init__(self, agreement: ClientAgreement, receiver: Receiver,
                 max_message_size: int) -> None:
        self.receiver = receiver
        self.max_message_size = max_message_size
        self.inflater = agreement.inflater(max_message_size)
        self._opcode: int | None = None  # the compressed message in progress, if any
        self._parts: list[bytes] = []

    def receive(self, buf: bytearray, events: list[Event]) -> None:
        """Consume whole frames from the front of `buf`, appending their events.

        Raises:
            ProtocolError: (with its close code) the server broke RFC 6455 or RFC 7692.
        """
        while buf and not self.receiver.closed:
            head = parse_frame_head(buf)
            if head is None:
                return
            if head.length > self.max_message_size:  # decided on the header (§10.4)
                raise MessageTooBig(f"frame of {head.length} bytes over the "
                                    f"{self.max_message_size}-byte limit")
            size = head.size + head.length
            if len(buf) < size:
                return
            frame = bytes(buf[:size])
            del buf[:size]
            opcode, compressed = frame[0] & 0x0F, bool(frame[0] & RSV1)
            if self._opcode is not None and opcode < Opcode.CLOSE:
                if opcode != Opcode.CONTINUATION:
                    raise ProtocolError("new data frame while a fragmented message is "
                                        "unfinished")
                if compressed:
                    raise ProtocolError("RSV1 set on a continuation frame (RFC 7692 §6.1)")
                self._continue(frame[head.size:], head.fin, head.mask, frame[0], events)
            elif compressed and opcode in (Opcode.TEXT, Opcode.BINARY):
                if self.receiver.in_message:
                    raise ProtocolError("new data frame while a fragmented message is "
                                        "unfinished")
                self._opcode = opcode
                self._continue(frame[head.size:], head.fin, head.mask, frame[0], events)
            else:
                self.receiver.receive(bytearray(frame), events)  # RSV1 on control: 1002

    def _continue(self, payload: bytes, fin: bool, mask: bytes | None, first: int,
                  events: list[Event]) -> None:
        if mask is not None:
            raise ProtocolError("masked server frame (RFC 6455 §5.1)")
        if first & RSV2_RSV3:
            raise ProtocolError("RSV2 or RSV3 set without an extension that defines them")
        self._parts.append(self.inflater.feed(payload, final=fin))  # 1009 / 1007 inside
        if not fin:
            return
        data = b"".join(self._parts)
        message: str | bytes = data
        if self._opcode == Opcode.TEXT:
            try:
                message = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPayload("text message is not valid UTF-8") from None
        events.append(Message(message))
        self._opcode, self._parts = None, []
