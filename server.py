#!/usr/bin/env python3
"""Start the chat server: `python3 server.py 127.0.0.1 8080`, then open http://127.0.0.1:8080/.

The command line of the 2010 article (`php server/server.php 127.0.0.1 8080`), in Python.
This file only reads options, starts `websocket.Server` and turns failures into one line.
"""
from __future__ import annotations

import signal
from typing import Any


def _quit_while_starting(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM before the loop takes them over (`serve`): stop now, quietly, with
    status 0, as they do later; never a KeyboardInterrupt traceback."""
    raise SystemExit(0)


if __name__ == "__main__":  # first of all: the imports below take a while
    signal.signal(signal.SIGINT, _quit_while_starting)
    signal.signal(signal.SIGTERM, _quit_while_starting)

# (After the handlers on purpose.)
import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from websocket.chat.callbacks import CallbackError, load  # noqa: E402
from websocket.chat.server import Server, ServerError  # noqa: E402
from websocket.limits import DEFAULTS  # noqa: E402
from websocket.net.tls import TlsConfigError, load_context  # noqa: E402
from websocket.observe.trace import DEFAULT_LIMIT as DEFAULT_TRACE_BYTES  # noqa: E402
from websocket.observe.wire import parse_networks  # noqa: E402
from websocket.scale.workers import Supervisor, WorkerError, check, reserve_port  # noqa: E402

log = logging.getLogger("websocket")
RELOAD_INTERVAL = 1.0  # --reload: seconds between two looks at the script's file


def size(text: str) -> int:
    """A byte count: 1048576, 1024K, 1M, 16MiB..."""
    units = {"": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
    number = text.strip().lower()
    digits = number.rstrip("kmgib")
    try:
        value = int(digits) * units[number[len(digits):]]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def positive(kind: type) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be greater than 0")
        return value
    return convert


def count(text: str) -> int:
    """A number of things, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def network(text: str) -> str:
    try:
        parse_networks([text])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address or network: {text!r}") from None
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="A WebSocket chat server (RFC 6455, and the 2010 drafts 75 and 76). It "
                    "serves the chat page and the WebSocket on the same port.",
        epilog="Example: python3 server.py 127.0.0.1 8080, then open http://127.0.0.1:8080/ "
               "in two browser tabs.")
    parser.add_argument("address", help="address to listen on: 127.0.0.1 or ::1 (this "
                        "machine only), 0.0.0.0 or :: (every interface), or a host name")
    parser.add_argument("port", help="TCP port; 0 picks a free one (the log says which)")
    parser.add_argument("--callback", metavar="all|echo|SCRIPT.py", default=None,
                        help="what to do with messages: 'all' echoes each message to every "
                        "user (default, as the article), 'echo' answers the sender only, or a "
                        "drop-in script defining process(user, message, server)")
    parser.add_argument("--reload", action="store_true",
                        help="load the --callback script again when its file changes (checked "
                        "every second); users stay connected, and a version that fails to "
                        "load leaves the previous one running")
    parser.add_argument("--max-message-size", type=size, metavar="BYTES",
                        default=DEFAULTS["max_message_size"],
                        help="largest message accepted; bigger ones close the connection with "
                        "1009 (default: %(default)d = 1 MiB)")
    parser.add_argument("--max-request-size", type=size, metavar="BYTES",
                        default=DEFAULTS["max_request_size"],
                        help="largest HTTP request head; bigger gets HTTP 431 (default: "
                        "%(default)d)")
    parser.add_argument("--handshake-timeout", type=positive(float), metavar="SECONDS",
                        default=DEFAULTS["handshake_timeout"],
                        help="time to send a complete request; slower gets HTTP 408 (default: "
                        "%(default)g)")
    parser.add_argument("--close-timeout", type=positive(float), metavar="SECONDS",
                        default=DEFAULTS["close_timeout"],
                        help="time a user has to answer our close frame (default: %(default)g)")
    parser.add_argument("--ping-interval", type=float, metavar="SECONDS",
                        default=DEFAULTS["ping_interval"],
                        help="ping a user silent for this long; drop it (1011) if still silent "
                        "after twice that; 0 turns keepalive off (default: %(default)g)")
    parser.add_argument("--message-timeout", type=positive(float), metavar="SECONDS",
                        default=DEFAULTS["message_timeout"],
                        help="time to finish a message once its first frame has begun; slower "
                        "closes with 1008 (default: %(default)g)")
    parser.add_argument("--max-connections", type=positive(int), metavar="N",
                        default=DEFAULTS["max_connections"],
                        help="WebSocket users at once; more get HTTP 503 (default: "
                        "%(default)d)")
    parser.add_argument("--max-buffer", type=size, metavar="BYTES",
                        default=DEFAULTS["max_buffer"],
                        help="unsent output per user; a user that does not read is "
                        "disconnected with 1008 beyond it, and the senders wait for one that "
                        "reads but is behind (default: %(default)d = 4 MiB)")
    parser.add_argument("--max-input-memory", type=size, metavar="BYTES",
                        default=DEFAULTS["max_input_memory"],
                        help="unfinished incoming messages of all users together; a user "
                        "whose message would pass it is closed with 1013 (try again later) "
                        "(default: %(default)d = 256 MiB)")
    parser.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                        dest="allowed_origins",
                        help="only pages from this origin (e.g. http://chat.example.com:8080) "
                        "may join; repeat for more; others get HTTP 403 (default: any origin)")
    parser.add_argument("--no-compression", action="store_false", dest="compression",
                        help="do not agree to permessage-deflate (RFC 7692), which is on by "
                        "default for every client that offers it (browsers do)")
    parser.add_argument("--path", action="append", metavar="PATH", dest="paths",
                        type=websocket_path,
                        help="accept WebSocket upgrades only on this path (e.g. /chat); repeat "
                        "for more; others get HTTP 404; the page connects to the first "
                        "(default: any path)")
    parser.add_argument("--trust-proxy", action="store_true",
                        help="take the client's address (for the log and user.address) from "
                        "the Forwarded / X-Forwarded-For header of the proxy in front; only "
                        "when clients can reach the server through that proxy alone")
    parser.add_argument("--idle-timeout", type=positive(float), metavar="SECONDS",
                        default=None,
                        help="close (1000) a user that sent no message for this long "
                        "(default: off)")
    parser.add_argument("--metrics", action="store_true",
                        help="serve the counters at GET /metrics in the Prometheus text "
                        "format (GET /healthz answers 'ok' either way)")
    parser.add_argument("--history", type=count, metavar="N", default=DEFAULTS["history"],
                        help="replay each room's last N messages to a newcomer; 0 turns it "
                        "off (default: %(default)d)")
    parser.add_argument("--history-idle", type=positive(float), metavar="SECONDS",
                        default=DEFAULTS["history_idle"],
                        help="a room without users and without messages for this long "
                        "forgets its history (default: %(default)g)")
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="redis://[:PASSWORD@]HOST:PORT[/DB]: join every server started "
                        "with the same Redis into one chat (pub/sub; default: none); "
                        "rediss://... for Redis over TLS")
    parser.add_argument("--redis-cafile", metavar="PEM", default=None,
                        help="with rediss://: trust only this CA's certificate(s) for Redis "
                        "(default: the system's trust store); the host name is checked")
    parser.add_argument("--redis-prefix", metavar="TEXT", default=DEFAULTS["redis_prefix"],
                        help="Redis channel names start with this (default: %(default)s)")
    parser.add_argument("--workers", type=positive(int), metavar="N", default=1,
                        help="N processes sharing the port (SO_REUSEPORT, Linux), each its "
                        "own loop, joined through --redis, which N > 1 needs (default: 1)")
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--selector", choices=("default", "select"), default="default",
                        help="readiness API: 'default' is the best the system has (epoll on "
                        "Linux); 'select' is plain select() as the article (at most ~1000 "
                        "users)")
    parser.add_argument("--certfile", metavar="PEM",
                        help="serve https:// and wss:// (TLS) with this certificate, followed "
                        "by its intermediates (e.g. certbot's fullchain.pem)")
    parser.add_argument("--keyfile", metavar="PEM",
                        help="the certificate's private key (default: in --certfile too)")
    parser.add_argument("--tls-min", choices=("1.2", "1.3"),
                        help="oldest TLS version accepted (default: 1.2)")
    parser.add_argument("--trace", action="store_true",
                        help="log every connection's HTTP request and response and every "
                        "frame both ways as an annotated hex dump (stderr)")
    parser.add_argument("--trace-bytes", type=count, metavar="N",
                        default=DEFAULT_TRACE_BYTES,
                        help="payload bytes shown per frame by --trace and /wire (default: "
                        "%(default)d)")
    parser.add_argument("--trace-page", action="store_true",
                        help="serve /wire, a page showing the same trace live, to loopback "
                        "addresses (and --trace-page-from); others get HTTP 403")
    parser.add_argument("--trace-page-from", action="append", metavar="ADDR", default=[],
                        type=network,
                        help="also let this address or network (10.0.0.0/24) watch /wire; "
                        "repeatable")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="log every message and frame (direction, opcode, length)")
    loudness.add_argument("-q", "--quiet", action="store_true", help="log only warnings")
    return parser.parse_args(argv)


def websocket_path(text: str) -> str:
    """A --path: an absolute path without query or fragment, e.g. /chat."""
    if not text.startswith("/") or any(char in text for char in "?# \t\r\n"):
        raise argparse.ArgumentTypeError(f"not a path like /chat: {text!r}")
    return text


def describe_address(address: str) -> str:
    """One line on who can connect, for the start-up log."""
    if address in ("0.0.0.0", ""):
        return "every IPv4 interface: other machines on the network can connect"
    if address == "::":
        return "every interface: other machines on the network can connect"
    if address in ("localhost", "::1") or address.startswith("127."):
        return "loopback: only this machine can connect"
    return f"only clients that can reach {address} can connect"


def url_host(address: str) -> str:
    """The host part of a URL for `address` (IPv6 in brackets; wildcards as loopback)."""
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing it back at once.

    Every large message allocates and frees megabyte-sized objects. By default glibc gives
    such memory back to the kernel (munmap, heap trimming) almost as soon as it is free, and
    takes it again for the next message, page fault by page fault: the 1 MiB echo ran at
    ~300 MB/s with 320,000 minor faults where it runs at ~450 MB/s with 13,000 once
    allocations under 4 MiB come from the heap and up to 32 MiB of it may stay free.
    Idle users are unaffected (small objects live in Python's own arenas). A no-op where
    there is no glibc `mallopt`.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 32 << 20)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    worker = args.worker_id
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    tag = f"[worker {worker}] " if worker else ""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s {tag}%(message)s",
                        datefmt="%H:%M:%S")
    try:
        port = args.worker_port if worker else int(args.port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"server.py: error: bad port {args.port!r}: use a number from 0 to 65535",
              file=sys.stderr)
        return 1
    for option, value in (("--keyfile", args.keyfile), ("--tls-min", args.tls_min)):
        if value and not args.certfile:
            print(f"server.py: error: {option} needs --certfile", file=sys.stderr)
            return 1
    supervising = args.workers > 1 and not worker
    keep_freed_memory()
    try:
        context = (load_context(args.certfile, args.keyfile, args.tls_min or "1.2")
                   if args.certfile else None)
        callbacks = load(args.callback)
        if args.reload and callbacks.source is None:
            raise CallbackError("--reload needs --callback SCRIPT.py")
        server = Server(args.address, port, callbacks, selector=args.selector,
                        reload=RELOAD_INTERVAL if args.reload else 0.0,
                        max_message_size=args.max_message_size,
                        max_request_size=args.max_request_size,
                        handshake_timeout=args.handshake_timeout,
                        close_timeout=args.close_timeout, ping_interval=args.ping_interval,
                        message_timeout=args.message_timeout,
                        max_connections=args.max_connections, max_buffer=args.max_buffer,
                        max_input_memory=args.max_input_memory,
                        allowed_origins=args.allowed_origins, paths=args.paths,
                        trust_proxy=args.trust_proxy,
                        idle_timeout=args.idle_timeout or 0.0, metrics=args.metrics,
                        ssl_context=context,
                        trace=args.trace, trace_bytes=args.trace_bytes,
                        trace_page=args.trace_page, trace_page_from=args.trace_page_from,
                        compression=args.compression, redis=args.redis,
                        redis_prefix=args.redis_prefix, redis_cafile=args.redis_cafile,
                        history=args.history,
                        history_idle=args.history_idle, reuse_port=bool(worker))
        if supervising:
            check(args.workers, args.redis)
            reserved = reserve_port(args.address, port)
            server.port = reserved.getsockname()[1]
        else:
            server.listen()
    except (CallbackError, ServerError, TlsConfigError, WorkerError) as exc:
        print(f"server.py: error: {exc}", file=sys.stderr)
        return 1
    if worker:
        log.info("serving on port %d (PID %d)", server.port, os.getpid())
        return serve(server)
    host = url_host(args.address)
    log.info("Server started : %s", time.strftime("%Y-%m-%d %H:%M:%S"))
    log.info("Listening on   : %s port %d (%s)", args.address, server.port,
             describe_address(args.address))
    secure = "s" if context is not None else ""
    log.info("Chat page      : http%s://%s:%d/", secure, host, server.port)
    for path in args.paths or ["/"]:
        log.info("WebSocket URL  : ws%s://%s:%d%s", secure, host, server.port, path)
    if context is not None:
        log.info("TLS            : %s, TLS %s and newer", args.certfile, args.tls_min or "1.2")
    if args.metrics:
        log.info("Metrics        : http%s://%s:%d/metrics", secure, host, server.port)
    log.info("Callback       : %s%s; selector: %s; compression: %s", callbacks.name,
             " (reloaded when it changes)" if args.reload else "", server.selector_name,
             "permessage-deflate" if args.compression else "off")
    if callbacks.pages is not None:
        log.info("Pages          : %s (instead of client/)", callbacks.pages)
    if args.trace_page:
        log.info("Wire page      : http://%s:%d/wire (the trace, live)", host, server.port)
    elif args.trace_page_from:
        log.warning("--trace-page-from does nothing without --trace-page")
    if server.history is not None:
        log.info("History        : the last %d message(s) of each room", args.history)
    if server.link is not None:
        log.info("Redis          : %s (channels %s...)", server.link.address,
                 args.redis_prefix)
    if supervising:
        log.info("Workers        : %d processes sharing the port (SO_REUSEPORT)",
                 args.workers)
    log.info("CTRL-C to quit")
    if supervising:
        script = os.path.abspath(__file__)
        try:
            return Supervisor(args.workers, lambda number: [
                sys.executable, script, *argv, "--worker-id", str(number),
                "--worker-port", str(server.port)]).run()
        finally:
            reserved.close()
    return serve(server)


def serve(server: Server) -> int:
    """Run the server until Ctrl-C or SIGTERM; the exit status."""
    # The loop handles Ctrl-C and SIGTERM while it runs (a graceful shutdown; twice: at
    # once); until then they stop the server at once (`_quit_while_starting`, with no gap
    # in which one would be lost), and once it is over they are ignored, so that one that
    # comes while the process exits cannot turn into a traceback or an exit by signal.
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is the loop's or ignored
        return 0
    except Exception as exc:  # a bug outside any one user: one line, details with -v
        log.debug("internal error", exc_info=True)
        print(f"server.py: internal error: {type(exc).__name__}: {exc} "
              "(run with -v for the traceback)", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
