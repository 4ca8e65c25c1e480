"""End-to-end tests of the chat page (client/) in Debian's Chromium, driven by Playwright.

Every page a test opens is watched: a JavaScript exception, a console error or a dialog
(alert, confirm) fails the test. The only console errors ever allowed are Chromium's own
"WebSocket connection to ... failed" lines, and only in tests that make a connection fail.

Without /usr/bin/chromium or the playwright package these tests are skipped, except under
CI=true, where they fail instead. `CHAT_SCREENSHOT=docs/chat.png` makes the two-user test
save its screenshot there (the picture in the README).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from websocket.query import parse_query

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture, as a skip or (CI) a failure
    sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from conftest import ServerProcess
    from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Several pages chat at once: none of them may be slowed down for being in the background.
    "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]
TIMEOUT_MS = 10_000  # any single wait; the reconnect after a restart needs about 1-2 s
# The browser (or the skip/fail verdict) comes before any server is started.
pytestmark = pytest.mark.usefixtures("browser")
WS_FAILED = re.compile(r"^WebSocket connection to '\S+' failed")
INJECTION = "<img src=x onerror=alert(1)>"
NON_ASCII = "émoji 👋 ✓"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """One headless Chromium for the module, with a fresh profile in a temporary folder."""
    if sync_playwright is None:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    with tempfile.TemporaryDirectory(prefix="chat-chromium-") as profile, \
            sync_playwright() as playwright:
        # launch() refuses a --user-data-dir argument; a persistent context takes the folder.
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 800, "height": 600}, timeout=30_000,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    page: Page
    allow_ws_failures: bool
    problems: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if self.allow_ws_failures and WS_FAILED.search(message.text):
            return
        self.problems.append(f"console error: {message.text}")

    def on_dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def open_page(browser: BrowserContext) -> Iterator[Callable[..., Page]]:
    """Open a watched page; at the end, fail on any error it logged, then close it."""
    watched: list[Watched] = []

    def open_(url: str, *, allow_ws_failures: bool = False, init_script: str = "",
              viewport: dict[str, int] | None = None) -> Page:
        page = browser.new_page()
        w = Watched(page, allow_ws_failures)
        watched.append(w)
        page.on("pageerror", lambda error: w.problems.append(f"page error: {error}"))
        page.on("console", w.on_console)
        page.on("dialog", w.on_dialog)
        if init_script:
            page.add_init_script(init_script)
        if viewport:
            page.set_viewport_size(viewport)  # type: ignore[arg-type]
        page.goto(url)
        return page

    yield open_
    problems = [f"{w.page.url}: {p}" for w in watched for p in w.problems]
    for w in watched:
        w.page.close()
    assert not problems, "\n".join(problems)


# ---- helpers ------------------------------------------------------------------------------

def connect(page: Page, handle: str) -> None:
    page.bring_to_front()
    page.fill("#handle", handle)
    page.click("#connect")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")


def say(page: Page, text: str, *, press_enter: bool = True) -> None:
    page.bring_to_front()  # a background tab's animation frames are throttled: slow clicks
    page.fill("#message", text)
    if press_enter:
        page.press("#message", "Enter")
    else:
        page.click("#send")
    expect(page.locator("#message")).to_have_value("")


# What a console line shows after its time stamp: exactly the received message.
MESSAGES_JS = """() => [...document.querySelectorAll('#console .line.message')].map(
    line => line.textContent.slice(line.querySelector('time').textContent.length + 1))"""


def wait_for_message(page: Page, message: str) -> None:
    page.wait_for_function(
        f"(wanted) => ({MESSAGES_JS})().includes(wanted)", arg=message, timeout=TIMEOUT_MS,
        polling=50)  # not requestAnimationFrame: a background tab gets too few frames


def messages(page: Page) -> list[str]:
    result: list[str] = page.evaluate(MESSAGES_JS)
    return result


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rgb(css: str) -> tuple[float, float, float]:
    r, g, b = (int(n) for n in re.findall(r"\d+", css)[:3])
    return r, g, b


def luminance(css: str) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb(css)
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


# ---- tests --------------------------------------------------------------------------------

def test_two_users_chat_both_ways_literally(chat_server: ServerProcess,
                                             open_page: Callable[..., Page]) -> None:
    alice = open_page(chat_server.page_url)
    bob = open_page(chat_server.page_url)
    # The URL defaults to where the page came from.
    expect(alice.locator("#server")).to_have_value(chat_server.ws_url)
    connect(alice, "alice")
    connect(bob, "bob")

    conversation = [
        (alice, "alice", "Hi Bob! Is the new server up?", False),  # the Send button
        (bob, "bob", NON_ASCII, True),                             # Enter
        (alice, "alice", INJECTION, True),
        (bob, "bob", "That shows as text: nothing ran. 🎉", False),
    ]
    for sender, handle, text, enter in conversation:
        say(sender, text, press_enter=enter)
        for page in (alice, bob):
            wait_for_message(page, f"{handle}: {text}")

    expected = [f"{handle}: {text}" for _, handle, text, _ in conversation]
    assert messages(alice) == expected
    assert messages(bob) == expected
    for page in (alice, bob):
        console = page.locator("#console")
        expect(console.locator("img")).to_have_count(0)
        expect(console.locator(".line.message .text").nth(2)).to_have_text(INJECTION)
        for stamp in console.locator(".line time").all_text_contents():
            assert re.fullmatch(r"\d\d:\d\d:\d\d", stamp), stamp
    # Lines from the page's own handle are marked as its own.
    expect(alice.locator("#console .line.mine")).to_have_count(2)

    target = os.environ.get("CHAT_SCREENSHOT")
    if target:
        alice.locator("#message").fill("See you tomorrow")
        alice.screenshot(path=target)


def test_keyboard_only_on_a_phone(chat_server: ServerProcess,
                                  open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url, viewport={"width": 360, "height": 640})
    # Nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # Every control has a label.
    for label, element_id in [("Server", "server"), ("Handle", "handle"), ("Message", "message")]:
        expect(page.get_by_label(label, exact=True)).to_have_id(element_id)

    def tab_from(start: str, count: int, *, back: bool = False) -> list[str]:
        page.focus(start)
        order = []
        for _ in range(count):
            page.keyboard.press("Shift+Tab" if back else "Tab")
            order.append(page.evaluate("document.activeElement.id"))
        return order

    # Closed, no handle yet: Connect, Disconnect, Message and Send are disabled.
    assert tab_from("#server", 2) == ["handle", "console"]
    page.focus("#handle")
    page.keyboard.type("kim")
    assert tab_from("#server", 3) == ["handle", "connect", "console"]
    page.focus("#handle")
    page.keyboard.press("Enter")  # Enter in the handle field connects
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#message")).to_be_focused()
    assert tab_from("#disconnect", 3) == ["console", "message", "send"]
    assert tab_from("#message", 2, back=True) == ["console", "disconnect"]
    # The focused button shows the page's own focus ring, not the browser's faint default.
    ring = page.evaluate("(s => [s.outlineStyle, s.outlineWidth])"
                         "(getComputedStyle(document.activeElement))")
    assert ring == ["solid", "3px"], ring

    page.focus("#message")
    for n in range(1, 16):
        page.keyboard.type(f"line {n}")
        page.keyboard.press("Enter")
    wait_for_message(page, "kim: line 15")
    expect(page.locator("#message")).to_have_value("")
    expect(page.locator("#message")).to_be_focused()
    # The console overflowed and shows its newest line.
    scroll = page.evaluate(
        "(() => { const c = document.getElementById('console');"
        " return [c.scrollTop, c.clientHeight, c.scrollHeight]; })()")
    top, height, total = scroll
    assert total > height, scroll
    assert top + height >= total - 1, scroll
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_handle_rules_disconnect_and_connect_again(chat_server: ServerProcess,
                                                   open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url)
    connect_button, disconnect_button = page.locator("#connect"), page.locator("#disconnect")
    send, message = page.locator("#send"), page.locator("#message")
    for control in (connect_button, disconnect_button, send, message):
        expect(control).to_be_disabled()

    for bad in ["   ", "x" * 33, "ü" * 33]:
        page.fill("#handle", bad)
        expect(connect_button).to_be_disabled()
    expect(page.locator("#handle-hint")).to_contain_text("32 at most")
    page.fill("#handle", "👋" * 32)  # 32 characters, 64 UTF-16 units
    expect(connect_button).to_be_enabled()

    page.fill("#handle", "  carol  ")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("Connected as carol")
    expect(connect_button).to_be_disabled()
    expect(page.locator("#handle")).to_be_disabled()
    expect(page.locator("#server")).to_be_disabled()
    for control in (disconnect_button, send, message):
        expect(control).to_be_enabled()
    say(page, "first")
    wait_for_message(page, "carol: first")

    page.click("#disconnect")
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#console .line.info").last).to_contain_text(
        "Disconnected (code 1000, normal closure")
    # The Disconnect button never schedules a retry, and the URL is editable again.
    expect(page.locator("#status")).to_have_text("Not connected")
    expect(page.locator("#error")).to_be_hidden()
    for control in (disconnect_button, send, message):
        expect(control).to_be_disabled()
    expect(connect_button).to_be_enabled()
    expect(connect_button).to_be_focused()
    expect(page.locator("#server")).to_be_editable()

    page.click("#connect")
    expect(page.locator("#status")).to_have_text("Connected as carol")
    say(page, "second")
    wait_for_message(page, "carol: second")
    assert messages(page) == ["carol: first", "carol: second"]


def test_server_stops_and_returns(chat_server: ServerProcess,
                                  start_server: Callable[..., ServerProcess],
                                  open_page: Callable[..., Page]) -> None:
    stays = open_page(chat_server.page_url, allow_ws_failures=True)
    quits = open_page(chat_server.page_url, allow_ws_failures=True)
    connect(stays, "stays")
    connect(quits, "quits")
    port = chat_server.port

    chat_server.stop()  # Ctrl-C: every user is closed with 1001
    for page in (stays, quits):
        expect(page.locator("#error")).to_contain_text("code 1001, going away")
        expect(page.locator("#error")).to_contain_text("Reconnecting automatically")
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
        expect(page.locator("#status")).to_contain_text("Reconnecting in")
        expect(page.locator("#console .line.error").first).to_contain_text("code 1001")
        expect(page.locator("#send")).to_be_disabled()
    # Disconnect while waiting stops retrying.
    quits.click("#disconnect")
    expect(quits.locator("#status")).to_have_attribute("data-state", "closed")
    expect(quits.locator("#console .line.info").last).to_have_text(
        re.compile(r"Stopped reconnecting\.$"))

    restarted = start_server(port=port)  # stopped by the fixture, by PID
    try:
        expect(stays.locator("#status")).to_have_attribute("data-state", "open")
        expect(stays.locator("#error")).to_be_hidden()
        expect(stays.locator("#console .line.info").last).to_contain_text("Reconnected to")
        say(stays, "back again")
        wait_for_message(stays, "stays: back again")
        # The page that pressed Disconnect stayed out.
        expect(quits.locator("#status")).to_have_attribute("data-state", "closed")
        assert "stays: back again" not in messages(quits)
    finally:
        restarted.stop()


def test_failed_connection_says_what_to_check(chat_server: ServerProcess,
                                              open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url, allow_ws_failures=True)
    page.fill("#handle", "eve")
    error = page.locator("#error")

    for typed, complaint in [("ftp://127.0.0.1/", "must start with ws:// or wss://"),
                             ("ws://[nonsense", "is not a URL"),
                             ("", "Enter the chat server's WebSocket URL")]:
        page.fill("#server", typed)
        page.click("#connect")
        expect(error).to_contain_text(complaint)
        expect(page.locator("#server")).to_be_focused()
        expect(page.locator("#status")).to_have_attribute("data-state", "closed")

    dead = f"127.0.0.1:{closed_port()}"
    page.fill("#server", dead)  # no scheme: ws:// is assumed
    page.click("#connect")
    expect(error).to_contain_text(f"Could not connect to ws://{dead}/ (code 1006")
    for check in ["port", "Is the server running?", "127.0.0.1", "0.0.0.0"]:
        expect(error).to_contain_text(check)
    # A first connection that fails is not retried: the URL is probably wrong.
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#connect")).to_be_enabled()


def test_server_parameter_overrides_the_url(chat_server: ServerProcess,
                                            start_server: Callable[..., ServerProcess],
                                            open_page: Callable[..., Page]) -> None:
    from websockets.sync.client import connect as plain_connect

    other = start_server()
    page = open_page(f"{chat_server.page_url}?server={other.ws_url}")
    expect(page.locator("#server")).to_have_value(other.ws_url)
    connect(page, "dave")
    # A plain WebSocket client on the other server reads the page's frames as they are.
    with plain_connect(other.ws_url, open_timeout=5, close_timeout=2) as plain:
        say(page, "via the other server")
        assert plain.recv(timeout=5) == "dave: via the other server"
        plain.send("a plain client")
        wait_for_message(page, "a plain client")
        assert plain.recv(timeout=5) == "a plain client"
    expect(page.locator("#console .line.message .who")).to_have_count(1)


def test_opened_from_a_file_asks_for_the_url(chat_server: ServerProcess,
                                            open_page: Callable[..., Page]) -> None:
    page = open_page((CLIENT / "index.html").as_uri())
    expect(page.locator("#server")).to_have_value("")
    expect(page.locator("#server")).to_be_focused()
    expect(page.locator("#server-hint")).to_contain_text("opened from a file")
    expect(page.locator("#console")).to_contain_text("Enter the chat server's WebSocket URL")
    expect(page.locator("#error")).to_be_hidden()

    page.fill("#handle", "fay")
    page.click("#connect")
    expect(page.locator("#error")).to_contain_text("Enter the chat server's WebSocket URL")
    expect(page.locator("#server")).to_be_focused()

    page.fill("#server", chat_server.ws_url)
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("Connected as fay")
    expect(page.locator("#error")).to_be_hidden()
    say(page, "from a file")
    wait_for_message(page, "fay: from a file")


def test_browser_without_websocket(chat_server: ServerProcess,
                                   open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url, init_script="delete window.WebSocket;")
    expect(page.locator("#error")).to_contain_text(
        "Sorry, your browser does not support WebSocket")
    for control in ("#connect", "#disconnect", "#send", "#message"):
        expect(page.locator(control)).to_be_disabled()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_readable_in_light_and_dark(scheme: str, chat_server: ServerProcess,
                                    open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url)
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    connect(page, "hal")
    say(page, "colours")
    wait_for_message(page, "hal: colours")

    def style(selector: str, prop: str) -> str:
        value: str = page.eval_on_selector(
            selector, "(el, prop) => getComputedStyle(el)[prop]", prop)
        return value

    page_bg = style("body", "backgroundColor")
    panel = style("#console", "backgroundColor")
    assert (luminance(page_bg) > 0.7) if scheme == "light" else (luminance(page_bg) < 0.05)
    pairs = {
        "body text": (style("body", "color"), page_bg),
        "console text": (style("#console .line.message .text", "color"), panel),
        "handle": (style("#console .line.message .who", "color"), panel),
        "time": (style("#console .line time", "color"), panel),
        "info line": (style("#console .line.info", "color"), panel),
        "hint": (style("#handle-hint", "color"), page_bg),
        "status": (style("#status", "color"), page_bg),
        "button": (style("#send", "color"), style("#send", "backgroundColor")),
    }
    low = {name: round(contrast(*pair), 2) for name, pair in pairs.items()
           if contrast(*pair) < 4.5}
    assert not low, f"contrast below 4.5:1 in the {scheme} scheme: {low}"


def test_chromium_chats_compressed_by_default(start_server: Callable[..., ServerProcess],
                                              open_page: Callable[..., Page],
                                              browser: BrowserContext) -> None:
    """Chromium offers permessage-deflate and the server agrees (the 101's header, seen by
    the browser itself through the DevTools protocol); Chromium's frames arrive with RSV1,
    ours leave with RSV1 and the pages show the inflated text."""
    server = start_server("-v")
    alice = open_page(server.page_url)
    bob = open_page(server.page_url)
    cdp = browser.new_cdp_session(alice)
    answers: list[dict[str, str]] = []
    cdp.on("Network.webSocketHandshakeResponseReceived",
           lambda event: answers.append(event["response"]["headers"]))
    cdp.send("Network.enable")
    connect(alice, "alice")
    connect(bob, "bob")
    lines = [f"line {i}: the compressed chat works in a real browser, as by default" for i
             in range(3)]
    for text in lines:
        say(alice, text)
        for page in (alice, bob):
            wait_for_message(page, f"alice: {text}")
    say(bob, "short")
    for page in (alice, bob):
        wait_for_message(page, "bob: short")
    assert messages(bob) == [f"alice: {text}" for text in lines] + ["bob: short"]
    extensions = [value for headers in answers for name, value in headers.items()
                  if name.lower() == "sec-websocket-extensions"]
    assert extensions == ["permessage-deflate; client_no_context_takeover"]
    server.wait_for_log(r"permessage-deflate agreed: permessage-deflate; "
                        r"client_no_context_takeover")
    server.wait_for_log(r"user \d+ < TEXT \(compressed\) \d+ bytes")  # RSV1 from Chromium
    server.wait_for_log(r"user \d+ > TEXT \d+ bytes, compressed to \d+")  # RSV1 to it


def test_the_page_connects_to_the_servers_path(start_server: Callable[..., ServerProcess],
                                               open_page: Callable[..., Page]) -> None:
    """With --path /chat the page (served from /) connects to /chat, where upgrades are."""
    server = start_server("--path", "/chat", "--path", "/other")
    alice = open_page(server.page_url)
    bob = open_page(server.page_url)
    expect(alice.locator("#server")).to_have_value(server.ws_url + "chat")
    connect(alice, "alice")
    connect(bob, "bob")
    say(alice, "on the chat path")
    for page in (alice, bob):
        wait_for_message(page, "alice: on the chat path")
    # (the page names its handle in the query)
    server.wait_for_log(r"joined: RFC 6455, resource /chat(\?handle=\w+)?,")
    assert "HTTP 404" not in server.log


def test_room_parameter_joins_that_room(chat_server: ServerProcess,
                                        open_page: Callable[..., Page]) -> None:
    """?room=NAME joins the room /NAME (issue 13); the page says which; rooms are apart."""
    python = open_page(chat_server.page_url + "?room=python")
    also = open_page(chat_server.page_url + "?room=python")
    lobby = open_page(chat_server.page_url)
    expect(python.locator("#server")).to_have_value(chat_server.ws_url + "python")
    connect(python, "ada")
    connect(also, "guido")
    connect(lobby, "bob")
    expect(python.locator("#room")).to_have_text("In room /python")
    expect(lobby.locator("#room")).to_have_text("In the lobby (/)")
    say(python, "snakes")
    for page in (python, also):
        wait_for_message(page, "ada: snakes")
    say(lobby, "lobby only")
    wait_for_message(lobby, "bob: lobby only")
    say(also, "after")
    wait_for_message(python, "guido: after")
    assert messages(python) == ["ada: snakes", "guido: after"]
    assert messages(lobby) == ["bob: lobby only"]
    chat_server.wait_for_log(r"joined: RFC 6455, resource /python")


DROP_SCRIPT = '''
def process(user, message, server):
    if message.endswith(": /drop"):
        # The server drops the user, then the room goes on without it.
        server.disconnect(user, 1012, "service restart")
        for n in range(1, AWAY + 1):
            server.broadcast(f"server: away {n}", room=user.room)
        return
    server.broadcast(message, room=user.room)
'''


@pytest.mark.parametrize("history, away", [(20, 3), (2, 5)])
def test_reconnect_loses_nothing_and_repeats_nothing(start_server: Callable[..., ServerProcess],
                                                     open_page: Callable[..., Page],
                                                     tmp_path: Path, history: int,
                                                     away: int) -> None:
    """Issue 13: with --history, the page resumes after the last message it showed; when
    the gap is older than the history it says so. Each message is on the page once."""
    script = tmp_path / "drop.py"
    script.write_text(f"AWAY = {away}\n" + DROP_SCRIPT)
    server = start_server("--history", str(history), "--callback", str(script))
    alice = open_page(server.page_url + "?room=resume")
    bob = open_page(server.page_url + "?room=resume")
    connect(alice, "alice")
    connect(bob, "bob")
    expect(bob.locator("#presence")).to_have_text("Here (2): alice, bob")
    for text in ("one", "two"):
        say(alice, text)
        for page in (alice, bob):
            wait_for_message(page, f"alice: {text}")
    say(bob, "/drop")
    expect(bob.locator("#console")).to_contain_text("Reconnected", timeout=TIMEOUT_MS)
    last = f"server: away {away}"
    wait_for_message(bob, last)
    say(alice, "three")
    for page in (alice, bob):
        wait_for_message(page, "alice: three")
    before = ["alice: one", "alice: two"]
    everything = before + [f"server: away {n}" for n in range(1, away + 1)] + ["alice: three"]
    assert messages(alice) == everything
    if away <= history:
        assert messages(bob) == everything
        expect(bob.locator("#console .line.error", has_text="missed")).to_have_count(0)
    else:  # only the newest `history` came back, and the page says some were missed
        kept = [f"server: away {n}" for n in range(away - history + 1, away + 1)]
        assert messages(bob) == before + kept + ["alice: three"]
        expect(bob.locator("#console .line.error", has_text="missed")).to_have_count(1)
    expect(bob.locator("#presence")).to_have_text("Here (2): alice, bob")
    # Alice's page saw bob leave and come back as two deltas (issue 18: the list comes once).
    expect(alice.locator("#presence")).to_have_text("Here (2): alice, bob")
    server.wait_for_log(r"user \d+ .*left: 1012")


# Queries as the page (URLSearchParams) writes and reads them; websocket/query.py must read
# each one as Chromium does (issue 18, point 5). No leading "?": URLSearchParams drops one.
ODD_QUERIES = [
    "handle=ann&after=ab12.3", "a=1&&b=2&", "&&&", "flag", "=x", "=", "a==b", "a=1&a=2",
    "who=ann+bo", "who+am=i", "sum=1%2B1", "a=1;b=2", "p=100%", "p=%zz&q=%4", "p=%%41",
    "h=%FF", "h=%C3", "h=%C3%A9%", "h=%e2%82%ac", "h=b\u00e9a", "h=\u20ac+%E2%82%AC",
    "h=%00%0A%0D", "h=%F0%9F%98%80", "h=%ED%A0%80", "h=%C0%AF", "x=%2x&y=%%",
]


def test_the_query_parser_reads_queries_as_chromium_does(chat_server: ServerProcess,
                                                         open_page: Callable[..., Page]
                                                         ) -> None:
    page = open_page(chat_server.page_url)
    chromium = page.evaluate("queries => queries.map(q => [...new URLSearchParams(q)])",
                             ODD_QUERIES)
    for query, pairs in zip(ODD_QUERIES, chromium, strict=True):
        assert parse_query(query.encode("utf-8")) == tuple(map(tuple, pairs)), query
