"""tests/nginx.py and tests/tls.py: Debian's nginx in front of the chat, for real.

First against a stdlib HTTP server that answers with the headers it received, to see exactly
what the site configuration passes on (Upgrade, Connection, Host, X-Forwarded-For,
Forwarded); then in front of the chat itself (`server.py`): the page and a chat between two
`websockets` clients, over http:// and, with TLS at nginx, over https:// and wss://.

Without nginx or openssl these tests skip; under CI=true they fail instead.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from nginx import READ_TIMEOUT_S, Nginx, nginx_binary, site_config
from tls import (  # noqa: F401 (certificates: the fixture)
    Certificates,
    WebsocketsClient,
    certificates,
    make_certificates,
    require_openssl,
    tool_missing,
)

if TYPE_CHECKING:
    from conftest import ServerProcess

TIMEOUT = 10.0
DEPLOY_DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
PING_INTERVAL_S = 30  # the chat's default --ping-interval


@pytest.fixture
def nginx_installed() -> None:
    if nginx_binary() is None:
        tool_missing("no nginx (apt-get install nginx)")


needs_nginx = pytest.mark.usefixtures("nginx_installed")


class HeaderEcho(BaseHTTPRequestHandler):
    """Answers every GET with the request's headers as JSON (names in lower case)."""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        body = json.dumps({"path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def header_echo() -> Iterator[int]:
    """A stdlib HTTP server on a free loopback port; yields the port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HeaderEcho)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()
    thread.join(TIMEOUT)


def seen_upstream(proxy: Nginx, headers: dict[str, str]) -> dict[str, str]:
    """GET /seen through `proxy` with `headers`; the headers the upstream received."""
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/seen", headers=headers)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert answer["path"] == "/seen"
    return dict(answer["headers"])


@needs_nginx
def test_a_page_request_goes_through_with_forwarding_headers(header_echo: int,
                                                             tmp_path: Path) -> None:
    with Nginx(header_echo, tmp_path) as proxy:
        seen = seen_upstream(proxy, {})
        assert seen["host"] == proxy.authority  # as the client sent it, port included
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["forwarded"] == "for=127.0.0.1;proto=http"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["connection"] == "close"  # no Upgrade asked: none passed on
        assert "upgrade" not in seen
        proxy.wait_for_access_log('"GET /seen HTTP/1.1" 200')


@needs_nginx
def test_what_a_client_claims_comes_first_and_ours_last(header_echo: int,
                                                         tmp_path: Path) -> None:
    with Nginx(header_echo, tmp_path) as proxy:
        seen = seen_upstream(proxy, {"X-Forwarded-For": "6.6.6.6",
                                     "Forwarded": 'for="[2001:db8::6]"'})
    # X-Forwarded-For: the client's claim, then the address nginx saw (the one to believe).
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    # Forwarded: replaced, so nothing the client wrote can spoil it.
    assert seen["forwarded"] == "for=127.0.0.1;proto=http"


@needs_nginx
def test_an_upgrade_request_passes_upgrade_and_connection_on(header_echo: int,
                                                              tmp_path: Path) -> None:
    with Nginx(header_echo, tmp_path) as proxy:
        seen = seen_upstream(proxy, {"Upgrade": "websocket", "Connection": "Upgrade",
                                     "Sec-WebSocket-Version": "13",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert seen["upgrade"] == "websocket"
    assert seen["connection"] == "upgrade"
    assert seen["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="


@needs_nginx
def test_an_ipv6_client_is_quoted_in_forwarded(header_echo: int, tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with Nginx(header_echo, tmp_path, host="::1") as proxy:
        seen = seen_upstream(proxy, {})
    assert seen["forwarded"] == 'for="[::1]";proto=http'  # RFC 7239 §6: quoted, bracketed
    assert seen["x-forwarded-for"] == "::1"


@needs_nginx
def test_metrics_stay_private_behind_nginx(header_echo: int, tmp_path: Path) -> None:
    with Nginx(header_echo, tmp_path) as proxy:
        assert status(proxy, "/metrics") == 403  # the upstream would say 200
        assert status(proxy, "/metrics/x") == 200  # only that exact path is kept back
        assert status(proxy, "/healthz") == 200


def status(proxy: Nginx, path: str) -> int:
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_docs_deploy_shows_the_tested_site() -> None:
    """docs/deploy.md's nginx site is the one these tests run, with its placeholders."""
    expected = site_config(
        ["443", "[::]:443"], "127.0.0.1:8080", server_name="chat.example.com",
        ssl_certificate="/etc/letsencrypt/live/chat.example.com/fullchain.pem",
        ssl_certificate_key="/etc/letsencrypt/live/chat.example.com/privkey.pem")
    assert expected in DEPLOY_DOC.read_text()


def test_the_websocket_timeouts_outlast_the_chats_keepalive() -> None:
    config = site_config("127.0.0.1:8080", "127.0.0.1:8081")
    assert f"proxy_read_timeout {READ_TIMEOUT_S}s;" in config
    assert READ_TIMEOUT_S > 2 * PING_INTERVAL_S  # nginx never cuts a user the chat keeps


@needs_nginx
def test_a_broken_configuration_is_an_error_with_the_log(tmp_path: Path) -> None:
    proxy = Nginx(1, tmp_path, read_timeout_s=-1)  # "-1s" is not a time
    with pytest.raises(RuntimeError, match="invalid value"):
        proxy.start()
    assert proxy.proc is not None and proxy.proc.returncode not in (None, 0)


@contextlib.contextmanager
def logs_on_failure(proxy: Nginx, server: ServerProcess) -> Iterator[None]:
    """A failure inside shows nginx's error and access logs and the chat's log too."""
    try:
        yield
    except Exception as error:
        raise AssertionError(
            f"{error!r}\n--- nginx ---\n{proxy.log()}\n--- nginx access ---\n"
            + "\n".join(proxy.access_log_lines()) + f"\n--- chat ---\n{server.log}") from error


def chat_through(ws_url: str, ssl_context: ssl.SSLContext | None = None) -> None:
    """Two users chat through the proxy: each line reaches both (the article's echo-all)."""
    with WebsocketsClient(ws_url, ssl_context, open_timeout=TIMEOUT, proxy=None) as alice, \
            WebsocketsClient(ws_url, ssl_context, open_timeout=TIMEOUT, proxy=None) as bob:
        alice.send("alice: hello through nginx")
        assert alice.recv(TIMEOUT) == "alice: hello through nginx"
        assert bob.recv(TIMEOUT) == "alice: hello through nginx"
        big = "b" * 200_000  # many proxy buffers' worth
        bob.send(big)
        assert alice.recv(TIMEOUT) == big
        assert bob.recv(TIMEOUT) == big


@needs_nginx
def test_the_chat_through_nginx(chat_server: ServerProcess, tmp_path: Path) -> None:
    with urllib.request.urlopen(chat_server.page_url, timeout=TIMEOUT) as direct:
        page = direct.read()
    with Nginx(chat_server.port, tmp_path) as proxy, logs_on_failure(proxy, chat_server):
        with urllib.request.urlopen(proxy.page_url, timeout=TIMEOUT) as response:
            assert response.status == 200
            assert response.read() == page
        chat_through(proxy.ws_url)


@needs_nginx
def test_the_chat_through_nginx_with_tls_at_nginx(chat_server: ServerProcess,
                                                  certificates: Certificates,  # noqa: F811
                                                  tmp_path: Path) -> None:
    context = certificates.client_context()
    with Nginx(chat_server.port, tmp_path, tls=certificates) as proxy, \
            logs_on_failure(proxy, chat_server):
        assert proxy.page_url.startswith("https://")
        with urllib.request.urlopen(proxy.page_url, timeout=TIMEOUT, context=context) as page:
            assert page.status == 200
        chat_through(proxy.ws_url, context)
        strict = certificates.client_context()
        strict.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: also fine
        chat_through(proxy.ws_url, strict)


def test_certificates_are_what_they_claim(certificates: Certificates,  # noqa: F811
                                          tmp_path: Path) -> None:
    """The broken files are broken and the good ones good, as a TLS server sees them."""
    certificates.server_context()  # loads
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certificates.combined))
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certificates.chain),
                                                            str(certificates.key))
    for cert, key, error in [
        (certificates.cert, certificates.wrong_key, ssl.SSLError),  # key does not match
        (certificates.garbage, certificates.key, ssl.SSLError),
        (certificates.unreadable, certificates.key, OSError),
        (certificates.missing, certificates.key, OSError),
        (certificates.cert, certificates.missing, OSError),
    ]:
        with pytest.raises(error):
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    assert not certificates.missing.exists()
    with pytest.raises(IsADirectoryError):
        certificates.unreadable.read_bytes()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_a_client_trusts_the_server_certificate_for_each_name(
        certificates: Certificates, host: str) -> None:  # noqa: F811
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        listener = socket.create_server((address, 0), family=family)
    except OSError:
        pytest.skip(f"no {address} on this machine")
    assert handshake(listener, certificates.server_context(),
                     certificates.client_context(), host) is None
    untrusted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    untrusted.load_cert_chain(str(certificates.untrusted_cert),
                              str(certificates.untrusted_key))
    listener = socket.create_server((address, 0), family=family)
    error = handshake(listener, untrusted, certificates.client_context(), host)
    assert isinstance(error, ssl.SSLCertVerificationError)


def test_a_client_refuses_a_name_the_certificate_does_not_have(
        certificates: Certificates) -> None:  # noqa: F811
    listener = socket.create_server(("127.0.0.1", 0))
    error = handshake(listener, certificates.server_context(), certificates.client_context(),
                      "example.com")
    assert isinstance(error, ssl.SSLCertVerificationError)


def handshake(listener: socket.socket, server: ssl.SSLContext, client: ssl.SSLContext,
              server_hostname: str) -> Exception | None:
    """One TLS handshake over loopback (server side in a thread); the client's error."""
    def serve() -> None:
        with listener:
            listener.settimeout(TIMEOUT)
            connection, _ = listener.accept()
            try:
                with server.wrap_socket(connection, server_side=True) as tls_connection:
                    tls_connection.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with socket.create_connection((listener.getsockname()[0], port), timeout=TIMEOUT) as raw, \
                client.wrap_socket(raw, server_hostname=server_hostname) as tls_client:
            tls_client.sendall(b"x")
    except ssl.SSLError as error:
        return error
    finally:
        thread.join(TIMEOUT)
    return None


def test_make_certificates_reports_an_openssl_failure(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import tls

    require_openssl()
    monkeypatch.setattr(tls, "DAYS", "not-a-number")
    with pytest.raises(RuntimeError, match="openssl"):
        make_certificates(tmp_path)
