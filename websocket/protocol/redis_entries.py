"""What the Redis link says and reads, as values: the --redis URL, error replies in words,
and the entries it publishes (sans-I/O, beside resp.py; used by redis_link.py).

An entry (a published message, and an item of a room's history list) is
`<origin> <seq> <t|b> <payload>`: the publishing process's random id, its sequence number,
text or binary, and the message's bytes (redis_link.py says why each part is there).
"""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass

from .resp import RedisError

DEFAULT_PORT = 6379


class RedisURLError(ValueError):
    """--redis is not a redis:// URL we can use (one line for the CLI)."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    password: str | None = None
    username: str | None = None  # Redis 6 ACL user; AUTH with the password alone if None
    db: int = 0
    tls: bool = False  # rediss://: both connections speak TLS (tls_client.py)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{host}:{self.port}" + (f"/{self.db}" if self.db else "")
                + (" (TLS)" if self.tls else ""))


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[[user]:password@]host[:port][/db]` (the IANA "redis" URI scheme), or the
    same with `rediss://` (the IANA "rediss" scheme: Redis over TLS)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise RedisURLError(f"not a redis:// or rediss:// URL: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise RedisURLError(f"bad port in {url!r}") from None
    if not parts.hostname:
        raise RedisURLError(f"no host in {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise RedisURLError(f"the database in {url!r} must be a number, e.g. /0")
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return RedisAddress(parts.hostname, port, password or None, username, int(path or 0),
                        parts.scheme == "rediss")


def describe(reply: RedisError) -> str:
    """A Redis error reply in words an operator can act on."""
    if reply.prefix == "NOAUTH":
        return ("Redis requires a password: give it in the URL, "
                "redis://:PASSWORD@host:port")
    if reply.prefix in ("WRONGPASS", "ERR") and "pass" in reply.lower():
        return f"Redis refused the password ({reply})"
    return f"Redis answered an error: {reply}"


def encode_entry(origin: str, seq: int, message: str | bytes) -> bytes:
    """A message as published (and kept in a history list): origin, sequence, kind, data."""
    if isinstance(message, str):
        return b"%s %d t " % (origin.encode(), seq) + message.encode("utf-8")
    return b"%s %d b " % (origin.encode(), seq) + bytes(message)


# What comes from Redis is held to the limits of what comes from a client (issue 18): anyone
# who can reach Redis can publish on the chat's channels or push to its lists.
MAX_ORIGIN = 64  # characters of an origin (ours are 12: secrets.token_hex(6))
MAX_SEQ_DIGITS = 20  # a sequence number is at most 2**64 - 1
# Presence: at most this many names per origin (rooms.py keeps no more), each at most this
# many characters (rooms.py's MAX_HANDLE: the page's handle rule; "user 123" if none).
MAX_PRESENCE_NAMES = 1000
MAX_PRESENCE_NAME = 32
# ... so its JSON ([[user id, "name"], ...]) is at most this long: a character takes at most
# 6 bytes ("\u001f"), an entry its brackets, its quotes, a user id of MAX_SEQ_DIGITS digits
# and two ", " more (we write none of the spaces; json.dumps' default writes them); checked
# before parsing, so no JSON is parsed that could not be a list of such entries.
MAX_PRESENCE_JSON = 2 + MAX_PRESENCE_NAMES * (6 * MAX_PRESENCE_NAME + MAX_SEQ_DIGITS + 8)
# An entry's bytes beyond its message: origin, sequence, kind and three spaces.
ENTRY_OVERHEAD = MAX_ORIGIN + MAX_SEQ_DIGITS + 8


def max_entry_bytes(max_message_size: int) -> int:
    """The longest entry a chat server publishes with this --max-message-size: a message
    of that size or a full presence list, with its header. Longer ones are refused unread."""
    return max(max_message_size, MAX_PRESENCE_JSON) + ENTRY_OVERHEAD


# Why an entry from Redis is dropped (EntryError.kind; one log line per kind per interval).
TOO_BIG = "over --max-message-size"
NOT_AN_ENTRY = "not an entry a chat server publishes"
NOT_UTF8 = "text that is not UTF-8"
BAD_PRESENCE = (f"presence that is not a list of at most {MAX_PRESENCE_NAMES} users with names "
                f"of at most {MAX_PRESENCE_NAME} characters")


class EntryError(ValueError):
    """Bytes from Redis that are no message to deliver; `kind` is one of the reasons above."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def decode_entry(data: bytes, max_size: int | None = None) -> tuple[str, int, str | bytes]:
    """(origin, seq, message) from `encode_entry`'s bytes, the message at most `max_size`
    bytes (as a client's: counted as sent, UTF-8 for text).

    Raises:
        EntryError: TOO_BIG, NOT_UTF8, or NOT_AN_ENTRY for anything else.
    """
    origin, _, rest = data.partition(b" ")
    seq_text, _, rest = rest.partition(b" ")
    kind, space, payload = rest.partition(b" ")
    if (not space or not seq_text.isdigit() or len(seq_text) > MAX_SEQ_DIGITS
            or kind not in (b"t", b"b") or not origin.isalnum() or len(origin) > MAX_ORIGIN):
        raise EntryError(NOT_AN_ENTRY)
    if max_size is not None and len(payload) > max_size:
        raise EntryError(TOO_BIG)
    if kind == b"b":
        return origin.decode(), int(seq_text), payload
    try:
        return origin.decode(), int(seq_text), payload.decode("utf-8")
    except UnicodeDecodeError:
        raise EntryError(NOT_UTF8) from None


def encode_presence(origin: str, entries: list[tuple[int, str]] | None) -> bytes:
    """`<origin> 0 p <JSON [[user id, name], ...]>`: a process's users of a room (all of
    them, up to MAX_PRESENCE_NAMES; an empty list when it has none left), or `<origin> 0 q`
    (None): the others are asked for theirs."""
    if entries is None:
        return b"%s 0 q" % origin.encode()
    return b"%s 0 p " % origin.encode() + json.dumps(
        entries, ensure_ascii=False, separators=(",", ":")).encode()


def decode_presence(data: bytes) -> tuple[str, str, list[tuple[int, str]] | None] | None:
    """(origin, "p", entries) of `encode_presence`'s list, (origin, "q", None) of a
    question; None for anything else, an origin that is not letters and digits included.
    Entries are None unless the JSON is a list of at most MAX_PRESENCE_NAMES [user id >= 0,
    name] pairs, each name of at most MAX_PRESENCE_NAME characters (what rooms.py would
    publish itself); a longer JSON is not parsed at all."""
    parts = data.split(b" ", 3)
    if len(parts) < 3 or parts[1] != b"0" or parts[2] not in (b"p", b"q"):
        return None
    origin = parts[0]
    if not (origin.isalnum() and len(origin) <= MAX_ORIGIN):
        return None  # (bytes.isalnum is ASCII only)
    name = origin.decode("ascii")
    if parts[2] == b"q":
        return name, "q", None
    value: object = None
    if len(parts) == 4 and len(parts[3]) <= MAX_PRESENCE_JSON:
        try:
            value = json.loads(parts[3])
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            value = None
    if not isinstance(value, list) or len(value) > MAX_PRESENCE_NAMES:
        return name, "p", None
    entries: list[tuple[int, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                and item[0] >= 0 and isinstance(item[1], str)
                and len(item[1]) <= MAX_PRESENCE_NAME):
            return name, "p", None
        entries.append((item[0], item[1]))
    return name, "p", entries
