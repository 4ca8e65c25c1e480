"""The client's address as a reverse proxy reports it: `Forwarded` (RFC 7239), `X-Forwarded-For`.

Used only with `--trust-proxy`: both headers are whatever the client wrote, except for what
the proxy in front of us adds, so the only part worth believing is the part the *nearest*
proxy adds: the last element of `Forwarded`, the last address of `X-Forwarded-For`.

    node = proxy.client_address(request.headers)
    if node is None: ...  # absent, malformed, "unknown" or obfuscated: use the socket's

The rules, and why:
- `Forwarded` wins when present, and then `X-Forwarded-For` is not looked at: otherwise a
  client could spoil a `Forwarded` on purpose to have its own `X-Forwarded-For` read. So the
  proxy must set (or remove) both; the nginx site in docs/deploy.md sets both.
- Elements are found honouring quoted strings (a comma inside quotes separates nothing); a
  quote left open makes the whole header malformed. Whatever a client writes before the
  proxy's own element, the answer is that element or None, never an address of the client's
  choosing (tests/test_proxy.py checks this with generated prefixes).
- Only the last element is parsed strictly (RFC 7239 §4 and §6); earlier ones were written
  by parties we do not trust and may be anything.

Sans-I/O: strings in, a `Node` or None out. Nothing here raises on bad input; nothing logs.
Not here: `by=`, `host=`, `proto=` (a chat has no use for them), `X-Real-IP`.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 9110 §5.6.2 token, §5.6.4 quoted-string (RFC 7230 §3.2.6 in RFC 7239's day).
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED_STRING = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 7239 §4: forwarded-pair = token "=" value; value = token / quoted-string
FORWARDED_PAIR = re.compile(rf"({TOKEN})=({TOKEN}|{QUOTED_STRING})")
QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# RFC 7239 §6: obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-"), obfport likewise;
# port = 1*5DIGIT.
OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
PORT = re.compile(r"[0-9]{1,5}")
IPV4_WITH_PORT = re.compile(r"([0-9.]+):([0-9]{1,5})")
BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?")
MAX_PORT = 65535


@dataclass(frozen=True)
class Node:
    """RFC 7239 §6 node: who the nearest proxy says the client is.

    `host` is an IP address in its normal form (IPv6 without brackets), "unknown" (§6.2) or
    an obfuscated identifier such as "_hidden" (§6.3). `port` is None when not given, or
    when obfuscated.
    """

    host: str
    port: int | None = None

    @property
    def is_ip(self) -> bool:
        return not (self.host == "unknown" or self.host.startswith("_"))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def client_address(headers: Iterable[tuple[str, str]]) -> Node | None:
    """The client's IP address from the nearest proxy's `Forwarded` or `X-Forwarded-For`.

    Args:
        headers: the request's headers, in order, names in any case; repeated fields count
            as one comma-separated list (RFC 9110 §5.3).

    Returns:
        The node, only if it is an IP address; None when there is no such header, when the
        one that counts is malformed, or when the proxy says "unknown" or gives an
        obfuscated identifier. The caller then uses the socket's peer address.
    """
    forwarded: list[str] = []
    x_forwarded: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "forwarded":
            forwarded.append(value)
        elif lower == "x-forwarded-for":
            x_forwarded.append(value)
    if forwarded:
        node = forwarded_for(", ".join(forwarded))
        return node if node is not None and node.is_ip else None
    if x_forwarded:
        return x_forwarded_for(", ".join(x_forwarded))
    return None


def forwarded_for(value: str) -> Node | None:
    """The `for=` node of the last element of a `Forwarded` value (RFC 7239 §4, §5.2).

    Returns:
        The node (an IP address, "unknown" or obfuscated), or None when the value is
        malformed, the last element has no `for=`, or its node is not RFC 7239 §6 syntax.
    """
    elements = _split_outside_quotes(value, ",")
    if elements is None:
        return None
    last = next((element for element in reversed(elements) if element.strip(" \t")), None)
    if last is None:
        return None  # RFC 9110 §5.6.1: empty list elements are ignored; nothing else here
    pairs = _parse_element(last)
    if pairs is None or "for" not in pairs:
        return None
    return _parse_node(pairs["for"])


def x_forwarded_for(value: str) -> Node | None:
    """The last address of an `X-Forwarded-For` list (the nearest proxy's entry).

    The de facto format: comma-separated addresses, the client's first. Accepted entries:
    `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.

    Returns:
        The node, or None when the last entry is none of those.
    """
    entries = [entry.strip(" \t") for entry in value.split(",")]
    last = next((entry for entry in reversed(entries) if entry), None)
    if last is None:
        return None
    bracketed = BRACKETED.fullmatch(last)
    if bracketed:
        return _ip_node(bracketed.group(1), bracketed.group(2), version=6)
    with_port = IPV4_WITH_PORT.fullmatch(last)
    if with_port:
        return _ip_node(with_port.group(1), with_port.group(2), version=4)
    return _ip_node(last, None, version=None)


def _split_outside_quotes(text: str, separator: str) -> list[str] | None:
    """`text` split at `separator` where it is not inside a quoted string; None if a quote
    is left open. Quoted pairs (a backslash and the next character) are honoured."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        return None
    parts.append(text[start:])
    return parts


def _parse_element(element: str) -> dict[str, str] | None:
    """RFC 7239 §4: forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] ).

    Returns the pairs by lower-case name, values unquoted; None when a pair is malformed or
    a parameter repeats ("Each parameter MUST NOT occur more than once per
    forwarded-element", §4). Spaces around ";" are tolerated (some proxies write them).
    """
    pieces = _split_outside_quotes(element, ";")
    if pieces is None:
        return None
    pairs: dict[str, str] = {}
    for piece in pieces:
        piece = piece.strip(" \t")
        if not piece:
            continue
        pair = FORWARDED_PAIR.fullmatch(piece)
        if pair is None:
            return None
        name = pair.group(1).lower()  # "The parameter names are case-insensitive" (§4)
        if name in pairs:
            return None
        raw = pair.group(2)
        pairs[name] = QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
    return pairs


def _parse_node(node: str) -> Node | None:
    """RFC 7239 §6: node = nodename [ ":" node-port ], after quoted-string unescaping (§5.2).

    nodename = IPv4address / "[" IPv6address "]" / "unknown" / obfnode; IPv6 needs its
    brackets (and therefore quotes, §6: ":" and "[]" are not token characters).
    """
    if node.startswith("["):
        bracketed = BRACKETED.fullmatch(node)
        if bracketed is None:
            port_part = node.rpartition("]:")
            if port_part[1] and OBFUSCATED.fullmatch(port_part[2]):
                return _ip_node(port_part[0][1:], None, version=6)
            return None
        return _ip_node(bracketed.group(1), bracketed.group(2), version=6)
    name, colon, port = node.partition(":")
    port_number: int | None = None
    if colon:
        if PORT.fullmatch(port):
            port_number = int(port)
            if port_number > MAX_PORT:
                return None
        elif not OBFUSCATED.fullmatch(port):
            return None
    if name == "unknown" or OBFUSCATED.fullmatch(name):
        return Node(name, port_number)
    return _ip_node(name, None if port_number is None else str(port_number), version=4)


def _ip_node(host: str, port: str | None, version: int | None) -> Node | None:
    """A Node for an IP address of that version (None: either), or None if it is not one."""
    if not host.isascii() or "%" in host:  # no zone identifiers, no look-alike digits
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if version is not None and address.version != version:
        return None
    number = None if port is None else int(port)
    if number is not None and number > MAX_PORT:
        return None
    return Node(str(address), number)
