"""The benchmark's own correctness: every target delivers what the benchmark counts on.

No timing is asserted here. Each benchmark target (bench/targets.py) is started as bench/run.py
starts it, and three real clients check its semantics: `chat` delivers every message to every
user, sender included; `echo` answers the sender only. Targets whose library is not installed in
this environment are skipped (the test venv has `websockets`; `websocket-server` and
`simple-websocket-server` live only in bench/.venv, made by `make bench`). The Node.js targets
(ws, uWebSockets.js) get their npm packages from bench/run.py's own installer, `npm ci` into
bench/node/node_modules, on first use; without node or npm they skip, except under CI=true,
where they fail. The load generator (bench/loadgen.c) is compiled with gcc and its counts are
checked against the raw relay and every WebSocket target that can run here; its open-loop
checker is run against our server and the Node.js peers (nothing may be lost: uWS's publish
would drop for a slow reader below its back-pressure limit) and against a relay written here
that drops, duplicates or reorders on purpose (the checker must see exactly what it did).
Without gcc these tests skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402
from targets import NODE_TARGETS, OURS, TARGETS, Running, Target, command, free_port  # noqa: E402

WS_TARGETS = [t for t in TARGETS if t.proto == "ws"]
RAW = next(t for t in TARGETS if t.proto == "raw")


@functools.cache
def node_unavailable() -> dict[str, str]:
    """{Node.js target name: why it cannot run here}, after bench/run.py's own installer has
    put bench/node's packages into bench/node/node_modules (once per session)."""
    return bench_run.node_targets_unavailable(list(NODE_TARGETS))[1]


def unavailable(target: Target) -> str | None:
    """Why `target` cannot run in this environment (None: it can)."""
    if target is OURS and not OURS.script.exists():
        return "server.py does not exist yet"
    if target.module and importlib.util.find_spec(target.module) is None:
        return f"{target.module} is not installed here (it is in bench/.venv: make bench)"
    if target.runtime == "node":
        return node_unavailable().get(target.name)
    return None


def start(target: Target, mode: str, tls: tuple[str, str] | None = None,
          deflate: bool = False) -> Running:
    reason = unavailable(target)
    if reason and target.runtime == "node" and os.environ.get("CI") == "true":
        pytest.fail(f"{target.name}: {reason}; CI=true, so the Node.js targets must run",
                    pytrace=False)
    if reason:
        pytest.skip(f"{target.name}: {reason}")
    port = free_port() if target is OURS else 0
    argv = command(target, mode, sys.executable, port=port, tls=tls, deflate=deflate)
    return Running(target, argv, timeout=20, port=port)


@pytest.fixture
def started() -> Iterator[list[Running]]:
    servers: list[Running] = []
    yield servers
    for server in servers:
        server.stop()


# --- WebSocket targets, with the websockets client -------------------------------------------

def ws_clients(stack: contextlib.ExitStack, port: int, n: int = 3) -> list[Any]:
    from websockets.sync.client import connect
    return [stack.enter_context(connect(f"ws://127.0.0.1:{port}/", open_timeout=10,
                                        compression=None, max_size=None)) for _ in range(n)]


def receive_until(ws: Any, want: set[str], seconds: float = 10.0) -> list[str]:
    """Messages received until every one of `want` has arrived (or the time is up)."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while not want <= set(got) and time.monotonic() < deadline:
        try:
            got.append(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
    return got


def sync_chat(clients: list[Any]) -> None:
    """Until every user has been registered: the first sends until all have one of its own."""
    for attempt in range(20):
        token = f"sync-{attempt}"
        clients[0].send(token)
        if all(token in receive_until(ws, {token}, 1.0) for ws in clients):
            return
    raise AssertionError("not every user received the sync message")


@pytest.mark.parametrize("target", WS_TARGETS, ids=[t.name for t in WS_TARGETS])
def test_chat_delivers_every_message_to_every_user(target: Target,
                                                   started: list[Running]) -> None:
    server = start(target, "chat")
    started.append(server)
    with contextlib.ExitStack() as stack:
        clients = ws_clients(stack, server.port)
        sync_chat(clients)
        sent = {f"message {i} from user {i}" for i in range(3)}
        for i, ws in enumerate(clients):
            ws.send(f"message {i} from user {i}")
        for i, ws in enumerate(clients):
            got = [m for m in receive_until(ws, sent) if not m.startswith("sync-")]
            assert sorted(got) == sorted(sent), f"user {i} of {target.name} got {got}"
    assert server.alive()


@pytest.mark.parametrize("target", WS_TARGETS, ids=[t.name for t in WS_TARGETS])
def test_echo_answers_the_sender_only(target: Target, started: list[Running]) -> None:
    server = start(target, "echo")
    started.append(server)
    with contextlib.ExitStack() as stack:
        clients = ws_clients(stack, server.port)
        for i, ws in enumerate(clients):
            ws.send(f"only for {i}")
        for i, ws in enumerate(clients):
            assert ws.recv(timeout=10) == f"only for {i}"
        for ws in clients:  # and nothing else arrives
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
        big = "x" * (1024 * 1024)  # the large scenario's message size
        clients[0].send(big)
        assert clients[0].recv(timeout=30) == big
    assert server.alive()


# --- the raw relay, with plain sockets --------------------------------------------------------

def raw_receive_until(sock: socket.socket, *want: bytes, seconds: float = 10.0) -> bytes:
    """Bytes received until every one of `want` is among them (or the time is up)."""
    got = b""
    deadline = time.monotonic() + seconds
    while not all(w in got for w in want) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_raw_relay_chat_and_echo(started: list[Running]) -> None:
    chat = start(RAW, "chat")
    started.append(chat)
    users = [socket.create_connection(("127.0.0.1", chat.port), timeout=10) for _ in range(3)]
    try:
        for attempt in range(20):  # until the relay has accepted all three
            token = f"<sync {attempt}>".encode()
            users[0].sendall(token)
            if all(token in raw_receive_until(u, token, seconds=1.0) for u in users):
                break
        else:
            raise AssertionError("the relay did not pass the sync message to everyone")
        for i, u in enumerate(users):
            u.sendall(f"<from {i}>".encode())
        sent = [f"<from {i}>".encode() for i in range(3)]
        for u in users:
            got = raw_receive_until(u, *sent)
            assert all(m in got for m in sent), got
    finally:
        for u in users:
            u.close()

    echo = start(RAW, "echo")
    started.append(echo)
    a, b = (socket.create_connection(("127.0.0.1", echo.port), timeout=10) for _ in range(2))
    try:
        a.sendall(b"<ping a>")
        assert b"<ping a>" in raw_receive_until(a, b"<ping a>")
        b.settimeout(0.3)
        with pytest.raises(TimeoutError):
            b.recv(100)
    finally:
        a.close()
        b.close()


# --- the load generator -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        reason = "no C compiler: the load generator cannot be built"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so the load generator tests must run",
                        pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    # As bench/run.py builds it: --tls needs OpenSSL (Debian: libssl-dev).
    subprocess.run([cc, "-O2", "-Wall", "-o", str(out),
                    str(ROOT / "bench" / "loadgen.c"), "-lssl", "-lcrypto", "-lz"],
                   check=True)  # libssl-dev, zlib1g-dev
    return str(out)


def drive(loadgen: str, server: Running, *args: str) -> dict[str, Any]:
    argv = [loadgen, "--port", str(server.port), "--server-pid", str(server.pid),
            "--timeout", "30", *args]
    if server.target.proto == "raw":
        argv.append("--raw")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


LOADGEN_TARGETS = [RAW, *WS_TARGETS]


@pytest.mark.parametrize("target", LOADGEN_TARGETS, ids=[t.name for t in LOADGEN_TARGETS])
def test_loadgen_counts_every_delivery(target: Target, loadgen: str,
                                       started: list[Running]) -> None:
    size = ["--size", "40"]
    chat = start(target, "chat")
    started.append(chat)
    fan = drive(loadgen, chat, "--mode", "fanout", "--conns", "5", "--senders", "2",
                "--messages", "30", "--window", "4", *size)
    assert fan["ok"] and fan["failed"] == 0
    assert fan["expected_per_user"] == 60 and fan["min_user_got"] == 60
    assert fan["deliveries"] == 5 * 60
    assert fan["gen_cpu_s"] >= 0 and fan["srv_cpu_s"] >= 0

    idle = drive(loadgen, chat, "--mode", "idle", "--conns", "20", "--broadcasts", "2", *size)
    assert idle["ok"] and idle["opened"] == 20 and len(idle["broadcast_s"]) == 2
    assert idle["rss_before_kb"] > 0 and idle["rss_after_kb"] > 0
    chat.stop()

    echo = start(target, "echo")
    started.append(echo)
    res = drive(loadgen, echo, "--mode", "echo", "--conns", "4", "--window", "3",
                "--messages", "50", *size)
    assert res["ok"] and res["messages"] == 4 * 50 and res["failed"] == 0
    assert 0 < res["lat_p50_ms"] <= res["lat_p99_ms"]
    big = drive(loadgen, echo, "--mode", "echo", "--conns", "1", "--window", "2",
                "--messages", "3", "--size", str(1024 * 1024))
    assert big["ok"] and big["messages"] == 3
    assert echo.alive()


TLS_TARGETS = [t for t in WS_TARGETS if t.tls]


@pytest.mark.parametrize("target", TLS_TARGETS, ids=[t.name for t in TLS_TARGETS])
def test_wss_targets_and_loadgen_over_tls(target: Target, loadgen: str, started: list[Running],
                                          tmp_path: Path) -> None:
    """The wss scenarios: every target serves wss:// with the one certificate (checked with
    the websockets client, which trusts its CA), and the generator's --tls counts are exact."""
    from tls import WebsocketsClient, make_certificates, require_openssl

    require_openssl()
    certs = make_certificates(tmp_path / "tls")
    files = (str(certs.cert), str(certs.key))
    chat = start(target, "chat", tls=files)
    started.append(chat)
    url = f"wss://localhost:{chat.port}/"
    with contextlib.ExitStack() as stack:
        users = [stack.enter_context(WebsocketsClient(url, certs.client_context(),
                                                      compression=None)) for _ in range(3)]
        time.sleep(0.2)  # every user is in the chat before the message
        users[0].send("over tls")
        assert [u.recv(timeout=10) for u in users] == ["over tls"] * 3
    fan = drive(loadgen, chat, "--tls", "--mode", "fanout", "--conns", "5", "--senders", "2",
                "--messages", "30", "--window", "4", "--size", "40")
    assert fan["ok"] and fan["proto"] == "wss" and fan["failed"] == 0
    assert fan["min_user_got"] == 60 and fan["deliveries"] == 5 * 60
    chat.stop()
    echo = start(target, "echo", tls=files)
    started.append(echo)
    res = drive(loadgen, echo, "--tls", "--mode", "echo", "--conns", "4", "--window", "3",
                "--messages", "50", "--size", "40")
    assert res["ok"] and res["messages"] == 4 * 50 and res["failed"] == 0
    # One 1 MiB message in flight at a time, as no wss scenario sends large ones: with two,
    # uWebSockets.js (uwebsockets 3.0.6) closes TLS connections abruptly (1006) when megabytes
    # go both ways at once (docs/performance.md); its plain-ws echo takes the window of 2 above.
    big = drive(loadgen, echo, "--tls", "--mode", "echo", "--conns", "1", "--window", "1",
                "--messages", "3", "--size", str(1024 * 1024))
    assert big["ok"] and big["messages"] == 3
    assert echo.alive()


DEFLATE_TARGETS = [t for t in WS_TARGETS if t.name in bench_run.DEFLATE_TARGETS]


@pytest.mark.parametrize("target", DEFLATE_TARGETS, ids=[t.name for t in DEFLATE_TARGETS])
def test_loadgen_deflate_inflates_what_was_sent(target: Target, loadgen: str,
                                               started: list[Running]) -> None:
    """--deflate: every connection agrees permessage-deflate, and every delivery is a
    compressed message that zlib inflates to one of the messages sent, byte for byte."""
    chat = start(target, "chat", deflate=True)
    started.append(chat)
    fan = drive(loadgen, chat, "--mode", "fanout", "--conns", "6", "--senders", "3",
                "--messages", "40", "--window", "4", "--size", "200", "--deflate")
    assert fan["ok"] and fan["failed"] == 0, fan
    assert fan["deliveries"] == 6 * 3 * 40
    z = fan["deflate"]
    assert z["agreed"] == 6 and z["mismatch"] == 0 and z["inflate_errors"] == 0
    assert z["compressed_messages"] >= fan["deliveries"]  # (and the sync broadcasts)
    assert 0 < z["wire_ratio"] < 0.6
    idle = drive(loadgen, chat, "--mode", "idle", "--conns", "10", "--broadcasts", "2",
                 "--size", "200", "--deflate")
    assert idle["ok"] and idle["deflate"]["agreed"] == 10 and idle["deflate"]["mismatch"] == 0


class CorruptingDeflateRelay:
    """A chat relay written here that agrees permessage-deflate and sends every message
    compressed by zlib (context takeover), but changes one byte of every `every`-th message
    before compressing it: the generator must count exactly those as mismatches."""

    def __init__(self, users: int, every: int) -> None:
        self.users, self.every = users, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pid = os.getpid()
        self.corrupted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conns: list[tuple[socket.socket, Any]] = []
        self.listener.settimeout(20)
        buffers: dict[socket.socket, bytearray] = {}
        for _ in range(self.users):
            conn, _ = self.listener.accept()
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                         b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
            conn.setblocking(False)
            conns.append((conn, zlib.compressobj(6, zlib.DEFLATED, -15)))
            buffers[conn] = bytearray(head.split(b"\r\n\r\n", 1)[1])
        sel = selectors.DefaultSelector()
        for conn, _ in conns:
            sel.register(conn, selectors.EVENT_READ)
        count = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:  # the generator is done
                    return
                if not data:
                    return
                buf = buffers[sock]
                buf += data
                while len(buf) >= 2:
                    n = buf[1] & 0x7F
                    at = 2 + (2 if n == 126 else 0)
                    if n == 126 and len(buf) >= 4:
                        n = int.from_bytes(buf[2:4], "big")
                    if len(buf) < at + 4 + n:
                        break
                    mask = buf[at:at + 4]
                    payload = bytearray(b ^ mask[i % 4] for i, b in enumerate(
                        buf[at + 4:at + 4 + n]))
                    del buf[:at + 4 + n]
                    count += 1
                    if count % self.every == 0:
                        payload[-3] ^= 1  # a letter of the text becomes another
                        self.corrupted += 1
                    for conn, compressor in conns:
                        body = (compressor.compress(bytes(payload))
                                + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
                        head = (bytes((0xC1, len(body))) if len(body) < 126
                                else bytes((0xC1, 126)) + len(body).to_bytes(2, "big"))
                        conn.setblocking(True)
                        conn.sendall(head + body)
                        conn.setblocking(False)


def test_loadgen_deflate_sees_a_wrong_byte(loadgen: str) -> None:
    relay = CorruptingDeflateRelay(users=3, every=7)
    argv = [loadgen, "--port", str(relay.port), "--timeout", "3", "--mode", "fanout",
            "--conns", "3", "--senders", "1", "--messages", "30", "--window", "30",
            "--size", "200", "--deflate"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    z = result["deflate"]
    assert z["agreed"] == 3 and z["inflate_errors"] == 0
    assert relay.corrupted >= 4
    assert z["mismatch"] == 3 * relay.corrupted  # every user saw each changed message
    assert not result["ok"]  # and those messages were not counted as delivered


def test_loadgen_counts_refused_connections(loadgen: str) -> None:
    """With --allow-fail, connections nobody accepts are counted, not fatal."""
    port = free_port()  # nothing listens there
    proc = subprocess.run([loadgen, "--port", str(port), "--mode", "idle", "--conns", "3",
                           "--allow-fail", "--connect-timeout", "5", "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 or json.loads(proc.stdout)["opened"] == 0


# --- the open-loop checker ---------------------------------------------------------------------

def openloop(loadgen: str, port: int, pid: int | None, users: int, rates: str,
             *extra: str) -> dict[str, Any]:
    """One short open-loop ladder; the latency limit is out of reach (no timing is asserted)."""
    argv = [loadgen, "--port", str(port), "--timeout", "30", "--mode", "openloop",
            "--conns", str(users), "--rates", rates, "--step-s", "0.5", "--drain-s", "1",
            "--settle-s", "0.5", "--size", "32", "--p99-limit-ms", "1e9",
            "--stop-p99-ms", "1e9", *extra]
    if pid:
        argv += ["--server-pid", str(pid)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


OPENLOOP_TARGETS = [OURS, *NODE_TARGETS]


@pytest.mark.parametrize("target", OPENLOOP_TARGETS, ids=[t.name for t in OPENLOOP_TARGETS])
def test_openloop_chat_loses_nothing(target: Target, loadgen: str,
                                     started: list[Running]) -> None:
    """Every (message, user) pair arrives once and in order: our server, and the Node.js
    peers with their own broadcast (uWS's publish would skip a reader over its limit)."""
    server = start(target, "chat")
    started.append(server)
    res = openloop(loadgen, server.port, server.pid, 50, "50,100")
    assert res["ok"] and res["connect_failed"] == 0 and res["corrupt"] == 0
    assert [st["rate"] for st in res["steps"]] == [50, 100]
    for st in res["steps"]:
        assert st["messages"] > 0 and st["recipients"] == 50
        assert st["delivered"] == st["expected"] == st["messages"] * 50
        assert (st["lost"], st["dup"], st["ooo"], st["closed"]) == (0, 0, 0, 0), st
        assert st["drained"] and st["ok"], st
        assert 0 < st["lat_p50_ms"] <= st["lat_p99_ms"] <= st["lat_max_ms"]
        assert st["srv_cpu_s"] >= 0 and st["gen_cpu_s"] >= 0
    assert res["capacity_msgs_per_s"] == 100 and res["stopped"] == "ladder done"
    assert server.alive()


class FaultyRelay:
    """A WebSocket chat relay (standard library, a thread) that errs on purpose.

    Every text message goes to every user, except: with `drop`, the first user never gets
    messages whose id is a multiple of 5; with `dup`, the second user gets those that are a
    multiple of 7 twice; with `swap`, the first user gets every message whose id is 1 mod 4
    after the next one (it is held until then, or for at most 0.2 s). It counts what it did.
    Payloads that carry no id (the generator's sync broadcast) are passed on untouched.
    """

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.dropped = self.duplicated = self.swapped = 0
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.bufs: dict[socket.socket, bytearray] = {}
        self.users: list[socket.socket] = []  # handshaken, in order
        self.held: tuple[bytes, float] | None = None  # swap: a frame waiting for the next
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for sock in [self.listener, *self.bufs]:
            sock.close()

    def serve(self) -> None:
        while not self.stopping:
            if self.held and time.monotonic() - self.held[1] > 0.2:
                self.send(self.users[0], self.held[0])
                self.held = None
            for key, _ in self.sel.select(0.02):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    user, _ = sock.accept()
                    user.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.bufs[user] = bytearray()
                    self.sel.register(user, selectors.EVENT_READ)
                else:
                    self.receive(sock)

    def drop_user(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        self.bufs.pop(sock, None)
        if sock in self.users:
            self.users.remove(sock)
        sock.close()

    def send(self, sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)

    def receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop_user(sock)
            return
        buf = self.bufs[sock]
        buf += data
        if sock not in self.users:
            head, sep, rest = bytes(buf).partition(b"\r\n\r\n")
            if not sep:
                return
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + self.GUID.encode()).digest())
            self.send(sock, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.users.append(sock)
            buf[:] = rest
        while len(buf) >= 6:  # client frames: masked, short (the generator sends 32 bytes)
            length = buf[1] & 0x7F
            if length > 125 or len(buf) < 6 + length:
                break
            mask, payload = buf[2:6], buf[6:6 + length]
            text = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            op = buf[0] & 0x0F
            del buf[:6 + length]
            if op == 8:
                self.drop_user(sock)
                return
            self.broadcast(text)

    def broadcast(self, payload: bytes) -> None:
        frame = bytes([0x81, len(payload)]) + payload
        try:
            msg_id: int | None = int(payload[:16], 16)
        except ValueError:
            msg_id = None
        for i, user in enumerate(list(self.users)):
            if msg_id is not None and i == 0 and self.fault == "drop" and msg_id % 5 == 0:
                self.dropped += 1
                continue
            if msg_id is not None and i == 1 and self.fault == "dup" and msg_id % 7 == 0:
                self.duplicated += 1
                self.send(user, frame)
            if msg_id is not None and i == 0 and self.fault == "swap":
                if self.held:  # this one overtakes the held one
                    self.send(user, frame + self.held[0])
                    self.held = None
                    self.swapped += 1
                    continue
                if msg_id % 4 == 1:
                    self.held = (frame, time.monotonic())
                    continue
            self.send(user, frame)


@pytest.fixture
def faulty() -> Iterator[Callable[[str], FaultyRelay]]:
    relays: list[FaultyRelay] = []

    def make(fault: str) -> FaultyRelay:
        relays.append(FaultyRelay(fault))
        return relays[-1]

    yield make
    for relay in relays:
        relay.stop()


def test_openloop_checker_sees_lost_messages(loadgen: str,
                                             faulty: Callable[[str], FaultyRelay]) -> None:
    relay = faulty("drop")
    res = openloop(loadgen, relay.port, None, 20, "50,100")
    assert res["ok"]  # the run is valid; its step is not
    assert len(res["steps"]) == 1, "climbing must stop at a step that lost messages"
    st = res["steps"][0]
    assert relay.dropped > 0
    assert st["lost"] == relay.dropped and st["late"] == 0
    assert st["delivered"] == st["expected"] - relay.dropped
    assert st["dup"] == 0 and st["closed"] == 0
    assert not st["ok"] and st["why"] == "lost" and not st["drained"]
    assert res["capacity_msgs_per_s"] == 0 and res["stopped"] == "lost"


def test_openloop_checker_sees_duplicates(loadgen: str,
                                          faulty: Callable[[str], FaultyRelay]) -> None:
    relay = faulty("dup")
    res = openloop(loadgen, relay.port, None, 20, "50,100")
    assert len(res["steps"]) == 1, "climbing must stop at a step with duplicates"
    st = res["steps"][0]
    assert relay.duplicated > 0
    assert st["dup"] == relay.duplicated and st["lost"] == 0
    assert st["delivered"] == st["expected"]  # every pair arrived, some twice
    assert not st["ok"] and st["why"] == "dup"
    assert res["capacity_msgs_per_s"] == 0 and res["stopped"] == "dup"


def test_openloop_checker_sees_reordering(loadgen: str,
                                          faulty: Callable[[str], FaultyRelay]) -> None:
    """One user, so every message is from the same sender: each swap is one reorder."""
    relay = faulty("swap")
    res = openloop(loadgen, relay.port, None, 1, "200")
    st = res["steps"][0]
    assert relay.swapped > 0
    assert st["ooo"] == relay.swapped
    assert st["lost"] == 0 and st["dup"] == 0 and st["delivered"] == st["expected"]


# --- the runner without Node.js ---------------------------------------------------------------

@pytest.mark.parametrize("ci", [True, False], ids=["CI", "not-CI"])
def test_run_without_node_fails_or_skips_clearly(ci: bool, tmp_path: Path) -> None:
    """bench/run.py with neither node nor npm on PATH: under CI=true one line and a non-zero
    exit; otherwise it says why each Node.js target is skipped (and stops: none is left)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # an empty folder: no node, no npm
    if ci:
        env["CI"] = "true"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only",
                           "node-ws,uws", "--scenario", "echo", "--no-docs"],
                          capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stderr
    if ci:
        assert len(lines) == 1, lines
        assert lines[0].startswith("bench: CI=true and the node-ws target cannot run: node is "
                                   "not installed"), lines
    else:
        assert [line.split(":")[0:2] for line in lines] == [
            ["bench", " skipping node-ws"], ["bench", " skipping uws"],
            ["bench", " no target left to run"]], lines
        assert all("node is not installed" in line for line in lines[:2]), lines
    assert "Traceback" not in proc.stderr


# --- the report -------------------------------------------------------------------------------

def test_report_medians_and_ratios() -> None:
    runs = []
    for target, rates in (("ours", [300.0, 100.0, 200.0]), ("websockets", [100.0, 50.0, 150.0])):
        for r, rate in enumerate(rates):
            runs.append({"target": target, "scenario": "fanout", "case": "100", "repeat": r,
                         "ok": True, "deliveries_per_s": rate, "t_last_s": 1.0,
                         "gen_cpu_s": 0.1, "srv_cpu_s": 1.0})
    runs.append({"target": "websockets", "scenario": "fanout", "case": "100", "repeat": 3,
                 "ok": False, "error": "boom"})
    targets = [t for t in TARGETS if t.name in ("ours", "websockets")]
    table = bench_run.side_by_side(bench_run.FULL, runs, targets)
    row = next(line for line in table.splitlines() if "deliveries/s" in line)
    assert "| 200 | 100 | 2.00x |" in row  # medians 200 and 100 (the failed run left out)
    checks = bench_run.check_targets(runs)
    assert any("100 users" in c and "**met**" in c and "2.00x" in c for c in checks)
    cpu, below, total = bench_run.cpu_table(runs, targets)
    assert (below, total) == (6, 6)


def test_report_openloop_capacity_and_steps() -> None:
    def step(rate: float, ok: bool, why: str | None = None, lost: int = 0) -> dict[str, Any]:
        return {"rate": rate, "deliveries_per_s": rate * 1000, "lat_p50_ms": 1.0,
                "lat_p99_ms": 10.0 if ok else 80.0, "lat_max_ms": 90.0, "lost": lost,
                "late": 0, "dup": 0, "ooo": 0, "closed": 0, "send_late_max_ms": 0.5,
                "wall_s": 2.0, "gen_cpu_s": 0.2, "srv_cpu_s": 1.0, "ok": ok, "why": why}

    def run(target: str, cap: float, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"target": target, "scenario": "openloop", "case": "1000", "repeat": 0,
                "ok": True, "capacity_msgs_per_s": cap, "steps": steps, "stopped": "lost",
                "gen_cpu_s": 1.0, "srv_cpu_s": 3.0}

    runs = [run("ours", 200, [step(100, True), step(200, True), step(300, False, "p99"),
                              step(500, False, "lost", lost=7)]),
            run("websockets", 0, [step(10, False, "p99"), step(20, False, "lost", lost=3)]),
            {"target": "raw-relay", "scenario": "openloop", "case": "1000", "repeat": 0,
             "ok": False, "skipped": True, "error": bench_run.RAW_OPENLOOP}]
    targets = [t for t in TARGETS if t.name in ("ours", "websockets", "raw-relay")]
    plan = bench_run.FULL
    table = bench_run.side_by_side(plan, runs, targets)
    row = next(line for line in table.splitlines() if "open-loop" in line)
    lowest = f"< {plan.openloop_rates[0]:g}"  # websockets passed no step of the ladder
    assert f"| 200 | {lowest} | n/a |" in row  # and the relay was not run
    assert "nothing lost" in row and "p99 < 50 ms" in row
    steps = bench_run.openloop_table(plan, runs, targets)
    assert "| ours | 200 |" in steps and "**pass: capacity**" in steps
    assert "pairs lost" in steps and "| 7 |" in steps
    assert bench_run.openloop_capacities(runs)["1000"] == {
        "capacity_msgs_per_s": {"ours": 200, "websockets": 0}, "ours_over_peer": {}}
    runs[1]["capacity_msgs_per_s"] = 50
    assert bench_run.openloop_capacities(runs)["1000"]["ours_over_peer"] == {"websockets": 4.0}
    cpu, below, total = bench_run.cpu_table(runs, targets)
    assert "openloop 1000 (at capacity)" in cpu and "10% / 50%" in cpu
    assert (below, total) == (2, 2)
    assert "raw-relay" in bench_run.failures_table(runs)
