"""The benchmark's own correctness: every target delivers what the benchmark counts on.

No timing is asserted here. Each benchmark target (bench/targets.py) is started as bench/run.py
starts it, and three real clients check its semantics: `chat` delivers every message to every
user, sender included; `echo` answers the sender only. Targets whose library is not installed in
this environment are skipped (the test venv has `websockets`; `websocket-server` and
`simple-websocket-server` live only in bench/.venv, made by `make bench`). The load generator
(bench/loadgen.c) is compiled with gcc and its counts are checked against the raw relay and every
WebSocket target that can run here.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402
from targets import OURS, TARGETS, Running, Target, command, free_port  # noqa: E402

WS_TARGETS = [t for t in TARGETS if t.proto == "ws"]
RAW = next(t for t in TARGETS if t.proto == "raw")


def unavailable(target: Target) -> str | None:
    """Why `target` cannot run in this environment (None: it can)."""
    if target is OURS and not OURS.script.exists():
        return "server.py does not exist yet"
    if target.module and importlib.util.find_spec(target.module) is None:
        return f"{target.module} is not installed here (it is in bench/.venv: make bench)"
    return None


def start(target: Target, mode: str) -> Running:
    reason = unavailable(target)
    if reason:
        pytest.skip(f"{target.name}: {reason}")
    port = free_port() if target is OURS else 0
    argv = command(target, mode, sys.executable, port=port)
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
        pytest.skip("no C compiler: the load generator cannot be built")
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(out),
                    str(ROOT / "bench" / "loadgen.c")], check=True)
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


def test_loadgen_counts_refused_connections(loadgen: str) -> None:
    """With --allow-fail, connections nobody accepts are counted, not fatal."""
    port = free_port()  # nothing listens there
    proc = subprocess.run([loadgen, "--port", str(port), "--mode", "idle", "--conns", "3",
                           "--allow-fail", "--connect-timeout", "5", "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 or json.loads(proc.stdout)["opened"] == 0


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
