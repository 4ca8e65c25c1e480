"""A real `redis-server` for tests, and a small blocking RESP client to talk to it.

`RedisServer()` starts Debian's redis-server on a free loopback port with persistence off
(`--save "" --appendonly no`, its working directory a fresh temporary folder), optionally with
`--requirepass`, and returns once it answers PING. It is stopped by its PID (`stop`), killed
(`kill`, SIGKILL: what a crash looks like to clients), `restart`ed on the same port (empty:
nothing was persisted), `pause`d and `resume`d (SIGSTOP/SIGCONT: connections stay open and
nothing is answered), or made busy with `debug_sleep` (DEBUG SLEEP: the whole server stops
serving for that long; Redis 7 refuses DEBUG unless started with `--enable-debug-command`,
which this helper passes as `local`). With `tls=(cert, key, ca)` (PEM paths, e.g. from
tests/tls.py's make_certificates) it speaks TLS only (`--port 0 --tls-port P`, no client
certificates asked): `url` is then rediss://, and `client()` speaks TLS too.

No pytest inside: fixtures wrap it (see tests/test_redis_server.py). `redis_server_path()`
is None when redis-server is not installed. `RespClient` uses websocket/protocol/resp.py over
a plain blocking socket; it is a test tool, not the server's (non-blocking) Redis link.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # imported from a test run elsewhere than the checkout's root
    sys.path.insert(0, str(ROOT))

from websocket.protocol.resp import NEED_MORE, Reader, Reply, encode_command  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds for redis-server to answer PING (it takes ~10 ms here)


def redis_server_path() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return shutil.which("redis-server")


def redis_version(executable: str) -> tuple[int, ...]:
    """(7, 0, 15) from `redis-server --version` ("Redis server v=7.0.15 sha=...")."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else (0,)


def free_port() -> int:
    """A loopback port nobody listens on right now (redis-server cannot take port 0)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class RespClient:
    """A blocking RESP2 client over one TCP connection: `call`, or `send` then `read_reply`."""

    def __init__(self, host: str, port: int, timeout: float = 5.0,
                 rcvbuf: int | None = None, context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect(), so the TCP window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((host, port))
            if context is not None:  # a blocking handshake: this is the test's side
                self.sock = context.wrap_socket(self.sock, server_hostname=host)
        except OSError:
            self.sock.close()
            raise
        self.timeout = timeout
        self.reader = Reader()

    def send(self, *args: str | bytes | int) -> None:
        self.sock.sendall(encode_command(*args))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self, timeout: float | None = None) -> Reply:
        """The next reply. Raises TimeoutError, ConnectionError (EOF) or RespProtocolError."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        while (reply := self.reader.gets()) is NEED_MORE:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self.reader.feed(data)
        return reply

    def call(self, *args: str | bytes | int, timeout: float | None = None) -> Reply:
        self.send(*args)
        return self.read_reply(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RedisServer:
    """One redis-server process on 127.0.0.1, started at once; a context manager."""

    def __init__(self, password: str | None = None, *extra_args: str,
                 executable: str | None = None, port: int | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.executable = found
        self.password = password
        self.extra_args = extra_args
        self.tls = tls  # (certificate, key, CA) PEM paths: TLS only
        self.client_context: ssl.SSLContext | None = None
        if tls is not None:  # the helper trusts what it serves, whatever the name in it
            self.client_context = ssl.create_default_context(cafile=str(tls[2]))
            self.client_context.load_verify_locations(cafile=str(tls[0]))
            self.client_context.check_hostname = False
        self.host = HOST
        self.port = port or 0
        self._dir = tempfile.TemporaryDirectory(prefix="chat-redis-")
        self.logfile = Path(self._dir.name) / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._debug = redis_version(self.executable) >= (7,)
        try:
            self.start()
        except BaseException:
            self._dir.cleanup()
            raise

    @property
    def url(self) -> str:
        """The `--redis` URL of this server, password included."""
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def _command_line(self) -> list[str]:
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            cert, key, ca = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                     "--tls-auth-clients", "no"]
        args = [self.executable, *ports, "--bind", self.host,
                # Persistence off: no RDB snapshots, no append-only file, nothing outlives
                # the process, and a restart starts empty.
                "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                "--logfile", str(self.logfile), "--daemonize", "no"]
        if self._debug:  # Redis 7: DEBUG (for DEBUG SLEEP) is off unless enabled
            args += ["--enable-debug-command", "local"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self) -> None:
        """Start redis-server (on `self.port`, or a free one) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server is already running (PID {self.proc.pid})")
        fixed = self.port != 0
        for _ in range(1 if fixed else 5):  # a free port may be taken before Redis binds it
            if not fixed:
                self.port = free_port()
            self.proc = subprocess.Popen(self._command_line(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.paused = False
            if self._wait_ready():
                return
            if "Address already in use" not in self.log:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}; log:\n{self.log}")

    def _wait_ready(self) -> bool:
        """True once PING is answered with PONG; False if the process exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with self.client(timeout=1.0) as client:
                    if client.call("PING") == "PONG":
                        return True
                    # e.g. "-LOADING Redis is loading the dataset in memory": try again
            except OSError:
                pass  # not listening yet
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"redis-server not answering PING after {START_TIMEOUT} s; "
                           f"log:\n{self.log}")

    def client(self, timeout: float = 5.0, auth: bool = True,
               rcvbuf: int | None = None) -> RespClient:
        """A new connection, authenticated first when the server has a password."""
        client = RespClient(self.host, self.port, timeout, rcvbuf, self.client_context)
        if auth and self.password is not None:
            reply = client.call("AUTH", self.password)
            if reply != "OK":
                client.close()
                raise RuntimeError(f"AUTH failed: {reply!r}")
        return client

    def debug_sleep(self, seconds: float) -> RespClient:
        """Send DEBUG SLEEP: the server serves nobody for `seconds` from now.

        Returns the connection it was sent on, unanswered: `read_reply()` on it gives "OK"
        when the sleep ends; closing it does not shorten the sleep.
        """
        client = self.client(timeout=seconds + 5.0)
        client.send("DEBUG", "SLEEP", f"{seconds:.3f}")
        return client

    def pause(self) -> None:
        """SIGSTOP: the process stops; connections stay open and nothing is answered."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause`: everything queued meanwhile is served."""
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on any connection, nothing saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.paused = False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it takes longer than `timeout` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()  # a stopped process would not handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Stop (or find it dead) and start again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the process and remove its folder."""
        try:
            self.stop()
        finally:
            self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
