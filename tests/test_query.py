"""The one query parser (issue 18, point 5): a defined answer for any query, as bytes.

The decisions are websocket/protocol/query.py's docstring; each has a case here. Any bytes give
pairs of text and never an exception (hypothesis), whatever the number of fields; on ASCII
queries the answer is Python's own `parse_qsl` (code we did not write), and form-encoding
any pairs of text parses back to them.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from conftest import ServerProcess
from hypothesis import given
from hypothesis import strategies as st
from wsclient import Client

from websocket.protocol.handshake import MAX_REQUEST_SIZE
from websocket.protocol.query import first, first_values, parse_query, query_of

Start = Callable[..., ServerProcess]


@pytest.mark.parametrize("raw, pairs", [
    (b"", ()),
    (b"handle=ann", (("handle", "ann"),)),
    (b"a=1&b=2", (("a", "1"), ("b", "2"))),
    (b"a=1;b=2", (("a", "1;b=2"),)),  # "&" only
    (b"a=1&&b=2&", (("a", "1"), ("b", "2"))),  # empty fields skipped
    (b"&&&", ()),
    (b"flag", (("flag", ""),)),  # no "=": the empty value
    (b"=x", (("", "x"),)),  # an empty name is kept
    (b"=", (("", ""),)),
    (b"a==b", (("a", "=b"),)),  # the first "=" splits
    (b"a=1&a=2", (("a", "1"), ("a", "2"))),  # repeated names, in order
    (b"who=ann+bo", (("who", "ann bo"),)),  # "+" is a space ...
    (b"who+am=i", (("who am", "i"),)),  # ... in names too
    (b"sum=1%2B1", (("sum", "1+1"),)),  # "%2B" is a "+"
    (b"h=b%C3%A9a", (("h", "b\u00e9a"),)),  # escapes are UTF-8
    (b"h=%e2%82%ac", (("h", "\u20ac"),)),  # in either case
    (b"p=100%", (("p", "100%"),)),  # a "%" without two hex digits stays
    (b"p=%zz&q=%4", (("p", "%zz"), ("q", "%4"))),
    (b"p=%%41", (("p", "%A"),)),
    (b"h=%FF", (("h", "\ufffd"),)),  # not UTF-8: U+FFFD
    (b"h=\xff\xfe", (("h", "\ufffd\ufffd"),)),  # raw bytes that are not UTF-8
    (b"h=\xc3\xa9", (("h", "\u00e9"),)),  # raw UTF-8 (not a valid URI, read anyway)
    (b"h=%C3", (("h", "\ufffd"),)),  # a sequence cut short
    (b"h=%00%0A", (("h", "\x00\n"),)),  # control characters are data
])
def test_each_decision(raw: bytes, pairs: tuple[tuple[str, str], ...]) -> None:
    assert parse_query(raw) == pairs


def test_any_number_of_fields_up_to_the_request_limit() -> None:
    raw = b"&".join(b"f%d=%d" % (n, n) for n in range(1500))
    assert len(raw) < MAX_REQUEST_SIZE
    pairs = parse_query(raw)
    assert len(pairs) == 1500 and pairs[-1] == ("f1499", "1499")
    assert len(parse_query(b"&" * MAX_REQUEST_SIZE)) == 0
    assert len(parse_query(b"a&" * (MAX_REQUEST_SIZE // 2))) == MAX_REQUEST_SIZE // 2


def test_a_target_as_the_request_parser_holds_it() -> None:
    # handshake.py decodes the head as ISO-8859-1: a raw byte 0xE9 is the character U+00E9.
    assert query_of("/room?handle=b\u00c3\u00a9a&after=x.1") == (("handle", "b\u00e9a"),
                                                                 ("after", "x.1"))
    assert query_of("/room") == ()
    assert query_of("/room?") == ()
    assert query_of("/room?a=1#frag") == (("a", "1"),)  # RFC 3986 §3.5
    assert query_of("/room?a=1?b=2") == (("a", "1?b=2"),)  # only the first "?" starts it
    assert query_of("/r?h=\u20ac") == (("h", "\u20ac"),)  # built by hand: UTF-8
    pairs = query_of("/r?a=1&b=2&a=3")
    assert first(pairs, "a") == "1" and first(pairs, "c") is None
    assert first_values(pairs) == {"a": "1", "b": "2"}


@given(st.binary(max_size=2000))
def test_any_bytes_give_pairs_of_text(raw: bytes) -> None:
    pairs = parse_query(raw)
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in pairs)
    assert len(pairs) <= raw.count(b"&") + 1


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300))
def test_ascii_queries_read_as_python_parse_qsl_does(query: str) -> None:
    expected = tuple(parse_qsl(query, keep_blank_values=True, errors="replace"))
    assert parse_query(query.encode("ascii")) == expected


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=30))
def test_form_encoded_pairs_parse_back(pairs: list[tuple[str, str]]) -> None:
    encoded = urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    if any("\ud800" <= c <= "\udfff" for pair in pairs for text in pair for c in text):
        return  # lone surrogates are not text a browser can send
    assert parse_query(encoded.encode("ascii")) == tuple(pairs)


# -- end to end: a query of many fields disturbs nobody ----------------------------------------

MANY = "&".join(f"f{n}=1" for n in range(25))  # main's parse_qs(max_num_fields=20) raised


def tagged(port: int, path: str) -> Client:
    """A chat page's connection (raw), past its 101."""
    client = Client(port)
    client.send(client.upgrade_request(
        path, extra="Sec-WebSocket-Protocol: chat.history.v1\r\n")[0])
    status, headers, _ = client.http_response()
    assert status == 101 and headers["sec-websocket-protocol"] == "chat.history.v1"
    return client


def next_json(client: Client) -> dict[str, Any]:
    message = client.recv_message()
    assert isinstance(message, str)
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


def joined_names(client: Client) -> list[str]:
    """The names in the next presence delta."""
    delta = next_json(client)["presence_delta"]
    return [entry["name"] for entry in delta["joined"]]


def test_many_fields_break_no_presence_update(chat_server: ServerProcess) -> None:
    """A client with 25 fields (and its handle 26th) joins one room while a page joins
    another, in the same pass as far as the sockets allow: both rooms hear of both."""
    port = chat_server.port
    with tagged(port, "/q?handle=qa") as qa, tagged(port, "/other?handle=oa") as oa:
        for client in (qa, oa):
            next_json(client), next_json(client)  # its list, and its own join
        many, page = Client(port), Client(port)
        many.send(many.upgrade_request(f"/q?{MANY}&handle=many")[0])
        page.send(page.upgrade_request(
            "/other?handle=ob", extra="Sec-WebSocket-Protocol: chat.history.v1\r\n")[0])
        with many, page:
            assert many.http_response()[0] == 101 and page.http_response()[0] == 101
            assert joined_names(qa) == ["many"]
            assert joined_names(oa) == ["ob"]
            page.close()
            delta = next_json(oa)["presence_delta"]
            assert delta["joined"] == [] and len(delta["left"]) == 1
    assert "Traceback" not in chat_server.log
    assert "ERROR" not in chat_server.log


def test_a_page_resuming_with_many_fields_gets_its_replay(start_server: Start) -> None:
    server = start_server("--history", "5")
    with Client(server.port).handshake("/r") as plain, tagged(server.port, "/r") as page:
        next_json(page), next_json(page)
        for n in range(4):
            plain.send_text(f"m{n}")
            assert plain.recv_message() == f"m{n}"
        ids = []
        for n in range(4):
            value = next_json(page)
            assert value["text"] == f"m{n}"
            ids.append(value["id"])
        with tagged(server.port, f"/r?{MANY}&after={ids[1]}&handle=back") as back:
            assert [next_json(back) for _ in range(2)] == [
                {"id": ids[2], "text": "m2"}, {"id": ids[3], "text": "m3"}]
            assert [entry["name"] for entry in next_json(back)["presence"]] == [
                "user 1", "user 2", "back"]
    assert "Traceback" not in server.log
    assert "1011" not in server.log
