"""RFC 6455 §5 frames on bytes: the RFC's own §5.7 examples, masking, and every header error."""
from __future__ import annotations

import os

import pytest

from websocket.errors import InvalidPayload, ProtocolError
from websocket.protocol.frames import (
    CloseCode,
    Opcode,
    apply_mask,
    encode_close,
    encode_frame,
    is_valid_close_code,
    parse_close,
    parse_frame,
    parse_header,
    unmask_in_place,
)

# RFC 6455 §5.7 "Examples", verbatim.
HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HELLO_FRAGMENTS = (bytes.fromhex("010348656c"), bytes.fromhex("80026c6f"))
PING_UNMASKED = bytes.fromhex("890548656c6c6f")
PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")
BINARY_256_HEADER = bytes.fromhex("827e0100")
BINARY_64K_HEADER = bytes.fromhex("827f0000000000010000")


def test_rfc_5_7_unmasked_text_is_what_we_encode() -> None:
    assert encode_frame(Opcode.TEXT, b"Hello") == HELLO_UNMASKED


def test_rfc_5_7_masked_text_parses_to_hello() -> None:
    frame, consumed = parse_frame(HELLO_MASKED)  # type: ignore[misc]
    assert (frame.opcode, frame.payload, frame.fin, consumed) == (Opcode.TEXT, b"Hello", True, 11)


def test_rfc_5_7_masked_text_is_what_a_client_encodes() -> None:
    assert encode_frame(Opcode.TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == HELLO_MASKED


def test_rfc_5_7_fragments() -> None:
    first, _ = parse_frame(HELLO_FRAGMENTS[0], require_mask=False)  # type: ignore[misc]
    second, _ = parse_frame(HELLO_FRAGMENTS[1], require_mask=False)  # type: ignore[misc]
    assert (first.opcode, first.fin, first.payload) == (Opcode.TEXT, False, b"Hel")
    assert (second.opcode, second.fin, second.payload) == (Opcode.CONTINUATION, True, b"lo")
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == HELLO_FRAGMENTS[0]
    assert encode_frame(Opcode.CONTINUATION, b"lo") == HELLO_FRAGMENTS[1]


def test_rfc_5_7_ping_and_masked_pong() -> None:
    assert encode_frame(Opcode.PING, b"Hello") == PING_UNMASKED
    pong, _ = parse_frame(PONG_MASKED)  # type: ignore[misc]
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"Hello")


def test_rfc_5_7_lengths_16_and_64_bit() -> None:
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == BINARY_256_HEADER
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == BINARY_64K_HEADER
    header = parse_header(BINARY_64K_HEADER, require_mask=False)
    assert header is not None and (header.length, header.size) == (65536, 10)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_length_boundaries_round_trip(length: int) -> None:
    payload = os.urandom(length)
    data = encode_frame(Opcode.BINARY, payload, mask=b"\x01\x02\x03\x04")
    frame, consumed = parse_frame(data)  # type: ignore[misc]
    assert frame.payload == payload and consumed == len(data)


def test_incomplete_frames_need_more_bytes() -> None:
    data = encode_frame(Opcode.BINARY, bytes(70000), mask=b"abcd")
    for cut in (0, 1, 2, 5, 9, 13, 14, len(data) - 1):
        assert parse_frame(data[:cut]) is None


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 100, 2047, 2048, 2049, 100_003])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 7])
def test_apply_mask_matches_the_definition(size: int, offset: int) -> None:
    # RFC 6455 §5.3: octet i of the result is octet i XOR octet (i + offset) mod 4 of the key.
    data, key = os.urandom(size), os.urandom(4)
    expected = bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))
    assert apply_mask(data, key, offset) == expected


@pytest.mark.parametrize("size", [1, 3, 4, 5, 4096, 100_003])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 7])
def test_unmask_in_place_matches_the_definition(size: int, offset: int) -> None:
    data, key = os.urandom(size), os.urandom(4)
    buf = bytearray(data + b"tail")  # only the first `size` bytes are touched
    unmask_in_place(buf, key, offset, size)
    expected = bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))
    assert bytes(buf) == expected + b"tail"


@pytest.mark.parametrize("data, reason", [
    (b"\xc1\x80" + b"mask", "reserved bits"),  # RSV1
    (b"\xa1\x80" + b"mask", "reserved bits"),  # RSV2
    (b"\x91\x80" + b"mask", "reserved bits"),  # RSV3
    (b"\x83\x80" + b"mask", "reserved opcode"),
    (b"\x8b\x80" + b"mask", "reserved opcode"),
    (b"\x81\x05Hello", "not masked"),  # §5.1 a client frame must be masked
    (b"\x89\xfe\x00\x7e", "125 bytes"),  # ping with a 126-byte payload
    (b"\x09\x80" + b"mask", "fragmented control"),
    (b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00", "top bit"),  # §5.2 64-bit MSB set
])
def test_header_errors_are_protocol_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as info:
        parse_header(data)
    assert info.value.code == 1002


def test_errors_are_raised_as_soon_as_the_first_bytes_show_them() -> None:
    with pytest.raises(ProtocolError):
        parse_header(b"\xc1\x85")  # only two bytes are in: RSV is already visible


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    assert parse_close(encode_close(code, "bye")) == (code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(code.to_bytes(2, "big"))
    assert info.value.code == 1002


def test_close_payload_rules() -> None:
    assert parse_close(b"") == (CloseCode.NO_STATUS, "")
    with pytest.raises(ProtocolError):
        parse_close(b"\x03")  # §5.5.1: a body, if any, starts with a 2-byte code
    with pytest.raises(InvalidPayload) as info:
        parse_close(b"\x03\xe8\xff\xfe")
    assert info.value.code == 1007


def test_close_reason_is_cut_to_fit_a_control_frame() -> None:
    payload = encode_close(1000, "é" * 200)
    assert len(payload) <= 125
    assert parse_close(payload)[1] == "é" * 61


@pytest.mark.parametrize("size", [5, 3000, 70001])
def test_apply_mask_on_a_range_of_a_larger_buffer(size: int) -> None:
    buf, key = bytearray(os.urandom(size + 20)), os.urandom(4)
    for offset in range(4):
        expected = bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(buf[7:7 + size]))
        assert bytes(apply_mask(buf, key, offset, 7, 7 + size)) == expected
