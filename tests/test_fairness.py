"""Nobody's traffic costs anybody else (issue 9): floods, tiny pieces, pipelines, never reading.

Each test attacks the real server on loopback the way a hostile (or merely eager) client
would: as fast as it can, in the smallest pieces, pipelined, never reading. Throughout, a
healthy user chats and measures its round trip; it must never be disconnected, and its worst
round trip must stay under HEALTHY_RTT_LIMIT on this loaded 2-core machine. The server's RSS
is read from /proc. Every worst case is printed (pytest -s shows it).
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from attack import (
    ZERO_MASK,
    FloodCounter,
    Healthy,
    Reader,
    Start,
    cpu_seconds,
    flood_frames,
    rss,
)
from wsclient import Client, frame, wait_until

# -- 1. one fast sender must not get readers kicked ----------------------------------------

def test_a_flood_reaches_every_reader_and_nobody_is_dropped(start_server: Start) -> None:
    """500,000 20-byte messages as fast as possible, 5 users only reading: all get all."""
    count = 500_000
    server = start_server()
    sender = Client(server.port, timeout=60).handshake()
    readers = [Reader(Client(server.port).handshake()) for _ in range(5)]
    sender_reader = Reader(sender)  # the sender reads too (it gets its own messages)
    healthy = Healthy(server.port)
    for reader in [*readers, sender_reader]:
        reader.start()
    data = flood_frames(count)
    base = rss(server.proc.pid)
    peak = base
    started = time.monotonic()
    view = memoryview(data)
    try:
        for offset in range(0, len(data), 1 << 18):
            sender.send(view[offset:offset + (1 << 18)])
            peak = max(peak, rss(server.proc.pid))
    except OSError as exc:  # the server stopped reading us: it dropped the sender
        pytest.fail(f"the flood's sender could not send: {exc!r}; log:\n{server.log[-1500:]}")
    everyone = [*readers, sender_reader, healthy.reader]

    def all_in() -> bool:
        nonlocal peak
        peak = max(peak, rss(server.proc.pid))
        return all(r.flood == count or r.close_code or r.eof for r in everyone)

    assert wait_until(all_in, timeout=120, interval=0.1)
    took = time.monotonic() - started
    print(f"flood: {count} messages to {len(everyone)} users in {took:.1f} s, "
          f"RSS {base >> 20} -> peak {peak >> 20} MiB")
    for reader in everyone:
        assert reader.close_code is None and not reader.eof, \
            f"a reader was dropped: close {reader.close_code}"
        assert reader.flood == count and reader.out_of_order == 0
    healthy.check("flood")
    assert "not reading" not in server.log
    assert server.proc.poll() is None


def test_a_slow_reader_that_keeps_reading_slows_the_flood_and_is_not_dropped(
        start_server: Start) -> None:
    """A reader taking ~2 MB/s in small sips: the sender waits for it instead."""
    count = 200_000
    server = start_server()
    sender = Client(server.port, timeout=60).handshake()
    sender_reader = Reader(sender)
    slow_client = Client(server.port).handshake()
    slow_client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    healthy = Healthy(server.port)
    sender_reader.start()
    data = flood_frames(count)
    pump = threading.Thread(target=sender.send, args=(data,), daemon=True)
    pump.start()
    slow_client.sock.settimeout(10)
    deadline = time.monotonic() + 60
    counter = FloodCounter()
    counter.feed(slow_client.buf)
    started = time.monotonic()
    while counter.count < count and time.monotonic() < deadline:
        data_in = slow_client.sock.recv(32 * 1024)
        if not data_in:
            break
        counter.feed(data_in)
        time.sleep(0.015)  # ~2 MB/s
    got = counter.count
    took = time.monotonic() - started
    print(f"slow reader: {got} of {count} flood messages in {took:.1f} s")
    assert got == count, f"the slow reader got {got} of {count} messages in order"
    assert wait_until(lambda: sender_reader.flood == count, timeout=30)
    healthy.check("slow reader")
    assert "not reading" not in server.log


def test_a_user_that_stops_reading_during_a_flood_is_dropped_alone(start_server: Start) -> None:
    """Never reading: left behind within a second, dropped (1008) at --max-buffer."""
    count = 300_000
    server = start_server("--max-buffer", "1M")
    sender = Client(server.port, timeout=60).handshake()
    sender_reader = Reader(sender)
    reader = Reader(Client(server.port).handshake())
    staller = Client(server.port).handshake()
    # Small enough that the kernel cannot take the whole flood for it, large enough that it
    # reads what the kernel holds quickly once it starts (a tiny window crawls, with delayed
    # ACKs, and the close frame behind it would miss --close-timeout).
    staller.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    healthy = Healthy(server.port)
    sender_reader.start()
    reader.start()
    pump = threading.Thread(target=sender.send, args=(flood_frames(count),), daemon=True)
    pump.start()
    server.wait_for_log(r"is not reading: \d+ bytes unsent \(limit 1048576\); disconnecting",
                        timeout=30)
    late = Reader(staller)  # read now: the close frame waits behind what the kernel holds
    late.start()
    assert wait_until(lambda: late.close_code is not None or late.eof, timeout=20)
    assert late.close_code == 1008 and late.out_of_order == 0
    assert wait_until(lambda: reader.flood == count and sender_reader.flood == count,
                      timeout=60), (reader.flood, sender_reader.flood)
    healthy.check("staller")


# -- 2. a message in tiny fragments must cost about its size ----------------------------

def test_tiny_fragments_cost_about_their_payload(start_server: Start) -> None:
    """10 users each send 524,287 two-byte fragments of an unfinished 1 MiB message."""
    users, fragments = 10, 524_287
    # The messages stay open on purpose; their time limit is tested apart (below), and a
    # loaded machine must not turn this memory test into a test of --message-timeout.
    server = start_server("--max-message-size", "1M", "--callback", "echo",
                          "--message-timeout", "600")
    healthy = Healthy(server.port)
    base = rss(server.proc.pid)
    attack = (frame(1, b"ab", fin=False, mask=ZERO_MASK)
              + frame(0, b"ab", fin=False, mask=ZERO_MASK) * (fragments - 1))
    clients = [Client(server.port, timeout=60).handshake() for _ in range(users)]
    threads = [threading.Thread(target=c.send, args=(attack,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    peak = base
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
            peak = max(peak, rss(server.proc.pid))
    # Everything is sent; wait until the server has parsed it (its CPU goes quiet).
    time.sleep(0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = cpu_seconds(server.proc.pid)
        time.sleep(0.3)
        peak = max(peak, rss(server.proc.pid))
        if cpu_seconds(server.proc.pid) - before <= 0.02:  # two clock ticks
            break
    payload = users * fragments * 2
    growth = peak - base
    print(f"tiny fragments: {users} x {fragments} fragments ({payload >> 20} MiB of payload): "
          f"RSS {base >> 20} -> peak {peak >> 20} MiB (growth {growth / payload:.1f}x payload)")
    assert growth < 4 * payload
    # The messages are still open: one more fragment with FIN finishes each, whole.
    clients[0].send(frame(0, b"!", mask=ZERO_MASK))
    message = clients[0].recv_message()
    assert len(message) == fragments * 2 + 1 and message.endswith("ab!")
    healthy.check("tiny fragments")
    for client in clients:
        client.close()


# -- 3. unfinished messages: bounded in time and in total ---------------------------------

def test_unfinished_messages_are_bounded_in_total_with_1013(start_server: Start) -> None:
    """300 users each 1 MiB into a message, --max-input-memory 64M: the rest get 1013."""
    users, size, limit = 300, 1 << 20, 64 << 20
    server = start_server("--max-input-memory", str(limit), "--callback", "echo")
    healthy = Healthy(server.port)
    base = rss(server.proc.pid)
    head = struct.pack("!BBQ", 0x82, 0x80 | 127, size) + ZERO_MASK  # one binary frame
    body = b"\x55" * (size - 1)  # all but the last byte
    clients: list[Client] = []
    refused = 0
    for _ in range(users):
        client = Client(server.port, timeout=30).handshake()
        clients.append(client)
        try:
            client.send(head + body)
        except OSError:
            pass
    peak = rss(server.proc.pid)
    for client in clients:
        client.sock.settimeout(0.5)
        try:
            code = client.recv_close()[0]
        except (TimeoutError, OSError, EOFError):
            continue
        assert code == 1013
        refused += 1
        peak = max(peak, rss(server.proc.pid))
    held = users - refused
    print(f"unfinished: {held} held, {refused} refused with 1013; RSS {base >> 20} -> "
          f"{peak >> 20} MiB")
    assert held <= limit // size and refused >= users - limit // size
    assert peak - base < limit + (32 << 20)
    server.wait_for_log(r"closing with 1013 \(try again later\)")
    healthy.check("unfinished messages")
    # A held one still finishes: its last byte completes the 1 MiB message, echoed whole.
    for client in clients:
        client.sock.settimeout(10)
    survivor = next(c for c in clients if c.at_eof(0.05) is False)
    survivor.send(b"\x55")  # the frame's last payload byte
    assert survivor.recv_message() == b"\x55" * size
    for client in clients:
        client.close()


def test_a_message_must_be_finished_within_the_message_timeout(start_server: Start) -> None:
    server = start_server("--message-timeout", "1")
    with Client(server.port).handshake() as slow, Client(server.port).handshake() as other:
        slow.send_frame(1, b"begun", fin=False)
        started = time.monotonic()
        other.send_text("still here")
        assert other.recv_message() == "still here"
        assert slow.recv_close() == (1008, "message not finished within 1 s")
        assert 0.9 < time.monotonic() - started < 5
        other.send_text("and here")
        assert other.recv_message() == "and here"
    server.wait_for_log(r"closing with 1008 \(policy violation\): message not finished")


def test_the_message_timeout_times_each_message_not_the_connection(start_server: Start) -> None:
    """Messages back to back for longer than --message-timeout, each one quick: all fine."""
    server = start_server("--message-timeout", "1", "--callback", "echo")
    with Client(server.port).handshake() as user:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 2.5:
            user.send_frame(1, b"part ", fin=False)
            time.sleep(0.2)
            user.send_frame(0, b"%d" % n)
            assert user.recv_message() == f"part {n}"
            n += 1
        assert n >= 10


# -- 4. pipelined HTTP answers and ping floods that are never read -------------------------

def test_pipelined_page_requests_never_read_stay_bounded(start_server: Start) -> None:
    """20,000 GET /chat.js in one go, not reading: one answer at a time, RSS flat."""
    server = start_server("--callback", "echo")
    healthy = Healthy(server.port)
    base = rss(server.proc.pid)
    request = b"GET /chat.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with Client(server.port) as probe:  # one answer, as the server writes it
        probe.send(request)
        head = probe.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        expected = len(head) + int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    attacker = socket.create_connection(("127.0.0.1", server.port))
    attacker.setblocking(False)
    data = request * 20_000
    sent = 0
    peak = base
    refused_since = time.monotonic()
    while sent < len(data) and time.monotonic() - refused_since < 1.0:
        try:
            sent += attacker.send(data[sent:sent + 65536])
            refused_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
        peak = max(peak, rss(server.proc.pid))
    for _ in range(10):
        time.sleep(0.1)
        peak = max(peak, rss(server.proc.pid))
    print(f"HTTP pipeline: {sent // len(request)} requests sent (the rest waits in our kernel); "
          f"RSS {base >> 20} -> peak {peak >> 20} MiB")
    assert peak - base < 8 << 20
    # Nothing is lost either: once we read, every answer arrives, whole and in order.
    attacker.setblocking(True)
    attacker.settimeout(10)
    received = 0
    while received < expected * 20_000:
        if sent < len(data):
            attacker.setblocking(False)
            try:
                sent += attacker.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
            attacker.settimeout(10)
        chunk = attacker.recv(1 << 20)
        assert chunk, f"connection closed after {received / expected:.1f} answers"
        received += len(chunk)
    assert received == expected * 20_000
    healthy.check("HTTP pipeline")
    attacker.close()


def test_a_ping_flood_that_never_reads_its_pongs_stays_bounded(start_server: Start) -> None:
    """Four users flood pings and never read: their input waits, memory stays flat."""
    server = start_server()
    healthy = Healthy(server.port)
    base = rss(server.proc.pid)
    ping = frame(9, b"", mask=ZERO_MASK)  # 6 bytes each
    flooders = [Client(server.port, timeout=3).handshake() for _ in range(4)]
    for flooder in flooders:
        flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    burst = ping * 100_000
    stop = time.monotonic() + 6
    sent = [0] * len(flooders)

    def flood(i: int) -> None:
        while time.monotonic() < stop:
            try:
                flooders[i].sock.send(burst)
                sent[i] += 1
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return

    threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    peak = base
    while time.monotonic() < stop:
        time.sleep(0.1)
        peak = max(peak, rss(server.proc.pid))
    for thread in threads:
        thread.join(5)
    print(f"ping flood: 4 users sent up to {max(sent) * len(burst) >> 20} MiB of pings each; "
          f"RSS {base >> 20} -> peak {peak >> 20} MiB")
    assert peak - base < 16 << 20
    healthy.check("ping flood")
    for flooder in flooders:
        flooder.close()
