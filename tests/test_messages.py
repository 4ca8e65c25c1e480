"""Frames to messages (RFC 6455 §5.4, §8.1): fragments, interleaved controls, UTF-8, limits."""
from __future__ import annotations

import pytest

from websocket.errors import InvalidPayload, MessageTooBig, ProtocolError
from websocket.protocol.frames import Opcode, encode_close, encode_frame
from websocket.protocol.messages import Close, Event, InputBudget, Message, Ping, Pong, Receiver

KEY = b"\x37\xfa\x21\x3d"


def f(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin, mask=KEY)


def feed(data: bytes, receiver: Receiver | None = None, step: int = 0) -> list[Event]:
    """Feed `data` whole (step=0) or `step` bytes at a time; return every event."""
    receiver = receiver or Receiver()
    buf = bytearray()
    events: list[Event] = []
    chunks = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        buf += chunk
        events += receiver.receive(buf)
    assert not buf, "complete input must be consumed"
    return events


STREAM = (f(Opcode.TEXT, "Hél".encode()[:2], fin=False) + f(Opcode.PING, b"p")
          + f(Opcode.CONTINUATION, "Hél".encode()[2:], fin=False)
          + f(Opcode.CONTINUATION, b"lo") + f(Opcode.BINARY, b"\x00\xff")
          + f(Opcode.PONG, b"") + f(Opcode.CLOSE, encode_close(1000, "bye")))
EXPECTED = [Ping(b"p"), Message("Hello".replace("e", "é")), Message(b"\x00\xff"), Pong(b""),
            Close(1000, "bye")]


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7, 64])
def test_same_events_however_the_stream_is_chopped(step: int) -> None:
    assert feed(STREAM, step=step) == EXPECTED


def test_several_messages_in_one_packet() -> None:
    data = b"".join(f(Opcode.TEXT, f"m{i}".encode()) for i in range(100))
    assert feed(data) == [Message(f"m{i}") for i in range(100)]


def test_partial_frame_is_kept_until_complete() -> None:
    receiver, buf = Receiver(), bytearray(f(Opcode.TEXT, b"Hello")[:-1])
    assert receiver.receive(buf) == []
    buf += f(Opcode.TEXT, b"Hello")[-1:]
    assert receiver.receive(buf) == [Message("Hello")]


def test_empty_messages() -> None:
    assert feed(f(Opcode.TEXT, b"") + f(Opcode.BINARY, b"")) == [Message(""), Message(b"")]
    assert feed(f(Opcode.TEXT, b"", fin=False) + f(Opcode.CONTINUATION, b"")) == [Message("")]


def test_nothing_counts_after_a_close_frame() -> None:
    receiver, buf = Receiver(), bytearray(f(Opcode.CLOSE, b"") + f(Opcode.TEXT, b"late"))
    assert receiver.receive(buf) == [Close(1005, "")]
    assert receiver.closed


@pytest.mark.parametrize("data", [
    f(Opcode.CONTINUATION, b"x"),  # nothing to continue
    f(Opcode.TEXT, b"a", fin=False) + f(Opcode.TEXT, b"b"),  # new message inside one
    f(Opcode.TEXT, b"a", fin=False) + f(Opcode.BINARY, b"b"),
])
def test_fragmentation_errors_are_1002(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        feed(data)
    assert info.value.code == 1002


def test_invalid_utf8_is_1007() -> None:
    with pytest.raises(InvalidPayload) as info:
        feed(f(Opcode.TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"))
    assert info.value.code == 1007


def test_invalid_utf8_fails_mid_frame_before_the_frame_is_complete() -> None:
    # Autobahn 6.4.*: the invalid byte is in, most of the frame is not: fail now.
    data = f(Opcode.TEXT, b"ok \xf4\x90\x80\x80" + b"x" * 1000)
    receiver, buf = Receiver(), bytearray(data[:14])
    with pytest.raises(InvalidPayload):
        receiver.receive(buf)


def test_invalid_utf8_across_fragments_fails_in_the_fragment_that_shows_it() -> None:
    receiver = Receiver()
    buf = bytearray(f(Opcode.TEXT, b"\xce", fin=False))
    assert receiver.receive(buf) == []  # a valid start of a sequence
    buf += f(Opcode.CONTINUATION, b"\xba\xff", fin=False)
    with pytest.raises(InvalidPayload):
        receiver.receive(buf)


def test_message_ending_inside_a_utf8_sequence_is_1007() -> None:
    with pytest.raises(InvalidPayload):
        feed(f(Opcode.TEXT, b"\xce", fin=False) + f(Opcode.CONTINUATION, b""))


def test_utf8_split_across_fragments_is_fine() -> None:
    text = "κόσμε 👋"
    raw = text.encode()
    data = b"".join(f(Opcode.TEXT if i == 0 else Opcode.CONTINUATION, raw[i:i + 1],
                      fin=i == len(raw) - 1) for i in range(len(raw)))
    assert feed(data) == [Message(text)]


def test_too_big_is_1009_on_the_header_before_the_payload() -> None:
    receiver = Receiver(max_message_size=1000)
    header_only = bytearray(f(Opcode.BINARY, bytes(1001))[:8])  # 2 + 2 + 4 bytes of header
    with pytest.raises(MessageTooBig) as info:
        receiver.receive(header_only)
    assert info.value.code == 1009


def test_too_big_counts_every_fragment() -> None:
    receiver = Receiver(max_message_size=10)
    data = f(Opcode.TEXT, b"123456", fin=False) + f(Opcode.CONTINUATION, b"12345")
    with pytest.raises(MessageTooBig):
        feed(data, receiver)


def test_exactly_the_limit_is_accepted() -> None:
    assert feed(f(Opcode.BINARY, bytes(1000)), Receiver(max_message_size=1000)) == [
        Message(bytes(1000))]


def test_huge_announced_length_fails_without_allocating() -> None:
    header = bytearray(b"\x82\xff" + (1 << 62).to_bytes(8, "big") + KEY)
    with pytest.raises(MessageTooBig):
        Receiver().receive(header)


def test_events_before_an_error_are_kept() -> None:
    events: list[Event] = []
    buf = bytearray(f(Opcode.TEXT, b"one") + f(Opcode.TEXT, b"two") + b"\xc1\x80mask")
    with pytest.raises(ProtocolError):
        Receiver().receive(buf, events)
    assert events == [Message("one"), Message("two")]


def test_unmasked_frames_only_when_allowed() -> None:
    assert feed(encode_frame(Opcode.TEXT, b"hi"), Receiver(require_mask=False)) == [
        Message("hi")]
    with pytest.raises(ProtocolError):
        feed(encode_frame(Opcode.TEXT, b"hi"))


@pytest.mark.parametrize("opcode, payload", [(Opcode.TEXT, "é€𝄞 mixed ".encode() * 5000),
                                             (Opcode.BINARY, bytes(range(256)) * 300)])
def test_payload_taken_straight_from_a_scratch_buffer(opcode: int, payload: bytes) -> None:
    """What the server does while a large frame streams in: receive_payload() on a reused
    buffer, unmasked in place, gives the same message as receive() on the whole frame."""
    data = f(opcode, payload)
    receiver = Receiver(1 << 20)
    buf = bytearray(data[:100])  # the header and the start, the usual way
    assert receiver.receive(buf) == [] and not buf
    scratch = bytearray(65536)
    pos, events = 100, []
    while pos < len(data):
        size = min(receiver.remaining, len(scratch), 7777)
        scratch[:size] = data[pos:pos + size]
        receiver.receive_payload(scratch, size, events)
        scratch[:size] = b"\xee" * size  # reused: nothing may still refer to it
        pos += size
    expected = payload.decode() if opcode == Opcode.TEXT else payload
    assert events == [Message(expected)] and not receiver.in_message


def test_receive_payload_only_inside_a_payload() -> None:
    with pytest.raises(ValueError):
        Receiver().receive_payload(bytearray(10), 10, [])


def test_tiny_fragments_are_joined_as_they_arrive() -> None:
    receiver = Receiver(1 << 20)
    data = f(Opcode.TEXT, b"ab", fin=False) + f(Opcode.CONTINUATION, b"cd", fin=False) * 5000
    buf = bytearray(data)
    assert receiver.receive(buf) == []
    text = receiver._text
    # 10,002 characters in 5,001 pieces: at most one string per 4,096 characters, plus
    # fewer than 4,096 characters' worth of pieces not joined yet.
    assert text is not None and len(text._parts) <= 3 and len(text._small) < 2048
    assert feed(f(Opcode.CONTINUATION, b"!"), receiver) == [Message("ab" + "cd" * 5000 + "!")]


def test_the_input_budget_is_reserved_and_given_back() -> None:
    budget = InputBudget(1000)
    first, second = Receiver(budget=budget), Receiver(budget=budget)
    buf = bytearray(f(Opcode.BINARY, bytes(600))[:50])
    first.receive(buf)
    assert budget.held == 600
    buf = bytearray(f(Opcode.BINARY, bytes(600))[:50])
    with pytest.raises(ProtocolError) as info:
        second.receive(buf)
    assert info.value.code == 1013 and budget.held == 600
    first.discard()
    assert budget.held == 0
    assert feed(f(Opcode.BINARY, bytes(600)), Receiver(budget=budget)) == [Message(bytes(600))]
    assert budget.held == 0  # whole in one buffer: never reserved
