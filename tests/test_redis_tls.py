"""rediss://: the Redis link over TLS, with a real redis-server speaking TLS only (issue 13).

Each test starts its own redis-server with `--port 0 --tls-port P` (tests/redis_server.py)
and certificates made by openssl (tests/tls.py), and real `server.py` processes with
--redis rediss://... Without redis-server or openssl they skip, except under CI=true.
"""
from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SERVER, ServerProcess
from redis_server import RedisServer
from test_redis_link import chat_round, wait_subscribed
from test_rooms import nothing_arrives
from tls import OPENSSL, Certificates, make_certificates, require_openssl
from wsclient import Client

from websocket.net.connect import client_context
from websocket.net.tls import TlsConfigError
from websocket.protocol.redis_entries import RedisAddress, parse_redis_url

Start = Callable[..., ServerProcess]
StartRedis = Callable[..., RedisServer]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    require_openssl()
    return make_certificates(tmp_path_factory.mktemp("redis-tls"))


def tls_of(certs: Certificates) -> tuple[Path, Path, Path]:
    return certs.cert, certs.key, certs.ca_cert


# -- no Redis needed ---------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("rediss://127.0.0.1:6380", RedisAddress("127.0.0.1", 6380, tls=True)),
    ("rediss://:pw@localhost/3", RedisAddress("localhost", 6379, "pw", None, 3, True)),
    ("rediss://alice:pw@[::1]:7000", RedisAddress("::1", 7000, "pw", "alice", 0, True)),
    ("redis://127.0.0.1:6380", RedisAddress("127.0.0.1", 6380, tls=False)),
])
def test_rediss_urls(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


def test_the_client_context_verifies_certificate_and_name(certs: Certificates) -> None:
    for context in (client_context(), client_context(str(certs.ca_cert))):
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    only_ours = client_context(str(certs.ca_cert))
    assert only_ours.cert_store_stats()["x509_ca"] == 1  # the test CA, nothing else
    for bad, problem in ((certs.garbage, "holds no PEM certificate"),
                         (certs.missing, "cannot read the CA file"),
                         (certs.unreadable, "cannot read the CA file")):
        with pytest.raises(TlsConfigError, match=problem):
            client_context(str(bad))


def test_a_bad_cafile_is_one_error_line(start_server: Start, certs: Certificates) -> None:
    with pytest.raises(AssertionError) as failed:
        start_server("--redis", "rediss://127.0.0.1:1", "--redis-cafile", str(certs.garbage))
    assert "server.py: error: --redis-cafile: " in str(failed.value)
    assert "holds no PEM certificate" in str(failed.value)
    assert "Traceback" not in str(failed.value)


# -- with a TLS redis-server -------------------------------------------------------------------

def test_two_servers_chat_as_one_over_rediss(start_server: Start, start_redis: StartRedis,
                                             certs: Certificates) -> None:
    redis = start_redis(tls=tls_of(certs))
    assert redis.url.startswith("rediss://127.0.0.1:")
    a, b = (start_server("--redis", redis.url, "--redis-cafile", str(certs.ca_cert))
            for _ in range(2))
    for server in (a, b):
        server.wait_for_log(r"Redis connected: 127\.0\.0\.1:\d+ \(TLS\)")
    users = [Client(server.port).handshake("/") for server in (a, b, a, b)]
    wait_subscribed(redis, "/", 2)  # (the redis-server has no plain port: TLS it is)
    chat_round(users, users, 100)
    big = "x" * 200_000  # more than one TLS record (16 KiB) each way
    users[0].send_text(big)
    for user in users:
        assert user.recv_message() == big


def test_localhost_by_name_and_history_over_rediss(start_server: Start, start_redis: StartRedis,
                                                   certs: Certificates) -> None:
    redis = start_redis(tls=tls_of(certs))
    url = f"rediss://localhost:{redis.port}"
    a, b = (start_server("--redis", url, "--redis-cafile", str(certs.ca_cert),
                         "--history", "5") for _ in range(2))
    for server in (a, b):
        server.wait_for_log(r"Redis connected: localhost:\d+ \(TLS\)")
    with Client(a.port).handshake("/r") as a1:
        wait_subscribed(redis, "/r", 1)
        for i in range(3):
            a1.send_text(f"h{i}")
        assert [a1.recv_message() for _ in range(3)] == ["h0", "h1", "h2"]
        time.sleep(0.3)
        with Client(b.port).handshake("/r") as b1:  # replayed from Redis, over TLS
            assert [b1.recv_message() for _ in range(3)] == ["h0", "h1", "h2"]


def test_redis_over_tls_killed_and_restarted(start_server: Start, start_redis: StartRedis,
                                             certs: Certificates) -> None:
    redis = start_redis(tls=tls_of(certs))
    a, b = (start_server("--redis", redis.url, "--redis-cafile", str(certs.ca_cert))
            for _ in range(2))
    for server in (a, b):
        server.wait_for_log(r"Redis connected: 127\.0\.0\.1:\d+ \(TLS\)")
    with Client(a.port).handshake() as a1, Client(b.port).handshake() as b1:
        wait_subscribed(redis, "/", 2)
        chat_round([a1, b1], [a1, b1], 10)
        redis.kill()
        for server in (a, b):
            server.wait_for_log(r"Redis link lost \(.*\); chatting locally")
        chat_round([a1], [a1], 5)  # local chat never stops
        assert nothing_arrives(b1)
        redis.start()  # the same port, TLS again: a new handshake on each connection
        for server in (a, b):
            server.wait_for_log(r"Redis link restored \(127\.0\.0\.1:\d+ \(TLS\)\)",
                                timeout=15)
        wait_subscribed(redis, "/", 2)
        chat_round([a1, b1], [a1, b1], 10)
    for server in (a, b):
        assert "Traceback" not in server.log


def test_password_over_rediss(start_server: Start, start_redis: StartRedis,
                              certs: Certificates) -> None:
    redis = start_redis(password="s3cret", tls=tls_of(certs))
    good = start_server("--redis", redis.url, "--redis-cafile", str(certs.ca_cert))
    wrong = start_server("--redis", f"rediss://:nope@127.0.0.1:{redis.port}",
                         "--redis-cafile", str(certs.ca_cert))
    none = start_server("--redis", f"rediss://127.0.0.1:{redis.port}",
                        "--redis-cafile", str(certs.ca_cert))
    good.wait_for_log(r"Redis connected: 127\.0\.0\.1:\d+ \(TLS\)")
    wrong.wait_for_log(r"Redis refused the password")
    none.wait_for_log(r"Redis requires a password")
    with Client(good.port).handshake() as g1, Client(good.port).handshake() as g2, \
            Client(wrong.port).handshake() as w1, Client(wrong.port).handshake() as w2:
        wait_subscribed(redis, "/", 1)
        chat_round([g1], [g1, g2], 5)
        chat_round([w1], [w1, w2], 5)  # local chat goes on on the refused one
        assert nothing_arrives(g1)
    assert "Redis connected" not in wrong.log + none.log


def check_refused(server: ServerProcess, pattern: str) -> None:
    """`pattern` is logged once (not per retry), the link keeps retrying, chat stays local."""
    server.wait_for_log(pattern)
    with Client(server.port).handshake() as u1, Client(server.port).handshake() as u2:
        chat_round([u1, u2], [u1, u2], 5)
        time.sleep(1.5)  # several retries with the backoff
        chat_round([u1], [u1, u2], 3)
    lines = [line for line in server.log.splitlines() if "TLS" in line and "Redis at" in line]
    assert len(lines) == 1, lines
    assert "Traceback" not in server.log
    assert "Redis connected" not in server.log
    assert server.proc.poll() is None


def test_a_certificate_that_does_not_verify(start_server: Start, start_redis: StartRedis,
                                            certs: Certificates) -> None:
    self_signed = start_redis(tls=(certs.untrusted_cert, certs.untrusted_key, certs.ca_cert))
    server = start_server("--redis", self_signed.url, "--redis-cafile", str(certs.ca_cert))
    check_refused(server, r"Redis at 127\.0\.0\.1:\d+ \(TLS\): TLS: the certificate of "
                          r"127\.0\.0\.1 does not verify \(self[- ]signed certificate\); a "
                          r"private CA is given with --redis-cafile; chatting locally")


def test_the_system_store_does_not_trust_a_private_ca(start_server: Start,
                                                      start_redis: StartRedis,
                                                      certs: Certificates) -> None:
    redis = start_redis(tls=tls_of(certs))
    server = start_server("--redis", redis.url)  # no --redis-cafile: the system's CAs
    check_refused(server, r"TLS: the certificate of 127\.0\.0\.1 does not verify "
                          r"\((unable to get local issuer certificate|"
                          r"self[- ]signed certificate in certificate chain)\)")


def test_a_certificate_for_another_name(start_server: Start, start_redis: StartRedis,
                                        certs: Certificates, tmp_path: Path) -> None:
    # A certificate from the trusted CA, but for another host name than the URL's.
    other_key, other_cert = tmp_path / "other.key", tmp_path / "other.pem"
    for command in (
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(other_key)],
            ["req", "-new", "-key", str(other_key), "-subj", "/CN=other.example",
             "-addext", "subjectAltName=DNS:other.example", "-out", str(tmp_path / "o.csr")],
            ["x509", "-req", "-in", str(tmp_path / "o.csr"), "-CA", str(certs.ca_cert),
             "-CAkey", str(certs.directory / "ca.key"), "-set_serial", "7", "-days", "2",
             "-copy_extensions", "copy", "-out", str(other_cert)]):
        subprocess.run([OPENSSL, *command], check=True, capture_output=True, timeout=30)
    redis = start_redis(tls=(other_cert, other_key, certs.ca_cert))
    server = start_server("--redis", redis.url, "--redis-cafile", str(certs.ca_cert))
    check_refused(server, r"TLS: the certificate of 127\.0\.0\.1 does not verify "
                          r"\(IP address mismatch")


def test_rediss_to_a_plain_redis_port(start_server: Start, start_redis: StartRedis,
                                      certs: Certificates) -> None:
    plain = start_redis()
    server = start_server("--redis", f"rediss://127.0.0.1:{plain.port}",
                          "--redis-cafile", str(certs.ca_cert))
    server.wait_for_log(r"CTRL-C to quit")
    with Client(server.port).handshake() as u1, Client(server.port).handshake() as u2:
        chat_round([u1, u2], [u1, u2], 5)  # while the handshakes wait (never blocking)
    # (Redis 7 reads the ClientHello as the start of a command and waits: the timeout)
    assert "TLS handshake" not in server.log or "failed" in server.log
    check_refused(server, r"Redis at 127\.0\.0\.1:\d+ \(TLS\): TLS handshake (failed: .*|"
                          r"not complete within 5 s); is that port plain Redis\? "
                          r"\(redis:// is without TLS\)")


def test_help_names_rediss_and_the_cafile() -> None:
    result = subprocess.run([sys.executable, str(SERVER), "--help"], capture_output=True,
                            text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == 0
    assert "--redis-cafile PEM" in result.stdout
    assert "rediss://" in result.stdout
