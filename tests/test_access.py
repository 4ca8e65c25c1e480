"""Who may connect: --path, on_request, --idle-timeout and --trust-proxy, over real sockets.

The server is `server.py` as a user starts it (conftest.py); the clients are the raw one of
wsclient.py (every byte ours) and the `websockets` library (a client nobody here wrote), so
the refusals are checked as a real client reads them. Unit tests of websocket/chat/access.py
come first.
"""
from __future__ import annotations

import json
import re
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from wsclient import Client, close_payload, draft75_request, wait_until

from websocket.chat.access import (
    MAX_REASON,
    HookResultError,
    UpgradeRequest,
    check_path,
    client_address,
    parse_cookies,
    refusal_from,
)
from websocket.errors import HttpError
from websocket.net.ratelog import WARNING_BURST

Start = Callable[..., ServerProcess]
TIMEOUT = 10.0


# -- access.py on its own ---------------------------------------------------------------------

def test_check_path_is_an_exact_match_of_the_path() -> None:
    check_path("/anything", None)
    paths = frozenset({"/chat", "/room"})
    check_path("/chat", paths)
    check_path("/room?x=1", paths)
    for target in ("/", "/chat/", "/chat/x", "/Chat", "/chatroom"):
        with pytest.raises(HttpError) as caught:
            check_path(target, paths)
        assert caught.value.status == 404
        assert "/chat, /room" in caught.value.reason


@pytest.mark.parametrize("values, cookies", [
    (["session=abc; theme=dark"], {"session": "abc", "theme": "dark"}),
    (["a=1", "b=2"], {"a": "1", "b": "2"}),  # two Cookie headers (HTTP/2 proxies do this)
    (['q="quoted value"'], {"q": "quoted value"}),
    (["first=1; first=2"], {"first": "1"}),
    (["noequals; =novalue; ok=yes;;"], {"ok": "yes"}),
    (["tok=a=b=c"], {"tok": "a=b=c"}),
    ([""], {}),
])
def test_parse_cookies(values: list[str], cookies: dict[str, str]) -> None:
    assert parse_cookies(values) == cookies


def test_upgrade_request_takes_the_request_apart() -> None:
    headers = (("Host", "chat.example.com"), ("Cookie", "session=s1"),
               ("X-Token", "t"), ("x-token", "u"))
    seen = UpgradeRequest.from_request("/chat%20room?token=a%20b&token=2&empty=", headers,
                                       ("192.0.2.1", 4711), "https://chat.example.com",
                                       "chat.example.com")
    assert seen.path == "/chat room"
    assert seen.target == "/chat%20room?token=a%20b&token=2&empty="
    assert seen.query == {"token": "a b", "empty": ""}
    assert seen.query_pairs == (("token", "a b"), ("token", "2"), ("empty", ""))
    assert seen.cookies == {"session": "s1"}
    assert seen.header("X-TOKEN") == "t, u"
    assert seen.header("missing") is None
    assert seen.address == ("192.0.2.1", 4711)
    assert "s1" not in repr(seen)  # cookies stay out of logs that print the request


@pytest.mark.parametrize("result, status, reason", [
    (403, 403, "refused by the server's on_request check"),
    ((401, "log in first"), 401, "log in first"),
    ((429, "slow\r\ndown\nplease"), 429, "slow down please"),  # one line, always
    ((403, ""), 403, "refused by the server's on_request check"),
    ((503, "x" * 1000), 503, "x" * (MAX_REASON - 3) + "..."),
])
def test_refusals(result: object, status: int, reason: str) -> None:
    refusal = refusal_from(result)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (status, reason)


@given(st.text(), st.lists(st.tuples(st.sampled_from(["Cookie", "cookie", "X"]), st.text())))
def test_any_request_from_the_network_can_be_taken_apart(target: str,
                                                         headers: list[tuple[str, str]]) -> None:
    """The target and headers are the client's: taking them apart never raises."""
    seen = UpgradeRequest.from_request("/" + target, tuple(headers), ("192.0.2.1", 1), None,
                                       "h")
    assert seen.path.startswith("/")
    assert all(isinstance(value, str) for value in seen.cookies.values())
    repr(seen)


def test_none_accepts() -> None:
    assert refusal_from(None) is None


@pytest.mark.parametrize("result", [200, 101, 399, 600, True, "403", 403.0, (403,),
                                    (403, 5), [403, "no"], object()])
def test_anything_else_is_the_scripts_bug(result: object) -> None:
    with pytest.raises(HookResultError):
        refusal_from(result)


def test_client_address_says_whether_a_header_was_there() -> None:
    assert client_address([("Host", "x")]) == (None, False)
    assert client_address([("X-Forwarded-For", "203.0.113.9")]) == (("203.0.113.9", None), True)
    assert client_address([("Forwarded", "for=unknown")]) == (None, True)
    assert client_address([("forwarded", 'for="[2001:db8::1]:80"')]) == (("2001:db8::1", 80),
                                                                         True)


# -- --path ---------------------------------------------------------------------------------------

def test_path_upgrades_only_there_and_the_page_is_still_served(start_server: Start) -> None:
    server = start_server("--path", "/chat", "--path", "/lobby")
    alice = Client(server.port).handshake("/chat")
    # The query does not count; and each path is a room of its own (issue 13, rooms.py).
    bob = Client(server.port).handshake("/chat?room=1")
    carol = Client(server.port).handshake("/lobby")
    for path in ("/", "/chat/", "/other"):
        with Client(server.port) as refused:
            refused.send(refused.upgrade_request(path)[0])
            status, _, body = refused.http_response()
            assert status == 404, path
            assert body == (f"no WebSocket at {path}: this server's WebSocket is at "
                            "/chat, /lobby\n").encode()
            assert refused.at_eof()
    server.wait_for_log(r"HTTP 404: no WebSocket at /other")
    with Client(server.port) as hixie:  # the 2010 drafts are held to the same paths
        hixie.send(draft75_request(server.port, "/"))
        assert hixie.http_response()[0] == 404
    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TIMEOUT, proxy=None)
    assert caught.value.response.status_code == 404
    # The page and its files are served from / as before, and the page is told the path.
    with urllib.request.urlopen(server.page_url, timeout=TIMEOUT) as response:
        page = response.read()
    assert b'<meta name="websocket-path" content="/chat">' in page
    with urllib.request.urlopen(server.page_url + "chat.js", timeout=TIMEOUT) as response:
        assert response.status == 200
    alice.send_text("one room per path")
    assert alice.recv_message() == bob.recv_message() == "one room per path"
    carol.send_text("the other room")
    assert carol.recv_message() == "the other room"
    assert re.search(r"WebSocket URL\s*: ws://127\.0\.0\.1:\d+/chat\n.*WebSocket URL\s*: "
                     r"ws://127\.0\.0\.1:\d+/lobby", server.log)


def test_without_path_any_path_upgrades_and_the_page_says_slash(chat_server: ServerProcess) \
        -> None:
    for path in ("/", "/chat", "/any/where?x=1"):
        Client(chat_server.port).handshake(path).close_handshake()
    with urllib.request.urlopen(chat_server.page_url, timeout=TIMEOUT) as response:
        assert b'<meta name="websocket-path" content="/">' in response.read()


@pytest.mark.parametrize("option, bad, error", [
    ("--path", "chat", "not a path like /chat"),
    ("--path", "/chat?x=1", "not a path like /chat"),
    ("--path", "/a b", "not a path like /chat"),
    ("--path", "/c#d", "not a path like /chat"),
    ("--idle-timeout", "0", "must be greater than 0"),
    ("--idle-timeout", "-5", "must be greater than 0"),
    ("--idle-timeout", "soon", "not a number"),
])
def test_a_bad_option_is_one_line(option: str, bad: str, error: str) -> None:
    import subprocess
    import sys

    from conftest import SERVER

    done = subprocess.run([sys.executable, str(SERVER), "127.0.0.1", "0", f"{option}={bad}"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert error in done.stderr and "Traceback" not in done.stderr


# -- on_request -------------------------------------------------------------------------------

HOOK = '''
import json

def on_request(request, server):
    server.log("on_request saw", json.dumps({
        "path": request.path, "query": request.query, "cookies": request.cookies,
        "address": list(request.address), "origin": request.origin, "host": request.host,
        "x_token": request.header("X-Token")}))
    action = request.query.get("do")
    if action == "refuse":
        return 403
    if action == "reason":
        return (401, "log in first: no session cookie")
    if action == "raise":
        raise RuntimeError("the session store is down")
    if action == "nonsense":
        return "yes please"
    if request.cookies.get("session") == "bad":
        return 403, "unknown session"
    return None

def process(user, message, server):
    server.broadcast(message)
'''


@pytest.fixture
def hooked(start_server: Start, tmp_path: Path) -> ServerProcess:
    script = tmp_path / "gate.py"
    script.write_text(textwrap.dedent(HOOK))
    return start_server("--callback", str(script))


def saw(server: ServerProcess, count: int) -> dict[str, object]:
    """What on_request saw the `count`-th time it was called (it logs every call)."""
    pattern = re.compile(r"on_request saw (\{.*\})")
    server.wait_for_log(pattern)
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [pattern.search(line) for line in server.lines]
        calls = [json.loads(match.group(1)) for match in found if match]
        if len(calls) >= count:
            return dict(calls[count - 1])
        assert time.monotonic() < deadline, server.log
        time.sleep(0.02)


def test_on_request_accepts_and_sees_the_request(hooked: ServerProcess) -> None:
    with Client(hooked.port) as user:
        request, _ = user.upgrade_request("/room%201?token=abc&do=accept",
                                          extra="Cookie: session=s1; theme=dark\r\n"
                                                "X-Token: t-42\r\n")
        user.send(request)
        assert user.http_response()[0] == 101
        user.send_text("in")
        assert user.recv_message() == "in"
        seen = saw(hooked, 1)
        assert seen["path"] == "/room 1"
        assert seen["query"] == {"token": "abc", "do": "accept"}
        assert seen["cookies"] == {"session": "s1", "theme": "dark"}
        assert seen["address"] == ["127.0.0.1", user.sock.getsockname()[1]]
        assert seen["origin"] == f"http://127.0.0.1:{hooked.port}"
        assert seen["host"] == f"127.0.0.1:{hooked.port}"
        assert seen["x_token"] == "t-42"


@pytest.mark.parametrize("query, cookie, status, body", [
    ("?do=refuse", "", 403, b"refused by the server's on_request check\n"),
    ("?do=reason", "", 401, b"log in first: no session cookie\n"),
    ("", "Cookie: session=bad\r\n", 403, b"unknown session\n"),
    ("?do=raise", "", 500, b"the server's on_request check failed\n"),
    ("?do=nonsense", "", 500, b"the server's on_request check failed\n"),
])
def test_on_request_refuses(hooked: ServerProcess, query: str, cookie: str, status: int,
                            body: bytes) -> None:
    good = Client(hooked.port).handshake("/")
    with Client(hooked.port) as refused:
        refused.send(refused.upgrade_request("/" + query, extra=cookie)[0])
        got, headers, text = refused.http_response()
        assert (got, text) == (status, body)
        assert headers["connection"] == "close"
        assert refused.at_eof()
    hooked.wait_for_log(rf"HTTP {status}: {re.escape(body.decode().strip())}")
    if query == "?do=raise":
        hooked.wait_for_log(r"on_request\(\) raised; refusing with 500")
        hooked.wait_for_log(r"RuntimeError: the session store is down")
        assert "Traceback" in hooked.log
    if query == "?do=nonsense":
        hooked.wait_for_log(r"on_request must return None.*not 'yes please'")
    # Nobody else noticed, and the server is alive and still asks the hook.
    good.send_text("still here")
    assert good.recv_message() == "still here"
    Client(hooked.port).handshake("/").close_handshake()
    assert hooked.proc.poll() is None


def test_a_real_client_reads_the_refusal(hooked: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{hooked.port}/?do=reason", open_timeout=TIMEOUT, proxy=None)
    response = caught.value.response
    assert response.status_code == 401
    assert response.reason_phrase == "Unauthorized"
    assert response.body == b"log in first: no session cookie\n"
    with connect(f"ws://127.0.0.1:{hooked.port}/?do=accept", open_timeout=TIMEOUT,
                 proxy=None, additional_headers={"Cookie": "session=fine"}) as accepted:
        accepted.send("hello")
        assert accepted.recv(TIMEOUT) == "hello"


def test_on_request_does_not_see_page_requests(hooked: ServerProcess) -> None:
    with urllib.request.urlopen(hooked.page_url + "?do=refuse", timeout=TIMEOUT) as page:
        assert page.status == 200
    Client(hooked.port).handshake("/?do=accept").close_handshake()
    assert saw(hooked, 1)["query"] == {"do": "accept"}  # the first call was the upgrade


# -- --idle-timeout ------------------------------------------------------------------------------

def test_idle_user_is_closed_with_1000_and_a_talking_one_is_not(start_server: Start) -> None:
    server = start_server("--idle-timeout", "1")
    talker = Client(server.port).handshake()
    joined_at = time.monotonic()
    idler = Client(server.port).handshake()  # reads, never sends
    pinger = Client(server.port).handshake()  # sends pings only: those are not messages
    seen_at = None
    while time.monotonic() - joined_at < 2.5:  # the talker talks every 0.1 s for 2.5 s
        talker.send_text("tick")
        assert talker.recv_message() == "tick"
        pinger.send_frame(0x9, b"p")
        if seen_at is None and "no message for 1 s" in server.log:
            seen_at = time.monotonic()
        time.sleep(0.1)
    assert seen_at is not None, server.log
    # Closed after the timeout, and not much later (the sweep runs every 0.1 s).
    assert 0.9 <= seen_at - joined_at <= 2.0, seen_at - joined_at
    talker.send_text("still talking")
    assert talker.recv_message() == "still talking"
    closed = [line for line in server.lines if "no message for 1 s" in line]
    assert len(closed) == 2 and "user 1 " not in "".join(closed), server.log
    for user in (idler, pinger):
        assert user.recv_close() == (1000, "idle for 1 s")
        user.send_frame(0x8, close_payload(1000))
        assert user.at_eof()
    server.wait_for_log(r"user 3 .* left: 1000 \(normal\) 'idle for 1 s'; closing handshake")


def test_without_idle_timeout_a_silent_user_stays(chat_server: ServerProcess) -> None:
    silent = Client(chat_server.port).handshake()
    talker = Client(chat_server.port).handshake()
    time.sleep(1.5)
    talker.send_text("you there?")
    assert silent.recv_message() == "you there?"


# -- --trust-proxy --------------------------------------------------------------------------------


def join_with(port: int, headers: str) -> tuple[Client, str]:
    user = Client(port)
    request, _ = user.upgrade_request("/", extra=headers)
    user.send(request)
    assert user.http_response()[0] == 101
    address = user.recv_message()
    assert isinstance(address, str)
    return user, address


def test_trust_proxy_takes_the_nearest_proxys_address(start_server: Start,
                                                      address_script: Path) -> None:
    server = start_server("--trust-proxy", "--callback", str(address_script))
    user, address = join_with(server.port, "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n")
    port = user.sock.getsockname()[1]
    assert address == "('203.0.113.7', None)"
    server.wait_for_log(rf"user \d+ \(203\.0\.113\.7 via 127\.0\.0\.1:{port}\) joined")
    _, address = join_with(server.port, 'Forwarded: for="[2001:db8::7]:4711";proto=https\r\n'
                                        "X-Forwarded-For: 6.6.6.6\r\n")
    assert address == "('2001:db8::7', 4711)"  # Forwarded wins
    server.wait_for_log(r"\(\[2001:db8::7\]:4711 via 127\.0\.0\.1:\d+\) joined")


def test_trust_proxy_falls_back_to_the_socket_and_says_why(start_server: Start,
                                                           address_script: Path) -> None:
    server = start_server("--trust-proxy", "--callback", str(address_script))
    user, address = join_with(server.port, "X-Forwarded-For: not-an-address\r\n")
    assert address == repr(("127.0.0.1", user.sock.getsockname()[1]))
    server.wait_for_log(r"unusable Forwarded / X-Forwarded-For header; using the socket's")
    user, address = join_with(server.port, "")  # no header: the socket, silently
    assert address == repr(("127.0.0.1", user.sock.getsockname()[1]))


def test_without_trust_proxy_the_headers_are_ignored(start_server: Start,
                                                     address_script: Path) -> None:
    server = start_server("--callback", str(address_script))
    user, address = join_with(server.port, "X-Forwarded-For: 203.0.113.7\r\n"
                                           "Forwarded: for=203.0.113.8\r\n")
    port = user.sock.getsockname()[1]
    assert address == repr(("127.0.0.1", port))
    server.wait_for_log(rf"user \d+ \(127\.0\.0\.1:{port}\) joined")
    assert "203.0.113" not in server.log


def test_the_readme_token_example_works(start_server: Start, tmp_path: Path) -> None:
    """The README's tokens.py, run as its first line says, --allow-origin included."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("```python\n# tokens.py", 1)[1].split("```", 1)[0]
    script = tmp_path / "tokens.py"
    script.write_text("# tokens.py" + code)
    first_line = code.splitlines()[0]
    origin = first_line.split("--allow-origin ", 1)[1].strip()
    assert origin == "http://127.0.0.1:8080"
    server = start_server("--callback", str(script), "--allow-origin", origin)
    url = f"ws://127.0.0.1:{server.port}/"
    with pytest.raises(InvalidStatus) as caught:
        connect(url + "?token=guess", origin=origin, open_timeout=TIMEOUT, proxy=None)
    assert caught.value.response.status_code == 401
    assert caught.value.response.body == b"a valid ?token= is needed\n"
    with pytest.raises(InvalidStatus) as caught:  # the right token from another site's page
        connect(url + "?token=s3cret", origin="https://evil.example",
                open_timeout=TIMEOUT, proxy=None)
    assert caught.value.response.status_code == 403
    with connect(url + "?token=s3cret", origin=origin,
                 open_timeout=TIMEOUT, proxy=None) as alice:
        alice.send("hi")
        assert alice.recv(TIMEOUT) == "hi"


def test_a_flood_of_refused_and_raising_upgrades_costs_nobody_else(hooked: ServerProcess) \
        -> None:
    """An attacker opens 60 connections at once, each sending an upgrade that on_request
    refuses or raises on, in one packet, and never reads; a healthy user chats meanwhile."""
    healthy = Client(hooked.port).handshake("/")
    attackers = []
    for n in range(60):
        attacker = Client(hooked.port)
        query = "?do=raise" if n % 3 == 0 else "?do=refuse"
        request = attacker.upgrade_request("/" + query)[0]
        attacker.send(request + request)  # a second one pipelined behind the first
        attackers.append(attacker)
    worst = 0.0
    for n in range(100):
        started = time.monotonic()
        healthy.send_text(f"healthy {n}")
        assert healthy.recv_message() == f"healthy {n}"  # every one, in order
        worst = max(worst, time.monotonic() - started)
    print(f"healthy user's worst round trip during the flood: {worst * 1000:.1f} ms")
    for n, attacker in enumerate(attackers):
        status, _, _ = attacker.http_response()
        assert status == (500 if n % 3 == 0 else 403)
        assert attacker.at_eof()  # one answer: the pipelined request is never parsed
        attacker.close()
    # The first ten refusals of a status are logged as they come, the rest counted
    # (ratelog.py: anybody can cause them as fast as they connect).
    assert wait_until(lambda: hooked.log.count(
        "HTTP 403: refused by the server's on_request check") == WARNING_BURST), hooked.log
    assert wait_until(lambda: hooked.log.count("on_request() raised; refusing with 500") == 20)
    assert worst < 2.0, worst  # nobody waited on the refusals (generous for a loaded CI)
    healthy.close_handshake()
    assert hooked.stop() == 0  # ... and the count written when the server stops, if not before
    assert (f"HTTP 403: refused by the server's on_request check (and {40 - WARNING_BURST - 1}"
            " more like it in the last ") in hooked.log
