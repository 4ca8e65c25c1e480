"""A WebSocket chat server in one select()-style loop: the 2010 phpwebsocket demo, made right.

    from websocket import Server
    Server("127.0.0.1", 8080).serve_forever()

Public names: `Server`, `User`, `UserState`, the built-in callbacks `echo_to_all` and
`echo_to_sender`, and `CloseCode`.
"""
from .chat.callbacks import echo_to_all, echo_to_sender
from .chat.server import Server, ServerError
from .chat.user import User, UserState
from .protocol.frames import CloseCode, Opcode

__all__ = ["CloseCode", "Opcode", "Server", "ServerError", "User", "UserState",
           "echo_to_all", "echo_to_sender"]
