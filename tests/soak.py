#!/usr/bin/env python3
"""Chaos soak: hundreds of chatting users, and users that misbehave, against the real server.

    python3 tests/soak.py --duration 180 --users 300      # what `make soak` runs
    python3 tests/soak.py --duration 8 --users 200        # what tests/test_soak.py runs

One process, one selectors loop, non-blocking sockets to 127.0.0.1 only. It starts
`server.py` itself (CLI) or drives one that a test started (`run(...)`), with small limits
(`--max-buffer 65536 --max-message-size 16384`, short timeouts), and then:

1. `--users` healthy users join (a few of them speak draft-76) and stay to the end;
2. for `--duration` seconds each sends sequence-numbered text messages ("<uid> <seq> <pad>",
   a few KiB now and then, some fragmented with a ping between the fragments), while chaos
   users come and go: they vanish abruptly (RST via SO_LINGER 0, mid-handshake or mid-frame),
   half-close, go silent half-open, trickle a handshake and a message one byte at a time,
   send garbage (bad frames, bad UTF-8, bad HTTP), announce oversized messages, sit idle,
   fetch the page, or stop reading (and flood pings so their pongs pile up); and a few
   users send bursts of messages as fast as they can (they must never be dropped);
3. chaos stops; the misbehaving users are gone; healthy users leave with a closing handshake.

Checked, and reported as problems (any problem fails the run):

- every healthy user receives every accepted message exactly once and in order (the default
  callback echoes each message to every user, sender included). A message is accepted once
  its sender's last byte is sent and the sender is healthy; users that join late (tricklers)
  must see, from each sender, an unbroken run of sequence numbers;
- each misbehaving user gets the answer it deserves (close code 1002/1007/1009, HTTP 4xx,
  408 or a plain close), and every user that stops reading is dropped by the server;
- the server stays up and never logs a traceback;
- its open file descriptors (/proc/PID/fd) return exactly to their baseline once the
  misbehaving users are gone (and once everybody is gone), and its RSS (/proc/PID/status
  VmRSS) returns near its baseline;
- the latency of every delivery (last byte sent -> message parsed by a receiver) stays
  bounded: p50, p99 and max are reported, and p99/max must stay under limits.

Every wait is bounded; the run stops by itself; every socket it opens is closed.
"""
from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import heapq
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
PAD = b"abcdefghijklmnopqrstuvwxyz0123456789" * 128  # 4608 bytes of known text
RECV_SIZE = 256 * 1024
MAX_PROBLEMS_KEPT = 60


@dataclass
class Config:
    users: int = 200  # healthy users, there from start to end
    duration: float = 8.0  # seconds of chatting (and of chaos)
    rate: float = 1.0  # messages per second per healthy user
    hixie_every: int = 20  # one healthy user in this many speaks draft-76
    chaos_rate: float = 30.0  # misbehaving connections started per second
    flooders: int = 3  # users that stop reading and flood pings (dropped by --max-buffer)
    stallers: int = 0  # users that only stop reading (dropped once ~4 MiB went their way)
    floods: int = 2  # users that send bursts of messages as fast as they can (and read)
    flood_burst: int = 300  # messages per burst, a burst every ~2 s
    max_message_size: int = 16384
    max_buffer: int = 65536
    handshake_timeout: float = 3.0
    close_timeout: float = 1.0
    latency_p99: float = 2.0  # seconds: limits for the healthy users' deliveries
    latency_max: float = 5.0
    rss_slack: int = 24 << 20  # bytes the RSS may stay above its baseline after the chaos
    seed: int = 5
    progress: bool = False  # print a line every 10 s (the long soak)

    def server_args(self) -> list[str]:
        return ["--max-buffer", str(self.max_buffer),
                "--max-message-size", str(self.max_message_size),
                "--handshake-timeout", f"{self.handshake_timeout:g}",
                "--close-timeout", f"{self.close_timeout:g}"]


# -- measurements -----------------------------------------------------------------------------

def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def tcp_mem_pages() -> int:
    """Kernel memory of all TCP sockets (system-wide pages, /proc/net/sockstat), for the log."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return int(parts[parts.index("mem") + 1])
    except (OSError, ValueError):
        pass
    return -1


def kernel_send_buffer_max() -> int:
    """The largest send buffer TCP autotuning gives a socket (tcp_wmem's third field)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


class Histogram:
    """Latencies in 0.1 ms buckets (exact enough for percentiles, constant memory)."""

    STEP = 1e-4
    SIZE = 300_000  # 30 s

    def __init__(self) -> None:
        self.buckets = [0] * self.SIZE
        self.count = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.buckets[min(int(seconds / self.STEP), self.SIZE - 1)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, p: float) -> float:
        if not self.count:
            return 0.0
        rank = max(1, int(self.count * p / 100 + 0.999999))
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return (i + 1) * self.STEP
        return self.max


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- wire helpers (written for the soak, not shared with the server) ----------------------------

def mask_payload(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little")


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                 masked: bool = True, length: int | None = None) -> bytes:
    """A client frame, masked (RFC 6455 §5.2/§5.3); `length` overrides the announced length."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_payload(payload, key)


def upgrade_request(port: int, protocol: str) -> tuple[bytes, bytes]:
    """(request, what the 101 must carry): the accept value, or draft-76's MD5 answer."""
    if protocol == "rfc6455":
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        request = (b"GET /chat HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   b"Sec-WebSocket-Version: 13\r\nOrigin: http://%s:%d\r\n\r\n"
                   % (HOST.encode(), port, key, HOST.encode(), port))
        return request, accept
    keys, numbers = [], []
    for _ in range(2):
        spaces = random.randint(1, 6)
        number = random.randint(0, 4_294_967_295 // spaces)
        chars = list(str(number * spaces))
        for ch in random.choices("abcXYZ%$#", k=random.randint(1, 5)):
            chars.insert(random.randint(0, len(chars)), ch)
        for _ in range(spaces):
            chars.insert(random.randint(1, len(chars) - 1) if len(chars) > 1 else 1, " ")
        keys.append("x" + "".join(chars) + "x")
        numbers.append(number)
    key3 = os.urandom(8)
    challenge = hashlib.md5(struct.pack("!II", *numbers) + key3).digest()
    request = (f"GET /chat HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: Upgrade\r\n"
               f"Upgrade: WebSocket\r\nSec-WebSocket-Key1: {keys[0]}\r\n"
               f"Sec-WebSocket-Key2: {keys[1]}\r\nOrigin: http://{HOST}:{port}\r\n\r\n"
               ).encode() + key3
    return request, challenge


def chat_payload(uid: int, seq: int) -> bytes:
    """The text of message `seq` of user `uid`: mostly ~100 bytes, one in 20 a few KiB."""
    mix = uid * 7919 + seq * 104729
    size = 2000 + mix % 2500 if mix % 20 == 0 else 20 + mix % 200
    return b"%d %d " % (uid, seq) + PAD[:size]


# -- one client connection --------------------------------------------------------------------

class Conn:
    """A non-blocking client socket with its buffers and a parser for what the server sends."""

    def __init__(self, drv: Driver, name: str, protocol: str = "rfc6455", healthy: bool = False,
                 rcvbuf: int = 0, raw: bool = False) -> None:
        self.drv = drv
        self.name = name
        self.protocol = protocol
        self.healthy = healthy
        self.raw = raw  # keep everything in inbuf, parse nothing (HTTP page fetches)
        self.uid = -1
        self.strict = False  # joined before any chat: each sender's first message is #0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.error = ""
        result = self.sock.connect_ex((HOST, drv.port))
        if result not in (0, errno.EINPROGRESS):
            self.error = f"connect: {os.strerror(result)}"
        self.port = self.sock.getsockname()[1]
        self.out = bytearray()
        self.queued = 0
        self.sent = 0
        self.marks: deque[tuple[int, Callable[[], None]]] = deque()
        self.inbuf = bytearray()
        self.expect = b""  # the accept value or draft-76 answer the 101 must carry
        self.stage = "http"  # http -> open -> closed; "refused" for a non-101 answer
        self.status = 0
        self.reading = True
        self.registered = 0
        self.gone = False  # our socket is closed
        self.eof = False
        self.reset = False
        self.close_seen = False
        self.close_code: int | None = None
        self.pongs = 0
        self.pings = 0
        self.messages = 0  # data messages received
        self.received = 0  # chat messages received and checked
        self.last: dict[int, int] = {}  # sender uid -> last sequence number seen
        self.events_after_close = 0
        drv.conns.add(self)
        self._update()

    # -- registration --------------------------------------------------------------------
    def _update(self) -> None:
        if self.gone:
            return
        want = 0
        if self.reading and not (self.eof or self.reset):
            want |= selectors.EVENT_READ
        if self.out and not self.reset:
            want |= selectors.EVENT_WRITE
        if want == self.registered:
            return
        sel = self.drv.sel
        if not self.registered:
            sel.register(self.sock, want, self)
        elif not want:
            sel.unregister(self.sock)
        else:
            sel.modify(self.sock, want, self)
        self.registered = want

    def pause_reading(self) -> None:
        self.reading = False
        self._update()

    # -- writing ---------------------------------------------------------------------------
    def send(self, data: bytes, mark: Callable[[], None] | None = None) -> None:
        if self.gone or self.reset:
            return
        self.out += data
        self.queued += len(data)
        if mark is not None:
            self.marks.append((self.queued, mark))
        self.flush()

    def flush(self) -> None:
        if self.gone:
            return
        if self.out and not self.reset:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self.reset = True
                self.error = self.error or f"send: {exc.strerror or exc}"
                self.out.clear()
                self.marks.clear()
                n = 0
            if n:
                del self.out[:n]
                self.sent += n
                marks = self.marks
                while marks and marks[0][0] <= self.sent:
                    marks.popleft()[1]()
        self._update()

    # -- reading ---------------------------------------------------------------------------
    def on_readable(self, now: float) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.reset = True
            self.error = self.error or f"recv: {exc.strerror or exc}"
            self._update()
            return
        if not data:
            self.eof = True
            self._update()
            return
        self.inbuf += data
        if not self.raw:
            self.parse(now)

    def parse(self, now: float) -> None:
        if self.stage == "http":
            end = self.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.inbuf[:end])
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.drv.problem(f"{self.name}: unreadable response {head[:60]!r}")
                self.status = -1
            extra = 16 if self.status == 101 and self.protocol == "hixie76" else 0
            if len(self.inbuf) < end + 4 + extra:
                return
            answer = bytes(self.inbuf[end + 4:end + 4 + extra])
            del self.inbuf[:end + 4 + extra]
            if self.status != 101:
                self.stage = "refused"
            else:
                self.stage = "open"
                if self.protocol == "rfc6455":
                    found = re.search(rb"(?im)^sec-websocket-accept:[ \t]*(\S+)", head)
                    ok = found is not None and found.group(1) == self.expect
                else:
                    ok = answer == self.expect
                if not ok:
                    self.drv.problem(f"{self.name}: wrong handshake answer {head[:200]!r}")
        if self.stage == "refused":
            return  # the body of an error answer: kept in inbuf for whoever wants it
        if self.stage in ("open", "closed"):
            if self.protocol == "rfc6455":
                self._frames(now)
            else:
                self._hixie(now)

    def _frames(self, now: float) -> None:
        buf = self.inbuf
        pos, end = 0, len(buf)
        drv = self.drv
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length, size = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, size = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, size = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if end - pos < size + length:
                break
            payload = bytes(buf[pos + size:pos + size + length])
            pos += size + length
            opcode = first & 0x0F
            if second & 0x80 or first & 0x70 or not first & 0x80:
                drv.problem(f"{self.name}: server frame masked, with RSV bits or fragmented: "
                            f"{first:#x} {second:#x}")
            if self.stage == "closed":
                self.events_after_close += 1
                continue
            if opcode == 0x1:
                self.messages += 1
                drv.on_text(self, payload, now)
            elif opcode == 0x8:
                self.close_seen = True
                self.stage = "closed"
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 \
                    else None
            elif opcode == 0xA:
                self.pongs += 1
            else:
                drv.problem(f"{self.name}: unexpected opcode {opcode:#x} from the server")
        del buf[:pos]

    def _hixie(self, now: float) -> None:
        buf = self.inbuf
        pos, end = 0, len(buf)
        while pos < end:
            if buf[pos] == 0x00:
                stop = buf.find(b"\xff", pos + 1)
                if stop < 0:
                    break
                payload = bytes(buf[pos + 1:stop])
                pos = stop + 1
                if self.stage == "closed":
                    self.events_after_close += 1
                    continue
                self.messages += 1
                self.drv.on_text(self, payload, now)
            elif buf[pos] == 0xFF:
                if end - pos < 2:
                    break
                if buf[pos + 1] != 0x00:
                    self.drv.problem(f"{self.name}: bad draft-76 close "
                                     f"{bytes(buf[pos:pos + 8])!r}")
                self.close_seen = True
                self.stage = "closed"
                pos += 2
            else:
                self.drv.problem(f"{self.name}: bad draft-76 frame {bytes(buf[pos:pos + 8])!r}")
                pos = end
        del buf[:pos]

    # -- ending ----------------------------------------------------------------------------
    def close(self, rst: bool = False) -> None:
        """Close our socket; with `rst`, abortively (SO_LINGER 0: the peer gets a RST)."""
        if self.gone:
            return
        if self.registered:
            try:
                self.drv.sel.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.registered = 0
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()
        self.gone = True
        self.drv.conns.discard(self)

    @property
    def ended(self) -> bool:
        return self.eof or self.reset or self.gone


# -- the scheduler for misbehaving users -----------------------------------------------------

@dataclass
class Until:
    """`ok = yield Until(predicate, timeout)`: resume when true (True) or at timeout (False)."""

    predicate: Callable[[], bool]
    timeout: float


Script = Generator[Any, Any, None]


@dataclass(eq=False)
class Actor:
    kind: str
    gen: Script | None = None
    conns: list[Conn] = field(default_factory=list)
    predicate: Callable[[], bool] | None = None
    deadline: float = 0.0


# -- the driver ----------------------------------------------------------------------------------

@dataclass
class Report:
    config: Config
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    chaos: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"soak: {s.get('users', 0)} healthy users ({s.get('hixie_users', 0)} draft-76), "
            f"{s.get('chat_seconds', 0):.1f} s of chat, {s.get('accepted', 0)} messages accepted "
            f"({s.get('senders', 0)} senders), {s.get('deliveries', 0)} deliveries checked, "
            f"{s.get('pings', 0)} pings/{s.get('pongs', 0)} pongs",
            f"chaos: {sum(self.chaos.values())} misbehaving connections: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.chaos.items())),
            f"latency (last byte sent -> parsed by a receiver): p50 {ms(s.get('p50', 0))}, "
            f"p99 {ms(s.get('p99', 0))}, max {ms(s.get('max', 0))}",
            f"server fds: {s.get('fd_start')} at start, {s.get('fd_users')} with the healthy "
            f"users, peak {s.get('fd_peak')}, {s.get('fd_after_chaos')} after the chaos, "
            f"{s.get('fd_end')} at the end",
            f"server RSS: {s.get('rss_start', 0) >> 20} MiB at start, "
            f"{s.get('rss_users', 0) >> 20} MiB with the users, peak "
            f"{s.get('rss_peak', 0) >> 20} MiB, {s.get('rss_after_chaos', 0) >> 20} MiB after "
            f"the chaos, {s.get('rss_end', 0) >> 20} MiB at the end; kernel TCP memory peak "
            f"{s.get('tcp_mem_peak_pages', 0) * 4 >> 10} MiB (system-wide)",
            f"dropped for not reading: {s.get('dropped_slow', 0)}; "
            f"took {s.get('seconds', 0):.1f} s",
        ]
        if self.problem_count:
            lines.append(f"PROBLEMS ({self.problem_count}):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("no problems")
        return "\n".join(lines)


class Driver:
    def __init__(self, port: int, pid: int, log: Callable[[], str],
                 alive: Callable[[], bool], config: Config) -> None:
        self.port = port
        self.pid = pid
        self._log = log
        self.alive = alive
        self.cfg = config
        self.rng = random.Random(config.seed)
        random.seed(config.seed)
        self.sel = selectors.DefaultSelector()
        self.conns: set[Conn] = set()
        self.report = Report(config)
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = 0
        self.actors: set[Actor] = set()
        self.waiting: set[Actor] = set()
        self.sent_at: dict[tuple[int, int], float] = {}
        self.accepted: dict[int, int] = {}  # sender uid -> last accepted seq
        self.accepted_total = 0
        self.hist = Histogram()
        self.healthy: list[Conn] = []
        self.next_uid = config.users
        self.pings_sent = 0
        self.fd_peak = 0
        self.rss_peak = 0
        self.tcp_mem_peak = 0
        self._log_cache = ""
        self._log_read_at = 0.0
        self._traceback_seen = False
        self._lines_seen: set[str] = set()

    # -- bookkeeping ---------------------------------------------------------------------
    def problem(self, text: str) -> None:
        self.report.problem_count += 1
        if len(self.report.problems) < MAX_PROBLEMS_KEPT:
            self.report.problems.append(text)

    def log(self, fresh: bool = False) -> str:
        now = time.monotonic()
        if fresh or now - self._log_read_at > 0.1:
            self._log_cache = self._log()
            self._log_read_at = now
        return self._log_cache

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        self._tick += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._tick, fn))

    def sample(self) -> None:
        fds, rss, tcp = fd_count(self.pid), rss_bytes(self.pid), tcp_mem_pages()
        self.fd_peak = max(self.fd_peak, fds)
        self.rss_peak = max(self.rss_peak, rss)
        self.tcp_mem_peak = max(self.tcp_mem_peak, tcp)

    # -- the loop ------------------------------------------------------------------------
    def step(self, max_wait: float = 0.01) -> None:
        now = time.monotonic()
        timeout = max_wait
        if self.timers:
            timeout = min(timeout, max(0.0, self.timers[0][0] - now))
        if self.waiting:
            timeout = min(timeout, 0.002)
        if self.sel.get_map():
            events = self.sel.select(timeout)
        else:
            time.sleep(timeout)
            events = []
        now = time.monotonic()
        for key, mask in events:
            conn: Conn = key.data
            if mask & selectors.EVENT_WRITE:
                conn.flush()
            if mask & selectors.EVENT_READ and not conn.gone:
                conn.on_readable(now)
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            fn()
        if self.waiting:
            now = time.monotonic()
            for actor in list(self.waiting):
                assert actor.predicate is not None
                try:
                    ready = actor.predicate()
                except Exception:  # a bug in a script: report it, do not hang
                    self.problem(f"{actor.kind}: predicate raised {traceback.format_exc(-1)}")
                    ready = True
                if ready or now >= actor.deadline:
                    self.waiting.discard(actor)
                    actor.predicate = None
                    self._resume(actor, bool(ready))

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            self.step()
        return True

    # -- actors --------------------------------------------------------------------------------
    def spawn(self, kind: str, script: Callable[..., Script], *args: Any) -> None:
        actor = Actor(kind)
        actor.gen = script(actor, *args)
        self.actors.add(actor)
        self.report.chaos[kind] += 1
        self._resume(actor, None)

    def _resume(self, actor: Actor, value: Any) -> None:
        assert actor.gen is not None
        try:
            command = actor.gen.send(value)
        except StopIteration:
            self._finish(actor)
            return
        except Exception:
            self.problem(f"{actor.kind}: script raised {traceback.format_exc(-2)}")
            self._finish(actor)
            return
        if isinstance(command, Until):
            actor.predicate = command.predicate
            actor.deadline = time.monotonic() + command.timeout
            self.waiting.add(actor)
        else:
            self.at(float(command), lambda: self._resume(actor, None))

    def _finish(self, actor: Actor) -> None:
        for conn in actor.conns:
            conn.close(rst=True)
        self.actors.discard(actor)
        self.waiting.discard(actor)
        if actor.gen is not None:
            actor.gen.close()

    def connect(self, actor: Actor, protocol: str = "rfc6455", **kw: Any) -> Conn:
        conn = Conn(self, f"{actor.kind}#{self.report.chaos[actor.kind]}", protocol, **kw)
        actor.conns.append(conn)
        return conn

    def open_ws(self, actor: Actor, protocol: str = "rfc6455", **kw: Any) -> Conn:
        conn = self.connect(actor, protocol, **kw)
        request, conn.expect = upgrade_request(self.port, protocol)
        conn.send(request)
        return conn

    # -- chat --------------------------------------------------------------------------------
    def on_text(self, conn: Conn, payload: bytes, now: float) -> None:
        try:
            a = payload.index(b" ")
            b = payload.index(b" ", a + 1)
            uid, seq = int(payload[:a]), int(payload[a + 1:b])
        except ValueError:
            self.problem(f"{conn.name}: message not from the chat: {payload[:40]!r}")
            return
        if payload != chat_payload(uid, seq):
            self.problem(f"{conn.name}: message {uid}/{seq} corrupted ({len(payload)} bytes)")
        last = conn.last.get(uid)
        if last is None:
            if conn.strict and seq != 0:
                self.problem(f"{conn.name}: first message from user {uid} is #{seq}, not #0")
        elif seq != last + 1:
            what = "duplicate" if seq <= last else "gap"
            self.problem(f"{conn.name}: {what}: from user {uid}, #{seq} after #{last}")
        conn.last[uid] = seq
        conn.received += 1
        sent = self.sent_at.get((uid, seq))
        if sent is None:
            self.problem(f"{conn.name}: got {uid}/{seq} before it was completely sent")
        elif conn.healthy:
            self.hist.add(now - sent)

    def accept(self, uid: int, seq: int) -> None:
        """The last byte of message `seq` of `uid` has left: it is accepted."""
        self.sent_at[(uid, seq)] = time.monotonic()
        previous = self.accepted.get(uid, -1)
        if seq != previous + 1:
            self.problem(f"driver: user {uid} accepted #{seq} after #{previous}")
        self.accepted[uid] = seq
        self.accepted_total += 1

    def chat_send(self, conn: Conn, seq: int, until: float) -> None:
        if conn.ended or conn.close_seen:
            return
        payload = chat_payload(conn.uid, seq)
        done = self._acceptor(conn.uid, seq)
        if conn.protocol != "rfc6455":
            conn.send(b"\x00" + payload + b"\xff", done)
        elif self.rng.random() < 0.15 and len(payload) > 10:
            # Fragmented, with a ping between the fragments (§5.4 allows it).
            cut = self.rng.randint(1, len(payload) - 1)
            conn.pings += 1
            self.pings_sent += 1
            conn.send(client_frame(0x1, payload[:cut], fin=False)
                      + client_frame(0x9, b"ping %d" % seq)
                      + client_frame(0x0, payload[cut:]), done)
        else:
            conn.send(client_frame(0x1, payload), done)
        interval = self.rng.uniform(0.5, 1.5) / self.cfg.rate
        if time.monotonic() + interval < until:
            self.at(interval, partial(self.chat_send, conn, seq + 1, until))

    def _acceptor(self, uid: int, seq: int) -> Callable[[], None]:
        return lambda: self.accept(uid, seq)

    def complete(self, conn: Conn) -> bool:
        return conn.received >= self.accepted_total

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> Report:
        cfg, st = self.cfg, self.report.stats
        started = time.monotonic()
        try:
            self._run(cfg, st)
        finally:
            for conn in list(self.conns):
                conn.close(rst=True)
            for actor in list(self.actors):
                self._finish(actor)
            self.sel.close()
            st["seconds"] = time.monotonic() - started
        return self.report

    def _run(self, cfg: Config, st: dict[str, Any]) -> None:
        # One request first: the server has logged its port before it enters its loop (and
        # opens its signal wake-up socketpair); answering means it is in the loop.
        with socket.create_connection((HOST, self.port), timeout=5) as probe:
            probe.sendall(b"HEAD / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            while probe.recv(65536):
                pass
        time.sleep(0.1)
        st["fd_start"], st["rss_start"] = fd_count(self.pid), rss_bytes(self.pid)
        st["users"] = cfg.users
        # 1. The healthy users join, and stay.
        for uid in range(cfg.users):
            protocol = "hixie76" if cfg.hixie_every and uid % cfg.hixie_every == 1 else "rfc6455"
            conn = Conn(self, f"user{uid}", protocol, healthy=True)
            conn.uid, conn.strict = uid, True
            request, conn.expect = upgrade_request(self.port, protocol)
            conn.send(request)
            self.healthy.append(conn)
        st["hixie_users"] = sum(c.protocol == "hixie76" for c in self.healthy)
        if not self.run_until(lambda: all(c.stage != "http" or c.ended for c in self.healthy),
                              20.0):
            self.problem("healthy users: not all got an answer to their handshake in 20 s")
        bad = [c for c in self.healthy if c.stage != "open"]
        if bad:
            self.problem(f"{len(bad)} healthy users could not join: {bad[0].name}: "
                         f"status {bad[0].status} {bad[0].error}")
            return
        want = st["fd_start"] + cfg.users
        if not self.run_until(lambda: fd_count(self.pid) == want, 5.0):
            self.problem(f"server fds with {cfg.users} users: {fd_count(self.pid)}, not {want}")
        st["fd_users"], st["rss_users"] = fd_count(self.pid), rss_bytes(self.pid)

        # 2. Chat, with chaos.
        self.sample()
        chat_start = time.monotonic()
        chat_end = chat_start + cfg.duration
        for conn in self.healthy:
            self.at(self.rng.uniform(0, 1 / cfg.rate), partial(self.chat_send, conn, 0, chat_end))
        for _ in range(cfg.flooders):
            self.spawn("flooder", self.flooder)
        for _ in range(cfg.stallers):
            self.spawn("staller", self.staller, chat_end)
        for _ in range(cfg.floods):
            self.next_uid += 1
            self.spawn("flood", self.flood, self.next_uid - 1, chat_end)
        if cfg.chaos_rate > 0:
            self.at(0.05, lambda: self._chaos(chat_end))
        next_sample = next_progress = time.monotonic()
        while time.monotonic() < chat_end:
            self.step()
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample = now + 0.5
                if not self.alive():
                    self.problem("the server died during the chat")
                    return
            if cfg.progress and now >= next_progress:
                if now > chat_start + 1:
                    print(f"soak: {now - chat_start:5.0f} s: {self.accepted_total} messages, "
                          f"{sum(self.report.chaos.values())} chaos connections, server "
                          f"{fd_count(self.pid)} fds, {rss_bytes(self.pid) >> 20} MiB RSS, "
                          f"latency p99 {ms(self.hist.percentile(99))} max "
                          f"{ms(self.hist.max)}", flush=True)
                next_progress = now + 10
        st["chat_seconds"] = time.monotonic() - chat_start

        # 3. The chaos stops: every misbehaving user finishes (each script is bounded).
        limit = cfg.handshake_timeout + cfg.close_timeout + 12.0
        if not self.run_until(lambda: not self.actors, limit):
            self.problem(f"{len(self.actors)} chaos scripts still running {limit:.0f} s after the "
                         f"chat: {sorted(Counter(a.kind for a in self.actors).items())}")
            for actor in list(self.actors):
                self._finish(actor)
        self.sample()

        # 4. Every healthy user has every accepted message.
        if not self.run_until(lambda: all(self.complete(c) or c.ended for c in self.healthy),
                              15.0):
            pass  # reported in detail just below
        st["accepted"] = self.accepted_total
        st["senders"] = len(self.accepted)
        st["deliveries"] = sum(c.received for c in self.healthy)
        for conn in self.healthy:
            if conn.ended or conn.close_seen:
                self.problem(f"{conn.name} (healthy, port {conn.port}) was disconnected: "
                             f"eof={conn.eof} reset={conn.reset} close={conn.close_code} "
                             f"{conn.error}")
            missing = [(uid, conn.last.get(uid, -1), last)
                       for uid, last in self.accepted.items() if conn.last.get(uid, -1) != last]
            if missing:
                uid, got, last = missing[0]
                self.problem(f"{conn.name}: incomplete: {len(missing)} senders short, e.g. user "
                             f"{uid}: last #{got} of #{last}")
            if conn.received != self.accepted_total:
                self.problem(f"{conn.name}: {conn.received} chat messages for "
                             f"{self.accepted_total} accepted")
            if conn.protocol == "rfc6455" and conn.pongs != conn.pings:
                self.problem(f"{conn.name}: {conn.pongs} pongs for {conn.pings} pings")
        st["pings"] = sum(c.pings for c in self.healthy)
        st["pongs"] = sum(c.pongs for c in self.healthy)
        st["p50"], st["p99"] = self.hist.percentile(50), self.hist.percentile(99)
        st["max"], st["latency_samples"] = self.hist.max, self.hist.count
        if st["p99"] > cfg.latency_p99 or st["max"] > cfg.latency_max:
            self.problem(f"latency too high: p99 {ms(st['p99'])} (limit {ms(cfg.latency_p99)}), "
                         f"max {ms(st['max'])} (limit {ms(cfg.latency_max)})")

        # 5. The misbehaving users are gone: the server's fds and memory come back.
        want = st["fd_users"]
        limit = 2.0 + cfg.close_timeout + cfg.handshake_timeout + 5.0
        if not self.run_until(lambda: fd_count(self.pid) == want, limit):
            self.problem(f"server fds after the chaos: {fd_count(self.pid)}, baseline {want} "
                         f"(waited {limit:.0f} s)")
        self.sample()
        st["fd_after_chaos"], st["rss_after_chaos"] = fd_count(self.pid), rss_bytes(self.pid)
        if st["rss_after_chaos"] > st["rss_users"] + cfg.rss_slack:
            self.problem(f"server RSS after the chaos {st['rss_after_chaos'] >> 20} MiB, "
                         f"baseline {st['rss_users'] >> 20} MiB (+{cfg.rss_slack >> 20} allowed)")
        self._check_log()

        # 6. The healthy users leave with a closing handshake.
        for conn in self.healthy:
            if not conn.ended:
                conn.send(client_frame(0x8, struct.pack("!H", 1000) + b"bye")
                          if conn.protocol == "rfc6455" else b"\xff\x00")
        self.run_until(lambda: all(c.ended for c in self.healthy), 10.0)
        for conn in self.healthy:
            if not conn.close_seen or not conn.eof:
                self.problem(f"{conn.name}: closing handshake: close seen {conn.close_seen} "
                             f"eof {conn.eof} reset {conn.reset}")
            elif conn.protocol == "rfc6455" and conn.close_code != 1000:
                self.problem(f"{conn.name}: close answered with {conn.close_code}, not 1000")
            conn.close()
        want = st["fd_start"]
        if not self.run_until(lambda: fd_count(self.pid) == want, 5.0):
            self.problem(f"server fds at the end: {fd_count(self.pid)}, baseline {want}")
        st["fd_end"], st["rss_end"] = fd_count(self.pid), rss_bytes(self.pid)
        st["fd_peak"], st["rss_peak"] = self.fd_peak, self.rss_peak
        st["tcp_mem_peak_pages"] = self.tcp_mem_peak
        st["dropped_slow"] = len(re.findall(r"is not reading", self.log(fresh=True)))
        if not self.alive():
            self.problem("the server is not running at the end")
        self._check_log()

    def _check_log(self) -> None:
        text = self.log(fresh=True)
        if "Traceback" in text and not self._traceback_seen:
            self._traceback_seen = True
            at = text.index("Traceback")
            self.problem("the server logged a traceback:\n" + text[max(0, at - 200):at + 1500])
        # No healthy user may appear in a warning (dropped, failed, timed out...).
        ports = {c.port: c.name for c in self.healthy}
        for line in text.splitlines():
            if "WARNING" in line or "ERROR" in line:
                found = re.search(r"\(127\.0\.0\.1:(\d+)\)", line)
                if found and int(found.group(1)) in ports and line not in self._lines_seen:
                    self._lines_seen.add(line)
                    self.problem(f"healthy {ports[int(found.group(1))]}: {line}")

    # -- chaos ---------------------------------------------------------------------------------
    CHAOS = {  # kind: weight
        "rst_open": 3, "rst_handshake": 2, "vanish": 2, "half_close": 2, "half_open": 2,
        "trickle": 2, "garbage_ws": 3, "garbage_http": 2, "bad_upgrade": 1, "oversized": 2,
        "idle": 1, "slow_request": 1, "page": 1,
    }

    def _chaos(self, until: float) -> None:
        if time.monotonic() >= until:
            return
        kinds = list(self.CHAOS)
        kind = self.rng.choices(kinds, [self.CHAOS[k] for k in kinds])[0]
        self.spawn(kind, getattr(self, kind))
        self.at(self.rng.expovariate(self.cfg.chaos_rate), lambda: self._chaos(until))

    def wait_open(self, conn: Conn, timeout: float = 5.0) -> Until:
        return Until(lambda: conn.stage != "http" or conn.ended, timeout)

    def expect_close(self, actor: Actor, conn: Conn, codes: set[int | None],
                     why: str) -> Script:
        """Wait for the server's close frame with one of `codes`, then for its EOF."""
        yield Until(lambda: conn.close_seen or conn.ended, 5.0)
        if not conn.close_seen:
            self.problem(f"{conn.name} ({why}): no close frame; eof={conn.eof} "
                         f"reset={conn.reset} {conn.error}")
            return
        if conn.protocol == "rfc6455" and conn.close_code not in codes:
            self.problem(f"{conn.name} ({why}): closed with {conn.close_code}, expected "
                         f"{sorted(codes, key=str)}")
        ok = yield Until(lambda: conn.ended, 2.0 + self.cfg.close_timeout + 2.0)
        if not ok:
            self.problem(f"{conn.name} ({why}): the server did not close the TCP connection")

    def rst_open(self, actor: Actor) -> Script:
        conn = self.open_ws(actor, self.rng.choice(["rfc6455", "rfc6455", "hixie76"]))
        yield self.wait_open(conn)
        yield self.rng.uniform(0, 0.5)  # receiving the chat meanwhile
        if self.rng.random() < 0.5 and conn.protocol == "rfc6455":
            conn.send(client_frame(0x1, b"half a frame that never ends")[:12])
            yield 0.01
        conn.close(rst=True)

    def rst_handshake(self, actor: Actor) -> Script:
        conn = self.connect(actor, self.rng.choice(["rfc6455", "hixie76"]))
        request, _ = upgrade_request(self.port, conn.protocol)
        conn.send(request[:self.rng.randint(1, len(request) - 1)])
        yield self.rng.uniform(0, 0.2)
        conn.close(rst=True)

    def vanish(self, actor: Actor) -> Script:
        conn = self.connect(actor)
        yield self.rng.uniform(0, 0.05)
        conn.close(rst=self.rng.random() < 0.7)

    def half_close(self, actor: Actor) -> Script:
        conn = self.open_ws(actor)
        yield self.wait_open(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        ok = yield Until(lambda: conn.ended, 5.0)
        if not ok:
            self.problem(f"{conn.name}: the server kept a half-closed connection open")
        conn.close()

    def half_open(self, actor: Actor) -> Script:
        """Half a frame, then silence (neither reading nor writing), then a RST."""
        conn = self.open_ws(actor)
        yield self.wait_open(conn)
        conn.send(client_frame(0x1, b"x" * 200)[:60])
        conn.pause_reading()
        yield self.rng.uniform(0.5, 2.0)
        conn.close(rst=True)

    def trickle(self, actor: Actor) -> Script:
        """A handshake and a message one byte at a time, then a clean closing handshake: a
        healthy late joiner, whose message every healthy user must receive."""
        protocol = self.rng.choice(["rfc6455", "rfc6455", "hixie76"])
        conn = self.connect(actor, protocol)
        request, conn.expect = upgrade_request(self.port, protocol)
        for i in range(len(request)):
            conn.send(request[i:i + 1])
            yield 0.002
        ok = yield self.wait_open(conn)
        if not ok or conn.stage != "open":
            self.problem(f"{conn.name}: trickled handshake failed: status {conn.status} "
                         f"{conn.error}")
            return
        uid = self.next_uid
        self.next_uid += 1
        conn.uid = uid
        payload = chat_payload(uid, 0)
        frame = client_frame(0x1, payload) if protocol == "rfc6455" else \
            b"\x00" + payload + b"\xff"
        for i in range(len(frame) - 1):
            conn.send(frame[i:i + 1])
            yield 0.002 if i < 64 else 0
        conn.send(frame[-1:], self._acceptor(uid, 0))
        ok = yield Until(lambda: conn.last.get(uid) == 0 or conn.ended, 5.0)
        if not ok or conn.ended:
            self.problem(f"{conn.name}: its trickled message never came back")
            return
        conn.send(client_frame(0x8, struct.pack("!H", 1000)) if protocol == "rfc6455"
                  else b"\xff\x00")
        yield from self.expect_close(actor, conn, {1000}, "closing handshake")

    GARBAGE: list[tuple[str, Callable[[], bytes], int]] = [  # (name, bytes, close code)
        ("rsv bits", lambda: client_frame(0x1, b"hello", rsv=4), 1002),
        ("reserved opcode", lambda: client_frame(0x3, b""), 1002),
        ("unmasked", lambda: client_frame(0x1, b"hello", masked=False), 1002),
        ("long ping", lambda: client_frame(0x9, b"p" * 126), 1002),
        ("fragmented ping", lambda: client_frame(0x9, b"", fin=False), 1002),
        ("lone continuation", lambda: client_frame(0x0, b"cont"), 1002),
        ("bad utf-8", lambda: client_frame(0x1, b"caf\xc3\x28"), 1007),
        ("bad utf-8 across fragments", lambda: client_frame(0x1, b"ok\xe2\x82", fin=False)
         + client_frame(0x0, b"\x41"), 1007),
        ("close code 999", lambda: client_frame(0x8, struct.pack("!H", 999)), 1002),
        ("one-byte close", lambda: client_frame(0x8, b"\x03"), 1002),
        ("random", lambda: bytes([0xF0 | random.randrange(16)]) + os.urandom(300), 1002),
    ]

    def garbage_ws(self, actor: Actor) -> Script:
        if self.rng.random() < 0.15:
            conn = self.open_ws(actor, "hixie76")
            yield self.wait_open(conn)
            conn.send(b"\x00bad \xc3\x28 utf-8\xff" if self.rng.random() < 0.5
                      else b"\x00" + b"\xc3" + b"\xff")
            yield from self.expect_close(actor, conn, set(), "draft-76 garbage")
            return
        name, make, code = self.rng.choice(self.GARBAGE)
        conn = self.open_ws(actor)
        yield self.wait_open(conn)
        conn.send(make())
        yield from self.expect_close(actor, conn, {code}, name)

    def garbage_http(self, actor: Actor) -> Script:
        conn = self.connect(actor)
        junk = os.urandom(self.rng.randint(1, 400))
        if self.rng.random() < 0.3:
            junk = b"\x16\x03\x01" + junk  # a TLS ClientHello on ws://
        conn.send(junk + b"\r\n\r\n")
        ok = yield Until(lambda: conn.stage != "http" or conn.ended, 5.0)
        if conn.stage == "http" and not conn.ended:
            self.problem(f"{conn.name}: no answer to {len(junk)} bytes of garbage")
        elif conn.stage != "http" and not 400 <= conn.status <= 599:
            self.problem(f"{conn.name}: garbage answered with {conn.status}")
        if ok:
            yield Until(lambda: conn.ended, 4.0)

    BAD_UPGRADES = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
        (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 405),
        (b"GET /no/such/file HTTP/1.1\r\nHost: h\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 20000 + b"\r\n\r\n", 431),
    ]

    def bad_upgrade(self, actor: Actor) -> Script:
        request, status = self.rng.choice(self.BAD_UPGRADES)
        conn = self.connect(actor)
        conn.send(request)
        yield Until(lambda: conn.stage != "http" or conn.ended, 5.0)
        if conn.status != status:
            self.problem(f"{conn.name}: {request[:30]!r}... answered {conn.status}, "
                         f"expected {status} {conn.error}")
        yield Until(lambda: conn.ended, 4.0)

    def oversized(self, actor: Actor) -> Script:
        limit = self.cfg.max_message_size
        how = self.rng.choice(["16-bit", "64-bit", "2^62", "fragments", "payload", "hixie"])
        if how == "hixie":
            conn = self.open_ws(actor, "hixie76")
            yield self.wait_open(conn)
            conn.send(b"\x00" + b"h" * (limit + 100))
            yield from self.expect_close(actor, conn, set(), "draft-76 oversized")
            return
        conn = self.open_ws(actor)
        yield self.wait_open(conn)
        if how == "16-bit":
            data = client_frame(0x2, b"", length=min(limit + 1, 65535))[:8]
        elif how == "64-bit":
            data = client_frame(0x2, b"", length=max(limit + 1, 65536))[:14]
        elif how == "2^62":
            data = client_frame(0x2, b"", length=1 << 62)[:14]
        elif how == "fragments":
            data = client_frame(0x2, b"f" * (limit - 10), fin=False) + client_frame(0x0, b"g" * 20)
        else:
            data = client_frame(0x2, os.urandom(limit * 4))
        conn.send(data)
        yield from self.expect_close(actor, conn, {1009}, f"oversized {how}")

    def idle(self, actor: Actor) -> Script:
        conn = self.connect(actor)
        ok = yield Until(lambda: conn.ended, self.cfg.handshake_timeout + 3.0)
        if not ok:
            self.problem(f"{conn.name}: an idle connection was not closed after the "
                         f"{self.cfg.handshake_timeout:g} s handshake timeout")
        elif conn.inbuf or conn.status:
            self.problem(f"{conn.name}: an idle connection got {bytes(conn.inbuf[:40])!r}")

    def slow_request(self, actor: Actor) -> Script:
        conn = self.connect(actor)
        request, _ = upgrade_request(self.port, "rfc6455")
        conn.send(request[:40])
        yield Until(lambda: conn.stage != "http" or conn.ended, self.cfg.handshake_timeout + 3.0)
        if conn.status != 408:
            self.problem(f"{conn.name}: an incomplete request got {conn.status}, not 408 "
                         f"{conn.error}")
        yield Until(lambda: conn.ended, 4.0)

    def page(self, actor: Actor) -> Script:
        conn = self.connect(actor, raw=True)
        conn.send(f"GET / HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())

        def response() -> tuple[int, int] | None:
            end = conn.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(conn.inbuf[:end]).decode("latin-1")
            found = re.search(r"(?im)^content-length:\s*(\d+)", head)
            length = int(found.group(1)) if found else 0
            if len(conn.inbuf) < end + 4 + length:
                return None
            del conn.inbuf[:end + 4 + length]
            return int(head.split(" ", 2)[1]), length

        got: list[tuple[int, int]] = []

        def answered() -> bool:
            if not got and (answer := response()) is not None:
                got.append(answer)
            return bool(got) or conn.ended

        ok = yield Until(answered, 5.0)
        if not ok or not got or got[0][0] != 200 or not got[0][1]:
            self.problem(f"{conn.name}: the chat page: {got} {conn.error}")
            return
        conn.send(f"GET /favicon-that-is-not-there.ico HTTP/1.1\r\nHost: {HOST}\r\n"
                  "Connection: close\r\n\r\n".encode())
        got.clear()
        yield Until(answered, 5.0)
        if not got or got[0][0] != 404:
            self.problem(f"{conn.name}: a missing file answered {got}")
        ok = yield Until(lambda: conn.ended, 4.0)
        if not ok:
            self.problem(f"{conn.name}: 'Connection: close' did not close")

    def dropped(self, conn: Conn) -> bool:
        return f"(127.0.0.1:{conn.port}) is not reading" in self.log()

    def flooder(self, actor: Actor) -> Script:
        """Stops reading and floods pings: its pongs pile up until the server drops it."""
        conn = self.open_ws(actor, rcvbuf=4096)
        ok = yield self.wait_open(conn)
        if not ok or conn.stage != "open":
            self.problem(f"{conn.name}: could not join")
            return
        conn.pause_reading()
        ping = b"".join(client_frame(0x9, b"%03d" % i + PAD[:122]) for i in range(100))
        # Enough pongs for the kernel's send buffer (it grows to tcp_wmem's maximum before
        # the server's own queue even starts) plus --max-buffer, three times over.
        budget = 3 * (kernel_send_buffer_max() + self.cfg.max_buffer)
        sent = 0
        while sent < budget and not self.dropped(conn) and not conn.ended:
            if len(conn.out) < 1 << 20:
                conn.send(ping)
                sent += len(ping)
            yield 0.002
        ok = yield Until(lambda: self.dropped(conn), 3.0)
        if not ok:
            self.problem(f"{conn.name} (port {conn.port}): {sent} bytes of pings unanswered "
                         f"and not dropped for not reading")
        yield 0.2
        conn.close(rst=self.rng.random() < 0.5)

    def flood(self, actor: Actor, uid: int, until: float) -> Script:
        """Sends bursts of chat messages as fast as it can, reading all the while. It must
        never be dropped, and every healthy user gets each of its messages once, in order:
        the server slows it down instead (fair delivery)."""
        conn = self.open_ws(actor)
        ok = yield self.wait_open(conn)
        if not ok or conn.stage != "open":
            self.problem(f"{conn.name}: could not join")
            return
        conn.uid = uid
        seq = 0
        while time.monotonic() < until - 1.0 and not conn.ended and not conn.close_seen:
            for n in range(seq, seq + self.cfg.flood_burst):
                # Accepted one by one as each last byte leaves (the server may answer the
                # first ones before the burst is all out).
                conn.send(client_frame(0x1, chat_payload(uid, n)), self._acceptor(uid, n))
            seq += self.cfg.flood_burst
            self.report.stats["flood_messages"] = self.report.stats.get("flood_messages", 0) \
                + self.cfg.flood_burst
            yield self.rng.uniform(1.5, 2.5)
        yield Until(lambda: not conn.out, 10.0)
        if conn.ended or conn.close_seen or self.dropped(conn):
            self.problem(f"{conn.name} (flood, port {conn.port}) was disconnected: "
                         f"close={conn.close_code} eof={conn.eof} reset={conn.reset}")
        yield 2.0  # its last messages reach everyone before it leaves
        conn.send(client_frame(0x8, struct.pack("!H", 1000)))
        yield Until(lambda: conn.ended, 5.0)
        conn.close()

    def staller(self, actor: Actor, until: float) -> Script:
        """Only stops reading. It must be dropped once more than the kernel's buffers plus
        --max-buffer was broadcast its way (a long soak gets there)."""
        conn = self.open_ws(actor, rcvbuf=4096)
        ok = yield self.wait_open(conn)
        if not ok or conn.stage != "open":
            self.problem(f"{conn.name}: could not join")
            return
        conn.pause_reading()
        start_total = self.accepted_total
        budget = kernel_send_buffer_max() + self.cfg.max_buffer + 65536
        yield Until(lambda: self.dropped(conn) or time.monotonic() >= until, until + 1)
        broadcast = (self.accepted_total - start_total) * 200  # a low estimate of the bytes
        if not self.dropped(conn) and broadcast > 2 * budget:
            self.problem(f"{conn.name}: ~{broadcast} bytes sent its way and not dropped")
        conn.close(rst=True)


# -- running it ---------------------------------------------------------------------------------

def run(port: int, pid: int, log: Callable[[], str], alive: Callable[[], bool],
        config: Config | None = None) -> Report:
    """Drive a server that is already running (started with `config.server_args()`)."""
    return Driver(port, pid, log, alive, config or Config()).run()


class ServerProcess:
    """`server.py` on a free port, its log collected (for the command line)."""

    def __init__(self, args: list[str], python: str = sys.executable) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([python, str(ROOT / "server.py"), HOST, "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 15
        self.port = 0
        while not self.port:
            with self._lock:
                for line in self.lines:
                    found = re.search(r"Chat page\s*:\s*http://\S+:(\d+)/", line)
                    if found:
                        self.port = int(found.group(1))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + self.log())
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(description="Chaos soak of the chat server (see the "
                                                 "module docstring).")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of chat and chaos (default 60)")
    parser.add_argument("--users", type=int, default=defaults.users,
                        help=f"healthy users (default {defaults.users})")
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help="messages per second per healthy user (default %(default)s)")
    parser.add_argument("--chaos-rate", type=float, default=defaults.chaos_rate,
                        help="misbehaving connections per second (default %(default)s)")
    parser.add_argument("--flooders", type=int, default=defaults.flooders)
    parser.add_argument("--floods", type=int, default=defaults.floods,
                        help="users that send bursts as fast as they can (default %(default)s)")
    parser.add_argument("--stallers", type=int, default=None,
                        help="users that only stop reading (default: 2 when the run is long "
                             "enough for them to be dropped, else 0)")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--python", default=sys.executable, help="the interpreter for server.py")
    args = parser.parse_args(argv)
    config = Config(users=args.users, duration=args.duration, rate=args.rate,
                    chaos_rate=args.chaos_rate, flooders=args.flooders, seed=args.seed,
                    floods=args.floods,
                    progress=True)
    if args.stallers is None:
        config.stallers = 2 if args.duration >= 120 else 0
    else:
        config.stallers = args.stallers
    if args.duration >= 60:  # a long run: RSS must settle, and a slower machine is no excuse
        config.latency_max = 10.0
    print(f"soak: seed {config.seed}; server.py {' '.join(config.server_args())}", flush=True)
    server = ServerProcess(config.server_args(), args.python)
    try:
        report = run(server.port, server.proc.pid, server.log, server.alive, config)
    finally:
        code = server.stop()
    print(report.summary())
    if code not in (0, None):
        print(f"soak: the server exited with {code}")
        return 1
    return 1 if report.problem_count else 0


if __name__ == "__main__":
    sys.exit(main())
