"""The blocking client and the terminal program (`websocket/client/__init__.py`), over real sockets.

Most tests talk to the project's server started as a user would (`echo_server`,
`chat_server`, `start_server`). What that server never does (fragment its messages, send a
wrong Sec-WebSocket-Accept) comes from a small scripted server in a thread, built from the
project's codecs. wss:// goes through a TLS terminator in front of the real server, with
a certificate made by the `openssl` command in a temporary directory.
"""
from __future__ import annotations

import os
import queue
import select
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, ServerProcess

from websocket.client import (
    ConnectionClosed,
    HandshakeFailed,
    connect,
    parse_url,
)
from websocket.protocol import handshake
from websocket.protocol.frames import Opcode, encode_close, encode_frame
from websocket.protocol.messages import Close, Message, Pong, Receiver

TIMEOUT = 10.0


# -- the module API against the project's server --------------------------------------------


def test_text_and_binary_round_trips(echo_server: ServerProcess) -> None:
    with connect(echo_server.ws_url) as ws:
        ws.send("hello")
        assert ws.recv(TIMEOUT) == "hello"
        ws.send("émoji 👋 ✓")
        assert ws.recv(TIMEOUT) == "émoji 👋 ✓"
        ws.send(bytes(range(256)))
        assert ws.recv(TIMEOUT) == bytes(range(256))
        ws.send("")
        assert ws.recv(TIMEOUT) == ""


def test_one_mebibyte_message(echo_server: ServerProcess) -> None:
    payload = os.urandom(1 << 20)  # the server's default --max-message-size, exactly
    with connect(echo_server.ws_url) as ws:
        ws.send(payload)
        assert ws.recv(TIMEOUT) == payload
        text = "ü" * (1 << 19)  # 1 MiB of UTF-8 in two-byte characters
        ws.send(text)
        assert ws.recv(TIMEOUT) == text


def test_fragmented_message_is_sent_in_frames(echo_server: ServerProcess) -> None:
    blocks: list[str] = []
    with connect(echo_server.ws_url, trace=blocks.append) as ws:
        text = "é" * 50  # 100 bytes in frames of 3: characters cut across frames
        ws.send(text, fragment_size=3)
        assert ws.recv(TIMEOUT) == text
    sent = [b for b in blocks if "client->server  RFC 6455 frame" in b]
    assert len(sent) == 34 + 1  # 34 fragments, then the close
    assert "FIN 0 (more fragments follow)" in sent[0] and "opcode 0x1 (text)" in sent[0]
    assert "opcode 0x0 (continuation of a text message)" in sent[1]
    assert "FIN 1 (final)" in sent[33]


def test_ping_is_answered_with_its_payload(echo_server: ServerProcess) -> None:
    with connect(echo_server.ws_url) as ws:
        ws.ping(b"are you there")
        ws.send("after the ping")
        assert ws.wait_pong(TIMEOUT) == b"are you there"
        assert ws.recv(TIMEOUT) == "after the ping"  # kept while waiting for the pong
        with pytest.raises(ValueError):
            ws.ping(bytes(126))


def test_server_keepalive_pings_are_answered(start_server: Callable[..., ServerProcess]) -> None:
    # The server pings a user silent for 0.3 s and drops it (1011) when still silent at
    # 0.6 s; the client answers by itself, so it is still there after 1.5 s of silence.
    server = start_server("--callback", "echo", "--ping-interval", "0.3")
    blocks: list[str] = []
    with connect(server.ws_url, trace=blocks.append) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.5)
        ws.send("still here")
        assert ws.recv(TIMEOUT) == "still here"
    assert any("server->client" in b and "opcode 0x9 (ping)" in b for b in blocks)
    pongs = [b for b in blocks if "client->server" in b and "opcode 0xa (pong)" in b]
    assert pongs and all("|keepalive|" in b and "MASK 1" in b for b in pongs)


def test_close_handshake_returns_the_servers_answer(echo_server: ServerProcess) -> None:
    ws = connect(echo_server.ws_url)
    assert ws.close() == (1000, "")
    assert ws.closed is not None and ws.closed.code == 1000
    assert ws.close() == (1000, "")  # closing again changes nothing
    with pytest.raises(ConnectionClosed):
        ws.send("too late")
    ws = connect(echo_server.ws_url)
    assert ws.close(4000, "bye")[0] == 4000  # the server echoes the code (§5.5.1)
    echo_server.wait_for_log(r"left: 4000 \(application\) 'bye'")


def test_server_closes_with_1009_for_an_oversized_message(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--callback", "echo", "--max-message-size", "1000")
    with connect(server.ws_url) as ws:
        ws.send("x" * 1000)
        assert ws.recv(TIMEOUT) == "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.code == 1009 and closed.value.by == "server"
        assert "1000-byte limit" in closed.value.reason
        assert "closed by the server: 1009 (message too big)" in str(closed.value)
        with pytest.raises(ConnectionClosed):  # and it stays closed
            ws.recv(TIMEOUT)


def test_server_shutdown_is_a_going_away_close(echo_server: ServerProcess) -> None:
    ws = connect(echo_server.ws_url)
    ws.send("hi")
    assert ws.recv(TIMEOUT) == "hi"
    echo_server.proc.send_signal(signal.SIGINT)  # Ctrl-C: it closes everyone with 1001
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert (closed.value.code, closed.value.by) == (1001, "server")
    echo_server.wait_for_log(r"left: 1001 \(going away\).*closing handshake complete")
    assert echo_server.stop() == 0


def test_chat_between_two_clients(chat_server: ServerProcess) -> None:
    with connect(chat_server.ws_url) as alice, connect(chat_server.ws_url) as bob:
        alice.send("alice: hi bob")
        assert bob.recv(TIMEOUT) == "alice: hi bob"
        assert alice.recv(TIMEOUT) == "alice: hi bob"  # the article echoes to everyone
        bob.send("bob: hi alice")
        assert alice.recv(TIMEOUT) == "bob: hi alice"
        assert bob.recv(TIMEOUT) == "bob: hi alice"


def test_refused_origin_is_a_handshake_failure_with_the_servers_reason(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--allow-origin", "http://good.example")
    with pytest.raises(HandshakeFailed) as failed:
        connect(server.ws_url, origin="http://evil.example")
    assert failed.value.status == 403
    assert "HTTP 403 Forbidden: origin http://evil.example is not allowed" in str(failed.value)
    with connect(server.ws_url, origin="http://good.example") as ws:
        ws.send("in")


def test_subprotocol_is_negotiated(start_server: Callable[..., ServerProcess],
                                   tmp_path: Path) -> None:
    script = tmp_path / "proto.py"
    script.write_text('SUBPROTOCOLS = ["chat.v2", "chat"]\n'
                      "def process(user, message, server):\n"
                      "    server.send(user, f'{user.subprotocol}: {message}')\n")
    server = start_server("--callback", str(script))
    with connect(server.ws_url, subprotocols=("chat", "other")) as ws:
        assert ws.subprotocol == "chat"
        ws.send("x")
        assert ws.recv(TIMEOUT) == "chat: x"
    with connect(server.ws_url) as ws:
        assert ws.subprotocol is None


def test_timeout_leaves_the_connection_usable(echo_server: ServerProcess) -> None:
    with connect(echo_server.ws_url) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        assert 0.15 < time.monotonic() - started < 2
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0)
        ws.send("later")
        assert ws.recv(TIMEOUT) == "later"


@pytest.mark.parametrize(("url", "secure", "host", "port", "resource", "host_header"), [
    ("ws://127.0.0.1:8080/", False, "127.0.0.1", 8080, "/", "127.0.0.1:8080"),
    ("ws://example.com", False, "example.com", 80, "/", "example.com"),
    ("WSS://Example.com/chat?room=1", True, "example.com", 443, "/chat?room=1", "example.com"),
    ("wss://example.com:8443/", True, "example.com", 8443, "/", "example.com:8443"),
    ("ws://[::1]:9000/x", False, "::1", 9000, "/x", "[::1]:9000"),
])
def test_urls(url: str, secure: bool, host: str, port: int, resource: str,
              host_header: str) -> None:
    target = parse_url(url)
    assert (target.secure, target.host, target.port, target.resource, target.host_header) == \
        (secure, host, port, resource, host_header)


@pytest.mark.parametrize("url", ["http://example.com/", "ws://", "ws://host/#frag",
                                 "ws://user@host/", "ws://host:99999/", "example.com"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_connection_refused_is_an_os_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{port}/", timeout=2)


# -- a scripted server, for what the project's server never does -----------------------------


class ScriptedServer:
    """Accepts one connection, does the handshake with the project's codecs (`answer`
    may rewrite the response), then runs `script(sock, receiver, inbuf)` in a thread."""

    def __init__(self, script: Callable[[socket.socket, Receiver, bytearray], None],
                 answer: Callable[[bytes], bytes] = lambda response: response) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.error: BaseException | None = None
        self._script, self._answer = script, answer
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(TIMEOUT)
                inbuf = bytearray()
                while (parsed := handshake.parse_request(inbuf)) is None:
                    inbuf += sock.recv(65536)
                request, used = parsed
                del inbuf[:used]
                sock.sendall(self._answer(handshake.upgrade(request).response))
                self._script(sock, Receiver(), inbuf)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def read_events(sock: socket.socket, receiver: Receiver, inbuf: bytearray,
                count: int) -> list[object]:
    """`count` events from the client; the receiver insists on masked frames (§5.1)."""
    events: list[object] = []
    while len(events) < count:
        if not inbuf or not (new := receiver.receive(inbuf)):
            data = sock.recv(65536)
            assert data, "the client closed the connection"
            inbuf += data
            continue
        events += new
    return events


def test_fragmented_message_with_a_ping_between_its_fragments() -> None:
    def script(sock: socket.socket, receiver: Receiver, inbuf: bytearray) -> None:
        sock.sendall(encode_frame(Opcode.TEXT, b"frag", fin=False)
                     + encode_frame(Opcode.PING, b"mid-message")  # §5.4: allowed between
                     + encode_frame(Opcode.CONTINUATION, "mé".encode()[:2], fin=False)
                     + encode_frame(Opcode.CONTINUATION, "mé".encode()[2:] + b"nt"))
        sock.sendall(encode_frame(Opcode.BINARY, b"\x01", fin=False)
                     + encode_frame(Opcode.CONTINUATION, b"\x02\x03"))
        pong, echo = read_events(sock, receiver, inbuf, 2)
        assert pong == Pong(b"mid-message")
        assert echo == Message("fragmént")
        sock.sendall(encode_frame(Opcode.CLOSE, encode_close(1000, "done")))
        assert read_events(sock, receiver, inbuf, 1) == [Close(1000, "")]

    server = ScriptedServer(script)
    blocks: list[str] = []
    ws = connect(server.url, trace=blocks.append)
    assert ws.recv(TIMEOUT) == "fragmént"
    assert ws.recv(TIMEOUT) == b"\x01\x02\x03"
    ws.send("fragmént")
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert (closed.value.code, closed.value.reason) == (1000, "done")
    server.join()
    keys = [line.split("key ")[1] for block in blocks if "client->server  RFC" in block
            for line in block.split("\n") if line.startswith("  mask      ")]
    assert len(keys) == 3 and len(set(keys)) == 3  # pong, message, close: 3 fresh keys


def test_client_waits_for_the_server_to_end_tcp_first() -> None:
    # §7.1.1: after the close frames, "the server SHOULD close the underlying TCP
    # connection" first, and the client waits for it (so the server has no TIME_WAIT).
    def script(sock: socket.socket, receiver: Receiver, inbuf: bytearray) -> None:
        sock.sendall(encode_frame(Opcode.CLOSE, encode_close(1001, "going")))
        assert read_events(sock, receiver, inbuf, 1) == [Close(1001, "")]
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):  # the client still holds the connection open
            sock.recv(1)

    server = ScriptedServer(script)
    ws = connect(server.url)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert (closed.value.code, closed.value.reason) == (1001, "going")
    server.join()


def test_wrong_accept_fails_the_handshake() -> None:
    server = ScriptedServer(lambda sock, receiver, inbuf: None,
                            answer=lambda response: response.replace(b"Accept: ", b"Accept: x"))
    with pytest.raises(HandshakeFailed, match="wrong Sec-WebSocket-Accept"):
        connect(server.url)
    server.join()


def test_subprotocol_not_offered_fails_the_handshake() -> None:
    server = ScriptedServer(
        lambda sock, receiver, inbuf: None,
        answer=lambda response: response[:-2] + b"Sec-WebSocket-Protocol: evil\r\n\r\n")
    with pytest.raises(HandshakeFailed, match="subprotocol 'evil', which was not offered"):
        connect(server.url, subprotocols=("chat",))
    server.join()


def test_protocol_error_from_the_server_is_answered_with_its_close_code() -> None:
    def script(sock: socket.socket, receiver: Receiver, inbuf: bytearray) -> None:
        sock.sendall(b"\x81\x02\xff\xfe")  # text that is not UTF-8
        assert read_events(sock, receiver, inbuf, 1) == \
            [Close(1007, "text message is not valid UTF-8")]

    server = ScriptedServer(script)
    ws = connect(server.url, timeout=2)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(TIMEOUT)
    assert (closed.value.code, closed.value.by) == (1007, "client")
    server.join()


# -- the terminal program --------------------------------------------------------------------


class Terminal:
    """`python3 -m websocket.client URL ...` with pipes; its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "websocket.client", *args], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), text=True, encoding="utf-8")
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._err_new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out.put),
                         daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self._err_line),
                         daemon=True).start()

    @staticmethod
    def _drain(stream: object, put: Callable[[str], None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            put(line.rstrip("\n"))

    def _err_line(self, line: str) -> None:
        self.err.append(line)
        self._err_new.put(line)

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def line(self) -> str:
        return self.out.get(timeout=TIMEOUT)

    def wait_for_err(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(text in line for line in self.err):
            self._err_new.get(timeout=max(0.01, deadline - time.monotonic()))

    def finish(self) -> int:
        """Ctrl-D (stdin closed), then the exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def stdout_lines(self) -> list[str]:
        lines = []
        while not self.out.empty():
            lines.append(self.out.get())
        return lines

    @property
    def stderr(self) -> str:
        time.sleep(0.05)  # the drain thread may be a line behind the exit
        return "\n".join(self.err)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(*args))
        return started[-1]

    yield start
    for term in started:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait(5)


def test_terminal_lines_in_messages_out_ctrl_d_closes(
        echo_server: ServerProcess, terminal: Callable[..., Terminal]) -> None:
    term = terminal(echo_server.ws_url)
    term.type("hello")
    assert term.line() == "hello"  # printed while stdin is still open
    term.type("émoji 👋")
    assert term.line() == "émoji 👋"
    assert term.finish() == 0
    assert "closed: the server answered 1000 (normal)" in term.stderr
    assert "Traceback" not in term.stderr


def test_terminal_prints_what_others_say_while_idle(
        chat_server: ServerProcess, terminal: Callable[..., Terminal]) -> None:
    term = terminal(chat_server.ws_url)
    term.wait_for_err("connected to")
    with connect(chat_server.ws_url) as other:
        other.send("bob: anyone?")
        assert other.recv(TIMEOUT) == "bob: anyone?"
        assert term.line() == "bob: anyone?"  # with nothing typed
        other.send(b"\x00\x01\x02")
        assert term.line() == "[binary, 3 bytes] 00 01 02"
    assert term.finish() == 0


def test_terminal_all_input_at_once_then_eof(echo_server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "websocket.client", echo_server.ws_url], cwd=ROOT,
        input="one\ntwo\nthree", capture_output=True, text=True, timeout=TIMEOUT)
    assert done.stdout.splitlines() == ["one", "two", "three"]  # the last had no newline
    assert done.returncode == 0
    assert "closed: the server answered 1000 (normal)" in done.stderr


def test_terminal_trace_shows_annotated_frames(echo_server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "websocket.client", echo_server.ws_url, "--trace",
         "--origin", "http://127.0.0.1"], cwd=ROOT,
        input="Hello\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    trace = done.stderr
    assert "client->server  HTTP request head" in trace
    assert "  | Origin: http://127.0.0.1" in trace
    assert "Sec-WebSocket-Accept matches the key (RFC 6455 §4.1)" in trace
    sent = trace.split("client->server  RFC 6455 frame, 11 bytes")[1]
    assert "opcode 0x1 (text)" in sent and "MASK 1, key " in sent
    assert "|Hello|" in sent.split("unmasked")[1]
    assert "server->client  RFC 6455 frame, 7 bytes" in trace
    assert "code 1000 (normal), reason ''" in trace
    assert done.stdout == "Hello\n"  # the trace stays off stdout


def test_terminal_subprotocol_option(start_server: Callable[..., ServerProcess],
                                     tmp_path: Path) -> None:
    script = tmp_path / "proto.py"
    script.write_text('SUBPROTOCOLS = ["chat"]\n'
                      "def process(user, message, server):\n"
                      "    server.send(user, message)\n")
    server = start_server("--callback", str(script))
    done = subprocess.run(
        [sys.executable, "-m", "websocket.client", server.ws_url, "--subprotocol", "chat"],
        cwd=ROOT, input="", capture_output=True, text=True, timeout=TIMEOUT)
    assert "(subprotocol chat)" in done.stderr and done.returncode == 0


def test_terminal_server_close_is_reported(start_server: Callable[..., ServerProcess],
                                           terminal: Callable[..., Terminal]) -> None:
    server = start_server("--callback", "echo", "--max-message-size", "10")
    term = terminal(server.ws_url)
    term.type("this line is too long")
    assert term.wait() == 1
    assert "closed by the server: 1009 (message too big)" in term.stderr
    assert "Traceback" not in term.stderr


def test_terminal_connection_error_is_one_line(terminal: Callable[..., Terminal]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    term = terminal(f"ws://127.0.0.1:{port}/")
    assert term.wait() == 1
    assert term.stderr == f"error: ws://127.0.0.1:{port}/: Connection refused"


def test_terminal_refused_handshake_is_one_line(start_server: Callable[..., ServerProcess],
                                                terminal: Callable[..., Terminal]) -> None:
    server = start_server("--allow-origin", "http://good.example")
    term = terminal(server.ws_url, "--origin", "http://evil.example")
    assert term.wait() == 1
    assert term.stderr.startswith("error: ") and "HTTP 403" in term.stderr
    assert len(term.stderr.splitlines()) == 1


def test_terminal_ctrl_c_exits_without_a_traceback(echo_server: ServerProcess,
                                                   terminal: Callable[..., Terminal]) -> None:
    term = terminal(echo_server.ws_url)
    term.wait_for_err("connected to")
    term.proc.send_signal(signal.SIGINT)
    assert term.wait() == 130
    assert "Traceback" not in term.stderr and "KeyboardInterrupt" not in term.stderr
    echo_server.wait_for_log(r"left: 1001 \(going away\)")  # it said goodbye on its way out


# -- wss:// through a TLS terminator in front of the project's server ------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl not found; CI=true, so the wss:// tests must run",
                        pytrace=False)
        pytest.skip("openssl not found")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsTerminator:
    """wss:// in, ws:// out: decrypts each connection and relays it to `port`, as nginx or
    stunnel would in front of the server. One thread per connection, one selector each."""

    def __init__(self, cert: Path, key: Path, port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.backend = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"wss://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._relay, args=(sock,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _relay(self, raw: socket.socket) -> None:
        raw.settimeout(TIMEOUT)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # e.g. a client that does not trust the certificate
            return
        plain = socket.create_connection(("127.0.0.1", self.backend), timeout=TIMEOUT)
        other = {tls: plain, plain: tls}
        with tls, plain, selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(plain, selectors.EVENT_READ)
            while not self.stopping.is_set():
                ready = [tls] if tls.pending() else \
                    [key.fileobj for key, _ in selector.select(0.2)]
                for source in ready:
                    try:
                        data = source.recv(65536)  # type: ignore[attr-defined]
                    except ssl.SSLWantReadError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return  # one side ended: end the other
                    other[source].sendall(data)  # type: ignore[index]

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def tls_echo_server(certificate: tuple[Path, Path],
                    echo_server: ServerProcess) -> Iterator[TlsTerminator]:
    terminator = TlsTerminator(*certificate, echo_server.port)
    yield terminator
    terminator.stop()


def test_wss_round_trips(tls_echo_server: TlsTerminator, certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(cafile=certificate[0])
    blocks: list[str] = []
    with connect(tls_echo_server.url, ssl_context=context, trace=blocks.append) as ws:
        ws.send("over TLS")
        assert ws.recv(TIMEOUT) == "over TLS"
        payload = os.urandom(300_000)
        ws.send(payload)
        assert ws.recv(TIMEOUT) == payload
        ws.ping(b"tls")
        assert ws.wait_pong(TIMEOUT) == b"tls"
        assert ws.close() == (1000, "")
    assert blocks[0].startswith("127.0.0.1:") and " TLS  TLSv1." in blocks[0]
    assert "the bytes below are shown decrypted" in blocks[0]


def test_wss_with_an_untrusted_certificate_fails(tls_echo_server: TlsTerminator,
                                                 terminal: Callable[..., Terminal]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls_echo_server.url)  # the system's CAs do not know our certificate
    term = terminal(tls_echo_server.url)
    assert term.wait() == 1
    assert "TLS certificate not trusted" in term.stderr and "--cafile" in term.stderr


def test_wss_terminal(tls_echo_server: TlsTerminator, certificate: tuple[Path, Path],
                      terminal: Callable[..., Terminal]) -> None:
    term = terminal(tls_echo_server.url, "--cafile", str(certificate[0]))
    term.type("secret")
    assert term.line() == "secret"
    assert term.finish() == 0
    assert "closed: the server answered 1000 (normal)" in term.stderr


def test_wss_terminal_insecure_skips_the_certificate_check(
        tls_echo_server: TlsTerminator, terminal: Callable[..., Terminal]) -> None:
    term = terminal(tls_echo_server.url, "--insecure")  # the test certificate, unchecked
    term.type("unchecked")
    assert term.line() == "unchecked"
    assert term.finish() == 0
    assert "warning: --insecure: the server's certificate is not checked" in term.stderr


def test_terminal_on_a_pty_ctrl_d_closes_with_1000(echo_server: ServerProcess) -> None:
    """On a real terminal: lines typed with Enter are sent, Ctrl-D (0x04 at the start of a
    line, which the tty turns into end-of-file) closes with 1000."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "websocket.client", echo_server.ws_url],
                            stdin=follower, stdout=follower, stderr=follower, cwd=ROOT,
                            close_fds=True)
    os.close(follower)
    seen = bytearray()

    def wait_for(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert time.monotonic() < deadline, f"not there yet: {bytes(seen)!r}"
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    seen.extend(os.read(leader, 4096))
                except OSError:  # EIO: the program has exited and closed the tty
                    break
        assert done(), f"not there: {bytes(seen)!r}"

    line = "typed on a tty ✓".encode()
    try:
        wait_for(lambda: b"Ctrl-D closes" in seen)
        os.write(leader, line + b"\n")
        wait_for(lambda: seen.count(line) >= 2)  # the tty's echo, then the server's answer
        os.write(leader, b"\x04")
        wait_for(lambda: b"closed: the server answered 1000 (normal)" in seen)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(leader)
