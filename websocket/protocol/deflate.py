"""permessage-deflate (RFC 7692 §5, §7.1): parsing the offers and agreeing on parameters.

Sans-I/O. `negotiate(header_value, policy)`: the first offer we can honour, as `Agreed`
parameters plus the exact response value, or None. An unparseable header is HTTP 400.
The streams themselves (`Deflater`, `RoomStream`, `Inflater`, `DeflatePolicy`) are in
`deflate_streams.py`; every name is re-exported here, so `websocket.deflate` is the one
import for both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import HttpError
from .deflate_streams import (
    DEFAULT_KEYFRAME_INTERVAL,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MIN_SIZE,
    DEFAULT_POLICY,
    EMPTY_BLOCK_TAIL,
    MAX_WINDOW_BITS,
    MIN_COMPRESS_WINDOW_BITS,
    MIN_WINDOW_BITS,
    DeflatePolicy,
    Deflater,
    Inflater,
    RoomMessage,
    RoomStream,
    compress_message,
    new_compressor,
)

__all__ = [
    "DEFAULT_KEYFRAME_INTERVAL", "DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_MIN_SIZE",
    "DEFAULT_POLICY", "EMPTY_BLOCK_TAIL", "EXTENSION_NAME", "MAX_WINDOW_BITS",
    "MIN_COMPRESS_WINDOW_BITS", "MIN_WINDOW_BITS", "Agreed", "Deflater", "DeflatePolicy",
    "Inflater", "RoomMessage", "RoomStream", "compress_message", "negotiate",
    "new_compressor", "parse_extensions",
]

EXTENSION_NAME = "permessage-deflate"

# --- Sec-WebSocket-Extensions syntax: RFC 6455 §9.1 over RFC 7230 §3.2.6 and §7 ----------
#   extension-list = 1#extension ; extension = token *( ";" extension-param )
#   extension-param = token [ "=" ( token / quoted-string ) ]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 §3.2.6 tchar
_QUOTED = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_OWS = re.compile(r"[ \t]*")
_QUOTED_PAIR = re.compile(r"\\(.)")
# §7.1.2.1/§7.1.2.2: "a decimal integer value without leading zeroes between 8 to 15".
_WINDOW_BITS = re.compile(r"[1-9][0-9]?")

Param = tuple[str, str | None]


def parse_extensions(value: str) -> list[tuple[str, list[Param]]]:
    """Every extension offered in a `Sec-WebSocket-Extensions` value, in order.

    Empty list elements are skipped (RFC 7230 §7). Optional whitespace is accepted around
    ";" and "=" as most parsers do. A quoted value is unescaped, and must then be a token
    (RFC 6455 §9.1).

    Raises:
        HttpError: 400, the value does not follow the RFC 6455 §9.1 grammar.
    """
    offers: list[tuple[str, list[Param]]] = []
    pos, end = 0, len(value)

    def skip_ows(at: int) -> int:
        match = _OWS.match(value, at)
        return match.end() if match else at

    def token(at: int, what: str) -> tuple[str, int]:
        match = _TOKEN.match(value, at)
        if match is None:
            raise HttpError(400, f"malformed Sec-WebSocket-Extensions: {what} expected at "
                                 f"offset {at}")
        return match.group(), match.end()

    while True:
        pos = skip_ows(pos)
        if pos >= end:
            break
        if value[pos] == ",":  # an empty list element
            pos += 1
            continue
        name, pos = token(pos, "extension name")
        params: list[Param] = []
        while True:
            pos = skip_ows(pos)
            if pos >= end or value[pos] != ";":
                break
            pos = skip_ows(pos + 1)
            param, pos = token(pos, "parameter name")
            argument: str | None = None
            after = skip_ows(pos)
            if after < end and value[after] == "=":
                pos = skip_ows(after + 1)
                quoted = _QUOTED.match(value, pos)
                if quoted is not None:
                    argument = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
                    if not _TOKEN.fullmatch(argument):
                        raise HttpError(400, "malformed Sec-WebSocket-Extensions: a quoted "
                                             "value must be a token (RFC 6455 §9.1)")
                    pos = quoted.end()
                else:
                    argument, pos = token(pos, "parameter value")
            params.append((param, argument))
        offers.append((name, params))
        pos = skip_ows(pos)
        if pos < end:
            if value[pos] != ",":
                raise HttpError(400, f"malformed Sec-WebSocket-Extensions: ',' expected at "
                                     f"offset {pos}")
            pos += 1
    return offers


# --- Negotiation: RFC 7692 §5 and §7.1 -------------------------------------------------


@dataclass(frozen=True)
class Agreed:
    """The permessage-deflate parameters in force for one connection.

    Window sizes are the effective ones (15 where the response names none).

    Attributes:
        server_no_context_takeover: our messages to this user must each start from an empty
            window (§7.1.1.1): it may only receive `Deflater(context_takeover=False)` output.
        client_no_context_takeover: the user's messages each start from an empty window
            (§7.1.1.2), so we inflate each with a fresh inflater and keep none in between.
        server_max_window_bits: the largest window a compressor for this user may have.
        client_max_window_bits: the window its messages are inflated with.
        response: the exact `Sec-WebSocket-Extensions` value to answer with.
    """

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    response: str

    def inflater(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Inflater:
        """An `Inflater` for this user's messages (it holds no zlib state until one comes)."""
        return Inflater(self.client_max_window_bits, self.client_no_context_takeover,
                        max_size)

    def can_receive(self, deflater: Deflater) -> bool:
        """True when `deflater`'s output suits this user: its window is small enough, and
        it keeps no context unless the user allows that. (The caller must still send a
        context-keeping stream to its users whole, see the module docstring.)"""
        if deflater.window_bits > self.server_max_window_bits:
            return False
        return not (deflater.context_takeover and self.server_no_context_takeover)


_NO_VALUE_PARAMS = ("server_no_context_takeover", "client_no_context_takeover")
_KNOWN_PARAMS = frozenset(_NO_VALUE_PARAMS + ("server_max_window_bits",
                                              "client_max_window_bits"))


def negotiate(header_value: str | None, policy: DeflatePolicy = DEFAULT_POLICY
              ) -> Agreed | None:
    """Accept the first permessage-deflate offer we can honour (RFC 7692 §5, §7.1).

    `header_value`: the request's `Sec-WebSocket-Extensions`, repeated headers joined with
    ", " (as `Request.header` does). Other extensions are ignored.

    An offer is declined, and the next one tried (§5), when a parameter is unknown, given
    twice, or has a value where none belongs or a window size that is not 8..15 without
    leading zeros, and when it asks for `server_max_window_bits=8`: zlib >= 1.2.9 refuses to
    compress with a 256-byte window (older ones silently used 512 bytes) and the answer may
    not exceed the offer, so it cannot be honoured (websockets declines it too).

    The answer holds nothing the client did not allow: `server_max_window_bits` and
    `client_max_window_bits` only when offered (§7.1.2.2 MUST NOT), never above the offer;
    `server_no_context_takeover` when asked or announced by the policy;
    `client_no_context_takeover` when offered or demanded.

    A header that does not parse is a 400, not ignored: RFC 6455 §4.2.1 has a server answer
    a request that does not match the handshake's description with an error such as 400,
    no browser sends one, and silence would hide a broken client or intermediary.

    Raises:
        HttpError: 400, the value does not follow RFC 6455 §9.1.
    """
    if not header_value:
        return None
    for name, params in parse_extensions(header_value):
        if name.lower() == EXTENSION_NAME:
            agreed = _accept_offer(params, policy)
            if agreed is not None:
                return agreed
    return None


def _window_bits(value: str | None) -> int | None:
    if value is None or not _WINDOW_BITS.fullmatch(value):
        return None
    bits = int(value)
    return bits if MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS else None


def _accept_offer(params: list[Param], policy: DeflatePolicy) -> Agreed | None:
    """The agreement for one offer, or None to decline it."""
    offered: dict[str, str | None] = {}
    for param, argument in params:
        key = param.lower()
        if key in offered or key not in _KNOWN_PARAMS:
            return None  # a parameter twice, or one not defined for offers
        offered[key] = argument
    if any(offered.get(key, None) is not None for key in _NO_VALUE_PARAMS):
        return None  # §7.1.1.1/§7.1.1.2: "This extension parameter has no value"
    answer = [EXTENSION_NAME]
    server_nct = "server_no_context_takeover" in offered or policy.server_no_context_takeover
    if server_nct:
        answer.append("server_no_context_takeover")
    client_nct = "client_no_context_takeover" in offered or policy.client_no_context_takeover
    if client_nct:
        answer.append("client_no_context_takeover")

    server_bits = policy.server_max_window_bits
    if "server_max_window_bits" in offered:
        limit = _window_bits(offered["server_max_window_bits"])  # a value is required
        if limit is None or limit < MIN_COMPRESS_WINDOW_BITS:
            return None
        server_bits = min(server_bits, limit)
        answer.append(f"server_max_window_bits={server_bits}")

    client_bits = MAX_WINDOW_BITS
    if "client_max_window_bits" in offered:
        value = offered["client_max_window_bits"]
        if value is None:  # "I can limit my window to whatever you say"
            if policy.client_max_window_bits < MAX_WINDOW_BITS:
                client_bits = policy.client_max_window_bits
                answer.append(f"client_max_window_bits={client_bits}")
        else:
            limit = _window_bits(value)
            if limit is None:
                return None
            client_bits = min(limit, policy.client_max_window_bits)
            answer.append(f"client_max_window_bits={client_bits}")
    return Agreed(server_nct, client_nct, server_bits, client_bits, "; ".join(answer))
