"""The master socket (the article's `connectMaster`): bind, listen, accept. No WebSocket here.

`Listener` binds one non-blocking listening socket (IPv4 or IPv6, from `getaddrinfo`, with
SO_REUSEADDR so that a restarted server gets its port back at once), registers itself with
the loop, and hands every accepted socket, made non-blocking and with TCP_NODELAY, to its
`on_accept(sock, address)`. Out of file descriptors, it stops accepting for a moment
instead of spinning on the error. With `max_fd` (select() cannot watch descriptors at or
above FD_SETSIZE), a connection beyond it gets the `refusal` bytes and is closed.
"""
from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from .loop import READ, Loop

log = logging.getLogger("websocket")

ACCEPTS_PER_PASS = 64  # accept() at most this many connections per readiness event
ACCEPT_PAUSE = 0.1  # seconds without accepting after EMFILE and its kind
FD_SETSIZE = 1024  # select.select() cannot watch a descriptor at or above this


class ListenError(Exception):
    """The socket cannot listen (address in use, bad address...): one line for the CLI."""


class Listener:
    """One listening socket in the loop; see the module docstring."""

    def __init__(self, loop: Loop, address: str, port: int,
                 on_accept: Callable[[socket.socket, Any], None],
                 max_fd: int | None = None, refusal: bytes = b"",
                 reuse_port: bool = False) -> None:
        try:
            infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError, OverflowError) as exc:
            raise ListenError(f"bad address {address!r}: {exc}") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                # --workers: every worker listens on the same port and the kernel spreads
                # the connections over them (Linux SO_REUSEPORT).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.listen(socket.SOMAXCONN)
        except OSError as exc:
            sock.close()
            what = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                what = "address already in use (is another server running on it?)"
            raise ListenError(f"cannot listen on {address} port {port}: "
                              f"{what.lower() if what[0].isupper() else what}") from None
        sock.setblocking(False)
        self.sock: socket.socket | None = sock
        self.port: int = sock.getsockname()[1]
        self.loop = loop
        self.on_accept = on_accept
        self.max_fd = max_fd
        self.refusal = refusal
        self.events = loop.watch(sock, self, READ, 0)

    def on_readable(self) -> None:
        """Accept waiting connections (the article's `connect`)."""
        for _ in range(ACCEPTS_PER_PASS):
            if self.sock is None:
                return
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept: %s; pausing new connections for %g s",
                              exc.strerror, ACCEPT_PAUSE)
                    self.events = self.loop.watch(self.sock, self, 0, self.events)
                    self.loop.call_later(ACCEPT_PAUSE, self._resume)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.error("cannot accept: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # A chat line must not wait for Nagle's algorithm and a delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.max_fd is not None and sock.fileno() >= self.max_fd:
                self._refuse(sock, address)
                continue
            self.on_accept(sock, address)

    def _refuse(self, sock: socket.socket, address: Any) -> None:
        """Answer a connection we cannot even watch, without blocking, and close it."""
        log.warning("refusing %s: %s", address,
                    self.refusal.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace").strip())
        try:
            sock.send(self.refusal)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)  # take what already arrived, so close() sends no RST
        except OSError:
            pass
        sock.close()

    def _resume(self) -> None:
        if self.sock is not None:
            self.events = self.loop.watch(self.sock, self, READ, self.events)

    def on_writable(self) -> None:  # pragma: no cover - never watched for writing
        pass

    def on_error(self, exc: Exception) -> None:
        log.error("accepting a connection failed: %s: %s", type(exc).__name__, exc,
                  exc_info=exc)

    def close(self) -> None:
        """Stop listening: new connections are refused by the kernel from now on."""
        if self.sock is None:
            return
        if self.events:
            self.loop.forget(self.sock)
            self.events = 0
        self.sock.close()
        self.sock = None


def raise_fd_limit(wanted: int, use_select: bool) -> None:
    """Each user is a file descriptor: lift the soft limit to the hard one, and warn when
    `wanted` connections still cannot fit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    reachable = soft - 16 if soft != resource.RLIM_INFINITY else wanted
    if use_select:
        reachable = min(reachable, FD_SETSIZE - 16)
    if reachable < wanted:
        why = ("select() watches descriptors below 1024" if use_select
               else f"the open-file limit is {soft}")
        log.warning("--max-connections %d cannot be reached: %s; about %d users fit",
                    wanted, why, reachable)
