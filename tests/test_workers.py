"""--workers N (issue 13, point 5): processes sharing one port through SO_REUSEPORT, joined
by a real redis-server; Ctrl-C stops them all; a worker that dies is started again."""
from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

import pytest
from conftest import ServerProcess
from redis_server import RedisServer
from test_redis_link import chat_round, wait_subscribed
from wsclient import Client, wait_until

Start = Callable[..., ServerProcess]


def worker_pids(server: ServerProcess, count: int) -> dict[int, int]:
    """{worker number: PID} of the workers serving now (the last start of each)."""
    for number in range(1, count + 1):
        server.wait_for_log(rf"\[worker {number}\] serving on port {server.port}")
    found: dict[int, int] = {}
    for number, pid in re.findall(r"worker (\d+) started \(PID (\d+)\)", server.log):
        found[int(number)] = int(pid)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_need_redis(start_server: Start) -> None:
    with pytest.raises(AssertionError) as failed:
        start_server("--workers", "2")
    text = str(failed.value)
    assert "server.py: error: --workers 2 needs --redis" in text and "Traceback" not in text


def test_two_workers_share_the_port_and_chat_as_one(
        start_server: Start, start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    server = start_server("--workers", "2", "--redis", redis.url)
    pids = worker_pids(server, 2)
    assert len(pids) == 2 and server.proc.pid not in pids.values()
    users = [Client(server.port).handshake("/") for _ in range(16)]
    # The kernel spread them: both workers have users (16 connections all hashed to one
    # of two listeners: 1 in 32,768).
    for number in (1, 2):
        server.wait_for_log(rf"\[worker {number}\] user \d+ \(127\.0\.0\.1:\d+\) joined")
    wait_subscribed(redis, "/", 2)
    chat_round(users[:4], users, 20)

    # A worker killed (as a crash) is logged and started again; chat goes on.
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(rf"worker 1 \(PID {victim}\) died \(killed by signal SIGKILL\)")
    assert wait_until(lambda: worker_pids(server, 2)[1] != victim, timeout=10)
    assert wait_until(lambda: len(re.findall(rf"\[worker 1\] serving on port {server.port}",
                                             server.log)) == 2, timeout=10)
    survivors = [user for user in users if not user.at_eof(0.05)]
    assert 0 < len(survivors) < len(users)
    newcomers = [Client(server.port).handshake("/") for _ in range(8)]
    wait_subscribed(redis, "/", 2)
    chat_round(survivors[:2] + newcomers[:2], survivors + newcomers, 10)

    # Ctrl-C: every worker closes its users with 1001 and the supervisor exits 0.
    current = worker_pids(server, 2)
    started = time.monotonic()
    assert server.stop(signal.SIGINT, timeout=15) == 0
    assert time.monotonic() - started < 12
    for user in survivors[:3] + newcomers[:3]:
        assert user.recv_close()[0] == 1001
    assert not any(alive(pid) for pid in current.values())
    assert "All workers stopped" in server.log and "Traceback" not in server.log
