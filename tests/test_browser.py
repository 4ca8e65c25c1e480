"""End-to-end tests of the chat page (client/) in Debian's Chromium, driven by Playwright.

Every page a test opens is watched: a JavaScript exception, a console error or a dialog
(alert, confirm) fails the test. The only console errors ever allowed are Chromium's own
"WebSocket connection to ... failed" lines, and only in tests that make a connection fail.

Without /usr/bin/chromium or the playwright package these tests are skipped, except under
CI=true, where they fail instead.

Screenshots: `test_the_page_as_people_see_it` saves the page at 1280 and 375 px, light and
dark, into reports/screenshots/ (git-ignored) on every run; with CHAT_DOCS_SCREENSHOTS=1 it
also writes the two 1280 px ones to docs/chat.png and docs/chat-dark.png (the README's
picture), so the picture comes from the test that checks the page.

Presence as changes (`presence_delta`) and message times are not sent by today's server:
`test_presence_changes_and_original_times_from_a_scripted_server` plays them to the page
from a small server of the test's own (the `websockets` library's), which also serves the
page, as our server does.
"""
from __future__ import annotations

import datetime
import json
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from websocket.protocol.query import parse_query

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture, as a skip or (CI) a failure
    sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from conftest import ServerProcess
    from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, Playwright
    from websockets.http11 import Request, Response
    from websockets.sync.server import ServerConnection

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
SCREENSHOTS = ROOT / "reports" / "screenshots"
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
TAGGED = "chat.history.v1"
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 375, "height": 667}
PHONE_KEYBOARD = {"width": 375, "height": 360}  # an on-screen keyboard takes the rest


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser tests must run", pytrace=False)
    pytest.skip(reason)


def _chromium(playwright: Playwright, profile: str) -> BrowserContext:
    # launch() refuses a --user-data-dir argument; a persistent context takes the folder.
    context = playwright.chromium.launch_persistent_context(
        profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 800, "height": 600}, timeout=30_000,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


# The Playwright that drives the module's Chromium, for the tests that need a second one.
_PLAYWRIGHT: list[Playwright] = []


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """One headless Chromium for the module, with a fresh profile in a temporary folder.
    (test_browser_wire.py and test_game_page.py use it too, by name.)"""
    if sync_playwright is None:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    with tempfile.TemporaryDirectory(prefix="chat-chromium-") as profile, \
            sync_playwright() as playwright:
        context = _chromium(playwright, profile)
        _PLAYWRIGHT.append(playwright)
        try:
            yield context
        finally:
            _PLAYWRIGHT.remove(playwright)
            context.close()


@pytest.fixture
def clocked(browser: BrowserContext) -> Iterator[BrowserContext]:
    """A Chromium of the test's own, for pages on a fixed clock: Playwright's clock is the
    whole context's and cannot be given back, so it must not be the module's."""
    with tempfile.TemporaryDirectory(prefix="chat-chromium-") as profile:
        context = _chromium(_PLAYWRIGHT[-1], profile)
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
              viewport: dict[str, int] | None = None, scheme: str = "light",
              context: BrowserContext | None = None) -> Page:
        page = (context or browser).new_page()
        w = Watched(page, allow_ws_failures)
        watched.append(w)
        page.on("pageerror", lambda error: w.problems.append(f"page error: {error}"))
        page.on("console", w.on_console)
        page.on("dialog", w.on_dialog)
        if init_script:
            page.add_init_script(init_script)
        if viewport:
            page.set_viewport_size(viewport)  # type: ignore[arg-type]
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
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


# Each message in the stream as "sender: text" (or the text alone when it had no sender):
# exactly the text received.
MESSAGES_JS = """() => [...document.querySelectorAll('#console .msg')].map(
    m => (m.dataset.who ? m.dataset.who + ': ' : '') + m.querySelector('.text').textContent)"""

# Everything in the stream, in order: ["msg", "who: text"], ["presence", "bob joined"],
# ["info", ...], ["error", ...], ["divider", "earlier messages"].
STREAM_JS = """() => {
  const out = [];
  for (const node of document.getElementById('console').children) {
    if (node.classList.contains('group')) {
      for (const m of node.querySelectorAll('.msg')) {
        out.push(['msg', (m.dataset.who ? m.dataset.who + ': ' : '')
                         + m.querySelector('.text').textContent]);
      }
    } else if (node.classList.contains('divider')) {
      out.push(['divider', node.querySelector('.text').textContent]);
    } else {
      out.push([node.classList[1], node.querySelector('.text').textContent]);
    }
  }
  return out;
}"""


def wait_for_message(page: Page, message: str) -> None:
    page.wait_for_function(
        f"(wanted) => ({MESSAGES_JS})().includes(wanted)", arg=message, timeout=TIMEOUT_MS,
        polling=50)  # not requestAnimationFrame: a background tab gets too few frames


def messages(page: Page) -> list[str]:
    result: list[str] = page.evaluate(MESSAGES_JS)
    return result


def stream(page: Page, *kinds: str) -> list[tuple[str, str]]:
    """The stream's items in order (only those of `kinds`, if given)."""
    items = [(kind, text) for kind, text in page.evaluate(STREAM_JS)]
    return [item for item in items if not kinds or item[0] in kinds]


def wait_for_line(page: Page, kind: str, text: str) -> None:
    page.wait_for_function(
        f"([kind, text]) => ({STREAM_JS})().some(([k, t]) => k === kind && t === text)",
        arg=[kind, text], timeout=TIMEOUT_MS, polling=50)


def people(page: Page) -> list[str]:
    names: list[str] = page.eval_on_selector_all("#people-list li",
                                                 "els => els.map(e => e.textContent)")
    return names


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not shown"
    return dict(found)


def fits_the_width(page: Page) -> None:
    width = page.viewport_size["width"]  # type: ignore[index]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    wide = page.evaluate("""(width) => [...document.querySelectorAll('body *')]
        .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5
                && !e.closest('.sr-only, h1'))
        .map(e => e.tagName + '#' + e.id + '.' + e.className)""", width)
    assert not wide, f"wider than {width} px: {wide}"


def message_field_visible(page: Page) -> None:
    """The message field and the Send button lie wholly inside the viewport."""
    height = page.viewport_size["height"]  # type: ignore[index]
    for selector in ("#message", "#send"):
        b = box(page, selector)
        assert b["y"] >= 0 and b["y"] + b["height"] <= height + 0.5, (selector, b, height)


NEWEST_VISIBLE_JS = """() => {
    const c = document.getElementById('console').getBoundingClientRect();
    const all = document.querySelectorAll('#console .msg');
    const m = all[all.length - 1].getBoundingClientRect();
    return m.top >= c.top - 0.5 && m.bottom <= c.bottom + 0.5;
}"""


def newest_message_visible(page: Page) -> None:
    """The newest message is wholly in the stream's view (within 2 s: a page answers a
    resize in its next frame)."""
    try:
        page.wait_for_function(NEWEST_VISIBLE_JS, timeout=2000, polling=50)
    except Exception as error:  # playwright's TimeoutError
        raise AssertionError("the newest message is scrolled out of view") from error


# The disabled background, --disabled-bg, as the browser resolves it.
DISABLED_BG_JS = """(() => {
  const probe = document.createElement('i');
  probe.style.backgroundColor = 'var(--disabled-bg)';
  document.body.append(probe);
  const value = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return value;
})()"""


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


# The colour an element's text sits on: the first ancestor with an opaque background.
BACKGROUND_JS = """(el) => {
  for (let e = el; e; e = e.parentElement) {
    const bg = getComputedStyle(e).backgroundColor;
    if (bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent') return bg;
  }
  return 'rgb(255, 255, 255)';
}"""


def low_contrast(page: Page, selectors: dict[str, str]) -> dict[str, float]:
    """Every named element's text against what it sits on, where below 4.5:1 (WCAG AA)."""
    low = {}
    for name, selector in selectors.items():
        element = page.locator(selector).first
        expect(element).to_be_visible()
        color = element.evaluate("el => getComputedStyle(el).color")
        ratio = contrast(color, element.evaluate(BACKGROUND_JS))
        if ratio < 4.5:
            low[name] = round(ratio, 2)
    return low


def shoot(page: Page, name: str, docs_name: str = "") -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))
    if docs_name and os.environ.get("CHAT_DOCS_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / docs_name))


def local_time(*fields: int) -> datetime.datetime:
    """A moment on this machine's clock, which Chromium's is too (naive: local time)."""
    return datetime.datetime(*fields)  # noqa: DTZ001


# ---- the page as people see it ------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_as_people_see_it(scheme: str, start_server: Callable[..., ServerProcess],
                                   open_page: Callable[..., Page],
                                   clocked: BrowserContext) -> None:
    """History with its divider, two users chatting (grouped by sender and minute, your own
    set apart), a join as a quiet line, the folded form, contrast, 1280 and 375 px, and the
    screenshots (docs/chat.png is this test's, light, at 1280 px)."""
    server = start_server("--history", "20")
    url = server.page_url + "?room=python"
    noon = local_time(2026, 12, 8, 14, 2, 10)

    # Earlier, carol asked something and left: the room keeps it.
    carol = open_page(url, scheme=scheme)
    connect(carol, "carol")
    for text in ("Is the new server up? I'd like to try the rooms.", "Back after lunch."):
        say(carol, text)
        wait_for_message(carol, f"carol: {text}")
    carol.click("#disconnect")
    expect(carol.locator("#status")).to_have_attribute("data-state", "closed")

    # alice and bob chat on a fixed clock (14:02:10, then a minute later): the groups by
    # minute are then certain, and the screenshots the same from run to run.
    clocked.clock.set_fixed_time(noon)
    alice = open_page(url, viewport=DESKTOP, scheme=scheme, context=clocked)
    # The landing page: one card, and its one button is the one to press.
    expect(alice.locator("#connect-form")).to_be_visible()
    expect(alice.locator("#session")).to_be_hidden()
    expect(alice.locator("#send-form")).to_be_hidden()
    expect(alice.locator("#handle")).to_be_focused()
    expect(alice.locator("#connect-intro")).to_have_text("Pick a handle and join room /python.")
    expect(alice.locator("button:visible")).to_have_count(1)
    expect(alice.locator("button:visible")).to_have_id("connect")
    # It stands out from its card (WCAG's 3:1 for a control) and its label from it (4.5:1).
    connect_bg = alice.eval_on_selector("#connect", "el => getComputedStyle(el).backgroundColor")
    card_bg = alice.eval_on_selector("#connect-form", "el => getComputedStyle(el).backgroundColor")
    assert contrast(connect_bg, card_bg) >= 3, (connect_bg, card_bg)
    assert not low_contrast(alice, {"Connect": "#connect", "intro": "#connect-intro",
                                    "hint": "#handle-hint", "server hint": "#server-hint",
                                    "status": "#status"})
    shoot(alice, f"landing-{scheme}-1280.png")

    connect(alice, "alice")
    # The form folded away into a header: room, handle, people, Disconnect.
    expect(alice.locator("#connect-form")).to_be_hidden()
    expect(alice.locator("#session")).to_be_visible()
    expect(alice.locator("#room")).to_have_text("Room /python")
    expect(alice.locator("#me")).to_have_text("alice")
    expect(alice.locator("#disconnect")).to_be_enabled()
    expect(alice.locator("#status")).to_have_text(f"Connected to {server.ws_url}python")
    expect(alice.locator("#message")).to_be_focused()
    # carol's messages, replayed, above the divider; the server keeps no times: none shown.
    expect(alice.locator("#console .divider")).to_have_text("↑earlier messages")
    expect(alice.locator("#people-count")).to_have_text("1 here")
    earlier = alice.locator("#console .group.earlier")
    expect(earlier).to_have_count(1)
    expect(earlier.locator("time")).to_have_count(0)
    assert stream(alice, "msg", "divider") == [
        ("msg", "carol: Is the new server up? I'd like to try the rooms."),
        ("msg", "carol: Back after lunch."),
        ("divider", "earlier messages"),
    ]

    bob = open_page(url, scheme=scheme, context=clocked)
    connect(bob, "bob")
    wait_for_line(alice, "presence", "bob joined")
    expect(alice.locator("#people-count")).to_have_text("2 here")
    conversation = [
        (alice, "alice", "Hi Bob! It is up: carol's question came back with the room."),
        (alice, "alice", "It keeps the last 20 messages for newcomers."),
        (bob, "bob", "Nice. And <b>markup</b> stays text ✓"),
    ]
    for sender, handle, text in conversation:
        say(sender, text)
        for page in (alice, bob):
            wait_for_message(page, f"{handle}: {text}")
    clocked.clock.set_fixed_time(noon + datetime.timedelta(minutes=1))
    say(bob, "Ça marche. See you at three?")
    wait_for_message(alice, "bob: Ça marche. See you at three?")
    # Grouped by sender and minute: alice's two in one group, bob's split by the minute.
    groups = alice.eval_on_selector_all(
        "#console .group:not(.earlier)",
        "gs => gs.map(g => [g.querySelector('.who').textContent,"
        " g.querySelector('time').textContent, g.querySelectorAll('.msg').length,"
        " g.classList.contains('mine')])")
    assert groups == [["alice", "14:02", 2, True], ["bob", "14:02", 1, False],
                      ["bob", "14:03", 1, False]]
    expect(alice.locator("#console b")).to_have_count(0)
    alice.locator("#message").fill("Yes, at three.")
    alice.bring_to_front()

    selectors = {
        "body text": "body",
        "room": "#room",
        "handle in the header": "#me",
        "status": "#status",
        "people": "#people-count",
        "someone's message": "#console .group:not(.mine):not(.earlier) .msg .text",
        "your message": "#console .group.mine .msg .text",
        "an earlier message": "#console .group.earlier .msg .text",
        "sender": "#console .group:not(.mine) .who",
        "time": "#console .group time",
        "divider": "#console .divider .text",
        "join line": "#console .line.presence",
        "info line": "#console .line.info",
        "Disconnect": "#disconnect",
        "Send": "#send",
        "message field": "#message",
    }
    low = low_contrast(alice, selectors)
    assert not low, f"contrast below 4.5:1 in the {scheme} scheme: {low}"
    page_bg = alice.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (luminance(page_bg) > 0.7) if scheme == "light" else (luminance(page_bg) < 0.05)
    fits_the_width(alice)
    message_field_visible(alice)
    suffix = "" if scheme == "light" else "-dark"
    shoot(alice, f"chat-{scheme}-1280.png", docs_name=f"chat{suffix}.png")

    # At 375 px: everything fits, the stream keeps most of the screen, and with the keyboard
    # open the message field and the newest message are still in view.
    alice.set_viewport_size(PHONE)  # type: ignore[arg-type]
    fits_the_width(alice)
    message_field_visible(alice)
    stream_box = box(alice, "#console")
    assert stream_box["height"] >= 0.55 * PHONE["height"], stream_box
    newest_message_visible(alice)
    low = low_contrast(alice, {"room": "#room", "status": "#status", "people": "#people-count"})
    assert not low, low
    shoot(alice, f"chat-{scheme}-375.png")
    alice.click("#people-count")
    expect(alice.locator("#people-list")).to_be_visible()
    assert people(alice) == ["alice (you)", "bob"]
    fits_the_width(alice)
    shoot(alice, f"people-{scheme}-375.png")
    alice.keyboard.press("Escape")
    expect(alice.locator("#people-list")).to_be_hidden()
    expect(alice.locator("#people-count")).to_be_focused()
    alice.focus("#message")
    alice.set_viewport_size(PHONE_KEYBOARD)  # type: ignore[arg-type]
    message_field_visible(alice)
    newest_message_visible(alice)
    fits_the_width(alice)
    shoot(alice, f"chat-{scheme}-375-keyboard.png")

    landing = open_page(url, viewport=PHONE, scheme=scheme, context=clocked)
    fits_the_width(landing)
    for selector in ("#handle", "#server", "#connect"):
        b = box(landing, selector)
        assert b["y"] + b["height"] <= PHONE["height"], (selector, b)
    shoot(landing, f"landing-{scheme}-375.png")


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
        expect(console.locator(".msg .text").nth(2)).to_have_text(INJECTION)
        for stamp in console.locator(".group time").all_text_contents():
            assert re.fullmatch(r"\d\d:\d\d", stamp), stamp
        for title in console.locator(".msg").evaluate_all("ms => ms.map(m => m.title)"):
            assert re.fullmatch(r"\d\d:\d\d:\d\d", title), title
    # Messages from the page's own handle are marked as its own; the others are not.
    expect(alice.locator("#console .group.mine .msg")).to_have_count(2)
    expect(alice.locator("#console .group:not(.mine) .msg")).to_have_count(2)
    # Screen readers hear each message with its sender, from the log's live region.
    expect(alice.locator("#console")).to_have_attribute("role", "log")
    expect(alice.locator("#console")).to_have_attribute("aria-live", "polite")
    assert alice.locator("#console .msg").nth(1).text_content() == f"bob: {NON_ASCII}"


MARKUP_HANDLES = [INJECTION, '"><svg onload=alert(2)>']
MARKUP_MESSAGES = ["<script>alert(3)</script>", "</p></div><b>bold?</b><iframe src=x>",
                   "&lt;not an entity&gt; &amp; <!-- a comment -->"]


def test_markup_in_handles_and_messages_stays_text(start_server: Callable[..., ServerProcess],
                                                   open_page: Callable[..., Page]) -> None:
    """Handles and messages full of markup: in the stream, the join lines, the people list,
    the header and the tab's title, all shown as the characters typed; nothing runs (the
    page watcher fails the test on any dialog) and no element is made from them."""
    server = start_server("--history", "5")
    url = server.page_url + "?room=%3Cb%3Eroom%3C%2Fb%3E"
    first = open_page(url)
    connect(first, MARKUP_HANDLES[0])
    say(first, MARKUP_MESSAGES[0])
    second = open_page(url)
    connect(second, MARKUP_HANDLES[1])
    wait_for_line(first, "presence", f"{MARKUP_HANDLES[1]} joined")
    for text in MARKUP_MESSAGES[1:]:
        say(second, text)
    expected = ([f"{MARKUP_HANDLES[0]}: {MARKUP_MESSAGES[0]}"]
                + [f"{MARKUP_HANDLES[1]}: {text}" for text in MARKUP_MESSAGES[1:]])
    for page, handle in ((first, MARKUP_HANDLES[0]), (second, MARKUP_HANDLES[1])):
        wait_for_message(page, expected[-1])
        assert messages(page) == expected
        expect(page.locator("#me")).to_have_text(handle)
        expect(page.locator("#room")).to_have_text("Room /<b>room</b>")
        assert page.title() == f"{handle} in /<b>room</b> · WebSocket chat"
        assert sorted(people(page)) == sorted([f"{handle} (you)",
                                               *(h for h in MARKUP_HANDLES if h != handle)])
        made = page.evaluate("document.querySelectorAll('body img, body svg, body script, "
                             "body b, body iframe').length")
        assert made == 0
        senders = page.locator("#console .who").all_text_contents()
        assert set(senders) <= set(MARKUP_HANDLES) and senders
    # The second page got the first message from the history, still as text.
    expect(second.locator("#console .group.earlier .msg .text")).to_have_text(MARKUP_MESSAGES[0])


def test_keyboard_only_on_a_phone(chat_server: ServerProcess,
                                  open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url, viewport={"width": 360, "height": 640})
    fits_the_width(page)
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

    # The landing page: the handle first (focused already), then the server, then Connect.
    expect(page.locator("#handle")).to_be_focused()
    assert tab_from("#handle", 2) == ["server", "connect"]
    page.focus("#handle")
    page.keyboard.press("Enter")  # no handle yet: the page says so and stays
    expect(page.locator("#error")).to_have_text(
        "Enter a handle (your name in the chat) to connect.")
    expect(page.locator("#handle")).to_be_focused()
    page.keyboard.type("kim")
    page.keyboard.press("Enter")  # Enter in the handle field connects
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#message")).to_be_focused()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#people-count")).to_have_text("1 here")
    # The header's controls, the stream, the empty room's link to share, the message field
    # and Send, in that order.
    assert tab_from("#people-count", 5) == ["disconnect", "console", "share", "message", "send"]
    assert tab_from("#message", 4, back=True) == ["share", "console", "disconnect",
                                                  "people-count"]
    # The focused button shows the page's own focus ring, not the browser's faint default.
    page.focus("#people-count")
    page.keyboard.press("Tab")
    ring = page.evaluate("(s => [s.outlineStyle, s.outlineWidth])"
                         "(getComputedStyle(document.activeElement))")
    assert ring == ["solid", "3px"], ring
    # Enter on the people summary opens the list; Escape closes it.
    page.focus("#people-count")
    page.keyboard.press("Enter")
    expect(page.locator("#people-list")).to_be_visible()
    assert people(page) == ["kim (you)"]
    page.keyboard.press("Escape")
    expect(page.locator("#people-list")).to_be_hidden()

    # An empty room says what to do.
    expect(page.locator("#empty")).to_contain_text("Nobody else is in the lobby (/) yet.")
    expect(page.locator("#share")).to_have_text(chat_server.page_url)
    page.focus("#message")
    for n in range(1, 16):
        page.keyboard.type(f"line {n}")
        page.keyboard.press("Enter")
    wait_for_message(page, "kim: line 15")
    expect(page.locator("#empty")).to_be_hidden()
    expect(page.locator("#message")).to_have_value("")
    expect(page.locator("#message")).to_be_focused()
    # The stream overflowed and shows its newest line.
    top, height, total = page.evaluate(
        "(() => { const c = document.getElementById('console');"
        " return [c.scrollTop, c.clientHeight, c.scrollHeight]; })()")
    assert total > height
    assert top + height >= total - 1
    newest_message_visible(page)
    message_field_visible(page)
    fits_the_width(page)


def test_handle_rules_disconnect_and_connect_again(chat_server: ServerProcess,
                                                   open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url)
    connect_button, disconnect_button = page.locator("#connect"), page.locator("#disconnect")
    send, message = page.locator("#send"), page.locator("#message")
    # Not connected: Connect is the one button there is; the rest is folded away.
    expect(connect_button).to_be_enabled()
    for control in (disconnect_button, send, message):
        expect(control).to_be_disabled()
        expect(control).to_be_hidden()

    for bad, complaint in [("   ", "Enter a handle"), ("x" * 33, "33 characters long; 32 at most"),
                           ("ü" * 33, "33 characters long; 32 at most")]:
        page.fill("#handle", bad)
        page.click("#connect")
        expect(page.locator("#error")).to_contain_text(complaint)
        expect(page.locator("#handle")).to_be_focused()
        expect(page.locator("#handle")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#handle-hint")).to_contain_text("32 at most")
    page.fill("#handle", "👋" * 32)  # 32 characters, 64 UTF-16 units
    expect(page.locator("#handle-hint")).to_have_text("Your name in the chat, 1–32 characters.")
    expect(page.locator("#handle")).not_to_have_attribute("aria-invalid", "true")

    page.fill("#handle", "  carol  ")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text(f"Connected to {chat_server.ws_url}")
    expect(page.locator("#me")).to_have_text("carol")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#connect-form")).to_be_hidden()
    expect(page.locator("#handle")).to_be_disabled()
    expect(page.locator("#server")).to_be_disabled()
    for control in (disconnect_button, send, message):
        expect(control).to_be_enabled()
        expect(control).to_be_visible()
    assert page.title() == "carol in the lobby · WebSocket chat"
    say(page, "first")
    wait_for_message(page, "carol: first")

    page.click("#disconnect")
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#console .line.info").last).to_contain_text(
        "Disconnected (code 1000, normal closure")
    # The Disconnect button never schedules a retry; the form is back, the talk stays.
    expect(page.locator("#status")).to_have_text("Not connected")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#connect-form")).to_be_visible()
    expect(page.locator("#session")).to_be_hidden()
    expect(page.locator("#console .msg")).to_have_count(1)
    expect(connect_button).to_be_enabled()
    expect(connect_button).to_be_focused()
    expect(page.locator("#server")).to_be_editable()
    assert page.title() == "WebSocket chat"

    page.click("#connect")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    say(page, "second")
    wait_for_message(page, "carol: second")
    assert messages(page) == ["carol: first", "carol: second"]


@pytest.mark.parametrize("viewport, scheme", [(DESKTOP, "light"), (PHONE, "dark")],
                         ids=["1280-light", "375-dark"])
def test_server_stops_and_returns(viewport: dict[str, int], scheme: str,
                                  chat_server: ServerProcess,
                                  start_server: Callable[..., ServerProcess],
                                  open_page: Callable[..., Page]) -> None:
    stays = open_page(chat_server.page_url, allow_ws_failures=True, viewport=viewport,
                      scheme=scheme)
    quits = open_page(chat_server.page_url, allow_ws_failures=True)
    connect(stays, "stays")
    connect(quits, "quits")
    wait_for_line(stays, "presence", "quits joined")
    port = chat_server.port

    chat_server.stop()  # Ctrl-C: every user is closed with 1001
    for page in (stays, quits):
        expect(page.locator("#error")).to_contain_text(
            "Reconnecting automatically; press Disconnect to stop.")
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
        # The close in words, then the countdown (by now maybe after a failed attempt).
        expect(page.locator("#status")).to_have_text(re.compile(
            r"^(Connection lost \(code 1001, going away, reason “server shutting down”\)"
            r"|Reconnect attempt \d+ failed \(code 1006, abnormal closure, no close frame\))"
            r"\. Reconnecting in \d+ s…$"))
        expect(page.locator("#console .line.error").first).to_contain_text("code 1001")
        expect(page.locator("#send")).to_be_disabled()
        expect(page.locator("#message")).to_be_enabled()  # a draft is kept
        expect(page.locator("#people")).to_be_hidden()  # out of date from now on
        expect(page.locator("#session")).to_be_visible()
    stays.fill("#message", "typed while away")
    if viewport == PHONE:
        fits_the_width(stays)
        message_field_visible(stays)
        shoot(stays, f"reconnecting-{scheme}-375.png")
    # Disconnect while waiting stops retrying.
    quits.click("#disconnect")
    expect(quits.locator("#status")).to_have_attribute("data-state", "closed")
    expect(quits.locator("#console .line.info").last).to_have_text(
        re.compile(r"^Stopped reconnecting\. \d\d:\d\d:\d\d$"))

    restarted = start_server(port=port)  # stopped by the fixture, by PID
    try:
        expect(stays.locator("#status")).to_have_attribute("data-state", "open")
        expect(stays.locator("#error")).to_be_hidden()
        expect(stays.locator("#console .line.info").last).to_contain_text("Reconnected to")
        expect(stays.locator("#message")).to_have_value("typed while away")
        expect(stays.locator("#people-count")).to_have_text("1 here")
        # quits left while the server was away: the list the server sends says so.
        wait_for_line(stays, "presence", "quits left")
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
    port = dead.rsplit(":", 1)[1]
    expect(error).to_contain_text(f"Start it with: python3 server.py 127.0.0.1 {port}")
    # A first connection that fails is not retried: the URL is probably wrong.
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#connect-form")).to_be_visible()
    expect(page.locator("#connect")).to_be_enabled()


def test_server_parameter_overrides_the_url(chat_server: ServerProcess,
                                            start_server: Callable[..., ServerProcess],
                                            open_page: Callable[..., Page]) -> None:
    from websockets.sync.client import connect as plain_connect

    other = start_server()
    page = open_page(f"{chat_server.page_url}?server={other.ws_url}&handle=dave")
    expect(page.locator("#server")).to_have_value(other.ws_url)
    expect(page.locator("#handle")).to_have_value("dave")  # ?handle= fills the field
    page.click("#connect")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    # Another server's page: no subprotocol offered, so no people list.
    expect(page.locator("#people")).to_be_hidden()
    # A plain WebSocket client on the other server reads the page's frames as they are.
    with plain_connect(other.ws_url, open_timeout=5, close_timeout=2) as plain:
        say(page, "via the other server")
        assert plain.recv(timeout=5) == "dave: via the other server"
        plain.send("a plain client")
        wait_for_message(page, "a plain client")
        assert plain.recv(timeout=5) == "a plain client"
    expect(page.locator("#console .who")).to_have_count(1)
    assert messages(page) == ["dave: via the other server", "a plain client"]


def test_opened_from_a_file_asks_for_the_url(chat_server: ServerProcess,
                                            open_page: Callable[..., Page]) -> None:
    page = open_page((CLIENT / "index.html").as_uri())
    expect(page.locator("#server")).to_have_value("")
    expect(page.locator("#server")).to_be_focused()
    expect(page.locator("#server-hint")).to_contain_text("opened from a file")
    expect(page.locator("#connect-intro")).to_have_text(
        "Enter the chat server's address and a handle, then Connect.")
    expect(page.locator("#error")).to_be_hidden()

    page.fill("#handle", "fay")
    page.click("#connect")
    expect(page.locator("#error")).to_contain_text("Enter the chat server's WebSocket URL")
    expect(page.locator("#server")).to_be_focused()

    page.fill("#server", chat_server.ws_url)
    expect(page.locator("#connect-intro")).to_have_text("Pick a handle and join the lobby (/).")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text(f"Connected to {chat_server.ws_url}")
    expect(page.locator("#error")).to_be_hidden()
    # No page address to share from a file: the empty room says what to do without one.
    expect(page.locator("#empty")).to_have_text(
        "No messages yet in the lobby (/). Type one below and press Enter: everyone here sees it.")
    say(page, "from a file")
    wait_for_message(page, "fay: from a file")


def test_browser_without_websocket(chat_server: ServerProcess,
                                   open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url, init_script="delete window.WebSocket;")
    expect(page.locator("#error")).to_contain_text(
        "Sorry, your browser does not support WebSocket")
    for control in ("#connect", "#disconnect", "#send", "#message"):
        expect(page.locator(control)).to_be_disabled()
    # A disabled primary button looks disabled (the disabled style wins over .primary).
    looks = page.eval_on_selector("#connect", "el => getComputedStyle(el).backgroundColor")
    disabled = page.evaluate(DISABLED_BG_JS)
    assert looks == disabled


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
    expect(alice.locator("#room")).to_have_text("Room /chat")
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
    expect(python.locator("#room")).to_have_text("Room /python")
    expect(lobby.locator("#room")).to_have_text("Lobby")
    expect(python.locator("#console .line.info").first).to_contain_text("in room /python.")
    expect(lobby.locator("#console .line.info").first).to_contain_text("in the lobby (/).")
    expect(python.locator("#people-count")).to_have_text("2 here")
    expect(lobby.locator("#people-count")).to_have_text("1 here")
    say(python, "snakes")
    for page in (python, also):
        wait_for_message(page, "ada: snakes")
    say(lobby, "lobby only")
    wait_for_message(lobby, "bob: lobby only")
    say(also, "after")
    wait_for_message(python, "guido: after")
    assert messages(python) == ["ada: snakes", "guido: after"]
    assert messages(lobby) == ["bob: lobby only"]
    assert stream(lobby, "presence") == []
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
    the gap is older than the history it says so. Each message is on the page once. A
    resume is not a first join: no "earlier messages" divider."""
    script = tmp_path / "drop.py"
    script.write_text(f"AWAY = {away}\n" + DROP_SCRIPT)
    server = start_server("--history", str(history), "--callback", str(script))
    alice = open_page(server.page_url + "?room=resume")
    bob = open_page(server.page_url + "?room=resume")
    connect(alice, "alice")
    connect(bob, "bob")
    expect(bob.locator("#people-count")).to_have_text("2 here")
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
    for page in (alice, bob):
        expect(page.locator("#console .divider")).to_have_count(0)
        expect(page.locator("#console .group.earlier")).to_have_count(0)
    expect(bob.locator("#people-count")).to_have_text("2 here")
    assert sorted(people(bob)) == ["alice", "bob (you)"]
    # alice saw bob come, go and come back; bob, back, saw nobody come or go.
    assert stream(alice, "presence") == [("presence", "bob joined"), ("presence", "bob left"),
                                         ("presence", "bob joined")]
    assert stream(bob, "presence") == []
    server.wait_for_log(r"user \d+ .*left: 1012")


# ---- presence changes and message times, from a scripted server ----------------------------

class ScriptedChat:
    """A chat server of the test's own: the `websockets` library's, in a thread. It serves
    client/ like our server (so the page offers chat.history.v1 to it) and plays each
    connection's frames from `script(connection, n)`, n counting connections from 1."""

    def __init__(self, script: Callable[[ServerConnection, int], None]) -> None:
        from websockets.sync.server import serve
        from websockets.typing import Subprotocol

        self.script = script
        self.paths: list[str] = []
        self.received: queue.Queue[str] = queue.Queue()
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.server = serve(self._connection, "127.0.0.1", 0,
                            subprotocols=[Subprotocol(TAGGED)], process_request=self._page,
                            ping_interval=None)
        self.port = int(self.server.socket.getsockname()[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _page(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        name = request.path.split("?", 1)[0].lstrip("/") or "index.html"
        types = {"index.html": "text/html", "chat.js": "text/javascript",
                 "chat.css": "text/css"}
        if name not in types:
            return connection.respond(404, "not here\n")
        body = (CLIENT / name).read_bytes()
        response = connection.respond(200, "")
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
        response.headers["Content-Type"] = f"{types[name]}; charset=utf-8"
        response.headers["Content-Length"] = str(len(body))
        response.body = body
        return response

    def _connection(self, connection: ServerConnection) -> None:
        self.paths.append(connection.request.path if connection.request else "")
        try:
            self.script(connection, len(self.paths))
        except BaseException as error:  # reported by close(), in the test's thread
            self.errors.append(error)

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.thread.join(5)
        assert not self.errors, self.errors


def test_presence_changes_and_original_times_from_a_scripted_server(
        open_page: Callable[..., Page], clocked: BrowserContext) -> None:
    """The page on the presence format to come (issue 18: the whole list once, then
    `presence_delta`s) and on history that carries its time (`"time"`, Unix seconds), which
    today's server sends neither of: joins and leaves as quiet lines, the people list kept
    from the list and the changes, original times above the divider, and a reconnect that
    resumes after the last id and shows who came and went while away."""
    now = local_time(2026, 12, 8, 12, 0, 0)
    yesterday = now - datetime.timedelta(hours=26)
    this_morning = now - datetime.timedelta(hours=2)
    typed: queue.Queue[str] = queue.Queue()
    drop = threading.Event()

    def send(connection: ServerConnection, value: dict[str, Any]) -> None:
        connection.send(json.dumps(value))

    def script(connection: ServerConnection, n: int) -> None:
        if n == 1:
            send(connection, {"id": "s.1", "text": "carol: posted yesterday",
                              "time": yesterday.timestamp()})
            send(connection, {"id": "s.2", "text": "carol: and this morning",
                              "time": this_morning.timestamp()})
            send(connection, {"presence": [{"id": "u1", "name": "alice"},
                                           {"id": "u9", "name": "carol"}]})
            # As issue 18's server does: the delta of the pass alice joined in names her
            # again, and changes nothing.
            send(connection, {"presence_delta": {"joined": [{"id": "u1", "name": "alice"}],
                                                 "left": []}})
            said = str(connection.recv(timeout=10))
            typed.put(said)
            send(connection, {"id": "s.3", "text": said})
            send(connection, {"presence_delta": {"joined": [{"id": "u2", "name": INJECTION}],
                                                 "left": []}})
            send(connection, {"id": "s.4", "text": f"{INJECTION}: <script>alert(2)</script>"})
            send(connection, {"presence_delta": {"joined": [], "left": ["u9"]}})
            # dora came and went within one change; a leave of someone unknown is ignored.
            send(connection, {"presence_delta": {"joined": [{"id": "u3", "name": "dora"}],
                                                 "left": ["u3", "nobody"]}})
            drop.wait(10)
            connection.close(1012, "service restart")
        else:
            send(connection, {"id": "s.4", "text": "already shown: not again"})
            send(connection, {"id": "s.5", "text": "erin: hello, back?"})
            send(connection, {"presence": [{"id": "u1b", "name": "alice"},
                                           {"id": "u2", "name": INJECTION},
                                           {"id": "u5", "name": "erin"}]})
            fake.done.wait(20)

    fake = ScriptedChat(script)
    try:
        clocked.clock.set_fixed_time(now)
        page = open_page(f"http://127.0.0.1:{fake.port}/?room=fake", context=clocked)
        connect(page, "alice")
        expect(page.locator("#people-count")).to_have_text("2 here")
        assert fake.paths[0] == "/fake?handle=alice"
        # The history keeps its own times: a date for yesterday's, the time for today's.
        times = page.eval_on_selector_all(
            "#console .group.earlier time", "ts => ts.map(t => [t.dateTime, t.textContent])")
        iso = [moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
               for moment in (yesterday, this_morning)]
        assert times == [[iso[0], yesterday.strftime("%Y-%m-%d %H:%M")],
                         [iso[1], this_morning.strftime("%H:%M")]]
        assert stream(page, "msg", "divider", "presence") == [
            ("msg", "carol: posted yesterday"), ("msg", "carol: and this morning"),
            ("divider", "earlier messages")]

        say(page, "hi")
        assert typed.get(timeout=10) == "alice: hi"  # today's protocol: "handle: text"
        wait_for_line(page, "presence", "dora left")
        assert stream(page, "msg", "divider", "presence")[2:] == [
            ("divider", "earlier messages"),
            ("msg", "alice: hi"),
            ("presence", f"{INJECTION} joined"),
            ("msg", f"{INJECTION}: <script>alert(2)</script>"),
            ("presence", "carol left"),
            ("presence", "dora joined"),
            ("presence", "dora left"),
        ]
        expect(page.locator("#people-count")).to_have_text("2 here")
        assert people(page) == ["alice (you)", INJECTION]
        assert page.evaluate("document.querySelectorAll('body img, body script').length") == 0

        drop.set()
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
        expect(page.locator("#error")).to_contain_text("Reconnecting automatically")
        expect(page.locator("#console .line.error").last).to_contain_text(
            "code 1012, service restart")
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        wait_for_message(page, "erin: hello, back?")
        wait_for_line(page, "presence", "erin joined")
        # The reconnect asked for what came after the last id shown, with the same handle.
        assert fake.paths[1] == "/fake?handle=alice&after=s.4"
        assert "already shown: not again" not in messages(page)
        assert stream(page, "presence")[-1] == ("presence", "erin joined")
        assert len(stream(page, "presence")) == 5  # alice's new id is no one new
        expect(page.locator("#console .divider")).to_have_count(1)
        expect(page.locator("#people-count")).to_have_text("3 here")
        assert people(page) == ["alice (you)", INJECTION, "erin"]
        page.click("#disconnect")  # before the server goes: no reconnect to nothing
        expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    finally:
        fake.close()


# Queries as the page (URLSearchParams) writes and reads them; websocket/protocol/query.py must read
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
