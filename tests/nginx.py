"""Debian's nginx in front of the chat, started by the test as its own process.

    from nginx import Nginx, nginx_binary
    with Nginx(upstream_port=server.port, directory=tmp_path) as proxy:
        ...  # the page at proxy.page_url, the WebSocket at proxy.ws_url

The configuration is the site of docs/deploy.md (`site_config`), wrapped in a main file that
an unprivileged user can run: `daemon off` and `master_process on` (the process we start is
the master, stopped by its PID), and the pid file, the logs and every temporary path in the
test's directory. Nothing of /etc/nginx is read, and the Debian package's own service (port
80) is never started. `listen 127.0.0.1:PORT` on a free port; `start()` returns once nginx
accepts connections, or raises with its error log.

The access log records, per request, the address nginx saw, the request, the status and the
`X-Forwarded-For` and `Forwarded` headers it sent on (`access_log_lines()`).

`tls=certificates` (from tests/tls.py) makes nginx serve https:// and wss:// itself ("TLS at
nginx" in docs/deploy.md), still proxying plain HTTP to the chat.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tls import Certificates

NGINX = "/usr/sbin/nginx"
READ_TIMEOUT_S = 90  # longer than the chat's --ping-interval (30 s): see site_config
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def nginx_binary() -> str | None:
    """Debian's nginx, or whichever is on PATH; None if there is none."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    return shutil.which("nginx")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to 0, read it, let it go)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def site_config(listen: str | Sequence[str], upstream: str, *, server_name: str = "localhost",
                read_timeout_s: int = READ_TIMEOUT_S, ssl_certificate: str | None = None,
                ssl_certificate_key: str | None = None) -> str:
    """The `http {}` part that proxies the chat: the page and the WebSocket on one address.

    Args:
        listen: what follows `listen`, e.g. "127.0.0.1:8443", or several: ["443", "[::]:443"].
        upstream: the chat server's host:port, e.g. "127.0.0.1:8080".
        ssl_certificate, ssl_certificate_key: TLS at nginx (both or neither).

    The two maps go in `http {}` once; docs/deploy.md shows this text with placeholders.
    """
    tls = ssl_certificate is not None and ssl_certificate_key is not None
    listens = [listen] if isinstance(listen, str) else list(listen)
    lines = [
        "# WebSocket proxying (nginx.org/en/docs/http/websocket.html): Upgrade and Connection",
        "# are hop-by-hop headers, so nginx passes them on only when told to.",
        "map $http_upgrade $connection_upgrade {",
        "    default upgrade;",
        "    ''      close;",
        "}",
        "# RFC 7239 Forwarded: an IPv6 address must be quoted and in brackets.",
        "map $remote_addr $forwarded_for {",
        "    ~:      'for=\"[$remote_addr]\"';",
        "    default 'for=$remote_addr';",
        "}",
        "upstream chat {",
        f"    server {upstream};",
        "}",
        "server {",
        *(f"    listen {address}{' ssl' if tls else ''};" for address in listens),
        f"    server_name {server_name};",
    ]
    if tls:
        lines += [
            f"    ssl_certificate     {ssl_certificate};",
            f"    ssl_certificate_key {ssl_certificate_key};",
            "    ssl_protocols       TLSv1.2 TLSv1.3;",
        ]
    lines += [
        "    location / {",
        "        proxy_pass http://chat;",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Upgrade $http_upgrade;",
        "        proxy_set_header Connection $connection_upgrade;",
        "        # As the browser sent it, port included (draft-75 answers with it).",
        "        proxy_set_header Host $http_host;",
        "        # The chat believes these only with --trust-proxy, and only the part added",
        "        # here: X-Forwarded-For gets our peer appended, Forwarded is replaced.",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header Forwarded '$forwarded_for;proto=$scheme';",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        # nginx closes a proxied WebSocket after this long without a byte either",
        "        # way; the chat pings a user silent for 30 s, so this never cuts a live one.",
        f"        proxy_read_timeout {read_timeout_s}s;",
        f"        proxy_send_timeout {read_timeout_s}s;",
        "    }",
        "    # The counters are for the operator: scrape the chat itself, on its own address.",
        "    location = /metrics {",
        "        deny all;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main_config(directory: Path, site: str, worker_connections: int = 1024) -> str:
    """A complete nginx.conf that keeps everything in `directory` (see the module docstring)."""
    d = directory
    user = ""
    if os.geteuid() == 0:
        # As root, nginx would run its worker as "nobody", who may not enter our temporary
        # directory; the worker stays the user that started the test instead.
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                f"{grp.getgrgid(os.getegid()).gr_name};\n")
    indented = "".join(f"    {line}\n" if line else "\n" for line in site.splitlines())
    return (
        "# Generated by tests/nginx.py for one test.\n"
        f"{user}"
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"pid {d}/nginx.pid;\n"
        f"error_log {d}/error.log info;\n"
        f"events {{\n    worker_connections {worker_connections};\n}}\n"
        "http {\n"
        "    log_format chat '$remote_addr \"$request\" $status '\n"
        "                    'xff=\"$proxy_add_x_forwarded_for\" fwd=\"$forwarded_for\"';\n"
        f"    access_log {d}/access.log chat;\n"
        f"    client_body_temp_path {d}/client_body;\n"
        f"    proxy_temp_path {d}/proxy;\n"
        f"    fastcgi_temp_path {d}/fastcgi;\n"
        f"    uwsgi_temp_path {d}/uwsgi;\n"
        f"    scgi_temp_path {d}/scgi;\n"
        f"{indented}"
        "}\n"
    )


class Nginx:
    """One nginx master process (and its worker) proxying `host`:`port` to the chat."""

    def __init__(self, upstream_port: int, directory: Path, *,
                 upstream_host: str = "127.0.0.1", host: str = "127.0.0.1",
                 port: int | None = None,
                 tls: Certificates | None = None, read_timeout_s: int = READ_TIMEOUT_S,
                 binary: str | None = None) -> None:
        found = binary or nginx_binary()
        if found is None:
            raise FileNotFoundError("no nginx binary (apt-get install nginx)")
        self.binary = found
        self.directory = directory
        self.upstream = f"{upstream_host}:{upstream_port}"
        self.host = host  # where nginx listens: 127.0.0.1, or ::1 to see IPv6 clients
        self.port = port if port is not None else free_port(host)
        self.tls = tls
        self.read_timeout_s = read_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = directory / "nginx.conf"
        self.error_log = directory / "error.log"
        self.access_log = directory / "access.log"

    @property
    def authority(self) -> str:
        """host:port as in a URL (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def page_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}/"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.authority}/"

    def config(self) -> str:
        site = site_config(
            self.authority, self.upstream, read_timeout_s=self.read_timeout_s,
            ssl_certificate=str(self.tls.cert) if self.tls else None,
            ssl_certificate_key=str(self.tls.key) if self.tls else None)
        return main_config(self.directory, site)

    def start(self) -> Nginx:
        """Write the configuration, start nginx, and wait until it accepts connections.

        Raises:
            RuntimeError: nginx exited or did not listen within START_TIMEOUT s (the
                message has its error log).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        with open(self.directory / "nginx.out", "wb") as output:  # the child keeps its copy
            # -e: the error log before the configuration is read (else /var/log/nginx/).
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.directory), "-c", str(self.config_path),
                 "-e", str(self.error_log)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not listen on {self.port}:\n"
                                       f"{self.log()}") from None
                time.sleep(0.05)

    def stop(self) -> int | None:
        """Fast shutdown (SIGTERM to the master, by PID); returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        """nginx's own output and error log, for failure messages."""
        parts = []
        for path in (self.directory / "nginx.out", self.error_log):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def access_log_lines(self) -> list[str]:
        """The access log so far (nginx writes each line when the request ends)."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()

    def wait_for_access_log(self, text: str, timeout: float = START_TIMEOUT) -> str:
        """The first access-log line containing `text`, waiting for it: nginx writes a
        line once the request is over, which may be just after the client has its answer.

        Raises:
            AssertionError: no such line within `timeout` s (the message has the log).
        """
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log_lines():
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no access-log line with {text!r}:\n"
                                     + "\n".join(self.access_log_lines()))
            time.sleep(0.02)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
