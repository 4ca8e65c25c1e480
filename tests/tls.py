"""Test certificates, made at test time with the `openssl` command (Debian's `openssl`).

    from tls import certificates          # the session fixture, in a test module
    def test_x(certificates: Certificates) -> None:
        server = start_server("--certfile", str(certificates.cert),
                              "--keyfile", str(certificates.key))
        ctx = certificates.client_context()  # trusts the test CA, checks the host name

`make_certificates(directory)` writes, with one throw-away CA:

- `cert`, `key`: a server certificate for `localhost`, `127.0.0.1` and `::1` (subject
  alternative names), signed by the CA; `combined` holds both in one PEM; `chain` holds the
  certificate followed by the CA's (what a real deployment's fullchain.pem looks like).
- `ca_cert`: what a client must trust (`client_context()` does).
- `wrong_key`: a valid key that does not match `cert` (the server must refuse to start).
- `untrusted_cert`, `untrusted_key`: a self-signed pair for the same names, which a client
  trusting only the CA refuses.
- `garbage`: a file that is not PEM; `unreadable`: a directory named like a PEM file, which
  nobody can read as a file, root included (a chmod 000 file would not do: tests run as
  root under CI); `missing`: a path that does not exist.

Keys are EC P-256: generated in milliseconds and accepted by every TLS 1.2/1.3 client.
Without the `openssl` command the fixture skips, except under CI=true, where it fails.
"""
from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
DAYS = "30"
SUBJECT_ALT_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"
TIMEOUT = 30.0  # any one openssl command; each takes milliseconds


def tool_missing(reason: str) -> None:
    """Skip the test for a missing tool, or fail it under CI=true (where tools must be)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so this test must run", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Certificates:
    """Paths of the generated files (see the module docstring), and contexts using them."""

    directory: Path
    ca_cert: Path
    cert: Path
    key: Path
    combined: Path
    chain: Path
    wrong_key: Path
    untrusted_cert: Path
    untrusted_key: Path
    garbage: Path
    unreadable: Path
    missing: Path

    def client_context(self, minimum: ssl.TLSVersion | None = None,
                       maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client context that trusts only the test CA and checks the host name."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
        return context

    def server_context(self) -> ssl.SSLContext:
        """A server context with `cert` and `key`, for tests that need a TLS peer of ours."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([OPENSSL, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path), cwd=path.parent)


def make_certificates(directory: Path) -> Certificates:
    """Write a CA, a server certificate and the broken files into `directory`.

    Raises:
        RuntimeError: an openssl command failed (its error output is in the message).
    """
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    for name in ("ca.key", "server.key", "wrong.key", "untrusted.key"):
        _new_key(d / name)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", DAYS,
             "-subj", "/CN=websocket-chat test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "server.ext").write_text(
        f"subjectAltName={SUBJECT_ALT_NAMES}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-new", "-key", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", "2", "-days", DAYS, "-extfile", "server.ext",
             "-out", "server.pem", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "untrusted.key", "-out", "untrusted.pem",
             "-days", DAYS, "-subj", "/CN=localhost",
             "-addext", f"subjectAltName={SUBJECT_ALT_NAMES}", cwd=d)
    server_pem = (d / "server.pem").read_text()
    (d / "combined.pem").write_text(server_pem + (d / "server.key").read_text())
    (d / "chain.pem").write_text(server_pem + (d / "ca.pem").read_text())
    (d / "garbage.pem").write_text("this is not a PEM file\n")
    (d / "unreadable.pem").mkdir(exist_ok=True)
    return Certificates(
        directory=d, ca_cert=d / "ca.pem", cert=d / "server.pem", key=d / "server.key",
        combined=d / "combined.pem", chain=d / "chain.pem", wrong_key=d / "wrong.key",
        untrusted_cert=d / "untrusted.pem", untrusted_key=d / "untrusted.key",
        garbage=d / "garbage.pem", unreadable=d / "unreadable.pem",
        missing=d / "missing.pem",
    )


def require_openssl() -> None:
    """Skip (or under CI=true fail) the test when there is no openssl command."""
    if not os.access(OPENSSL, os.X_OK):
        tool_missing(f"no openssl command at {OPENSSL} (apt-get install openssl)")


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificates]:
    """One set of test certificates for the whole session (see `make_certificates`)."""
    require_openssl()
    yield make_certificates(tmp_path_factory.mktemp("tls"))


class WebsocketsClient:
    """The `websockets` client (ws:// or wss://) for synchronous test code: its asyncio
    client, on an event loop of its own in a thread of its own, which alone touches the
    socket (`with WebsocketsClient(url, ssl) as ws: ws.send(...); ws.recv(timeout)`).

    Not `websockets.sync.client`: that one reads in a thread of its own from the moment the
    socket is open, while the calling thread writes the upgrade request, and one SSLSocket
    used from two threads at once loses the request now and then (5 of 450 handshakes to
    our server hung until the open timeout, three connections open at a time; a packet
    capture shows the request never sent; the asyncio client: 0 of 900).
    """

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, open_timeout: float = 10,
                 **options: Any) -> None:
        import asyncio
        import threading

        from websockets.asyncio.client import connect

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        async def opened() -> Any:  # (connect() is awaitable, not a coroutine)
            return await connect(url, ssl=ssl_context, open_timeout=open_timeout, **options)

        try:
            self._ws = self._run(opened(), open_timeout + 5)
        except BaseException:
            self._stop()
            raise

    def _run(self, coroutine: Any, timeout: float | None) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def send(self, message: str | bytes) -> None:
        self._run(self._ws.send(message), 30)

    def recv(self, timeout: float | None = None) -> str | bytes:
        import asyncio

        result: str | bytes = self._run(asyncio.wait_for(self._ws.recv(), timeout), None)
        return result

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._run(self._ws.close(), 15)
            finally:
                self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> WebsocketsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
