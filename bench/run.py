#!/usr/bin/env python3
"""The chat server's benchmark: ours against three Python WebSocket servers, two Node.js ones
(ws and uWebSockets.js) and a raw-TCP relay.

    python3 bench/run.py                 # full run (make bench): ~20 min, writes the docs
    python3 bench/run.py --quick         # fewer repeats, smaller runs (make bench-quick): < 1 min
    python3 bench/run.py --only ours --scenario fanout --users 100            # one case
    python3 bench/run.py --only ours --scenario fanout --users 100 --profile cprofile
    python3 bench/run.py --scenario openloop --no-docs       # the open-loop ladder, every target

Run with the system python3. It creates bench/.venv (the Python peers and matplotlib, never
needed by the server), installs the Node.js peers into bench/node/node_modules with `npm ci`
when a Node.js target is run (node and npm must be on PATH: under CI=true their absence is an
error, otherwise those targets are skipped with the reason), compiles bench/loadgen.c with gcc,
and then, for every scenario and target, starts the target pinned to one core, runs the load
generator pinned to the other, and stops the target by its PID. Every run has a deadline.
Results go to bench/results/ (JSON and the Markdown table); a full run without
--only/--scenario/--users also rewrites the results part of docs/performance.md and
docs/fanout.png.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import (  # noqa: E402
    BY_NAME,
    NODE_DIR,
    OURS,
    ROOT,
    TARGETS,
    Running,
    Target,
    command,
    free_port,
    python_for,
)

BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
VPY = VENV / "bin" / "python"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = VENV / "loadgen"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "performance.md"
PLOT = ROOT / "docs" / "fanout.png"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
SCENARIOS = ("echo", "fanout", "idle", "large", "select", "openloop", "wss-echo", "wss-fanout",
             "deflate")
TLS_DIR = VENV / "tls"  # the one certificate every target serves wss:// with (made by openssl)
# permessage-deflate (RFC 7692) negotiated by every client: the targets that can compress.
DEFLATE_TARGETS = ("ours", "websockets")
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# What is run: one Plan for the full run and a smaller one for --quick.

@dataclass(frozen=True)
class Plan:
    repeats: int = 5
    echo_users: int = 100
    echo_window: int = 8  # messages in flight per connection (pipelined)
    echo_messages: int = 2000  # per connection, at most
    duration: float = 2.0  # echo and large stop sending after this many seconds
    small: int = 32  # bytes of every small text message
    fanout_users: tuple[int, ...] = (10, 100, 1000)
    fanout_senders: int = 10
    wss_users: int = 100  # wss-echo and wss-fanout: the echo and fan-out cases, over TLS
    fanout_window: int = 32  # a sender may be this many messages (x senders) ahead of itself
    fanout_deliveries: int = 400_000  # per run: users * senders * messages
    idle_users: tuple[int, ...] = (1000, 5000, 10000)
    idle_repeats: int = 3
    idle_broadcasts: int = 5
    large_users: int = 4
    large_window: int = 2
    large_messages: int = 256  # per connection, of 1 MiB each, at most
    select_fanout_users: tuple[int, ...] = (100, 1000)
    select_connect_users: int = 1100  # > FD_SETSIZE (1,024)
    # open-loop chat: a ladder of message rates (msg/s into the server), Poisson arrivals from
    # random senders; climbing stops at the first clear failure (see loadgen.c)
    openloop_users: int = 1000
    openloop_rates: tuple[float, ...] = (5, 10, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
                                         1000, 1500, 2000, 3000, 5000, 7000, 10000)
    openloop_step_s: float = 2.0  # seconds of messages per step
    openloop_drain_s: float = 3.0  # after a step's last send: then missing pairs are lost
    openloop_settle_s: float = 5.0  # after a lossy last step: were the missing ones late?
    openloop_p99_ms: float = 50.0
    openloop_repeats: int = 3
    openloop_timeout: float = 150.0  # the whole ladder, per target
    # deflate: fan-out and idle users with compression negotiated, ~200-byte JSON events
    deflate_size: int = 200
    deflate_fanout_users: tuple[int, ...] = (100, 1000)
    deflate_idle_users: tuple[int, ...] = (1000, 5000)
    timeout: float = 60.0  # per timed phase


FULL = Plan()
QUICK = Plan(repeats=1, duration=0.5, fanout_deliveries=60_000, idle_repeats=1,
             idle_broadcasts=2, timeout=20.0, openloop_rates=(10, 30, 100, 300, 1000, 3000),
             openloop_repeats=1, openloop_step_s=1.0, openloop_drain_s=2.0,
             openloop_settle_s=2.0, openloop_timeout=40.0, deflate_idle_users=(1000,))


# ---------------------------------------------------------------------------------------------
# Setting up: the bench venv, the load generator, the cores.

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_venv() -> str:
    """Create bench/.venv with the peers and matplotlib (once; again when requirements change)."""
    req = BENCH / "requirements.txt"
    stamp = VENV / ".bench-requirements"
    want = req.read_text()
    if VPY.exists() and stamp.exists() and stamp.read_text() == want:
        return str(VPY)
    log("bench: creating bench/.venv with the peers (first run only) ...")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VPY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(req)], check=True)
    stamp.write_text(want)
    return str(VPY)


class NodePeersUnavailable(RuntimeError):
    """The Node.js peers cannot be installed or run here; the message says why, in one line."""


@dataclass(frozen=True)
class NodePeers:
    """What `install_node_peers` found: versions (Node.js and each npm package), and why a
    package that is installed still cannot be loaded (by package name)."""
    versions: dict[str, str]
    unusable: dict[str, str]


NODE_LOCK = NODE_DIR / "package-lock.json"
NODE_MODULES = NODE_DIR / "node_modules"
NODE_STAMP = NODE_MODULES / ".bench-package-lock"  # the lock file `npm ci` last installed
# Loads every package of bench/node/package.json the way the adapters do and prints, as JSON,
# the versions of those that load and, for those that do not, one line of the error: the last
# that starts with "Error: " (uwebsockets' loader puts the reason of the failed binary load,
# e.g. a missing glibc version, after its own message), else the first.
NODE_CHECK = """
const path = require('node:path');
const r = require('node:module').createRequire(path.resolve(process.argv[1]));
const deps = Object.keys(r('./package.json').dependencies);
const out = {versions: {'Node.js': process.versions.node}, unusable: {}};
for (const name of deps) {
  try { r(name); out.versions[name] = r(name + '/package.json').version; }
  catch (e) {
    const lines = String(e.message).split('\\n').filter(Boolean);
    out.unusable[name] = lines.filter((l) => l.startsWith('Error: ')).pop() || lines[0];
  }
}
console.log(JSON.stringify(out));
"""


def install_node_peers(timeout: float = 900.0) -> NodePeers:
    """Install bench/node's npm packages into bench/node/node_modules (once; again whenever
    package-lock.json changes) and check that each loads on this machine's Node.js.

    `npm ci` installs exactly what package-lock.json pins, with `--ignore-scripts`: no
    package's own code runs at install time, and none needs to (uwebsockets ships built
    binaries, bufferutil its prebuilds). Concurrent callers (a test and a bench run in one
    checkout) wait for each other on a lock of package-lock.json. Raises NodePeersUnavailable
    when node or npm is missing or npm ci fails.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise NodePeersUnavailable(
            f"{'node' if not node else 'npm'} is not installed: the Node.js targets "
            "(node-ws, uws) need Node.js and npm on PATH (Debian: apt-get install nodejs npm)")
    want = NODE_LOCK.read_text()
    with NODE_LOCK.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (NODE_STAMP.exists() and NODE_STAMP.read_text() == want):
            log("bench: installing the Node.js peers into bench/node/node_modules (npm ci) ...")
            try:
                proc = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                                       "--loglevel=error"], cwd=NODE_DIR, capture_output=True,
                                      text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise NodePeersUnavailable(f"npm ci in {NODE_DIR.relative_to(ROOT)} did not "
                                           f"finish in {timeout:.0f} s") from None
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
                raise NodePeersUnavailable(f"npm ci in {NODE_DIR.relative_to(ROOT)} failed "
                                           f"({proc.returncode}): {lines[-1].strip()[:200]}")
            NODE_STAMP.write_text(want)
    try:
        proc = subprocess.run([node, "-e", NODE_CHECK, str(NODE_DIR / "package.json")],
                              capture_output=True, text=True, timeout=120, check=True)
        found = json.loads(proc.stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        raise NodePeersUnavailable(f"node could not check bench/node's packages: {exc}") from None
    return NodePeers(dict(found["versions"]), dict(found["unusable"]))


def node_targets_unavailable(targets: list[Target]) -> tuple[dict[str, str], dict[str, str]]:
    """For the Node.js targets among `targets`: (versions, {target name: why it cannot run})."""
    wanted = [t for t in targets if t.runtime == "node"]
    if not wanted:
        return {}, {}
    try:
        peers = install_node_peers()
    except NodePeersUnavailable as exc:
        return {}, {t.name: str(exc) for t in wanted}
    why = {t.name: f"{t.package} does not load on Node.js {peers.versions.get('Node.js')}: "
                   f"{peers.unusable[t.package]}"
           for t in wanted if t.package in peers.unusable}
    return peers.versions, why


def ensure_loadgen() -> str:
    """Compile bench/loadgen.c with gcc -O2 (again whenever the source changes).

    The binary is named by its source's hash: checkouts that share one bench/.venv (git
    worktrees with a symlinked venv) then never run, or overwrite, each other's generator.
    """
    digest = hashlib.sha256(LOADGEN_SRC.read_bytes()).hexdigest()
    out = LOADGEN.with_name(f"{LOADGEN.name}-{digest[:16]}")
    if out.exists():
        return str(out)
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        sys.exit("bench: the load generator needs gcc (apt-get install gcc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        # --tls needs OpenSSL (Debian: libssl-dev); --deflate inflates with zlib (zlib1g-dev).
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(LOADGEN_SRC), "-lssl",
                        "-lcrypto", "-lz"], check=True)
        os.replace(tmp, out)  # atomic: a concurrent run sees no half-written binary
    finally:
        tmp.unlink(missing_ok=True)
    return str(out)


def ensure_certificate() -> tuple[str, str]:
    """A self-signed EC P-256 certificate for 127.0.0.1 (once), the same file for every target.
    The generator does not check it: what is measured is TLS's cost, not trust."""
    cert, key = TLS_DIR / "cert.pem", TLS_DIR / "key.pem"
    if cert.exists() and key.exists():
        return str(cert), str(key)
    openssl = shutil.which("openssl")
    if not openssl:
        sys.exit("bench: the wss scenarios need the openssl command (apt-get install openssl)")
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "365", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def pick_cores() -> tuple[int | None, int | None]:
    """(server core, generator core): two different cores when there are two."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        return cores[0], cores[1]
    return None, None


# ---------------------------------------------------------------------------------------------
# One run: start a target, drive it with the load generator, stop it.

@dataclass
class Env:
    plan: Plan
    venv_python: str | None
    loadgen: str
    server_cpu: int | None
    gen_cpu: int | None
    profile: str | None = None
    profile_dir: Path = RESULTS
    tls: tuple[str, str] | None = None  # (certificate, key) for the wss scenarios
    runs: list[dict[str, Any]] = field(default_factory=list)
    ours_options: tuple[str, ...] = ()  # --ours-option: more options for our server


def run_case(env: Env, target: Target, scenario: str, case: str, mode: str,
             gen_args: list[str], selector: str | None = None, repeat: int = 0,
             timeout: float | None = None, tls: bool = False,
             deflate: bool = False) -> dict[str, Any]:
    """Start `target` in `mode`, run the generator once, stop the target; return the result.
    `tls`: the target serves wss:// (env.tls) and the generator speaks TLS."""
    timeout = timeout or env.plan.timeout
    wrapper: list[str] = []
    prof_out: Path | None = None
    if env.profile == "cprofile" and target is OURS:
        env.profile_dir.mkdir(parents=True, exist_ok=True)
        prof_out = env.profile_dir / f"profile-{scenario}-{case}-{repeat}.prof"
        wrapper = ["-m", "cProfile", "-o", str(prof_out)]
    port = free_port() if target is OURS else 0  # with -q our server does not log its port
    size = int(gen_args[gen_args.index("--size") + 1])
    argv = command(target, mode, python_for(target, env.venv_python), selector, wrapper, port,
                   size, env.tls if tls else None, env.ours_options, deflate=deflate)
    result: dict[str, Any] = {"target": target.name, "scenario": scenario, "case": case,
                              "repeat": repeat, "selector": selector}
    t0 = time.monotonic()
    try:
        server = Running(target, argv, cpu=env.server_cpu, port=port)
    except Exception as exc:  # noqa: BLE001 - reported in the table as a failed run
        result.update(ok=False, error=f"start failed: {exc}"[:500])
        env.runs.append(result)
        return result
    spy = None
    try:
        if env.profile == "py-spy" and target is OURS:
            spy, prof_out = start_py_spy(env, server.pid, f"{scenario}-{case}-{repeat}")
        gen = [env.loadgen, "--host", "127.0.0.1", "--port", str(server.port),
               "--server-pid", str(server.pid), "--timeout", str(timeout), *gen_args]
        if target.proto == "raw":
            gen.append("--raw")
        if tls:
            gen.append("--tls")
        result["generator"] = " ".join(Path(gen[0]).name if i == 0 else a
                                       for i, a in enumerate(gen))
        pin = (lambda: os.sched_setaffinity(0, {env.gen_cpu})) if env.gen_cpu is not None \
            else None
        t1 = time.monotonic()
        try:
            proc = subprocess.run(gen, capture_output=True, text=True, preexec_fn=pin,
                                  timeout=timeout * 2 + 120)
        except subprocess.TimeoutExpired:
            result.update(ok=False, error="load generator did not finish")
        else:
            out = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not out:
                result.update(ok=False, error=f"load generator failed ({proc.returncode}): "
                              f"{proc.stderr.strip()[-300:]}")
            else:
                result.update(json.loads(out[-1]))
                if proc.stderr.strip():
                    result["gen_stderr"] = proc.stderr.strip()[-300:]
        result["server_alive"] = server.alive()
        if not server.alive():
            result["ok"] = False
            result["server_exit"] = server.proc.returncode
            result["error"] = (f"server exited ({server.proc.returncode}) during the run: "
                               + last_error_line(server.log))
        elif result.get("failed"):
            # select counts refusals; in openloop a user dropped mid-ladder fails its step
            if scenario not in ("select", "openloop"):
                result["ok"] = False
                result.setdefault("error", f"{result['failed']} connections failed "
                                  f"{result.get('failures')}")
    finally:
        if spy is not None:
            stop_py_spy(spy)
        t2 = time.monotonic()
        server.stop()
        result["times_s"] = {"start": round(t1 - t0, 3), "generator": round(t2 - t1, 3),
                             "stop": round(time.monotonic() - t2, 3)}
    if prof_out is not None:
        result["profile"] = str(prof_out)
    env.runs.append(result)
    return result


def last_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def start_py_spy(env: Env, pid: int, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    spy = VENV / "bin" / "py-spy"
    if not spy.exists():
        subprocess.run([str(VPY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "py-spy"], check=True)
    env.profile_dir.mkdir(parents=True, exist_ok=True)
    out = env.profile_dir / f"py-spy-{name}.txt"
    pin = (lambda: os.sched_setaffinity(0, {env.gen_cpu})) if env.gen_cpu is not None else None
    proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "1000",
                             "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin)
    time.sleep(1.0)  # let it attach before the load starts
    return proc, out


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------------------------
# The scenarios. Each returns nothing; every run lands in env.runs.

def skipped(env: Env, target: Target, scenario: str, users: int) -> bool:
    """Record (once) that `target` cannot take `users` users by design, instead of running it."""
    if not target.max_users or users <= target.max_users:
        return False
    env.runs.append({"target": target.name, "scenario": scenario, "case": str(users),
                     "repeat": 0, "ok": False, "skipped": True,
                     "error": f"not run: at most {target.max_users:,} users by design "
                              "(select() watches no fd above 1,024; see the select table)"})
    log(f"  {target.name:<24} {scenario:<7} {users:<12} skipped (more than "
        f"{target.max_users:,} users)")
    return True


def tls_missing(env: Env, target: Target, scenario: str, users: int) -> bool:
    """Record (once) that `target` cannot serve wss:// at all, instead of running it."""
    if target.tls:
        return False
    env.runs.append({"target": target.name, "scenario": scenario, "case": str(users),
                     "repeat": 0, "ok": False, "skipped": True,
                     "error": "n/a: it speaks no TLS"})
    log(f"  {target.name:<24} {scenario:<7} {users:<12} n/a (no TLS)")
    return True


def echo_args(p: Plan) -> list[str]:
    return ["--mode", "echo", "--conns", str(p.echo_users), "--window", str(p.echo_window),
            "--messages", str(p.echo_messages), "--size", str(p.small),
            "--duration", str(p.duration)]


def fanout_args(p: Plan, users: int) -> list[str]:
    senders = min(p.fanout_senders, users)
    per_sender = max(1, p.fanout_deliveries // (users * senders))
    return ["--mode", "fanout", "--conns", str(users), "--senders", str(senders),
            "--messages", str(per_sender), "--window", str(p.fanout_window),
            "--size", str(p.small)]


def idle_args(p: Plan, users: int, allow_fail: bool = False) -> list[str]:
    args = ["--mode", "idle", "--conns", str(users), "--broadcasts", str(p.idle_broadcasts),
            "--size", str(p.small), "--connect-timeout", "120"]
    return args + (["--allow-fail"] if allow_fail else [])


def large_args(p: Plan) -> list[str]:
    return ["--mode", "echo", "--conns", str(p.large_users), "--window", str(p.large_window),
            "--messages", str(p.large_messages), "--size", str(MiB),
            "--duration", str(p.duration)]


def progress(res: dict[str, Any], summary: Callable[[dict[str, Any]], str]) -> None:
    head = f"  {res['target']:<24} {res['scenario']:<7} {res['case']:<12} #{res['repeat']}"
    if res.get("ok"):
        log(f"{head} {summary(res)}  (cpu: gen {res['gen_cpu_s']:.2f} s, "
            f"server {res['srv_cpu_s']:.2f} s)")
    else:
        log(f"{head} FAILED: {res.get('error', '?')}")


def scenario_echo(env: Env, targets: list[Target], users: list[int] | None) -> None:
    p = env.plan
    if users:
        p = replace(p, echo_users=users[0])
    for t in targets:
        for r in range(p.repeats):
            res = run_case(env, t, "echo", str(p.echo_users), "echo", echo_args(p), repeat=r)
            progress(res, lambda x: f"{x['msgs_per_s']:,.0f} msg/s  p50 {x['lat_p50_ms']:.2f} ms"
                                    f"  p99 {x['lat_p99_ms']:.2f} ms")


def scenario_fanout(env: Env, targets: list[Target], users: list[int] | None) -> None:
    p = env.plan
    for n in users or p.fanout_users:
        for t in targets:
            if skipped(env, t, "fanout", n):
                continue
            for r in range(p.repeats):
                res = run_case(env, t, "fanout", str(n), "chat", fanout_args(p, n), repeat=r)
                progress(res, lambda x: f"{x['deliveries_per_s']:,.0f} deliveries/s  last after "
                                        f"{x['t_last_s'] * 1e3:,.0f} ms")


def scenario_wss_echo(env: Env, targets: list[Target], users: list[int] | None) -> None:
    """The echo scenario over wss://, every target with the same certificate."""
    p = replace(env.plan, echo_users=(users or [env.plan.wss_users])[0])
    for t in targets:
        if tls_missing(env, t, "wss-echo", p.echo_users):
            continue
        for r in range(p.repeats):
            res = run_case(env, t, "wss-echo", str(p.echo_users), "echo", echo_args(p),
                           repeat=r, tls=True)
            progress(res, lambda x: f"{x['msgs_per_s']:,.0f} msg/s  p50 {x['lat_p50_ms']:.2f} ms"
                                    f"  p99 {x['lat_p99_ms']:.2f} ms")


def scenario_wss_fanout(env: Env, targets: list[Target], users: list[int] | None) -> None:
    """The fan-out scenario over wss://, every target with the same certificate."""
    p = env.plan
    for n in users or [p.wss_users]:
        for t in targets:
            if skipped(env, t, "wss-fanout", n) or tls_missing(env, t, "wss-fanout", n):
                continue
            for r in range(p.repeats):
                res = run_case(env, t, "wss-fanout", str(n), "chat", fanout_args(p, n),
                               repeat=r, tls=True)
                progress(res, lambda x: f"{x['deliveries_per_s']:,.0f} deliveries/s  last after "
                                        f"{x['t_last_s'] * 1e3:,.0f} ms")


def scenario_idle(env: Env, targets: list[Target], users: list[int] | None) -> None:
    p = env.plan
    for n in users or p.idle_users:
        for t in targets:
            if skipped(env, t, "idle", n):
                continue
            for r in range(p.idle_repeats):
                res = run_case(env, t, "idle", str(n), "chat", idle_args(p, n), repeat=r,
                               timeout=max(p.timeout, 60.0))
                progress(res, lambda x: f"{x['rss_per_user_b']:,.0f} B/user  broadcast "
                                        f"{statistics.median(x['broadcast_s']) * 1e3:,.1f} ms")


def scenario_large(env: Env, targets: list[Target], users: list[int] | None) -> None:
    p = env.plan
    if users:
        p = replace(p, large_users=users[0])
    for t in targets:
        for r in range(p.repeats):
            res = run_case(env, t, "large", "1MiB", "echo", large_args(p), repeat=r,
                           timeout=max(p.timeout, 120.0))
            progress(res, lambda x: f"{x['mb_per_s']:,.1f} MB/s")


def scenario_select(env: Env, targets: list[Target], users: list[int] | None) -> None:
    """Our server with --selector select against its default; where select() stops."""
    p = env.plan
    if OURS in targets:
        for selector in ("default", "select"):
            sel = None if selector == "default" else "select"
            for n in users or p.select_fanout_users:
                for r in range(p.repeats):
                    res = run_case(env, OURS, "select", f"{selector}/fanout/{n}", "chat",
                                   fanout_args(p, n), selector=sel, repeat=r)
                    progress(res, lambda x: f"{x['deliveries_per_s']:,.0f} deliveries/s")
            res = run_case(env, OURS, "select", f"{selector}/connect", "chat",
                           idle_args(replace(p, idle_broadcasts=1), p.select_connect_users,
                                     allow_fail=True), selector=sel)
            progress(res, connect_summary)
    dpallot = BY_NAME["simple-websocket-server"]
    if dpallot in targets:
        res = run_case(env, dpallot, "select", "select/connect", "chat",
                       idle_args(replace(p, idle_broadcasts=1), p.select_connect_users,
                                 allow_fail=True))
        progress(res, connect_summary)


def connect_summary(x: dict[str, Any]) -> str:
    return f"{x.get('opened', 0)} open, {x.get('failed', 0)} refused {x.get('failures')}"


def openloop_args(p: Plan, users: int, seed: int) -> list[str]:
    return ["--mode", "openloop", "--conns", str(users), "--size", str(p.small),
            "--rates", ",".join(f"{r:g}" for r in p.openloop_rates),
            "--step-s", str(p.openloop_step_s), "--drain-s", str(p.openloop_drain_s),
            "--settle-s", str(p.openloop_settle_s), "--p99-limit-ms", str(p.openloop_p99_ms),
            "--seed", str(seed), "--connect-timeout", "120"]


RAW_OPENLOOP = ("not run: the relay keeps no message boundaries, so a message cannot carry its "
                "id through it (nothing to check loss, duplicates or order with)")


def scenario_openloop(env: Env, targets: list[Target], users: list[int] | None) -> None:
    """Open-loop chat: every target climbs the same ladder of Poisson message rates."""
    p = env.plan
    n = users[0] if users else p.openloop_users
    case = str(n)
    for t in targets:
        if t.proto == "raw":
            env.runs.append({"target": t.name, "scenario": "openloop", "case": case,
                             "repeat": 0, "ok": False, "skipped": True, "error": RAW_OPENLOOP})
            log(f"  {t.name:<24} openloop {case:<11} skipped (no framing: no message ids)")
            continue
        if skipped(env, t, "openloop", n):
            continue
        for r in range(p.openloop_repeats):
            # the same seed for every target: the same schedule of messages and senders
            res = run_case(env, t, "openloop", case, "chat", openloop_args(p, n, 1 + r),
                           repeat=r, timeout=p.openloop_timeout)
            if res.get("steps") and not res.get("server_alive", True):
                # a server that died under load still passed the steps before: keep them
                res["server_died"] = res.pop("error", "server exited")
                res["ok"] = bool(res.get("connect_failed") == 0)
            if not res.get("ok") and "error" not in res:  # the generator's own verdict
                res["error"] = (f"{res.get('stopped', '?')}: {res.get('connect_failed', '?')} of "
                                f"{res.get('conns', '?')} failed {res.get('failures', {})}")
            progress(res, openloop_summary)
            for st in res.get("steps", []):
                log(f"      {st['rate']:>7g} msg/s  p50 {st['lat_p50_ms']:8.2f}  p99 "
                    f"{st['lat_p99_ms']:8.2f}  max {st['lat_max_ms']:8.2f} ms  lost {st['lost']}"
                    f"  dup {st['dup']}  ooo {st['ooo']}  closed {st['closed']}  late sends max "
                    f"{st['send_late_max_ms']:.1f} ms  cpu {step_cpu(st)}"
                    + ("" if st["ok"] else f"  FAIL ({st['why']})"))


def step_cpu(st: dict[str, Any]) -> str:
    wall = st.get("wall_s") or 0
    if not wall or st.get("srv_cpu_s", -1) < 0:
        return "?"
    return f"{st['gen_cpu_s'] / wall:.0%} / {st['srv_cpu_s'] / wall:.0%}"


def openloop_summary(x: dict[str, Any]) -> str:
    return (f"capacity {capacity_text(x)} msg/s ({len(x.get('steps', []))} steps, stopped: "
            f"{x.get('stopped')})")


def capacity_text(x: dict[str, Any]) -> str:
    cap, steps = x.get("capacity_msgs_per_s", 0), x.get("steps") or []
    if not cap:
        return f"< {steps[0]['rate']:,g}" if steps else "?"
    if steps and cap == steps[-1]["rate"] and x.get("stopped") == "ladder done":
        return f"≥ {cap:,g}"  # the ladder did not reach this target's limit
    return f"{cap:,g}"


def capacity_step(r: dict[str, Any]) -> dict[str, Any] | None:
    """The step a run's capacity comes from (its highest passing one), else its first."""
    steps: list[dict[str, Any]] = r.get("steps") or []
    passed = [st for st in steps if st.get("ok")]
    if passed:
        return max(passed, key=lambda st: float(st["rate"]))
    return steps[0] if steps else None


def scenario_deflate(env: Env, targets: list[Target], users: list[int] | None) -> None:
    """Every client offers permessage-deflate (as Chromium does) and inflates what it gets:
    fan-out of ~200-byte JSON events, and idle users, against websockets with its default
    compression. Cases "fanout/N" and "idle/N"."""
    p = env.plan
    chosen = [t for t in targets if t.name in DEFLATE_TARGETS]
    z = ["--deflate", "--size", str(p.deflate_size)]
    for n in users or p.deflate_fanout_users:
        for t in chosen:
            for r in range(p.repeats):
                args = fanout_args(p, n)
                args[args.index("--size"):args.index("--size") + 2] = []
                # websockets compressing manages ~5-15k deliveries/s here: the full plan's
                # 400,000 deliveries need more than the usual 60 s
                res = run_case(env, t, "deflate", f"fanout/{n}", "chat", args + z, repeat=r,
                               timeout=max(p.timeout, 240.0), deflate=True)
                progress(res, lambda x: f"{x['deliveries_per_s']:,.0f} deliveries/s  wire "
                                        f"{x['deflate']['wire_ratio']:.0%} of uncompressed  "
                                        f"mismatch {x['deflate']['mismatch']}")
    for n in users or p.deflate_idle_users:
        for t in chosen:
            for r in range(p.idle_repeats):
                args = idle_args(p, n)
                args[args.index("--size"):args.index("--size") + 2] = []
                res = run_case(env, t, "deflate", f"idle/{n}", "chat", args + z, repeat=r,
                               timeout=max(p.timeout, 60.0), deflate=True)
                progress(res, lambda x: f"{x['rss_per_user_b']:,.0f} B/user  agreed "
                                        f"{x['deflate']['agreed']}")


def deflate_ok(r: dict[str, Any]) -> bool:
    """A deflate run counts only if every client agreed it and nothing failed to inflate."""
    z = r.get("deflate") or {}
    return (z.get("agreed") == r.get("conns") and not z.get("mismatch")
            and not z.get("inflate_errors"))


RUNNERS: dict[str, Callable[[Env, list[Target], list[int] | None], None]] = {
    "echo": scenario_echo, "fanout": scenario_fanout, "idle": scenario_idle,
    "large": scenario_large, "select": scenario_select, "openloop": scenario_openloop,
    "wss-echo": scenario_wss_echo, "wss-fanout": scenario_wss_fanout,
    "deflate": scenario_deflate}


# ---------------------------------------------------------------------------------------------
# Summaries: medians over repeats, the side-by-side table, the CPU proof.

def ok_runs(runs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("ok") and all(r.get(k) == v for k, v in match.items())
            and (r.get("scenario") != "deflate" or deflate_ok(r))]


def median_of(runs: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> float | None:
    values = [key(r) for r in runs]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Metric:
    scenario: str
    case: str
    title: str
    unit: str
    key: Callable[[dict[str, Any]], float]
    higher_is_better: bool
    show: Callable[[float], str] | None = None  # how a value is written (default: fmt)


def metrics(plan: Plan, runs: list[dict[str, Any]]) -> list[Metric]:
    cases = collections.OrderedDict((r["scenario"], []) for r in runs)
    for r in runs:
        if r["case"] not in cases[r["scenario"]]:
            cases[r["scenario"]].append(r["case"])
    out: list[Metric] = []
    for case in cases.get("echo", []):
        out += [Metric("echo", case, f"echo, {case} connections", "msg/s",
                       lambda r: r["msgs_per_s"], True),
                Metric("echo", case, "echo latency p50", "ms", lambda r: r["lat_p50_ms"], False),
                Metric("echo", case, "echo latency p99", "ms", lambda r: r["lat_p99_ms"], False)]
    for case in sorted(cases.get("fanout", []), key=int):
        out += [Metric("fanout", case, f"fan-out, {int(case):,} users", "deliveries/s",
                       lambda r: r["deliveries_per_s"], True),
                Metric("fanout", case, f"fan-out, {int(case):,} users: last user has the last "
                       "message after", "ms", lambda r: r["t_last_s"] * 1e3, False)]
    for case in cases.get("wss-echo", []):
        out += [Metric("wss-echo", case, f"wss:// echo, {case} connections", "msg/s",
                       lambda r: r["msgs_per_s"], True),
                Metric("wss-echo", case, "wss:// echo latency p99", "ms",
                       lambda r: r["lat_p99_ms"], False)]
    for case in sorted(cases.get("wss-fanout", []), key=int):
        out += [Metric("wss-fanout", case, f"wss:// fan-out, {int(case):,} users",
                       "deliveries/s", lambda r: r["deliveries_per_s"], True),
                Metric("wss-fanout", case, f"wss:// fan-out, {int(case):,} users: last user has "
                       "the last message after", "ms", lambda r: r["t_last_s"] * 1e3, False)]
    for case in sorted(cases.get("idle", []), key=int):
        out += [Metric("idle", case, f"idle, {int(case):,} users: RSS per user", "B",
                       lambda r: r["rss_per_user_b"], False),
                Metric("idle", case, f"idle, {int(case):,} users: one broadcast reaches all in",
                       "ms", lambda r: statistics.median(r["broadcast_s"]) * 1e3, False)]
    for case in cases.get("large", []):
        out.append(Metric("large", case, "1 MiB messages echoed", "MB/s",
                          lambda r: r["mb_per_s"], True))
    for case in cases.get("deflate", []):
        kind, n = case.split("/")
        if kind == "fanout":
            out += [Metric("deflate", case, f"compressed fan-out, {int(n):,} users, "
                           f"{plan.deflate_size}-byte JSON", "deliveries/s",
                           lambda r: r["deliveries_per_s"], True),
                    Metric("deflate", case, f"compressed fan-out, {int(n):,} users: bytes on "
                           "the wire vs uncompressed", "%",
                           lambda r: r["deflate"]["wire_ratio"] * 100, False)]
        else:
            out.append(Metric("deflate", case, f"idle, {int(n):,} users with compression "
                              "negotiated: RSS per user", "B", lambda r: r["rss_per_user_b"],
                              False))
    for case in cases.get("openloop", []):
        rates = plan.openloop_rates
        out.append(Metric(
            "openloop", case, f"open-loop chat, {int(case):,} users: capacity (msg/s in, p99 < "
            f"{plan.openloop_p99_ms:g} ms, nothing lost)", "msg/s",
            lambda r: r["capacity_msgs_per_s"], True, show=capacity_show(rates[0], rates[-1])))
    return out


def capacity_show(lowest: float, highest: float) -> Callable[[float], str]:
    """A capacity as written in the table: below the ladder, inside it, or at its top."""
    def show(v: float) -> str:
        if v == 0:
            return f"< {lowest:,g}"  # not even the first step passed
        return f"≥ {v:,g}" if v >= highest else f"{v:,g}"  # the top: the ladder ended first
    return show


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "fail"
    if unit in ("msg/s", "deliveries/s", "B"):
        return f"{value:,.0f}"
    if unit == "MB/s":
        return f"{value:,.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def side_by_side(plan: Plan, runs: list[dict[str, Any]], targets: list[Target]) -> str:
    peers = [t for t in targets if t is not OURS]
    has_ours = OURS in targets
    head = ["scenario", "unit"] + [t.label for t in targets]
    if has_ours:
        head += [f"ours ÷ {t.label}" for t in peers]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for m in metrics(plan, runs):
        values = {t.name: median_of(ok_runs(runs, scenario=m.scenario, case=m.case,
                                            target=t.name), m.key) for t in targets}
        attempted = {t.name for t in targets if any(
            r["target"] == t.name and r["scenario"] == m.scenario and r["case"] == m.case
            for r in runs)}
        skip = {r["target"] for r in runs if r.get("skipped") and r["scenario"] == m.scenario
                and r["case"] == m.case}
        cells = [m.title, m.unit]
        def show(v: float, m: Metric = m) -> str:
            return m.show(v) if m.show else fmt(v, m.unit)
        for t in targets:
            v = values[t.name]
            cells.append("n/a" if t.name in skip else
                         ("fail" if v is None else show(v)) if t.name in attempted else "–")
        if has_ours:
            for t in peers:
                a, b = values[OURS.name], values[t.name]
                cells.append(f"{a / b:.2f}x" if a is not None and b else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def failures_table(runs: list[dict[str, Any]]) -> str:
    seen: dict[tuple[str, str, str], str] = {}
    for r in runs:
        if not r.get("ok") and r["scenario"] != "select":
            seen.setdefault((r["scenario"], r["case"], r["target"]), r.get("error", "?"))
    if not seen:
        return ""
    lines = ["| scenario | target | why it failed |", "|---|---|---|"]
    for (scen, case, target), err in seen.items():
        err = re.sub(r"\s+", " ", err)[:160].replace("|", "/")
        lines.append(f"| {scen} {case} | {target} | {err} |")
    return "\n".join(lines)


def select_table(runs: list[dict[str, Any]]) -> str:
    rel = [r for r in runs if r["scenario"] == "select"]
    if not rel:
        return ""
    lines = ["| target | selector | case | result |", "|---|---|---|---|"]
    cases: list[tuple[str, str]] = []
    for r in rel:
        if (r["target"], r["case"]) not in cases:
            cases.append((r["target"], r["case"]))
    for target, case in cases:
        group = [r for r in rel if r["target"] == target and r["case"] == case]
        selector, _, what = case.partition("/")
        if target != OURS.name:
            selector = "select() (its only loop)"
        elif selector == "default":
            selector = "default (selectors.DefaultSelector)"
        else:
            selector = "`--selector select`"
        if what.startswith("fanout"):
            n = int(what.split("/")[1])
            med = median_of(ok_runs(group), lambda r: r["deliveries_per_s"])
            text = f"{fmt(med, 'deliveries/s')} deliveries/s" if med else \
                f"failed: {group[0].get('error', '?')}"
            lines.append(f"| {target} | {selector} | fan-out, {n:,} users | {text} |")
        else:
            r = group[0]
            if "opened" not in r:
                text = f"failed: {r.get('error', '?')}"
            else:
                refused = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in
                                    (r.get("failures") or {}).items()) or "none"
                codes = r.get("http_codes") or {}
                if codes:
                    refused += " (HTTP " + ", ".join(f"{k}: {v}" for k, v in codes.items()) + ")"
                alive = "still running" if r.get("server_alive") else \
                    f"**died** ({r.get('error', '?')[:120]})"
                reached = "broadcast reached every open user" if r.get("ok") else \
                    "broadcast did not reach every open user"
                text = (f"{r['opened']:,} of {r['conns']:,} open; refused: {refused}; server "
                        f"{alive}; {reached}")
            lines.append(f"| {target} | {selector} | {r.get('conns', '?')} users connect | "
                         f"{text} |")
    return "\n".join(lines)


def median_run(runs: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]
               ) -> dict[str, Any] | None:
    """The run whose `key` is the (lower) median of `runs`."""
    ranked = sorted(runs, key=key)
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def openloop_table(plan: Plan, runs: list[dict[str, Any]], targets: list[Target]) -> str:
    """Every step of the open-loop ladder, per target (its median-capacity run)."""
    lines = ["| target | rate (msg/s in) | deliveries/s | p50 (ms) | p99 (ms) | max (ms) | lost "
             "| dup | out of order | closed | generator late (max ms) | CPU gen / server "
             "| step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t in targets:
        for case in sorted({r["case"] for r in runs if r["scenario"] == "openloop"}, key=int):
            r = median_run(ok_runs(runs, scenario="openloop", case=case, target=t.name),
                           lambda x: x["capacity_msgs_per_s"])
            if r is None:
                continue
            steps = r.get("steps") or []
            cap = r["capacity_msgs_per_s"]
            for i, st in enumerate(steps):
                verdict = "pass" if st["ok"] else f"**fail** ({why_text(st)})"
                if st["ok"] and st["rate"] == cap:
                    verdict = "**pass: capacity**"
                if i == len(steps) - 1 and r.get("server_died"):
                    died = re.sub(r"\s+", " ", r["server_died"])[:100].replace("|", "/")
                    verdict += f"; {died}"
                lost = f"{st['lost']:,}"
                if st["lost"] and st.get("late"):
                    lost += f" ({st['late']:,} late)"
                lines.append(
                    f"| {t.label} | {st['rate']:,g} | {st['deliveries_per_s']:,.0f} | "
                    f"{fmt(st['lat_p50_ms'], 'ms')} | {fmt(st['lat_p99_ms'], 'ms')} | "
                    f"{fmt(st['lat_max_ms'], 'ms')} | {lost} | {st['dup']:,} | "
                    f"{'–' if st['ooo'] < 0 else format(st['ooo'], ',')} | {st['closed']} | "
                    f"{fmt(st['send_late_max_ms'], 'ms')} | {step_cpu(st)} | {verdict} |")
    return "\n".join(lines)


def why_text(st: dict[str, Any]) -> str:
    whys = {"p99": "p99 ≥ limit", "lost": "pairs lost", "dup": "duplicates",
            "closed": "users dropped", "deadline": "out of time"}
    return whys.get(st.get("why") or "", str(st.get("why")))


def openloop_capacities(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For the results JSON: median capacity per target and case, and ours ÷ each peer."""
    out: dict[str, dict[str, Any]] = {}
    for case in sorted({r["case"] for r in runs if r["scenario"] == "openloop"}, key=int):
        caps = {}
        for name in dict.fromkeys(r["target"] for r in runs if r["scenario"] == "openloop"):
            v = median_of(ok_runs(runs, scenario="openloop", case=case, target=name),
                          lambda x: x["capacity_msgs_per_s"])
            if v is not None:
                caps[name] = v
        ratios = {name: round(caps["ours"] / v, 3) for name, v in caps.items()
                  if name != "ours" and "ours" in caps and v}
        out[case] = {"capacity_msgs_per_s": caps, "ours_over_peer": ratios}
    return out


def cpu_view(r: dict[str, Any]) -> tuple[str, float, float, float] | None:
    """(case, generator CPU s, server CPU s, wall s) of a timed run; None if it has none.

    An open-loop run is judged at its capacity step (its highest passing rate): that is the
    load the headline number is about."""
    if not r.get("ok") or r["scenario"] not in ("echo", "fanout", "large", "select",
                                                 "openloop", "wss-echo", "wss-fanout",
                                                 "deflate"):
        return None
    if r["scenario"] == "deflate" and not r["case"].startswith("fanout"):
        return None
    if r["scenario"] == "openloop":
        st = capacity_step(r)
        if st is None or st.get("srv_cpu_s", -1) <= 0:
            return None
        return (f"{r['case']} at {st['rate']:,g} msg/s", st["gen_cpu_s"], st["srv_cpu_s"],
                st["wall_s"])
    if r.get("srv_cpu_s", -1) <= 0 or r["case"].endswith("connect"):
        return None
    return (r["case"], r["gen_cpu_s"], r["srv_cpu_s"],
            r.get("wall_s") or r.get("t_last_s") or 0)


def cpu_table(runs: list[dict[str, Any]], targets: list[Target]) -> tuple[str, int, int]:
    """Per scenario and target: the generator's CPU share against the server's, worst run."""
    timed = [r for r in runs if cpu_view(r)]
    below = sum(1 for r in timed for v in [cpu_view(r)] if v and v[1] < v[2])
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in timed:
        case = r["case"] if r["scenario"] != "openloop" else f"{r['case']} (at capacity)"
        groups.setdefault((r["scenario"], case), {}).setdefault(r["target"], []).append(r)
    lines = ["| scenario | " + " | ".join(t.label for t in targets) + " |",
             "|---|" + "---:|" * len(targets)]
    for (scen, case), by_target in groups.items():
        cells = []
        for t in targets:
            rs = by_target.get(t.name)
            if not rs:
                cells.append("–")
                continue
            views = [cpu_view(r) for r in rs]
            _, gen, srv, wall = max((v for v in views if v), key=lambda v: v[1] / v[2])
            if wall:
                cells.append(f"{gen / wall:.0%} / {srv / wall:.0%}")
            else:
                cells.append(f"{gen:.2f} s / {srv:.2f} s")
        lines.append(f"| {scen} {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines), below, len(timed)


def check_targets(runs: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, ours against websockets, from this run."""
    def med(scen: str, case: str, target: str, key: Callable[[dict[str, Any]], float]
            ) -> float | None:
        return median_of(ok_runs(runs, scenario=scen, case=case, target=target), key)

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    out = []
    for n in ("100", "1000"):
        a = med("fanout", n, "ours", lambda r: r["deliveries_per_s"])
        b = med("fanout", n, "websockets", lambda r: r["deliveries_per_s"])
        ratio = a / b if a and b else None
        out.append(f"- fan-out at {int(n):,} users ≥ 2x websockets deliveries/s: "
                   f"{verdict(None if ratio is None else ratio >= 2)}"
                   + (f" ({ratio:.2f}x)" if ratio else ""))
    for n in sorted({r["case"] for r in runs if r["scenario"] == "wss-fanout"}, key=int):
        a = med("wss-fanout", n, "ours", lambda r: r["deliveries_per_s"])
        b = med("wss-fanout", n, "websockets", lambda r: r["deliveries_per_s"])
        ratio = a / b if a and b else None
        out.append(f"- wss:// fan-out at {int(n):,} users ≥ 2x websockets over wss:// "
                   f"deliveries/s: {verdict(None if ratio is None else ratio >= 2)}"
                   + (f" ({ratio:.2f}x)" if ratio else ""))
    for case in sorted({r["case"] for r in runs if r["scenario"] == "echo"}):
        a = med("echo", case, "ours", lambda r: r["msgs_per_s"])
        b = med("echo", case, "websockets", lambda r: r["msgs_per_s"])
        pa = med("echo", case, "ours", lambda r: r["lat_p99_ms"])
        pb = med("echo", case, "websockets", lambda r: r["lat_p99_ms"])
        ok = None if not (a and b and pa and pb) else (a / b >= 2 and pa <= pb)
        detail = f" ({a / b:.2f}x, p99 {pa:.2f} vs {pb:.2f} ms)" if ok is not None else ""
        out.append(f"- echo ≥ 2x websockets msg/s with p99 no worse: {verdict(ok)}{detail}")
    big = max((r["case"] for r in runs if r["scenario"] == "idle"), key=int, default=None)
    if big:
        rss = med("idle", big, "ours", lambda r: r["rss_per_user_b"])
        ta = med("idle", big, "ours", lambda r: statistics.median(r["broadcast_s"]))
        tb = med("idle", big, "websockets", lambda r: statistics.median(r["broadcast_s"]))
        ok = None if not (rss and ta and tb) else (rss < 2048 and ta <= tb)
        detail = (f" ({rss:,.0f} B/user; broadcast {ta * 1e3:.1f} vs {tb * 1e3:.1f} ms)"
                  if ok is not None else "")
        out.append(f"- {int(big):,} idle users < 2 KiB RSS each and a broadcast no slower than "
                   f"websockets: {verdict(ok)}{detail}")
    for n in ("100", "1000"):
        case = f"fanout/{n}"
        a = med("deflate", case, "ours", lambda r: r["deliveries_per_s"])
        b = med("deflate", case, "websockets", lambda r: r["deliveries_per_s"])
        if a is None and b is None:
            continue
        ratio = a / b if a and b else None
        goal = 10 if n == "1000" else 2
        out.append(f"- compressed fan-out at {int(n):,} users ≥ {goal}x websockets with its "
                   f"default compression: {verdict(None if ratio is None else ratio >= goal)}"
                   + (f" ({ratio:.2f}x)" if ratio else ""))
        wire = med("deflate", case, "ours", lambda r: r["deflate"]["wire_ratio"])
        if wire is not None:
            out.append(f"- JSON bytes on the wire at {int(n):,} users ≤ 40 % of uncompressed: "
                       f"{verdict(wire <= 0.40)} ({wire:.1%})")
    zidle = max((r["case"] for r in runs if r["scenario"] == "deflate"
                 and r["case"].startswith("idle/")), key=lambda c: int(c.split("/")[1]),
                default=None)
    if zidle:
        rss = med("deflate", zidle, "ours", lambda r: r["rss_per_user_b"])
        peer = med("deflate", zidle, "websockets", lambda r: r["rss_per_user_b"])
        out.append(f"- {int(zidle.split('/')[1]):,} idle users with compression negotiated "
                   f"< 2 KiB RSS each: {verdict(None if rss is None else rss < 2048)}"
                   + (f" ({rss:,.0f} B/user" if rss is not None else "")
                   + (f"; websockets {peer:,.0f} B/user)" if peer is not None and rss is not None
                      else ")" if rss is not None else ""))
    if any(r["scenario"] == "large" for r in runs):
        a = med("large", "1MiB", "ours", lambda r: r["mb_per_s"])
        b = med("large", "1MiB", "websockets", lambda r: r["mb_per_s"])
        ok = None if not (a and b) else a / b >= 0.5
        out.append(f"- 1 MiB echo ≥ 0.5x websockets MB/s: {verdict(ok)}"
                   + (f" ({a / b:.2f}x)" if ok is not None else ""))
    return out


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": str(os.cpu_count()), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def peer_versions(venv_python: str | None) -> dict[str, str]:
    if not venv_python:
        return {}
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('websockets', 'websocket-server', 'simple-websocket-server', 'matplotlib')}))")
    try:
        out = subprocess.run([venv_python, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return dict(json.loads(out))
    except (subprocess.SubprocessError, ValueError):
        return {}


def report(meta: dict[str, Any], plan: Plan, runs: list[dict[str, Any]],
           targets: list[Target]) -> str:
    m = meta["machine"]
    parts = [
        f"Run of {meta['started']} ({meta['kind']}, {meta['elapsed_s']:.0f} s): "
        f"`{meta['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}, "
        f"Python {m['python']}. Server pinned to core {meta['server_cpu']}, load generator to "
        f"core {meta['gen_cpu']}. Peers: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()) + ".",
        "",
        f"Each cell is the median of {plan.repeats} runs ({plan.idle_repeats} for idle "
        f"scale, {plan.openloop_repeats} for the open-loop ladder), each on a freshly started "
        "server. Ratios are ours ÷ peer: above 1 is better for rates, below 1 is better for "
        "times and memory.",
    ]
    for name, why in (meta.get("not_run") or {}).items():
        parts += ["", f"**{name} was not run**: {why}."]
    if metrics(plan, runs):
        parts += ["", side_by_side(plan, runs, targets)]
    if any(r["scenario"] == "openloop" and r.get("ok") for r in runs):
        parts += ["", f"Open-loop chat, every step of the ladder ({plan.openloop_step_s:g} s of "
                  f"Poisson arrivals each, from random senders; latency from each message's "
                  f"scheduled send time to each user's receipt; lost: not received "
                  f"{plan.openloop_drain_s:g} s after the step's last send; a target stops "
                  "climbing at its first clear failure):", "",
                  openloop_table(plan, runs, targets)]
        corrupt = sum(r.get("corrupt", 0) for r in runs if r["scenario"] == "openloop")
        parts += ["", f"Frames of the message size whose payload the generator never sent "
                  f"(corrupt), all open-loop ladders together: {corrupt:,}."]
    fails = failures_table(runs)
    if fails:
        parts += ["", "Runs that failed or were not run (such a cell above says fail or n/a):",
                  "", fails]
    sel = select_table(runs)
    if sel:
        parts += ["", "`select()` against the default selector (FD_SETSIZE is 1,024):", "", sel]
    if OURS in targets:
        parts += ["", "Targets (issue 6), from this run:", "", *check_targets(runs)]
    cpu, below, total = cpu_table(runs, targets)
    if total:
        parts += ["", "CPU during the timed phase, generator / server, as a share of one core "
                  "(worst repeat by generator÷server):", "", cpu, "",
                  f"The generator used less CPU than the server in {below} of {total} timed "
                  "runs" + ("." if below == total else ": not in " + ", ".join(
                      f"{r['target']} {r['scenario']} {v[0]} (generator "
                      f"{v[1]:.2f} s, server {v[2]:.2f} s)"
                      for r in runs for v in [cpu_view(r)] if v and v[1] >= v[2]) + ".")]
    return "\n".join(parts) + "\n"


def write_docs(section: str, results_file: Path, venv_python: str | None) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{section}{END}{tail}")
    log(f"bench: wrote {DOC.relative_to(ROOT)}")
    if venv_python:
        subprocess.run([venv_python, str(BENCH / "plot.py"), str(results_file), str(PLOT)],
                       check=False, timeout=120)


# ---------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller runs")
    ap.add_argument("--only", default="", help="comma-separated targets: "
                    + ", ".join(t.name for t in TARGETS))
    ap.add_argument("--scenario", default="", help="comma-separated: " + ", ".join(SCENARIOS))
    ap.add_argument("--users", default="", help="comma-separated user counts (fanout, idle, "
                    "select fan-out; echo and large take the first)")
    ap.add_argument("--repeats", type=int, help="override the number of repeats")
    ap.add_argument("--profile", choices=("cprofile", "py-spy"),
                    help="profile our server while it runs (results in bench/results/)")
    ap.add_argument("--no-docs", action="store_true", help="never rewrite docs/performance.md")
    ap.add_argument("--ours-option", action="append", default=[], metavar="OPTION",
                    help="one more command-line option for our server, e.g. --ours-option="
                    "--metrics (repeat for more; for comparing a feature on and off)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = replace(plan, repeats=args.repeats, idle_repeats=args.repeats,
                       openloop_repeats=args.repeats)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [t.name for t in TARGETS]
    unknown = [n for n in names if n not in BY_NAME]
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()] or list(SCENARIOS)
    if unknown or any(s not in SCENARIOS for s in scenarios):
        sys.exit(f"bench: unknown target or scenario; targets: {', '.join(BY_NAME)}; "
                 f"scenarios: {', '.join(SCENARIOS)}")
    users = [int(u) for u in args.users.split(",") if u.strip()] or None

    targets = [t for t in TARGETS if t.name in names]
    node_versions, not_run = node_targets_unavailable(targets)
    if not_run:
        if os.environ.get("CI") == "true":
            name, why = next(iter(not_run.items()))
            sys.exit(f"bench: CI=true and the {name} target cannot run: {why}")
        for name, why in not_run.items():
            log(f"bench: skipping {name}: {why}")
        targets = [t for t in targets if t.name not in not_run]
        if not targets:
            sys.exit("bench: no target left to run")
    needs_venv = any(t.in_venv for t in targets) or not args.no_docs
    venv_python = ensure_venv() if needs_venv else None
    loadgen = ensure_loadgen()
    if OURS in targets and not OURS.script.exists():
        log("bench: server.py does not exist yet: skipping ours")
        targets.remove(OURS)
    server_cpu, gen_cpu = pick_cores()
    if gen_cpu is not None:
        os.sched_setaffinity(0, {gen_cpu})  # keep this process off the server's core too
    else:
        log("bench: fewer than 2 cores: server and generator are not pinned")
    env = Env(plan, venv_python, loadgen, server_cpu, gen_cpu, profile=args.profile,
              ours_options=tuple(args.ours_option),
              tls=ensure_certificate() if any(s.startswith("wss") for s in scenarios) else None)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log(f"bench: {'quick' if args.quick else 'full'} run, targets: "
        f"{', '.join(t.name for t in targets)}; scenarios: {', '.join(scenarios)}")
    for scen in scenarios:
        log(f"== {scen}")
        RUNNERS[scen](env, targets, users)

    partial = bool(args.only or args.scenario or args.users or args.repeats)
    meta = {
        "started": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "kind": "quick" if args.quick else ("partial" if partial else "full"),
        "command": " ".join(["python3 bench/run.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "elapsed_s": time.monotonic() - started,
        "machine": machine(), "versions": {**peer_versions(venv_python), **node_versions},
        "not_run": not_run,
        "server_cpu": server_cpu, "gen_cpu": gen_cpu,
        "targets": [t.name for t in targets], "plan": plan.__dict__,
    }
    section = report(meta, plan, env.runs, targets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file = RESULTS / f"{stamp}-{meta['kind']}.json"
    summary = {"openloop": openloop_capacities(env.runs)} if "openloop" in scenarios else {}
    results_file.write_text(json.dumps({"meta": meta, "summary": summary, "runs": env.runs},
                                       indent=1))
    (RESULTS / f"{stamp}-{meta['kind']}.md").write_text(section)
    print(section)
    log(f"bench: results in {results_file.relative_to(ROOT)}")
    if args.profile:
        show_profiles(env.runs)
    if meta["kind"] == "full" and not args.no_docs:
        write_docs(section, results_file, venv_python)
    return 0


def show_profiles(runs: Iterable[dict[str, Any]]) -> None:
    """Print where our server spent its time, all profiled runs of this invocation together."""
    files = [Path(r["profile"]).resolve() for r in runs if r.get("profile")]
    files = [f for f in files if f.exists()]
    if not files:
        log("bench: no profile was written (did the server exit on SIGINT?)")
        return
    log("bench: profiles: " + ", ".join(str(f.relative_to(ROOT)) for f in files))
    cprof = [f for f in files if f.suffix == ".prof"]
    if cprof:
        import pstats
        try:
            stats = pstats.Stats(str(cprof[0]))
            for f in cprof[1:]:
                stats.add(str(f))
            stats.sort_stats("tottime").print_stats(25)
        except (OSError, EOFError, TypeError) as exc:
            log(f"bench: could not read the cProfile output: {exc}")
    own: collections.Counter[str] = collections.Counter()  # innermost frame
    inclusive: collections.Counter[str] = collections.Counter()  # anywhere on the stack
    lines: collections.Counter[str] = collections.Counter()  # innermost frame, with its line
    total = 0
    for f in files:
        if f.suffix != ".txt":
            continue
        for line in f.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            funcs = [re.sub(r":\d+\)$", ")", fr) for fr in frames]
            own[funcs[-1]] += int(count)
            lines[frames[-1]] += int(count)
            for fr in set(funcs):
                inclusive[fr] += int(count)
            total += int(count)
    if total:
        print(f"py-spy: {total} samples of our server; functions by share of samples")
        print("    self   total  function")
        for func, n in own.most_common(25):
            print(f"  {n / total:6.1%}  {inclusive[func] / total:6.1%}  {func}")
        print("  hottest lines (self):")
        for where, n in lines.most_common(12):
            print(f"  {n / total:6.1%}  {where}")
        print("  (py-spy samples from attach to stop: the connect phase is included; time in a "
              "system call counts for the Python line that made it)")


if __name__ == "__main__":
    sys.exit(main())
