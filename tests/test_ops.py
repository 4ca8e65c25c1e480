"""What an operator watches, over real sockets: GET /healthz and, with --metrics, GET /metrics.

/metrics is read by `prometheus_client.parser` (the reference parser) and by the strict line
grammar of tests/test_metrics.py; the tests make traffic happen and check that the numbers
move by exactly what happened.
"""
from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable

import pytest
from conftest import ServerProcess
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import strict_lines
from websockets.sync.client import connect
from wsclient import Client, close_payload, draft76_request, wait_until

Start = Callable[..., ServerProcess]
TIMEOUT = 10.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        connection.close()


def scrape(port: int) -> Samples:
    """GET /metrics, checked line by line and parsed: {(sample name, labels): value}."""
    status, headers, body = get(port, "/metrics")
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode("utf-8")
    list(strict_lines(text))
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def at(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- /healthz ------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [(), ("--metrics",), ("--path", "/chat")])
def test_healthz_answers_ok(start_server: Start, options: tuple[str, ...]) -> None:
    server = start_server(*options)
    status, headers, body = get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    status, headers, body = get(server.port, "/healthz", "HEAD")
    assert (status, headers["content-length"], body) == (200, "3", b"")


def test_healthz_needs_no_page(start_server: Start, tmp_path: object) -> None:
    """The endpoints are the server's, not files: a server whose page is missing answers."""
    import shutil

    from conftest import ROOT

    copy = tmp_path / "checkout"  # type: ignore[operator]
    shutil.copytree(ROOT / "websocket", copy / "websocket")
    shutil.copy(ROOT / "server.py", copy / "server.py")  # and no client/ directory
    server = start_server("--metrics", script=copy / "server.py")
    assert get(server.port, "/")[0] == 404
    assert get(server.port, "/healthz")[:3:2] == (200, b"ok\n")
    assert get(server.port, "/metrics")[0] == 200


def test_healthz_keeps_the_connection_alive(chat_server: ServerProcess) -> None:
    with Client(chat_server.port) as client:
        for _ in range(3):
            client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = client.http_response()
            assert (status, headers["connection"], body) == (200, "keep-alive", b"ok\n")


# -- /metrics --------------------------------------------------------------------------------------

def test_metrics_is_404_without_the_option(chat_server: ServerProcess) -> None:
    status, _, body = get(chat_server.port, "/metrics")
    assert status == 404 and b"metrics" not in body
    chat_server.wait_for_log(r"HTTP 404: not found")


def test_metrics_move_with_traffic(start_server: Start) -> None:
    server = start_server("--metrics")
    server.wait_for_log(rf"Metrics\s*: http://127\.0\.0\.1:{server.port}/metrics")
    before = scrape(server.port)
    assert at(before, "websocket_users_open", protocol="rfc6455") == 0
    assert at(before, "websocket_tls_handshake_failures_total") == 0  # (no TLS yet: 0)
    assert at(before, "process_start_time_seconds") <= time.time()

    alice = Client(server.port).handshake()
    bob = Client(server.port).handshake()
    with Client(server.port) as hixie:
        hixie.send(draft76_request(server.port))
        assert hixie.http_response()[0] == 101
        hixie.read_exactly(16)  # the draft-76 challenge answer
        during = scrape(server.port)
        assert at(during, "websocket_users_open", protocol="rfc6455") == 2
        assert at(during, "websocket_users_open", protocol="hixie76") == 1
        # alice, bob, hixie and this scrape's own connection (the previous one is closed)
        assert wait_until(lambda: at(scrape(server.port), "websocket_connections_open") == 4)
        for text in ("one", "two", "three"):
            alice.send_text(text)
            for user in (alice, bob):
                assert user.recv_message() == text
            assert hixie.read_exactly(2 + len(text)) == b"\x00" + text.encode() + b"\xff"
    after = scrape(server.port)

    def moved(name: str, **labels: str) -> float:
        return at(after, name, **labels) - at(before, name, **labels)

    assert moved("websocket_messages_received_total") == 3
    assert moved("websocket_broadcasts_total") == 3
    assert moved("websocket_broadcast_deliveries_total") == 9  # 3 users each
    assert moved("websocket_messages_sent_total") == 9
    # alice's three frames (2 + 4 mask + payload), the two handshakes and the scrapes'
    # requests: at least this many bytes came in; at least the 9 frames went out.
    assert moved("websocket_received_bytes_total") > 3 * 6 + len("onetwothree")
    assert moved("websocket_sent_bytes_total") > 6 * 2 + len("onetwothree") * 3
    assert moved("websocket_connections_total") >= 3 + 3  # 3 users and 3 scrapes at least
    assert moved("websocket_loop_passes_total") > 0
    assert moved("websocket_callback_seconds_total") > 0
    assert wait_until(lambda: at(scrape(server.port), "websocket_users_open",
                                 protocol="hixie76") == 0)  # the hixie user left

    alice.close_handshake(1000)
    bob.send_frame(0x8, close_payload(4001, "bye"))
    assert bob.recv_close() == (4001, "")  # the code echoed (RFC 6455 §5.5.1)
    server.wait_for_log(r"left: 4001")
    with Client(server.port) as nowhere:  # refused: a draft-76 key that does not add up
        nowhere.send(draft76_request(server.port, key1="12345"))
        assert nowhere.http_response()[0] == 400
    assert get(server.port, "/no-such-file")[0] == 404
    server.wait_for_log(r"HTTP 404")
    last = scrape(server.port)
    assert at(last, "websocket_closes_total", code="1000") - \
        at(before, "websocket_closes_total", code="1000") == 1
    assert at(last, "websocket_closes_total", code="4001") == 1
    assert at(last, "websocket_refused_requests_total", status="400") == 1
    assert at(last, "websocket_refused_requests_total", status="404") == 1
    assert at(last, "websocket_users_open", protocol="rfc6455") == 0


def test_a_user_dropped_as_too_slow_is_counted(start_server: Start) -> None:
    server = start_server("--max-buffer", "65536", "--metrics")
    talker = Client(server.port).handshake()
    sleeper = Client(server.port).handshake()
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "x" * 16000
    for _ in range(2000):
        talker.send_text(chunk)
        assert talker.recv_message() == chunk
        if "is not reading" in server.log:
            break
    server.wait_for_log(r"is not reading")
    samples = scrape(server.port)
    assert at(samples, "websocket_slow_users_dropped_total") == 1
    assert wait_until(lambda: at(scrape(server.port), "websocket_closes_total",
                                 code="1008") == 1, TIMEOUT)


def test_a_real_client_and_the_counters_agree(start_server: Start) -> None:
    server = start_server("--metrics")
    with connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TIMEOUT, proxy=None) as user:
        for n in range(50):
            user.send(f"message {n}")
            assert user.recv(TIMEOUT) == f"message {n}"
        samples = scrape(server.port)
    assert at(samples, "websocket_messages_received_total") == 50
    assert at(samples, "websocket_broadcast_deliveries_total") == 50
