"""The terminal chat: `python3 -m websocket.client ws://127.0.0.1:8080/`.

Each line typed is sent as a text message, each message received is printed; Ctrl-D
closes with 1000 and prints the server's close code. One thread and a selector (stdin and
the socket), since OpenSSL does not allow reading and writing one TLS socket from two
threads. Everything it says about the connection goes to stderr, messages to stdout.
"""
from __future__ import annotations

import argparse
import io
import os
import selectors
import socket
import ssl
import sys

from ..observe.trace import DEFAULT_LIMIT
from ..protocol.frames import CloseCode, describe_close_code
from . import ClientError, Connection, ConnectionClosed, connect


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m websocket.client",
        description="Chat over a WebSocket from the terminal: each line typed is sent as a "
                    "text message, each message received is printed. Ctrl-D closes (code "
                    "1000) and prints the server's close code; Ctrl-C quits at once.",
        epilog="Example: python3 -m websocket.client ws://127.0.0.1:8080/ --trace")
    parser.add_argument("url", help="ws://host:port/path or wss://...")
    parser.add_argument("--origin", help="send this Origin header, e.g. http://127.0.0.1:8080")
    parser.add_argument("--subprotocol", action="append", default=[], metavar="NAME",
                        help="offer this subprotocol (repeat for more, in order of preference)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="add a header to the request (repeatable), e.g. a Cookie")
    parser.add_argument("--trace", action="store_true",
                        help="print the handshake and every frame both ways, annotated (on "
                             "stderr)")
    parser.add_argument("--trace-bytes", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help="payload bytes shown per frame by --trace (default %(default)d)")
    parser.add_argument("--insecure", action="store_true",
                        help="for wss://: do not check the server's certificate at all (for a "
                             "test certificate; anyone in between can then read everything)")
    parser.add_argument("--no-compression", action="store_true",
                        help="do not offer permessage-deflate (RFC 7692)")
    parser.add_argument("--cafile", metavar="PEM",
                        help="for wss://: trust the CA (or self-signed certificate) in this file")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="for connecting, the handshake and the close (default %(default)g)")
    return parser.parse_args(argv)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate not trusted: {exc.verify_message} (see --cafile, or "
                "--insecure for a test certificate)")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _show(message: str | bytes) -> str:
    """A received message as one printed line: text as it is, binary as length and hex."""
    if isinstance(message, str):
        return message
    more = " ..." if len(message) > 16 else ""
    return f"[binary, {len(message)} bytes] {message[:16].hex(' ')}{more}"


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _closed_by_server(closed: ConnectionClosed) -> int:
    """Say how the connection ended; the exit status: 0 for a normal or going-away close."""
    _status(str(closed))
    return 0 if closed.code in (CloseCode.NORMAL, CloseCode.GOING_AWAY) else 1


def _chat(conn: Connection, stdin: int) -> int:
    """Send stdin's lines and print what comes, until Ctrl-D or the server closes."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "stdin")
    selector.register(conn, selectors.EVENT_READ, "socket")
    typed = bytearray()
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "socket":
                    try:
                        while True:  # everything already here, TLS-buffered bytes too
                            print(_show(conn.recv(timeout=0)), flush=True)
                    except TimeoutError:
                        pass
                    except ConnectionClosed as closed:
                        return _closed_by_server(closed)
                    continue
                chunk = os.read(stdin, 65536)
                typed += chunk
                *lines, rest = typed.split(b"\n")
                if not chunk and rest:
                    lines.append(rest)  # the last line had no newline
                typed = bytearray(rest)
                try:
                    for line in lines:
                        conn.send(line.rstrip(b"\r").decode("utf-8", "replace"))
                except ConnectionClosed as closed:
                    return _closed_by_server(closed)
                if not chunk:  # Ctrl-D: the closing handshake
                    code, reason = conn.close(CloseCode.NORMAL)
                    try:
                        while True:
                            print(_show(conn.recv(timeout=0)), flush=True)
                    except (TimeoutError, ConnectionClosed):
                        pass
                    _status(f"closed: the server answered {code} ({describe_close_code(code)})"
                            + (f" {reason!r}" if reason else ""))
                    return 0 if code == CloseCode.NORMAL else 1
    finally:
        selector.close()


def main(argv: list[str] | None = None) -> int:
    """The terminal program; returns its exit status (0 normal close, 1 error, 130 Ctrl-C)."""
    args = _parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")  # a message in a script the terminal lacks
    try:
        headers = []
        for field in args.header:
            name, colon, value = field.partition(":")
            if not colon:
                raise ValueError(f"--header wants 'NAME: VALUE', not {field!r}")
            headers.append((name.strip(), value.strip()))
        context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
        if args.insecure:
            context = context or ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if args.url.lower().startswith("wss:"):
                _status("warning: --insecure: the server's certificate is not checked")
        conn = connect(args.url, origin=args.origin, subprotocols=args.subprotocol,
                       headers=headers, timeout=args.timeout, ssl_context=context,
                       compression=not args.no_compression,
                       trace=_status if args.trace else None, trace_limit=args.trace_bytes)
    except (OSError, ValueError, ClientError) as exc:
        _status(f"error: {args.url}: {_describe_error(exc)}")
        return 1
    try:
        chosen = f" (subprotocol {conn.subprotocol})" if conn.subprotocol else ""
        if conn.deflate is not None:
            chosen += " (permessage-deflate)"
        _status(f"connected to {args.url}{chosen}: type a line to send it; Ctrl-D closes")
        return _chat(conn, sys.stdin.fileno())
    except KeyboardInterrupt:
        try:  # a second Ctrl-C ends this wait too (main catches it)
            conn.close(CloseCode.GOING_AWAY, timeout=1.0)
        except (OSError, ClientError):
            pass
        return 130
    except (OSError, ClientError) as exc:
        _status(f"error: {_describe_error(exc)}")
        return 1
    finally:
        if conn.closed is None:
            conn.sock.close()
