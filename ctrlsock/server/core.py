"""``ControlServer``: what a daemon configures, and its two first-class embeddings (asyncio, a thread).

A thin facade: start-up and stop of the endpoint (``endpoint.py``), one :class:`~.engine.Engine` that
serves it, and the waiter that drives the engine (``epoll.py`` on a thread, ``aio.py`` on a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from ctrlsock import async_client, client
from ctrlsock.errors import ServerError
from ctrlsock.lock import SocketLock
from ctrlsock.protocol import Reply

from . import signals, systemd
from .aio import AsyncioWaiter
from .arguments import ArgumentSpec, compile_arguments
from .builtin_commands import register_builtins
from .commands import (
    AfterHook,
    BeforeHook,
    CommandContext,
    CommandRegistry,
    Handler,
    HandlerResult,
    PeerCredentials,
)
from .config import Access, ConfigProvider, ServerConfig
from .endpoint import Endpoint, open_endpoint
from .engine import Engine, raise_nofile_limit
from .epoll import EpollWaiter
from .http_config import HttpListenerConfig
from .http_listener import HttpListener, open_http_listener
from .stats import ServerStats
from .upkeep import Upkeep

__all__ = ["ControlServer", "ServerState"]

logger = logging.getLogger("ctrlsock.server")

# The handler's parameters spelled out and its return type kept exact, rather than one type variable bound
# to the whole Handler type: with the latter, mypy reports a wrong handler as 'Value of type variable "H"
# of function cannot be ...'; with this, it names the signature it expected.
HandlerReturn = TypeVar("HandlerReturn", bound=HandlerResult | Awaitable[HandlerResult])

_STOP_MARGIN: Final = 2.0
"""Seconds past the grace period a signal handler waits for a thread-embedded server's stop to finish."""


class ServerState(enum.StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ControlServer:
    """A daemon's control socket: lock, recovery, bind, and a Kea-compatible command channel.

    Example::

        server = ControlServer("/run/mydaemon/ctrl.sock", program="mydaemon", version="1.2.3")

        @server.command("echo")
        def echo(arguments, context):
            return {"echo": arguments}

        # asyncio:   async with server: await server.serve_forever()
        # threads:   with server.running_in_thread(): run_the_rest_of_my_daemon()

    Built-in commands: ``list-commands``, ``version-get``, ``build-report``, ``status-get``, ``shutdown``;
    with ``config_provider``, also ``config-get/-test/-set/-reload/-write``.

    Args:
        socket_path: where the socket lives; ``<socket_path>.lock`` is its lock.
        program: the name recorded in the lock's holder record and in ``status-get``.
        version: ``version-get``'s text (Kea: the short version).
        extended_version: ``version-get``'s ``arguments.extended`` (defaults to ``version`` plus Python's).
        build_report: ``build-report``'s text.
        config: socket, access, execution and limit settings.
        config_provider: the daemon's configuration, for the ``config-*`` commands.
        on_shutdown: called (on the I/O thread or loop) when a client sends ``shutdown``; without it, the
            server stops itself: ``serve_forever()`` returns, ``wait()`` wakes up, and a daemon that runs
            ``running_in_thread()`` on its main thread gets ``SystemExit(exit-value)`` there.
        http: HTTP(S) listeners serving the same commands, as Kea 3's ``control-sockets`` of type ``http``
            do: POSTs with a JSON body, replies wrapped in a list. A listener other hosts can reach needs
            TLS and users (or ``allow_insecure``); the check raises :class:`ServerError` here.
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
        http: HttpListenerConfig | Sequence[HttpListenerConfig] = (),
    ) -> None:
        self.socket_path = Path(socket_path)
        self.program = program or Path(sys.argv[0] or "python").name
        self.version = version
        self.extended_version = extended_version or f"{version}\npython {sys.version.split()[0]}".strip()
        self.build_report = build_report or f"program: {self.program}\nversion: {version}".strip()
        self.config = config or ServerConfig()
        self.config_provider = config_provider
        self.on_shutdown = on_shutdown
        self.http = (http,) if isinstance(http, HttpListenerConfig) else tuple(http)
        for listener in self.http:
            listener.check()  # an exposed listener is refused before anything is locked or bound
        self.stats = ServerStats()
        self.exit_value = 0
        self.started_monotonic = time.monotonic()
        self.reloaded_monotonic = self.started_monotonic
        self.registry = CommandRegistry(
            self,
            self.config.access,
            default_timeout=self.config.handler_timeout,
            expose_errors=self.config.expose_handler_errors,
        )
        register_builtins(
            self, self.registry, provider=config_provider, shutdown_requested=self.shutdown_requested
        )
        for name, access in self.config.command_access.items():
            if name in self.registry:
                self.registry.set_access(name, access)
        self._pending_access = {
            name: access for name, access in self.config.command_access.items() if name not in self.registry
        }
        self._state = ServerState.STOPPED
        self._ever_started = False
        self._endpoint: Endpoint | None = None
        self._engine: Engine | None = None
        self._waiter: EpollWaiter | AsyncioWaiter | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stopped.set()
        self._state_lock = threading.Lock()
        self._error: BaseException | None = None
        self._stop_wanted: float | None = None  # a stop asked for before the engine could take it
        self._signals_end_process = False
        self._stop_unobserved = False  # asyncio: a stop finished while nobody awaited the server
        self._http_urls: list[str] = []

    # --- commands ------------------------------------------------------------------------------------

    def command(
        self,
        name: str,
        *,
        allow_uids: Collection[int] | None = None,
        allow_gids: Collection[int] | None = None,
        replace: bool = False,
        inline: bool = False,
        timeout: float | None = None,
        arguments: type[Mapping[str, Any]] | ArgumentSpec | None = None,
    ) -> Callable[
        [Callable[[Any, CommandContext], HandlerReturn]], Callable[[Any, CommandContext], HandlerReturn]
    ]:
        """Decorator: register the function as the handler of ``name``.

        The handler is called as ``handler(arguments, context)`` and returns a :class:`Reply`, a map (the
        ``arguments`` of a result-0 reply) or ``None``. It raises :class:`~ctrlsock.errors.CommandError` to
        answer with a chosen result and text; any other exception is answered with result 1 and logged
        with its traceback.

        Where it runs (the execution model):

        - an ``async def`` handler runs on the event loop (in the thread embedding, which has none, on a
          worker thread's own loop);
        - a plain ``def`` handler runs in a worker thread, never on the I/O thread, unless declared
          ``inline=True`` (then it must be quick and must not block: every client waits for it). The
          built-ins are inline;
        - user handlers run one at a time by default (as in Kea: handlers need no locking among
          themselves); ``ServerConfig(max_concurrent_handlers=N)`` lets N overlap;
        - accepting, reading, writing, timeouts and the inline built-ins never wait for a user handler;
        - with ``timeout`` (seconds, or ``ServerConfig.handler_timeout`` by default; counted from when the
          request arrived whole, waiting behind other handlers included), a client whose handler overruns
          gets result 1 ``Error during command processing: 'NAME' did not finish within
          T s``. A thread cannot be killed: its late result is logged and dropped (a coroutine is
          cancelled).

        Args:
            name: the command name.
            allow_uids: only peers with one of these uids (or ``allow_gids``) may run it.
            allow_gids: see ``allow_uids``; primary and supplementary groups count.
            replace: replace an existing command (a built-in, say) instead of failing.
            inline: run a plain function on the I/O thread.
            timeout: seconds the handler may take before its client is answered without it.
            arguments: a ``TypedDict`` declaring the arguments (or its :func:`compile_arguments` form,
                to choose what unknown keys get); a request that does not fit is refused before the
                handler runs, with result 1 and a text such as ``Error during command processing:
                missing parameter 'ip-address'``. Absent arguments reach the handler as ``{}``.

        Raises:
            TypeError: ``arguments`` uses a type hint that cannot be checked.
        """

        def decorate(
            handler: Callable[[Any, CommandContext], HandlerReturn],
        ) -> Callable[[Any, CommandContext], HandlerReturn]:
            self.add_command(
                name,
                handler,
                allow_uids=allow_uids,
                allow_gids=allow_gids,
                replace=replace,
                inline=inline,
                timeout=timeout,
                arguments=arguments,
            )
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
        inline: bool = False,
        timeout: float | None = None,
        arguments: type[Mapping[str, Any]] | ArgumentSpec | None = None,
    ) -> None:
        """Register ``handler`` for ``name`` (see :meth:`command`)."""
        spec = arguments
        if spec is not None and not isinstance(spec, ArgumentSpec):
            spec = compile_arguments(spec)  # a bad declaration fails here, not at the first request
        access = Access.of(allow_uids, allow_gids) or self._pending_access.pop(name, None)
        self.registry.add(
            name, handler, access=access, replace=replace, inline=inline, timeout=timeout, arguments=spec
        )

    def remove_command(self, name: str) -> None:
        self.registry.remove(name)

    def call(
        self, command: str, arguments: object = None, *, timeout: float = client.DEFAULT_TIMEOUT
    ) -> Reply:
        """Send ``command`` to this server through its socket, as a client would, and return the reply.

        The request takes the real path (framing, access checks, the handler's thread or loop, encoding),
        so a test or a daemon's self-check sees exactly what ``ctrlsock send`` would. Call it from any
        thread but the one serving: from the serving loop, ``await`` :meth:`call_async` instead. A handler
        calling another user command needs ``max_concurrent_handlers`` of 2 or more (else the second waits
        for the first until ``timeout``).

        Args:
            command: The command name.
            arguments: Any value JSON can encode, left out when ``None``.
            timeout: Seconds for the whole exchange.

        Returns:
            The reply, whatever its result code (:meth:`Reply.raise_for_result` turns a failure into an
            exception).

        Raises:
            ServerError: called from the thread or loop that serves this server (it would wait for itself).
            ClientError: the exchange failed (the server is not serving, timed out, ...), as
                :func:`ctrlsock.client.send_command` raises it.
        """
        waiter = self._waiter
        serving_loop = waiter.loop if isinstance(waiter, AsyncioWaiter) else None
        if threading.current_thread() is self._thread or (
            serving_loop is not None and _running_loop() is serving_loop
        ):
            raise ServerError(f"call({command!r}) would block the thread that must answer it")
        return client.send_command(self.socket_path, command, arguments, timeout=timeout)

    async def call_async(
        self, command: str, arguments: object = None, *, timeout: float = client.DEFAULT_TIMEOUT
    ) -> Reply:
        """:meth:`call` on the running loop (it may be the loop that serves this server)."""
        return await async_client.send_command_async(self.socket_path, command, arguments, timeout=timeout)

    def before_command(self, hook: BeforeHook) -> BeforeHook:
        """Decorator: call ``hook(context)`` before every registered command runs (in registration order).

        For extra authorization: the hook refuses the command by raising
        :class:`~ctrlsock.errors.CommandError` (its result and text are the reply) or by returning the
        :class:`Reply` to send; the handler then never runs. Any other exception is logged and refuses the
        command with result 1 (a broken check lets nothing through). Hooks run where the handler runs: in
        the worker thread for a handler, on the event loop for a coroutine handler, and on the I/O thread
        for the inline built-ins, so a hook must be quick (hand slow work, such as a remote log, to a
        queue). Unsupported commands run no hooks.
        """
        self.registry.add_before_hook(hook)
        return hook

    def after_command(self, hook: AfterHook) -> AfterHook:
        """Decorator: call ``hook(context, result, seconds)`` once each command's reply is known.

        For an audit log: ``context`` says who asked what (``context.peer``, ``context.request_id``),
        ``result`` is the reply's result code and ``seconds`` the time since the request was dispatched
        (waiting behind other handlers included). It runs where the handler ran (see
        :meth:`before_command`), also for commands refused by access rules or a before-hook. An exception
        is logged; the reply is never changed.
        """
        self.registry.add_after_hook(hook)
        return hook

    @property
    def commands(self) -> list[str]:
        """The registered command names, sorted (as ``list-commands`` answers)."""
        return self.registry.names()

    # --- state seen by the built-ins -----------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def lock(self) -> SocketLock | None:
        """The held socket lock while serving."""
        return None if self._endpoint is None else self._endpoint.lock

    @property
    def socket_activated(self) -> bool:
        return self._endpoint is not None and self._endpoint.activated

    @property
    def http_urls(self) -> list[str]:
        """The URLs of the HTTP(S) listeners while serving (with the real port when 0 was asked for)."""
        return list(self._http_urls) if self._engine is not None else []

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
            return
        self.request_stop()
        if isinstance(self._waiter, EpollWaiter) and self._signals_end_process:
            # A thread-embedded daemon's main thread runs the daemon, not us: wake it with SystemExit.
            signals.request_shutdown_exit(exit_value)

    # --- start-up and stop shared by both embeddings --------------------------------------------------

    def _begin_start(self) -> None:
        with self._state_lock:
            if self._state is not ServerState.STOPPED or self._endpoint is not None:
                raise ServerError(f"the control server for {self.socket_path} is already running")
            self._state = ServerState.STARTING
            self._ever_started = True
            self._stopped.clear()

    def _open(self) -> tuple[Endpoint, Engine]:
        """Take the lock, bind, and make the engine (the state is STARTING; undone on failure)."""
        config = self.config
        try:
            endpoint = open_endpoint(
                self.socket_path,
                program=self.program,
                mode=config.mode,
                group=config.group,
                backlog=config.backlog,
                socket_activation=config.socket_activation,
            )
        except BaseException:
            self._state = ServerState.STOPPED
            self._stop_wanted = None
            self._stopped.set()
            raise
        listeners: list[HttpListener] = []
        try:
            for http in self.http:
                listeners.append(open_http_listener(http, config.backlog))
            if config.raise_nofile_limit:
                raise_nofile_limit()
            self._endpoint = endpoint
            self._error = None
            self.stats = ServerStats()
            self.registry.use_metrics(self.stats.commands if config.metrics else None)
            self.exit_value = 0
            self.started_monotonic = self.reloaded_monotonic = time.monotonic()
            engine = Engine(
                config,
                endpoint,
                self.registry,
                self.stats,
                f"ctrlsock {self.socket_path.name}",
                http_listeners=listeners,
            )
        except BaseException:
            for listener in listeners:
                listener.close()
            self._endpoint = endpoint
            self._closed()
            raise
        self._engine = engine
        self._http_urls = [listener.url for listener in listeners]
        return endpoint, engine

    def _set_waiter(self, waiter: EpollWaiter | AsyncioWaiter) -> None:
        engine = self._engine
        endpoint = self._endpoint
        assert engine is not None and endpoint is not None
        Upkeep(self.config, endpoint, engine, self.request_stop).install()
        self._waiter = waiter
        self._state = ServerState.SERVING
        # A stop asked for during start-up (SIGTERM while the lock was being taken, say) is honoured now.
        pending = self._stop_wanted
        if pending is not None:
            self.request_stop(pending)

    def _ready(self) -> None:
        logger.info("serving %s (pid %d)", self.socket_path, os.getpid())
        for url in self._http_urls:
            logger.info("serving %s for %s", url, self.socket_path)
        if self.config.notify and self._state is ServerState.SERVING:
            systemd.notify("READY=1")

    def _closed(self) -> None:
        with self._state_lock:
            endpoint, self._endpoint = self._endpoint, None
            self._engine = None
            self._waiter = None
            self._stop_wanted = None
            try:
                if endpoint is not None:
                    endpoint.close()
            finally:
                self._state = ServerState.STOPPED
                self._stopped.set()
        logger.info("stopped serving %s", self.socket_path)

    def request_stop(self, grace: float | None = None) -> None:
        """Ask the server to stop (stop accepting, drain for the grace period, clean up); do not wait.

        Safe from any thread and from a signal handler. A stop asked for while the server starts is
        honoured as soon as it serves.

        Args:
            grace: seconds in-flight commands and replies get to finish (default:
                :attr:`ServerConfig.stop_grace`).
        """
        grace = self.config.stop_grace if grace is None else grace
        state = self._state
        if state is ServerState.STOPPED and self._ever_started:
            return
        self._stop_wanted = grace  # read by _set_waiter: one of the two sees the other
        engine = self._engine
        if engine is not None:
            engine.stop_pending = True
        waiter = self._waiter
        if waiter is None:
            return
        if state is ServerState.SERVING:
            self._state = ServerState.STOPPING
        if self.config.notify:
            systemd.notify("STOPPING=1")
        if isinstance(waiter, EpollWaiter):
            waiter.request_stop(grace)
            return
        # Always through the loop's queue: from a signal handler we may be inside the engine's own code.
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to stop
            waiter.loop.call_soon_threadsafe(waiter.request_stop, grace)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (and cleaned up); True if it has."""
        return self._stopped.wait(timeout)

    def wait_for_stop(self) -> bool:
        """For signal handlers: wait for a thread embedding's stop (bounded); False on an asyncio loop."""
        if isinstance(self._waiter, AsyncioWaiter) or self._state is ServerState.STARTING:
            return False  # its stop finishes after we return, on this very thread
        if self._thread is None or self._thread is threading.current_thread():
            return self._stopped.is_set()  # serve() on this very thread: it finishes after we return
        self._stopped.wait(self.config.stop_grace + _STOP_MARGIN)
        return True

    def install_signal_handlers(self, signals_: Iterable[int] = signals.DEFAULT_SIGNALS) -> None:
        """Stop cleanly on these signals (SIGTERM and SIGINT by default), and do nothing else.

        Call it from the main thread. ``serve_forever()`` and ``running_in_thread()`` already handle
        SIGTERM and SIGINT, and then end as the signal would; this is for a daemon that wants only the
        stop and decides itself what happens next.
        """
        if not signals.watch(self, signals_, ends_process=False):
            raise ServerError("install_signal_handlers() must be called from the main thread")

    # --- the thread embedding ------------------------------------------------------------------------

    def serve(self) -> None:
        """Open the socket and serve on the calling thread until stopped (what ``ctrlsock serve`` runs).

        Raises:
            LockHeldError: another process holds the socket's lock.
            ServerError: the socket could not be set up.
        """
        self._begin_start()
        _endpoint, engine = self._open()
        waiter = EpollWaiter(engine)
        self._set_waiter(waiter)
        try:
            waiter.run(ready=self._ready)
        finally:
            self._closed()
        signals.server_finished(self)

    def start_in_thread(self, *, name: str | None = None) -> None:
        """Open the socket now (errors raise here) and serve on a background daemon thread.

        Raises:
            LockHeldError: another process holds the socket's lock.
            ServerError: the socket could not be set up, or the server is already running.
        """
        self._begin_start()
        _endpoint, engine = self._open()
        waiter = EpollWaiter(engine)
        started = threading.Event()

        def ready() -> None:
            started.set()
            self._ready()

        def run() -> None:
            try:
                waiter.run(ready=ready)
            except BaseException as error:
                self._error = error
                logger.exception("control server for %s failed", self.socket_path)
            finally:
                started.set()
                self._closed()

        self._thread = threading.Thread(
            target=run, name=name or f"ctrlsock {self.socket_path.name}", daemon=True
        )
        self._set_waiter(waiter)
        self._thread.start()
        started.wait()
        if self._error is not None:
            self.stop()  # joins the thread and raises its error

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread embedding and wait: stop accepting, drain, clean up.

        Returns within ``timeout`` plus a moment, even while a handler hangs: clients still waiting at
        the end get result 1 "Server is shutting down"; the hung handler's thread is left to finish.

        Args:
            timeout: the grace period in seconds (default: :attr:`ServerConfig.stop_grace`).

        Raises:
            ServerError: the serving thread had failed (its exception is chained).
        """
        waiter = self._waiter
        if isinstance(waiter, AsyncioWaiter):
            # Served by a loop in another thread: ask it, then wait here for its clean stop.
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is waiter.loop:
                raise ServerError("stop() would block the loop it waits for: use close() and wait_closed()")
            self.request_stop(timeout)
            self._stopped.wait()
            self._stop_unobserved = False
            return
        self.request_stop(timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
        error = self._error
        if error is not None:
            self._error = None
            signals.unwatch(self)
            raise ServerError(f"the control server for {self.socket_path} failed: {error}") from error
        signals.server_finished(self)  # may end the process now, as a signal that stopped us would

    @contextlib.contextmanager
    def running_in_thread(self, *, handle_signals: bool = True) -> Iterator[Self]:
        """``with server.running_in_thread(): ...`` serves on a background thread for the block.

        Args:
            handle_signals: from the main thread, stop cleanly on SIGTERM and SIGINT and then end as the
                signal would (chaining to a handler the daemon installed before). Every server of the
                process stops.
        """
        # Watched before start-up begins: a SIGTERM while the lock is taken must stop us cleanly too.
        self._signals_end_process = handle_signals and signals.watch(self)
        try:
            self.start_in_thread()
        except BaseException:
            signals.unwatch(self)
            raise
        if signals.has_pending():
            self.stop()  # a signal came during start-up: stop, then end as it would (never run the block)
        try:
            yield self
        finally:
            self.stop()

    # --- the asyncio embedding -----------------------------------------------------------------------

    async def start(self, *, handle_signals: bool = True) -> None:
        """Open the socket and start serving on the running loop (returns at once).

        Args:
            handle_signals: on the main thread's loop, stop cleanly on SIGTERM and SIGINT (from now on,
                start-up included) and then end as the signal would; see :meth:`serve_forever`.
        """
        if handle_signals:
            signals.watch(self)
        try:
            self._begin_start()
            _endpoint, engine = self._open()
        except BaseException:
            signals.unwatch(self)
            raise
        try:
            waiter = AsyncioWaiter(engine, asyncio.get_running_loop())
            waiter.start()
        except BaseException:
            self._closed()
            signals.unwatch(self)
            raise
        self._stop_unobserved = False
        waiter.on_finished = lambda: self._async_finished(waiter)
        self._set_waiter(waiter)
        self._ready()

    def _async_finished(self, waiter: AsyncioWaiter) -> None:
        """The loop's stop is complete: clean up now (the daemon may not be awaiting us), then deliver a
        signal that waits for it."""
        if self._waiter is waiter:
            self._finish_async(waiter)
            self._stop_unobserved = True  # for a serve_forever() that comes only now: it returns at once
        signals.server_finished(self)

    async def serve_forever(self, *, handle_signals: bool = True) -> None:
        """Serve until stopped (``close()``, a signal, ``shutdown``), then finish the clean stop.

        Args:
            handle_signals: from the main thread, stop cleanly on SIGTERM and SIGINT and then end as the
                signal would (chaining to a handler the daemon installed before).
        """
        waiter = self._waiter
        if not isinstance(waiter, AsyncioWaiter):
            if self._stop_unobserved:
                self._stop_unobserved = False  # started, then stopped before we were awaited
                return
            await self.start(handle_signals=handle_signals)
            waiter = self._waiter
            assert isinstance(waiter, AsyncioWaiter)
        elif handle_signals:
            signals.watch(self)
        try:
            await waiter.wait_stopped()
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            signals.unwatch(self)
            raise
        self._finish_async(waiter)
        self._stop_unobserved = False
        signals.server_finished(self)  # may end the process now, as a signal that stopped us would

    def close(self) -> None:
        """Begin the clean stop (asyncio: then ``await wait_closed()``)."""
        self.request_stop()

    async def wait_closed(self) -> None:
        waiter = self._waiter
        if isinstance(waiter, AsyncioWaiter):
            await waiter.wait_stopped()
            self._finish_async(waiter)
        self._stop_unobserved = False

    def _finish_async(self, waiter: AsyncioWaiter) -> None:
        if self._waiter is waiter and waiter.stopped:
            waiter.close()
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
        signals.unwatch(self)

    def __repr__(self) -> str:
        return f"<ControlServer {self.socket_path} {self._state}>"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
