"""The README's commands work as shown, and its options table is server.py's (issue 20).

The README is read when the tests run, so they follow it as it is edited:

- Every fenced code block is one of: shell commands (lines starting with python3, make, curl
  or openssl, after any VAR=value), a Python block, a log sample, or the code layout. A
  block that is none of these fails `test_every_code_block_is_understood`, so a new kind of
  block cannot go unchecked by accident.
- Each shell command is run here as documented (`test_readme_commands`), or is in NOT_RUN
  with the reason it cannot be; a NOT_RUN entry the README no longer shows fails the test.
  A server is started as its line says, but on 127.0.0.1 and port 0 (the log says which),
  from a temporary folder; the commands after it in the block (curl, the terminal client)
  get that port for the documented one. A client command in a block with no server gets the
  quick start's server. Every server is stopped by its PID with SIGINT (Ctrl-C) and must
  exit 0 with no traceback in its log.
- A Python block whose first line is `# NAME.py: COMMAND` is a drop-in script: saved as
  NAME.py and started with COMMAND, then spoken to. The client snippet is run against a
  server. The start-up log sample is compared with the real start-up log.
- The examples table's "start it with" commands are run the same way.
- `--help` of each entry point the README shows works and says python3, never python.
- The options table and `server.py --help` name the same options, both ways, and the table
  names every choice --help offers.

Commands are run with the `python3` on PATH, as a person would type them.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
PYTHON3 = shutil.which("python3") or sys.executable
COMMAND_WORDS = {"python3", "make", "curl", "openssl"}
TIMEOUT = 15.0
PAGE_URL = re.compile(r"Chat page\s*:\s*(https?)://[^:/]+:(\d+)/")
NOT_RUN = {
    "make test": "the whole suite, this test among it",
    "python3 server.py ADDRESS PORT [options]": "a template; --help is checked instead",
    "python3 server.py 0.0.0.0 8443 --certfile /etc/chat/fullchain.pem --keyfile "
    "/etc/chat/privkey.pem": "needs a real certificate in /etc/chat; the block after it runs "
                             "the same command with a throw-away one",
}
ENTRY_POINTS = [["server.py"], ["-m", "websocket.client"], ["bench/run.py"],
                ["bench/scaling.py"]]
BARE_PYTHON = re.compile(r"\bpython(?![\w.-])")  # "python" not followed by 3, -dev, ...


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match.group(1), match.group(2)))
    return blocks


def first_word(command: str) -> str:
    words = [w for w in command.split() if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
    return words[0] if words else ""


def shell_commands(block: Block) -> list[str]:
    """The block's commands, backslash continuations joined."""
    commands: list[str] = []
    pending = ""
    for line in block.lines:
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        if pending:
            commands.append(pending)
        pending = ""
    return commands


def kind(block: Block) -> str:
    lines = [line for line in block.lines if line.strip()]
    if block.language == "python":
        return "python"
    if lines and first_word(lines[0]) in COMMAND_WORDS:
        return "shell"
    if lines and all(re.match(r"\d\d:\d\d:\d\d \w+ ", line) or line.startswith("  ")
                     for line in lines):
        return "log"
    if lines and lines[0].startswith("server.py ") and any(row.startswith("websocket/")
                                                          for row in lines):
        return "layout"
    return "unknown"


# ---- running documented commands ----------------------------------------------------------

class Started:
    """A documented server command, running; its log lines as they come."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            found = self.wait_for(PAGE_URL)
        except BaseException:
            self.stop()
            raise
        self.scheme, self.port = found.group(1), int(found.group(2))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = pattern.search(line)
                if found:
                    return found
            if self.proc.poll() is not None and self._new.empty():
                break
            try:
                self._new.get(timeout=0.2)
            except queue.Empty:
                pass
        time.sleep(0.1)
        raise AssertionError(f"{shlex.join(self.argv)}: no {pattern.pattern!r} in\n{self.log}")

    def stop(self) -> int:
        """Ctrl-C, by PID; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Started]]:
    """Servers a test started; each is stopped by PID at the end, whatever happened."""
    servers: list[Started] = []
    yield servers
    for server in servers:
        server.stop()


def prepare(command: str, cwd: Path) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a documented command, run from `cwd`: VAR=value words
    become the environment, python3 is PATH's, and paths into the repository (server.py,
    examples/...) are made absolute so the command's own files land in `cwd`."""
    words = shlex.split(command)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    argv = []
    for word in words:
        if word == "python3":
            argv.append(PYTHON3)
        elif not word.startswith(("-", "/")) and (ROOT / word).exists() \
                and not (cwd / word).exists():
            argv.append(str(ROOT / word))
        else:
            argv.append(word)
    return argv, env


def start_server(command: str, cwd: Path, servers: list[Started]) -> Started:
    """A `python3 server.py ADDRESS PORT ...` line, on 127.0.0.1 and a free port."""
    argv, env = prepare(command, cwd)
    at = next(i for i, word in enumerate(argv) if word.endswith("server.py"))
    argv[at + 1], argv[at + 2] = "127.0.0.1", "0"  # loopback only, any free port
    server = Started(argv, cwd, env)
    servers.append(server)
    return server


def stop_cleanly(server: Started) -> None:
    status = server.stop()
    assert status == 0, f"{shlex.join(server.argv)} exited {status}:\n{server.log}"
    assert "Traceback" not in server.log, server.log


def documented_port(command: str) -> str:
    words = shlex.split(command)
    at = next(i for i, word in enumerate(words) if word.endswith("server.py"))
    return words[at + 2]


def get(url: str, cafile: Path | None = None) -> tuple[int, bytes]:
    import ssl

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def terminal_client(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """The terminal client as a person uses it: a line typed comes back from the chat
    (every message goes to everyone), then Ctrl-D closes with 1000."""
    client = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("hello from the README\n")
        client.stdin.flush()
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in client.stdout or []],
                         daemon=True).start()
        assert lines.get(timeout=TIMEOUT) == "hello from the README\n"
        client.stdin.close()  # Ctrl-D
        client.wait(TIMEOUT)
        assert client.stderr is not None
        status = client.stderr.read()
        assert client.returncode == 0, status
        assert "closed: the server answered 1000 (normal)" in status
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)


def run_shell_block(block: Block, cwd: Path, servers: list[Started]) -> int:
    """Run a block's commands in order in `cwd`; how many ran."""
    server: Started | None = None
    port = ""
    ran = 0
    for command in shell_commands(block):
        if command in NOT_RUN:
            continue
        word = first_word(command)
        argv, env = prepare(command, cwd)
        if word == "python3" and "server.py" in command:
            server = start_server(command, cwd, servers)
            port = documented_port(command)
            status, body = get(f"{server.scheme}://localhost:{server.port}/",
                               cafile=cwd / "cert.pem" if server.scheme == "https" else None)
            assert status == 200 and b"<title>WebSocket chat</title>" in body, command
        elif word == "openssl":
            done = run(argv, cwd, env)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
        elif word in ("curl", "python3"):
            if server is None:  # a client needs the quick start's server
                server = start_server("python3 server.py 127.0.0.1 8080", cwd, servers)
                port = "8080"
            live = [w.replace(f":{port}", f":{server.port}") for w in argv]
            if word == "curl":
                done = run(live, cwd, env)
                assert done.returncode == 0, f"{command}\n{done.stderr}"
                assert "<title>WebSocket chat</title>" in done.stdout, done.stdout
            elif live[1:3] == ["-m", "websocket.client"]:
                terminal_client(live, cwd, env)
            else:
                raise AssertionError(f"README line {block.line}: no way to run {command!r} "
                                     "here; run it or add it to NOT_RUN with the reason")
        else:
            raise AssertionError(f"README line {block.line}: no way to run {command!r} here; "
                                 "run it or add it to NOT_RUN with the reason")
        ran += 1
    if server is not None:
        stop_cleanly(server)
    return ran


# ---- the tests ----------------------------------------------------------------------------

def test_every_code_block_is_understood() -> None:
    blocks = code_blocks(readme())
    assert len(blocks) >= 10
    unknown = [f"line {b.line}: {b.lines[0] if b.lines else ''}" for b in blocks
               if kind(b) == "unknown"]
    assert not unknown, f"README code blocks this test does not know how to check: {unknown}"


def test_not_run_is_still_in_the_readme() -> None:
    shown = {c for b in code_blocks(readme()) if kind(b) == "shell" for c in shell_commands(b)}
    assert set(NOT_RUN) <= shown, set(NOT_RUN) - shown


SHELL_BLOCKS = [b for b in code_blocks(readme()) if kind(b) == "shell"
                and any(c not in NOT_RUN for c in shell_commands(b))]


@pytest.mark.parametrize("block", SHELL_BLOCKS,
                         ids=[shell_commands(b)[0][:48] for b in SHELL_BLOCKS])
def test_readme_commands(block: Block, tmp_path: Path, started: list[Started]) -> None:
    assert run_shell_block(block, tmp_path, started) >= 1


def test_the_startup_log_is_as_shown(tmp_path: Path, started: list[Started]) -> None:
    """The README's start-up log, label by label, value by value (numbers aside)."""
    samples = [b for b in code_blocks(readme()) if kind(b) == "log"
               and "Server started" in b.text]
    assert len(samples) == 1
    server = start_server("python3 server.py 127.0.0.1 8080", tmp_path, started)
    server.wait_for(re.compile("CTRL-C to quit"))
    stop_cleanly(server)

    def shape(line: str) -> str:
        line = re.sub(r"^\d\d:\d\d:\d\d ", "", line)
        return re.sub(r"\d+", "N", line)

    shown = [shape(line) for line in samples[0].lines]
    real = [shape(line) for line in server.lines]
    assert real[:len(shown)] == shown


def test_the_python_client_snippet(tmp_path: Path, started: list[Started]) -> None:
    snippets = [b for b in code_blocks(readme()) if kind(b) == "python"
                and "from websocket.client import connect" in b.text]
    assert len(snippets) == 1
    server = start_server("python3 server.py 127.0.0.1 8080", tmp_path, started)
    code = snippets[0].text.replace(":8080/", f":{server.port}/")
    argv, env = prepare("python3", tmp_path)
    done = run([*argv, "-c", code], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"  # the chat sends every message to everyone, us too
    stop_cleanly(server)


DROP_IN = [b for b in code_blocks(readme()) if kind(b) == "python"
           and re.match(r"# \w+\.py: python3 server\.py ", b.text)]


def speak_to(name: str, server: Started, command: str) -> None:
    """What each drop-in script of the README does, seen from a client."""
    from websocket.client import connect
    from websocket.client.handshake import HandshakeFailed

    url = f"ws://127.0.0.1:{server.port}/"
    origin = None
    allowed = re.search(r"--allow-origin (\S+)", command)
    if allowed:
        origin = allowed.group(1)
    if name == "tokens.py":
        with pytest.raises(HandshakeFailed) as refused:
            connect(url, origin=origin, timeout=TIMEOUT)
        assert "401" in str(refused.value)
        url += "?token=s3cret"
    with connect(url, origin=origin, timeout=TIMEOUT) as ws:
        if name == "rooms.py":
            assert ws.recv(timeout=TIMEOUT) == "welcome, 1 here"
            ws.send("hello")  # broadcast to the others: none here
            ws.send("/quit")
            with pytest.raises(Exception, match="1000"):
                ws.recv(timeout=TIMEOUT)
            return
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"


@pytest.mark.parametrize("block", DROP_IN, ids=[b.lines[0].split(":")[0][2:] for b in DROP_IN])
def test_readme_drop_in_scripts(block: Block, tmp_path: Path, started: list[Started]) -> None:
    name, _, command = block.lines[0][2:].partition(": ")
    (tmp_path / name).write_text(block.text, encoding="utf-8")
    server = start_server(command, tmp_path, started)
    server.wait_for(re.compile(rf"Callback\s*:\s*{re.escape(name)}"))
    speak_to(name, server, command)
    stop_cleanly(server)


def example_commands() -> list[str]:
    section = readme().split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `[\w.]+\.py` \|.*\| `([^`]+)` \|$", section, re.M)
    return rows


@pytest.mark.parametrize("command", example_commands())
def test_each_example_starts_as_documented(command: str, tmp_path: Path,
                                           started: list[Started]) -> None:
    """Started from its documented command: its script loads, the page is served, a client
    connects (with the documented token where the example wants one), Ctrl-C stops it."""
    from websocket.client import connect

    script = re.search(r"--callback (\S+)", command)
    assert script and (ROOT / script.group(1)).is_file(), command
    server = start_server(command, tmp_path, started)
    server.wait_for(re.compile(rf"Callback\s*:\s*\S*{re.escape(script.group(1))}"))
    status, body = get(f"http://127.0.0.1:{server.port}/")
    assert status == 200 and b"<html" in body.lower()
    tokens = re.search(r'AUTH_TOKENS="?\w+:(\w+)', command)
    query = f"?token={tokens.group(1)}" if tokens else ""
    with connect(f"ws://127.0.0.1:{server.port}/{query}", timeout=TIMEOUT) as ws:
        ws.ping(b"docs")
        assert ws.wait_pong(timeout=TIMEOUT) == b"docs"
    stop_cleanly(server)


def test_there_are_examples_to_run() -> None:
    assert len(example_commands()) >= 5


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[" ".join(e) for e in ENTRY_POINTS])
def test_help_of_each_entry_point(entry: list[str], tmp_path: Path) -> None:
    shown = " ".join(entry)
    assert shown in readme(), f"the README does not show {shown}"
    argv, env = prepare(f"python3 {shown} --help", tmp_path)
    done = run(argv, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
    assert not BARE_PYTHON.search(done.stdout), done.stdout


# ---- the options table --------------------------------------------------------------------

def table_options() -> dict[str, str]:
    """The first cell of each row of "Running it"'s table: its options, and the cell."""
    section = readme().split("\n## Running it\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| argument | meaning |", 1)[1].split("\n\n", 1)[0]
    found: dict[str, str] = {}
    for cell in re.findall(r"^\| (.+?) \| ", table, re.M):
        if set(cell) <= {"-", " "}:
            continue  # the header's rule
        for option in re.findall(r"`(-{1,2}[\w-]+|[A-Z]+)", cell):
            found[option] = cell
    return found


def help_options() -> dict[str, tuple[set[str], str]]:
    """Each option of `server.py --help` (every alias), with its line."""
    done = subprocess.run([PYTHON3, str(ROOT / "server.py"), "--help"], capture_output=True,
                          text=True, timeout=30, check=True)
    options: dict[str, tuple[set[str], str]] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^  (-[\w-]+(?:[ ,][^ ]+)*?(?:, -[\w-]+[^ ]*)*)(?:  |$)", line)
        if not match:
            continue
        aliases = set(re.findall(r"(?<![\w-])(-{1,2}[a-z][\w-]*)", match.group(1)))
        for alias in aliases:
            options[alias] = (aliases, match.group(1))
    positional = done.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    for name in re.findall(r"^  ([a-z]+)\b", positional, re.M):
        options[name.upper()] = ({name.upper()}, name)
    return options


def test_the_options_table_is_the_help() -> None:
    table = table_options()
    helped = help_options()
    assert "--callback" in table and "--callback" in helped  # both were read at all
    # Every option documented exists.
    assert not set(table) - set(helped), f"in the table, not in --help: {set(table) - set(helped)}"
    # Every option exists in the table (under one of its names); -h/--help is argparse's.
    missing = sorted({min(aliases) for aliases, _ in helped.values()
                      if not aliases & set(table) and "--help" not in aliases})
    assert not missing, f"in --help, not in the README's table: {missing}"
    # The choices --help offers are the ones the table names.
    for option, (_, usage) in helped.items():
        choices = re.search(r"\{([^}]+)\}", usage)
        if choices and option in table:
            for choice in choices.group(1).split(","):
                assert choice in table[option], (option, choice, table[option])
