"""Servers for tests: start a :class:`~ctrlsock.server.ControlServer` on a temporary socket in either
embedding, and stop it afterwards, checking that it stopped cleanly.

The pytest plugin (:mod:`ctrlsock.pytest_plugin`) hands a :class:`ServerFactory` to tests as the
``ctrlsock_server_factory`` fixture; other test runners can use the class directly::

    with ServerFactory() as start:
        server = start("asyncio", idle_timeout=1.0)
        server.add_command("lease-get", handler)
        assert server.call("lease-get", {"ip-address": "192.0.2.1"}).ok
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from ctrlsock.errors import ServerError
from ctrlsock.lock import lock_path_for, read_record
from ctrlsock.server import ControlServer, HttpListenerConfig, ServerConfig, ServerState

__all__ = ["Embedding", "ServerFactory"]

START_TIMEOUT: Final = 10.0
"""Seconds a start or a stop on the loop's thread may take (reached only when something is broken)."""


class Embedding(enum.StrEnum):
    """How the server runs: on a background thread (``start_in_thread``), or on an asyncio loop that
    runs in its own thread (``await server.start()`` there)."""

    THREAD = "thread"
    ASYNCIO = "asyncio"


class ServerFactory:
    """Starts servers on temporary sockets; :meth:`close` stops them all and checks each stopped cleanly.

    Each server gets its own directory from ``tempfile.mkdtemp(prefix="cs-", dir="/tmp")``: a socket path
    holds at most 107 bytes, which a test runner's temporary directories can exceed.
    """

    def __init__(self) -> None:
        self._started: list[tuple[ControlServer, asyncio.AbstractEventLoop | None]] = []
        self._loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []
        self._directories: list[Path] = []

    def socket_path(self) -> Path:
        """A fresh socket path in a new short private directory (removed by :meth:`close`)."""
        directory = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
        self._directories.append(directory)
        return directory / "ctrl.sock"

    def __call__(
        self,
        embedding: Embedding | str = Embedding.THREAD,
        *,
        server: ControlServer | None = None,
        program: str = "ctrlsock-test",
        version: str = "0.0.0",
        http: HttpListenerConfig | Sequence[HttpListenerConfig] = (),
        **config_options: Any,
    ) -> ControlServer:
        """Start a server and return it, serving.

        Args:
            embedding: ``"thread"`` or ``"asyncio"``.
            server: a ready (not started) server, with its commands registered; by default a new one on
                :meth:`socket_path`, to which the test adds commands (they may be added while it serves).
            program: the new server's program name.
            version: the new server's ``version-get`` text.
            http: HTTP(S) listeners for the new server (``HttpListenerConfig(port=0)`` picks a free port;
                ``server.http_urls`` tells it).
            **config_options: :class:`~ctrlsock.server.ServerConfig` fields for the new server (with
                ``server``, configure that server instead).

        Raises:
            ValueError: an unknown embedding, or ``config_options`` given with ``server``.
        """
        kind = Embedding(embedding)
        if server is None:
            server = ControlServer(
                self.socket_path(),
                program=program,
                version=version,
                config=ServerConfig(**config_options),
                http=http,
            )
        elif config_options or http:
            raise ValueError(f"config options {sorted(config_options)} given with a ready server")
        if kind is Embedding.THREAD:
            server.start_in_thread()
            self._started.append((server, None))
            return server
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="ctrlsock test loop", daemon=True)
        thread.start()
        self._loops.append((loop, thread))
        asyncio.run_coroutine_threadsafe(server.start(handle_signals=False), loop).result(START_TIMEOUT)
        self._started.append((server, loop))
        return server

    def loop_of(self, server: ControlServer) -> asyncio.AbstractEventLoop | None:
        """The loop serving ``server`` in the asyncio embedding (``None`` in the thread embedding)."""
        return next(loop for started, loop in self._started if started is server)

    def close(self) -> None:
        """Stop every server started here, then check each is stopped with its socket gone and its lock
        record cleared (what a clean stop leaves)."""
        try:
            for server, _loop in self._started:
                # From this thread, stop() waits for either embedding (the loop runs elsewhere), and for
                # a server a test restarted in the other one.
                server.stop()
            for server, _loop in self._started:
                _check_stopped_cleanly(server)
        finally:
            self._started.clear()
            for loop, thread in self._loops:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(START_TIMEOUT)
                loop.close()
            self._loops.clear()
            for directory in self._directories:
                shutil.rmtree(directory, ignore_errors=True)
            self._directories.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_stopped_cleanly(server: ControlServer) -> None:
    if server.state is not ServerState.STOPPED:
        raise ServerError(f"the control server for {server.socket_path} is {server.state}, not stopped")
    try:
        mode = os.lstat(server.socket_path).st_mode
    except FileNotFoundError:
        mode = 0
    # Only a socket counts: a file that replaced ours is someone else's, and a clean stop leaves it alone.
    if stat.S_ISSOCK(mode):
        raise ServerError(f"the stopped server left a socket at {server.socket_path}")
    lock_path = lock_path_for(server.socket_path)
    if lock_path.exists() and read_record(lock_path) is not None:
        raise ServerError(f"the stopped server left its holder record in {lock_path}")
