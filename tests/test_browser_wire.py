"""In Chromium: the /wire page shows a chat live, and the terminal client chats with the page.

Same launch and the same watch on every page as tests/test_browser.py (a JavaScript error,
a console error or a dialog fails the test); skipped without Chromium or Playwright,
except under CI=true, where that is a failure.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from conftest import ROOT
from test_browser import TIMEOUT_MS, browser, connect, open_page, say, wait_for_message
from wsclient import Client

if TYPE_CHECKING:
    from conftest import ServerProcess
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or, under CI=true, fails) first
    expect = None  # type: ignore[assignment]

__all__ = ["browser", "open_page"]  # fixtures, used by name
pytestmark = pytest.mark.usefixtures("browser")

BLOCKS_JS = """(kind) => [...document.querySelectorAll('#wire .block' + kind)]
    .filter(block => !block.hidden).map(block => block.textContent)"""


def wire_shows(page: Page, kind: str, text: str) -> None:
    """Wait until a visible block of `kind` ('.in', '.out' or '') contains `text`."""
    page.wait_for_function(
        f"([kind, text]) => ({BLOCKS_JS})(kind).some(block => block.includes(text))",
        arg=[kind, text], timeout=TIMEOUT_MS, polling=50)


def test_wire_page_shows_a_chat_message_crossing(start_server: Callable[..., ServerProcess],
                                                  open_page: Callable[..., Page]) -> None:
    server = start_server("--trace-page")
    wire = open_page(f"http://127.0.0.1:{server.port}/wire")
    expect(wire.locator("#status")).to_have_attribute("data-state", "open")
    chat = open_page(server.page_url)
    connect(chat, "alice")
    wire.bring_to_front()
    wire_shows(wire, ".in", "Sec-WebSocket-Key:")  # the chat page's upgrade request
    wire_shows(wire, ".out", "HTTP/1.1 101 Switching Protocols")
    say(chat, "hi wire")
    wait_for_message(chat, "alice: hi wire")
    wire.bring_to_front()
    # "alice: hi wire" is 14 bytes: one hexdump row, its text column between bars.
    wire_shows(wire, ".in", "|alice: hi wire|")  # masked by the browser, unmasked beside
    wire_shows(wire, ".in", "MASK 1, key ")
    wire_shows(wire, ".out", "|alice: hi wire|")  # and back to every user, unmasked
    # The connection filter: only the chat page's connection is listed (never the wire's).
    options = wire.locator("#filter option").all_text_contents()
    assert options[0] == "all" and len(options) >= 2
    wire.select_option("#filter", options[-1][1:])
    wire_shows(wire, "", "|alice: hi wire|")


def test_wire_page_shows_hostile_bytes_as_text(start_server: Callable[..., ServerProcess],
                                                open_page: Callable[..., Page]) -> None:
    server = start_server("--trace-page")
    wire = open_page(f"http://127.0.0.1:{server.port}/wire")
    expect(wire.locator("#status")).to_have_attribute("data-state", "open")
    hostile = "<img src=x onerror=alert(1)>"
    with Client(server.port) as client:
        client.send(f"GET / HTTP/1.1\r\nHost: x\r\nX-Note: {hostile}\r\n\r\n".encode())
        client.http_response()
    wire_shows(wire, ".in", f"X-Note: {hostile}")
    assert wire.locator("#wire img").count() == 0  # text, never HTML (a dialog would fail)


class Terminal:
    """`python3 -m websocket.client URL` with its stdin and stdout on pipes."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "websocket.client", url], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out.put),
                         daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err.append),
                         daemon=True).start()

    @staticmethod
    def _drain(stream: object, put: Callable[[str], object]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            put(line.rstrip("\n"))

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for_line(self, wanted: str) -> None:
        while True:
            if self.out.get(timeout=TIMEOUT_MS / 1000) == wanted:
                return

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # Ctrl-D
        return self.proc.wait(TIMEOUT_MS / 1000)


def test_terminal_client_chats_with_the_browser_page(chat_server: ServerProcess,
                                                      open_page: Callable[..., Page]) -> None:
    page = open_page(chat_server.page_url)
    connect(page, "bob")
    term = Terminal(chat_server.ws_url)
    try:
        chat_server.wait_for_log(r"user \d+ .* joined: RFC 6455", timeout=TIMEOUT_MS / 1000)
        term.type("terminal: hello from a shell")
        wait_for_message(page, "terminal: hello from a shell")
        say(page, "hello, terminal ✓")
        term.wait_for_line("bob: hello, terminal ✓")
        assert term.finish() == 0
        assert any("closed: the server answered 1000 (normal)" in line for line in term.err)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait(5)
