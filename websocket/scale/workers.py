"""--workers N: N server processes on one port, each its own loop, joined through Redis.

One process is one core. With `--workers N` the command line becomes a supervisor: it
reserves the port, starts N copies of itself (each `server.py ... --worker-id K`), and
watches them. Every worker listens on the same port with SO_REUSEPORT, so the kernel
spreads new connections over them (Linux hashes each connection to one listener); each
worker is the whole server with its own loop, and `--redis` joins them into one chat
(required: without it they would be N separate chats).

- Ctrl-C or SIGTERM to the supervisor: it sends SIGTERM to every worker (each closes its
  users with 1001 as a single server does), waits, and exits 0; a second one is passed on
  too (the workers then stop at once). The workers run in their own session, so a Ctrl-C
  at the terminal reaches the supervisor only, and each gets SIGTERM if the supervisor
  itself dies (Linux PR_SET_PDEATHSIG), so none is left behind.
- A worker that dies is logged (exit status or signal) and started again, after
  RESTART_FIRST seconds, doubled for one that dies again soon after starting, up to
  RESTART_MAX.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("websocket")

RESTART_FIRST = 0.5  # seconds before a dead worker is started again ...
RESTART_MAX = 10.0  # ... doubled while it keeps dying young, up to this
STABLE_AFTER = 5.0  # a worker that lived this long had no start-up trouble
STOP_TIMEOUT = 8.0  # seconds the workers get to stop after SIGTERM (they take ~2 s)
POLL = 0.1  # seconds between checks on the workers
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


class WorkerError(Exception):
    """--workers cannot be used as given (one line for the CLI)."""


def check(workers: int, redis: str | None) -> None:
    """Can N workers run here? Raises WorkerError with the reason."""
    if workers <= 1:
        return
    if not redis:
        raise WorkerError(f"--workers {workers} needs --redis: each worker is its own "
                          "process, and only Redis joins their users into one chat")
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise WorkerError("--workers needs Linux: it shares the port with SO_REUSEPORT, "
                          "which spreads connections over processes only there")


def reserve_port(address: str, port: int) -> socket.socket:
    """Bind (without listening) the address the workers will share: finds the port for
    port 0 and fails early if the address is taken. Keep it open while they run."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise WorkerError(f"bad address {address!r}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        what = ("address already in use (is another server running on it?)"
                if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
        raise WorkerError(f"cannot listen on {address} port {port}: {what}") from None
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Worker:
    __slots__ = ("number", "proc", "started_at", "delay", "restart_at")

    def __init__(self, number: int) -> None:
        self.number = number
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = RESTART_FIRST
        self.restart_at = 0.0


class Supervisor:
    """Starts `count` workers from `command(number)` and keeps them running; `run()`."""

    def __init__(self, count: int, command: Callable[[int], list[str]]) -> None:
        self.command = command
        self.workers = [Worker(number) for number in range(1, count + 1)]
        self.signals: list[int] = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _start(self, worker: Worker) -> None:
        worker.proc = subprocess.Popen(self.command(worker.number), stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent)
        worker.started_at = time.monotonic()
        log.info("worker %d started (PID %d)", worker.number, worker.proc.pid)

    def run(self) -> int:
        """Until Ctrl-C or SIGTERM: then stop the workers and return 0."""
        old = {signum: signal.signal(signum, self._on_signal)
               for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in self.workers:
                self._start(worker)
            while not self.signals:
                self._watch()
                time.sleep(POLL)
            return self._stop()
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            proc = worker.proc
            if proc is None:
                if now >= worker.restart_at:
                    self._start(worker)
                continue
            status = proc.poll()
            if status is None:
                continue
            lived = now - worker.started_at
            how = (f"killed by signal {signal.Signals(-status).name}" if status < 0
                   else f"exit status {status}")
            worker.delay = (RESTART_FIRST if lived >= STABLE_AFTER
                            else min(worker.delay * 2, RESTART_MAX))
            log.error("worker %d (PID %d) died (%s) after %.1f s; starting it again in "
                      "%.1f s", worker.number, proc.pid, how, lived, worker.delay)
            worker.proc = None
            worker.restart_at = now + worker.delay

    def _stop(self) -> int:
        log.info("Stopping %d worker(s)", sum(w.proc is not None for w in self.workers))
        handled = 0
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            for _signum in self.signals[handled:]:  # each Ctrl-C is passed on once
                for worker in self.workers:
                    if worker.proc is not None and worker.proc.poll() is None:
                        worker.proc.send_signal(signal.SIGTERM)
            handled = len(self.signals)
            alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
            if not alive:
                break
            if time.monotonic() >= deadline:
                for worker in alive:
                    assert worker.proc is not None
                    log.error("worker %d (PID %d) did not stop in %g s; killing it",
                              worker.number, worker.proc.pid, STOP_TIMEOUT)
                    worker.proc.kill()
                    worker.proc.wait(5)
                break
            time.sleep(POLL)
        log.info("All workers stopped")
        return 0
