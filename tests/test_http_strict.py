"""RFC 9112 strictness over real sockets: each lax-parsing finding, reproduced and refused.

Every bad request is answered with its status and a one-line reason and the connection is
closed, nothing sent after it (a body, a smuggled request) is ever answered, and a WebSocket
user on the same server keeps chatting between and after the bad requests.
"""
from __future__ import annotations

import hashlib
import re
import struct

import pytest
from conftest import ServerProcess
from wsclient import Client, draft76_request, frame

SMUGGLED = b"GET /chat.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
QUICK = 5.0  # read timeout: well under the 10 s handshake timeout, so a 408 would fail


def chatting(user: Client, text: str) -> None:
    """The user's message comes back to it (echo to all): the server carries on."""
    user.send_text(text)
    assert user.recv_message() == text


def answered_then_closed(port: int, data: bytes, head_only: bool = False,
                         ) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, read one response, and check that the server then closes the connection
    without sending anything more (a second response would be a smuggled request's)."""
    with Client(port, timeout=QUICK) as client:
        client.send(data)
        if head_only:
            head = client.read_until(b"\r\n\r\n").decode("latin-1")
            status = int(head.split(" ", 2)[1])
            headers = dict(line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if line)
            body = b""
        else:
            status, headers, body = client.http_response()
        rest = client.read_to_eof()
    assert rest == b"", f"more after the response: {rest[:200]!r}"
    assert headers["connection"] == "close"
    return status, headers, body


def refused(server: ServerProcess, data: bytes, status: int, reason: str) -> None:
    """`data` gets `status` with exactly `reason` as its one-line body, then a close."""
    got, _, body = answered_then_closed(server.port, data)
    assert (got, body) == (status, reason.encode() + b"\n")
    server.wait_for_log(rf"HTTP {status}: {re.escape(reason)}$")


def request(*headers: str, line: str = "GET / HTTP/1.1") -> bytes:
    return "".join(f"{part}\r\n" for part in (line, *headers)).encode("latin-1") + b"\r\n"


def upgrade_request(port: int, *extra: str, host: tuple[str, ...] | None = None) -> bytes:
    """An RFC 6455 upgrade request as a browser sends it, plus `extra` header lines;
    `host` replaces its Host line (with none, or with several)."""
    hosts = (f"Host: 127.0.0.1:{port}",) if host is None else host
    return request(*hosts, "Upgrade: websocket", "Connection: Upgrade",
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                   f"Origin: http://127.0.0.1:{port}", *extra)


# -- finding 1: a GET's body was parsed as the next request ---------------------------------

@pytest.mark.parametrize("framing, body", [
    (f"Content-Length: {len(SMUGGLED)}", SMUGGLED),
    ("Transfer-Encoding: chunked", b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)),
    ("Content-Length: 1000000", SMUGGLED),  # the rest of the body never comes
], ids=["content-length", "chunked", "body-not-all-sent"])
def test_a_get_body_is_never_taken_for_a_request(chat_server: ServerProcess, framing: str,
                                                 body: bytes) -> None:
    user = Client(chat_server.port).handshake()
    data = request("Host: 127.0.0.1", framing) + body
    status, headers, page = answered_then_closed(chat_server.port, data)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"<html" in page
    chatting(user, "after a GET with a body")
    # HEAD too: the head of the page, Connection: close, and no second answer.
    status, headers, _ = answered_then_closed(
        chat_server.port, data.replace(b"GET / ", b"HEAD / ", 1), head_only=True)
    assert status == 200 and headers["content-type"].startswith("text/html")
    chatting(user, "after a HEAD with a body")


def test_content_length_zero_keeps_the_connection(chat_server: ServerProcess) -> None:
    with Client(chat_server.port, timeout=QUICK) as client:
        client.send(request("Host: 127.0.0.1", "Content-Length: 0") + SMUGGLED)
        assert client.http_response()[0] == 200
        status, headers, _ = client.http_response()
        assert status == 200 and headers["content-type"].startswith("text/css")


def test_an_upgrade_with_a_body_is_400(chat_server: ServerProcess) -> None:
    user = Client(chat_server.port).handshake()
    smuggled_frame = frame(0x1, b"smuggled into the chat")
    for framing in (f"Content-Length: {len(smuggled_frame)}", "Transfer-Encoding: chunked"):
        data = upgrade_request(chat_server.port, framing) + smuggled_frame
        refused(chat_server, data, 400, "a WebSocket handshake has no body")
        chatting(user, "nothing was smuggled in")  # the first message it gets is its own


# -- finding 2: duplicate or conflicting Content-Length, and CL with TE ----------------------

@pytest.mark.parametrize("headers, reason", [
    (("Content-Length: 0", "Content-Length: 0"), "more than one Content-Length header"),
    (("Content-Length: 45", "Content-Length: 0"), "more than one Content-Length header"),
    (("Content-Length: 45, 45",), "invalid Content-Length"),
    (("Content-Length: abc",), "invalid Content-Length"),
    (("Content-Length: 45", "Transfer-Encoding: chunked"),
     "both Content-Length and Transfer-Encoding"),
    (("Transfer-Encoding: chunked", "Content-Length: 45"),
     "both Content-Length and Transfer-Encoding"),
    (("Transfer-Encoding: gzip",), "Transfer-Encoding does not end with chunked"),
], ids=["cl-cl-equal", "cl-cl", "cl-list", "cl-invalid", "cl-te", "te-cl", "te-not-chunked"])
def test_ambiguous_framing_is_400(chat_server: ServerProcess, headers: tuple[str, ...],
                                  reason: str) -> None:
    user = Client(chat_server.port).handshake()
    refused(chat_server, request("Host: 127.0.0.1", *headers) + b"0\r\n\r\n" + SMUGGLED,
            400, reason)
    chatting(user, "after " + reason)


def test_transfer_encoding_in_http_1_0_is_400(chat_server: ServerProcess) -> None:
    user = Client(chat_server.port).handshake()
    data = request("Transfer-Encoding: chunked", line="GET / HTTP/1.0") + b"0\r\n\r\n" + SMUGGLED
    refused(chat_server, data, 400, "Transfer-Encoding in an HTTP/1.0 request")
    chatting(user, "after an HTTP/1.0 chunked request")


# -- finding 3: a request without Host got 200 -------------------------------------------------

@pytest.mark.parametrize("hosts, reason", [
    ((), "missing Host header"),
    (("Host: 127.0.0.1", "Host: 127.0.0.1"), "more than one Host header"),
    (("Host: 127.0.0.1", "Host: evil.example"), "more than one Host header"),
    (("Host: bad host",), "invalid Host header"),
    (("Host:",), "invalid Host header"),
], ids=["missing", "twice", "two-different", "invalid", "empty"])
def test_host_is_required_single_and_valid(chat_server: ServerProcess, hosts: tuple[str, ...],
                                           reason: str) -> None:
    user = Client(chat_server.port).handshake()
    refused(chat_server, request(*hosts, "Connection: close"), 400, reason)  # the page
    chatting(user, "after a page request: " + reason)
    refused(chat_server, upgrade_request(chat_server.port, host=hosts), 400, reason)  # upgrade
    chatting(user, "after an upgrade request: " + reason)


def test_http_1_0_without_host_still_gets_the_page(chat_server: ServerProcess) -> None:
    status, _, body = answered_then_closed(chat_server.port, request(line="GET / HTTP/1.0"))
    assert status == 200 and b"<html" in body


# -- finding 4: the absolute form got 400 ------------------------------------------------------

def test_absolute_form_gets_the_page(chat_server: ServerProcess) -> None:
    port = chat_server.port
    host = f"Host: 127.0.0.1:{port}"
    with Client(port, timeout=QUICK) as client:
        client.send(request(host, line=f"GET http://127.0.0.1:{port}/ HTTP/1.1")
                    + request(host, line=f"GET http://127.0.0.1:{port}/chat.css?v=2 HTTP/1.1"))
        status, headers, body = client.http_response()
        assert status == 200 and b"<html" in body and headers["connection"] == "keep-alive"
        status, headers, _ = client.http_response()
        assert status == 200 and headers["content-type"].startswith("text/css")


def test_absolute_form_upgrade_joins_the_chat(chat_server: ServerProcess) -> None:
    port = chat_server.port
    user = Client(port).handshake()
    # `handshake` checks the 101 and the accept value; the target is the absolute form.
    with Client(port).handshake(f"ws://127.0.0.1:{port}/") as new:
        new.send_text("joined by the absolute form")
        assert new.recv_message() == "joined by the absolute form"
        assert user.recv_message() == "joined by the absolute form"
    chatting(user, "still here")


def test_absolute_form_host_wins_over_the_host_header(chat_server: ServerProcess) -> None:
    # RFC 9112 §3.2.2: draft-75's Location is built from the target's host, not Host's.
    with Client(chat_server.port) as old:
        old.send(request("Upgrade: WebSocket", "Connection: Upgrade", "Host: other.example",
                         "Origin: http://chat.example",
                         line="GET ws://chat.example:8765/demo HTTP/1.1"))
        head = old.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"\r\nWebSocket-Location: ws://chat.example:8765/demo\r\n" in head
    chat_server.wait_for_log(r"joined: draft-75 \(hixie-75\), resource /demo")


@pytest.mark.parametrize("target, reason", [
    ("127.0.0.1:80", "the authority form is for CONNECT, not GET"),
    ("*", "the asterisk form is for OPTIONS, not GET"),
    ("ftp://127.0.0.1/", "unsupported URI scheme in request target: ftp"),
    ("http://user@127.0.0.1/", "user information in the request target"),
])
def test_other_target_forms_are_400(chat_server: ServerProcess, target: str,
                                    reason: str) -> None:
    user = Client(chat_server.port).handshake()
    refused(chat_server, request("Host: 127.0.0.1", line=f"GET {target} HTTP/1.1"), 400, reason)
    chatting(user, "after " + target)


# -- finding 5: bare-LF line endings hung until the 408 ------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"GET / HTTP/1.1\nHost: 127.0.0.1\n\n", "bare LF"),
    (b"GET / HTTP/1.1\n", "bare LF"),  # refused before the head is complete
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\n", "bare LF"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\rX", "bare CR"),
    (b"GET / HTTP/1.1\r\nUpgrade: websocket\nConnection: Upgrade\r\n\r\n", "bare LF"),
], ids=["all-lf", "first-line-only", "blank-line", "bare-cr", "upgrade"])
def test_bare_line_endings_are_400_at_once(chat_server: ServerProcess, data: bytes,
                                           reason: str) -> None:
    user = Client(chat_server.port).handshake()
    refused(chat_server, data, 400, f"{reason} in the request head: lines must end with CRLF")
    chatting(user, "after " + reason)


def _draft76_key(number: int, spaces: int) -> str:
    digits = str(number * spaces)
    return digits[:1] + " " * spaces + digits[1:]


def test_draft76_key3_may_hold_cr_and_lf(chat_server: ServerProcess) -> None:
    # The 8 bytes after the blank line are key3, not a line: any byte goes.
    user = Client(chat_server.port).handshake()
    key3 = b"\n\r\r\n\n\r\n\r"
    data = draft76_request(chat_server.port, key1=_draft76_key(123456, 2),
                           key2=_draft76_key(654321, 3), key3=key3)
    with Client(chat_server.port) as old:
        old.send(data)
        assert old.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        assert old.read_exactly(16) == hashlib.md5(struct.pack(">II", 123456, 654321)
                                                   + key3).digest()
        old.send_hixie("from 2010, with CR and LF in key3")
        assert old.recv_hixie() == "from 2010, with CR and LF in key3"
        assert user.recv_message() == "from 2010, with CR and LF in key3"
    chatting(user, "still here")
