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


def decode_entry(data: bytes) -> tuple[str, int, str | bytes] | None:
    """(origin, seq, message) from `encode_entry`'s bytes; None for anything else."""
    origin, _, rest = data.partition(b" ")
    seq_text, _, rest = rest.partition(b" ")
    kind, space, payload = rest.partition(b" ")
    if not space or not seq_text.isdigit() or kind not in (b"t", b"b") or not origin.isalnum():
        return None
    if kind == b"b":
        return origin.decode(), int(seq_text), payload
    try:
        return origin.decode(), int(seq_text), payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode_presence(origin: str, entries: list[tuple[int, str]] | None) -> bytes:
    """`<origin> 0 p <JSON [[user id, name], ...]>`: a process's users of a room (all of
    them; an empty list when it has none left), or `<origin> 0 q` (None): the others are
    asked for theirs."""
    if entries is None:
        return b"%s 0 q" % origin.encode()
    return b"%s 0 p " % origin.encode() + json.dumps(
        entries, ensure_ascii=False, separators=(",", ":")).encode()


MAX_ORIGIN_LENGTH = 64  # characters of an origin (ours are 12 hex digits)


def decode_presence(data: bytes) -> tuple[str, str, list[tuple[int, str]] | None] | None:
    """(origin, "p", entries) of `encode_presence`'s list (entries None if the JSON is not
    a list of [user id >= 0, name] pairs), (origin, "q", None) of a question; None for
    anything else, an origin that is not letters and digits included."""
    parts = data.split(b" ", 3)
    if len(parts) < 3 or parts[1] != b"0" or parts[2] not in (b"p", b"q"):
        return None
    origin = parts[0]
    if not (origin.isalnum() and len(origin) <= MAX_ORIGIN_LENGTH):
        return None  # (bytes.isalnum is ASCII only)
    name = origin.decode("ascii")
    if parts[2] == b"q":
        return name, "q", None
    try:
        value = json.loads(parts[3]) if len(parts) == 4 else None
    except ValueError:
        value = None
    if not isinstance(value, list):
        return name, "p", None
    entries: list[tuple[int, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                and item[0] >= 0 and isinstance(item[1], str)):
            return name, "p", None
        entries.append((item[0], item[1]))
    return name, "p", entries
