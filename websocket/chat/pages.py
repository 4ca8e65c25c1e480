"""Plain HTTP on the WebSocket port: the chat page from `client/`, and nothing else.

The page and the socket share one address, so the page can never disagree with the server
about where to connect (the 2010 article's most common failure). GET and HEAD only; every
path is resolved inside the client directory and anything that would leave it is a 404.
Reads files, never sockets: the loop sends the bytes this returns.

Request bodies are never read. A GET or HEAD that announces one is answered and then the
connection is closed (`Response.keep_alive` is False), so the body is never parsed as the
next request (RFC 9112 §11.2, request smuggling).
"""
from __future__ import annotations

import email.utils
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import HttpError
from ..protocol.handshake import REASONS, Request

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}
MAX_FILE_SIZE = 8 << 20  # the page's files are small; refuse to load anything huge
# In client/index.html; chat.js connects to the path it names (see `serve`).
PATH_META = b'<meta name="websocket-path" content="/">'


@dataclass(frozen=True)
class Response:
    """The bytes to send; `keep_alive` False: close the connection once they are sent."""

    data: bytes
    keep_alive: bool
    status: int


def keep_alive(request: Request) -> bool:
    """Whether the connection may carry another request after this one's response.

    RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive". And
    never after a request with a body: we do not read it, so the next request could only be
    found by parsing the body as one.
    """
    if request.has_body:
        # The next request could only be found inside the body we never read; taking a body
        # for a request is how smuggling works (RFC 9112 §11.2). RFC 9110 §9.3.1 warns that
        # a GET body "might lead some implementations to reject the request and close the
        # connection": we answer it and close.
        return False
    if request.has_token("Connection", "close"):
        return False
    if request.version == "HTTP/1.0":
        return request.has_token("Connection", "keep-alive")
    return True


def resolve(root: Path, target: str) -> Path:
    """Map a request target to a file under `root`, or raise HttpError(404 or 400)."""
    if not target.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    path = target.split("?", 1)[0].split("#", 1)[0]
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "request path is not valid UTF-8") from None
    if "\x00" in decoded or "\\" in decoded:
        raise HttpError(400, "malformed request path")
    segments = [part for part in decoded.split("/") if part]
    if any(part in (".", "..") for part in segments):
        raise HttpError(404, "not found")
    base = root.resolve()
    candidate = base.joinpath(*segments)
    try:
        if candidate.is_dir():
            candidate = candidate / "index.html"
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # e.g. a name longer than NAME_MAX
        raise HttpError(404, "not found") from None
    # Belt and braces: symbolic links must not lead out of the client directory either.
    if (base != real and base not in real.parents) or not real.is_file():
        raise HttpError(404, "not found")
    return real


def serve(request: Request, root: Path, websocket_path: str = "/") -> Response:
    """Answer a plain (non-upgrade) HTTP request with a file from `root`.

    The response says "Connection: close" and has `keep_alive` False when `keep_alive()`
    says the connection ends after it (a request body among the reasons). The page
    (index.html) is told where the WebSocket is: its `websocket-path` meta tag says
    `websocket_path` (the first --path), so the page connects where upgrades are accepted.

    Raises:
        HttpError: 405 for a method other than GET and HEAD; 404 or 400 from `resolve`.
    """
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {request.method} not allowed", (("Allow", "GET, HEAD"),))
    path = resolve(root, request.target)
    try:
        if path.stat().st_size > MAX_FILE_SIZE:
            raise HttpError(404, "not found")
        body = path.read_bytes()
    except OSError:
        raise HttpError(404, "not found") from None
    if websocket_path != "/" and path.name == "index.html":
        body = body.replace(PATH_META, PATH_META.replace(b'"/"', _attribute(websocket_path)))
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return respond(request, body, content_type)


def _attribute(value: str) -> bytes:
    """`value` as a double-quoted HTML attribute value."""
    escaped = value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'"{escaped}"'.encode()


def respond(request: Request, body: bytes, content_type: str) -> Response:
    """A 200 answer to a GET or HEAD with `body` (only its length for HEAD), kept alive
    when `keep_alive()` allows it."""
    persist = keep_alive(request)
    lines = [
        f"HTTP/1.1 200 {REASONS.get(200, 'OK')}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
        "Connection: keep-alive" if persist else "Connection: close",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    data = head if request.method == "HEAD" else head + body
    return Response(data, persist, 200)
