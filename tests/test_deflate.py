"""permessage-deflate (RFC 7692) on bytes: the RFC's §7.2.3 examples, every negotiation case,
bombs, bad data, round trips through zlib's own objects in arbitrary chops, and the
`websockets` library's extension as the real peer on both sides."""
from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

from websocket.errors import HttpError, InvalidPayload, MessageTooBig
from websocket.protocol.deflate import (
    EMPTY_BLOCK_TAIL,
    Agreed,
    DeflatePolicy,
    Deflater,
    Inflater,
    RoomStream,
    compress_message,
    negotiate,
    new_compressor,
    parse_extensions,
)

# RFC 7692 §7.2.3, verbatim (payloads; the frame headers 0xc1 0xNN carry RSV1).
HELLO_ONE_BLOCK = bytes.fromhex("f248cdc9c90700")                    # §7.2.3.1
HELLO_FRAGMENTS = (bytes.fromhex("f248cd"), bytes.fromhex("c9c90700"))  # §7.2.3.1 split
HELLO_SECOND_SHARED_WINDOW = bytes.fromhex("f200110000")              # §7.2.3.2
HELLO_NO_COMPRESSION = bytes.fromhex("000500faff48656c6c6f00")        # §7.2.3.3
HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")                      # §7.2.3.4
HELLO_TWO_BLOCKS = bytes.fromhex("f248050000" "00ffff" "cac9c90700")  # §7.2.3.5

SLOW = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- RFC 7692 §7.2.3 examples ----------------------------------------------------------


def test_rfc_7_2_3_1_hello_in_one_compressed_block() -> None:
    assert Deflater().compress(b"Hello") == HELLO_ONE_BLOCK
    assert Inflater().feed(HELLO_ONE_BLOCK, final=True) == b"Hello"


def test_rfc_7_2_3_1_hello_in_two_fragments() -> None:
    inflater = Inflater()
    first = inflater.feed(HELLO_FRAGMENTS[0])
    assert first + inflater.feed(HELLO_FRAGMENTS[1], final=True) == b"Hello"


def test_rfc_7_2_3_2_second_hello_with_context_takeover() -> None:
    deflater = Deflater(context_takeover=True)
    assert deflater.compress(b"Hello") == HELLO_ONE_BLOCK
    assert deflater.compress(b"Hello") == HELLO_SECOND_SHARED_WINDOW
    inflater = Inflater(no_context_takeover=False)
    assert inflater.feed(HELLO_ONE_BLOCK, final=True) == b"Hello"
    assert inflater.feed(HELLO_SECOND_SHARED_WINDOW, final=True) == b"Hello"


def test_rfc_7_2_3_2_without_context_takeover_every_hello_is_the_same() -> None:
    deflater = Deflater(context_takeover=False)
    assert [deflater.compress(b"Hello") for _ in range(3)] == [HELLO_ONE_BLOCK] * 3
    inflater = Inflater(no_context_takeover=True)
    assert inflater.feed(HELLO_ONE_BLOCK, final=True) == b"Hello"
    # Without the previous window the shared-window form cannot inflate: §7.2.2.
    with pytest.raises(InvalidPayload):
        inflater.feed(HELLO_SECOND_SHARED_WINDOW, final=True)


def test_rfc_7_2_3_3_uncompressed_block() -> None:
    assert Inflater().feed(HELLO_NO_COMPRESSION, final=True) == b"Hello"


def test_rfc_7_2_3_4_bfinal_block_then_the_window_goes_on() -> None:
    inflater = Inflater(no_context_takeover=False)
    assert inflater.feed(HELLO_BFINAL, final=True) == b"Hello"
    # The next message refers back to the "Hello" before the final block (§7.2.2).
    assert inflater.feed(HELLO_SECOND_SHARED_WINDOW, final=True) == b"Hello"
    assert inflater.feed(HELLO_ONE_BLOCK, final=True) == b"Hello"


def test_rfc_7_2_3_4_blocks_after_a_final_block_in_one_message() -> None:
    # The final block is the first 7 bytes (the 8th starts a stored block); another
    # compressed block follows it here, and refers back across it.
    rest = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=b"Hello")
    tail = rest.compress(b" world, Hello") + rest.flush(zlib.Z_SYNC_FLUSH)
    assert Inflater().feed(HELLO_BFINAL[:7] + tail[:-4], final=True) == b"Hello world, Hello"


def test_rfc_7_2_3_5_two_blocks_in_one_message() -> None:
    assert Inflater().feed(HELLO_TWO_BLOCKS, final=True) == b"Hello"


@pytest.mark.parametrize("payload", [HELLO_ONE_BLOCK, HELLO_NO_COMPRESSION, HELLO_BFINAL,
                                     HELLO_TWO_BLOCKS])
def test_rfc_examples_byte_by_byte_and_with_an_8_bit_window(payload: bytes) -> None:
    for bits in (8, 15):
        inflater = Inflater(window_bits=bits)
        pieces = [inflater.feed(payload[i:i + 1]) for i in range(len(payload) - 1)]
        pieces.append(inflater.feed(payload[-1:], final=True))
        assert b"".join(pieces) == b"Hello"


def test_empty_message() -> None:
    assert Deflater().compress(b"") == b"\x00"
    assert Inflater().feed(b"\x00", final=True) == b""
    assert Inflater().feed(b"", final=True) == b""  # the tail alone is an empty stored block


# --- Negotiation (RFC 7692 §5, §7.1) ---------------------------------------------------

DEMAND = DeflatePolicy()  # the default: client_no_context_takeover demanded
PLAIN = DeflatePolicy(client_no_context_takeover=False)
SMALL = DeflatePolicy(server_max_window_bits=12, client_max_window_bits=10,
                      client_no_context_takeover=False)
PMD = "permessage-deflate"

ACCEPTED = [
    # (offer, policy, response, server bits, client bits)
    (f"{PMD}; client_max_window_bits", DEMAND,  # Chromium and websockets' client
     f"{PMD}; client_no_context_takeover", 15, 15),
    (PMD, DEMAND, f"{PMD}; client_no_context_takeover", 15, 15),  # Firefox
    (PMD, PLAIN, PMD, 15, 15),
    (f"{PMD}; server_no_context_takeover", PLAIN, f"{PMD}; server_no_context_takeover", 15, 15),
    (f"{PMD}; client_no_context_takeover", PLAIN, f"{PMD}; client_no_context_takeover", 15, 15),
    (f"{PMD}; server_max_window_bits=10", PLAIN, f"{PMD}; server_max_window_bits=10", 10, 15),
    (f"{PMD}; server_max_window_bits=9", PLAIN, f"{PMD}; server_max_window_bits=9", 9, 15),
    (f"{PMD}; server_max_window_bits=15", SMALL, f"{PMD}; server_max_window_bits=12", 12, 15),
    # Not offered: our own smaller window is used but not announced.
    (PMD, SMALL, PMD, 12, 15),
    (f"{PMD}; client_max_window_bits=8", PLAIN, f"{PMD}; client_max_window_bits=8", 15, 8),
    (f"{PMD}; client_max_window_bits=12", SMALL, f"{PMD}; client_max_window_bits=10", 12, 10),
    (f"{PMD}; client_max_window_bits", SMALL, f"{PMD}; client_max_window_bits=10", 12, 10),
    (f'{PMD}; client_max_window_bits="11"', PLAIN, f"{PMD}; client_max_window_bits=11", 15, 11),
    ("Permessage-Deflate; Server_No_Context_Takeover", PLAIN,
     f"{PMD}; server_no_context_takeover", 15, 15),
    (f" , {PMD} ;server_max_window_bits = 11 ,, ", PLAIN,
     f"{PMD}; server_max_window_bits=11", 11, 15),
    (f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
     f"server_max_window_bits=10; client_max_window_bits=9", PLAIN,
     f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
     f"server_max_window_bits=10; client_max_window_bits=9", 10, 9),
    (PMD, DeflatePolicy(server_no_context_takeover=True),
     f"{PMD}; server_no_context_takeover; client_no_context_takeover", 15, 15),
    # Other extensions are skipped, unknown parameters of theirs included.
    (f'x-webkit-deflate-frame, foo; bar="baz", {PMD}', PLAIN, PMD, 15, 15),
]


@pytest.mark.parametrize("offer, policy, response, server_bits, client_bits", ACCEPTED)
def test_accepted_offers(offer: str, policy: DeflatePolicy, response: str, server_bits: int,
                         client_bits: int) -> None:
    agreed = negotiate(offer, policy)
    assert agreed is not None
    assert agreed.response == response
    assert (agreed.server_max_window_bits, agreed.client_max_window_bits) == (server_bits,
                                                                            client_bits)
    assert agreed.server_no_context_takeover == ("server_no_context_takeover" in response)
    assert agreed.client_no_context_takeover == ("client_no_context_takeover" in response)


DECLINED = [
    "",
    "x-webkit-deflate-frame",
    f"{PMD}; server_max_window_bits=8",  # zlib cannot compress within 256 bytes
    f"{PMD}; server_max_window_bits",  # needs a value
    f"{PMD}; server_max_window_bits=7",
    f"{PMD}; server_max_window_bits=16",
    f"{PMD}; server_max_window_bits=08",  # leading zero
    f"{PMD}; server_max_window_bits=0",
    f"{PMD}; client_max_window_bits=16",
    f"{PMD}; client_max_window_bits=7",
    f"{PMD}; client_max_window_bits=x",
    f'{PMD}; client_max_window_bits="1x"',
    f"{PMD}; server_no_context_takeover=1",  # these have no value
    f'{PMD}; client_no_context_takeover="x"',
    f"{PMD}; server_no_context_takeover; server_no_context_takeover",
    f"{PMD}; client_max_window_bits=10; client_max_window_bits=10",
    f"{PMD}; client_max_window_bits; Client_Max_Window_Bits=9",
    f"{PMD}; unknown_param",
    f"{PMD}; mux",
]


@pytest.mark.parametrize("offer", DECLINED)
def test_declined_offers(offer: str) -> None:
    assert negotiate(offer, PLAIN) is None
    assert negotiate(offer, DEMAND) is None


@pytest.mark.parametrize("bad", DECLINED[2:])
def test_a_declined_offer_falls_back_to_the_next(bad: str) -> None:
    agreed = negotiate(f"{bad}, {PMD}; server_max_window_bits=11, {PMD}", PLAIN)
    assert agreed is not None and agreed.response == f"{PMD}; server_max_window_bits=11"


def test_no_header_means_no_compression() -> None:
    assert negotiate(None) is None


@pytest.mark.parametrize("header", [
    f"{PMD};",
    f"{PMD}; ",
    f"{PMD}; =10",
    f"{PMD}; server_max_window_bits=",
    f'{PMD}; client_max_window_bits="10',  # unterminated quoted string
    f'{PMD}; client_max_window_bits="1 0"',  # quoted, but not a token when unquoted
    f'{PMD}; client_max_window_bits=""',
    f"{PMD} client_max_window_bits",  # a missing ";"
    f"{PMD}; a=b=c",
    f"{PMD}, ; x",
    f"{PMD}/1",
    "permessage-deflate\u00e9",
    ";",
    "=",
])
def test_malformed_header_is_http_400(header: str) -> None:
    with pytest.raises(HttpError) as caught:
        negotiate(header)
    assert caught.value.status == 400


def test_parse_extensions_keeps_every_offer_in_order() -> None:
    header = f'foo, {PMD}; client_max_window_bits; server_max_window_bits="10", {PMD}, bar;x=1'
    assert parse_extensions(header) == [
        ("foo", []),
        (PMD, [("client_max_window_bits", None), ("server_max_window_bits", "10")]),
        (PMD, []),
        ("bar", [("x", "1")]),
    ]
    assert parse_extensions(r'a; b="\c\d"') == [("a", [("b", "cd")])]


def test_policy_rejects_what_zlib_cannot_do() -> None:
    with pytest.raises(ValueError):
        DeflatePolicy(server_max_window_bits=8)
    with pytest.raises(ValueError):
        DeflatePolicy(client_max_window_bits=16)
    with pytest.raises(ValueError):  # websockets' client would fail the connection
        DeflatePolicy(client_max_window_bits=8)
    with pytest.raises(ValueError):
        Deflater(window_bits=8)


OFFER_PARAM = st.sampled_from([
    ("server_no_context_takeover", None), ("client_no_context_takeover", None),
    ("server_max_window_bits", "9"), ("server_max_window_bits", "12"),
    ("server_max_window_bits", "15"), ("client_max_window_bits", None),
    ("client_max_window_bits", "8"), ("client_max_window_bits", "11"),
    ("client_max_window_bits", "15"),
])
POLICY = st.builds(DeflatePolicy, server_max_window_bits=st.integers(9, 15),
                   client_max_window_bits=st.integers(9, 15),
                   server_no_context_takeover=st.booleans(),
                   client_no_context_takeover=st.booleans())


@given(params=st.lists(OFFER_PARAM, max_size=4, unique_by=lambda p: p[0]), policy=POLICY)
@settings(max_examples=300, deadline=None)
def test_answers_hold_only_what_the_offer_allows(params: list[tuple[str, str | None]],
                                                 policy: DeflatePolicy) -> None:
    offer = "; ".join([PMD] + [name if value is None else f"{name}={value}"
                               for name, value in params])
    agreed = negotiate(offer, policy)
    assert agreed is not None
    offered = dict(params)
    ((name, answer),) = parse_extensions(agreed.response)
    assert name == PMD
    answered = dict(answer)
    # §7.1.2.2: "MUST NOT include" client_max_window_bits unless offered; §7.1.2.1 the same
    # in practice, and never more than the offer.
    for key in ("server_max_window_bits", "client_max_window_bits"):
        if key not in offered:
            assert key not in answered
        elif key in answered:
            assert answered[key] is not None
            assert offered[key] is None or int(answered[key]) <= int(offered[key])  # type: ignore[arg-type]
    # Asked-for server_no_context_takeover is always agreed (accepting the offer agrees).
    if "server_no_context_takeover" in offered:
        assert agreed.server_no_context_takeover
    assert agreed.client_no_context_takeover == (
        "client_no_context_takeover" in offered or policy.client_no_context_takeover)
    assert agreed.server_max_window_bits <= policy.server_max_window_bits
    # The real client accepts our answer and agrees on the same parameters (websockets'
    # client cannot offer client_max_window_bits=8: its zlib could not compress with it).
    if offered.get("client_max_window_bits") == "8":
        return
    client = _client_from_offer(params, agreed.response)
    assert client.remote_no_context_takeover == agreed.server_no_context_takeover
    assert client.local_no_context_takeover == agreed.client_no_context_takeover
    assert client.remote_max_window_bits >= agreed.server_max_window_bits
    assert client.local_max_window_bits <= agreed.client_max_window_bits


def _client_from_offer(params: list[tuple[str, str | None]], response: str) -> PerMessageDeflate:
    """websockets' client side of the handshake: its factory for our offer, fed our answer."""
    kwargs: dict[str, object] = {}
    for name, value in params:
        if name.endswith("no_context_takeover"):
            kwargs[name] = True
        elif name == "client_max_window_bits":
            kwargs[name] = True if value is None else int(value)
        else:
            kwargs[name] = int(value)  # type: ignore[arg-type]
    factory = ClientPerMessageDeflateFactory(**kwargs)  # type: ignore[arg-type]
    offer = build_extension([(factory.name, factory.get_request_params())])
    assert negotiate(offer, DeflatePolicy(server_max_window_bits=15)) is not None
    ((_, answer),) = parse_extension(response)
    return factory.process_response_params(answer, [])


# --- Bombs and bad data ---------------------------------------------------------------

def _zeros_bomb(inflated: int) -> bytes:
    compressor = new_compressor(15, 9, 9)
    chunk = bytes(1 << 20)
    out = [compressor.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(out) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]


def test_bomb_fails_with_1009_before_its_output_exists() -> None:
    bomb = _zeros_bomb(1 << 27)  # 128 MiB of zeros in about 128 KiB
    assert len(bomb) < 200 << 10
    small = bomb[:100 << 10]  # its first 100 KiB: about 100 MiB inflated
    inflater = Inflater(max_size=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBig) as caught:
            inflater.feed(small, final=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == 1009
    assert peak < 3 << 20  # the limit plus zlib's slack, not 100 MiB


def test_bomb_in_small_pieces_fails_as_soon_as_the_limit_passes() -> None:
    bomb = _zeros_bomb(64 << 20)
    inflater = Inflater(max_size=1 << 20)
    total = 0
    with pytest.raises(MessageTooBig):
        for i in range(0, len(bomb), 100):
            out = inflater.feed(bomb[i:i + 100])
            assert len(out) <= 1 << 20
            total += len(out)
    assert total <= 1 << 20


def test_limit_is_on_the_inflated_size_exactly() -> None:
    message = random.Random(7).randbytes(1000) * 10  # 10,000 bytes, compresses well
    payload = Deflater().compress(message)
    assert len(payload) < 2000
    assert Inflater(max_size=10_000).feed(payload, final=True) == message
    with pytest.raises(MessageTooBig):
        Inflater(max_size=9_999).feed(payload, final=True)
    # The limit is per message: many messages of the limit each are fine.
    inflater = Inflater(max_size=10_000, no_context_takeover=False)
    deflater = Deflater()
    for _ in range(5):
        assert inflater.feed(deflater.compress(message), final=True) == message


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff",  # BTYPE 11 is reserved
    b"\x07",  # BFINAL + BTYPE 11
    bytes.fromhex("0005000000") + b"Hello",  # stored block whose NLEN is not ~LEN
    bytes.fromhex("f248cdc9c90700")[:3] + b"\xff\xff\xff\xff\xff",
    bytes.fromhex("f200110000"),  # a back reference with nothing to refer to
])
def test_data_that_does_not_inflate_is_1007(garbage: bytes) -> None:
    with pytest.raises(InvalidPayload) as caught:
        Inflater().feed(garbage, final=True)
    assert caught.value.code == 1007


# --- Round trips through zlib's own objects, in arbitrary chops -------------------------

MESSAGES = st.lists(st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(lambda text: text.encode("utf-8")),
    st.sampled_from([b'{"type":"message","user":"alice","text":"hello"}', b"bob: hi there"]),
), min_size=1, max_size=12)


def _chop(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _feed_chopped(inflater: Inflater, payload: bytes, cuts: list[int]) -> bytes:
    pieces = _chop(payload, cuts)
    out = [inflater.feed(piece) for piece in pieces[:-1]]
    out.append(inflater.feed(pieces[-1], final=True))
    return b"".join(out)


@given(messages=MESSAGES, bits=st.integers(9, 15), mem_level=st.integers(1, 9),
       context=st.booleans(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
@SLOW
def test_our_compressor_inflates_with_zlibs_own_inflater(
        messages: list[bytes], bits: int, mem_level: int, context: bool,
        cuts: list[int]) -> None:
    deflater = Deflater(bits, mem_level, context_takeover=context)
    zlib_kept = zlib.decompressobj(-bits)  # a peer with context takeover, our window
    ours = Inflater(bits, no_context_takeover=not context)
    for message in messages:
        payload = deflater.compress(message)
        assert not payload.endswith(EMPTY_BLOCK_TAIL) or message == b""
        assert zlib_kept.decompress(payload + EMPTY_BLOCK_TAIL) == message
        if not context:  # stands alone: a fresh inflater does it too
            assert zlib.decompressobj(-bits).decompress(payload + EMPTY_BLOCK_TAIL) == message
        assert _feed_chopped(ours, payload, cuts) == message


@given(messages=MESSAGES, bits=st.integers(9, 15), context=st.booleans(),
       flushes=st.lists(st.sampled_from([zlib.Z_NO_FLUSH, zlib.Z_SYNC_FLUSH,
                                         zlib.Z_FULL_FLUSH]), max_size=12),
       cuts=st.lists(st.integers(0, 10_000), max_size=6))
@SLOW
def test_zlibs_compressor_through_our_inflater(
        messages: list[bytes], bits: int, context: bool, flushes: list[int],
        cuts: list[int]) -> None:
    """Any zlib-made message, even with extra flushes inside it, chopped anywhere."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    ours = Inflater(bits, no_context_takeover=not context)
    for i, message in enumerate(messages):
        if not context:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
        half = len(message) // 2
        data = compressor.compress(message[:half])
        if flushes:
            data += compressor.flush(flushes[i % len(flushes)])
        data += compressor.compress(message[half:]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(EMPTY_BLOCK_TAIL)
        assert _feed_chopped(ours, data[:-4], cuts) == message


@given(before=MESSAGES, messages=MESSAGES, bits=st.integers(9, 15))
@SLOW
def test_compress_once_output_inflates_whatever_the_peers_history(
        before: list[bytes], messages: list[bytes], bits: int) -> None:
    """Design (a): one compression for everyone. A peer that kept context from other
    compressed messages inflates it, and so does a peer with a fresh inflater."""
    shared = Deflater(bits, context_takeover=False)
    for message in before:
        shared.compress(message)  # the shared compressor has served others before
    keeper = Inflater(15, no_context_takeover=False)
    own = Deflater(15, context_takeover=True)  # this peer's own history, with context
    for message in before:
        assert keeper.feed(own.compress(message), final=True) == message
    for message in messages:
        payload = shared.compress(message)
        assert keeper.feed(payload, final=True) == message
        assert Inflater(bits).feed(payload, final=True) == message


@given(messages=MESSAGES, joins=st.lists(st.integers(0, 11), min_size=1, max_size=5),
       bits=st.integers(9, 15))
@SLOW
def test_room_stream_with_members_joining(messages: list[bytes], joins: list[int],
                                          bits: int) -> None:
    """Design (c): one stream for the whole room; a member joining restarts it, and then
    inflates everything from its first message on, as do the members already there."""
    room = Deflater(bits, context_takeover=True)
    members: list[Inflater] = []
    for index, message in enumerate(messages):
        for _ in range(joins.count(index)):
            room.restart()
            members.append(Inflater(bits, no_context_takeover=False))
        payload = room.compress(message)
        for member in members:
            assert member.feed(payload, final=True) == message


def test_room_stream_without_restart_breaks_a_newcomer() -> None:
    """The restart is what makes joining work (this proves the test above can fail)."""
    room = Deflater()
    room.compress(b"hello everybody, hello room")
    newcomer = Inflater(no_context_takeover=False)
    with pytest.raises(InvalidPayload):
        newcomer.feed(room.compress(b"hello everybody, hello room"), final=True)


def test_release_starts_afresh_and_peers_follow() -> None:
    deflater = Deflater()
    peer = Inflater(no_context_takeover=False)
    assert peer.feed(deflater.compress(b"Hello"), final=True) == b"Hello"
    deflater.release()
    assert deflater.compress(b"Hello") == HELLO_ONE_BLOCK
    assert peer.feed(HELLO_ONE_BLOCK, final=True) == b"Hello"


def test_compress_message_with_a_bare_zlib_object() -> None:
    compressor = new_compressor(15)
    assert compress_message(compressor, b"Hello") == HELLO_ONE_BLOCK
    assert compress_message(compressor, b"Hello") == HELLO_SECOND_SHARED_WINDOW


def test_idle_inflater_without_context_takeover_holds_no_zlib_object() -> None:
    inflater = Agreed(False, True, 15, 15, PMD).inflater()
    assert inflater._zlib is None
    inflater.feed(HELLO_FRAGMENTS[0])
    assert inflater._zlib is not None  # only while a message is in progress
    inflater.feed(HELLO_FRAGMENTS[1], final=True)
    assert inflater._zlib is None
    assert Deflater()._zlib is None  # created on the first message


def test_can_receive() -> None:
    agreed = negotiate(f"{PMD}; server_max_window_bits=10")
    no_context = negotiate(f"{PMD}; server_no_context_takeover")
    assert agreed is not None and no_context is not None
    assert agreed.can_receive(Deflater(10)) and not agreed.can_receive(Deflater(11))
    assert not no_context.can_receive(Deflater(15, context_takeover=True))
    assert no_context.can_receive(Deflater(15, context_takeover=False))


# --- websockets' own permessage-deflate as the real peer -------------------------------

def _text_frames(payload: bytes, first: bool = True, fin: bool = True) -> Frame:
    return Frame(Opcode.TEXT if first else Opcode.CONT, payload, fin=fin, rsv1=first)


@pytest.mark.parametrize("offer, context", [
    (f"{PMD}; client_max_window_bits", True),
    (f"{PMD}; server_no_context_takeover; client_max_window_bits", False),
    (f"{PMD}; server_max_window_bits=10; client_max_window_bits=9", True),
])
def test_websockets_client_inflates_what_we_send(offer: str, context: bool) -> None:
    agreed = negotiate(offer, PLAIN)
    assert agreed is not None
    ((_, params),) = parse_extension(offer)
    client = _client_from_offer(params, agreed.response)
    deflater = Deflater.for_policy(PLAIN, context_takeover=not agreed.server_no_context_takeover,
                                   window_bits=agreed.server_max_window_bits)
    assert agreed.can_receive(deflater)
    lines = [f'{{"user":"u{i % 7}","text":"message number {i} to the room"}}'.encode()
             for i in range(200)]
    for line in lines:
        payload = deflater.compress(line)
        assert client.decode(_text_frames(payload)).data == line
    sizes = [len(deflater.compress(line)) for line in lines[:20]]
    assert (sum(sizes) < 0.5 * sum(map(len, lines[:20]))) == context


def test_websockets_clients_follow_the_room_stream_and_compress_once() -> None:
    """Several real clients: room stream with joins, and compress-once bytes."""
    offer = f"{PMD}; client_max_window_bits"
    agreed = negotiate(offer)
    assert agreed is not None
    ((_, params),) = parse_extension(offer)
    room, once = Deflater(), Deflater(context_takeover=False)
    room_members: list[PerMessageDeflate] = []
    others = [_client_from_offer(params, agreed.response) for _ in range(3)]
    rng = random.Random(12)
    for i in range(300):
        if i % 60 == 0:
            room.restart()
            room_members.append(_client_from_offer(params, agreed.response))
        line = f"user{rng.randrange(40)}: {' '.join(rng.choices(WORDS, k=8))}".encode()
        payload = room.compress(line)
        for member in room_members:
            assert member.decode(_text_frames(payload)).data == line
        payload = once.compress(line)
        for other in others:
            assert other.decode(_text_frames(payload)).data == line


WORDS = "the a chat room hello is are you there yes no lol brb ok see meeting now".split()


@pytest.mark.parametrize("client_context", [True, False])
@pytest.mark.parametrize("fragment", [0, 7, 100])
def test_we_inflate_what_websockets_client_sends(client_context: bool, fragment: int) -> None:
    offer = f"{PMD}; client_max_window_bits=12" + (
        "" if client_context else "; client_no_context_takeover")
    agreed = negotiate(offer, PLAIN)
    assert agreed is not None
    assert agreed.client_no_context_takeover == (not client_context)
    ((_, params),) = parse_extension(offer)
    client = _client_from_offer(params, agreed.response)
    inflater = agreed.inflater(max_size=1 << 16)
    rng = random.Random(3)
    for i in range(100):
        line = f"user{rng.randrange(40)}: {' '.join(rng.choices(WORDS, k=20))} {i}".encode()
        if not fragment:
            frame = client.encode(_text_frames(line))
            assert frame.rsv1
            assert inflater.feed(frame.data, final=True) == line
            continue
        # websockets compresses each fragment as it goes; RSV1 only on the first (§6.1).
        chunks = [line[j:j + fragment] for j in range(0, len(line), fragment)]
        out = []
        for j, chunk in enumerate(chunks):
            frame = client.encode(_text_frames(chunk, first=j == 0, fin=j == len(chunks) - 1))
            assert frame.rsv1 == (j == 0)
            out.append(inflater.feed(frame.data, final=frame.fin))
        assert b"".join(out) == line


# --- RoomStream: (c) for those who can follow it, (a) for the others --------------------

FOLLOWER = Agreed(False, True, 15, 15, PMD)
NO_CONTEXT = Agreed(True, True, 15, 15, PMD)
SMALL_WINDOW = Agreed(False, True, 10, 15, PMD)
SMALLEST_WINDOW = Agreed(False, True, 9, 15, PMD)


@given(messages=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30),
       events=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 3), st.booleans()),
                       max_size=12),
       keyframe=st.integers(1, 8))
@SLOW
def test_room_stream_members_of_every_kind_inflate_every_message(
        messages: list[bytes], events: list[tuple[int, int, bool]], keyframe: int) -> None:
    """Members join and leave at any point; each inflates, with the window it agreed to
    and one inflater kept for its life, exactly the messages sent while it was there."""
    room = RoomStream(DeflatePolicy(min_size=0), keyframe_interval=keyframe)
    kinds = [FOLLOWER, NO_CONTEXT, SMALL_WINDOW, SMALLEST_WINDOW]
    members: dict[int, Inflater] = {}
    next_id = 0
    for index, message in enumerate(messages):
        for when, kind, leaving in events:
            if when != index:
                continue
            if leaving and members:
                gone = next(iter(members))
                room.leave(gone)
                del members[gone]
            else:
                room.join(next_id, kinds[kind])
                members[next_id] = Inflater(kinds[kind].server_max_window_bits,
                                            no_context_takeover=False)
                next_id += 1
        compressed = room.compress(message)
        assert compressed is not None
        covered: list[object] = []
        for payload, group in compressed.groups():
            for member in group:
                covered.append(member)
                assert members[member].feed(payload, final=True) == message  # type: ignore[index]
        assert sorted(covered) == sorted(members)  # type: ignore[type-var]


def test_room_stream_keyframes_and_groups() -> None:
    room = RoomStream(DeflatePolicy(min_size=0), keyframe_interval=3)
    room.join("a", FOLLOWER)
    room.join("n", NO_CONTEXT)
    first = room.compress(b"Hello")
    assert first is not None and first.stream == HELLO_ONE_BLOCK
    assert room.follows("a") and not room.follows("n")
    room.join("b", FOLLOWER)  # waits for the next keyframe, gets stand-alone bytes meanwhile
    second = room.compress(b"Hello")
    assert second is not None
    assert [(p, sorted(g)) for p, g in second.groups()] == [  # type: ignore[type-var]
        (HELLO_SECOND_SHARED_WINDOW, ["a"]), (HELLO_ONE_BLOCK, ["b", "n"])]
    room.compress(b"Hello")
    fourth = room.compress(b"Hello")  # 3 messages since the keyframe: b follows now
    assert fourth is not None and room.follows("b")
    assert fourth.stream == HELLO_ONE_BLOCK  # the stream restarted
    assert room.compress_direct("a", b"Hello") is None  # followers: uncompressed
    assert room.compress_direct("n", b"Hello") == HELLO_ONE_BLOCK
    assert RoomStream().compress(b"short") is None  # below min_size: uncompressed


def test_room_stream_against_websockets_clients() -> None:
    offers = [f"{PMD}; client_max_window_bits", f"{PMD}; server_no_context_takeover",
              f"{PMD}; server_max_window_bits=10"]
    room = RoomStream(DeflatePolicy(min_size=0), keyframe_interval=5)
    clients: dict[int, PerMessageDeflate] = {}
    rng = random.Random(5)
    for i in range(120):
        if i % 10 == 0:
            offer = offers[(i // 10) % 3]
            agreed = negotiate(offer)
            assert agreed is not None
            ((_, params),) = parse_extension(offer)
            clients[i] = _client_from_offer(params, agreed.response)
            room.join(i, agreed)
        line = f"user{rng.randrange(40)}: {' '.join(rng.choices(WORDS, k=12))}".encode()
        compressed = room.compress(line)
        assert compressed is not None
        for payload, group in compressed.groups():
            for member in group:
                assert clients[member].decode(_text_frames(payload)).data == line  # type: ignore[index]


def far_repeats(size: int, seed: int) -> bytes:
    """`size` bytes that repeat themselves 600 to 9,000 bytes back: compressed with a
    window larger than a peer's, they refer back further than that peer can look."""
    rng = random.Random(seed)
    block = bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz ", k=rng.choice((600, 1500, 9000))))
    return (block * (size // len(block) + 1))[:size]


def inflate_within_window(inflater: zlib._Decompress, data: bytes) -> bytes:
    """Inflate with zlib, 64 bytes of output per call, so that zlib holds the data to its
    window: within one call it copies from its output whatever the distance, and checks
    the window only for what lies before the call ("invalid distance too far back")."""
    out = []
    while data:
        out.append(inflater.decompress(data, 64))
        data = inflater.unconsumed_tail
    return b"".join(out)


WINDOWS = range(9, 16)  # every window zlib can compress with (RFC 7692 §7.1.2.1: 8..15)


def test_room_stream_every_window_9_to_15_two_compressions_at_most() -> None:
    """Members with each window 9..15 (issue 18, item 7): at most two payloads per
    message, the stream's and one stand-alone for all the others, each inflating with
    zlib's own inflater at the member's window, kept for its life and fresh. A payload
    compressed with a window larger than a member's fails there ("invalid distance too
    far back"): the messages repeat themselves further back than 512 bytes."""
    room = RoomStream(DeflatePolicy(min_size=0), keyframe_interval=4)
    agreed = {bits: negotiate(f"{PMD}; server_max_window_bits={bits}") for bits in WINDOWS}
    kept: dict[int, zlib._Decompress] = {}
    for bits in WINDOWS:
        assert agreed[bits] is not None
        room.join(bits, agreed[bits])  # type: ignore[arg-type]
        kept[bits] = zlib.decompressobj(-bits)
    sizes = [60, 200, 3000, 5000, 900, 40_000]
    for index in range(30):
        if index == 12:  # the smallest window leaves: the others' window grows to 10
            room.leave(9)
            del kept[9]
        message = far_repeats(sizes[index % len(sizes)], index)
        compressed = room.compress(message)
        assert compressed is not None
        groups = compressed.groups()
        assert len(groups) <= 2
        covered = sorted(member for _, group in groups for member in group)  # type: ignore[type-var]
        assert covered == sorted(kept)
        for payload, group in groups:
            for bits in group:
                assert isinstance(bits, int)
                data = payload + EMPTY_BLOCK_TAIL
                assert inflate_within_window(kept[bits], data) == message
                if not room.follows(bits):  # stand-alone: any inflater of that window
                    fresh = zlib.decompressobj(-min(kept))
                    assert inflate_within_window(fresh, data) == message
        assert room.follows(15)  # the largest window follows the stream from the first
        if index:
            assert [len(group) for _, group in groups] == [1, len(kept) - 1]
    assert room.compress_direct(10, far_repeats(3000, 99)) is not None
    assert room.compress_direct(15, far_repeats(3000, 99)) is None  # follows the stream


def test_room_stream_against_websockets_clients_of_every_window() -> None:
    """The `websockets` client, offering server_max_window_bits 9..15 (and one offering
    none), takes the answer and inflates every message. (It inflates a message in one zlib
    call, which does not hold the data to the window: the zlib test above does that.)"""
    room = RoomStream(DeflatePolicy(min_size=0), keyframe_interval=3)
    clients: dict[int, PerMessageDeflate] = {}
    for bits in [*WINDOWS, 0]:
        offer = f"{PMD}; server_max_window_bits={bits}" if bits else f"{PMD}"
        agreed = negotiate(offer)
        assert agreed is not None and agreed.server_max_window_bits == (bits or 15)
        ((_, params),) = parse_extension(offer)
        clients[bits] = _client_from_offer(params, agreed.response)
        room.join(bits, agreed)
    for index in range(24):
        message = far_repeats((200, 4000, 20_000)[index % 3], index)
        compressed = room.compress(message)
        assert compressed is not None
        assert len(compressed.groups()) <= 2
        for payload, group in compressed.groups():
            for member in group:
                assert clients[member].decode(_text_frames(payload)).data == message  # type: ignore[index]


# --- Receiver: compressed messages in frames, chopped anyhow (RFC 7692 §6, §7.2.2) ----------

def _client_frame(opcode: int, payload: bytes, fin: bool, rsv1: bool, mask: bytes) -> bytes:
    """A masked client frame built by hand (RFC 6455 §5.2), independent of frames.py."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(messages=st.lists(st.tuples(st.binary(max_size=3000), st.booleans(), st.booleans(),
                                   st.integers(1, 5)), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 100_000), max_size=12), ping_every=st.integers(1, 4))
@SLOW
def test_receiver_inflates_fragmented_messages_however_chopped(
        messages: list[tuple[bytes, bool, bool, int]], cuts: list[int], ping_every: int
        ) -> None:
    """zlib-compressed messages (and uncompressed ones) cut into 1-5 frames, RSV1 on the
    first only, pings between fragments, the whole stream fed in arbitrary pieces: the
    Receiver gives back exactly the messages, and then a fresh stream byte by byte too."""
    from websocket.protocol.messages import Message, Ping, Receiver
    wire = b""
    expected: list[object] = []
    for i, (data, compress, text, parts) in enumerate(messages):
        body = data.hex().encode() if text else data  # text: valid UTF-8
        payload = body
        if compress:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)  # a fresh one: §7.1.1.2
            payload = (compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        step = max(1, -(-len(payload) // parts))
        chunks = [payload[j:j + step] for j in range(0, len(payload), step)] or [b""]
        for j, chunk in enumerate(chunks):
            wire += _client_frame(0 if j else (1 if text else 2), chunk,
                                  fin=j == len(chunks) - 1, rsv1=compress and j == 0,
                                  mask=bytes([i, j, 7, 9]))
            if (i + j) % ping_every == 0 and j < len(chunks) - 1:
                wire += _client_frame(9, b"p", True, False, b"\x01\x02\x03\x04")
                expected.append(Ping(b"p"))
        expected.append(Message(body.decode() if text else body))
    for pieces in (_chop(wire, cuts), [wire[k:k + 1] for k in range(len(wire))]):
        receiver = Receiver(deflate=negotiate("permessage-deflate"))
        buf = bytearray()
        events: list[object] = []
        for piece in pieces:
            buf += piece
            events += receiver.receive(buf)
        assert events == expected
        assert receiver.inflater is None  # none held between messages
