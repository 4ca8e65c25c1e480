"""Plain HTTP on the WebSocket port: the page, content types, and no way out of client/."""
from __future__ import annotations

from pathlib import Path

import pytest

from websocket.chat.pages import keep_alive, resolve, serve
from websocket.errors import HttpError
from websocket.protocol.handshake import Request, parse_request


@pytest.fixture
def root(tmp_path: Path) -> Path:
    client = tmp_path / "client"
    client.mkdir()
    (client / "index.html").write_text("<!doctype html><title>chat</title>")
    (client / "chat.js").write_text("1;")
    (client / "sub").mkdir()
    (client / "sub" / "index.html").write_text("sub")
    (tmp_path / "secret.txt").write_text("secret")
    (client / "link").symlink_to(tmp_path / "secret.txt")
    return client


def get(target: str, method: str = "GET", version: str = "HTTP/1.1",
        headers: tuple[tuple[str, str], ...] = ()) -> Request:
    return Request(method, target, version, (("Host", "h"),) + headers)


def test_index_at_slash(root: Path) -> None:
    response = serve(get("/"), root)
    assert response.data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/html; charset=utf-8\r\n" in response.data
    assert response.data.endswith(b"<!doctype html><title>chat</title>")
    assert response.keep_alive


def test_content_types(root: Path) -> None:
    assert b"Content-Type: text/javascript" in serve(get("/chat.js?v=1"), root).data
    assert serve(get("/sub/"), root).data.endswith(b"sub")


def test_head_has_headers_only(root: Path) -> None:
    response = serve(get("/", "HEAD"), root)
    assert b"Content-Length: 34\r\n" in response.data
    assert response.data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("target", [
    "/nope.html", "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
    "/sub/../../secret.txt", "//etc/passwd", "/etc/passwd", "/link", "/./index.html/..",
])
def test_nothing_outside_client_is_served(root: Path, target: str) -> None:
    with pytest.raises(HttpError) as info:
        resolve(root, target)
    assert info.value.status == 404


@pytest.mark.parametrize("target", ["index.html", "http://h/", "/%00", "/a%5c..%5csecret",
                                    "/%ff"])
def test_malformed_paths_are_400(root: Path, target: str) -> None:
    with pytest.raises(HttpError) as info:
        resolve(root, target)
    assert info.value.status == 400


def test_other_methods_are_405(root: Path) -> None:
    with pytest.raises(HttpError) as info:
        serve(get("/", "POST"), root)
    assert info.value.status == 405
    assert ("Allow", "GET, HEAD") in info.value.headers


def test_keep_alive_rules() -> None:
    assert keep_alive(get("/"))
    assert not keep_alive(get("/", headers=(("Connection", "close"),)))
    assert not keep_alive(get("/", version="HTTP/1.0"))
    assert keep_alive(get("/", version="HTTP/1.0", headers=(("Connection", "Keep-Alive"),)))


# -- RFC 9112 §3.2 (the absolute form, Host) on parsed bytes -------------------------------

def parsed(data: bytes) -> tuple[Request, int]:
    """Parse `data` whole and one byte at a time; both must agree."""
    whole = parse_request(data)
    assert whole is not None
    buf = bytearray()
    for byte in data:
        buf.append(byte)
        trickled = parse_request(buf)
        if trickled is not None:
            assert trickled == whole
            return whole
    raise AssertionError("never complete when fed one byte at a time")


@pytest.mark.parametrize("target, ending", [
    ("http://h/", b"<!doctype html><title>chat</title>"),
    ("http://h", b"<!doctype html><title>chat</title>"),  # empty path: "/"
    ("http://h:8080/chat.js?v=1", b"1;"),
    ("HTTPS://other.example/sub/", b"sub"),
])
def test_the_absolute_form_serves_the_same_files(root: Path, target: str, ending: bytes) -> None:
    request, _ = parsed(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    response = serve(request, root)
    assert response.status == 200 and response.data.endswith(ending)


@pytest.mark.parametrize("data, reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "missing Host header"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", "more than one Host header"),
    (b"GET / HTTP/1.1\r\nHost: h h\r\n\r\n", "invalid Host header"),
    (b"GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", "the authority form is for CONNECT, not GET"),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", "the asterisk form is for OPTIONS, not GET"),
])
def test_page_requests_follow_the_same_rules(data: bytes, reason: str) -> None:
    for fed in range(len(data)):  # one byte at a time: decided by the last one
        assert parse_request(data[:fed]) is None
    with pytest.raises(HttpError) as info:
        parse_request(data)
    assert (info.value.status, info.value.reason) == (400, reason)


# -- requests with a body (RFC 9112 §6, §11.2) ---------------------------------------------

SMUGGLED = b"GET /chat.js HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("framing, body", [
    (f"Content-Length: {len(SMUGGLED)}", SMUGGLED),
    ("Content-Length: 100000", b""),  # answered without waiting for the body
    ("Transfer-Encoding: chunked", b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)),
])
def test_a_body_is_answered_then_the_connection_closes(root: Path, method: str, framing: str,
                                                       body: bytes) -> None:
    # RFC 9112 §11.2: the body is not ours to read, so it must never pass for a request.
    head = f"{method} / HTTP/1.1\r\nHost: h\r\n{framing}\r\n\r\n".encode()
    request, consumed = parsed(head + body)
    assert consumed == len(head) and request.has_body
    response = serve(request, root)
    assert response.status == 200 and not response.keep_alive
    assert b"\r\nConnection: close\r\n" in response.data
    assert b"Connection: keep-alive" not in response.data


def test_content_length_zero_keeps_the_connection(root: Path) -> None:
    request, _ = parsed(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n" + SMUGGLED)
    response = serve(request, root)
    assert response.keep_alive and b"\r\nConnection: keep-alive\r\n" in response.data


def test_a_body_ends_even_an_http_1_0_keep_alive(root: Path) -> None:
    request, _ = parsed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n"
                        b"\r\nabc")
    assert not keep_alive(request) and not serve(request, root).keep_alive


def test_keep_alive_is_off_for_any_body() -> None:
    assert not keep_alive(get("/", headers=(("Content-Length", "1"),)))
    assert not keep_alive(get("/", headers=(("Transfer-Encoding", "chunked"),)))
    assert keep_alive(get("/", headers=(("Content-Length", "0"),)))


def test_other_methods_with_a_body_are_still_405(root: Path) -> None:
    request, _ = parsed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    with pytest.raises(HttpError) as info:
        serve(request, root)
    assert info.value.status == 405
