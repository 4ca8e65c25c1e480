"""One exception tree for everything a peer can get wrong.

Each class carries the answer it deserves on the wire, so the loop in `server.py` is the one
place that turns an exception into bytes and nobody else picks a code:

- `HttpError`: before the upgrade. Carries an HTTP status (400, 404, 405, 426, 431, ...) and
  the one-line reason sent as the response body.
- `ProtocolError`: after the upgrade. Carries an RFC 6455 close code (§7.4.1):
    - `ProtocolError` itself: 1002, the peer broke the framing rules.
    - `InvalidPayload`: 1007, a text message (or close reason) is not UTF-8.
    - `PolicyViolation`: 1008, e.g. a message not finished within `--message-timeout`.
    - `MessageTooBig`: 1009, a message is larger than `--max-message-size`.
    - `InternalError`: 1011, the server itself failed (a bug); never raised by codecs.
    - `TryAgainLater`: 1013, the server is out of room for unfinished messages
      (`--max-input-memory`); the user may reconnect and try again.
  Hixie (draft-75/76) users have no close codes; the loop answers them with 0xFF 0x00.

The codecs raise these and nothing else for bad input; any other exception is a bug.
"""
from __future__ import annotations


class WebSocketError(Exception):
    """Base class: the peer sent something we refuse."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpError(WebSocketError):
    """A request (upgrade or plain HTTP) answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason)
        self.status = status
        self.headers = headers


class ProtocolError(WebSocketError):
    """RFC 6455 §7.4.1 1002: a frame breaks the protocol."""

    code = 1002


class InvalidPayload(ProtocolError):
    """RFC 6455 §7.4.1 1007: data inconsistent with the message type (bad UTF-8)."""

    code = 1007


class PolicyViolation(ProtocolError):
    """RFC 6455 §7.4.1 1008: a message that violates the server's policy (e.g. too slow)."""

    code = 1008


class MessageTooBig(ProtocolError):
    """RFC 6455 §7.4.1 1009: a message too big to process."""

    code = 1009


class InternalError(ProtocolError):
    """RFC 6455 §7.4.1 1011: the server hit an unexpected condition (one user is closed)."""

    code = 1011


class TryAgainLater(ProtocolError):
    """IANA registry 1013 (RFC 6455 §11.7): the server is overloaded; try again later."""

    code = 1013
