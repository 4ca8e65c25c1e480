"""A chat with a bot in it: it answers commands and makes announcements on a timer.

    python3 server.py 127.0.0.1 8080 --callback examples/bot.py

Every message goes to everyone, as in the article; a message starting with "!" is a
command for the bot, answered to its sender only:

    !help          what the bot knows
    !time          the server's time (UTC)
    !users         how many are here
    !roll 2d6      dice: 1-20 dice of 2-1000 sides

Every BOT_INTERVAL seconds (default 300) the bot announces something to everyone, with
`server.call_every`, started in `on_start`: timers run in the server's loop, no threads.
"""
from __future__ import annotations

import itertools
import os
import random
import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the type hints only: a script needs nothing from the server
    from websocket.chat.callbacks import Server
    from websocket.chat.user import User

INTERVAL = float(os.environ.get("BOT_INTERVAL", "300"))
ANNOUNCEMENTS = itertools.cycle([
    "bot: type !help to see what I can do",
    "bot: be kind; everyone here is a person",
])
DICE = re.compile(r"(\d{1,2})d(\d{1,4})")


def announce(server: Server) -> None:
    users = len(server.get_users())
    if users:  # nobody to talk to: say nothing
        server.broadcast(f"{next(ANNOUNCEMENTS)} ({users} here)")


def on_start(server: Server) -> None:
    server.call_every(INTERVAL, announce, server)


def roll(spec: str) -> str:
    match = DICE.fullmatch(spec)
    if not match or not 1 <= int(match[1]) <= 20 or not 2 <= int(match[2]) <= 1000:
        return "bot: roll like this: !roll 2d6 (1-20 dice, 2-1000 sides)"
    dice = [random.randint(1, int(match[2])) for _ in range(int(match[1]))]
    return f"bot: {spec}: {' + '.join(map(str, dice))} = {sum(dice)}"


def answer(command: str, argument: str, server: Server) -> str:
    if command == "!help":
        return "bot: !help, !time, !users, !roll NdM"
    if command == "!time":
        return time.strftime("bot: it is %H:%M:%S UTC", time.gmtime())
    if command == "!users":
        return f"bot: {len(server.get_users())} here"
    if command == "!roll":
        return roll(argument)
    return f"bot: I do not know {command}; try !help"


def process(user: User, message: str | bytes, server: Server) -> None:
    if isinstance(message, str) and message.startswith("!"):
        command, _, argument = message.partition(" ")
        server.send(user, answer(command, argument.strip(), server))
    else:
        server.broadcast(message)
