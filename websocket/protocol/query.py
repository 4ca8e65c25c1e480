"""The query of a request target: one parser, with a defined answer for any bytes.

Sans-I/O. `parse_query(raw)` reads the bytes after the "?" as the form encoding browsers
write (`URLSearchParams`, and the chat page's `?handle=` and `?after=`): WHATWG URL Standard
§5.1, "application/x-www-form-urlencoded parsing", which never fails. What it does with
each odd case, decided here once for every reader (the rooms' `?handle=` and `?after=`,
`on_request`'s `request.query`, a script's `user.query`):

- fields are separated by "&" only (";" is an ordinary character, as in Python >= 3.10);
  empty fields ("a=1&&b=2", a trailing "&") are skipped;
- a field without "=" is a name with the empty value ("flag" -> ("flag", ""));
  an empty name is kept ("=x" -> ("", "x")): the pairs are what was sent;
- "+" is a space, in names and values (the form encoding; "%2B" is a "+");
- "%" and two hex digits is that byte; any other "%" stays a "%" ("100%" -> "100%",
  "%zz" -> "%zz");
- the bytes are then UTF-8, and anything that is not (a raw 0xFF, "%FF", a lone
  continuation byte) becomes U+FFFD, as a browser shows it;
- repeated names are all kept, in order; `first` takes the first (as `parse_qs` did);
- any number of fields: the request head's size limit (handshake.MAX_REQUEST_SIZE, 16 KiB)
  bounds them, and the work is linear in the bytes.

The request head is decoded as ISO-8859-1 (handshake.py), so `query_of(target)` turns the
target back into the bytes that were sent before parsing; the fragment ("#..."), which no
client sends (RFC 9112 §3.2.1), is not part of the query (RFC 3986 §3.5).
"""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

Pairs = tuple[tuple[str, str], ...]


def parse_query(raw: bytes) -> Pairs:
    """Every (name, value) of a query's bytes, in order (see the module docstring)."""
    pairs = []
    for field in raw.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        pairs.append((_decode(name), _decode(value)))
    return tuple(pairs)


def _decode(part: bytes) -> str:
    if b"+" in part:
        part = part.replace(b"+", b" ")
    if b"%" in part:
        part = unquote_to_bytes(part)  # leaves a "%" without two hex digits as it is
    return part.decode("utf-8", "replace")


def query_of(target: str) -> Pairs:
    """The parsed query of a request target as handshake.py holds it ("/room?a=1").

    The target's text is the request's bytes read as ISO-8859-1, so it is encoded back the
    same way; a target with characters beyond it (built by hand, never parsed off the
    wire) is encoded as UTF-8.
    """
    if "?" not in target:
        return ()
    query = target.partition("?")[2].partition("#")[0]
    try:
        raw = query.encode("iso-8859-1")
    except UnicodeEncodeError:
        raw = query.encode("utf-8", "surrogatepass")
    return parse_query(raw)


def first(pairs: Pairs, name: str) -> str | None:
    """The value of the first field named `name`, or None."""
    for key, value in pairs:
        if key == name:
            return value
    return None


def first_values(pairs: Pairs) -> dict[str, str]:
    """Each name's first value."""
    values: dict[str, str] = {}
    for name, value in pairs:
        values.setdefault(name, value)
    return values
