"""websocket/protocol/proxy.py: the client address from Forwarded (RFC 7239) and X-Forwarded-For."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from websocket.protocol.proxy import Node, client_address, forwarded_for, x_forwarded_for

# RFC 7239 §4's examples, then §7.1's and §7.4's: the last element's for= is the answer.
RFC_EXAMPLES = [
    ('for="_gazonk"', Node("_gazonk")),
    ('For="[2001:db8:cafe::17]:4711"', Node("2001:db8:cafe::17", 4711)),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", Node("192.0.2.60")),
    ("for=192.0.2.43, for=198.51.100.17", Node("198.51.100.17")),
    ("for=192.0.2.43,for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com",
     Node("198.51.100.17")),
    ('for=192.0.2.43, for="[2001:db8:cafe::17]"', Node("2001:db8:cafe::17")),
    ("for=unknown", Node("unknown")),
    ("for=_hidden, for=_SEVKISEK", Node("_SEVKISEK")),
]


@pytest.mark.parametrize(("value", "node"), RFC_EXAMPLES)
def test_rfc7239_examples(value: str, node: Node) -> None:
    assert forwarded_for(value) == node


@pytest.mark.parametrize(("value", "node"), [
    ('for="192.0.2.43:4711"', Node("192.0.2.43", 4711)),  # IPv4 with a port must be quoted
    ('for="192.0.2.43"', Node("192.0.2.43")),  # quoting a token is allowed (§5.2)
    ('for="[2001:DB8:0:0::17]"', Node("2001:db8::17")),  # normal form
    ('for="[::ffff:192.0.2.1]:80"', Node("::ffff:c000:201", 80)),
    ('for="_hidden:_port"', Node("_hidden")),  # obfuscated port: dropped
    ('for="[2001:db8::1]:_port"', Node("2001:db8::1")),
    ('for="unknown:4711"', Node("unknown", 4711)),
    ("FOR=192.0.2.1", Node("192.0.2.1")),  # parameter names are case-insensitive
    ("for=192.0.2.1 ; proto=https", Node("192.0.2.1")),  # spaces around ";" tolerated
    ("proto=https;for=192.0.2.1;by=_proxy", Node("192.0.2.1")),  # any order
    ('for="\\1\\9\\2.0.2.1"', Node("192.0.2.1")),  # quoted pairs unescaped first (§5.2)
    ('for="a,b;c", for=192.0.2.7', Node("192.0.2.7")),  # a comma in quotes separates nothing
    ('by="x\\"y,z", for=192.0.2.8', Node("192.0.2.8")),  # nor does an escaped quote end one
    ('for=192.0.2.7;by="a,b"', Node("192.0.2.7")),  # ... in the last element too
    ("for=192.0.2.9, ", Node("192.0.2.9")),  # empty list elements are ignored
    (",,for=192.0.2.9,,", Node("192.0.2.9")),
    ("for=garbage=, for=192.0.2.10", Node("192.0.2.10")),  # earlier elements: not our business
    ("for=192.0.2.11;;", Node("192.0.2.11")),  # empty pairs are allowed by §4's grammar
])
def test_forwarded_forms(value: str, node: Node) -> None:
    assert forwarded_for(value) == node


@pytest.mark.parametrize("value", [
    "", " ", ",", "for=", "for", "=192.0.2.1", "for 192.0.2.1", "for:192.0.2.1",
    "proto=http",  # the nearest proxy said nothing about the client
    "for=192.0.2.1, proto=https",  # ... even if an earlier element did
    "for=2001:db8::1",  # IPv6 must be quoted and bracketed
    'for="2001:db8::1"', 'for="[2001:db8::1"', 'for="2001:db8::1]"', 'for="[192.0.2.1]"',
    'for="[2001:db8::1]:"', 'for="[2001:db8::1]:99999"', 'for="192.0.2.1:65536"',
    'for="192.0.2.1:123456"', 'for="192.0.2.1:"', 'for="192.0.2.1:-1"', 'for="192.0.2.1:a"',
    "for=192.0.2.256", "for=192.0.2", "for=01.2.3.4", "for=1.2.3.4.5", "for=example.com",
    "for=localhost", "for=_", "for=unknownx", 'for="_h i"', 'for="[fe80::1%eth0]"',
    'for="[fe80::1%25eth0]"', "for=\u0661.2.3.4",  # Arabic-Indic digit one
    'for="192.0.2.1', 'for=192.0.2.1, for="', 'for="\\',  # quotes left open
    'by="open, for=192.0.2.1',  # a valid tail after an open quote is still inside it
    'for="unknown:65536"', 'for="_hidden:99999"',
    "for=192.0.2.1;for=192.0.2.2",  # a parameter twice in one element (§4: MUST NOT)
    "for=192.0.2.1;proto", "for=192.0.2.1;=x", 'for=192.0.2.1"x"', "for=1.2.3.4\x00",
    "for=\xff", "for=1.2.3.4\r\nX-Injected: 1", "for=\t", '"for"=1.2.3.4',
])
def test_malformed_forwarded_is_none(value: str) -> None:
    assert forwarded_for(value) is None


@pytest.mark.parametrize(("value", "node"), [
    ("203.0.113.195", Node("203.0.113.195")),
    ("203.0.113.195, 70.41.3.18, 150.172.238.178", Node("150.172.238.178")),
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", Node("2001:db8:85a3:8d3:1319:8a2e:370:7348")),
    ("192.0.2.43, 2001:db8:cafe::17", Node("2001:db8:cafe::17")),
    ("192.0.2.1:4711", Node("192.0.2.1", 4711)),
    ("[2001:db8::1]", Node("2001:db8::1")),
    ("[2001:db8::1]:4711", Node("2001:db8::1", 4711)),
    ("garbage, 192.0.2.5", Node("192.0.2.5")),
    (" 192.0.2.6 ,", Node("192.0.2.6")),
])
def test_x_forwarded_for(value: str, node: Node) -> None:
    assert x_forwarded_for(value) == node


@pytest.mark.parametrize("value", [
    "", ",", "unknown", "_hidden", "192.0.2.1, garbage", "192.0.2.1:", "192.0.2.1:99999",
    "[192.0.2.1]", "[2001:db8::1", "2001:db8::1]:80", "example.com", "192.0.2.1 192.0.2.2",
    "fe80::1%eth0", '"192.0.2.1"', "for=192.0.2.1", "\u0661.2.3.4", "1.2.3.4\x00",
])
def test_malformed_x_forwarded_for_is_none(value: str) -> None:
    assert x_forwarded_for(value) is None


def test_client_address_prefers_forwarded() -> None:
    headers = [("Host", "chat"), ("X-Forwarded-For", "192.0.2.1"),
               ("Forwarded", "for=198.51.100.1")]
    assert client_address(headers) == Node("198.51.100.1")


def test_a_spoiled_forwarded_does_not_let_x_forwarded_for_through() -> None:
    # The client spoils Forwarded so that its own X-Forwarded-For would be read: it is not.
    headers = [("forwarded", 'for="'), ("x-forwarded-for", "6.6.6.6")]
    assert client_address(headers) is None


def test_client_address_falls_back_to_x_forwarded_for() -> None:
    headers = [("x-forwarded-for", "6.6.6.6"), ("X-FORWARDED-FOR", "192.0.2.3")]
    assert client_address(headers) == Node("192.0.2.3")  # repeated fields form one list


def test_repeated_forwarded_fields_form_one_list() -> None:
    headers = [("Forwarded", "for=6.6.6.6"), ("Forwarded", "for=192.0.2.4;proto=https")]
    assert client_address(headers) == Node("192.0.2.4")


@pytest.mark.parametrize("value", ["for=unknown", 'for="_hidden"', "proto=https"])
def test_client_address_wants_an_ip(value: str) -> None:
    assert client_address([("Forwarded", value)]) is None
    node = forwarded_for(value)
    assert node is None or not node.is_ip


def test_no_headers() -> None:
    assert client_address([]) is None
    assert client_address([("Host", "x"), ("X-Real-IP", "192.0.2.1")]) is None


def test_node_str() -> None:
    assert str(Node("192.0.2.1")) == "192.0.2.1"
    assert str(Node("192.0.2.1", 80)) == "192.0.2.1:80"
    assert str(Node("2001:db8::1", 80)) == "[2001:db8::1]:80"
    assert Node("192.0.2.1").is_ip and Node("::1").is_ip
    assert not Node("unknown").is_ip and not Node("_x").is_ip


# What the nearest proxy appends, as our nginx site and nginx's $proxy_add_x_forwarded_for do.
PROXY_ELEMENTS = [
    ("for=192.0.2.200", Node("192.0.2.200")),
    ('for="[2001:db8::200]"', Node("2001:db8::200")),
    ('for="[2001:db8::200]:4711";proto=https', Node("2001:db8::200", 4711)),
]
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=60)
SPOOFY_PIECES = ['"', "\\", ",", ";", "=", "for", "[", "]", ":", " ", "6.6.6.6", '"[::6]"', "_x",
                 "unknown"]
SPOOFY = st.lists(st.sampled_from(SPOOFY_PIECES), max_size=20).map("".join)


@given(prefix=st.one_of(HEADER_TEXT, SPOOFY), which=st.sampled_from(PROXY_ELEMENTS))
def test_whatever_the_client_writes_first_it_cannot_choose_the_answer(
        prefix: str, which: tuple[str, Node]) -> None:
    element, node = which
    # The proxy appends after a comma, or adds its own field (which the server joins).
    assert forwarded_for(f"{prefix}, {element}") in (node, None)
    assert client_address([("Forwarded", prefix), ("Forwarded", element)]) in (node, None)


@given(prefix=st.one_of(HEADER_TEXT, SPOOFY))
def test_with_a_well_formed_prefix_the_proxy_element_is_found(prefix: str) -> None:
    if forwarded_for(prefix + ", for=192.0.2.1") is None:
        return  # the prefix left a quote open: malformed, and None is the answer
    for element, node in PROXY_ELEMENTS:
        assert forwarded_for(f"{prefix}, {element}") == node


@given(prefix=HEADER_TEXT)
def test_x_forwarded_for_answer_is_the_proxys_entry(prefix: str) -> None:
    assert x_forwarded_for(f"{prefix}, 192.0.2.77") == Node("192.0.2.77")


@given(value=st.text(max_size=200))
def test_never_raises(value: str) -> None:
    for result in (forwarded_for(value), x_forwarded_for(value),
                   client_address([("Forwarded", value)]),
                   client_address([("X-Forwarded-For", value)])):
        assert result is None or isinstance(result, Node)
