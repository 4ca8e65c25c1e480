"""The wire trace (`websocket/observe/trace.py`) on byte vectors: RFC 6455 §5.7, §1.3, draft-76.

A few blocks are compared whole, so that the format is pinned; the rest check the lines
that matter. `ConnectionTrace` is also fed the same conversation at once, byte by byte
and in odd pieces, and must give the same blocks every time.
"""
from __future__ import annotations

import hashlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from websocket.observe.trace import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    ConnectionTrace,
    compression_note,
    explain_accept,
    explain_draft76,
    format_frame,
    format_hixie_frame,
    format_http_head,
    hexdump,
    tls_note,
)
from websocket.protocol import handshake, legacy
from websocket.protocol.frames import encode_close, encode_frame

# RFC 6455 §5.7
HELLO = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
FRAGMENTS = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
PING = bytes.fromhex("890548656c6c6f")
PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")
BINARY_256 = bytes.fromhex("827e0100") + bytes(range(256))
BINARY_64K = bytes.fromhex("827f0000000000010000") + bytes(65536)
# draft-76 §1.3 / the 2010 article's example
KEY1, KEY2, KEY3 = "4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"^n:ds[4U"
ANSWER = b"8jKS'y:G*Co,Wxa-"
# RFC 6455 §1.3
KEY, ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def field(block: str, name: str) -> str:
    """The value of the first `name` line of a block."""
    for line in block.split("\n"):
        if line.startswith(f"  {name} "):
            return line[12:]
    raise AssertionError(f"no {name!r} line in:\n{block}")


def fields(block: str, name: str) -> list[str]:
    return [line[12:] for line in block.split("\n") if line.startswith(f"  {name} ")]


class TestHexdump:
    def test_as_hexdump_c(self) -> None:
        # What `printf 'Hello' | hexdump -C` and a 20-byte input print.
        assert hexdump(b"Hello") == [
            "00000000  48 65 6c 6c 6f                                    |Hello|"]
        assert hexdump(b"0123456789abcdef0123") == [
            "00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|",
            "00000010  30 31 32 33                                       |0123|",
        ]

    def test_non_printable_bytes_are_dots(self) -> None:
        assert hexdump(b"\x00\x7f\x80\xff A") == [
            "00000000  00 7f 80 ff 20 41                                 |.... A|"]

    def test_empty(self) -> None:
        assert hexdump(b"") == []


class TestRfc6455Frames:
    def test_unmasked_hello_exactly(self) -> None:
        assert format_frame(HELLO, SERVER_TO_CLIENT, label="#1") == "\n".join([
            "#1 server->client  RFC 6455 frame, 7 bytes",
            "  header    81 05",
            "  bits      FIN 1 (final), RSV1 0, RSV2 0, RSV3 0, opcode 0x1 (text)",
            "  mask      MASK 0 (no key)",
            "  length    5 (7-bit form)",
            "  payload   00000000  48 65 6c 6c 6f                                    |Hello|",
        ])

    def test_masked_hello_exactly(self) -> None:
        assert format_frame(HELLO_MASKED, CLIENT_TO_SERVER, label="#1") == "\n".join([
            "#1 client->server  RFC 6455 frame, 11 bytes",
            "  header    81 85 37 fa 21 3d",
            "  bits      FIN 1 (final), RSV1 0, RSV2 0, RSV3 0, opcode 0x1 (text)",
            "  mask      MASK 1, key 37 fa 21 3d",
            "  length    5 (7-bit form)",
            "  masked    00000000  7f 9f 4d 51 58                                    |..MQX|",
            "  unmasked  00000000  48 65 6c 6c 6f                                    |Hello|",
        ])

    def test_256_bytes_16_bit_length_cut_at_the_limit_exactly(self) -> None:
        assert format_frame(BINARY_256, SERVER_TO_CLIENT, limit=20) == "\n".join([
            "server->client  RFC 6455 frame, 260 bytes",
            "  header    82 7e 01 00",
            "  bits      FIN 1 (final), RSV1 0, RSV2 0, RSV3 0, opcode 0x2 (binary)",
            "  mask      MASK 0 (no key)",
            "  length    256 (16-bit form: 126, then 01 00)",
            "  payload   00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  "
            "|................|",
            "            00000010  10 11 12 13                                       |....|",
            "  cut       236 more payload bytes not shown (limit 20)",
        ])

    def test_default_limit_is_64_bytes(self) -> None:
        block = format_frame(BINARY_256, SERVER_TO_CLIENT)
        assert len([line for line in block.split("\n") if line.endswith("|")]) == 4  # x 16
        assert field(block, "cut") == "192 more payload bytes not shown (limit 64)"

    def test_64k_uses_the_64_bit_length(self) -> None:
        block = format_frame(BINARY_64K, SERVER_TO_CLIENT)
        assert block.startswith("server->client  RFC 6455 frame, 65546 bytes\n")
        assert field(block, "header") == "82 7f 00 00 00 00 00 01 00 00"
        assert field(block, "length") == \
            "65536 (64-bit form: 127, then 00 00 00 00 00 01 00 00)"
        assert field(block, "cut") == "65472 more payload bytes not shown (limit 64)"

    def test_limit_zero_shows_no_payload(self) -> None:
        block = format_frame(HELLO_MASKED, CLIENT_TO_SERVER, limit=0)
        assert not fields(block, "masked") and not fields(block, "unmasked")
        assert field(block, "cut") == "5 more payload bytes not shown (limit 0)"

    def test_masked_key_and_unmasking_under_a_limit(self) -> None:
        block = format_frame(HELLO_MASKED, CLIENT_TO_SERVER, limit=3)
        assert field(block, "masked").endswith("7f 9f 4d" + " " * 42 + "|..M|")
        assert field(block, "unmasked").endswith("|Hel|")
        assert field(block, "cut") == "2 more payload bytes not shown (limit 3)"

    def test_fragments(self) -> None:
        trace = ConnectionTrace(protocol=handshake.RFC6455)
        first, last = trace.server_bytes(FRAGMENTS)
        assert field(first, "bits") == ("FIN 0 (more fragments follow), RSV1 0, RSV2 0, "
                                        "RSV3 0, opcode 0x1 (text)")
        assert field(first, "payload").endswith("|Hel|")
        assert field(last, "bits") == ("FIN 1 (final), RSV1 0, RSV2 0, RSV3 0, "
                                       "opcode 0x0 (continuation of a text message)")
        assert field(last, "payload").endswith("|lo|")

    def test_ping_and_masked_pong(self) -> None:
        ping = format_frame(PING, SERVER_TO_CLIENT)
        assert field(ping, "bits").endswith("opcode 0x9 (ping)")
        assert field(ping, "payload").endswith("|Hello|")
        pong = format_frame(PONG_MASKED, CLIENT_TO_SERVER)
        assert field(pong, "bits").endswith("opcode 0xa (pong)")
        assert field(pong, "mask") == "MASK 1, key 37 fa 21 3d"
        assert field(pong, "unmasked").endswith("|Hello|")

    def test_non_ascii_text_is_shown_decoded(self) -> None:
        block = format_frame(encode_frame(1, "émoji 👋".encode()), SERVER_TO_CLIENT)
        assert field(block, "text") == "'émoji 👋'"
        assert "  text " not in format_frame(HELLO, SERVER_TO_CLIENT)  # the dump shows it

    @pytest.mark.parametrize(("payload", "expected"), [
        (encode_close(1000, "bye"), "code 1000 (normal), reason 'bye'"),
        (encode_close(1009, ""), "code 1009 (message too big), reason ''"),
        (encode_close(4000, "é"), "code 4000 (application), reason 'é'"),
        (b"", "no status code (the receiver reports 1005)"),
        (b"\x03", "invalid: close frame with a one-byte payload (§5.5.1, §7.4)"),
        (b"\x03\xe7", "invalid: invalid close code 999 (§5.5.1, §7.4)"),
        (b"\x03\xe8\xff", "invalid: close reason is not valid UTF-8 (§5.5.1, §7.4)"),
    ])
    def test_close_code_and_reason(self, payload: bytes, expected: str) -> None:
        assert field(format_frame(encode_frame(8, payload), SERVER_TO_CLIENT), "close") == \
            expected
        masked = encode_frame(8, payload, mask=b"\x01\x02\x03\x04")
        assert field(format_frame(masked, CLIENT_TO_SERVER), "close") == expected

    def test_a_close_reason_is_read_whole_even_past_the_limit(self) -> None:
        frame = encode_frame(8, encode_close(1001, "server shutting down"), mask=b"abcd")
        block = format_frame(frame, CLIENT_TO_SERVER, limit=4)
        assert field(block, "close") == "code 1001 (going away), reason 'server shutting down'"
        assert field(block, "cut") == "18 more payload bytes not shown (limit 4)"

    @pytest.mark.parametrize(("frame", "direction", "note"), [
        (HELLO, CLIENT_TO_SERVER, "unmasked client frame: the server must close the "
                                  "connection (§5.1)"),
        (HELLO_MASKED, SERVER_TO_CLIENT, "masked server frame: the client must close the "
                                         "connection (§5.1)"),
        (bytes.fromhex("c10548656c6c6f"), SERVER_TO_CLIENT, "RSV bits set: only an extension "
         "may set them (§5.2), e.g. RSV1 for permessage-deflate (RFC 7692)"),
        (bytes.fromhex("8300"), SERVER_TO_CLIENT, "reserved opcode: the receiver must fail "
                                                  "the connection (§5.2)"),
        (bytes.fromhex("897e007e") + bytes(126), SERVER_TO_CLIENT,
         "control frame over 125 bytes: a protocol error (§5.5)"),
        (bytes.fromhex("0900"), SERVER_TO_CLIENT, "fragmented control frame: a protocol error "
                                                  "(§5.5)"),
        (bytes.fromhex("82ff8000000000000000abcdabcd"), CLIENT_TO_SERVER,
         "64-bit length with its top bit set: a protocol error (§5.2)"),
    ])
    def test_what_breaks_the_rules_gets_a_note(self, frame: bytes, direction: str,
                                               note: str) -> None:
        assert note in fields(format_frame(frame, direction), "note")  # type: ignore[arg-type]

    def test_valid_frames_have_no_note(self) -> None:
        for frame, direction in ((HELLO, SERVER_TO_CLIENT), (HELLO_MASKED, CLIENT_TO_SERVER),
                                 (BINARY_256, SERVER_TO_CLIENT), (PING, SERVER_TO_CLIENT)):
            assert "note" not in format_frame(frame, direction)  # type: ignore[arg-type]

    def test_non_minimal_length_is_pointed_out(self) -> None:
        block = format_frame(bytes.fromhex("817e0005") + b"Hello", SERVER_TO_CLIENT)
        assert field(block, "length") == \
            "5 (16-bit form: 126, then 00 05); not minimal: §5.2 wants the 7-bit form"

    def test_rsv_bits_are_shown_one_by_one(self) -> None:
        block = format_frame(bytes.fromhex("d100"), SERVER_TO_CLIENT)  # RSV1 and RSV3
        assert field(block, "bits").startswith("FIN 1 (final), RSV1 1, RSV2 0, RSV3 1,")

    def test_compressed_frame_shows_both_sizes(self) -> None:
        block = format_frame(bytes.fromhex("c107f248cdc9c90700"), SERVER_TO_CLIENT,
                             inflated_size=5)
        assert field(block, "deflate") == \
            "permessage-deflate: 7 bytes on the wire, 5 bytes inflated (RFC 7692)"

    def test_incomplete_header_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            format_frame(b"\x81", SERVER_TO_CLIENT)
        with pytest.raises(ValueError):
            format_frame(bytes.fromhex("817e00"), SERVER_TO_CLIENT)

    def test_truncated_payload_says_so(self) -> None:
        block = format_frame(HELLO[:4], SERVER_TO_CLIENT)
        assert field(block, "cut") == "3 more payload bytes not shown (not in the bytes given)"


class TestHixieFrames:
    def test_text_frame_exactly(self) -> None:
        assert format_hixie_frame(b"\x00Hello\xff", CLIENT_TO_SERVER, label="#2") == "\n".join([
            "#2 client->server  draft-75/76 text frame, 7 bytes",
            "  frame     00 ... ff: 0x00, 5 bytes of UTF-8 text, then 0xff",
            "  payload   00000000  48 65 6c 6c 6f                                    |Hello|",
        ])

    def test_closing_frame_exactly(self) -> None:
        assert format_hixie_frame(b"\xff\x00", SERVER_TO_CLIENT) == "\n".join([
            "server->client  draft-76 closing frame, 2 bytes",
            "  frame     ff 00: the closing handshake (draft-76 §4.2, §5.3); draft-75 had none",
        ])

    def test_length_prefixed_frame(self) -> None:
        block = format_hixie_frame(b"\x80\x81\x00" + bytes(128), CLIENT_TO_SERVER)
        assert block.startswith("client->server  draft-75/76 length-prefixed frame, 131 bytes")
        assert field(block, "frame").startswith("80 81 00: type 0x80, length 128 in 7-bit "
                                                "groups; the receiver discards it")
        assert field(block, "cut") == "64 more payload bytes not shown (limit 64)"

    def test_cut_and_non_ascii(self) -> None:
        block = format_hixie_frame(b"\x00" + "é".encode() * 10 + b"\xff", SERVER_TO_CLIENT,
                                   limit=4)
        assert field(block, "frame") == "00 ... ff: 0x00, 20 bytes of UTF-8 text, then 0xff"
        assert field(block, "text") == "'éé'"
        assert field(block, "cut") == "16 more payload bytes not shown (limit 4)"

    def test_incomplete_frames_are_errors(self) -> None:
        for data in (b"", b"\x00Hello", b"\x80\x81"):
            with pytest.raises(ValueError):
                format_hixie_frame(data, CLIENT_TO_SERVER)


class TestKeyArithmetic:
    def test_draft76_article_example_exactly(self) -> None:
        assert explain_draft76(KEY1, KEY2, KEY3) == "\n".join([
            "  challenge draft-76 §5.2, step by step",
            "  key1      '4 @1  46546xW%0l 1 5'",
            "            digits 4146546015, spaces 5: 4146546015 / 5 = 829309203",
            "  key2      '12998 5 Y3 1  .P00'",
            "            digits 1299853100, spaces 5: 1299853100 / 5 = 259970620",
            "  key3      5e 6e 3a 64 73 5b 34 55 (the 8 bytes after the empty line)",
            "  MD5 in    00000000  31 6e 41 13 0f 7e d6 3c  5e 6e 3a 64 73 5b 34 55  "
            "|1nA..~.<^n:ds[4U|",
            "            829309203 and 259970620 as big-endian 32-bit numbers, then key3",
            "  MD5 out   00000000  38 6a 4b 53 27 79 3a 47  2a 43 6f 2c 57 78 61 2d  "
            "|8jKS'y:G*Co,Wxa-|",
            "            the 16 bytes the server sends after its empty line",
        ])

    def test_draft76_answer_is_the_servers(self) -> None:
        assert legacy.challenge_response(KEY1, KEY2, KEY3) == ANSWER
        md5_in = bytes.fromhex("316e41130f7ed63c") + KEY3
        assert hashlib.md5(md5_in).digest() == ANSWER

    @pytest.mark.parametrize(("key", "why"), [
        ("12345", "Sec-WebSocket-Key has no spaces"),
        ("no digits here", "Sec-WebSocket-Key has no digits"),
        ("1 2 3", "Sec-WebSocket-Key number is not a multiple of its spaces"),
        ("9999999999 ", "Sec-WebSocket-Key number is 2^32 or more"),
    ])
    def test_draft76_bad_key_says_why(self, key: str, why: str) -> None:
        text = explain_draft76(key, KEY2, KEY3)
        assert f"{why} (the server answers HTTP 400)" in text
        assert field(text, "MD5") == "not computed: the handshake fails"

    def test_rfc6455_accept_exactly(self) -> None:
        assert explain_accept(KEY) == "\n".join([
            "  accept    Sec-WebSocket-Accept = base64(SHA-1(key + GUID)), RFC 6455 §4.2.2",
            "  key       'dGhlIHNhbXBsZSBub25jZQ=='",
            "  + GUID    '258EAFA5-E914-47DA-95CA-C5AB0DC85B11' (RFC 6455 §1.3)",
            "  SHA-1     b3 7a 4f 2c c0 62 4f 16 90 f6 46 06 cf 38 59 45 b2 be c4 ea",
            "  base64    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='",
        ])
        assert handshake.accept_key(KEY) == ACCEPT


RFC6455_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n")
DRAFT76_REQUEST = (
    b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nUpgrade: WebSocket\r\n"
    b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n") + KEY3


def server_answer(request: bytes) -> bytes:
    parsed = handshake.parse_request(request)
    assert parsed is not None
    return handshake.upgrade(parsed[0]).response


def feed(client: bytes, server: bytes, piece: int, limit: int = 64) -> list[str]:
    trace = ConnectionTrace("#7", limit)
    blocks = []
    for start in range(0, len(client), piece):
        blocks += trace.client_bytes(client[start:start + piece])
    for start in range(0, len(server), piece):
        blocks += trace.server_bytes(server[start:start + piece])
    return blocks


class TestConnectionTrace:
    def test_rfc6455_conversation(self) -> None:
        client = (RFC6455_REQUEST + HELLO_MASKED
                  + encode_frame(8, encode_close(1000, "bye"), mask=b"abcd"))
        server = server_answer(RFC6455_REQUEST) + HELLO + BINARY_256 + \
            encode_frame(8, encode_close(1000, "bye"))
        blocks = feed(client, server, len(client) + len(server))
        assert [block.split("\n")[0] for block in blocks] == [
            "#7 client->server  HTTP request head, 157 bytes",
            "#7 client->server  RFC 6455 frame, 11 bytes",
            "#7 client->server  RFC 6455 frame, 11 bytes",
            "#7 server->client  HTTP response head, 129 bytes",
            "#7 server->client  RFC 6455 frame, 7 bytes",
            "#7 server->client  RFC 6455 frame, 260 bytes",
            "#7 server->client  RFC 6455 frame, 7 bytes",
        ]
        request, response = blocks[0], blocks[3]
        assert "  | GET /chat HTTP/1.1\n  | Host: 127.0.0.1:8080\n" in request
        assert "  | (empty line: end of the head)" in request
        assert field(request, "base64") == repr(ACCEPT)
        assert f"  | Sec-WebSocket-Accept: {ACCEPT}" in response
        assert field(response, "check") == "Sec-WebSocket-Accept matches the key (RFC 6455 §4.1)"
        assert field(blocks[2], "close") == "code 1000 (normal), reason 'bye'"

    @pytest.mark.parametrize("piece", [1, 2, 3, 7, 100])
    def test_pieces_of_any_size_give_the_same_blocks(self, piece: int) -> None:
        client = RFC6455_REQUEST + HELLO_MASKED + encode_frame(2, bytes(300), mask=b"wxyz")
        server = server_answer(RFC6455_REQUEST) + FRAGMENTS + PING + BINARY_64K[:2000]
        whole = feed(client, server, 1 << 20, limit=16)
        assert feed(client, server, piece, limit=16) == whole
        draft76 = DRAFT76_REQUEST + b"\x00Hello\xff\x00" + "é".encode() * 40 + b"\xff\xff\x00"
        answer = server_answer(DRAFT76_REQUEST) + b"\x00Hi\xff\x81\x02ab\xff\x00"
        assert feed(draft76, answer, piece, limit=16) == feed(draft76, answer, 1 << 20, 16)

    def test_a_large_payload_is_shown_before_it_has_all_arrived(self) -> None:
        trace = ConnectionTrace(protocol=handshake.RFC6455)
        frame = encode_frame(2, bytes(1 << 20))  # a 10-byte header
        assert trace.server_bytes(frame[:73]) == []
        assert len(trace.server_bytes(frame[73:74])) == 1  # header + 64 bytes: shown
        for start in range(74, len(frame), 65536):
            assert trace.server_bytes(frame[start:start + 65536]) == []  # skipped
        assert trace.server_bytes(HELLO)[0].startswith("server->client  RFC 6455 frame, 7")

    def test_draft76_conversation(self) -> None:
        answer = server_answer(DRAFT76_REQUEST)
        assert answer.endswith(ANSWER)
        blocks = feed(DRAFT76_REQUEST + b"\x00Hello\xff\xff\x00",
                      answer + b"\x00Hello\xff\xff\x00", 1 << 20)
        assert [block.split("\n")[0] for block in blocks] == [
            "#7 client->server  HTTP request head, 192 bytes",
            "#7 client->server  draft-75/76 text frame, 7 bytes",
            "#7 client->server  draft-76 closing frame, 2 bytes",
            "#7 server->client  HTTP response head, 175 bytes",
            "#7 server->client  draft-75/76 text frame, 7 bytes",
            "#7 server->client  draft-76 closing frame, 2 bytes",
        ]
        assert explain_draft76(KEY1, KEY2, KEY3) in blocks[0]
        assert field(blocks[3], "answer").endswith("|8jKS'y:G*Co,Wxa-|")
        assert "matches the MD5 of the request's keys (draft-76 §4.1)" in blocks[3]

    def test_draft76_wrong_answer(self) -> None:
        answer = server_answer(DRAFT76_REQUEST)[:-16] + bytes(16)
        blocks = feed(DRAFT76_REQUEST, answer, 1 << 20)
        assert "should be 38 6a 4b 53 27 79 3a 47 2a 43 6f 2c 57 78 61 2d" in blocks[1]

    def test_draft75_frames_follow_the_head(self) -> None:
        request = (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
                   b"Host: example.com\r\nOrigin: http://example.com\r\n\r\n")
        blocks = feed(request + b"\x00Hi\xff", server_answer(request) + b"\x00Hi\xff", 5)
        assert blocks[1].startswith("#7 client->server  draft-75/76 text frame, 4 bytes")
        assert blocks[3].startswith("#7 server->client  draft-75/76 text frame, 4 bytes")

    def test_wrong_accept_is_pointed_out(self) -> None:
        answer = server_answer(RFC6455_REQUEST).replace(ACCEPT.encode(), b"x" * len(ACCEPT))
        response = feed(RFC6455_REQUEST, answer, 1 << 20)[1]
        assert field(response, "note") == (f"Sec-WebSocket-Accept should be {ACCEPT!r}: the "
                                           "client must fail the connection (RFC 6455 §4.1)")

    def test_plain_http_with_bodies_and_keep_alive(self) -> None:
        client = (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nHEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        server = (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
                  + b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"  # HEAD: no body
                  + b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nno\r\n")
        blocks = feed(client, server, 9)
        assert [block.split("\n")[0] for block in blocks] == [
            "#7 client->server  HTTP request head, 28 bytes",
            "#7 client->server  HTTP request head, 29 bytes",
            "#7 client->server  HTTP request head, 28 bytes",
            "#7 server->client  HTTP response head, 40 bytes",
            "#7 server->client  HTTP body, 100 bytes",
            "#7 server->client  HTTP response head, 40 bytes",
            "#7 server->client  HTTP response head, 45 bytes",
            "#7 server->client  HTTP body, 4 bytes",
        ]
        assert field(blocks[4], "cut") == "36 more bytes not shown (limit 64)"
        assert field(blocks[7], "body").endswith("|no..|")

    def test_tls_on_a_plain_port_is_shown_raw(self) -> None:
        hello = bytes.fromhex("160301002a0100002603") + bytes(90)
        (block,) = ConnectionTrace().client_bytes(hello)
        assert block.startswith("client->server  100 bytes, a TLS handshake on a plain "
                                "connection")
        assert field(block, "bytes").startswith("00000000  16 03 01 00 2a 01 00 00")
        assert field(block, "cut") == "36 more bytes not shown (limit 64)"

    def test_control_characters_in_a_head_are_made_visible(self) -> None:
        text = format_http_head(b"GET /\x01 HTTP/1.1\r\nX: a\x7fb\r\n\r\n", CLIENT_TO_SERVER)
        assert "  | GET /\\x01 HTTP/1.1" in text and "  | X: a\\x7fb" in text

    def test_starting_after_the_handshake(self) -> None:
        trace = ConnectionTrace("#1", protocol=handshake.HIXIE76)
        assert trace.client_bytes(b"\x00Hi\xff")[0].startswith("#1 client->server  draft-75/76")
        with pytest.raises(ValueError):
            ConnectionTrace(protocol="draft-99")
        with pytest.raises(ValueError):
            ConnectionTrace(limit=-1)

    def test_notes_for_tls_and_compression(self) -> None:
        assert tls_note("TLSv1.3", "TLS_AES_256_GCM_SHA384", label="#4") == \
            "#4 TLS  TLSv1.3, TLS_AES_256_GCM_SHA384: the bytes below are shown decrypted"
        assert ConnectionTrace("#4").compressed(SERVER_TO_CLIENT, 7, 5) == \
            compression_note(SERVER_TO_CLIENT, 7, 5, label="#4") == \
            ("#4 server->client  permessage-deflate: 7 bytes on the wire, 5 bytes inflated "
             "(RFC 7692)")


# -- it never raises: whatever a peer sends, the trace cannot cost it its connection ----------

_PREFIXES = [b"", RFC6455_REQUEST, DRAFT76_REQUEST,
             b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(_PREFIXES), data=st.binary(max_size=600),
       answer=st.binary(max_size=300), cuts=st.lists(st.integers(1, 40), min_size=1),
       limit=st.integers(0, 70))
def test_any_bytes_in_any_pieces_never_raise(prefix: bytes, data: bytes, answer: bytes,
                                             cuts: list[int], limit: int) -> None:
    trace = ConnectionTrace("#1", limit)
    client = prefix + data
    server = (server_answer(prefix) if prefix else b"") + answer
    pos = [0, 0]
    turn = 0
    while pos[0] < len(client) or pos[1] < len(server):
        size = cuts[turn % len(cuts)]
        side = turn % 2
        source = client if side == 0 else server
        piece = source[pos[side]:pos[side] + size]
        pos[side] += size
        blocks = trace.client_bytes(piece) if side == 0 else trace.server_bytes(piece)
        assert all(isinstance(block, str) and block for block in blocks)
        turn += 1


# -- compressed messages (RFC 7692): both sizes, from the trace's own inflater ---------------

DEFLATE_RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                    b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"
                    b"\r\n\r\n")


def rsv1(frame: bytes) -> bytes:
    return bytes((frame[0] | 0x40,)) + frame[1:]


def compressed_stream(*messages: bytes, window_bits: int = 15) -> list[bytes]:
    """Each message compressed with zlib as a sender with context takeover would (§7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
    out = []
    for message in messages:
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


def deflate_trace(limit: int = 64) -> ConnectionTrace:
    trace = ConnectionTrace("#5", limit)
    assert len(trace.client_bytes(RFC6455_REQUEST)) == 1
    assert len(trace.server_bytes(DEFLATE_RESPONSE)) == 1
    return trace


class TestCompressed:
    def test_both_sizes_and_the_inflated_text(self) -> None:
        text = "compressible text, " * 20
        (payload,) = compressed_stream(text.encode(), window_bits=10)
        trace = deflate_trace()
        frame, note = trace.server_bytes(rsv1(encode_frame(1, payload)))
        assert "RSV1 1" in frame and "note" not in frame
        assert "the payload is DEFLATE data" in frame
        assert note.split("\n")[0] == (
            f"#5 server->client  permessage-deflate: {len(payload)} bytes on the wire, "
            f"{len(text)} bytes inflated (RFC 7692)")
        assert "|compressible tex|" in note
        assert f"cut       {len(text) - 64} more inflated bytes not shown (limit 64)" in note

    def test_context_takeover_fragments_and_pieces_of_one_byte(self) -> None:
        first, second = compressed_stream(b"hello hello hello hello", b"hello hello hello")
        client = (rsv1(encode_frame(1, first, mask=b"abcd"))
                  + rsv1(encode_frame(1, second[:3], fin=False, mask=b"wxyz"))
                  + encode_frame(9, b"ping between", mask=b"1234")  # §5.4: allowed
                  + encode_frame(0, second[3:], mask=b"9876"))
        trace = deflate_trace()
        blocks = []
        for byte in range(len(client)):
            blocks += trace.client_bytes(client[byte:byte + 1])
        notes = [block for block in blocks if "bytes inflated" in block]
        assert [note.split("\n")[0].split("  ")[1] for note in notes] == [
            f"permessage-deflate: {len(first)} bytes on the wire, 23 bytes inflated (RFC 7692)",
            f"permessage-deflate: {len(second)} bytes on the wire, 17 bytes inflated (RFC 7692)"]
        assert "|hello hello hell|" in notes[1]  # the second refers back into the first
        assert len(second) < 10  # ... which is why it is so short
        assert not any("note" in block for block in blocks)

    def test_rules_broken_with_deflate_agreed(self) -> None:
        trace = deflate_trace()
        (payload,) = compressed_stream(b"x" * 50)
        blocks = trace.server_bytes(rsv1(encode_frame(1, payload[:2], fin=False))
                                    + rsv1(encode_frame(0, payload[2:]))
                                    + bytes((0xa1, 0x00)))  # RSV2 on a text frame
        assert "only a message's first frame may carry it (RFC 7692 §6.1)" in blocks[1]
        assert "RSV bits set" in blocks[-1]

    def test_without_agreement_rsv1_is_a_fault_and_nothing_is_inflated(self) -> None:
        trace = ConnectionTrace("", 64)
        trace.client_bytes(RFC6455_REQUEST)
        trace.server_bytes(server_answer(RFC6455_REQUEST))
        (block,) = trace.server_bytes(rsv1(encode_frame(1, b"\xca\x48\x05\x00")))
        assert "RSV bits set: only an extension may set them" in block

    def test_garbage_and_bombs_are_noted_not_followed(self,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        trace = deflate_trace()
        blocks = trace.server_bytes(rsv1(encode_frame(2, b"\xff\xff\xff\xff")))
        assert "does not inflate" in blocks[-1] and "1007" in blocks[-1]
        monkeypatch.setattr("websocket.observe.trace_deflate.MAX_INFLATE", 100_000)
        trace = deflate_trace()
        (bomb,) = compressed_stream(bytes(10_000_000))
        blocks = trace.server_bytes(rsv1(encode_frame(2, bomb)))
        assert "inflates to more than 100000 bytes: not followed" in blocks[-1]


# -- a trace nobody reads only follows; a trace may begin mid-stream (wiretap.py) ------------

_frame_strategy = st.builds(
    lambda opcode, fin, payload, masked: encode_frame(
        opcode, payload, fin=fin, mask=b"\x01\x02\x03\x04" if masked else None),
    opcode=st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA]),
    fin=st.booleans(),
    payload=st.sampled_from([b"", b"Hello", bytes(125), bytes(126), bytes(300),
                             bytes(65536)]),
    masked=st.booleans())


def fed(trace: ConnectionTrace, data: bytes, cuts: list[int], inbound: bool = True
        ) -> list[str]:
    """`data` fed to one direction of `trace` in pieces of the sizes `cuts` (cycled)."""
    blocks: list[str] = []
    pos = turn = 0
    while pos < len(data):
        size = cuts[turn % len(cuts)]
        piece = data[pos:pos + size]
        blocks += trace.client_bytes(piece) if inbound else trace.server_bytes(piece)
        pos += size
        turn += 1
    return blocks


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(_frame_strategy, min_size=1, max_size=12),
       answers=st.lists(st.booleans(), min_size=1, max_size=7),
       cuts=st.lists(st.sampled_from([1, 3, 14, 200, 70000]), min_size=1, max_size=4),
       inbound=st.booleans())
def test_a_frame_nobody_wants_is_followed_not_shown(frames: list[bytes], answers: list[bool],
                                                    cuts: list[int], inbound: bool) -> None:
    """Asked once per frame; the frames wanted get exactly the blocks a full trace gives
    them (a continuation still says what it continues), the others none."""
    data = b"".join(frames)
    full = fed(ConnectionTrace("#1", 16, handshake.RFC6455), data, [len(data)], inbound)
    assert len(full) == len(frames)
    asked: list[bool] = []

    def wants() -> bool:
        asked.append(answers[len(asked) % len(answers)])
        return asked[-1]

    shown = fed(ConnectionTrace("#1", 16, handshake.RFC6455, wants), data, cuts, inbound)
    assert len(asked) == len(frames)
    assert shown == [block for block, wanted in zip(full, asked, strict=True) if wanted]


def test_a_trace_begun_mid_frame_starts_at_the_next_one() -> None:
    big = encode_frame(1, b"x" * 1000, mask=b"abcd")
    rest = big[300:]  # what is still to come of a frame whose start went untraced
    trace = ConnectionTrace("#2", 64, handshake.RFC6455)
    trace.skip(CLIENT_TO_SERVER, len(rest))
    trace.skip(SERVER_TO_CLIENT, 5)  # the end of output queued before the trace began
    blocks = fed(trace, rest + HELLO_MASKED, [7])
    assert [block.split("\n")[0] for block in blocks] == [
        "#2 client->server  RFC 6455 frame, 11 bytes"]
    assert "|Hello|" in blocks[0] and "note" not in blocks[0]
    (out,) = trace.server_bytes(b"queue" + HELLO)
    assert out.startswith("#2 server->client  RFC 6455 frame, 7 bytes")


def test_a_trace_begun_inside_draft76_text_starts_after_its_0xff() -> None:
    trace = ConnectionTrace("#3", 64, handshake.HIXIE76)
    trace.skip(CLIENT_TO_SERVER, to_ff=True)
    assert trace.client_bytes(b"rest of a text") == []
    (block,) = trace.client_bytes(b" frame\xff\x00Hi\xff")
    assert block.startswith("#3 client->server  draft-75/76 text frame, 4 bytes")


def test_output_paused_and_resumed_where_the_queue_ends() -> None:
    trace = ConnectionTrace("#4", 64)
    assert not trace.pause_output()  # the HTTP answer must be followed: it says what follows
    trace.client_bytes(RFC6455_REQUEST)
    # The answer, the first fragment, and the second one's header: its payload is due.
    assert len(trace.server_bytes(server_answer(RFC6455_REQUEST) + FRAGMENTS[:7])) == 2
    assert trace.pause_output()  # frames now: nobody reads them, nobody follows them
    trace.resume_output(2)  # ... until where the queue ended: whole frames from there
    (block,) = trace.server_bytes(FRAGMENTS[7:] + HELLO)
    assert block.startswith("#4 server->client  RFC 6455 frame, 7 bytes")
    assert "(continuation" not in block and "note" not in block


def test_compression_agreed_before_a_trace_begun_mid_stream() -> None:
    (first,) = compressed_stream(b"takeover " * 10)
    (alone,) = compressed_stream(b"no takeover " * 10)
    trace = ConnectionTrace("#5", 64, handshake.RFC6455)
    trace.deflate_agreed({CLIENT_TO_SERVER: (15, True), SERVER_TO_CLIENT: (15, False)})
    frame, note = trace.client_bytes(rsv1(encode_frame(1, alone, mask=b"abcd")))
    assert "RSV1 1" in frame and "note" not in frame  # RSV1 is agreed
    assert "120 bytes inflated" in note  # no context takeover: each message stands alone
    frame, note = trace.server_bytes(rsv1(encode_frame(1, first)))
    assert "note" not in frame
    assert field(note, "note") == ("not inflated: the trace began after this connection's "
                                   "first messages, so the window they built is unknown")
