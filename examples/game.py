"""Tic-tac-toe for two players, watched by anyone else, with its own page.

    python3 server.py 127.0.0.1 8080 --callback examples/game.py

Then open http://127.0.0.1:8080/ in two tabs (a third one watches). The first two users
play X and O; when one leaves, the next watcher takes the seat and a new game begins.

`PAGES` names this script's own folder of pages: the server serves it instead of client/,
with the same rules (no path leaves the folder). The page and the server speak JSON:

    page -> server   {"move": 4}            a cell, 0-8, left to right, top to bottom
                     {"restart": true}       a player starts a new game once one is over
    server -> page   {"board": "X O  X   ", "turn": "O", "you": "X", "winner": null,
                      "players": {"X": true, "O": true}, "watchers": 1}
                     {"error": "not your turn"}
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the type hints only: a script needs nothing from the server
    from websocket.chat.callbacks import Server
    from websocket.chat.user import User

PAGES = "game_pages"
LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8),
         (2, 4, 6)]

board = [" "] * 9
turn = "X"
winner: str | None = None  # "X", "O", "draw" or None while the game goes on
seats: dict[str, User | None] = {"X": None, "O": None}  # the user in each seat


def new_game() -> None:
    global board, turn, winner
    board, turn, winner = [" "] * 9, "X", None


def seat_of(user: User) -> str | None:
    return next((mark for mark, player in seats.items() if player is user), None)


def fill_seats(server: Server) -> None:
    """Give every empty seat to the longest-waiting watcher."""
    for mark in seats:
        if seats[mark] is None:
            waiting = [u for u in server.get_users() if seat_of(u) is None]
            if waiting:
                seats[mark] = waiting[0]


def show(server: Server) -> None:
    """Send every user the game as it stands, and which seat is theirs."""
    users = server.get_users()
    watchers = sum(1 for u in users if seat_of(u) is None)
    for user in users:
        server.send(user, json.dumps({
            "board": "".join(board), "turn": turn, "you": seat_of(user), "winner": winner,
            "players": {mark: player is not None for mark, player in seats.items()},
            "watchers": watchers,
        }))


def judge() -> str | None:
    for a, b, c in LINES:
        if board[a] != " " and board[a] == board[b] == board[c]:
            return board[a]
    return "draw" if " " not in board else None


def on_connect(user: User, server: Server) -> None:
    fill_seats(server)
    show(server)


def on_disconnect(user: User, server: Server) -> None:
    mark = seat_of(user)
    if mark is not None:
        seats[mark] = None
        new_game()  # a player left: the game cannot go on as it was
        fill_seats(server)
    show(server)


def process(user: User, message: str | bytes, server: Server) -> None:
    global turn, winner
    try:
        request = json.loads(message)
    except (TypeError, ValueError):
        request = None
    if not isinstance(request, dict):
        server.send(user, json.dumps({"error": "send JSON: {\"move\": 0-8}"}))
        return
    mark = seat_of(user)
    if mark is None:
        error = "you are watching"
    elif request.get("restart") is True:
        if winner is None:
            error = "the game is not over"
        else:
            new_game()
            show(server)
            return
    elif winner is not None:
        error = "the game is over"
    elif mark != turn:
        error = "not your turn"
    else:
        cell = request.get("move")
        if type(cell) is not int or not 0 <= cell < 9:
            error = "a move is a cell from 0 to 8"
        elif board[cell] != " ":
            error = "that cell is taken"
        else:
            board[cell] = mark
            turn = "O" if mark == "X" else "X"
            winner = judge()
            show(server)
            return
    server.send(user, json.dumps({"error": error}))
