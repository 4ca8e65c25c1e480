"""Shared fixtures: the real server, started as a user would start it, on a free port.

`chat_server` starts `python server.py 127.0.0.1 0 ...` and reads the port from the start-up
log; `start_server(*args)` does the same with extra options. Every process a test starts is
stopped by its PID when the test ends.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server_path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server.py"
PAGE_URL = re.compile(r"Chat page\s*:\s*(https?://(\S+):(\d+)/)")


class ServerProcess:
    """One running `server.py`, its port, and every line it has logged so far."""

    def __init__(self, *args: str, address: str = "127.0.0.1", timeout: float = 15.0,
                 script: Path = SERVER, port: int = 0) -> None:
        # SERVER_PYTHON runs the server under another interpreter (e.g. python3.10: the
        # oldest the server supports) while the tests themselves run in .venv.
        python = os.environ.get("SERVER_PYTHON", sys.executable)
        self.args = [python, str(script), address, str(port), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._lock = threading.RLock()  # `log` is read while it is held (exit path)
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        try:
            match = self.wait_for_log(PAGE_URL, timeout)
        except BaseException:
            self.stop()  # it never said where it listens: do not leave it running
            raise
        self.page_url = match.group(1)
        self.host = address
        self.port = int(match.group(3))
        host = f"[{address}]" if ":" in address else address
        scheme = "wss" if self.page_url.startswith("https:") else "ws"
        self.ws_url = f"{scheme}://{host}:{self.port}/"

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Wait until a logged line matches `pattern`; fail the test after `timeout` s."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line matching {regex.pattern!r}; log:\n{self.log}")
            try:
                self._new.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self._new.empty():
                    time.sleep(0.05)  # let the drain threads finish the last lines
                    with self._lock:
                        if not any(regex.search(line) for line in self.lines):
                            raise AssertionError(
                                f"server exited ({self.proc.returncode}) before logging "
                                f"{regex.pattern!r}; log:\n{self.log}") from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Stop the server as Ctrl-C would and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, address: str = "127.0.0.1", script: Path = SERVER,
              port: int = 0) -> ServerProcess:
        server = ServerProcess(*args, address=address, script=script, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def chat_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The server as the article runs it: echo every message to every user."""
    return start_server()


@pytest.fixture
def echo_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """`--callback echo`: every message answered to its sender only."""
    return start_server("--callback", "echo")


@pytest.fixture
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start a redis-server of the test's own (tests/redis_server.py), closed at the end.
    Without redis-server: a skip, or under CI=true a failure."""
    path = redis_server_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed; CI=true, so the Redis tests must run",
                        pytrace=False)
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    started: list[RedisServer] = []

    def start(*args: str, password: str | None = None, port: int | None = None,
              tls: tuple[Path, Path, Path] | None = None) -> RedisServer:
        server = RedisServer(password, *args, executable=path, port=port, tls=tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# A drop-in script that tells each user its address (--trust-proxy tests, direct and
# through nginx).
ADDRESS_SCRIPT = '''
def on_connect(user, server):
    server.send(user, repr(user.address))

def process(user, message, server):
    server.broadcast(message)
'''


@pytest.fixture
def address_script(tmp_path: Path) -> Path:
    script = tmp_path / "address.py"
    script.write_text(ADDRESS_SCRIPT)
    return script
