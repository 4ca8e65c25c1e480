"""The command line as a user meets it: start-up log, errors in one line, exit statuses."""
from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable

from conftest import ROOT, SERVER, ServerProcess
from wsclient import Client, wait_until

Start = Callable[..., ServerProcess]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SERVER), *args], capture_output=True, text=True,
                          timeout=20, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in ("--callback", "--max-message-size", "--max-connections", "--max-buffer",
                   "--handshake-timeout", "--selector", "-v", "-q"):
        assert option in result.stdout


def test_start_up_log_mirrors_the_original(chat_server: ServerProcess) -> None:
    chat_server.wait_for_log("CTRL-C to quit")
    log = chat_server.log
    assert "Server started : " in log
    assert f"Listening on   : 127.0.0.1 port {chat_server.port} (loopback: only this machine" in log
    assert f"Chat page      : http://127.0.0.1:{chat_server.port}/" in log
    assert f"WebSocket URL  : ws://127.0.0.1:{chat_server.port}/" in log
    assert "CTRL-C to quit" in log


def test_every_interface_is_explained(start_server: Start) -> None:
    server = start_server(address="0.0.0.0")
    assert "every IPv4 interface: other machines on the network can connect" in server.log
    Client(server.port).handshake().close()


def test_port_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("127.0.0.1", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_address_and_port_are_one_line_and_status_1() -> None:
    for args in (("256.1.1.1", "8080"), ("no-such-host.invalid", "8080"),
                 ("127.0.0.1", "65536"), ("127.0.0.1", "http")):
        result = run(*args)
        assert result.returncode == 1, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_missing_or_broken_callback_script(tmp_path: object) -> None:
    from pathlib import Path
    broken = Path(str(tmp_path)) / "broken.py"
    broken.write_text("def process(:\n")
    noprocess = Path(str(tmp_path)) / "noprocess.py"
    noprocess.write_text("x = 1\n")
    for script in ("/no/such/script.py", str(broken), str(noprocess)):
        result = run("127.0.0.1", "0", "--callback", script)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_restart_gets_the_port_back_at_once(start_server: Start) -> None:
    first = start_server()
    port = first.port
    user = Client(port).handshake()
    user.send_text("x")
    user.recv_message()
    user.close_handshake()  # the server closes TCP first: its side is in TIME_WAIT now
    user.close()
    assert first.stop() == 0
    again = subprocess.Popen([sys.executable, str(SERVER), "127.0.0.1", str(port)],
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert again.stderr is not None
        for line in again.stderr:
            if "CTRL-C to quit" in line:
                break
            assert "error" not in line, line
        Client(port).handshake().close()
    finally:
        again.terminate()
        again.wait(10)


def test_quiet_logs_only_warnings() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER), "127.0.0.1", str(port), "-q"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert wait_until(lambda: _accepts(port))
        Client(port).handshake().close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "INFO" not in err and proc.returncode == 0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_verbose_shows_frames_and_messages(start_server: Start) -> None:
    server = start_server("-v")
    user = Client(server.port).handshake()
    user.send_text("traced")
    user.recv_message()
    server.wait_for_log(r"user \d+ < TEXT 6 bytes")
    server.wait_for_log(r"user \d+ > TEXT 6 bytes")
    server.wait_for_log(r"user \d+ says 'traced'")


def test_ctrl_c_or_sigterm_while_starting_stops_quietly_with_status_0() -> None:
    """A signal that comes before the loop has taken the signals over (here: as soon as the
    first line of the start-up log is out, or its last): no
    traceback, status 0. (server.py takes the signals over on its first lines; before
    those, Python itself is still starting.)"""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        for last in (False, True) * 5:
            proc = subprocess.Popen([sys.executable, str(SERVER), "127.0.0.1", "0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if last:  # ... or as soon as the last one is out, as the loop takes over
                while "CTRL-C to quit" not in first:
                    first += proc.stdout.readline()
            proc.send_signal(signum)
            try:
                out, _ = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:  # it went on running: stop it by its PID
                    proc.kill()
                    proc.communicate(timeout=10)
            assert proc.returncode == 0, (signum, proc.returncode, first + out)
            assert "Traceback" not in first + out, first + out
