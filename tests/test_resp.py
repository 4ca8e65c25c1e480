"""The RESP2 codec (websocket/protocol/resp.py) on bytes: the protocol specification's own examples,
cut anywhere, the encoder, the limits, and fuzzing.

Vectors marked "spec" are the examples of the Redis serialization protocol specification
(redis.io/docs/reference/protocol-spec, RESP2 sections), byte for byte. Every vector is also
fed one byte at a time (`NEED_MORE` until its last byte, as h11's readers are tested) and, with
hypothesis, cut into random pieces and pipelined behind the others.

Values are compared with their types (`same`): "OK" (a simple string) equals
RedisError("OK") and b"" is not None, so plain == would hide the mistakes that matter.
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` run from elsewhere than the checkout's root
    sys.path.insert(0, str(ROOT))

from websocket.protocol import resp  # noqa: E402
from websocket.protocol.resp import (  # noqa: E402
    ELEMENT_COST,
    MAX_ARRAY_LENGTH,
    MAX_BULK_BYTES,
    MAX_DEPTH,
    NEED_MORE,
    Reader,
    RedisError,
    Reply,
    ReplyLimitExceeded,
    RespProtocolError,
    Skipped,
    encode_command,
    parse,
)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def same(got: object, want: object) -> bool:
    """Equal, and of the same types all the way down."""
    if type(got) is not type(want):
        return False
    if isinstance(want, list):
        assert isinstance(got, list)
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return got == want


# (name, wire bytes, value)
SPEC_VECTORS: list[tuple[str, bytes, Reply]] = [
    ("simple string", b"+OK\r\n", "OK"),  # spec
    ("error", b"-Error message\r\n", RedisError("Error message")),  # spec
    ("error ERR", b"-ERR unknown command 'asdf'\r\n",
     RedisError("ERR unknown command 'asdf'")),  # spec
    ("error WRONGTYPE", b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
     RedisError("WRONGTYPE Operation against a key holding the wrong kind of value")),  # spec
    ("integer 0", b":0\r\n", 0),  # spec
    ("integer 1000", b":1000\r\n", 1000),  # spec
    ("integer LLEN", b":48293\r\n", 48293),  # spec, "Sending commands"
    ("bulk string", b"$5\r\nhello\r\n", b"hello"),  # spec
    ("empty bulk string", b"$0\r\n\r\n", b""),  # spec
    ("null bulk string", b"$-1\r\n", None),  # spec
    ("empty array", b"*0\r\n", []),  # spec
    ("array of bulk strings", b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", [b"hello", b"world"]),
    ("array of integers", b"*3\r\n:1\r\n:2\r\n:3\r\n", [1, 2, 3]),  # spec
    ("mixed array", b"*5\r\n:1\r\n:2\r\n:3\r\n:4\r\n$5\r\nhello\r\n",
     [1, 2, 3, 4, b"hello"]),  # spec
    ("nested arrays", b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n",
     [[1, 2, 3], ["Hello", RedisError("World")]]),  # spec
    ("null array", b"*-1\r\n", None),  # spec
    ("null element", b"*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n",
     [b"hello", None, b"world"]),  # spec
    # Ours: the ends of the 64-bit range, binary data holding CRLF and RESP look-alikes.
    ("int64 min", b":-9223372036854775808\r\n", -(2**63)),
    ("int64 max", b":9223372036854775807\r\n", 2**63 - 1),
    ("negative integer", b":-52\r\n", -52),
    ("binary bulk", b"$8\r\n\r\n$1\r\n\x00\xff\r\n", b"\r\n$1\r\n\x00\xff"),
    ("non-UTF-8 error", b"-ERR bad \xff\r\n", RedisError("ERR bad \\xff")),
    ("UTF-8 simple string", "+été\r\n".encode(), "été"),
    ("deep empty", b"*1\r\n*1\r\n*0\r\n", [[[]]]),
]
IDS = [name for name, _, _ in SPEC_VECTORS]


def read_all(chunks: list[bytes], reader: Reader | None = None) -> list[Reply]:
    """Feed `chunks` one by one, collecting every reply `gets()` gives after each."""
    reader = reader or Reader()
    replies: list[Reply] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.gets()) is not NEED_MORE:
            replies.append(reply)
    return replies


def chop(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@pytest.mark.parametrize(("wire", "value"), [v[1:] for v in SPEC_VECTORS], ids=IDS)
def test_spec_vector_whole(wire: bytes, value: Reply) -> None:
    reader = Reader()
    reader.feed(wire)
    assert same(reader.gets(), value)
    assert reader.gets() is NEED_MORE
    assert reader.position == len(wire) and reader.buffered == 0


@pytest.mark.parametrize(("wire", "value"), [v[1:] for v in SPEC_VECTORS], ids=IDS)
def test_spec_vector_byte_by_byte(wire: bytes, value: Reply) -> None:
    reader = Reader()
    for i in range(len(wire) - 1):
        reader.feed(wire[i:i + 1])
        assert reader.gets() is NEED_MORE, f"a reply after {i + 1} of {len(wire)} bytes"
    reader.feed(wire[-1:])
    assert same(reader.gets(), value)


@pytest.mark.parametrize(("wire", "value"), [v[1:] for v in SPEC_VECTORS], ids=IDS)
def test_spec_vector_parse_function(wire: bytes, value: Reply) -> None:
    """`parse(buf, pos)`: the codecs' contract, trailing bytes left alone."""
    got = parse(b"junk" + wire + b"+next\r\n", 4)
    assert got is not None and same(got[0], value) and got[1] == len(wire)
    assert parse(wire[:-1]) is None


@given(cuts=st.lists(st.integers(min_value=0), max_size=40))
@settings(max_examples=200, deadline=None)
def test_all_vectors_pipelined_and_cut_anywhere(cuts: list[int]) -> None:
    stream = b"".join(wire for _, wire, _ in SPEC_VECTORS)
    replies = read_all(chop(stream, cuts))
    assert same(replies, [value for _, _, value in SPEC_VECTORS])


# A subscriber's stream, as Redis 7 sends it: confirmations, messages whose payloads look
# like RESP and hold CRLF, a pattern message, PING's answer in subscribed mode (an array, not
# +PONG), an error for a forbidden command, the unsubscribe confirmation.
PUBSUB_STREAM = (
    b"*3\r\n$9\r\nsubscribe\r\n$6\r\nchat:/\r\n:1\r\n"
    b"*3\r\n$10\r\npsubscribe\r\n$6\r\nchat:*\r\n:2\r\n"
    b"*3\r\n$7\r\nmessage\r\n$6\r\nchat:/\r\n$13\r\nalice: hello!\r\n"
    b"*4\r\n$8\r\npmessage\r\n$6\r\nchat:*\r\n$6\r\nchat:/\r\n$13\r\nalice: hello!\r\n"
    b"*3\r\n$7\r\nmessage\r\n$6\r\nchat:/\r\n$16\r\n*1\r\n$4\r\nPING\r\n\r\n\r\n"
    b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
    b"are allowed in this context\r\n"
    b"*3\r\n$11\r\nunsubscribe\r\n$6\r\nchat:/\r\n:1\r\n"
)
PUBSUB_REPLIES: list[Reply] = [
    [b"subscribe", b"chat:/", 1],
    [b"psubscribe", b"chat:*", 2],
    [b"message", b"chat:/", b"alice: hello!"],
    [b"pmessage", b"chat:*", b"chat:/", b"alice: hello!"],
    [b"message", b"chat:/", b"*1\r\n$4\r\nPING\r\n\r\n"],
    [b"pong", b""],
    RedisError("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT "
               "/ RESET are allowed in this context"),
    [b"unsubscribe", b"chat:/", 1],
]


def test_pubsub_stream_byte_by_byte() -> None:
    replies = read_all([PUBSUB_STREAM[i:i + 1] for i in range(len(PUBSUB_STREAM))])
    assert same(replies, PUBSUB_REPLIES)


@given(cuts=st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=100, deadline=None)
def test_pubsub_stream_cut_anywhere(cuts: list[int]) -> None:
    assert same(read_all(chop(PUBSUB_STREAM * 3, cuts)), PUBSUB_REPLIES * 3)


def test_error_prefix() -> None:
    assert RedisError("WRONGPASS invalid username-password pair").prefix == "WRONGPASS"
    assert RedisError("NOAUTH Authentication required.").prefix == "NOAUTH"
    assert RedisError("").prefix == ""


# -- protocol errors: (name, wire, stream position of the fault) --------------------------------
BAD: list[tuple[str, bytes, int]] = [
    ("unknown type byte", b"?x\r\n", 0),
    ("HTTP response", b"HTTP/1.0 400 Bad Request\r\n", 0),
    ("SSH banner", b"SSH-2.0-OpenSSH_9.2\r\n", 0),
    ("RESP3 null", b"_\r\n", 0),
    ("RESP3 map", b"%1\r\n+a\r\n:1\r\n", 0),
    ("bad type inside array", b"*2\r\n:1\r\n?\r\n", 8),
    ("letters in integer", b":12a\r\n", 0),
    ("empty integer", b":\r\n", 0),
    ("plus sign", b":+1\r\n", 0),
    ("space", b": 1\r\n", 0),
    ("underscore", b":1_0\r\n", 0),
    ("leading zero", b":01\r\n", 0),
    ("minus zero", b":-0\r\n", 0),
    ("non-ASCII digit", ":٣\r\n".encode(), 0),
    ("int64 overflow", b":9223372036854775808\r\n", 0),
    ("int64 underflow", b":-9223372036854775809\r\n", 0),
    ("number too long", b":" + b"1" * 21 + b"\r\n", 0),
    ("bulk length -2", b"$-2\r\n", 0),
    ("bulk length junk", b"$x\r\n", 0),
    ("bulk length empty", b"$\r\n", 0),
    ("bulk data too long", b"$5\r\nhelloXX", 9),
    ("bulk CR without LF", b"$5\r\nhello\rX", 9),
    ("bulk data too short", b"$5\r\nhell\r\n", 9),
    ("array length -2", b"*-2\r\n", 0),
    ("LF in simple string", b"+O\nK\r\n", 0),
    ("CR in error", b"-E\rR\r\n", 0),
    ("later reply", b"+OK\r\n:1\r\n!", 9),
]
BAD_IDS = [name for name, _, _ in BAD]


@pytest.mark.parametrize(("wire", "position"), [b[1:] for b in BAD], ids=BAD_IDS)
def test_protocol_error_with_position(wire: bytes, position: int) -> None:
    reader = Reader()
    reader.feed(wire)
    with pytest.raises(RespProtocolError) as caught:
        while reader.gets() is not NEED_MORE:
            pass
    assert caught.value.position == position
    assert f"at byte {position}" in str(caught.value)
    # The stream cannot be resynchronised: the same error, again, whatever comes next.
    reader.feed(b"+OK\r\n")
    with pytest.raises(RespProtocolError) as again:
        reader.gets()
    assert again.value is caught.value


@pytest.mark.parametrize(("wire", "position"), [b[1:] for b in BAD], ids=BAD_IDS)
def test_protocol_error_byte_by_byte(wire: bytes, position: int) -> None:
    """Fed in single bytes, the fault is found too (and at the same position)."""
    reader = Reader()
    with pytest.raises(RespProtocolError) as caught:
        for i in range(len(wire)):
            reader.feed(wire[i:i + 1])
            while reader.gets() is not NEED_MORE:
                pass
    assert caught.value.position == position


@pytest.mark.parametrize("wire", [b"H", b"*3\r\n<", b"$3\r\nabcX", b":" + b"9" * 22],
                         ids=["first byte", "element type", "bulk terminator", "long number"])
def test_fault_found_before_the_line_ends(wire: bytes) -> None:
    """A peer that is not Redis fails on its first bytes, not after a CRLF that may never come."""
    reader = Reader()
    reader.feed(wire)
    with pytest.raises(RespProtocolError):
        reader.gets()


# -- limits ----------------------------------------------------------------------------------
def test_bulk_limit_is_checked_on_the_header() -> None:
    reader = Reader(max_bulk_bytes=10)
    reader.feed(b"$10\r\n0123456789\r\n$11\r\n")
    assert reader.gets() == b"0123456789"
    with pytest.raises(ReplyLimitExceeded, match="bulk string of 11 bytes") as caught:
        reader.gets()
    assert caught.value.position == 17


def test_default_bulk_limit_is_redis_proto_max_bulk_len() -> None:
    assert MAX_BULK_BYTES == 512 * 1024 * 1024
    reader = Reader()
    reader.feed(b"$%d\r\n" % MAX_BULK_BYTES)
    assert reader.gets() is NEED_MORE  # accepted, waiting for the data
    reader = Reader()
    reader.feed(b"$%d\r\n" % (MAX_BULK_BYTES + 1))
    with pytest.raises(ReplyLimitExceeded):
        reader.gets()


def test_array_length_limit() -> None:
    reader = Reader()
    reader.feed(b"*%d\r\n" % MAX_ARRAY_LENGTH)
    assert reader.gets() is NEED_MORE
    reader = Reader()
    reader.feed(b"*%d\r\n" % (MAX_ARRAY_LENGTH + 1))
    with pytest.raises(ReplyLimitExceeded, match="array of"):
        reader.gets()
    reader = Reader(max_array_length=2)
    reader.feed(b"*2\r\n:1\r\n:2\r\n*3\r\n")
    assert reader.gets() == [1, 2]
    with pytest.raises(ReplyLimitExceeded):
        reader.gets()


def test_depth_limit() -> None:
    deepest = b"*1\r\n" * MAX_DEPTH + b":1\r\n"
    value: Reply = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    got = parse(deepest)
    assert got is not None and same(got[0], value) and got[1] == len(deepest)
    with pytest.raises(ReplyLimitExceeded, match="nested deeper"):
        parse(b"*1\r\n" + deepest)
    with pytest.raises(ReplyLimitExceeded):  # an empty array one level too deep counts too
        parse(b"*1\r\n" * MAX_DEPTH + b"*0\r\n")


def test_line_limit() -> None:
    reader = Reader(max_line_bytes=8)
    reader.feed(b"+12345678\r\n-12345678\r\n")
    assert reader.gets() == "12345678" and reader.gets() == RedisError("12345678")
    reader.feed(b"+123456789")  # refused without waiting for a CRLF
    with pytest.raises(ReplyLimitExceeded, match="longer than 8"):
        reader.gets()


def test_reply_limit_counts_the_whole_reply() -> None:
    two = b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n"  # 26 bytes
    reader = Reader(max_reply_bytes=26)
    reader.feed(two * 3)  # each reply on its own is within the limit
    assert [reader.gets() for _ in range(3)] == [[b"hello", b"world"]] * 3
    reader = Reader(max_reply_bytes=25)
    reader.feed(two[:19])  # refused on the second header, before its data
    with pytest.raises(ReplyLimitExceeded, match="reply of at least 26") as caught:
        reader.gets()
    assert caught.value.position == 15


def test_a_huge_declared_length_allocates_nothing() -> None:
    """A header announcing 512 MiB (or 2^20 elements, 16 deep) is not memory, only a number."""
    tracemalloc.start()
    try:
        reader = Reader()
        reader.feed(b"$%d\r\n" % MAX_BULK_BYTES + b"x" * 1000)
        assert reader.gets() is NEED_MORE
        nested = Reader()
        nested.feed(b"*%d\r\n" % MAX_ARRAY_LENGTH * MAX_DEPTH)
        assert nested.gets() is NEED_MORE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_big_bulk_string_in_small_pieces_is_linear() -> None:
    """16 MiB in 1 KiB pieces: re-scanning or re-copying from the start would take minutes."""
    size, piece = 16 * 1024 * 1024, 1024
    payload = bytes(range(256)) * (size // 256)
    wire = b"$%d\r\n" % size + payload + b"\r\n"
    reader = Reader()
    started = time.perf_counter()
    for i in range(0, len(wire) - piece, piece):
        reader.feed(wire[i:i + piece])
        assert reader.gets() is NEED_MORE
        assert reader.buffered <= size + 2
    reader.feed(wire[i + piece:])
    assert reader.gets() == payload
    assert time.perf_counter() - started < 5


def test_long_line_in_small_pieces_is_linear() -> None:
    """A 4 MiB line in 64-byte pieces: searching it for CRLF from its start each time would
    read 128 GiB."""
    size = 4 * 1024 * 1024
    wire = b"+" + b"x" * size + b"\r\n"
    reader = Reader(max_line_bytes=size)
    started = time.perf_counter()
    for i in range(0, len(wire), 64):
        reader.feed(wire[i:i + 64])
        reply = reader.gets()
    assert reply == "x" * size
    assert time.perf_counter() - started < 5


def test_long_array_in_small_pieces_is_linear() -> None:
    count = 200_000
    wire = b"*%d\r\n" % count + b":7\r\n" * count
    reader = Reader()
    started = time.perf_counter()
    for i in range(0, len(wire), 7):
        reader.feed(wire[i:i + 7])
        reply = reader.gets()
    assert reply == [7] * count
    assert time.perf_counter() - started < 5


def test_elements_are_counted_over_the_whole_reply() -> None:
    """Nested arrays count with their elements: an array of 4 arrays of 4 is 21 elements,
    refused at the header that passes the limit, before its elements are read."""
    nested = b"*4\r\n" + b"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n" * 4
    reader = Reader(max_reply_elements=21)
    reader.feed(nested * 2)  # each reply on its own is within the limit
    assert reader.gets() == [[1, 2, 3, 4]] * 4 and reader.gets() == [[1, 2, 3, 4]] * 4
    reader = Reader(max_reply_elements=20)
    reader.feed(nested[:64])  # the fourth inner header is at byte 64: 1 + 4 + 4 * 4 = 21
    assert reader.gets() is NEED_MORE
    reader.feed(nested[64:68])
    with pytest.raises(ReplyLimitExceeded, match="more than 20 elements") as caught:
        reader.gets()
    assert caught.value.position == 64
    reader = Reader(max_reply_elements=5)  # a million empty arrays: refused on the header
    reader.feed(b"*1000000\r\n" + b"*0\r\n" * 100)
    with pytest.raises(ReplyLimitExceeded, match="more than 5 elements"):
        reader.gets()


def test_reply_memory_counts_each_element_at_its_cost() -> None:
    """`max_reply_memory` counts data plus ELEMENT_COST per element (arrays too), and is
    checked on each header: a bulk string that would pass it is refused before its data."""
    three = b"*2\r\n$5\r\nhello\r\n:7\r\n"  # 3 elements, 5 bytes of data
    reader = Reader(max_reply_memory=3 * ELEMENT_COST + 5)
    reader.feed(three)
    assert reader.gets() == [b"hello", 7]
    reader = Reader(max_reply_memory=2 * ELEMENT_COST + 4)
    reader.feed(b"*2\r\n$5\r\n")  # refused with the bulk header: its data never waited for
    with pytest.raises(ReplyLimitExceeded, match="in memory"):
        reader.gets()
    reader = Reader(max_reply_memory=100 * ELEMENT_COST)
    reader.feed(b"*1000\r\n" + b"*0\r\n" * 1000)  # empty arrays are not free
    with pytest.raises(ReplyLimitExceeded, match="in memory"):
        reader.gets()


@pytest.mark.parametrize("element", [b"*0\r\n", b"$0\r\n\r\n", b"$10\r\n0123456789\r\n",
                                     b":123456789012\r\n", b"+OK\r\n", b"-ERR x\r\n",
                                     b"*1\r\n$1\r\nx\r\n"])
def test_element_cost_bounds_what_a_reply_holds(element: bytes) -> None:
    """What a reply accepted under `max_reply_memory` holds, measured (tracemalloc), is
    within that limit for every kind of element: ELEMENT_COST is not an underestimate."""
    limit = 4 << 20
    reader = Reader(max_reply_memory=limit)
    count = 0
    tracemalloc.start()
    try:
        reader.feed(b"*%d\r\n" % 200_000)
        before = tracemalloc.get_traced_memory()[0]
        while True:  # elements one by one, until the reader refuses the next
            reader.feed(element)
            try:
                assert reader.gets() is NEED_MORE
            except ReplyLimitExceeded:
                break
            count += 1
        held = tracemalloc.get_traced_memory()[0] - before - len(reader._buf)
    finally:
        tracemalloc.stop()
    print(f"{element!r}: {count} elements held {held} bytes under a {limit}-byte limit")
    assert count > 1000 and held <= limit


def test_a_bulk_string_over_skip_bulk_over_is_dropped_as_it_comes() -> None:
    """Skipped: its bytes are consumed as they arrive (nothing buffered), the CRLF after
    it is still checked, the reply goes on around it, and it counts in no size limit."""
    size = 8 << 20
    reader = Reader(skip_bulk_over=1000, max_reply_bytes=200,
                    max_reply_memory=4 * ELEMENT_COST + len("message") + len("hi"))
    reader.feed(b"*3\r\n$7\r\nmessage\r\n$%d\r\n" % size)
    piece = b"x" * 65536
    for _ in range(size // len(piece)):
        reader.feed(piece)
        assert reader.gets() is NEED_MORE
        assert reader.buffered == 0
    reader.feed(b"\r\n$2\r\nhi\r\n+OK\r\n")
    assert reader.gets() == [b"message", Skipped(size), b"hi"]
    assert reader.gets() == "OK"
    reader.feed(b"$1001\r\n" + b"y" * 1001 + b"\r\n$1000\r\n" + b"z" * 1000 + b"\r\n")
    assert reader.gets() == Skipped(1001)
    kept = Reader(skip_bulk_over=1000, max_reply_memory=1000)
    kept.feed(b"$1000\r\n")  # not over skip_bulk_over: kept, so it counts
    with pytest.raises(ReplyLimitExceeded, match="in memory"):
        kept.gets()
    reader = Reader(skip_bulk_over=4)
    reader.feed(b"$5\r\nhelloXY")
    with pytest.raises(RespProtocolError, match="not followed by CRLF"):
        reader.gets()
    reader = Reader(skip_bulk_over=4, max_bulk_bytes=100)
    reader.feed(b"$101\r\n")  # past max_bulk_bytes: refused, not skipped
    with pytest.raises(ReplyLimitExceeded, match="bulk string of 101 bytes"):
        reader.gets()


# -- the encoder -------------------------------------------------------------------------------
def test_encode_spec_example() -> None:
    # spec, "Sending commands to a Redis server": LLEN mylist.
    assert encode_command("LLEN", "mylist") == b"*2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n"


def test_encode_argument_types() -> None:
    assert encode_command("PUBLISH", "chat:/", b"hi") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nchat:/\r\n$2\r\nhi\r\n")
    assert encode_command("LTRIM", "h", -100, -1) == (
        b"*4\r\n$5\r\nLTRIM\r\n$1\r\nh\r\n$4\r\n-100\r\n$2\r\n-1\r\n")
    assert encode_command("SET", "k", bytearray(b"\r\n"), "é") == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$2\r\n\xc3\xa9\r\n")


@pytest.mark.parametrize("bad", [True, 1.5, None, ["x"], memoryview(b"x")])
def test_encode_refuses_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        encode_command("SET", "k", bad)  # type: ignore[arg-type]


def test_encode_refuses_an_empty_command() -> None:
    """Redis answers "*0\\r\\n" with nothing at all: a pipeline's replies would shift by one."""
    with pytest.raises(ValueError):
        encode_command()


def test_encode_refuses_what_redis_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resp, "MAX_BULK_BYTES", 4)
    assert encode_command("SET", "k", b"1234")
    with pytest.raises(ValueError, match="5 bytes"):
        encode_command("SET", "k", b"12345")


ARGUMENT = st.one_of(st.text(max_size=40), st.binary(max_size=60),
                     st.integers(min_value=-(2**63), max_value=2**63 - 1))


def as_bytes(arg: str | bytes | int) -> bytes:
    if isinstance(arg, str):
        return arg.encode()
    return arg if isinstance(arg, bytes) else str(arg).encode()


@given(commands=st.lists(st.lists(ARGUMENT, min_size=1, max_size=8), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0), max_size=20))
@settings(max_examples=200, deadline=None)
@example(commands=[["PUBLISH", "chat:/", b"*1\r\n$4\r\nPING\r\n"]], cuts=[])
def test_commands_round_trip(commands: list[list[str | bytes | int]], cuts: list[int]) -> None:
    """Any command encodes to bytes that parse back to its arguments, pipelined and cut."""
    stream = b"".join(encode_command(*command) for command in commands)
    replies = read_all(chop(stream, cuts))
    assert same(replies, [[as_bytes(arg) for arg in command] for command in commands])


# -- replies of every shape: a serializer written here, independent of resp.py ------------------
def dump(value: Reply) -> bytes:
    if isinstance(value, RedisError):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":" + str(value).encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$" + str(len(value)).encode() + b"\r\n" + value + b"\r\n"
    if value is None:
        return b"$-1\r\n"
    return b"*" + str(len(value)).encode() + b"\r\n" + b"".join(dump(v) for v in value)


LINE = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
               max_size=20)
SCALAR = st.one_of(LINE, LINE.map(RedisError), st.integers(-(2**63), 2**63 - 1),
                   st.binary(max_size=30), st.none())
REPLY: st.SearchStrategy[Reply] = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=5), max_leaves=30)


@given(replies=st.lists(REPLY, min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=300, deadline=None)
def test_replies_round_trip(replies: list[Reply], cuts: list[int]) -> None:
    stream = b"".join(dump(r) for r in replies)
    assert same(read_all(chop(stream, cuts), Reader(max_depth=64)), replies)


# -- fuzzing -----------------------------------------------------------------------------------
SMALL = {"max_bulk_bytes": 64, "max_reply_bytes": 256, "max_line_bytes": 32,
         "max_array_length": 8, "max_depth": 4}
# After NEED_MORE the reader holds only the unparsed rest of one element: a line (type byte,
# at most max_line_bytes, a CR) or a bulk string's data and CRLF (less the last byte).
MOST_BUFFERED = max(1 + SMALL["max_line_bytes"] + 1, SMALL["max_bulk_bytes"] + 1)


def fuzz(stream: bytes, cuts: list[int], skip_bulk_over: int | None = None) -> None:
    reader = Reader(**SMALL, skip_bulk_over=skip_bulk_over)
    try:
        for chunk in chop(stream, cuts):
            reader.feed(chunk)
            # Every reply takes at least 3 bytes ("+\r\n"): more would mean a loop.
            for _ in range((len(chunk) + MOST_BUFFERED) // 3 + 2):
                if reader.gets() is NEED_MORE:
                    break
            else:
                raise AssertionError("gets() keeps returning replies it has no bytes for")
            assert reader.buffered <= MOST_BUFFERED
    except RespProtocolError as exc:
        assert 0 <= exc.position <= len(stream)


@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=20))
@FUZZ
@example(stream=b"$64\r\n" + b"x" * 70, cuts=[10, 30])
@example(stream=b"*8\r\n" * 5, cuts=[])
def test_fuzz_random_bytes(stream: bytes, cuts: list[int]) -> None:
    """Random bytes: only RespProtocolError, no hang, nothing buffered past the limits."""
    fuzz(stream, cuts)
    fuzz(stream, cuts, skip_bulk_over=8)  # and with bulk strings over 8 bytes skipped


@given(replies=st.lists(REPLY, min_size=1, max_size=4), data=st.data(),
       cuts=st.lists(st.integers(min_value=0), max_size=20))
@FUZZ
def test_fuzz_mutated_replies(replies: list[Reply], data: st.DataObject,
                              cuts: list[int]) -> None:
    """Valid streams with bytes changed, inserted or removed reach the deeper states."""
    stream = bytearray(b"".join(dump(r) for r in replies))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(stream)))
        byte = data.draw(st.sampled_from(b"\r\n$*:+-0123456789_%x\x00\xff"))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or at == len(stream):
            stream.insert(at, byte)
        elif action == "replace":
            stream[at] = byte
        else:
            del stream[at]
    fuzz(bytes(stream), cuts)
    fuzz(bytes(stream), cuts, skip_bulk_over=8)
