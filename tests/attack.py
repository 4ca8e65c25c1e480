"""The attacker's harness, shared by every test that pushes a limit the way an attacker would
(tests/test_fairness.py, and the attack tests after it).

- `Healthy`: a user chatting throughout (one message every `interval`), each round trip timed;
  `check()` fails the test if it was ever disconnected, if its worst round trip passed
  HEALTHY_RTT_LIMIT, or (with `min_on_time`) if too few of its answers came within one interval.
- `Reader`: reads one user's socket as fast as it can and counts the flood's messages in order.
- `rss(pid)`: the server's resident memory, for memory bounds stated in bytes; `RssPeak(pid)`
  samples it throughout an attack; `cpu_seconds(pid)` its CPU time.
- `flood_frames`, `FloodCounter`: a flood of small masked frames, and its checker.
"""
from __future__ import annotations

import os
import select
import struct
import threading
import time
from collections.abc import Callable

from conftest import ServerProcess
from wsclient import Client, frame, wait_until

Start = Callable[..., ServerProcess]
HEALTHY_RTT_LIMIT = 1.0  # seconds: generous, the machine runs the attack, the server and us
ZERO_MASK = b"\x00\x00\x00\x00"  # a legal masking key that leaves the payload as it is


def rss(pid: int) -> int:
    """The server's resident memory in bytes (/proc/PID/status VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user + system (/proc/PID/stat utime and stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssPeak(threading.Thread):
    """Samples a process's RSS every 10 ms from its creation until stopped: `stop()` gives
    the peak, `growth()` the peak's growth over the RSS at the start."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.base = rss(pid)
        self.peak = self.base
        self.stopping = False
        self.start()

    def run(self) -> None:
        while not self.stopping:
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.01)

    def stop(self) -> int:
        """Stop sampling; the peak RSS."""
        self.stopping = True
        self.join(2)
        return self.peak

    def growth(self, stop: bool = True) -> int:
        """The peak's growth over the start, sampled once more now (and stopped, if asked)."""
        if stop:
            self.stop()
        self.peak = max(self.peak, rss(self.pid))
        return self.peak - self.base


class Reader(threading.Thread):
    """Reads one user's socket as fast as it can and takes the server's frames apart.

    Text messages starting with `flood_prefix` must carry consecutive sequence numbers
    (checked, counted); other text messages go to `on_text`. A close frame ends it.
    """

    def __init__(self, client: Client, flood_prefix: bytes = b"F",
                 on_text: Callable[[bytes], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.sock = client.sock
        self.buf = bytearray(client.buf)
        client.buf.clear()
        self.prefix = flood_prefix
        self.on_text = on_text
        self.flood = 0  # flood messages received, in order
        self.out_of_order = 0
        self.close_code: int | None = None
        self.eof = False
        self.stopping = False
        # poll(), not select(): a test with thousands of sockets has descriptors past
        # select()'s FD_SETSIZE (1024).
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)

    def run(self) -> None:
        buf = self.buf
        prefix = self.prefix
        plen = len(prefix)
        while not self.stopping and self.close_code is None and not self.eof:
            pos = 0
            end = len(buf)
            while end - pos >= 2:
                b1, n = buf[pos], buf[pos + 1] & 0x7F
                head = 2
                if n == 126:
                    if end - pos < 4:
                        break
                    n = struct.unpack_from("!H", buf, pos + 2)[0]
                    head = 4
                elif n == 127:
                    if end - pos < 10:
                        break
                    n = struct.unpack_from("!Q", buf, pos + 2)[0]
                    head = 10
                if end - pos < head + n:
                    break
                start = pos + head
                pos = start + n
                opcode = b1 & 0x0F
                if opcode == 1:
                    if buf[start:start + plen] == prefix:
                        if int(buf[start + plen:start + plen + 8]) == self.flood:
                            self.flood += 1
                        else:
                            self.out_of_order += 1
                    elif self.on_text is not None:
                        self.on_text(bytes(buf[start:pos]))
                elif opcode == 8:
                    self.close_code = struct.unpack_from("!H", buf, start)[0] if n >= 2 else 1005
                    break
            del buf[:pos]
            if self.close_code is not None:
                break
            try:
                # poll, not a socket timeout: the socket may be sending in another thread.
                if not self.poller.poll(200):
                    continue
                data = self.sock.recv(1 << 20)
            except OSError:
                self.eof = True
                break
            if not data:
                self.eof = True
                break
            buf += data


class Healthy:
    """A user chatting throughout: one message every `interval`, each round trip timed.

    With the default callback its own message comes back (echo to all); with
    `--callback echo` it is answered to it alone. It fails the test if it is ever closed.
    """

    def __init__(self, port: int, interval: float = 0.05) -> None:
        self.client = Client(port).handshake()
        self.sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self.lock = threading.Lock()
        self.reader = Reader(self.client, on_text=self._on_text)
        self.interval = interval
        self.stopping = False
        self.thread = threading.Thread(target=self._chat, daemon=True)
        self.reader.start()
        self.thread.start()

    def _on_text(self, payload: bytes) -> None:
        if payload.startswith(b"healthy "):
            n = int(payload.split()[1])
            with self.lock:
                sent = self.sent.pop(n, None)
            if sent is not None:
                self.rtts.append(time.monotonic() - sent)

    def _chat(self) -> None:
        n = 0
        while not self.stopping and self.reader.close_code is None and not self.reader.eof:
            with self.lock:
                self.sent[n] = time.monotonic()
            try:
                self.client.send(frame(1, b"healthy %d" % n, mask=ZERO_MASK))
            except OSError:
                return
            n += 1
            time.sleep(self.interval)

    def worst(self) -> float:
        """The worst round trip so far, counting messages still unanswered."""
        now = time.monotonic()
        with self.lock:
            waiting = [now - t for t in self.sent.values()]
        return max(self.rtts + waiting, default=0.0)

    def on_time(self) -> float:
        """The share of answered messages whose round trip was within one interval."""
        if not self.rtts:
            return 0.0
        return sum(rtt <= self.interval for rtt in self.rtts) / len(self.rtts)

    def check(self, label: str, min_on_time: float | None = None) -> None:
        """Stop chatting and hold the healthy user's promises: never disconnected, every
        message answered, the worst round trip under HEALTHY_RTT_LIMIT and, with
        `min_on_time`, at least that share of answers within one interval."""
        self.stopping = True
        self.thread.join(5)
        assert self.reader.close_code is None and not self.reader.eof, \
            f"{label}: the healthy user was disconnected ({self.reader.close_code})"
        assert wait_until(lambda: not self.sent, timeout=HEALTHY_RTT_LIMIT * 2), \
            f"{label}: the healthy user's messages were not all answered"
        worst = self.worst()
        on_time = self.on_time()
        print(f"{label}: healthy user {len(self.rtts)} round trips, worst {worst * 1000:.0f} ms, "
              f"{on_time:.0%} within {self.interval * 1000:.0f} ms")
        assert len(self.rtts) >= 10
        assert worst < HEALTHY_RTT_LIMIT, f"{label}: worst round trip {worst:.3f} s"
        if min_on_time is not None:
            assert on_time >= min_on_time, \
                f"{label}: only {on_time:.0%} of the answers within {self.interval:g} s"
        self.reader.stopping = True
        self.client.close()


def flood_frames(count: int, size: int = 20) -> bytes:
    """`count` masked text frames of `size` bytes: "F" + 8-digit sequence + padding."""
    pad = b"x" * (size - 9)
    head = bytes((0x81, 0x80 | size)) + ZERO_MASK
    return b"".join(head + b"F%08d" % i + pad for i in range(count))


class FloodCounter:
    """Counts the flood messages in a stream fed piece by piece, checking their order."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.count = 0

    def feed(self, data: bytes | bytearray) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            size = buf[pos + 1]
            assert size < 126
            if len(buf) - pos < 2 + size:
                break
            if buf[pos + 2] == 0x46:  # "F"
                assert int(buf[pos + 3:pos + 11]) == self.count
                self.count += 1
            pos += 2 + size
        del buf[:pos]
