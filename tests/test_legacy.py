"""Draft-75/76 on bytes: the draft's own handshake example and 0x00..0xFF framing."""
from __future__ import annotations

import pytest

from websocket.errors import HttpError, InvalidPayload, MessageTooBig
from websocket.protocol.legacy import (
    CLOSE_FRAME,
    HixieReceiver,
    accept_response,
    challenge_response,
    encode_text,
    key_part,
)
from websocket.protocol.messages import Close, Event, Message


def test_draft76_example_from_the_draft() -> None:
    # draft-hixie-thewebsocketprotocol-76 §1.3 / §5.2 worked example.
    answer = challenge_response("4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"^n:ds[4U")
    assert answer == b"8jKS'y:G*Co,Wxa-"


def test_key_parts_of_the_example() -> None:
    assert key_part("4 @1  46546xW%0l 1 5") == 4146546015 // 5
    assert key_part("12998 5 Y3 1  .P00") == 1299853100 // 5


@pytest.mark.parametrize("key, reason", [
    ("12345", "no spaces"),  # the PHP original divided by zero here
    ("1 2 3", "not a multiple"),  # 123 / 2 spaces
    ("nodigits here", "no digits"),
    ("4294967296 ", r"2\^32"),  # the number must fit 32 bits
    ("99999999999999999999 ", r"2\^32"),
])
def test_bad_keys_are_400(key: str, reason: str) -> None:
    with pytest.raises(HttpError, match=reason) as info:
        key_part(key)
    assert info.value.status == 400


def test_key3_must_be_8_bytes() -> None:
    with pytest.raises(HttpError):
        challenge_response("1 0", "1 0", b"short")


def test_accept_responses() -> None:
    r76 = accept_response(76, "http://o", "ws://h/p", None, b"x" * 16)
    assert r76.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n")
    assert b"Sec-WebSocket-Origin: http://o\r\nSec-WebSocket-Location: ws://h/p\r\n" in r76
    assert r76.endswith(b"\r\n\r\n" + b"x" * 16)
    r75 = accept_response(75, "http://o", "ws://h/p")
    assert r75.startswith(b"HTTP/1.1 101 Web Socket Protocol Handshake\r\n")
    assert b"\r\nWebSocket-Origin: http://o\r\nWebSocket-Location: ws://h/p\r\n" in r75


def feed(data: bytes, step: int = 0, max_size: int = 1 << 20) -> list[Event]:
    receiver, buf, events = HixieReceiver(max_size), bytearray(), []
    chunks = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        buf += chunk
        events += receiver.receive(buf)
    return events


STREAM = (encode_text("hello") + encode_text("") + encode_text("émoji 👋")
          + b"\x80\x03abc"  # a length-prefixed frame: skipped (draft-76 §5.3)
          + b"\x01ignored\xff"  # a sentinel frame of another type: discarded
          + encode_text("after") + CLOSE_FRAME)


@pytest.mark.parametrize("step", [0, 1, 2, 5])
def test_frames_however_chopped(step: int) -> None:
    assert feed(STREAM, step) == [Message("hello"), Message(""), Message("émoji 👋"),
                                  Message("after"), Close(1005)]


def test_encode_text() -> None:
    assert encode_text("Hi") == b"\x00Hi\xff"


def test_invalid_utf8_closes() -> None:
    with pytest.raises(InvalidPayload):
        feed(b"\x00\xc3\x28\xff")


def test_oversized_message_fails_before_its_end_arrives() -> None:
    with pytest.raises(MessageTooBig):
        feed(b"\x00" + b"a" * 101, max_size=100)  # no 0xFF yet: must not keep buffering


def test_oversized_length_prefixed_frame_fails() -> None:
    with pytest.raises(MessageTooBig):
        feed(b"\x80\x81\x00", max_size=100)  # announces 128 bytes


def test_long_length_prefixed_frames_are_skipped_as_they_arrive() -> None:
    receiver, buf = HixieReceiver(), bytearray(b"\x80\x88\x00")  # 1024 bytes follow
    assert receiver.receive(buf) == []
    buf += b"z" * 1024 + encode_text("next")
    assert receiver.receive(buf) == [Message("next")]
    assert not buf
