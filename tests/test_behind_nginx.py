"""The chat behind Debian's nginx, configured as docs/deploy.md shows (tests/nginx.py makes
that text, and test_nginx_helper.py fails when the doc drifts from it): --trust-proxy on and
off, --path through the proxy, and the operator's endpoints.

The client connects from its own loopback address (127.0.0.5), so the address nginx reports
is told apart from the one the chat's socket sees (nginx's, 127.0.0.1). It also sends an
X-Forwarded-For of its own choosing, which must never be believed.

Without nginx these tests skip; under CI=true they fail instead.
"""
from __future__ import annotations

import ast
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess
from nginx import Nginx
from test_nginx_helper import (  # noqa: F401 (nginx_installed: the fixture)
    chat_through,
    logs_on_failure,
    needs_nginx,
    nginx_installed,
    status,
)
from websockets.sync.client import connect

Start = Callable[..., ServerProcess]
TIMEOUT = 10.0
CLIENT_ADDRESS = "127.0.0.5"  # any 127/8 address is loopback on Linux
SPOOFED = "6.6.6.6"


def address_through(proxy: Nginx, path: str = "/") -> tuple[str, int]:
    """Join through nginx from CLIENT_ADDRESS with a spoofed X-Forwarded-For; the address
    the chat's on_connect reports, and our source port."""
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    try:
        sock.bind((CLIENT_ADDRESS, 0))
    except OSError:
        sock.close()
        pytest.skip(f"cannot bind {CLIENT_ADDRESS} here")
    sock.connect((proxy.host, proxy.port))
    port = sock.getsockname()[1]
    url = f"ws://{proxy.authority}{path}"
    with connect(url, sock=sock, open_timeout=TIMEOUT, proxy=None,
                 additional_headers={"X-Forwarded-For": SPOOFED}) as user:
        reported = user.recv(TIMEOUT)
        user.send("hello")
        assert user.recv(TIMEOUT) == "hello"
    assert isinstance(reported, str)
    return reported, port


@needs_nginx
def test_trust_proxy_through_nginx_logs_the_real_client(start_server: Start,
                                                        address_script: Path,
                                                        tmp_path: Path) -> None:
    server = start_server("--trust-proxy", "--callback", str(address_script))
    with Nginx(server.port, tmp_path / "nginx") as proxy, logs_on_failure(proxy, server):
        reported, _ = address_through(proxy)
        # nginx's Forwarded (for=$remote_addr, no port) wins over any X-Forwarded-For.
        assert reported == repr((CLIENT_ADDRESS, None))
        server.wait_for_log(rf"user \d+ \({re.escape(CLIENT_ADDRESS)} via 127\.0\.0\.1:\d+\) "
                            "joined")
        assert SPOOFED not in server.log
        proxy.wait_for_access_log(f'{CLIENT_ADDRESS} "GET / HTTP/1.1" 101 '
                                  f'xff="{SPOOFED}, {CLIENT_ADDRESS}"')


@needs_nginx
def test_without_trust_proxy_the_chat_sees_nginx(start_server: Start, address_script: Path,
                                                 tmp_path: Path) -> None:
    server = start_server("--callback", str(address_script))
    with Nginx(server.port, tmp_path / "nginx") as proxy, logs_on_failure(proxy, server):
        reported, _ = address_through(proxy)
        host, port = ast.literal_eval(reported)
        assert host == "127.0.0.1" and isinstance(port, int)  # nginx's socket
        server.wait_for_log(rf"user \d+ \(127\.0\.0\.1:{port}\) joined")
        assert CLIENT_ADDRESS not in server.log and SPOOFED not in server.log


@needs_nginx
def test_path_and_the_page_through_nginx(start_server: Start, tmp_path: Path) -> None:
    server = start_server("--path", "/chat", "--metrics")
    with Nginx(server.port, tmp_path / "nginx") as proxy, logs_on_failure(proxy, server):
        with urllib.request.urlopen(proxy.page_url, timeout=TIMEOUT) as page:
            assert b'<meta name="websocket-path" content="/chat">' in page.read()
        chat_through(proxy.ws_url + "chat")
        with pytest.raises(Exception, match="404"):
            chat_through(proxy.ws_url + "elsewhere")
        assert status(proxy, "/healthz") == 200
        assert status(proxy, "/metrics") == 403  # kept private by the site configuration
        with urllib.request.urlopen(server.page_url + "metrics", timeout=TIMEOUT) as direct:
            assert direct.status == 200  # ... and there on the chat's own address
