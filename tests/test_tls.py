"""TLS at the chat: https:// and wss:// in the one loop, with certificates made by openssl.

Every peer here is code nobody on the team wrote: Python's ssl module (OpenSSL) on the
client side, the `websockets` client, curl's kind of plain HTTP, Chromium. The server runs
as a user runs it (`server.py --certfile ... --keyfile ...`), except one in-process test that
reads the server's count of failed TLS handshakes.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets
from conftest import ROOT, SERVER, ServerProcess
from tls import Certificates, make_certificates, require_openssl
from wsclient import Client, close_payload, draft76_request, frame

from websocket.net.ratelog import WARNING_BURST

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

Start = Callable[..., ServerProcess]
RECORD = 16384  # TLS plaintext bytes per record (RFC 8446 §5.1): how OpenSSL cuts writes


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a certificate for localhost and the broken files (tests/tls.py), by openssl."""
    require_openssl()
    return make_certificates(tmp_path_factory.mktemp("tls"))


def tls_args(certs: Certificates, *extra: str) -> tuple[str, ...]:
    return ("--certfile", str(certs.cert), "--keyfile", str(certs.key), *extra)


def tls_client(port: int, certs: Certificates, context: ssl.SSLContext | None = None,
               timeout: float = 10.0) -> Client:
    """A wsclient.Client whose socket speaks TLS (the test CA trusted, the name checked)."""
    client = Client(port, timeout=timeout)
    ctx = context or certs.client_context()
    client.sock = ctx.wrap_socket(client.sock, server_hostname="localhost")
    return client


def joined_tls(port: int, certs: Certificates, count: int) -> list[Client]:
    return [tls_client(port, certs).handshake() for _ in range(count)]


def client_hello(certs: Certificates) -> bytes:
    """The bytes of a real ClientHello (OpenSSL's, through memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100
    return hello


def closed_by_server(sock: socket.socket, timeout: float) -> float:
    """Wait for the server to close `sock` (EOF or reset); return how long that took."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


# -- wss with real clients ----------------------------------------------------------------------

def test_start_up_log_gives_the_https_and_wss_urls(start_server: Start,
                                                   certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    server.wait_for_log("CTRL-C to quit")
    assert f"Chat page      : https://127.0.0.1:{server.port}/" in server.log
    assert f"WebSocket URL  : wss://127.0.0.1:{server.port}/" in server.log
    assert "http://" not in server.log and "ws://" not in server.log


def test_websockets_clients_chat_over_wss(start_server: Start,
                                          certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    url = f"wss://localhost:{server.port}/"

    async def chat() -> tuple[list[str], str | None]:
        ctx = certs.client_context()
        async with websockets.connect(url, ssl=ctx) as a, websockets.connect(url, ssl=ctx) as b:
            await a.send("hello over TLS ✓")
            got = [str(await b.recv()), str(await a.recv())]
            await b.send("and back")
            got += [str(await a.recv()), str(await b.recv())]
            return got, a.transport.get_extra_info("ssl_object").version()

    got, version = asyncio.run(asyncio.wait_for(chat(), 20))
    assert got == ["hello over TLS ✓", "hello over TLS ✓", "and back", "and back"]
    assert version == "TLSv1.3"
    server.wait_for_log(r"left: 1000")
    assert "Traceback" not in server.log


def test_the_page_over_https(start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    with tls_client(server.port, certs) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, headers, body = c.http_response()
    assert status == 200 and b"<!DOCTYPE html>" in body
    assert headers["content-type"].startswith("text/html")


def test_pipelined_page_requests_over_tls_are_all_answered(
        start_server: Start, certs: Certificates) -> None:
    """Two requests in one TLS write: the second waits (decrypted, invisible to the
    selector) while the first is answered, then is answered too."""
    server = start_server(*tls_args(certs))
    with tls_client(server.port, certs) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
               b"GET /chat.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        first = c.http_response()
        second = c.http_response()
        assert c.at_eof()
    assert first[0] == 200 and b"<!DOCTYPE html>" in first[2]
    assert second[0] == 200 and second[1]["content-type"].startswith("text/css")


def test_one_mebibyte_message_over_wss(start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    a, b = joined_tls(server.port, certs, 2)
    payload = os.urandom(1 << 20)
    a.send_binary(payload)
    assert b.recv_message() == payload
    assert a.recv_message() == payload


def test_pipelined_messages_are_never_stranded_in_tls_buffers(
        start_server: Start, certs: Certificates) -> None:
    """A large message and 1,000 small ones in one write, then silence. OpenSSL decrypts a
    whole record at once: the end of the large message and the small messages after it
    sit in one record, and once the large payload has been read they are decrypted bytes
    the selector cannot see (SSLSocket.pending()). They must all come back anyway."""
    server = start_server(*tls_args(certs))
    a, b = joined_tls(server.port, certs, 2)
    small = [f"m{i}" for i in range(1000)]
    tail = b"".join(frame(1, text.encode()) for text in small)
    assert len(tail) < RECORD - 2000
    # The large frame ends 1000 bytes into a record, so the small ones share that record.
    header = len(frame(2, bytes(200_000))) - 200_000
    size = 31 * RECORD + 1000 - header
    big = os.urandom(size)
    data = frame(2, big) + tail
    assert len(frame(2, big)) % RECORD == 1000
    a.send(data)
    for reader in (b, a):
        assert reader.recv_message() == big
        assert [reader.recv_message() for _ in small] == small


def test_one_thousand_pipelined_small_messages_over_wss(
        start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    a, b = joined_tls(server.port, certs, 2)
    small = [f"message {i} ✓" for i in range(1000)]
    a.send(b"".join(frame(1, text.encode()) for text in small))
    assert [b.recv_message() for _ in small] == small
    assert [a.recv_message() for _ in small] == small


def test_request_and_frames_in_one_tls_write(start_server: Start,
                                             certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    with tls_client(server.port, certs) as c:
        request, _ = c.upgrade_request()
        c.send(request + frame(1, b"first") + frame(1, b"second"))
        assert c.http_response()[0] == 101
        assert c.recv_message() == "first"
        assert c.recv_message() == "second"


def test_draft76_over_tls_says_wss_in_its_location(start_server: Start,
                                                   certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    with tls_client(server.port, certs) as old:
        old.send(draft76_request(server.port, "/demo"))
        head = old.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n")
        assert b"\r\nSec-WebSocket-Location: wss://127.0.0.1:%d/demo\r\n" % server.port in head
        assert old.read_exactly(16) == b"8jKS'y:G*Co,Wxa-"
        old.send_hixie("from 2010, encrypted")
        assert old.recv_hixie() == "from 2010, encrypted"


def test_ctrl_c_closes_wss_users_with_1001(start_server: Start,
                                           certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    users = joined_tls(server.port, certs, 2)
    server.proc.send_signal(signal.SIGINT)
    for user in users:
        code, _ = user.recv_close()
        assert code == 1001
        user.send_frame(0x8, close_payload(1001))
    assert server.proc.wait(10) == 0
    assert all(user.at_eof() for user in users)
    assert "Traceback" not in server.log


def test_two_hundred_tls_handshakes_at_once(start_server: Start,
                                            certs: Certificates) -> None:
    server = start_server(*tls_args(certs, "--callback", "echo"))
    url = f"wss://localhost:{server.port}/"
    ctx = certs.client_context()

    async def one(i: int) -> str:
        async with websockets.connect(url, ssl=ctx, open_timeout=60) as ws:
            await ws.send(f"user {i}")
            return str(await ws.recv())

    async def all_at_once() -> list[str]:
        return list(await asyncio.gather(*(one(i) for i in range(200))))

    assert asyncio.run(asyncio.wait_for(all_at_once(), 90)) == [f"user {i}" for i in range(200)]
    assert "TLS handshake" not in server.log  # none failed


def test_tls_min_1_3_refuses_tls_1_2(start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs, "--tls-min", "1.3"))
    old = certs.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        tls_client(server.port, certs, old)
    server.wait_for_log(r"TLS handshake failed: .*; closing that connection")
    with tls_client(server.port, certs) as new:
        new.handshake()
        assert new.sock.version() == "TLSv1.3"  # type: ignore[attr-defined]


def test_tls_1_2_is_accepted_by_default(start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    old = certs.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with tls_client(server.port, certs, old) as c:
        c.handshake()
        assert c.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
        c.send_text("tls 1.2")
        assert c.recv_message() == "tls 1.2"


def test_wss_with_the_select_selector(start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs, "--selector", "select"))
    a, b = joined_tls(server.port, certs, 2)
    a.send_text("select() and TLS")
    assert b.recv_message() == "select() and TLS"
    assert "SelectSelector" in server.log


def test_certificate_and_key_in_one_file(start_server: Start,
                                         certs: Certificates) -> None:
    server = start_server("--certfile", str(certs.combined))
    tls_client(server.port, certs).handshake().close()


def test_full_chain_file(start_server: Start, certs: Certificates) -> None:
    server = start_server("--certfile", str(certs.chain),
                          "--keyfile", str(certs.key))
    tls_client(server.port, certs).handshake().close()


# -- what must not hurt anyone else ------------------------------------------------------------

def test_silent_and_stalled_handshakes_time_out_while_others_chat(
        start_server: Start, certs: Certificates) -> None:
    timeout = 2.0
    server = start_server(*tls_args(certs, "--handshake-timeout", str(timeout)))
    silent = socket.create_connection(("127.0.0.1", server.port))
    stalled = socket.create_connection(("127.0.0.1", server.port))
    hello = client_hello(certs)
    stalled.sendall(hello[:len(hello) // 2])
    started = time.monotonic()
    closed_after: dict[str, float] = {}

    def watch(name: str, sock: socket.socket) -> None:
        closed_by_server(sock, timeout + 8.0)
        closed_after[name] = time.monotonic() - started

    watchers = [threading.Thread(target=watch, args=item, daemon=True)
                for item in (("silent", silent), ("stalled", stalled))]
    for thread in watchers:
        thread.start()
    # The users arrive (their own TLS handshakes) while those two hang, and chat.
    a, b = joined_tls(server.port, certs, 2)
    latencies = []
    while time.monotonic() - started < timeout + 1.0:
        sent = time.monotonic()
        a.send_text("ping")
        assert b.recv_message() == "ping"
        assert a.recv_message() == "ping"
        latencies.append(time.monotonic() - sent)
        time.sleep(0.01)
    for thread in watchers:
        thread.join(timeout + 8.0)
    silent.close()
    stalled.close()
    # Each held its socket until the timeout, not less and not much more.
    for name in ("silent", "stalled"):
        assert timeout - 0.3 <= closed_after[name] < timeout + 3.0, closed_after
    assert len(latencies) > 50
    # Loose bounds (other tests load the machine); a handshake blocking the loop would hold
    # a round trip for the whole timeout (2 s).
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < timeout / 2, latencies
    server.wait_for_log(r"TLS handshake not complete within 2 s \(the client sent nothing\)")
    server.wait_for_log(r"TLS handshake not complete within 2 s \(the client did not finish")


def test_request_one_byte_per_tls_record(start_server: Start, certs: Certificates) -> None:
    """Tiny pieces: every byte of the upgrade request in its own TLS record."""
    server = start_server(*tls_args(certs))
    with tls_client(server.port, certs) as c:
        request, _ = c.upgrade_request()
        for i in range(len(request)):
            c.send(request[i:i + 1])  # one SSL write, one record
        assert c.http_response()[0] == 101
        for byte in frame(1, b"bytewise"):
            c.send(bytes([byte]))
        assert c.recv_message() == "bytewise"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_flooder_that_never_reads_costs_a_healthy_wss_user_nothing(
        start_server: Start, certs: Certificates) -> None:
    """One wss user pipelines small messages as fast as it can and never reads their
    echoes. Its input waits while its queue is full (fair delivery, over TLS too: bytes
    decrypted but on hold stay in OpenSSL's buffer), the server's memory stays bounded,
    and another wss user's round trips stay short."""
    server = start_server(*tls_args(certs, "--callback", "echo", "--max-buffer", "1M"))
    flooder, healthy = joined_tls(server.port, certs, 2)
    flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    base = rss_bytes(server.proc.pid)
    burst = frame(1, b"x" * 100) * 10_000  # ~1 MB a write
    sent = [0]

    def flood() -> None:
        try:
            for _ in range(200):  # bounded: ~200 MB at most
                flooder.send(burst)
                sent[0] += len(burst)
        except OSError:
            pass  # shut down by the test

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    rtts = []
    peak = base
    for i in range(60):
        start = time.monotonic()
        healthy.send_text(f"healthy {i}")
        assert healthy.recv_message() == f"healthy {i}"
        rtts.append(time.monotonic() - start)
        peak = max(peak, rss_bytes(server.proc.pid))
        time.sleep(0.03)
    assert sent[0] >= len(burst)  # the flood did go out
    flooder.sock.shutdown(socket.SHUT_RDWR)  # ends the flooder's blocked send
    thread.join(10)
    assert not thread.is_alive()
    flooder.close()
    assert max(rtts) < 1.0, rtts  # generous: the flood, the server and we share 2 cores
    assert statistics.median(rtts) < 0.1, rtts
    assert peak - base < 32 << 20, (base, peak)  # --max-buffer 1M, plus buffers in flight
    healthy.send_text("still fine")
    assert healthy.recv_message() == "still fine"
    assert "Traceback" not in server.log


def test_plain_http_to_the_tls_port_gets_400(start_server: Start,
                                             certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    with Client(server.port) as plain:
        plain.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = plain.read_to_eof()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert b"use https://" in body and len(body.splitlines()) == 1
    server.wait_for_log(r"HTTP 400: plain HTTP sent to the TLS port")
    tls_client(server.port, certs).handshake().close()  # and TLS still works


def counted_warnings(log: str, text: str) -> tuple[int, int]:
    """(lines, warnings) of one kind: each line is one, plus its "(and N more like it ...)"."""
    found = [line for line in log.splitlines() if "WARNING" in line and text in line]
    more = sum(int(line.split("(and ")[1].split(" ")[0].replace(",", ""))
               for line in found if "(and " in line)
    return len(found), len(found) + more


def test_a_flood_of_plain_http_to_the_tls_port_is_one_warning_line(
        start_server: Start, certs: Certificates) -> None:
    """3,000 plain HTTP requests to the TLS port as fast as possible, never read: each gets
    its 400 and its close, the log the first ten (ratelog.py) and, when the server stops,
    one more line counting the rest; a wss user chats every 100 ms throughout, unhurt."""
    server = start_server(*tls_args(certs, "--callback", "echo"))
    healthy = tls_client(server.port, certs).handshake()
    count = 3000
    sockets: list[socket.socket] = []
    done = threading.Event()

    def flood() -> None:
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)  # a FIN, never a reset: the request is read
                sockets.append(sock)
        finally:
            done.set()

    thread = threading.Thread(target=flood, daemon=True)
    started = time.monotonic()
    thread.start()
    rtts = []
    n = 0
    while not done.is_set() or n < 20:
        sent = time.monotonic()
        healthy.send_text(f"healthy {n}")
        assert healthy.recv_message() == f"healthy {n}"
        rtts.append(time.monotonic() - sent)
        n += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))
    took = time.monotonic() - started
    thread.join(10)
    assert len(sockets) == count
    time.sleep(0.5)  # the last ones answered
    lines_while_running, _ = counted_warnings(server.log, "plain HTTP sent to the TLS port")
    healthy.close()
    for sock in sockets:
        sock.close()
    assert server.stop() == 0
    lines, warnings = counted_warnings(server.log, "plain HTTP sent to the TLS port")
    on_time = sum(rtt <= 0.1 for rtt in rtts) / len(rtts)
    print(f"{count} plain HTTP requests in {took:.1f} s: {lines_while_running} warning "
          f"line(s) while they came, {lines} in all for {warnings}; healthy user "
          f"{len(rtts)} round trips, worst {max(rtts) * 1000:.0f} ms, {on_time:.0%} on time")
    assert lines_while_running <= WARNING_BURST + int(took // 10)  # then one every 10 s
    assert warnings == count  # none lost: every one is in a line or a count
    assert max(rtts) < 1.0 and on_time >= 0.9
    assert "Traceback" not in server.log


def test_tls_errors_are_one_line_and_close_only_that_connection(
        start_server: Start, certs: Certificates) -> None:
    server = start_server(*tls_args(certs))
    a, b = joined_tls(server.port, certs, 2)
    # A client that does not trust our certificate aborts its handshake with an alert.
    strict = ssl.create_default_context()  # the system's CAs: not our test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_client(server.port, certs, strict)
    server.wait_for_log(r"TLS handshake failed: .*unknown ca.*; closing that connection")
    # Garbage after a finished handshake: not a TLS record.
    broken = tls_client(server.port, certs).handshake()
    raw = socket.socket(fileno=os.dup(broken.sock.fileno()))
    raw.sendall(b"\x17\x03\x03\x00\x20" + bytes(32))  # application data no key produced
    assert closed_by_server(raw, 5.0) < 5.0
    raw.close()
    broken.close()
    server.wait_for_log(r"TLS error: .*; closing that connection")
    a.send_text("still here")
    assert b.recv_message() == "still here"
    assert "Traceback" not in server.log
    tls_lines = [line for line in server.log.splitlines() if "TLS" in line and "WARNING" in line]
    assert len(tls_lines) == 2, tls_lines


def test_a_tls_user_that_stops_reading_is_dropped(start_server: Start,
                                                  certs: Certificates) -> None:
    """--max-buffer bounds what a wss user makes us hold, as for ws://."""
    server = start_server(*tls_args(certs, "--max-buffer", "65536"))
    talker, sleeper = joined_tls(server.port, certs, 2)
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "x" * 16000
    for _ in range(2000):
        talker.send_text(chunk)
        assert talker.recv_message() == chunk
        if "is not reading" in server.log:
            break
    server.wait_for_log(r"user \d+ .* is not reading: \d+ bytes unsent \(limit 65536\)")
    talker.send_text("after")
    assert talker.recv_message() == "after"


def test_failed_handshakes_are_counted(certs: Certificates) -> None:
    """The server's `tls_handshake_failures` (for the metrics): plain HTTP, a silent client
    timed out, a client that refuses the certificate; a good handshake is not counted."""
    from websocket.chat.server import Server
    from websocket.net.tls import load_context

    server = Server("127.0.0.1", 0, handshake_timeout=1.0,
                    ssl_context=load_context(str(certs.cert), str(certs.key)))
    server.listen()
    port = server.port
    errors: list[BaseException] = []

    def clients() -> None:
        try:
            with Client(port) as plain:
                plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                plain.read_to_eof()
            with pytest.raises(ssl.SSLCertVerificationError):
                tls_client(port, certs, ssl.create_default_context())
            tls_client(port, certs).handshake().close()
            silent = socket.create_connection(("127.0.0.1", port))
            closed_by_server(silent, 5.0)
            silent.close()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    selector = server.loop.selector

    def select(timeout: float | None) -> list[Any]:  # never sleeps past the next check
        return selector.select(0.05 if timeout is None else min(timeout, 0.05))

    try:
        while thread.is_alive() and time.monotonic() < deadline:
            server.loop.run_once(select)
    finally:
        if server.listener is not None:
            server.listener.close()
        server.loop.close()
    thread.join(1)
    assert not errors, errors
    assert server.tls_handshake_failures == 3


# -- the command line -----------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SERVER), "127.0.0.1", "0", *args],
                          capture_output=True, text=True, timeout=20, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case, wanted", [
    ("missing cert", "cannot read the certificate file"),
    ("missing key", "cannot read the key file"),
    ("unreadable cert", "cannot read the certificate file"),
    ("garbage cert", "holds no PEM certificate"),
    ("garbage key", "holds no PEM private key"),
    ("wrong key", "does not match the certificate"),
    ("key without cert", "--keyfile needs --certfile"),
    ("tls-min without cert", "--tls-min needs --certfile"),
    ("bad tls-min", "invalid choice"),
])
def test_bad_certificate_or_key_is_one_line_and_status_1(
        certs: Certificates, case: str, wanted: str) -> None:
    c = certs
    args = {
        "missing cert": ("--certfile", str(c.missing), "--keyfile", str(c.key)),
        "missing key": ("--certfile", str(c.cert), "--keyfile", str(c.missing)),
        "unreadable cert": ("--certfile", str(c.unreadable), "--keyfile", str(c.key)),
        "garbage cert": ("--certfile", str(c.garbage), "--keyfile", str(c.key)),
        "garbage key": ("--certfile", str(c.cert), "--keyfile", str(c.garbage)),
        "wrong key": ("--certfile", str(c.cert), "--keyfile", str(c.wrong_key)),
        "key without cert": ("--keyfile", str(c.key)),
        "tls-min without cert": ("--tls-min", "1.3"),
        "bad tls-min": ("--certfile", str(c.cert), "--keyfile", str(c.key), "--tls-min", "1.1"),
    }[case]
    result = run(*args)
    assert result.returncode == (2 if case == "bad tls-min" else 1), result.stderr
    lines = result.stderr.strip().splitlines()
    assert wanted in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if case != "bad tls-min":  # argparse prints its usage line first
        assert len(lines) == 1, result.stderr


# -- Chromium ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_browser() -> Iterator[BrowserContext]:
    """Headless Chromium that accepts the test certificate (ignore_https_errors)."""
    from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _unavailable
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    import tempfile
    expect.set_options(timeout=TIMEOUT_MS)
    with tempfile.TemporaryDirectory(prefix="chat-chromium-tls-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            ignore_https_errors=True, timeout=30_000)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def test_chromium_and_websockets_chat_over_wss(tls_browser: BrowserContext,
                                               start_server: Start,
                                               certs: Certificates) -> None:
    from playwright.sync_api import expect
    from test_browser import connect, messages, say, wait_for_message
    from tls import WebsocketsClient

    server = start_server(*tls_args(certs))
    page = tls_browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"https://localhost:{server.port}/")
        expect(page.locator("#server")).to_have_value(f"wss://localhost:{server.port}/")
        connect(page, "chromium")
        with WebsocketsClient(f"wss://localhost:{server.port}/", certs.client_context()) as other:
            other.send("websockets: hello Chromium")
            assert other.recv(timeout=10) == "websockets: hello Chromium"
            wait_for_message(page, "websockets: hello Chromium")
            say(page, "hello from Chromium over TLS")
            assert other.recv(timeout=10) == "chromium: hello from Chromium over TLS"
            wait_for_message(page, "chromium: hello from Chromium over TLS")
        assert messages(page)[-2:] == ["websockets: hello Chromium",
                                       "chromium: hello from Chromium over TLS"]
    finally:
        page.close()
    assert not problems, problems
    server.wait_for_log(r"joined: RFC 6455, resource /(\?handle=\w+)?, origin "
                        r"https://localhost:\d+")  # the chat page names its handle


def test_metrics_count_tls_handshake_failures(start_server: Start, certs: Certificates) -> None:
    """--metrics over https: plain HTTP to the TLS port and a broken ClientHello each count
    once in websocket_tls_handshake_failures_total, and TLS users' bytes are counted."""
    from prometheus_client.parser import text_string_to_metric_families

    server = start_server(*tls_args(certs, "--metrics", "--handshake-timeout", "2"))

    def scrape() -> dict[str, float]:
        context = certs.client_context()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return {sample.name: sample.value
                for family in text_string_to_metric_families(body.decode())
                for sample in family.samples if not sample.labels}

    before = scrape()
    with Client(server.port) as plain:
        plain.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        plain.read_to_eof()
    with Client(server.port) as broken:
        broken.send(b"\x16\x03\x01\x00\x05hello")  # a TLS record that is no ClientHello
        broken.read_to_eof()
    user = tls_client(server.port, certs).handshake()
    user.send(frame(1, b"hi over tls"))
    user.close()
    deadline = time.monotonic() + 10
    after = scrape()
    while after["websocket_tls_handshake_failures_total"] < before[
            "websocket_tls_handshake_failures_total"] + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape()
    assert after["websocket_tls_handshake_failures_total"] == (
        before["websocket_tls_handshake_failures_total"] + 2)
    assert after["websocket_received_bytes_total"] > before["websocket_received_bytes_total"]
    assert after["websocket_sent_bytes_total"] > before["websocket_sent_bytes_total"]
