"""Only users with a valid token may post; the others may read, or are refused.

    AUTH_TOKENS="alice:s3cret,bob:hunter2" \
        python3 server.py 127.0.0.1 8080 --callback examples/auth.py

A client presents its token in the URL (ws://127.0.0.1:8080/?token=s3cret), in a cookie
named `token`, or, for a client that can do neither (the chat page), as its first message:
`/login s3cret`. AUTH_GUESTS says what happens to a user without a valid token:

    read (default)  it stays and reads; what it sends is refused with a reply
    refuse          it reads nothing; unless its first message is a valid /login (within
                    LOGIN_TIME seconds) it is closed with 1008 (policy violation, RFC 6455
                    §7.4.1), and at once if its URL or cookie held a wrong token

A token that is presented but wrong is refused at the handshake, before the 101, by
`on_request` (HTTP 401: the client learns it at once, and the chat never sees it). A valid
one is looked up again as the user joins (on_connect: the handshake's resource and headers
are on the user). Tokens are compared in constant time (hmac.compare_digest). Without TLS a
token crosses the network in the clear: behind nginx or with wss:// only. A cookie is sent
by the browser whichever page opens the WebSocket (cross-site WebSocket hijacking): run with
`--allow-origin` naming the chat's own page when tokens travel in cookies.
"""
from __future__ import annotations

import hmac
import os
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the type hints only: a script needs nothing from the server
    from websocket.chat.access import UpgradeRequest
    from websocket.chat.callbacks import Server
    from websocket.chat.user import User


def tokens() -> dict[str, str]:
    """{token: name} from AUTH_TOKENS ("name:token,name:token"), read at each check: a few
    microseconds, and the script keeps no state of its own for it."""
    pairs = (item.split(":", 1) for item in os.environ.get("AUTH_TOKENS", "").split(","))
    return {token: name for name, token in (p for p in pairs if len(p) == 2) if token}


def who_has(token: str) -> str | None:
    """The name the token belongs to, or None."""
    found = None
    for known, name in tokens().items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = name  # no early exit: the time does not tell which token matched
    return found


def presented_token(user: User) -> str:
    """The token in the URL's query string, else in the `token` cookie, else ''."""
    token = user.query.get("token")
    if token:
        return token
    for name, value in user.headers:
        if name.lower() == "cookie":
            try:
                cookie = SimpleCookie(value)
            except CookieError:
                continue
            if "token" in cookie:
                return cookie["token"].value
    return ""


def guests_may_read() -> bool:
    return os.environ.get("AUTH_GUESTS", "read") != "refuse"


LOGIN_TIME = 10  # seconds a refused-unless-logged-in user has for its /login


def on_request(request: UpgradeRequest, server: Server) -> tuple[int, str] | None:
    """Before the 101: refuse a wrong token with 401; let the others in (a valid token,
    or none: a guest, who may read or /login as AUTH_GUESTS says)."""
    token = request.query.get("token") or request.cookies.get("token", "")
    if token and who_has(token) is None:
        server.log(f"{request.address[0]}: a wrong token, refused with 401")
        return 401, "a valid token is needed"
    return None


def on_connect(user: User, server: Server) -> None:
    token = presented_token(user)
    name = who_has(token)
    if name is not None:
        welcome(user, name, server)
    elif guests_may_read():
        server.send(user, "* you may read; to post, send /login TOKEN")
    else:
        server.send(user, "* send /login TOKEN first")
        server.call_later(LOGIN_TIME, refuse, user, server)


def refuse(user: User, server: Server) -> None:
    if "name" not in user.data:
        server.disconnect(user, 1008, "a valid token is needed")


def welcome(user: User, name: str, server: Server) -> None:
    user.data["name"] = name
    server.send(user, f"* welcome {name}, you may post")
    post(server, f"* {name} joined", exclude=user)


def post(server: Server, message: str | bytes, exclude: User | None = None) -> None:
    """To everyone who may read: all users, or only those logged in (AUTH_GUESTS=refuse)."""
    excluded = [] if exclude is None else [exclude]
    if not guests_may_read():
        excluded += [u for u in server.get_users() if "name" not in u.data]
    server.broadcast(message, exclude=excluded)


def process(user: User, message: str | bytes, server: Server) -> None:
    name = user.data.get("name")
    if name is not None:
        post(server, f"{name}: {message}" if isinstance(message, str) else message)
        return
    if isinstance(message, str) and message.startswith("/login "):
        found = who_has(message[len("/login "):].strip())
        if found is not None:
            welcome(user, found, server)
            return
        server.log(f"user {user.id}: a wrong token")
        if guests_may_read():
            server.send(user, "* wrong token")
            return
    if guests_may_read():
        server.send(user, "* read-only: send /login TOKEN to post")
    else:
        refuse(user, server)  # the first message was not a valid /login
