"""A raw-socket WebSocket client for the tests: every byte on the wire is under our control.

It deliberately does not reuse the server's codecs for reading answers: frames are taken
apart here with struct, so a mistake shared by the server and its codecs shows up.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
TIMEOUT = 10.0


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bytes | None = None,
          rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame (masked unless masked=False), built by hand per RFC 6455 §5.2."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    key = (mask or os.urandom(4)) if masked else None
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if key is None:
        return head + payload
    return head + key + mask_bytes(payload, key) if n < 4096 else \
        head + key + _fast_mask(payload, key)


def _fast_mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class Client:
    """One TCP connection to the server, with helpers to speak WebSocket by hand."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.host = host
        self.port = port

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw bytes -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        end = self.buf.index(marker) + len(marker)
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    def read_to_eof(self) -> bytes:
        """Everything until the server closes (fails on timeout)."""
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """True when the server closes the TCP connection within `timeout` with no more data."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)
        if data:
            self.buf += data
            return False
        return True

    # -- HTTP ----------------------------------------------------------------------------

    def http_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response head (and its Content-Length body): (status, headers, body)."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        return status, headers, self.read_exactly(length) if length else b""

    def upgrade_request(self, path: str = "/", key: str | None = None,
                        extra: str = "") -> tuple[bytes, str]:
        key = key or base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: http://127.0.0.1:{self.port}\r\n{extra}\r\n")
        return request.encode(), key

    def handshake(self, path: str = "/") -> Client:
        """RFC 6455 opening handshake; checks the 101 and the accept value."""
        request, key = self.upgrade_request(path)
        self.send(request)
        status, headers, _ = self.http_response()
        assert status == 101, status
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        assert headers["upgrade"].lower() == "websocket"
        return self

    # -- RFC 6455 frames -----------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, **kw: object) -> None:
        self.send(frame(opcode, payload, fin, **kw))  # type: ignore[arg-type]

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def send_binary(self, data: bytes) -> None:
        self.send_frame(0x2, data)

    def recv_frame(self) -> tuple[bool, int, bytes]:
        """One server frame: (fin, opcode, payload). Server frames must not be masked."""
        b1, b2 = self.read_exactly(2)
        assert b1 & 0x70 == 0, "server set reserved bits"
        assert not b2 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exactly(8))
        return bool(b1 & 0x80), b1 & 0x0F, self.read_exactly(n)

    def recv_message(self) -> str | bytes:
        """The next data message (text as str), answering nothing; control frames fail."""
        fin, opcode, payload = self.recv_frame()
        assert opcode in (1, 2), f"expected a data frame, got opcode {opcode} {payload!r}"
        parts = [payload]
        while not fin:
            fin, cont, payload = self.recv_frame()
            assert cont == 0
            parts.append(payload)
        data = b"".join(parts)
        return data.decode() if opcode == 1 else data

    def recv_close(self) -> tuple[int | None, str]:
        """Read frames until a close frame; return its (code, reason)."""
        while True:
            _, opcode, payload = self.recv_frame()
            if opcode == 0x8:
                if not payload:
                    return None, ""
                (code,) = struct.unpack("!H", payload[:2])
                return code, payload[2:].decode()

    def close_handshake(self, code: int = 1000, reason: str = "") -> tuple[int | None, str]:
        """Send a close, read the server's close, and check the server then closes TCP."""
        self.send_frame(0x8, close_payload(code, reason))
        answer = self.recv_close()
        assert self.at_eof(), "server did not close the TCP connection after the handshake"
        return answer

    # -- draft-75 / draft-76 ----------------------------------------------------------------

    def send_hixie(self, text: str) -> None:
        self.send(b"\x00" + text.encode() + b"\xff")

    def recv_hixie(self) -> str:
        start = self.read_exactly(1)
        assert start == b"\x00", start
        return self.read_until(b"\xff")[:-1].decode()


def draft76_request(port: int, path: str = "/", key1: str = "4 @1  46546xW%0l 1 5",
                    key2: str = "12998 5 Y3 1  .P00", key3: bytes = b"^n:ds[4U") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key2: {key2}\r\nUpgrade: WebSocket\r\n"
            f"Sec-WebSocket-Key1: {key1}\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
            ).encode() + key3


def draft75_request(port: int, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n").encode()


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until true or `timeout` s (for server-side state via the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
