"""The opening handshake on bytes: incremental parsing, detection, RFC 6455 §4.2 answers."""
from __future__ import annotations

import pytest

from websocket.errors import HttpError
from websocket.protocol.handshake import (
    HIXIE75,
    HIXIE76,
    MAX_REQUEST_SIZE,
    RFC6455,
    Request,
    accept_key,
    error_response,
    parse_request,
    upgrade,
)

RFC_REQUEST = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n")


def request(data: bytes) -> Request:
    parsed = parse_request(data)
    assert parsed is not None
    return parsed[0]


def rfc(**changes: str | None) -> Request:
    """The RFC's §1.2 request with some headers replaced (None removes one)."""
    headers = dict(request(RFC_REQUEST).headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return Request("GET", "/chat", "HTTP/1.1", tuple(headers.items()))


def test_rfc_1_3_accept_key() -> None:
    # Test vector from RFC 6455 §1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_rfc_request_is_answered_with_101_and_the_accept_key() -> None:
    answer = upgrade(request(RFC_REQUEST))
    assert answer.protocol == RFC6455
    assert answer.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer.response
    assert answer.response.endswith(b"\r\n\r\n")
    assert (answer.resource, answer.host, answer.origin) == (
        "/chat", "server.example.com", "http://example.com")


def test_request_fed_byte_by_byte_completes_only_at_the_end() -> None:
    for cut in range(len(RFC_REQUEST)):
        assert parse_request(RFC_REQUEST[:cut]) is None
    parsed = parse_request(RFC_REQUEST + b"\x81\x85trailing")
    assert parsed is not None and parsed[1] == len(RFC_REQUEST)  # frames after it are left


def test_headers_are_case_insensitive_and_tokens_are_lists() -> None:
    data = RFC_REQUEST.replace(b"Connection: Upgrade", b"connection: keep-alive, Upgrade")
    data = data.replace(b"Upgrade: websocket", b"UPGRADE: WebSocket")
    assert upgrade(request(data)).protocol == RFC6455


@pytest.mark.parametrize("changes, status, reason", [
    ({"Sec-WebSocket-Version": "8"}, 426, "version"),
    ({"Sec-WebSocket-Key": None}, 400, "missing Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": "not base64!"}, 400, "base64"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, "16 bytes"),
    ({"Sec-WebSocket-Version": None}, 400, "without Sec-WebSocket-Version"),
    ({"Host": None}, 400, "Host"),
    ({"Connection": "keep-alive"}, 400, "Connection"),
])
def test_bad_upgrades_get_a_status_and_a_reason(changes: dict[str, str | None], status: int,
                                                 reason: str) -> None:
    with pytest.raises(HttpError, match=reason) as info:
        upgrade(rfc(**changes))
    assert info.value.status == status


def test_426_names_the_version_we_speak() -> None:
    with pytest.raises(HttpError) as info:
        upgrade(rfc(**{"Sec-WebSocket-Version": "8"}))
    response = error_response(info.value)
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_upgrade_must_be_get_over_http_1_1() -> None:
    with pytest.raises(HttpError) as info:
        upgrade(request(RFC_REQUEST.replace(b"GET", b"POST", 1)))
    assert info.value.status == 405
    with pytest.raises(HttpError) as info:
        upgrade(request(RFC_REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0", 1)))
    assert info.value.status == 400


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"get / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / SPDY\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
])
def test_malformed_requests_are_400(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_request(data)
    assert info.value.status == status


def test_size_limit_is_enforced_before_the_blank_line() -> None:
    assert parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 100, max_size=200) is None
    with pytest.raises(HttpError) as info:
        parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 300, max_size=200)
    assert info.value.status == 431


def test_too_many_headers() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(HttpError) as info:
        parse_request(data)
    assert info.value.status == 431


def test_repeated_key_is_400() -> None:
    again = b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    data = RFC_REQUEST.replace(b"\r\n\r\n", again)
    with pytest.raises(HttpError) as info:
        upgrade(request(data))
    assert info.value.status == 400


def test_generation_is_chosen_from_the_headers() -> None:
    draft76 = (b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nUpgrade: WebSocket\r\n"
               b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n"
               b"\r\n^n:ds[4U")
    assert upgrade(request(draft76)).protocol == HIXIE76
    draft75 = (b"GET /demo HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
               b"Host: example.com\r\nOrigin: http://example.com\r\n\r\n")
    answer = upgrade(request(draft75))
    assert answer.protocol == HIXIE75
    assert b"WebSocket-Location: ws://example.com/demo\r\n" in answer.response
    assert b"WebSocket-Origin: http://example.com\r\n" in answer.response


def test_draft76_request_waits_for_the_8_bytes_after_the_blank_line() -> None:
    head = (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key1: 1 0\r\nSec-WebSocket-Key2: 1 0\r\n\r\n")
    for extra in range(8):
        assert parse_request(head + b"12345678"[:extra]) is None
    parsed = parse_request(head + b"12345678" + b"\x00hi\xff")
    assert parsed is not None
    assert parsed[0].body == b"12345678" and parsed[1] == len(head) + 8


def test_error_response_has_a_one_line_reason_and_closes() -> None:
    response = error_response(HttpError(400, "missing Sec-WebSocket-Key"))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert body == b"missing Sec-WebSocket-Key\n"
    assert b"Content-Length: %d" % len(body) in head


def test_origin_not_allowed_is_403() -> None:
    allowed = frozenset({"http://example.com"})
    assert upgrade(rfc(), allowed_origins=allowed).protocol == RFC6455
    with pytest.raises(HttpError) as info:
        upgrade(rfc(Origin="http://evil.example"), allowed_origins=allowed)
    assert info.value.status == 403
    with pytest.raises(HttpError):
        upgrade(rfc(Origin=None), allowed_origins=allowed)


def test_subprotocol_is_the_servers_first_choice_among_the_offered() -> None:
    offered = rfc(**{"Sec-WebSocket-Protocol": "superchat, chat"})
    answer = upgrade(offered, subprotocols=("chat.v2", "chat", "superchat"))
    assert answer.subprotocol == "chat"
    assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in answer.response
    none = upgrade(offered, subprotocols=("other",))
    assert none.subprotocol is None and b"Sec-WebSocket-Protocol" not in none.response
    assert b"Sec-WebSocket-Protocol" not in upgrade(rfc(), subprotocols=("chat",)).response


# -- RFC 9112 strictness: each rule in one chunk and one byte at a time ---------------------

def page(*headers: str, line: str = "GET / HTTP/1.1") -> bytes:
    """A request head: the request line, the header lines given, and the blank line."""
    return "".join(f"{part}\r\n" for part in (line, *headers)).encode("latin-1") + b"\r\n"


def parse_bytewise(data: bytes, max_size: int = MAX_REQUEST_SIZE) -> tuple[Request, int]:
    """Parse `data` whole and fed one byte at a time: both must give the same request, and
    only once every byte of it has arrived."""
    whole = parse_request(data, max_size)
    assert whole is not None
    for fed in range(whole[1]):
        assert parse_request(data[:fed], max_size) is None, f"done after {fed} bytes"
    assert parse_request(data[:whole[1]], max_size) == whole
    return whole


def assert_fails_with(data: bytes, status: int, reason: str, at: int | None = None,
                      max_size: int = MAX_REQUEST_SIZE) -> None:
    """`data` fails with `status` and exactly `reason`, whole and fed one byte at a time;
    fed bytewise it fails once `at` bytes have arrived (by default: all of them)."""
    with pytest.raises(HttpError) as whole:
        parse_request(data, max_size)
    assert (whole.value.status, whole.value.reason) == (status, reason)
    fed = 0
    with pytest.raises(HttpError) as trickled:
        for fed in range(1, len(data) + 1):
            assert parse_request(data[:fed], max_size) is None
    assert (trickled.value.status, trickled.value.reason) == (status, reason)
    assert fed == (len(data) if at is None else at)


def test_size_limit_is_the_same_fed_byte_by_byte() -> None:
    # The 20 bytes before the blank line are exactly the limit: accepted, in any pieces
    # (a trickled head used to get 431 while its blank line was arriving).
    data = b"GET / HTTP/1.0\r\nX:ab\r\n\r\n"
    assert parse_bytewise(data, max_size=20)[1] == len(data)
    longer = data.replace(b"ab", b"abc")
    assert_fails_with(longer, 431, "request head larger than 20 bytes", at=21, max_size=20)
    # A CRLF straddling the limit may still begin the blank line: 431 once it does not.
    assert_fails_with(b"GET / HTTP/1.0\r\nX:ab\r\nY", 431, "request head larger than 20 bytes",
                      at=23, max_size=20)


def test_tls_is_recognised_from_the_first_byte_even_with_a_blank_line() -> None:
    assert_fails_with(b"\x16\x03\x01\r\n\r\n", 400, "TLS handshake on a plain ws:// port", 1)


BARE_LF = "bare LF in the request head: lines must end with CRLF"
BARE_CR = "bare CR in the request head: lines must end with CRLF"


@pytest.mark.parametrize("data, reason, at", [
    (b"GET / HTTP/1.1\nHost: x\n\n", BARE_LF, 15),  # all LF: refused at the first one
    (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", BARE_LF, 24),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", BARE_LF, 26),  # the blank line
    (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", BARE_LF, 1),
    (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", BARE_CR, 25),  # known at the byte after CR
    (b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", BARE_CR, 25),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", BARE_CR, 27),
    (b"GET / HTTP/1.1\r\nX: a\rb", BARE_CR, 22),  # the head need not be complete
    (b"GET / HTTP/1.1\r\nX: a\n", BARE_LF, 21),
])
def test_bare_lf_or_cr_is_400_as_soon_as_it_arrives(data: bytes, reason: str, at: int) -> None:
    # RFC 9112 §2.2: no bare CR, and a LF alone is not taken for a line end.
    assert_fails_with(data, 400, reason, at)


def test_a_cr_at_the_end_waits_for_its_lf() -> None:
    assert parse_request(b"GET / HTTP/1.1\r") is None
    assert parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r") is None


def test_draft76_key3_may_hold_any_cr_and_lf() -> None:
    # The 8 bytes after the blank line are draft-76's key3, not a line.
    head = (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key1: 1 0\r\nSec-WebSocket-Key2: 1 0\r\n\r\n")
    request, consumed = parse_bytewise(head + b"\n\r\r\n\n\r\n\r" + b"\x81")
    assert request.body == b"\n\r\r\n\n\r\n\r" and consumed == len(head) + 8
    assert upgrade(request).protocol == HIXIE76


@pytest.mark.parametrize("data, reason", [
    (page(), "missing Host header"),
    (page("Upgrade: websocket", "Connection: Upgrade"), "missing Host header"),
    (page("Host: a", "Host: a"), "more than one Host header"),
    (page("Host: a", "host: b"), "more than one Host header"),
    (page("Host: a b"), "invalid Host header"),
    (page("Host:"), "invalid Host header"),  # http(s)/ws(s) URIs have a non-empty host
    (page("Host: a/b"), "invalid Host header"),
    (page("Host: a@b"), "invalid Host header"),
    (page("Host: a:b"), "invalid Host header"),
    (page("Host: a:80:80"), "invalid Host header"),
    (page("Host: [::g]"), "invalid Host header"),
    (page("Host: [fe80::1%eth0]"), "invalid Host header"),
    (page("Host: ::1"), "invalid Host header"),
    (page("Host: x", "Host: y", line="GET http://x/ HTTP/1.1"), "more than one Host header"),
    (page("Host: a b", line="GET http://x/ HTTP/1.0"), "invalid Host header"),
])
def test_host_is_required_single_and_valid(data: bytes, reason: str) -> None:
    # RFC 9112 §3.2: 400 for HTTP/1.1 without Host, and for any request with more than one
    # Host line or an invalid one; for pages and upgrades alike.
    assert_fails_with(data, 400, reason)


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]",
                                  "[::1]:8080", "[v1.x]", "xn--bcher-kva.example", "a-b_c~d",
                                  "%41", "EXAMPLE.COM"])
def test_valid_hosts(host: str) -> None:
    request, _ = parse_bytewise(page(f"Host: {host}"))
    assert request.host == host


def test_http_1_0_needs_no_host() -> None:
    request, _ = parse_bytewise(page(line="GET / HTTP/1.0"))
    assert request.host is None


def test_upgrade_with_missing_or_repeated_host_is_400_in_parsing() -> None:
    without = RFC_REQUEST.replace(b"Host: server.example.com\r\n", b"")
    assert_fails_with(without, 400, "missing Host header")
    twice = RFC_REQUEST.replace(b"Host: server.example.com\r\n",
                                b"Host: server.example.com\r\nHost: server.example.com\r\n")
    assert_fails_with(twice, 400, "more than one Host header")


@pytest.mark.parametrize("target, origin_form, host", [
    ("http://example.com/chat?room=1", "/chat?room=1", "example.com"),
    ("http://example.com:8080/", "/", "example.com:8080"),
    ("http://example.com", "/", "example.com"),  # §3.2.1: an empty path is "/"
    ("http://example.com?q", "/?q", "example.com"),
    ("HTTPS://Example.com/a", "/a", "Example.com"),
    ("ws://[::1]:9000/chat", "/chat", "[::1]:9000"),
    ("wss://example.com/", "/", "example.com"),
])
def test_absolute_form_becomes_origin_form_with_the_targets_host(target: str, origin_form: str,
                                                                 host: str) -> None:
    # RFC 9112 §3.2.2: a server MUST accept the absolute form, and MUST ignore Host for it.
    request, _ = parse_bytewise(page("Host: ignored.example", line=f"GET {target} HTTP/1.1"))
    assert (request.target, request.host) == (origin_form, host)
    assert request.header("Host") == "ignored.example"


def test_absolute_form_upgrade_answers_with_the_targets_host() -> None:
    data = RFC_REQUEST.replace(b"GET /chat ", b"GET http://server.example.com:81/chat ")
    data = data.replace(b"Host: server.example.com", b"Host: elsewhere.example")
    answer = upgrade(parse_bytewise(data)[0])
    assert (answer.protocol, answer.resource, answer.host) == (
        RFC6455, "/chat", "server.example.com:81")
    draft75 = page("Upgrade: WebSocket", "Connection: Upgrade", "Host: elsewhere.example",
                   line="GET ws://example.com:81/demo HTTP/1.1")
    answer = upgrade(parse_bytewise(draft75)[0])
    assert b"WebSocket-Location: ws://example.com:81/demo\r\n" in answer.response


@pytest.mark.parametrize("line, reason", [
    ("GET example.com:80 HTTP/1.1", "the authority form is for CONNECT, not GET"),
    ("GET * HTTP/1.1", "the asterisk form is for OPTIONS, not GET"),
    ("HEAD * HTTP/1.1", "the asterisk form is for OPTIONS, not HEAD"),
    ("GET ftp://example.com/ HTTP/1.1", "unsupported URI scheme in request target: ftp"),
    ("GET http://user@example.com/ HTTP/1.1", "user information in the request target"),
    ("GET http:///chat HTTP/1.1", "invalid host in the request target"),
    ("GET http://a b/ HTTP/1.1", "malformed request line"),
    ("GET http://a%zz/ HTTP/1.1", "invalid host in the request target"),
    ("GET index.html HTTP/1.1", "malformed request target"),
    ("CONNECT / HTTP/1.1", "CONNECT needs a host:port target"),
])
def test_other_target_forms_are_400(line: str, reason: str) -> None:
    assert_fails_with(page("Host: x", line=line), 400, reason)


def test_asterisk_and_authority_forms_parse_for_their_methods() -> None:
    assert parse_bytewise(page("Host: x", line="OPTIONS * HTTP/1.1"))[0].target == "*"
    connect = page("Host: x", line="CONNECT example.com:443 HTTP/1.1")
    assert parse_bytewise(connect)[0].target == "example.com:443"


@pytest.mark.parametrize("headers, reason", [
    (("Content-Length: 5", "Content-Length: 5"), "more than one Content-Length header"),
    (("Content-Length: 5", "content-length: 6"), "more than one Content-Length header"),
    (("Content-Length: 5, 5",), "invalid Content-Length"),
    (("Content-Length: 5,",), "invalid Content-Length"),
    (("Content-Length:",), "invalid Content-Length"),
    (("Content-Length: -1",), "invalid Content-Length"),
    (("Content-Length: +5",), "invalid Content-Length"),
    (("Content-Length: 0x5",), "invalid Content-Length"),
    (("Content-Length: 5 5",), "invalid Content-Length"),
    (("Content-Length: \xb9",), "invalid Content-Length"),  # '¹': str.isdigit() says yes
    (("Content-Length: 5", "Transfer-Encoding: chunked"),
     "both Content-Length and Transfer-Encoding"),
    (("Transfer-Encoding: chunked", "Content-Length: 0"),
     "both Content-Length and Transfer-Encoding"),
    (("Transfer-Encoding: gzip",), "Transfer-Encoding does not end with chunked"),
    (("Transfer-Encoding: chunked, gzip",), "Transfer-Encoding does not end with chunked"),
    (("Transfer-Encoding: chunked", "Transfer-Encoding: gzip"),
     "Transfer-Encoding does not end with chunked"),
    (("Transfer-Encoding:",), "Transfer-Encoding does not end with chunked"),
    (("Transfer-Encoding: xchunked",), "Transfer-Encoding does not end with chunked"),
])
def test_ambiguous_body_framing_is_400(headers: tuple[str, ...], reason: str) -> None:
    # RFC 9112 §6.1, §6.3: one valid Content-Length, or Transfer-Encoding ending in chunked.
    assert_fails_with(page("Host: x", *headers), 400, reason)


def test_transfer_encoding_in_http_1_0_is_400() -> None:
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    for extra in ((), ("Content-Length: 5",)):
        assert_fails_with(page("Transfer-Encoding: chunked", *extra, line="GET / HTTP/1.0"),
                          400, "Transfer-Encoding in an HTTP/1.0 request")


@pytest.mark.parametrize("headers, has_body", [
    ((), False),
    (("Content-Length: 0",), False),
    (("Content-Length: 000",), False),
    (("Content-Length: 1",), True),
    (("Content-Length: 0010",), True),
    (("Transfer-Encoding: chunked",), True),
    (("Transfer-Encoding: Chunked",), True),
    (("Transfer-Encoding: gzip, chunked",), True),
    (("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"), True),
    (("Transfer-Encoding: , chunked;x=1",), True),
])
def test_has_body(headers: tuple[str, ...], has_body: bool) -> None:
    data = page("Host: x", *headers)
    request, consumed = parse_bytewise(data + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.has_body is has_body
    assert consumed == len(data)  # a body is never consumed: the caller closes instead


@pytest.mark.parametrize("extra", ["Content-Length: 5", "Transfer-Encoding: chunked"])
def test_upgrade_with_a_body_is_400(extra: str) -> None:
    data = RFC_REQUEST.replace(b"\r\n\r\n", f"\r\n{extra}\r\n\r\n".encode())
    with pytest.raises(HttpError) as info:
        upgrade(parse_bytewise(data)[0])
    assert (info.value.status, info.value.reason) == (400, "a WebSocket handshake has no body")
    zero = RFC_REQUEST.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
    assert upgrade(parse_bytewise(zero)[0]).protocol == RFC6455


def test_draft76_with_a_content_length_is_400() -> None:
    head = (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key1: 1 0\r\nSec-WebSocket-Key2: 1 0\r\nContent-Length: 8\r\n\r\n")
    with pytest.raises(HttpError) as info:
        upgrade(parse_bytewise(head + b"12345678")[0])
    assert info.value.status == 400


def test_a_body_may_hold_any_cr_and_lf() -> None:
    data = page("Host: x", "Content-Length: 5")  # the body is not ours to read as lines
    request, consumed = parse_bytewise(data + b"a\nb\rc")
    assert consumed == len(data) and request.has_body


def test_has_body_on_a_request_built_by_hand() -> None:
    assert not rfc().has_body
    assert rfc(**{"Content-Length": "0"}).has_body is False
    assert rfc(**{"Content-Length": "12"}).has_body
    assert rfc(**{"Content-Length": "bogus"}).has_body  # unparsed: assume the worst
    assert rfc(**{"Content-Length": ""}).has_body
    assert rfc(**{"Transfer-Encoding": "chunked"}).has_body
