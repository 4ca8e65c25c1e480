"""What every benchmark adapter shares: the command line, the open-file limit, the ready line.

Each adapter is started as `python ADAPTER.py HOST PORT [--mode chat|echo]` (port 0 picks a free
one) and prints `LISTENING HOST:PORT` on stdout once it accepts connections; with `--certfile` and
`--keyfile` it serves wss:// instead (the library's own TLS support). `chat` delivers every
message to every connected user, sender included; `echo` answers the sender only.
"""
from __future__ import annotations

import argparse
import resource
import ssl
import sys

BACKLOG = 1024  # the same listen backlog for every target (some libraries default to 5)
MAX_MESSAGE = 16 * 1024 * 1024  # large enough for the 1 MiB scenario everywhere


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("chat", "echo"), default="chat")
    parser.add_argument("--certfile", help="serve wss:// with this certificate (PEM)")
    parser.add_argument("--keyfile", help="... and this key (PEM)")
    parser.add_argument("--deflate", action="store_true",
                        help="permessage-deflate as the library does it by default (only the "
                        "websockets adapter knows it)")
    return parser.parse_args()


def server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context every target gets for the wss scenarios (None: plain ws://)."""
    if not args.certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def raise_nofile() -> None:
    """Raise the soft open-file limit to the hard limit, as our server does for itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(host: str, port: int) -> None:
    sys.stdout.write(f"LISTENING {host}:{port}\n")
    sys.stdout.flush()
