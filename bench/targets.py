"""The servers the benchmark measures, and how to start and stop one of them.

Standard library only, so that the tests (tests/test_bench.py) can use it from the test venv.
Every target is started on 127.0.0.1 port 0 and announces its port on its output: our server
with its `Chat page : http://HOST:PORT/` start-up line, the adapters in bench/peers/ with
`LISTENING HOST:PORT`. A target is stopped by its PID only: SIGINT, then SIGTERM, then SIGKILL.

The Node.js peers (`node-ws`, `uws`) are .js adapters run with the `node` on PATH; their npm
packages live in bench/node/node_modules (bench/run.py's `install_node_peers` puts them there).
Node cannot raise its own open-file limit, so the process that starts it raises it for it, in
the same pre-exec step that pins it to its core.
"""
from __future__ import annotations

import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
NODE_DIR = BENCH / "node"  # package.json, package-lock.json; node_modules/ (not committed)
HOST = "127.0.0.1"

OURS_READY = re.compile(r"Chat page\s*:\s*https?://[^\s/]+:(\d+)/")
PEER_READY = re.compile(r"^LISTENING \S+:(\d+)$")


@dataclass(frozen=True)
class Target:
    name: str  # as given to --only
    label: str  # as shown in the tables
    script: Path
    module: str | None  # the library it needs (None: standard library only)
    proto: str  # "ws", or "raw" for the framing-free relay
    ready: re.Pattern[str]
    in_venv: bool  # run with bench/.venv's python (peers) or plain python3 (ours, relay)
    max_users: int = 0  # a hard limit of its design (0: none); more are not attempted
    tls: bool = True  # it can serve wss:// (the wss scenarios)
    runtime: str = "python"  # "python", or "node": a .js adapter run with `node`
    package: str | None = None  # node: the npm package it measures (in bench/node/)


OURS = Target("ours", "ours", ROOT / "server.py", None, "ws", OURS_READY, False)
TARGETS: tuple[Target, ...] = (
    OURS,
    Target("websockets", "websockets", PEERS / "peer_websockets.py", "websockets", "ws",
           PEER_READY, True),
    Target("websocket-server", "websocket-server", PEERS / "peer_websocket_server.py",
           "websocket_server", "ws", PEER_READY, True),
    Target("simple-websocket-server", "simple-websocket-server",
           PEERS / "peer_simple_websocket_server.py", "simple_websocket_server", "ws",
           PEER_READY, True, max_users=1000),  # select(): no fd above FD_SETSIZE (1,024)
    Target("node-ws", "ws (Node.js)", PEERS / "peer_node_ws.js", None, "ws", PEER_READY, False,
           runtime="node", package="ws"),
    Target("uws", "uWebSockets.js", PEERS / "peer_uws.js", None, "ws", PEER_READY, False,
           runtime="node", package="uwebsockets"),
    Target("raw-relay", "raw TCP relay", PEERS / "raw_relay.py", None, "raw", PEER_READY, False,
           tls=False),
)
BY_NAME = {t.name: t for t in TARGETS}
NODE_TARGETS = tuple(t for t in TARGETS if t.runtime == "node")

# Limits passed to our server so that the scenarios, not its defaults, are what is measured.
OURS_OPTIONS = ("-q", "--max-connections", "20000", "--max-message-size", str(16 * 1024 * 1024))


def free_port() -> int:
    """A port nobody listens on now (for our server: with -q it does not log its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def command(target: Target, mode: str, python: str, selector: str | None = None,
            wrapper: Sequence[str] = (), port: int = 0, message_size: int = 0,
            tls: tuple[str, str] | None = None, ours_options: Sequence[str] = (),
            deflate: bool = False) -> list[str]:
    """The argv that starts `target` in `mode` ("chat" or "echo"); port 0 picks a free one.

    `message_size` tells the framing-free relay how much to read per recv() (one message).
    `tls`: (certificate, key) files: serve wss:// (the same options for every target).
    `ours_options` are added to our server's options (bench/run.py --ours-option).
    `deflate`: permessage-deflate as the target does it by default (ours always agrees to it
    unless --no-compression; the websockets adapter turns it off otherwise).
    """
    tls_args = ["--certfile", tls[0], "--keyfile", tls[1]] if tls else []
    if target is OURS:
        argv = [python, *wrapper, str(target.script), HOST, str(port), *OURS_OPTIONS, *tls_args,
                *ours_options]
        if mode == "echo":
            argv += ["--callback", "echo"]
        if selector:
            argv += ["--selector", selector]
        return argv
    if target.runtime == "node":
        python = node_binary()  # the .js adapters take the same command line as the .py ones
    argv = [python, *wrapper, str(target.script), HOST, "0", "--mode", mode, *tls_args]
    if deflate:
        argv.append("--deflate")
    if target.proto == "raw" and message_size:
        argv += ["--chunk", str(message_size)]
    return argv


class Running:
    """One started target: its process, PID, port, and every line it has printed."""

    def __init__(self, target: Target, argv: list[str], cpu: int | None = None,
                 timeout: float = 30.0, cwd: Path = ROOT, port: int = 0) -> None:
        self.target = target
        self.argv = argv
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        node = target.runtime == "node"

        def prepare() -> None:
            # In the child before exec: every thread it will start (Node's libuv pool and V8's
            # workers too) inherits the core.
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            if node:  # as the Python adapters and our server do for themselves
                raise_nofile()

        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=cwd,
            preexec_fn=prepare if cpu is not None or node else None)
        self.pid = self.proc.pid
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        try:
            if port:
                self.port = port
                self._wait_connectable(timeout)
            else:
                self.port = int(self._wait_for(target.ready, timeout).group(1))
        except BaseException:
            self.stop()
            raise

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                if len(self.lines) > 4000:  # keep the start-up lines and the latest ones
                    del self.lines[100:2100]
            self._new.put(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def _wait_for(self, regex: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.target.name}: not ready after {timeout:.0f} s; "
                                   f"log:\n{self.log[-3000:]}")
            if self.proc.poll() is not None and self._new.empty():
                time.sleep(0.1)
                with self._lock:
                    if not any(regex.search(line) for line in self.lines):
                        raise RuntimeError(f"{self.target.name} exited ({self.proc.returncode}) "
                                           f"before it was ready; log:\n{self.log[-3000:]}")
            try:
                self._new.get(timeout=0.1)
            except queue.Empty:
                pass

    def _wait_connectable(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise RuntimeError(f"{self.target.name} exited ({self.proc.returncode}) before "
                                   f"it was ready; log:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.target.name}: port {self.port} not open after "
                                   f"{timeout:.0f} s; log:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 2.0) -> int | None:
        """Stop it by its PID (SIGINT, as Ctrl-C would; then SIGTERM; then SIGKILL)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.returncode


def python_for(target: Target, venv_python: str | None) -> str:
    """Peers run in the bench venv; our server and the relay with the interpreter running us.
    (The Node.js adapters are run with `node` whatever this says: see `command`.)"""
    if target.in_venv and venv_python:
        return venv_python
    return sys.executable


def node_binary() -> str:
    """The `node` on PATH, for the Node.js adapters."""
    node = shutil.which("node")
    if not node:
        raise RuntimeError("node is not installed (the node-ws and uws targets need Node.js)")
    return node


def raise_nofile() -> None:
    """Raise the soft open-file limit to the hard one (what bench/peers/_common.py does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
