"""Every script in examples/ (issue 14), started as its docstring says
(`python3 server.py 127.0.0.1 PORT --callback examples/NAME.py`) and used over real
connections with websocket.client's blocking API. The game's page is in test_game_page.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, ServerProcess
from wsclient import Client

from websocket.client import Connection, ConnectionClosed, HandshakeFailed, connect

Start = Callable[..., ServerProcess]
EXAMPLES = ROOT / "examples"
WAIT = 5.0  # seconds for any one message


def example(name: str) -> str:
    return str(EXAMPLES / name)


@contextmanager
def user(server: ServerProcess, path: str = "/",
         headers: tuple[tuple[str, str], ...] = ()) -> Iterator[Connection]:
    conn = connect(f"ws://127.0.0.1:{server.port}{path}", headers=headers, timeout=WAIT)
    try:
        yield conn
    finally:
        conn.close(timeout=2)


def until(conn: Connection, predicate: Callable[[str], bool]) -> str:
    """The first text message that `predicate` accepts (others are skipped)."""
    deadline = time.monotonic() + WAIT
    while True:
        message = conn.recv(max(deadline - time.monotonic(), 0.01))
        assert isinstance(message, str)
        if predicate(message):
            return message


def nothing_more(conn: Connection, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        conn.recv(wait)


def test_the_examples_start_with_the_command_their_docstring_gives() -> None:
    for script in sorted(EXAMPLES.glob("*.py")):
        text = script.read_text()
        command = f"python3 server.py 127.0.0.1 8080 --callback examples/{script.name}"
        assert command in text, script.name


def test_the_readme_lists_every_example_with_the_command_it_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    for script in sorted(EXAMPLES.glob("*.py")):
        row = next((line for line in section.splitlines()
                    if line.startswith(f"| `{script.name}` |")), None)
        assert row is not None, script.name
        command = row.rsplit("|", 2)[1].strip().strip("`")
        assert command.endswith(f"--callback examples/{script.name}")
        assert command in " ".join(script.read_text().replace("\\\n", " ").split()), command


# -- chatroom.py -------------------------------------------------------------------------


def test_chatroom_handles_who_me_notices_and_history_across_a_restart(
        start_server: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATROOM_DB", str(tmp_path / "history.sqlite3"))
    server = start_server("--callback", example("chatroom.py"))
    with user(server) as alice:
        assert alice.recv(WAIT) == "* you are guest1; /nick NAME to change it, /who, /me ACTION"
        alice.send("/nick alice")
        assert alice.recv(WAIT) == "* guest1 is now alice"
        with user(server) as bob:
            assert until(alice, lambda m: "joined" in m) == "* guest2 joined"
            assert bob.recv(WAIT).startswith("* you are guest2")
            bob.send("/nick Alice")
            assert bob.recv(WAIT) == "* Alice is taken"
            bob.send("/nick no spaces")
            assert bob.recv(WAIT) == "* a handle is 1-32 letters, digits, - or _"
            bob.send("/nick bob")
            assert alice.recv(WAIT) == "* guest2 is now bob"
            assert bob.recv(WAIT) == "* guest2 is now bob"
            bob.send("/who")
            assert bob.recv(WAIT) == "* here: alice, bob"
            alice.send("/me waves")
            assert bob.recv(WAIT) == "* alice waves"
            for n in range(105):  # more than the 100 kept
                alice.send(f"line {n}")
            for n in range(105):
                assert bob.recv(WAIT) == f"line {n}".join(("alice: ", ""))
        assert until(alice, lambda m: "left" in m) == "* bob left"
    assert server.stop() == 0

    # A new server on the same file: the newcomer gets the last 100 lines, in order.
    server = start_server("--callback", example("chatroom.py"))
    with user(server) as carol:
        replay = [carol.recv(WAIT) for _ in range(100)]
        expected = ["* alice waves", *(f"alice: line {n}" for n in range(105))][-100:]
        assert replay == expected
        assert carol.recv(WAIT) == "* you are guest1; /nick NAME to change it, /who, /me ACTION"
        nothing_more(carol)


# -- auth.py -------------------------------------------------------------------------------


TOKENS = "alice:s3cret,bob:hunter2"


def test_auth_lets_token_holders_post_and_guests_only_read(
        start_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKENS", TOKENS)
    monkeypatch.delenv("AUTH_GUESTS", raising=False)  # the default: guests read
    server = start_server("--callback", example("auth.py"))
    with user(server, "/?token=s3cret") as alice, \
            user(server, headers=(("Cookie", "theme=dark; token=hunter2"),)) as bob, \
            user(server) as guest:
        assert alice.recv(WAIT) == "* welcome alice, you may post"
        assert bob.recv(WAIT) == "* welcome bob, you may post"
        assert guest.recv(WAIT) == "* you may read; to post, send /login TOKEN"
        assert until(alice, lambda m: "joined" in m) == "* bob joined"
        alice.send("hello")
        assert until(bob, lambda m: m.startswith("alice")) == "alice: hello"
        assert guest.recv(WAIT) == "alice: hello"  # guests read
        assert alice.recv(WAIT) == "alice: hello"
        guest.send("let me in")
        assert guest.recv(WAIT) == "* read-only: send /login TOKEN to post"
        guest.send("/login wrong")
        assert guest.recv(WAIT) == "* wrong token"
        server.wait_for_log(r"user \d+: a wrong token")
        nothing_more(alice)  # nothing the guest sent reached anyone
        guest.send("/login hunter2")  # the first-message login, for clients without URLs
        assert guest.recv(WAIT) == "* welcome bob, you may post"
        guest.send("now I can")
        assert until(alice, lambda m: not m.startswith("*")) == "bob: now I can"


def test_auth_refuses_guests_when_configured(start_server: Start,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKENS", TOKENS)
    monkeypatch.setenv("AUTH_GUESTS", "refuse")
    server = start_server("--callback", example("auth.py"))
    with user(server, "/?token=s3cret") as alice:
        assert alice.recv(WAIT) == "* welcome alice, you may post"
        for path, headers in (("/?token=nope", ()), ("/", (("Cookie", "token=nope"),)),
                              ("/", (("Cookie", 'token="unterminated'),))):
            # A wrong token in the URL or a cookie: refused at the handshake (on_request).
            with pytest.raises(HandshakeFailed) as failed:
                connect(f"ws://127.0.0.1:{server.port}{path}", headers=headers, timeout=WAIT)
            assert failed.value.status == 401
            server.wait_for_log(r"a wrong token, refused with 401")
        cases: list[tuple[tuple[tuple[str, str], ...], str]] = [
            ((), "hello"),  # no token: the first message must be a /login
            ((("Cookie", "theme=dark"),), "/login nope"),  # ... and be a valid one
        ]
        for headers, first in cases:
            guest = connect(f"ws://127.0.0.1:{server.port}/", headers=headers, timeout=WAIT)
            assert guest.recv(WAIT) == "* send /login TOKEN first"
            guest.send(first)
            with pytest.raises(ConnectionClosed) as closed:
                guest.recv(WAIT)
            assert (closed.value.code, closed.value.reason) == (1008, "a valid token is needed")
            guest.close(timeout=2)
        with user(server) as late:
            assert late.recv(WAIT) == "* send /login TOKEN first"
            alice.send("not for guests")
            assert alice.recv(WAIT) == "alice: not for guests"
            late.send("/login hunter2")
            assert late.recv(WAIT) == "* welcome bob, you may post"  # not alice's line
            assert alice.recv(WAIT) == "* bob joined"
            late.send("hi")
            assert alice.recv(WAIT) == "bob: hi"
        nothing_more(alice)


# -- json_chat.py -------------------------------------------------------------------------


def test_json_chat_validates_and_explains_every_mistake(start_server: Start) -> None:
    server = start_server("--callback", example("json_chat.py"))
    with user(server) as alice, user(server) as bob:
        assert json.loads(alice.recv(WAIT)) == {"type": "welcome", "you": "guest1"}
        assert json.loads(bob.recv(WAIT)) == {"type": "welcome", "you": "guest2"}
        until(alice, lambda m: json.loads(m) == {"type": "joined", "name": "guest2"})
        until(bob, lambda m: json.loads(m) == {"type": "joined", "name": "guest2"})

        alice.send(json.dumps({"type": "nick", "name": "alice"}))
        changed = {"type": "nick", "from": "guest1", "to": "alice"}
        assert json.loads(alice.recv(WAIT)) == changed
        assert json.loads(bob.recv(WAIT)) == changed
        alice.send(json.dumps({"type": "say", "text": "héllo"}))
        said = json.loads(bob.recv(WAIT))
        assert said["type"] == "said" and said["from"] == "alice" and said["text"] == "héllo"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", said["at"])
        assert json.loads(alice.recv(WAIT)) == said
        bob.send('{"type": "who"}')
        assert json.loads(bob.recv(WAIT)) == {"type": "who", "users": ["alice", "guest2"]}

        mistakes: list[tuple[str | bytes, str, str]] = [
            ("not json", "bad-json", "Expecting value at character 0"),
            ('{"type": "say", "text": "x"', "bad-json", "Expecting ',' delimiter"),
            ("[1, 2]", "not-an-object", 'a message is a JSON object with a "type"'),
            ('{"type": "shout"}', "unknown-type", "type must be one of nick, say, who"),
            ('{"text": "no type"}', "unknown-type", "type must be one of"),
            ('{"type": "say"}', "bad-field", "say needs text: a string of 1-1000 characters"),
            ('{"type": "say", "text": ""}', "bad-field", "text must be a string of 1-1000"),
            (json.dumps({"type": "say", "text": "x" * 1001}), "bad-field", "text must be"),
            ('{"type": "say", "text": 5}', "bad-field", "text must be"),
            ('{"type": "say", "text": "x", "to": "bob"}', "bad-field",
             "unexpected field(s) for say: to"),
            ('{"type": "nick", "name": "a b"}', "bad-field",
             "name must be 1-32 letters, digits, - or _"),
            ('{"type": "nick", "name": "alice"}', "bad-field", "name is taken"),
            (b"\x01\x02", "binary", "send JSON in text messages"),
        ]
        for sent, error, detail in mistakes:
            bob.send(sent)
            reply = json.loads(bob.recv(WAIT))
            assert reply["type"] == "error" and reply["error"] == error, (sent, reply)
            assert reply["detail"].startswith(detail), (sent, reply)
        nothing_more(alice)  # no mistake reached anyone else, and nobody was dropped
        assert bob.closed is None and alice.closed is None


# -- bot.py --------------------------------------------------------------------------------


def test_bot_answers_commands_and_announces_on_its_timer(
        start_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_INTERVAL", "0.3")
    server = start_server("--callback", example("bot.py"))
    with user(server) as alice, user(server) as bob:
        started = time.monotonic()
        first = until(alice, lambda m: m.endswith("here)"))
        assert first == "bot: type !help to see what I can do (2 here)"
        second = until(alice, lambda m: m.endswith("here)"))
        assert second == "bot: be kind; everyone here is a person (2 here)"
        assert time.monotonic() - started < 3  # every 0.3 s, not every 300

        def ask(command: str) -> str:
            bob.send(command)
            return until(bob, lambda m: not m.endswith("here)"))

        assert ask("!help") == "bot: !help, !time, !users, !roll NdM"
        assert re.fullmatch(r"bot: it is \d\d:\d\d:\d\d UTC", ask("!time"))
        assert ask("!users") == "bot: 2 here"
        rolled = re.fullmatch(r"bot: 3d6: (\d) \+ (\d) \+ (\d) = (\d+)", ask("!roll 3d6"))
        assert rolled is not None
        dice = [int(rolled[i]) for i in (1, 2, 3)]
        assert all(1 <= d <= 6 for d in dice) and sum(dice) == int(rolled[4])
        assert ask("!roll 99d6").startswith("bot: roll like this")
        assert ask("!dance") == "bot: I do not know !dance; try !help"
        bob.send("hi all")  # not a command: to everyone, as in the article
        assert until(alice, lambda m: not m.endswith("here)")) == "hi all"
        assert until(bob, lambda m: not m.endswith("here)")) == "hi all"


# -- game.py (over the wire; the page itself is tested in Chromium) -------------------------


def state(conn: Connection) -> dict[str, object]:
    message = json.loads(until(conn, lambda m: "board" in m))
    assert isinstance(message, dict)
    return message


def test_game_plays_a_whole_game_with_seats_turns_and_a_watcher(start_server: Start) -> None:
    server = start_server("--callback", example("game.py"))
    with user(server) as x, user(server) as o:
        assert state(x)["you"] == "X"
        assert state(o)["you"] == "O"
        with user(server) as watcher:
            seen = state(watcher)
            assert seen["you"] is None and seen["watchers"] == 1
            o.send('{"move": 0}')
            assert json.loads(until(o, lambda m: "error" in m)) == {"error": "not your turn"}
            watcher.send('{"move": 0}')
            assert json.loads(until(watcher, lambda m: "error" in m)) == {
                "error": "you are watching"}
            for player, cell in ((x, 0), (o, 3), (x, 1), (o, 4)):
                player.send(json.dumps({"move": cell}))
                while state(player)["board"][cell] == " ":  # the move was played
                    pass
            x.send('{"move": 4}')
            assert json.loads(until(x, lambda m: "error" in m)) == {"error": "that cell is taken"}
            x.send('{"move": 9}')
            assert json.loads(until(x, lambda m: "error" in m)) == {
                "error": "a move is a cell from 0 to 8"}
            x.send('{"move": 2}')  # X X X on the top row
            final = None
            while final is None or final["winner"] is None:
                final = state(watcher)
            assert final["board"] == "XXXOO    " and final["winner"] == "X"
            o.send('{"move": 5}')
            assert json.loads(until(o, lambda m: "error" in m)) == {"error": "the game is over"}
            o.send('{"restart": true}')
            fresh = None
            while fresh is None or fresh["board"] != " " * 9:
                fresh = state(x)
            assert fresh["winner"] is None and fresh["turn"] == "X"
    # Everyone has left: the next two take the seats again.
    with user(server) as x2, user(server) as o2:
        assert state(x2)["you"] == "X"
        assert state(o2)["you"] == "O"


def test_game_gives_a_leaving_players_seat_to_the_first_watcher(start_server: Start) -> None:
    server = start_server("--callback", example("game.py"))
    with user(server) as x:
        o = connect(f"ws://127.0.0.1:{server.port}/", timeout=WAIT)
        with user(server) as watcher, user(server) as second_watcher:
            assert state(x)["you"] == "X" and state(o)["you"] == "O"
            x.send('{"move": 4}')
            while state(watcher)["board"][4] == " ":
                pass
            o.close()  # O leaves mid-game
            seat = state(watcher)
            while seat["you"] is None:
                seat = state(watcher)
            assert seat["you"] == "O" and seat["board"] == " " * 9  # a new game
            assert seat["watchers"] == 1
            assert state(second_watcher)["you"] is None


def test_game_pages_are_served_with_the_client_folder_rules(start_server: Start,
                                                           tmp_path: Path) -> None:
    """PAGES replaces client/ and nothing leaves it: dot segments, encoded dots and a
    symbolic link pointing out of the folder are all 404, as for client/."""
    shutil.copy(EXAMPLES / "game.py", tmp_path / "game.py")
    shutil.copytree(EXAMPLES / "game_pages", tmp_path / "game_pages")
    (tmp_path / "secret.txt").write_text("not for the web")
    os.symlink(tmp_path / "secret.txt", tmp_path / "game_pages" / "link.txt")
    server = start_server("--callback", str(tmp_path / "game.py"))
    server.wait_for_log(r"Pages +: .*game_pages \(instead of client/\)")

    def get(path: str) -> tuple[int, bytes]:
        with Client(server.port) as http:
            http.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Connection: close\r\n\r\n".encode())
            status, _, body = http.http_response()
            return status, body

    status, body = get("/")
    assert status == 200 and b"<title>Tic-tac-toe</title>" in body
    assert get("/game.js")[0] == 200
    assert get("/chat.js")[0] == 404  # client/ is not behind it
    for escape in ("/../game.py", "/%2e%2e/game.py", "/%2E%2E%2Fsecret.txt", "/link.txt",
                   "/..%2fsecret.txt", "//etc/passwd", "/game_pages/../../secret.txt"):
        status, body = get(escape)
        assert status == 404 and b"not for the web" not in body, escape
    assert get("/%ff")[0] == 400
