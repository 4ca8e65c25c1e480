"""--reload (issue 14): a drop-in script changed under a connected user takes over without
dropping anyone; a version that fails to load leaves the previous one running and is logged
in one line (the traceback at debug level)."""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from conftest import ServerProcess
from wsclient import Client

Start = Callable[..., ServerProcess]

VERSION = '''
def on_start(server):
    server.call_every(0.2, server.broadcast, "tick {n}")

def process(user, message, server):
    server.send(user, "v{n}: " + message)
'''


def write(path: Path, text: str) -> None:
    """Replace the file and move its mtime on, so that a change within one mtime tick
    of the file system is still seen (the watcher compares mtime, size and inode)."""
    stamp = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    path.write_text(text)
    os.utime(path, ns=(stamp + 2_000_000_000, stamp + 2_000_000_000))


def reply(user: Client, text: str) -> str:
    """Send `text` and return the first answer that is not a timer's tick."""
    user.send_text(text)
    while True:
        message = user.recv_message()
        assert isinstance(message, str)
        if not message.startswith("tick"):
            return message


def wait_for_new_log(server: ServerProcess, pattern: str, seen: int,
                     timeout: float = 10.0) -> str:
    """The first line logged after the first `seen` lines that matches `pattern`."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in server.lines[seen:]:
            if regex.search(line):
                return line
        assert time.monotonic() < deadline, f"no new line matching {pattern!r}:\n{server.log}"
        time.sleep(0.05)


def wait_for_tick(user: Client, tick: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if user.recv_message() == tick:
            return
    raise AssertionError(f"no {tick!r} within {timeout} s")


def test_reload_swaps_the_script_under_a_connected_user_and_survives_broken_versions(
        start_server: Start, tmp_path: Path) -> None:
    script = tmp_path / "live.py"
    write(script, VERSION.format(n=1))
    server = start_server("--callback", str(script), "--reload")
    with Client(server.port).handshake() as user, Client(server.port).handshake() as other:
        assert reply(user, "hi") == "v1: hi"

        seen = len(server.lines)
        write(script, VERSION.format(n=2))
        wait_for_new_log(server, r"reloaded .*live\.py; 2 user\(s\) stay connected", seen)
        assert reply(user, "hi") == "v2: hi"  # the same connection, the new code
        assert reply(other, "yo") == "v2: yo"
        # The old on_start's timer was cancelled and the new one started: after a tick 2,
        # no tick 1 comes any more.
        wait_for_tick(user, "tick 2")
        for _ in range(5):
            assert user.recv_message() == "tick 2"

        broken = {
            "syntax": "def process(user, message, server)\n    pass\n",
            "raises": "raise RuntimeError('planted failure at import')\n",
            "no process": "def on_connect(user, server):\n    pass\n",
        }
        expected = {
            "syntax": r"reload failed, the previous version keeps running: callback script "
                      r".*live\.py failed to load: SyntaxError",
            "raises": r"reload failed, .*: RuntimeError: planted failure at import",
            "no process": r"reload failed, .*does not define process",
        }
        for kind, text in broken.items():
            seen = len(server.lines)
            write(script, text)
            wait_for_new_log(server, expected[kind], seen)
            assert reply(user, kind) == f"v2: {kind}"  # the old version still answers
        # One line each, no traceback without -v (it is at debug level).
        assert "Traceback" not in server.log

        seen = len(server.lines)
        write(script, VERSION.format(n=3))
        wait_for_new_log(server, r"reloaded .*live\.py; 2 user\(s\) stay connected", seen)
        assert reply(user, "back") == "v3: back"
        assert reply(other, "back") == "v3: back"
        # Nobody was dropped through the five changes.
        assert not [line for line in server.lines if " left: " in line]


def test_a_failed_reload_logs_the_traceback_at_debug_level(start_server: Start,
                                                             tmp_path: Path) -> None:
    script = tmp_path / "live.py"
    write(script, VERSION.format(n=1))
    server = start_server("--callback", str(script), "--reload", "-v")
    with Client(server.port).handshake() as user:
        write(script, "x = 1 / 0\n")
        server.wait_for_log(r"ERROR .*reload failed.*ZeroDivisionError: division by zero")
        server.wait_for_log(r"DEBUG .*why .*live\.py did not load")
        server.wait_for_log(r"Traceback \(most recent call last\)")
        assert reply(user, "still") == "v1: still"


def test_reload_needs_a_script(start_server: Start) -> None:
    import subprocess
    import sys

    from conftest import ROOT, SERVER
    done = subprocess.run([sys.executable, str(SERVER), "127.0.0.1", "0", "--reload"],
                          capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip() == "server.py: error: --reload needs --callback SCRIPT.py"


def test_script_timers_are_cancelled_together_and_do_not_pile_up() -> None:
    from websocket.chat.callbacks import ScriptTimers
    from websocket.net.loop import Loop

    loop = Loop()
    try:
        timers = ScriptTimers()
        done = [loop.call_later(-1, print) for _ in range(200)]  # due: as good as run
        for timer in done:
            timers.keep(timer)
        pending = loop.call_later(3600, print)
        every = loop.call_every(3600, print)
        timers.keep(pending)
        timers.keep(every)
        assert len(timers._handles) < 100  # the past ones were forgotten on the way
        timers.cancel_all()
        assert pending.cancelled and every.cancelled
    finally:
        loop.close()
