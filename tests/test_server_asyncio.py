"""The asyncio embedding over real sockets: the same behaviour as the thread engine, on a running loop.

The clients are plain blocking sockets run in worker threads (``asyncio.to_thread``), so the server's loop
is never blocked by the test itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import LockHeldError
from ctrlsock.lock import lock_path_for
from ctrlsock.protocol import Reply, encode_reply
from ctrlsock.server import CommandContext, ControlServer, ServerConfig
from tests.children.server_client import ask, ask_raw, connect, read_to_eof, slow_read

FAST = ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=1.0)


def make(sock_path: Path, config: ServerConfig = FAST, **kwargs: Any) -> ControlServer:
    server = ControlServer(sock_path, program="aio-test", version="4.5.6", config=config, **kwargs)
    release = asyncio.Event()

    @server.command("echo")
    def echo(arguments: Any, context: CommandContext) -> dict[str, Any]:
        return {"echo": arguments}

    @server.command("wait")
    async def wait(arguments: Any, context: CommandContext) -> dict[str, Any]:
        await release.wait()
        return {"waited": True}

    @server.command("release", inline=True)  # on the loop's thread, as asyncio.Event needs
    def do_release(arguments: Any, context: CommandContext) -> None:
        release.set()

    @server.command("boom")
    async def boom(arguments: Any, context: CommandContext) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")

    @server.command("blob")
    def blob(arguments: Any, context: CommandContext) -> dict[str, Any]:
        return {"blob": "x" * int(arguments["size"])}

    return server


def run_async(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run an ``async def`` test on a fresh loop (no pytest-asyncio here)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return functools.update_wrapper(wrapper, test)


async def ask_async(path: Path, command: str, arguments: Any = None) -> dict[str, Any]:
    return await asyncio.to_thread(ask, path, command, arguments)


@run_async
async def test_builtins_answer_on_a_running_loop(sock_path: Path) -> None:
    async with make(sock_path) as server:
        reply = await ask_async(server.socket_path, "version-get")
        assert reply["text"] == "4.5.6"
        commands = (await ask_async(server.socket_path, "list-commands"))["arguments"]
        assert commands == sorted(commands)
        status = (await ask_async(server.socket_path, "status-get"))["arguments"]
        assert status["pid"] == os.getpid()
        assert (await ask_async(server.socket_path, "nope"))["result"] == 2
    assert not sock_path.exists()
    assert lock_path_for(sock_path).stat().st_size == 0


@run_async
async def test_slow_coroutine_handler_does_not_block_other_clients(sock_path: Path) -> None:
    async with make(sock_path, ServerConfig(stop_grace=1.0, max_concurrent_handlers=3)) as server:
        waiting = asyncio.ensure_future(ask_async(server.socket_path, "wait"))
        # While "wait" is parked on its event, other commands are answered, including the one that
        # releases it.
        assert (await ask_async(server.socket_path, "echo", [1]))["arguments"] == {"echo": [1]}
        assert (await ask_async(server.socket_path, "release"))["result"] == 0
        assert (await waiting) == {"result": 0, "arguments": {"waited": True}}


@run_async
async def test_async_handler_exception_is_result_1(sock_path: Path) -> None:
    async with make(sock_path) as server:
        reply = await ask_async(server.socket_path, "boom")
        assert reply == {"result": 1, "text": "Error during command processing: async boom"}


@run_async
async def test_bad_request_and_timeouts_match_the_thread_engine(sock_path: Path) -> None:
    async with make(sock_path, ServerConfig(idle_timeout=0.3)) as server:
        raw = await asyncio.to_thread(ask_raw, server.socket_path, b"nonsense")
        assert json.loads(raw) == {"result": 1, "text": "invalid first character n"}

        def partial() -> bytes:
            with connect(server.socket_path) as sock:
                sock.sendall(b'{"comm')
                return read_to_eof(sock)

        reply = json.loads(await asyncio.to_thread(partial))
        assert (
            reply["text"] == "Connection over control channel timed out, discarded partial command of 6 bytes"
        )


@run_async
async def test_big_reply_to_slow_reader_while_others_are_served(sock_path: Path) -> None:
    size = 16 * 1024 * 1024
    async with make(sock_path, ServerConfig(idle_timeout=0.5, write_deadline=5.0)) as server:

        def slow() -> bytes:
            with connect(server.socket_path, rcvbuf=4096, timeout=30) as sock:
                sock.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
                first = sock.recv(4096)
                for _ in range(3):
                    assert ask(server.socket_path, "echo")["result"] == 0
                return first + slow_read(sock, chunk=4096, pause=0.6, every=2048)

        received = await asyncio.to_thread(slow)
    assert received == encode_reply(Reply(0, "", {"blob": "x" * size}))


@run_async
async def test_non_reader_is_dropped_after_the_write_deadline(sock_path: Path) -> None:
    async with make(sock_path, ServerConfig(idle_timeout=5.0, write_deadline=0.3)) as server:

        def stuck() -> None:
            with connect(server.socket_path, rcvbuf=4096) as sock:
                sock.sendall(json.dumps({"command": "blob", "arguments": {"size": 4 << 20}}).encode())
                poller = select.poll()
                poller.register(sock, select.POLLRDHUP)
                assert poller.poll(5000)

        await asyncio.to_thread(stuck)
        assert server.stats.dropped == 1
        assert (await ask_async(server.socket_path, "echo"))["result"] == 0


@run_async
async def test_shutdown_command_ends_serve_forever(sock_path: Path) -> None:
    server = make(sock_path)
    await server.start()
    serving = asyncio.ensure_future(server.serve_forever())
    reply = await ask_async(sock_path, "shutdown", {"exit-value": 4})
    assert reply == {"result": 0, "text": "Shutting down."}
    await asyncio.wait_for(serving, 10)
    assert server.exit_value == 4
    assert not sock_path.exists()


@run_async
async def test_second_server_fails_with_the_lock_holder(sock_path: Path) -> None:
    async with make(sock_path):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
            async with make(sock_path):
                pass


@run_async
async def test_cancelling_serve_forever_stops_cleanly(sock_path: Path) -> None:
    server = make(sock_path)
    await server.start()
    serving = asyncio.ensure_future(server.serve_forever())
    await asyncio.sleep(0)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert not sock_path.exists()
    assert not server.is_serving


@run_async
async def test_thread_and_asyncio_reject_being_started_twice(sock_path: Path) -> None:
    server = make(sock_path)
    async with server:
        with pytest.raises(Exception, match="already running"):
            server.start_in_thread()


def test_stop_from_another_thread_reaches_the_loop(sock_path: Path) -> None:
    async def main() -> None:
        server = make(sock_path)
        await server.start()
        await asyncio.to_thread(server.request_stop)
        await asyncio.wait_for(server.serve_forever(), 10)

    asyncio.run(main())
    assert not sock_path.exists()


@run_async
async def test_close_lets_an_in_flight_reply_finish(sock_path: Path) -> None:
    size = 4 * 1024 * 1024
    server = make(sock_path, ServerConfig(idle_timeout=1.0, write_deadline=5.0, stop_grace=5.0))
    await server.start()
    first_bytes = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reader() -> bytes:
        with connect(server.socket_path, rcvbuf=4096, timeout=10) as sock:
            sock.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
            first = sock.recv(4096)
            loop.call_soon_threadsafe(first_bytes.set)
            return first + read_to_eof(sock)

    reading = asyncio.ensure_future(asyncio.to_thread(reader))
    await first_bytes.wait()
    server.close()
    await server.wait_closed()
    assert await reading == encode_reply(Reply(0, "", {"blob": "x" * size}))
    assert not sock_path.exists()


@run_async
async def test_close_with_zero_grace_drops_the_in_flight_reply(sock_path: Path) -> None:
    server = make(sock_path, ServerConfig(idle_timeout=1.0, write_deadline=5.0, stop_grace=0.0))
    await server.start()
    sent = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stuck() -> bytes:
        with connect(server.socket_path, rcvbuf=4096, timeout=10) as sock:
            sock.sendall(json.dumps({"command": "blob", "arguments": {"size": 4 << 20}}).encode())
            first = sock.recv(1)
            loop.call_soon_threadsafe(sent.set)
            poller = select.poll()
            poller.register(sock, select.POLLRDHUP)
            assert poller.poll(5000)
            return first

    waiting = asyncio.ensure_future(asyncio.to_thread(stuck))
    await sent.wait()
    server.close()
    await server.wait_closed()
    assert await waiting
    assert server.stats.dropped == 1
