"""The execution model and the bounded stop, in both embeddings through one parametrized fixture.

``async def`` handlers run on the event loop; plain ``def`` handlers run in a worker thread, never on the I/O
thread, unless declared ``inline=True`` (the built-ins are); user handlers run one at a time unless
``max_concurrent_handlers`` says otherwise; the built-ins never wait for a user handler; a per-command
``timeout`` answers the client; a stop is bounded and every waiting client gets a reply.
Handlers block on ``threading.Event``s the test releases: no test depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.lock import lock_path_for, read_record
from ctrlsock.server import CommandContext, ControlServer, ServerConfig, ServerState
from ctrlsock.testing import ServerFactory
from tests.children.server_client import ask, connect, read_to_eof
from tests.support import LogWatch


def polls(seconds: float = 10.0) -> Iterator[None]:
    """Iterations until a deadline, for asking the server (it answers at once) until a state shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


WAIT = 10.0
"""Seconds a test waits for an event that must come (never reached when the code is right)."""

CONFIG = ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=5.0)

SHUTTING_DOWN = {"result": 1, "text": "Server is shutting down"}


class Embedded:
    """A server running in one embedding (started by the plugin's fixture), driven from the test's thread."""

    def __init__(self, kind: str, server: ControlServer, factory: ServerFactory) -> None:
        self.kind = kind
        self.server = server
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self.io_thread: int | None = None

    def start(self) -> None:
        self._factory(self.kind, server=self.server)
        loop = self._loop = self._factory.loop_of(self.server)
        if loop is not None:
            ident = asyncio.run_coroutine_threadsafe(_thread_ident(), loop).result(WAIT)
            self.io_thread = ident

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the clean stop to finish."""
        if self.kind == "thread":
            self.server.stop(timeout)
            return
        loop = self._loop
        assert loop is not None

        async def close() -> None:
            self.server.request_stop(timeout)
            await self.server.wait_closed()

        if self.server.state is not ServerState.STOPPED:
            asyncio.run_coroutine_threadsafe(close(), loop).result(WAIT * 2)


async def _thread_ident() -> int:
    return threading.get_ident()


@pytest.fixture(params=["thread", "asyncio"])
def embed(
    request: pytest.FixtureRequest, sock_path: Path, ctrlsock_server_factory: ServerFactory
) -> Callable[..., Embedded]:
    """``embed(config, setup)`` builds a server, lets ``setup(server)`` add commands, starts it."""

    def make(config: ServerConfig = CONFIG, setup: Callable[[ControlServer], None] | None = None) -> Embedded:
        server = ControlServer(sock_path, program="model-test", version="7.7.7", config=config)
        if setup is not None:
            setup(server)
        embedded = Embedded(request.param, server, ctrlsock_server_factory)
        embedded.start()
        return embedded

    return make


class Gate:
    """A handler that says it entered, then waits until released (bounded, so a failing test ends)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []
        self.done = threading.Event()

    def __call__(self, arguments: Any, context: CommandContext) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        self.entered.set()
        released = self.release.wait(WAIT)
        self.done.set()
        return {"released": released}


def ask_later(pool: ThreadPoolExecutor, path: Path, command: str, arguments: Any = None) -> Future[Any]:
    return pool.submit(ask, path, command, arguments, timeout=WAIT * 2)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


# --- the execution model -----------------------------------------------------------------------------


def test_builtins_are_answered_while_a_blocking_handler_runs(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor
) -> None:
    gate = Gate()
    embedded = embed(setup=lambda server: server.add_command("slow", gate))
    path = embedded.server.socket_path
    try:
        slow = ask_later(pool, path, "slow")
        assert gate.entered.wait(WAIT)
        version = ask(path, "version-get", timeout=WAIT)
        status = ask(path, "status-get", timeout=WAIT)
        # Answered while the slow handler still runs: it has not been released.
        assert not gate.release.is_set()
        assert not slow.done()
        assert version["text"] == "7.7.7"
        assert status["result"] == 0
        assert status["arguments"]["commands-running"] == 1
    finally:
        gate.release.set()
    assert slow.result(WAIT) == {"result": 0, "arguments": {"released": True}}


def test_plain_handlers_run_off_the_io_thread_and_inline_ones_on_it(embed: Callable[..., Embedded]) -> None:
    seen: dict[str, int] = {}

    def setup(server: ControlServer) -> None:
        @server.command("where")
        def where(arguments: Any, context: CommandContext) -> None:
            seen["plain"] = threading.get_ident()

        @server.command("where-inline", inline=True)
        def where_inline(arguments: Any, context: CommandContext) -> None:
            seen["inline"] = threading.get_ident()

    embedded = embed(setup=setup)
    assert ask(embedded.server.socket_path, "where")["result"] == 0
    assert ask(embedded.server.socket_path, "where-inline")["result"] == 0
    assert seen["plain"] != seen["inline"]
    assert seen["plain"] != threading.get_ident()
    if embedded.io_thread is not None:
        assert seen["inline"] == embedded.io_thread


def test_async_handlers_run_on_an_event_loop(embed: Callable[..., Embedded]) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def setup(server: ControlServer) -> None:
        @server.command("loop")
        async def which_loop(arguments: Any, context: CommandContext) -> None:
            await asyncio.sleep(0)
            loops.append(asyncio.get_running_loop())

    embedded = embed(setup=setup)
    assert ask(embedded.server.socket_path, "loop")["result"] == 0
    assert len(loops) == 1
    if embedded.kind == "asyncio":
        assert loops[0] is embedded._loop  # the daemon's own loop


def test_user_handlers_run_one_at_a_time_by_default(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor
) -> None:
    first, second = Gate(), Gate()

    def setup(server: ControlServer) -> None:
        server.add_command("first", first)
        server.add_command("second", second)

    embedded = embed(setup=setup)
    path = embedded.server.socket_path
    try:
        one = ask_later(pool, path, "first")
        assert first.entered.wait(WAIT)
        two = ask_later(pool, path, "second")
        status: dict[str, Any] = {}
        for _ in polls():  # status-get is answered at once; the queued command shows up in it
            status = ask(path, "status-get", timeout=WAIT)["arguments"]
            if status["commands-waiting"] == 1:
                break
        assert status["commands-waiting"] == 1
        assert not second.entered.is_set()  # queued behind the first, not running beside it
    finally:
        first.release.set()
        second.release.set()
    assert one.result(WAIT)["result"] == 0
    assert two.result(WAIT)["result"] == 0


def test_max_concurrent_handlers_lets_them_overlap(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor
) -> None:
    both = threading.Barrier(2, timeout=WAIT)

    def setup(server: ControlServer) -> None:
        @server.command("meet")
        def meet(arguments: Any, context: CommandContext) -> dict[str, Any]:
            return {"index": both.wait()}  # BrokenBarrierError unless two run at once

    embedded = embed(ServerConfig(stop_grace=5.0, max_concurrent_handlers=2), setup)
    path = embedded.server.socket_path
    replies = [ask_later(pool, path, "meet"), ask_later(pool, path, "meet")]
    results = [reply.result(WAIT * 2) for reply in replies]
    assert sorted(result["arguments"]["index"] for result in results) == [0, 1]


def test_a_handler_over_its_timeout_is_answered_and_its_late_result_dropped(
    embed: Callable[..., Embedded], log_watch: LogWatch
) -> None:
    gate = Gate()
    embedded = embed(setup=lambda server: server.add_command("slow", gate, timeout=0.2))
    path = embedded.server.socket_path
    try:
        reply = ask(path, "slow", timeout=WAIT)
        assert reply == {
            "result": 1,
            "text": "Error during command processing: 'slow' did not finish within 0.2 s",
        }
        assert not gate.release.is_set()  # answered while the handler still runs
    finally:
        gate.release.set()
    log_watch.wait_for("finished after its client was answered")
    assert ask(path, "version-get")["result"] == 0


# --- the bounded stop ----------------------------------------------------------------------------------


def test_stop_with_a_hung_handler_answers_every_waiting_client(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor, log_watch: LogWatch
) -> None:
    hung, queued = Gate(), Gate()

    def setup(server: ControlServer) -> None:
        server.add_command("hung", hung)
        server.add_command("queued", queued)

    embedded = embed(setup=setup)
    path = embedded.server.socket_path
    try:
        running = ask_later(pool, path, "hung")
        assert hung.entered.wait(WAIT)
        behind = ask_later(pool, path, "queued")
        for _ in polls():
            if ask(path, "status-get", timeout=WAIT)["arguments"]["commands-waiting"] == 1:
                break
        embedded.stop(0.3)  # returns although the handler hangs on
        assert not hung.release.is_set()
        assert running.result(WAIT) == SHUTTING_DOWN
        assert behind.result(WAIT) == SHUTTING_DOWN
        assert not queued.entered.is_set()
        assert not path.exists()
        assert embedded.server.state is ServerState.STOPPED
        log_watch.wait_for("still running at the end of the stop grace period")
    finally:
        hung.release.set()
        queued.release.set()


def test_clients_in_the_listen_backlog_at_stop_are_answered_not_reset(
    embed: Callable[..., Embedded],
) -> None:
    # An inline handler holds the I/O thread, so the next clients connect and send into the backlog.
    gate = Gate()
    slow = Gate()

    def setup(server: ControlServer) -> None:
        server.add_command("hold", gate, inline=True)
        server.add_command("user", slow)

    embedded = embed(setup=setup)
    path = embedded.server.socket_path
    holder = connect(path, timeout=WAIT)
    waiting: list[socket.socket] = []
    try:
        holder.sendall(b'{"command": "hold"}')
        assert gate.entered.wait(WAIT)
        for command in ("version-get", "user", "version-get", "user"):
            sock = connect(path, timeout=WAIT)
            waiting.append(sock)
            sock.sendall(json.dumps({"command": command}).encode())
        embedded.server.request_stop(5.0)
        gate.release.set()
        replies = [json.loads(read_to_eof(sock)) for sock in waiting]
    finally:
        gate.release.set()
        for sock in [holder, *waiting]:
            sock.close()
    assert [reply["result"] for reply in replies] == [0, 1, 0, 1]
    assert replies[0]["text"] == "7.7.7"
    assert replies[1] == SHUTTING_DOWN
    assert not slow.entered.is_set()
    embedded.stop()


def test_the_record_says_stopping_while_the_stop_drains(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor, log_watch: LogWatch
) -> None:
    gate = Gate()
    embedded = embed(setup=lambda server: server.add_command("slow", gate))
    path = embedded.server.socket_path
    try:
        running = ask_later(pool, path, "slow")
        assert gate.entered.wait(WAIT)
        embedded.server.request_stop(WAIT)
        log_watch.wait_for("draining")
        record = read_record(lock_path_for(path))
        assert record is not None
        assert record.stopping_since > 0
        assert not path.exists()
    finally:
        gate.release.set()
    assert running.result(WAIT) == {"result": 0, "arguments": {"released": True}}  # finished within grace
    embedded.stop()
    assert lock_path_for(path).stat().st_size == 0


def test_a_partial_request_dropped_at_the_end_of_the_grace_period_is_answered_and_logged(
    embed: Callable[..., Embedded], log_watch: LogWatch
) -> None:
    embedded = embed()
    path = embedded.server.socket_path
    with connect(path, timeout=WAIT) as sock:
        sock.sendall(b'{"command": "versi')
        for _ in polls():  # the partial request is in the server before the stop
            if ask(path, "status-get", timeout=WAIT)["arguments"]["connections-open"] == 2:
                break
        embedded.stop(0.2)
        assert json.loads(read_to_eof(sock)) == SHUTTING_DOWN
    log_watch.wait_for("dropped a partial request of 18 bytes")


def test_a_hung_coroutine_handler_gets_its_client_a_reply_at_the_stop(
    embed: Callable[..., Embedded], pool: ThreadPoolExecutor
) -> None:
    entered = threading.Event()

    def setup(server: ControlServer) -> None:
        @server.command("hang")
        async def hang(arguments: Any, context: CommandContext) -> None:
            entered.set()
            await asyncio.sleep(WAIT * 6)

    embedded = embed(setup=setup)
    waiting = ask_later(pool, embedded.server.socket_path, "hang")
    assert entered.wait(WAIT)
    embedded.stop(0.2)
    assert waiting.result(WAIT) == SHUTTING_DOWN  # a reply, not a cut connection


def test_a_coroutine_over_its_timeout_is_cancelled(embed: Callable[..., Embedded]) -> None:
    cancelled = threading.Event()

    def setup(server: ControlServer) -> None:
        @server.command("slow", timeout=0.2)
        async def slow(arguments: Any, context: CommandContext) -> None:
            try:
                await asyncio.sleep(WAIT * 6)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    embedded = embed(setup=setup)
    reply = ask(embedded.server.socket_path, "slow", timeout=WAIT)
    assert reply["text"] == "Error during command processing: 'slow' did not finish within 0.2 s"
    if embedded.kind == "asyncio":
        assert cancelled.wait(WAIT)  # on the loop it can be cancelled; a worker thread's cannot
