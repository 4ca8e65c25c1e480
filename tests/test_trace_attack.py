"""The wire trace under load, the attacker's way (issue 18, items 6 and 8).

- `--trace-page` with nobody watching must cost nothing: 500 users chatting at 150
  messages a second in total cost the server no more CPU than without the option.
- With a /wire viewer watching, the same crowd costs a bounded share more: the stream
  keeps to its rate (wiretap.py) and the rest is followed, not formatted.
- `--trace` (every frame logged, the log drained through a pipe) and a viewer under a
  flood of 10,000 messages: the trace's cost is charged to the flooder's turn
  (limits.py), so the healthy user answers as it does without the trace.

Every test has a healthy user chatting every 100 ms throughout (tests/attack.py): never
disconnected, worst round trip under 1 s, at least 90 % of its answers within 100 ms. The
server's CPU time is read from /proc/PID/stat; every number is printed (pytest -s).
"""
from __future__ import annotations

import json
import selectors
import socket
import struct
import threading
import time

import pytest
from attack import ZERO_MASK, Healthy, Reader, Start, cpu_seconds, flood_frames
from conftest import ServerProcess
from wsclient import Client, frame, wait_until

CROWD = 499  # with the healthy user: 500 users
CROWD_RATE = 150.0  # messages a second, from the whole crowd
CROWD_SECONDS = 10.0
FLOOD = 10_000  # messages in one go from one flooder



class Crowd:
    """`users` WebSocket users chatting `rate` messages a second in total, round robin,
    and reading everything the server sends them (counted, not parsed)."""

    def __init__(self, port: int, users: int, rate: float) -> None:
        self.clients = [Client(port).handshake() for _ in range(users)]
        self.rate = rate
        self.sent = 0
        self.received = 0  # bytes
        self.closed = 0  # connections the server ended
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        for client in self.clients:
            client.sock.setblocking(False)
            self.selector.register(client.sock, selectors.EVENT_READ)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)

    def start(self) -> Crowd:
        self.reader.start()
        self.writer.start()
        return self

    def _write(self) -> None:
        start = time.monotonic()
        n = 0
        while not self.stopping:
            client = self.clients[n % len(self.clients)]
            try:
                client.sock.send(frame(1, b"crowd %d" % n, mask=ZERO_MASK))
            except (BlockingIOError, OSError):
                pass  # its kernel buffer is full: the server is behind, this one is lost
            n += 1
            self.sent = n
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _read(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed += 1
                    self.selector.unregister(sock)
                    continue
                self.received += len(data)

    def stop(self) -> None:
        self.stopping = True
        self.writer.join(5)
        self.reader.join(5)
        self.selector.close()
        for client in self.clients:
            client.close()


class Viewer(threading.Thread):
    """A /wire viewer reading the trace as fast as it can: every message must be a trace
    block ({"conn", "text"}), and it must never be closed."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(port)
        self.client.handshake("/wire")
        self.blocks = 0
        self.frames_shown = 0  # blocks that show one frame
        self.notes: list[str] = []  # the server's own lines (conn 0: what was not shown)
        self.bytes = 0
        self.close_code: int | None = None
        self.stopping = False
        self.bad: list[str] = []

    def run(self) -> None:
        sock = self.client.sock
        sock.settimeout(0.2)
        buf = bytearray(self.client.buf)
        while not self.stopping:
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                head = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, head = struct.unpack_from("!H", buf, 2)[0], 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, head = struct.unpack_from("!Q", buf, 2)[0], 10
                if len(buf) < head + n:
                    break
                opcode = buf[0] & 0x0F
                payload = bytes(buf[head:head + n])
                del buf[:head + n]
                if opcode == 8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if n >= 2 else 1005
                    return
                item = json.loads(payload)
                if set(item) != {"conn", "text"}:
                    self.bad.append(payload.decode()[:200])
                self.blocks += 1
                if item["conn"] == 0:
                    self.notes.append(item["text"])
                elif " frame, " in item["text"].split("\n", 1)[0]:
                    self.frames_shown += 1
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)
            buf += data

    def stop(self) -> None:
        self.stopping = True
        self.join(5)
        assert self.close_code is None, f"the viewer was closed with {self.close_code}"
        assert not self.bad, self.bad[:3]
        self.client.close()


def crowd_run(server: ServerProcess, label: str, viewer: bool = False) -> float:
    """500 users at 150 messages a second for CROWD_SECONDS, one of them the healthy user
    (checked); returns the server's CPU seconds over that time."""
    watcher = Viewer(server.port) if viewer else None
    if watcher is not None:
        watcher.start()
    crowd = Crowd(server.port, CROWD, CROWD_RATE)
    healthy = Healthy(server.port, interval=0.1)
    pid = server.proc.pid
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    crowd.start()
    time.sleep(CROWD_SECONDS)
    crowd.stop()
    took = time.monotonic() - started
    used = cpu_seconds(pid) - cpu
    print(f"{label}: {crowd.sent} messages from {CROWD + 1} users in {took:.1f} s, "
          f"server CPU {used:.2f} s, crowd read {crowd.received >> 20} MiB")
    try:
        healthy.check(label, min_on_time=0.9)
        assert crowd.closed == 0, f"{label}: the server closed {crowd.closed} users"
    finally:
        if watcher is not None:
            watcher.stop()
            print(f"{label}: the viewer got {watcher.blocks} blocks "
                  f"({watcher.frames_shown} frames, {watcher.bytes >> 10} KiB); "
                  f"notes: {watcher.notes[-1:] or 'none'}")
    return used


# -- item 6: --trace-page costs nothing while nobody watches -------------------------------

def test_trace_page_without_a_viewer_costs_nothing(start_server: Start) -> None:
    plain = start_server()
    base = crowd_run(plain, "no trace")
    plain.stop()
    traced = start_server("--trace-page")
    used = crowd_run(traced, "--trace-page, nobody watching")
    print(f"CPU: {base:.2f} s without the option, {used:.2f} s with it")
    # The same work (the 5,000 µs of noise of a shared machine aside): no tap, no format.
    assert used <= base * 1.25 + 0.5, f"--trace-page without a viewer: {used:.2f} s of CPU " \
        f"against {base:.2f} s without the option"


def test_trace_page_with_a_viewer_is_bounded(start_server: Start) -> None:
    plain = start_server()
    base = crowd_run(plain, "no trace")
    plain.stop()
    traced = start_server("--trace-page")
    used = crowd_run(traced, "--trace-page, one viewer", viewer=True)
    print(f"CPU: {base:.2f} s without the option, {used:.2f} s with a viewer")
    assert used <= base * 1.6 + 0.5, f"--trace-page with a viewer: {used:.2f} s of CPU " \
        f"against {base:.2f} s without the option"


# -- item 8: the trace's cost is the flooder's -----------------------------------------------

def flood_run(server: ServerProcess, label: str, viewer: Viewer | None = None) -> float:
    """FLOOD messages in one go from one user (who reads its echoes), the healthy user
    chatting; returns how long the flood took to reach everyone."""
    flooder = Client(server.port, timeout=60).handshake()
    echoes = Reader(flooder)
    echoes.start()
    healthy = Healthy(server.port, interval=0.1)
    time.sleep(0.5)  # the healthy user's first answers, before the flood
    data = flood_frames(FLOOD)
    started = time.monotonic()
    pump = threading.Thread(target=flooder.send, args=(data,), daemon=True)
    pump.start()
    assert wait_until(lambda: echoes.flood == FLOOD and healthy.reader.flood == FLOOD
                      or echoes.close_code is not None or echoes.eof, timeout=120,
                      interval=0.01), f"{label}: the flood did not arrive"
    took = time.monotonic() - started
    time.sleep(0.5)  # the healthy user's answers after it
    rtts = sorted(healthy.rtts)
    median = rtts[len(rtts) // 2] if rtts else 0.0
    print(f"{label}: {FLOOD} messages in {took:.2f} s; healthy user's median round trip "
          f"{median * 1000:.0f} ms")
    assert echoes.flood == FLOOD and echoes.out_of_order == 0
    healthy.check(label, min_on_time=0.9)
    flooder.close()
    return took


def test_a_flood_under_trace_costs_the_flooder(start_server: Start) -> None:
    server = start_server("--trace")
    flood_run(server, "--trace flood")
    # Every frame was logged (the log is this test's pipe, drained as it comes): the
    # flood's 10,000 in, and the 20,000 echoes out to the flooder and the healthy user.
    deadline = time.monotonic() + 30
    while server.log.count("|F00009999xxxxxxx|") < 4:  # masked, unmasked; two echoes
        assert time.monotonic() < deadline, "the last flood frame was not logged both ways"
        time.sleep(0.1)
    log = server.log
    assert log.count("client->server  RFC 6455 frame, 26 bytes") >= FLOOD
    assert log.count("server->client  RFC 6455 frame, 22 bytes") >= 2 * FLOOD


def test_a_flood_with_a_viewer_watching(start_server: Start) -> None:
    server = start_server("--trace-page")
    watcher = Viewer(server.port)
    watcher.start()
    try:
        flood_run(server, "--trace-page flood, one viewer", watcher)
    finally:
        watcher.stop()
    print(f"the viewer got {watcher.blocks} blocks ({watcher.frames_shown} frames); "
          f"notes: {watcher.notes[-1:] or 'none'}")
    assert watcher.frames_shown > 0


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s", "-q"])
