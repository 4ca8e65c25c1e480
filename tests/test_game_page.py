"""examples/game.py's own page (examples/game_pages/) in Debian's Chromium: two tabs play
tic-tac-toe to a win and start again; a third one watches. Every page is watched for
JavaScript errors as in test_browser.py, whose browser fixture this reuses (skipped locally
without Chromium or playwright, a failure under CI=true)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from conftest import ROOT, ServerProcess
from test_browser import browser, open_page  # noqa: F401 - the fixtures, shared

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.usefixtures("browser")
Start = Callable[..., ServerProcess]
TIMEOUT_MS = 10_000


def wait_text(page: Page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).textContent.includes(text)",
        arg=[selector, text], timeout=TIMEOUT_MS, polling=50)


def play(page: Page, cell: int) -> None:
    page.bring_to_front()  # a background tab's clicks wait for animation frames
    page.click(f"#board button[data-cell='{cell}']")


def test_two_tabs_play_tic_tac_toe_and_a_third_watches(
        start_server: Start, open_page: Callable[..., Page]) -> None:  # noqa: F811
    server = start_server("--callback", str(ROOT / "examples" / "game.py"))
    x = open_page(server.page_url)
    wait_text(x, "#status", "You play X. Waiting for a second player")
    o = open_page(server.page_url)
    wait_text(o, "#status", "You play O. X to play.")
    wait_text(x, "#status", "You play X. Your turn.")
    watcher = open_page(server.page_url)
    wait_text(watcher, "#status", "You are watching. X to play.")

    assert o.is_disabled("#board button[data-cell='0']")  # not O's turn: the page knows
    for page, cell, then in ((x, 4, "O to play."), (o, 0, "X to play."), (x, 2, "O to play."),
                             (o, 1, "X to play.")):
        play(page, cell)
        wait_text(watcher, "#status", then)
    play(x, 6)  # 2, 4, 6: the diagonal
    wait_text(x, "#status", "You won!")
    wait_text(o, "#status", "X won.")
    wait_text(watcher, "#status", "You are watching. X won.")
    board = watcher.eval_on_selector_all("#board button", "cells => cells.map(c => c.textContent)")
    assert board == ["O", "O", "X", "", "X", "", "X", "", ""]
    assert watcher.is_hidden("#restart") and not o.is_hidden("#restart")

    o.bring_to_front()
    o.click("#restart")
    wait_text(x, "#status", "You play X. Your turn.")
    assert x.eval_on_selector_all("#board button", "cells => cells.map(c => c.textContent)") \
        == [""] * 9

    x.close()  # X leaves: the watcher takes the seat, and a new game begins
    wait_text(watcher, "#status", "You play X. Your turn.")
    wait_text(o, "#status", "You play O. X to play.")
