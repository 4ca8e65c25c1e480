#!/usr/bin/env python3
"""Which permessage-deflate design wins for a chat's broadcast? A measured study.

    python3 bench/deflate_study.py [--quick] [--repeat N] [--json FILE] [--windows-only]

Standard library only (run it with the system python3); it uses websocket/protocol/deflate.py from
this repository. Everything is deterministic but the clock: traffic comes from a seeded
generator (many senders, short chat lines of 20-120 bytes, ~200-byte JSON objects).

For each design it prints CPU per delivered message (rooms of 100 and 1,000 users), bytes
on the wire against uncompressed (payload and frame header), and memory per idle user
measured as process RSS over many objects in a fresh child process (sys.getsizeof knows
nothing of zlib's buffers). CPU figures are medians of --repeat runs: the machine is shared.

Designs:
  a1  compress once per broadcast, fresh compressor per message (window 15, memLevel 8)
  a2  compress once per broadcast, one compressor with a full flush after each message
  b   one compressor per user with context takeover (small windows and memLevels; w12/m5
      is websockets' default server compressor), compressing once per recipient
  c   one compressor per room with context takeover; every member gets the same bytes;
      a full flush whenever a member joins
  d   mix: (c) for the members that allow context takeover, (a2) for the others

And the window of (a2) in (d): stand-alone bytes at each window 9..15 (--windows-only).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from websocket.protocol.deflate import (  # noqa: E402
    EMPTY_BLOCK_TAIL,
    Agreed,
    DeflatePolicy,
    Deflater,
    Inflater,
    RoomStream,
)

# --- Traffic --------------------------------------------------------------------------

WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn "
    "lol ok yes no thanks hi hello hey brb afk gg nice cool sure maybe tomorrow tonight "
    "meeting deploy server bug fix review merge build test release coffee lunch weekend"
).split()
EMOJI = ["", "", "", "", " :)", " :D", " \U0001F600", " \U0001F44D", " !!", " ?"]


class Traffic:
    """A seeded chat: `senders` users, Zipf-weighted words, chat lines and JSON events."""

    def __init__(self, seed: int = 2010, senders: int = 200) -> None:
        self.rng = random.Random(seed)
        self.handles = [self._handle(i) for i in range(senders)]
        # Zipf exponent 0.9: 30 KB of this text deflates to ~37 %, against ~32 % for the
        # prose of the GPL-3 text (real English, if legal). Chat varies more than that.
        self.weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(WORDS))]
        self.seq = 0
        self.ts = 1_764_000_000_000

    def _handle(self, i: int) -> str:
        stems = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan",
                 "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent",
                 "victor", "walter", "zoe"]
        return f"{stems[i % len(stems)]}{i // len(stems) or ''}"

    def _text(self, low: int, high: int) -> str:
        target = self.rng.randint(low, high)
        words: list[str] = []
        size = 0
        while size < target:
            if self.rng.random() < 0.03:  # numbers, links, typos: tokens seen once
                word = self.rng.choice([str(self.rng.randrange(10_000)),
                                        f"https://ex.am/{self.rng.randrange(1 << 30):x}",
                                        "".join(self.rng.choices("etaoinshrdlu", k=5))])
            else:
                word = self.rng.choices(WORDS, self.weights)[0]
            words.append(word)
            size += len(word) + 1
        text = " ".join(words)[:max(1, target)].strip()
        return text[0].upper() + text[1:] + self.rng.choice(EMOJI)

    def chat_line(self) -> bytes:
        """`handle: text`, as the chat page sends: 20-120 bytes."""
        handle = self.rng.choice(self.handles)
        line = f"{handle}: {self._text(max(1, 18 - len(handle)), 110 - len(handle))}".encode()
        while len(line) < 20:
            line += b"!"
        return line[:120]

    def json_event(self) -> bytes:
        """A ~200-byte JSON chat event of the kind apps broadcast."""
        self.seq += 1
        self.ts += self.rng.randint(5, 4000)
        sender = self.rng.randrange(len(self.handles))
        event: dict[str, object] = {
            "type": "message", "id": f"m{self.seq:08d}", "room": "lobby",
            "from": {"id": 1000 + sender, "name": self.handles[sender]},
            "text": self._text(30, 100), "ts": self.ts,
        }
        if self.rng.random() < 0.3:
            event["reply_to"] = f"m{max(1, self.seq - self.rng.randint(1, 50)):08d}"
        if self.rng.random() < 0.2:
            event["mentions"] = [self.rng.choice(self.handles)]
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()

    def messages(self, kind: str, count: int) -> list[bytes]:
        make = self.chat_line if kind == "chat" else self.json_event
        return [make() for _ in range(count)]


def frame_size(payload_len: int) -> int:
    """An unmasked server frame: RFC 6455 §5.2 header plus payload."""
    return payload_len + (2 if payload_len < 126 else 4 if payload_len < 65536 else 10)


# --- Designs: what one message costs, how many bytes it becomes -----------------------

def timed(run: Callable[[], object], repeat: int) -> float:
    """Median CPU time of `run()` in seconds over `repeat` runs (after one warm-up).

    Process CPU time, not wall time: on a shared machine other processes' load then
    costs less accuracy (caches and clock speed still vary, hence the median)."""
    run()
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def wire_bytes(payloads: Sequence[bytes]) -> int:
    return sum(frame_size(len(p)) for p in payloads)


def study_design(name: str, messages: list[bytes], users: int, repeat: int,
                 min_size: int, join_every: int) -> dict[str, float | str | int]:
    """CPU per delivered message and wire bytes for one design, room of `users`."""
    count = len(messages)
    raw_wire = wire_bytes(messages)

    def small(m: bytes) -> bool:
        return len(m) < min_size

    if name == "none":
        return {"design": name, "users": users, "us_per_delivery": 0.0,
                "wire_ratio": 1.0, "payload_ratio": 1.0}

    if "@" in name:  # c@N: the room stream with a member joining every N messages
        name, every = name.split("@")
        row = study_design(name, messages, users, repeat, min_size, int(every))
        row["design"] = f"{name}@{every}"
        return row

    if name in ("a1", "a2", "c", "c12"):
        def run() -> list[bytes]:
            out = []
            if name == "a2":
                deflater = Deflater(15, 8, context_takeover=False)
            elif name == "c12":
                deflater = Deflater(12, 5, context_takeover=True)
            else:
                deflater = Deflater(15, 8, context_takeover=True)
            for i, message in enumerate(messages):
                if small(message):
                    out.append(message)
                    continue
                if name == "a1":
                    deflater.release()  # a fresh compressor for each message
                elif join_every and i % join_every == 0:
                    deflater.restart()  # a member joined the room
                out.append(deflater.compress(message))
            return out
        payloads = run()
        seconds = timed(run, repeat)
        per_delivery = seconds / count / users
        return {"design": name, "users": users, "us_per_delivery": per_delivery * 1e6,
                "us_per_message": seconds / count * 1e6,
                "wire_ratio": wire_bytes(payloads) / raw_wire,
                "payload_ratio": sum(map(len, payloads)) / sum(map(len, messages))}

    if name.startswith("b"):  # b:<wbits>:<memLevel>, one compressor per recipient
        _, bits, level = name.split(":")
        wbits, mem_level = int(bits), int(level)
        # Every user's compressor sees the same messages, so one compressor gives every
        # user's bytes; CPU is timed on `users` distinct compressors (their memory and
        # cache misses are the point), on a sample of the messages.
        single = Deflater(wbits, mem_level, context_takeover=True)
        payloads = [m if small(m) else single.compress(m) for m in messages]
        sample = messages[:max(50, min(count, 100_000 // users))]
        deflaters = [Deflater(wbits, mem_level, context_takeover=True) for _ in range(users)]

        def run_b() -> None:
            for message in sample:
                if not small(message):
                    for deflater in deflaters:
                        deflater.compress(message)
        seconds = timed(run_b, max(3, repeat // 2))
        return {"design": name, "users": users,
                "us_per_delivery": seconds / len(sample) / users * 1e6,
                "us_per_message": seconds / len(sample) * 1e6,
                "wire_ratio": wire_bytes(payloads) / raw_wire,
                "payload_ratio": sum(map(len, payloads)) / sum(map(len, messages))}
    raise ValueError(name)


def study_mix(results: dict[str, dict[str, float | str | int]], share_no_context: float,
              users: int) -> dict[str, float | str | int]:
    """(d): the room stream (c) for members allowing context takeover, compress-once (a2)
    for the others: both compressions run once per message, bytes weighted by members."""
    c, a = results["c"], results["a2"]
    per_message = float(c["us_per_message"]) + float(a["us_per_message"])
    wire = (1 - share_no_context) * float(c["wire_ratio"]) + share_no_context * float(
        a["wire_ratio"])
    payload = (1 - share_no_context) * float(c["payload_ratio"]) + share_no_context * float(
        a["payload_ratio"])
    return {"design": f"d ({share_no_context:.0%} need a2)", "users": users,
            "us_per_delivery": per_message / users, "us_per_message": per_message,
            "wire_ratio": wire, "payload_ratio": payload}


def study_room(messages: list[bytes], users: int, join_every: int, keyframe: int,
               share_alone: float, repeat: int) -> dict[str, float | int]:
    """(d) as `RoomStream` does it: one member leaves and one joins every `join_every`
    messages; newcomers get stand-alone bytes until the next keyframe; `share_alone` of
    the members never follow (they agreed server_no_context_takeover). CPU is what the
    room adds to a fan-out loop that hands every member its payload."""
    follow = Agreed(False, True, 15, 15, "")
    alone = Agreed(True, True, 15, 15, "")
    every_alone = round(1 / share_alone) if share_alone else 0

    def kind(member: int) -> Agreed:
        return alone if every_alone and member % every_alone == 0 else follow

    def run() -> int:
        room = RoomStream(DeflatePolicy(min_size=0), keyframe)
        members = list(range(users))
        for member in members:
            room.join(member, kind(member))
        newcomer = users
        wire = 0
        for i, message in enumerate(messages):
            if join_every and i and i % join_every == 0:
                room.leave(members.pop(0))
                room.join(newcomer, kind(newcomer))
                members.append(newcomer)
                newcomer += 1
            compressed = room.compress(message)
            assert compressed is not None
            for payload, group in compressed.groups():
                wire += frame_size(len(payload)) * len(group)  # one frame per group
        return wire

    wire = run()
    seconds = timed(run, repeat)
    raw = sum(frame_size(len(m)) for m in messages) * users
    return {"users": users, "join_every": join_every, "keyframe": keyframe,
            "us_per_delivery": seconds / len(messages) / users * 1e6,
            "us_per_message": seconds / len(messages) * 1e6,
            "wire_ratio": wire / raw}


def check_correct(messages: list[bytes]) -> None:
    """Every design's bytes inflate, with zlib's own inflater, to the messages."""
    room, once = Deflater(15, 8), Deflater(15, 8, context_takeover=False)
    member = zlib.decompressobj(-15)
    for i, message in enumerate(messages):
        if i % 50 == 0:
            room.restart()
            member = zlib.decompressobj(-15)  # a newcomer
        assert member.decompress(room.compress(message) + EMPTY_BLOCK_TAIL) == message
        fresh = zlib.decompressobj(-15)
        assert fresh.decompress(once.compress(message) + EMPTY_BLOCK_TAIL) == message


# --- Threshold: below which size compression stops paying -----------------------------

def threshold_sweep(traffic: Traffic, repeat: int) -> list[dict[str, float | int]]:
    """Median bytes saved per message (frame included) and CPU, by message size, for a
    message compressed alone (a2) and in a room stream that has seen chat before (c)."""
    rows = []
    warm = traffic.messages("chat", 300) + traffic.messages("json", 300)
    for size in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048):
        samples: list[bytes] = []
        while len(samples) < 200:
            kind = "json" if len(samples) % 2 else "chat"
            text = b""
            while len(text) < size:
                text += traffic.messages(kind, 1)[0] + b" "
            samples.append(text[:size])
        alone = Deflater(15, 8, context_takeover=False)
        room = Deflater(15, 8)
        for message in warm:
            room.compress(message)
        saved_alone = [frame_size(len(m)) - frame_size(len(alone.compress(m))) for m in samples]
        saved_room = []
        for m in samples:
            saved_room.append(frame_size(len(m)) - frame_size(len(room.compress(m))))
        def run(alone: Deflater = alone, samples: list[bytes] = samples) -> None:
            for m in samples:
                alone.compress(m)
        seconds = timed(run, repeat)
        rows.append({"size": size, "saved_alone": statistics.median(saved_alone),
                     "saved_room": statistics.median(saved_room),
                     "us_alone": seconds / len(samples) * 1e6})
    return rows


# --- Memory per idle user: RSS of many objects in a fresh process ---------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm_traffic() -> list[bytes]:
    traffic = Traffic(seed=7)
    return traffic.messages("chat", 400) + traffic.messages("json", 400)  # ~100 KiB


def memory_child(kind: str, count: int) -> float:
    """Bytes of RSS per object of `kind`, `count` of them, after the traffic a long-lived
    user sees (enough to fill a 32 KiB window in each direction)."""
    warm = _warm_traffic()
    kept: list[object] = []
    gc.collect()
    before = rss_bytes()
    for _ in range(count):
        if kind == "idle-nct":  # our user with compression, idle: an inflater without zlib
            inflater = Inflater(15, no_context_takeover=True)
            inflater.feed(Deflater().compress(warm[0]), final=True)
            kept.append(inflater)
        elif kind.startswith("deflater:"):
            _, bits, level = kind.split(":")
            deflater = Deflater(int(bits), int(level))
            for message in warm:
                deflater.compress(message)
            kept.append(deflater)
        elif kind.startswith("inflater:"):
            bits = int(kind.split(":")[1])
            source = zlib.compressobj(6, zlib.DEFLATED, -bits)
            inflater = Inflater(bits, no_context_takeover=False)
            for message in warm:
                inflater.feed((source.compress(message) + source.flush(zlib.Z_SYNC_FLUSH))[:-4],
                              final=True)
            kept.append(inflater)
        elif kind.startswith("websockets-like:"):
            # What websockets' server keeps per connection by default: a compressor
            # (window 12, memLevel 5) and a decompressor, both with context takeover.
            bits = int(kind.split(":")[1])  # the client's window: 12 if it offered the param
            compressor = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
            decompressor = zlib.decompressobj(-bits)
            source = zlib.compressobj(6, zlib.DEFLATED, -bits)
            for message in warm:
                compressor.compress(message)
                compressor.flush(zlib.Z_SYNC_FLUSH)
                decompressor.decompress(source.compress(message)
                                        + source.flush(zlib.Z_SYNC_FLUSH))
            kept.append((compressor, decompressor))
        elif kind == "websockets-real":
            kept.append(_websockets_connection(warm))
        else:
            raise ValueError(kind)
    gc.collect()
    return (rss_bytes() - before) / count


def _websockets_connection(warm: list[bytes]) -> object:
    """websockets' own server extension for Chromium's offer, after warm-up traffic."""
    from websockets.extensions.permessage_deflate import (  # type: ignore[import-not-found]
        ClientPerMessageDeflateFactory,
        enable_server_permessage_deflate,
    )
    from websockets.frames import Frame, Opcode  # type: ignore[import-not-found]
    (factory,) = enable_server_permessage_deflate(None)
    client_factory = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    params, server = factory.process_request_params(client_factory.get_request_params(), [])
    client = client_factory.process_response_params(params, [])
    for message in warm:
        sent = server.encode(Frame(Opcode.TEXT, message))
        client.decode(sent)
        server.decode(client.encode(Frame(Opcode.TEXT, message)))
    return server


def measure_memory(kind: str, count: int, python: str) -> float | None:
    """Run `memory_child` in a fresh interpreter (so no freed memory is reused)."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import deflate_study as s; print(s.memory_child({kind!r}, {count}))")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    if result.returncode != 0:
        return None
    return float(result.stdout.strip())


def inflate_costs(messages: list[bytes], repeat: int) -> dict[str, float]:
    """Incoming side: a fresh inflater per message (client_no_context_takeover) against
    one kept for the connection."""
    once = Deflater(15, 8, context_takeover=False)
    alone = [once.compress(m) for m in messages]
    stream = Deflater(15, 8)
    kept = [stream.compress(m) for m in messages]

    def fresh() -> None:
        inflater = Inflater(15, no_context_takeover=True)
        for payload in alone:
            inflater.feed(payload, final=True)

    def keep() -> None:
        inflater = Inflater(15, no_context_takeover=False)
        for payload in kept:
            inflater.feed(payload, final=True)
    return {"fresh_us": timed(fresh, repeat) / len(messages) * 1e6,
            "kept_us": timed(keep, repeat) / len(messages) * 1e6}


# --- The others' window: what stand-alone bytes lose at a smaller window ---------------

def study_windows(repeat: int, count: int) -> list[dict[str, float | int | str]]:
    """Stand-alone bytes (a2) compressed with each window 9..15: wire bytes against
    uncompressed and CPU per MiB, for chat lines, JSON events and pastes of chat text of
    4 KiB, 64 KiB and 1 MiB. `RoomStream` compresses once, with the smallest window any
    member that does not follow the stream agreed to, for all of them (RFC 7692
    §7.1.2.1): this is what a member with a larger window gives up for that."""
    traffic = Traffic(seed=2010)
    kinds: list[tuple[str, list[bytes]]] = [("chat", traffic.messages("chat", count)),
                                            ("json", traffic.messages("json", count))]
    text = b"\n".join(Traffic(seed=7).messages("chat", 40_000))  # ~2.7 MB of chat lines
    for size in (4096, 65536, 1 << 20):
        pieces = [text[i:i + size] for i in range(0, len(text) - size, size)]
        kinds.append((f"paste {size // 1024} KiB", pieces[:max(2, (2 << 20) // size)]))
    rows: list[dict[str, float | int | str]] = []
    for kind, messages in kinds:
        raw = sum(frame_size(len(m)) for m in messages)
        for bits in range(9, 16):
            deflater = Deflater(bits, 8, context_takeover=False)
            payloads = [deflater.compress(m) for m in messages]
            seconds = timed(lambda d=deflater, ms=messages: [d.compress(m) for m in ms],
                            repeat)
            rows.append({"kind": kind, "window_bits": bits,
                         "wire_ratio": sum(frame_size(len(p)) for p in payloads) / raw,
                         "us_per_message": seconds / len(messages) * 1e6,
                         "ms_per_mib": seconds / sum(map(len, messages)) * (1 << 20) * 1e3})
    return rows


def print_windows(rows: list[dict[str, float | int | str]]) -> None:
    print("\n## stand-alone bytes by window: wire vs raw (CPU, ms per MiB)")
    print("| traffic | " + " | ".join(f"w{bits}" for bits in range(9, 16)) + " |")
    print("|---|" + "---:|" * 7)
    for kind in dict.fromkeys(str(row["kind"]) for row in rows):
        cells = [f"{row['wire_ratio']:.1%} ({row['ms_per_mib']:.0f})"
                 for row in rows if row["kind"] == kind]
        print(f"| {kind} | " + " | ".join(cells) + " |")


# --- Report ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    parser.add_argument("--repeat", type=int, default=7, help="runs per CPU figure (median)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per traffic kind")
    parser.add_argument("--min-size", type=int, default=0,
                        help="send messages shorter than this uncompressed in the design runs")
    parser.add_argument("--join-every", type=int, default=200,
                        help="a member joins the room every N messages (design c)")
    parser.add_argument("--memory-count", type=int, default=2000, help="objects per RSS run")
    parser.add_argument("--websockets-python", default=None,
                        help="an interpreter with websockets installed, to measure its real "
                             "per-connection extension too (e.g. .venv/bin/python)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--windows-only", action="store_true",
                        help="only the stand-alone window study (a minute or so)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.messages, args.memory_count = 3, 500, 500
    if args.windows_only:
        print(f"python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
              f"{os.cpu_count()} CPUs; medians of {args.repeat} runs")
        print_windows(study_windows(args.repeat, args.messages))
        return 0

    print(f"python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
          f"{os.cpu_count()} CPUs; medians of {args.repeat} runs; min_size {args.min_size}")
    results: dict[str, object] = {"repeat": args.repeat, "messages": args.messages}
    designs = ["none", "a1", "a2", "b:9:1", "b:10:2", "b:11:4", "b:12:5", "c", "c@20", "c@5",
               "c12"]
    for kind in ("chat", "json"):
        messages = Traffic(seed=2010).messages(kind, args.messages)
        check_correct(messages)
        mean = statistics.mean(map(len, messages))
        print(f"\n## {kind}: {len(messages)} messages, mean {mean:.0f} bytes, "
              f"{min(map(len, messages))}-{max(map(len, messages))}")
        print("| design | users | µs per delivery | µs per message | wire vs raw "
              "| payload vs raw |")
        print("|---|---:|---:|---:|---:|---:|")
        rows: list[dict[str, float | str | int]] = []
        for users in (100, 1000):
            by_name: dict[str, dict[str, float | str | int]] = {}
            for name in designs:
                row = study_design(name, messages, users, args.repeat, args.min_size,
                                   args.join_every)
                by_name[name] = row
                rows.append(row)
            rows.append(study_mix(by_name, 0.1, users))
            for row in rows[-len(designs) - 1:]:
                print(f"| {row['design']} | {row['users']} | {row['us_per_delivery']:.3f} | "
                      f"{row.get('us_per_message', 0):.2f} | {row['wire_ratio']:.1%} | "
                      f"{row['payload_ratio']:.1%} |")
        results[kind] = rows

    print("\n## (d) RoomStream at 1,000 users, 10 % never follow: joins, keyframes")
    print("| traffic | a join every N messages | keyframe at most every K | µs per delivery "
          "| µs per message | wire vs raw |")
    print("|---|---:|---:|---:|---:|---:|")
    room_rows = []
    for kind in ("chat", "json"):
        messages = Traffic(seed=2010).messages(kind, args.messages)
        for join_every, keyframe in ((0, 64), (20, 1), (20, 16), (20, 64), (20, 256),
                                     (5, 1), (5, 16), (5, 64), (5, 256)):
            row = study_room(messages, 1000, join_every, keyframe, 0.1, max(3, args.repeat // 2))
            room_rows.append({"kind": kind, **row})
            print(f"| {kind} | {join_every or 'never'} | {keyframe} | "
                  f"{row['us_per_delivery']:.3f} | {row['us_per_message']:.1f} | "
                  f"{row['wire_ratio']:.1%} |")
    results["room"] = room_rows

    print("\n## threshold: median bytes saved per message (frame included), by size")
    print("| size | saved alone (a) | saved in room stream (c) | µs to compress alone |")
    print("|---:|---:|---:|---:|")
    sweep = threshold_sweep(Traffic(seed=99), args.repeat)
    for row in sweep:
        print(f"| {row['size']} | {row['saved_alone']:.0f} | {row['saved_room']:.0f} | "
              f"{row['us_alone']:.2f} |")
    results["threshold"] = sweep

    print("\n## min_size: whole-traffic wire bytes and CPU with small messages sent raw")
    print("| traffic | min_size | a2 wire | c wire | a2 µs/message | c µs/message |")
    print("|---|---:|---:|---:|---:|---:|")
    min_rows = []
    for kind in ("chat", "json"):
        messages = Traffic(seed=2010).messages(kind, args.messages)
        for min_size in (0, 32, 64, 96, 128, 256, 1024):
            a2 = study_design("a2", messages, 1, args.repeat, min_size, args.join_every)
            c = study_design("c", messages, 1, args.repeat, min_size, args.join_every)
            min_rows.append({"kind": kind, "min_size": min_size, "a2": a2, "c": c})
            print(f"| {kind} | {min_size} | {a2['wire_ratio']:.1%} | {c['wire_ratio']:.1%} | "
                  f"{a2['us_per_message']:.2f} | {c['us_per_message']:.2f} |")
    results["min_size"] = min_rows

    windows = study_windows(args.repeat, args.messages)
    print_windows(windows)
    results["windows"] = windows

    print("\n## incoming: µs to inflate one message")
    costs = inflate_costs(Traffic(seed=5).messages("json", args.messages), args.repeat)
    print(f"fresh inflater per message (client_no_context_takeover): {costs['fresh_us']:.2f}; "
          f"one kept per connection: {costs['kept_us']:.2f}")
    results["inflate"] = costs

    print(f"\n## memory per user: RSS growth / {args.memory_count} objects, after ~100 KiB "
          "of chat each way (fresh process per row)")
    print("| what one user holds | bytes |")
    print("|---|---:|")
    kinds = [
        ("idle-nct", "ours, (a)/(c) + client_no_context_takeover: Inflater without zlib"),
        ("deflater:9:1", "(b) per-user compressor, window 9, memLevel 1"),
        ("deflater:10:2", "(b) per-user compressor, window 10, memLevel 2"),
        ("deflater:11:4", "(b) per-user compressor, window 11, memLevel 4"),
        ("deflater:12:5", "(b) per-user compressor, window 12, memLevel 5"),
        ("deflater:15:8", "(b) per-user compressor, window 15, memLevel 8 (zlib default)"),
        ("inflater:15", "a kept inflater, window 15 (client context takeover)"),
        ("inflater:12", "a kept inflater, window 12"),
        ("websockets-like:12", "websockets default, client offered client_max_window_bits "
                               "(compressor 12/5 + inflater 12)"),
        ("websockets-like:15", "websockets default, client did not (compressor 12/5 + "
                               "inflater 15)"),
    ]
    if args.websockets_python:
        kinds.append(("websockets-real", "websockets 'PerMessageDeflate' object for "
                                         "Chromium's offer (real library)"))
    memory = {}
    for kind, label in kinds:
        python = args.websockets_python if kind == "websockets-real" else sys.executable
        value = measure_memory(kind, args.memory_count, python or sys.executable)
        memory[kind] = value
        shown = "failed" if value is None else f"{value:,.0f}"
        print(f"| {label} | {shown} |")
    results["memory"] = memory
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
