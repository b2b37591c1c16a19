"""``ControlServer``: what a daemon configures, and its two first-class embeddings (asyncio, a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

from ctrlsock.errors import ServerError
from ctrlsock.lock import SocketLock

from . import systemd
from .aio import AsyncioEngine
from .builtin_commands import register_builtins
from .commands import CommandRegistry, Handler, PeerCredentials
from .config import Access, ConfigProvider, ServerConfig
from .endpoint import Endpoint, open_endpoint
from .engine import SelectorEngine, ServerStats, raise_nofile_limit

__all__ = ["ControlServer"]

logger = logging.getLogger("ctrlsock.server")

H = TypeVar("H", bound=Handler)

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class ControlServer:
    """A daemon's control socket: lock, recovery, bind, and a Kea-compatible command channel.

    Example::

        server = ControlServer("/run/mydaemon/ctrl.sock", program="mydaemon", version="1.2.3")

        @server.command("echo")
        def echo(arguments, context):
            return {"echo": arguments}

        # asyncio:   async with server: await server.serve_forever()
        # threads:   with server.running_in_thread(): server.wait()

    Built-in commands: ``list-commands``, ``version-get``, ``build-report``, ``status-get``, ``shutdown``;
    with ``config_provider``, also ``config-get/-test/-set/-reload/-write``.

    Args:
        socket_path: where the socket lives; ``<socket_path>.lock`` is its lock.
        program: the name recorded in the lock's holder record and in ``status-get``.
        version: ``version-get``'s text (Kea: the short version).
        extended_version: ``version-get``'s ``arguments.extended`` (defaults to ``version`` plus Python's).
        build_report: ``build-report``'s text.
        config: socket, access and limit settings.
        config_provider: the daemon's configuration, for the ``config-*`` commands.
        on_shutdown: called (on the serving thread or loop) when a client sends ``shutdown``; without it,
            the server stops itself (``serve_forever()`` returns, ``wait()`` wakes up).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        program: str | None = None,
        version: str = "",
        extended_version: str | None = None,
        build_report: str | None = None,
        config: ServerConfig | None = None,
        config_provider: ConfigProvider | None = None,
        on_shutdown: Callable[[], object] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.program = program or Path(sys.argv[0] or "python").name
        self.version = version
        self.extended_version = extended_version or f"{version}\npython {sys.version.split()[0]}".strip()
        self.build_report = build_report or f"program: {self.program}\nversion: {version}".strip()
        self.config = config or ServerConfig()
        self.config_provider = config_provider
        self.on_shutdown = on_shutdown
        self.stats = ServerStats()
        self.exit_value = 0
        self.started_monotonic = time.monotonic()
        self.reloaded_monotonic = self.started_monotonic
        self.registry = CommandRegistry(self, self.config.access)
        register_builtins(self, self.registry)
        for name, access in self.config.command_access.items():
            if name in self.registry:
                self.registry.set_access(name, access)
        self._pending_access = {
            name: access for name, access in self.config.command_access.items() if name not in self.registry
        }
        self._endpoint: Endpoint | None = None
        self._engine: SelectorEngine | AsyncioEngine | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stopped.set()
        self._state_lock = threading.Lock()
        self._error: BaseException | None = None
        self._stop_pending: float | None = None  # a stop asked for while the engine was being set up

    # --- commands ------------------------------------------------------------------------------------

    def command(
        self,
        name: str,
        *,
        allow_uids: Collection[int] | None = None,
        allow_gids: Collection[int] | None = None,
        replace: bool = False,
    ) -> Callable[[H], H]:
        """Decorator: register the function as the handler of ``name``.

        The handler is called as ``handler(arguments, context)`` and returns a :class:`Reply`, a map (the
        ``arguments`` of a result-0 reply) or ``None``; it may be a coroutine function. It raises
        :class:`~ctrlsock.errors.CommandError` to answer with a chosen result and text; any other exception
        is answered with result 1 and logged with its traceback.

        Args:
            name: the command name.
            allow_uids: only peers with one of these uids (or ``allow_gids``) may run it.
            allow_gids: see ``allow_uids``.
            replace: replace an existing command (a built-in, say) instead of failing.
        """

        def decorate(handler: H) -> H:
            self.add_command(name, handler, allow_uids=allow_uids, allow_gids=allow_gids, replace=replace)
            return handler

        return decorate

    def add_command(
        self,
        name: str,
        handler: Handler,
        *,
        allow_uids: Collection[int] | None = None,
        allow_gids: Collection[int] | None = None,
        replace: bool = False,
    ) -> None:
        """Register ``handler`` for ``name`` (see :meth:`command`)."""
        access = Access.of(allow_uids, allow_gids) or self._pending_access.pop(name, None)
        self.registry.add(name, handler, access=access, replace=replace)

    def remove_command(self, name: str) -> None:
        self.registry.remove(name)

    @property
    def commands(self) -> list[str]:
        """The registered command names, sorted (as ``list-commands`` answers)."""
        return self.registry.names()

    # --- state seen by the built-ins -----------------------------------------------------------------

    @property
    def lock(self) -> SocketLock | None:
        """The held socket lock while serving."""
        return None if self._endpoint is None else self._endpoint.lock

    @property
    def socket_activated(self) -> bool:
        return self._endpoint is not None and self._endpoint.activated

    @property
    def is_serving(self) -> bool:
        return not self._stopped.is_set()

    def mark_reloaded(self) -> None:
        """Reset ``status-get``'s ``reload`` (seconds since the configuration was last applied)."""
        self.reloaded_monotonic = time.monotonic()

    def shutdown_requested(self, exit_value: int, peer: PeerCredentials | None) -> None:
        """The ``shutdown`` command's action: the daemon's callback, or stop serving."""
        self.exit_value = exit_value
        who = f"pid {peer.pid} (uid {peer.uid})" if peer is not None else "a client"
        logger.info("shutdown requested by %s", who)
        if self.on_shutdown is not None:
            self.on_shutdown()
        else:
            self.request_stop()

    # --- start-up and stop shared by both embeddings --------------------------------------------------

    def _open(self) -> Endpoint:
        with self._state_lock:
            if not self._stopped.is_set() or self._endpoint is not None:
                raise ServerError(f"the control server for {self.socket_path} is already running")
            config = self.config
            endpoint = open_endpoint(
                self.socket_path,
                program=self.program,
                mode=config.mode,
                group=config.group,
                backlog=config.backlog,
                socket_activation=config.socket_activation,
            )
            if config.raise_nofile_limit:
                raise_nofile_limit()
            self._endpoint = endpoint
            self._stopped.clear()
            self._error = None
            self._stop_pending = None
            self.stats = ServerStats()
            self.exit_value = 0
            self.started_monotonic = self.reloaded_monotonic = time.monotonic()
            return endpoint

    def _set_engine(self, engine: SelectorEngine | AsyncioEngine) -> None:
        self._engine = engine
        pending, self._stop_pending = self._stop_pending, None
        if pending is not None:
            self.request_stop(pending)

    def _ready(self) -> None:
        logger.info("serving %s (pid %d)", self.socket_path, os.getpid())
        if self.config.notify:
            systemd.notify("READY=1")

    def _closed(self) -> None:
        with self._state_lock:
            endpoint, self._endpoint = self._endpoint, None
            self._engine = None
            try:
                if endpoint is not None:
                    endpoint.close()
            finally:
                self._stopped.set()
        logger.info("stopped serving %s", self.socket_path)

    def request_stop(self, grace: float | None = None) -> None:
        """Ask the server to stop (stop accepting, drain for the grace period, clean up); do not wait.

        Safe from any thread, and from a signal handler in the thread embedding.

        Args:
            grace: seconds in-flight replies get to finish (default: :attr:`ServerConfig.stop_grace`).
        """
        engine = self._engine
        if engine is None:
            if self._endpoint is not None:
                self._stop_pending = grace if grace is not None else self.config.stop_grace  # starting up
            return
        if self.config.notify:
            systemd.notify("STOPPING=1")
        if isinstance(engine, SelectorEngine):
            engine.request_stop(grace)
            return
        loop = engine._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            engine.request_stop(grace)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to stop
                loop.call_soon_threadsafe(engine.request_stop, grace)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (and cleaned up); True if it has."""
        return self._stopped.wait(timeout)

    def install_signal_handlers(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        """Stop cleanly on these signals (SIGTERM and SIGINT by default).

        In the asyncio embedding, uses ``loop.add_signal_handler`` (call it inside the running loop);
        otherwise installs ``signal.signal`` handlers (call it from the main thread).
        """
        engine = self._engine
        if isinstance(engine, AsyncioEngine):
            for number in signals:
                engine._loop.add_signal_handler(number, self.request_stop)
            return

        previous: dict[int, Any] = {}

        def handle(number: int, frame: FrameType | None) -> None:
            if self._engine is not None:
                self.request_stop()
                return
            # Not serving any more: the signal is no longer ours to swallow. Put the previous handler back
            # and deliver it again (we run on the main thread, where signal.signal is allowed).
            before = previous.get(number)
            signal.signal(number, signal.SIG_DFL if before is None else before)
            os.kill(os.getpid(), number)

        for number in signals:
            previous[number] = signal.signal(number, handle)

    # --- the thread embedding ------------------------------------------------------------------------

    def serve(self) -> None:
        """Open the socket and serve on the calling thread until stopped (what ``ctrlsock serve`` runs).

        Raises:
            LockHeldError: another process holds the socket's lock.
            ServerError: the socket could not be set up.
        """
        engine = self._open_engine()
        try:
            engine.run(ready=self._ready)
        finally:
            self._closed()

    def _open_engine(self) -> SelectorEngine:
        """Take the lock, bind, and attach an epoll engine to the endpoint (closed again on failure)."""
        endpoint = self._open()
        try:
            engine = SelectorEngine(self, endpoint)
        except BaseException:
            self._closed()
            raise
        self._set_engine(engine)
        return engine

    def start_in_thread(self, *, name: str | None = None) -> None:
        """Open the socket now (errors raise here) and serve on a background daemon thread.

        Raises:
            LockHeldError: another process holds the socket's lock.
            ServerError: the socket could not be set up, or the server is already running.
        """
        engine = self._open_engine()
        started = threading.Event()

        def ready() -> None:
            started.set()
            self._ready()

        def run() -> None:
            try:
                engine.run(ready=ready)
            except BaseException as error:
                self._error = error
                logger.exception("control server for %s failed", self.socket_path)
            finally:
                started.set()
                self._closed()

        self._thread = threading.Thread(
            target=run, name=name or f"ctrlsock {self.socket_path.name}", daemon=True
        )
        self._thread.start()
        started.wait()
        if self._error is not None:
            self.stop()  # joins the thread and raises its error

    def stop(self, grace: float | None = None) -> None:
        """Stop the thread embedding: stop accepting, drain in-flight replies, clean up, and wait.

        Args:
            grace: seconds in-flight replies get to finish (default: :attr:`ServerConfig.stop_grace`).

        Raises:
            ServerError: the serving thread had failed (its exception is chained).
        """
        self.request_stop(grace)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
        error = self._error
        if error is not None:
            self._error = None
            raise ServerError(f"the control server for {self.socket_path} failed: {error}") from error

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[Self]:
        """``with server.running_in_thread(): ...`` serves on a background thread for the block."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop()

    # --- the asyncio embedding -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket and start serving on the running loop (returns at once)."""
        endpoint = self._open()
        try:
            engine = AsyncioEngine(self, endpoint, asyncio.get_running_loop())
            engine.start()
        except BaseException:
            self._closed()
            raise
        self._set_engine(engine)
        self._ready()

    async def serve_forever(self) -> None:
        """Serve until stopped (``close()``, a signal, ``shutdown``), then finish the clean stop."""
        engine = self._engine
        if not isinstance(engine, AsyncioEngine):
            await self.start()
            engine = self._engine
            assert isinstance(engine, AsyncioEngine)
        try:
            await engine.wait_stopped()
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise
        self._finish_async(engine)

    def close(self) -> None:
        """Begin the clean stop (asyncio: call on the loop; then ``await wait_closed()``)."""
        self.request_stop()

    async def wait_closed(self) -> None:
        engine = self._engine
        if isinstance(engine, AsyncioEngine):
            await engine.wait_stopped()
            self._finish_async(engine)

    def _finish_async(self, engine: AsyncioEngine) -> None:
        if self._engine is engine:
            self._closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "serving" if self.is_serving else "stopped"
        return f"<ControlServer {self.socket_path} {state}>"
