#!/usr/bin/env python3
"""Scaling benchmark (issue 13): one process, one process with Redis, two workers via Redis.

    python3 bench/scaling.py --quick        # indicative, ~1 min
    python3 bench/scaling.py                # the fuller run

For each configuration it starts a real redis-server (tests/redis_server.py: a free loopback
port, persistence off) where needed and our server, then runs bench/loadgen.c (compiled by
bench/run.py's `ensure_loadgen`) twice against it:

- fanout (closed loop): 10 senders, every user must receive every message; deliveries/s;
- openloop at fixed rates: Poisson arrivals from random senders, every (message, user) pair
  checked for loss, duplicates and order; p50/p99 latency from the scheduled send time.

With --workers 2 the kernel spreads the users over both workers (SO_REUSEPORT), so most
deliveries cross Redis: the latency difference against one process is the Redis hop.
On a 2-core machine the generator needs a core too, so the table also gives the server's
CPU time per delivery (every worker, the supervisor and redis-server, from /proc), which
shows what scaling out costs without the generator's share. Numbers are indicative: compare
ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
from redis_server import RedisServer, free_port  # noqa: E402
from run import ensure_loadgen  # noqa: E402

RESULTS = BENCH / "results"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_connectable(port: int, timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port}")


def start_server(port: int, extra: list[str], cpu: int | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(ROOT / "server.py"), "127.0.0.1", str(port), "-q",
            "--max-connections", "20000", *extra]
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=pin)
    wait_connectable(port)
    return proc


def run_loadgen(loadgen: str, port: int, args: list[str], gen_cpu: int | None,
                timeout: float) -> dict[str, Any]:
    gen = [loadgen, "--host", "127.0.0.1", "--port", str(port), "--timeout", str(timeout),
           *args]
    pin = (lambda: os.sched_setaffinity(0, {gen_cpu})) if gen_cpu is not None else None
    proc = subprocess.run(gen, capture_output=True, text=True, preexec_fn=pin,
                          timeout=timeout * 2 + 60)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-300:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(name: str, extra: list[str], redis: RedisServer | None, loadgen: str,
            quick: bool, cores: list[int]) -> dict[str, Any]:
    users = 200 if quick else 1000
    port = free_port()
    single = "--workers" not in extra
    server = start_server(port, extra, cores[0] if single and len(cores) > 1 else None)
    gen_cpu = cores[-1] if len(cores) > 1 else None
    row: dict[str, Any] = {"config": name, "users": users}
    try:
        time.sleep(1.0)  # workers: both up and subscribed
        pids = [server.pid, *children(server.pid)] + ([redis.pid] if redis and redis.pid
                                                      else [])
        row["processes"] = len(pids)
        per_sender = max(1, (400_000 if quick else 2_000_000) // (users * 10))
        before = cpu_seconds(pids)
        fan = run_loadgen(loadgen, port, ["--mode", "fanout", "--conns", str(users),
                                          "--senders", "10", "--messages", str(per_sender),
                                          "--window", "32", "--size", "32"], gen_cpu, 60)
        server_cpu = cpu_seconds(pids) - before
        row["fanout_deliveries_per_s"] = fan.get("deliveries_per_s")
        row["fanout_ok"] = fan.get("ok")
        row["fanout_deliveries"] = fan.get("deliveries")
        row["cpu_us_per_delivery"] = (server_cpu / fan["deliveries"] * 1e6
                                      if fan.get("deliveries") else None)
        rates = "50,200" if quick else "100,300,1000"
        before = cpu_seconds(pids)
        ol = run_loadgen(loadgen, port, ["--mode", "openloop", "--conns", str(users),
                                         "--size", "32", "--rates", rates, "--step-s", "1.5",
                                         "--drain-s", "2", "--settle-s", "2",
                                         "--p99-limit-ms", "50", "--max-fails", "3", "--seed", "13",
                                         "--connect-timeout", "60"], gen_cpu, 60)
        row["openloop_cpu_s"] = cpu_seconds(pids) - before
        row["openloop"] = [{k: step.get(k) for k in ("rate", "deliveries_per_s", "lat_p50_ms",
                                                      "lat_p99_ms", "lost", "dup", "ooo", "ok")}
                           for step in ol.get("steps", [])]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, indicative runs")
    args = parser.parse_args()
    loadgen = ensure_loadgen()
    cores = sorted(os.sched_getaffinity(0))
    rows = []
    rows.append(measure("one process", [], None, loadgen, args.quick, cores))
    with RedisServer() as redis:
        rows.append(measure("one process + Redis", ["--redis", redis.url], redis, loadgen,
                            args.quick, cores))
    with RedisServer() as redis:
        rows.append(measure("2 workers + Redis", ["--workers", "2", "--redis", redis.url],
                            redis, loadgen, args.quick, cores))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "scaling.json"
    out.write_text(json.dumps(rows, indent=1))
    print("| config | users | fan-out deliveries/s | server CPU µs/delivery | "
          "open loop: rate -> p50 / p99 ms (lost, dup, out of order) |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        steps = "; ".join(f"{s['rate']:g}/s -> {s['lat_p50_ms']:.1f} / {s['lat_p99_ms']:.1f}"
                          f" ({s['lost']}, {s['dup']}, {s['ooo']})" for s in row["openloop"])
        cpu = row["cpu_us_per_delivery"]
        print(f"| {row['config']} | {row['users']} | {row['fanout_deliveries_per_s']:,.0f} | "
              f"{cpu:.2f} | {steps} |" if cpu is not None else f"| {row['config']} | failed |")
    print(f"(raw results: {out.relative_to(ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
