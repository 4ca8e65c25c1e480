"""The opening handshake: HTTP request parsing, protocol detection, RFC 6455 §4.2 answers.

Sans-I/O. `parse_request(buf)` returns None until the request is complete (for draft-76 that
includes the 8 bytes after the blank line) and enforces the size limit as bytes arrive, so a
request trickled in byte by byte or sent in one packet gives the same result. The original
PHP took one recv() for the whole request and answered blindly; this is the fix.

The parser is strict where RFC 9112 lets a lax one be fooled (request smuggling behind a
proxy, §11.2): lines end with CRLF and nothing else (§2.2, refused as soon as a bare CR or LF
arrives), Host is present on HTTP/1.1, single and valid (§3.2), and a body's framing is
unambiguous (one valid Content-Length, or Transfer-Encoding ending in chunked, never both:
§6.1, §6.3). It never reads a body: `Request.has_body` says one follows, and the callers
close the connection after answering instead of parsing it as the next request.

`upgrade(request)` decides which of the three generations a WebSocket request speaks and
returns everything the server needs to answer it, or raises `HttpError` with the status and
the one-line reason. Plain HTTP requests (no Upgrade) are `http.py`'s business.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus

from ..errors import HttpError
from . import legacy
from .deflate import Agreed, DeflatePolicy, negotiate

# RFC 6455 §1.3: "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", concatenated with the client's key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_REQUEST_SIZE = 16 * 1024  # the whole request head; browsers send well under 2 KiB
MAX_HEADERS = 100  # as http.client's _MAXHEADERS
DRAFT76_KEY3_SIZE = 8  # draft-76 §4.1: "the 8 bytes" after the blank line
BLANK_LINE = b"\r\n\r\n"  # RFC 9112 §2.1: the CRLF ending the last field line, then an empty line

# RFC 9112 §2.2: a CR not followed by LF, or a LF not preceded by CR.
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# RFC 9112 §3.2: Host = uri-host [ ":" port ], with RFC 3986 §3.2.2-3.2.3's host and port.
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]*))?")
_REG_NAME = re.compile(r"(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")  # and IPv4address
_IPV_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+")
# RFC 9112 §3.2.2 absolute-form (an RFC 3986 absolute-URI with an authority).
_ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)")
ABSOLUTE_SCHEMES = ("http", "https", "ws", "wss")
_CONTENT_LENGTH = re.compile(r"[0-9]+")  # RFC 9110 §8.6: Content-Length = 1*DIGIT

RFC6455 = "rfc6455"
HIXIE76 = "hixie76"
HIXIE75 = "hixie75"


@dataclass(frozen=True)
class Request:
    """An HTTP request head, plus the 8-byte key3 of a draft-76 upgrade.

    `target` is in origin form ("/path?query"; "*" for OPTIONS, host:port for CONNECT): an
    absolute-form target is rewritten to it by `parse_request`, which keeps its host[:port]
    as `authority` (RFC 9112 §3.2.2).
    `body` is only ever draft-76's key3; a real request body is never read (`has_body`).
    """

    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]  # in order, names as sent
    body: bytes = b""
    authority: str | None = None  # host[:port] of an absolute-form target, else None

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive); repeated headers joined by ", "."""
        name = name.lower()
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def count(self, name: str) -> int:
        name = name.lower()
        return sum(1 for key, _ in self.headers if key.lower() == name)

    def has_token(self, name: str, token: str) -> bool:
        """True when the comma-separated header `name` lists `token` (case-insensitive)."""
        value = self.header(name) or ""
        return token.lower() in (part.strip().lower() for part in value.split(","))

    @property
    def host(self) -> str | None:
        """The host[:port] the request is for: RFC 9112 §3.2.2 says an absolute-form target's
        authority wins over the Host header, which is then ignored; otherwise the Host header
        (None when an HTTP/1.0 request has none)."""
        return self.authority if self.authority is not None else self.header("Host")

    @property
    def has_body(self) -> bool:
        """A message body follows the head (RFC 9112 §6.3): Content-Length greater than zero,
        or any Transfer-Encoding. Such a request gets its answer and then the connection is
        closed, since the body is never read (and must never be taken for a request)."""
        if self.header("Transfer-Encoding") is not None:
            return True
        length = self.header("Content-Length")
        return length is not None and (not length or length.strip("0") != "")

    @property
    def is_upgrade(self) -> bool:
        """An upgrade to WebSocket was asked for (RFC 6455 §4.1 item 5; draft-75/76 alike)."""
        return self.has_token("Upgrade", "websocket")


def _is_draft76(headers: list[tuple[str, str]]) -> bool:
    names = {key.lower() for key, _ in headers}
    return ("sec-websocket-key1" in names and "sec-websocket-key2" in names
            and "sec-websocket-version" not in names)


def parse_request(buf: bytes | bytearray,
                  max_size: int = MAX_REQUEST_SIZE) -> tuple[Request, int] | None:
    """Parse one request head from the start of `buf`: (request, bytes consumed), or None.

    None means more bytes are needed. Whatever is decided is decided as soon as the bytes
    that show it have arrived, so feeding `buf` one byte at a time gives the same request or
    the same error as feeding it at once. A request body is not consumed (`has_body`); the
    8-byte key3 of a draft-76 upgrade is (draft-76 §4.1).

    Args:
        buf: the bytes received so far on the connection.
        max_size: the most bytes a request head may have before its blank line.

    Raises:
        HttpError: 431 when the head exceeds `max_size` before its blank line or has more
            than MAX_HEADERS lines; 505 for an HTTP version other than 1.0 and 1.1; 400 for
            a TLS handshake, a bare CR or LF, a malformed request line or header line, a
            target form the method may not use, a missing, repeated or invalid Host, and
            ambiguous body framing (Content-Length, Transfer-Encoding).
    """
    if buf.startswith((b"\x16", b"\x80")):
        raise HttpError(400, "TLS handshake on a plain ws:// port")
    end = buf.find(BLANK_LINE, 0, max_size + len(BLANK_LINE))
    if end < 0:
        over = _over_limit_at(buf, max_size)
        _check_line_endings(buf, len(buf) if over is None else over)
        if over is not None:
            raise HttpError(431, f"request head larger than {max_size} bytes")
        return None
    consumed = end + len(BLANK_LINE)
    _check_line_endings(buf, consumed)
    try:
        head = bytes(buf[:end]).decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HttpError(400, "undecodable request head") from None
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise HttpError(400, "malformed request method")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if version.startswith("HTTP/"):
            raise HttpError(505, f"{version} not supported")
        raise HttpError(400, "malformed request line")
    target, authority = _request_target(method, target)
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # RFC 9112 §5.1: "No whitespace is allowed between the field name and colon" (400);
        # §5.2: obsolete line folding may be rejected with 400, and is.
        if not colon or not name or name != name.strip() or " " in name or "\t" in name:
            raise HttpError(400, "malformed header line")
        headers.append((name, value.strip(" \t")))
    _check_host(headers, version)
    _check_framing(headers, version)
    body = b""
    if method == "GET" and _is_draft76(headers):
        # draft-76 §4.1: the request is not complete until 8 more bytes have arrived.
        if len(buf) < consumed + DRAFT76_KEY3_SIZE:
            return None
        body = bytes(buf[consumed:consumed + DRAFT76_KEY3_SIZE])
        consumed += DRAFT76_KEY3_SIZE
    return Request(method, target, version, tuple(headers), body, authority), consumed


def _over_limit_at(buf: bytes | bytearray, max_size: int) -> int | None:
    """With no blank line found yet: the length of `buf` at which the head went over
    `max_size` (no blank line can still start at or before it), or None if it has not.

    Only the first max_size + 4 bytes are looked at, so the answer is the same whether `buf`
    grew by one byte or arrived at once.
    """
    for length in range(max_size + 1, min(len(buf), max_size + len(BLANK_LINE)) + 1):
        starts = range(max(0, length - len(BLANK_LINE) + 1), max_size + 1)
        if not any(BLANK_LINE.startswith(buf[start:length]) for start in starts):
            return length
    return None


def _check_line_endings(buf: bytes | bytearray, stop: int) -> None:
    """RFC 9112 §2.2: refuse a bare CR or a bare LF in `buf[:stop]` with 400.

    "A recipient MAY recognize a single LF as a line terminator": we do not, since a proxy
    in front of us might not, and the two would then disagree about where the head ends. A
    bare CR "MUST" be considered invalid or replaced by SP. A CR that ends `buf` may still
    be followed by its LF, so it waits for the next byte.
    """
    if stop and buf[stop - 1] == 0x0D:
        stop -= 1
    crlf = buf.count(b"\r\n", 0, stop)
    if buf.count(b"\r", 0, stop) == crlf and buf.count(b"\n", 0, stop) == crlf:
        return  # the usual case, without the regular expression
    bare = _BARE_CR_OR_LF.search(buf, 0, stop)
    if bare is not None:
        which = "CR" if bare.group() == b"\r" else "LF"
        raise HttpError(400, f"bare {which} in the request head: lines must end with CRLF")


def _valid_host(value: str) -> bool:
    """RFC 9112 §3.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], with a non-empty host (the
    http, https, ws and wss schemes all require one: RFC 9110 §4.2.1, RFC 6455 §3)."""
    match = _HOST_PORT.fullmatch(value)
    if match is None:
        return False
    host = match.group(1)
    if host.startswith("["):
        literal = host[1:-1]
        if _IPV_FUTURE.fullmatch(literal):
            return True
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
        return "%" not in literal  # a zone ID is not part of RFC 3986's IP-literal
    return _REG_NAME.fullmatch(host) is not None


def _is_authority_form(target: str) -> bool:
    """RFC 9112 §3.2.3: authority-form = uri-host ":" port."""
    match = _HOST_PORT.fullmatch(target)
    return match is not None and match.group(2) is not None and _valid_host(target)


def _request_target(method: str, target: str) -> tuple[str, str | None]:
    """RFC 9112 §3.2: the request target in origin form, and the absolute form's authority.

    Origin form ("/path?q") is kept. The absolute form ("http://host:port/path?q", §3.2.2)
    "MUST" be accepted by a server and becomes the origin form "/path?q"; its host[:port]
    is returned, to be used instead of the Host header. The authority form (§3.2.3) is
    only for CONNECT and the asterisk form (§3.2.4) only for OPTIONS; either one elsewhere,
    or anything else, is a 400.
    """
    if method == "CONNECT":
        if _is_authority_form(target):
            return target, None  # §3.2.3
        raise HttpError(400, "CONNECT needs a host:port target")
    if target.startswith("/"):
        return target, None  # §3.2.1
    if method == "OPTIONS" and target == "*":
        return target, None  # §3.2.4
    absolute = _ABSOLUTE_FORM.fullmatch(target)
    if absolute is not None:
        scheme, authority, rest = absolute.groups()
        if scheme.lower() not in ABSOLUTE_SCHEMES:
            raise HttpError(400, f"unsupported URI scheme in request target: {scheme.lower()}")
        if "@" in authority:
            # RFC 9110 §4.2.4: userinfo in an http(s) URI "SHOULD" be treated as an error.
            raise HttpError(400, "user information in the request target")
        if not _valid_host(authority):
            raise HttpError(400, "invalid host in the request target")
        # §3.2.1: an empty path is sent as "/" in origin form; the query stays as it is.
        return (rest if rest.startswith("/") else "/" + rest), authority
    if target == "*":
        raise HttpError(400, f"the asterisk form is for OPTIONS, not {method}")
    if _is_authority_form(target):
        raise HttpError(400, f"the authority form is for CONNECT, not {method}")
    raise HttpError(400, "malformed request target")


def _check_host(headers: list[tuple[str, str]], version: str) -> None:
    """RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    HTTP/1.1 request message that lacks a Host header field and to any request message that
    contains more than one Host header field line or a Host header field with an invalid
    field value." With an absolute-form target, too (its value is then not used, §3.2.2)."""
    hosts = [value for name, value in headers if name.lower() == "host"]
    if len(hosts) > 1:
        raise HttpError(400, "more than one Host header")
    if not hosts:
        if version == "HTTP/1.1":
            raise HttpError(400, "missing Host header")
        return
    if not _valid_host(hosts[0]):
        raise HttpError(400, "invalid Host header")


def _check_framing(headers: list[tuple[str, str]], version: str) -> None:
    """RFC 9112 §6.1, §6.3: the body's length must be beyond doubt, or the request is a 400.

    The body itself is never read (see `Request.has_body`), but a proxy in front of us reads
    it by these headers: if we could disagree about where it ends, the rest of it could pass
    for a second request (request smuggling, §11.2).
    """
    lengths = [value for name, value in headers if name.lower() == "content-length"]
    codings = [value for name, value in headers if name.lower() == "transfer-encoding"]
    if len(lengths) > 1:
        # §6.3 item 5: an invalid Content-Length is "an unrecoverable error" and the server
        # "MUST respond with a 400 (Bad Request)". It would let equal values pass as one;
        # we do not, so no hop in front of us can have read a different length.
        raise HttpError(400, "more than one Content-Length header")
    if lengths and not (lengths[0].isascii() and _CONTENT_LENGTH.fullmatch(lengths[0])):
        raise HttpError(400, "invalid Content-Length")  # §6.3 item 5; also "1, 1" lists
    if not codings:
        return
    if version == "HTTP/1.0":
        # §6.1: an HTTP/1.0 message with Transfer-Encoding "MUST" be treated "as if the
        # framing is faulty, even if a Content-Length is present".
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if lengths:
        # §6.1: "A server MAY reject a request that contains both Content-Length and
        # Transfer-Encoding ... Regardless, the server MUST close the connection"; §6.3
        # item 3: such a message "ought to be handled as an error" (the classic smuggling).
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    names = [part.split(";")[0].strip(" \t").lower()
             for value in codings for part in value.split(",")]
    names = [name for name in names if name]  # RFC 9110 §5.6.1: empty list elements
    if not names or names[-1] != "chunked":
        # §6.3 item 4: "If a Transfer-Encoding header field is present in a request and the
        # chunked transfer coding is not the final encoding ... the server MUST respond with
        # the 400 (Bad Request) status code and then close the connection."
        raise HttpError(400, "Transfer-Encoding does not end with chunked")


@dataclass(frozen=True)
class Upgrade:
    """An accepted WebSocket upgrade: which protocol, and the bytes that answer it."""

    protocol: str  # RFC6455, HIXIE76 or HIXIE75
    response: bytes
    resource: str
    host: str
    origin: str | None
    subprotocol: str | None = None  # RFC 6455 §1.9: the application protocol agreed on
    deflate: Agreed | None = None  # RFC 7692: permessage-deflate's parameters, if agreed


def accept_key(key: str) -> str:
    """RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key + GUID))."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _check_key(key: str) -> None:
    """RFC 6455 §4.1 item 7: the key is 16 random bytes, base64-encoded (24 characters)."""
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise HttpError(400, "Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise HttpError(400, "Sec-WebSocket-Key is not 16 bytes in base64")


def upgrade(request: Request, secure: bool = False,
            allowed_origins: frozenset[str] | None = None,
            subprotocols: tuple[str, ...] = (),
            deflate: DeflatePolicy | None = None) -> Upgrade:
    """Answer a WebSocket upgrade request in the protocol generation it speaks.

    The generation is chosen from the headers alone:
      - `Sec-WebSocket-Version` present: RFC 6455 (version 13, else 426);
      - `Sec-WebSocket-Key1` and `-Key2`: draft-76;
      - neither: draft-75.
    `subprotocols` lists the application protocols the server speaks, in its order of
    preference; the first one the client also offers is selected (RFC 6455 §4.2.2 item 5.5).
    `deflate`: permessage-deflate is on, with this policy: the first offer in
    Sec-WebSocket-Extensions that it can honour is accepted (RFC 7692 §5, §7.1) and answered;
    a header that does not follow RFC 6455 §9.1 is a 400. None: extensions are ignored.
    Draft-75/76 have no extensions.

    The host (in the answers of draft-75/76 and in `Upgrade.host`) is `request.host`: the
    authority of an absolute-form target, else the Host header (RFC 9112 §3.2.2).

    Raises HttpError with the status and reason for anything malformed (400 for a request
    with a body, too), and 403 when `allowed_origins` is given and the request's Origin is
    not in it (RFC 6455 §4.2.2: a server that does not wish to accept a connection answers
    e.g. 403 Forbidden).
    """
    if request.method != "GET":
        # RFC 6455 §4.1 item 2 / §4.2.1 item 1: "an HTTP/1.1 or higher GET request".
        raise HttpError(405, "a WebSocket upgrade must be a GET", (("Allow", "GET, HEAD"),))
    if request.version != "HTTP/1.1":
        raise HttpError(400, "a WebSocket upgrade needs HTTP/1.1")
    if request.has_body:
        # The opening handshake is a head alone (RFC 6455 §4.1) and what follows it is
        # frames, so a body announced by Content-Length or Transfer-Encoding (RFC 9112
        # §6.3) would be read as frames. Refused; the connection closes after the 400.
        raise HttpError(400, "a WebSocket handshake has no body")
    if not request.target.startswith("/"):
        raise HttpError(400, "the WebSocket resource must be an absolute path")
    host = request.host
    if not host or request.count("Host") > 1:
        raise HttpError(400, "missing or repeated Host header")
    if not request.has_token("Connection", "upgrade"):
        raise HttpError(400, "Connection header does not include Upgrade")
    origin = request.header("Origin") or request.header("Sec-WebSocket-Origin")
    if allowed_origins is not None and (origin or "").lower() not in allowed_origins:
        raise HttpError(403, f"origin {origin or '(none)'} is not allowed to join this chat")
    version = request.header("Sec-WebSocket-Version")
    key = request.header("Sec-WebSocket-Key")
    scheme = "wss" if secure else "ws"
    if version is not None:
        return _upgrade_rfc6455(request, version, key, host, origin, subprotocols, deflate)
    if key is not None:
        raise HttpError(400, "Sec-WebSocket-Key without Sec-WebSocket-Version")
    key1 = request.header("Sec-WebSocket-Key1")
    key2 = request.header("Sec-WebSocket-Key2")
    location = f"{scheme}://{host}{request.target}"
    if key1 is not None or key2 is not None:
        if key1 is None or key2 is None:
            raise HttpError(400, "draft-76 request needs both Sec-WebSocket-Key1 and -Key2")
        if request.count("Sec-WebSocket-Key1") != 1 or request.count("Sec-WebSocket-Key2") != 1:
            raise HttpError(400, "repeated Sec-WebSocket-Key1 or -Key2")
        challenge = legacy.challenge_response(key1, key2, request.body)
        protocol = request.header("Sec-WebSocket-Protocol")
        response = legacy.accept_response(76, origin or "null", location, protocol, challenge)
        return Upgrade(HIXIE76, response, request.target, host, origin)
    protocol = request.header("WebSocket-Protocol")
    response = legacy.accept_response(75, origin or "null", location, protocol)
    return Upgrade(HIXIE75, response, request.target, host, origin)


def select_subprotocol(request: Request, supported: tuple[str, ...]) -> str | None:
    """RFC 6455 §4.2.2 item 5.5: the first of `supported` that the client offered, or None."""
    offered = {part.strip() for part in (request.header("Sec-WebSocket-Protocol") or "").split(",")}
    return next((name for name in supported if name in offered), None)


def _upgrade_rfc6455(request: Request, version: str, key: str | None, host: str,
                     origin: str | None, subprotocols: tuple[str, ...] = (),
                     deflate: DeflatePolicy | None = None) -> Upgrade:
    if request.count("Sec-WebSocket-Version") != 1 or version.strip() != "13":
        # RFC 6455 §4.2.2 item 4: answer with the versions we speak.
        raise HttpError(426, f"unsupported WebSocket version {version!r}; this server speaks 13",
                        (("Sec-WebSocket-Version", "13"),))
    if key is None:
        raise HttpError(400, "missing Sec-WebSocket-Key")
    if request.count("Sec-WebSocket-Key") != 1:
        raise HttpError(400, "repeated Sec-WebSocket-Key")
    _check_key(key)
    chosen = select_subprotocol(request, subprotocols)
    # RFC 6455 §9.1: repeated Sec-WebSocket-Extensions headers are one list (`header` joins
    # them). RFC 7692 §5: the first acceptable permessage-deflate offer, or none.
    agreed = (negotiate(request.header("Sec-WebSocket-Extensions"), deflate)
              if deflate is not None else None)
    response = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        + (f"Sec-WebSocket-Protocol: {chosen}\r\n" if chosen else "")
        + (f"Sec-WebSocket-Extensions: {agreed.response}\r\n" if agreed else "")
        + "\r\n"
    ).encode("ascii")
    return Upgrade(RFC6455, response, request.target, host, origin, chosen, agreed)


REASONS = {
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    """The reason phrase for a status (RFC 9110 §15); "Error" for one without a name."""
    if status in REASONS:
        return REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(error: HttpError, head_only: bool = False) -> bytes:
    """An HTTP error response with the one-line reason as its body; the connection closes."""
    body = (error.reason + "\n").encode("utf-8")
    lines = [
        f"HTTP/1.1 {error.status} {reason_phrase(error.status)}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in error.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return head if head_only else head + body
