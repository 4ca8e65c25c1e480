"""Our wire checked by a client nobody here wrote: the `websockets` library."""
from __future__ import annotations

import asyncio

import pytest
from conftest import ServerProcess

websockets = pytest.importorskip("websockets")


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, 20))  # type: ignore[arg-type]


def test_websockets_clients_chat(chat_server: ServerProcess) -> None:
    async def chat() -> None:
        async with websockets.connect(chat_server.ws_url) as a, \
                websockets.connect(chat_server.ws_url, compression=None) as b:
            await a.send("hello 👋")
            assert await a.recv() == "hello 👋"
            assert await b.recv() == "hello 👋"
            await b.send(b"\x00" * 70000)
            assert await a.recv() == b"\x00" * 70000
            assert await b.recv() == b"\x00" * 70000
            await asyncio.wait_for(await a.ping(b"p"), 5)  # the pong came back
            await a.send(["frag", "mented"])  # a fragmented message
            assert await b.recv() == "fragmented"
            await a.close(4001, "done")
            assert a.close_code == 4001
    run(chat())


def test_websockets_sees_1009_for_a_big_message(start_server: object) -> None:
    server = start_server("--max-message-size", "1000")  # type: ignore[operator]

    async def too_big() -> None:
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.send("x" * 1001)
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009
    run(too_big())


def test_websockets_sees_1001_at_shutdown(chat_server: ServerProcess) -> None:
    async def shutdown() -> None:
        async with websockets.connect(chat_server.ws_url) as ws:
            await ws.send("x")
            await ws.recv()
            chat_server.proc.send_signal(2)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1001
    run(shutdown())
    assert chat_server.proc.wait(10) == 0


def test_websockets_client_gets_the_scripts_subprotocol(start_server: object,
                                                        tmp_path: object) -> None:
    from pathlib import Path
    script = Path(str(tmp_path)) / "proto.py"
    script.write_text('SUBPROTOCOLS = ["chat.v2", "chat"]\n'
                      "def process(user, message, server):\n"
                      "    server.send(user, f'{user.subprotocol}: {message}')\n")
    server = start_server("--callback", str(script))  # type: ignore[operator]

    async def negotiate() -> None:
        async with websockets.connect(server.ws_url, subprotocols=["superchat", "chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hi")
            assert await ws.recv() == "chat: hi"
    run(negotiate())
