"""The command registry: name → handler, access checks by peer credentials, and turning whatever a handler
does (returns, raises, awaits) into the encoded reply bytes, so that nothing a peer or a handler does reaches
the daemon's loop.

:meth:`CommandRegistry.dispatch` answers inline commands (the built-ins) at once and hands every other
command back as a :class:`Call`, which the engine runs off its I/O thread: in a worker thread, or as a task
on the asyncio loop.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

from ctrlsock.errors import CommandError
from ctrlsock.protocol import Reply, Request, Result, encode_reply, unsupported_reply

from .arguments import ArgumentSpec
from .config import Access
from .info import ServerInfo
from .stats import UNKNOWN_COMMAND, CommandStats, result_of

__all__ = [
    "ACCESS_DENIED_PREFIX",
    "AfterHook",
    "BeforeHook",
    "Call",
    "CommandContext",
    "CommandRegistry",
    "Handler",
    "HandlerResult",
    "HttpPeer",
    "PeerCredentials",
]

logger = logging.getLogger("ctrlsock.server")

HandlerResult: TypeAlias = Reply | Mapping[str, Any] | None
"""A handler returns a :class:`Reply`, a map (a result-0 reply's ``arguments``) or ``None`` (result 0)."""

Handler: TypeAlias = Callable[[Any, "CommandContext"], HandlerResult | Awaitable[HandlerResult]]
"""``handler(arguments, context)``; a plain function or a coroutine function."""

BeforeHook: TypeAlias = Callable[["CommandContext"], Reply | None]
"""``hook(context)`` before a command runs: returns ``None`` to let it run, or refuses it by returning the
:class:`Reply` to send instead or by raising :class:`~ctrlsock.errors.CommandError`."""

AfterHook: TypeAlias = Callable[["CommandContext", int, float], object]
"""``hook(context, result, seconds)`` once a command's reply is known: its result code and its duration."""

ACCESS_DENIED_PREFIX: Final = "access denied: "
"""A refusal by uid/gid is result 1 with a text that starts with this (a handler failure never does)."""

GENERIC_FAILURE_TEXT: Final = "Error during command processing: internal error (see the server's log)"

_PEERCRED: Final = struct.Struct("3i")
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+, <asm-generic/socket.h>
_PEERGROUPS_BUFFER: Final = 1024  # 256 gid_t, the most CPython's getsockopt() reads; ERANGE beyond
_GID: Final = struct.Struct("I")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The connecting process as the kernel saw it at ``connect()`` (``SO_PEERCRED``, ``SO_PEERGROUPS``)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def read_peer_credentials(sock: socket.socket, *, groups: bool = False) -> PeerCredentials:
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    if not groups:
        return PeerCredentials(pid, uid, gid)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _PEERGROUPS_BUFFER)
    except OSError:
        return PeerCredentials(pid, uid, gid)  # an older kernel: the primary group only
    count = len(raw) // _GID.size
    return PeerCredentials(pid, uid, gid, struct.unpack(f"{count}I", raw[: count * _GID.size]))


@dataclass(frozen=True, slots=True)
class HttpPeer:
    """A client over HTTP(S): its address, whether TLS carried the request, and the user it proved."""

    address: str
    port: int
    tls: bool
    user: str | None = None


class CommandContext:
    """What a handler knows about the request besides its arguments.

    Attributes:
        command: the command name.
        arguments: the request's ``arguments`` (also passed to the handler positionally).
        service: the request's ``service`` list (kea-ctrl-agent forwards it), or ``None``.
        remote_address: the request's ``remote-address`` (added by kea-ctrl-agent), else the address of an
            HTTP client, or ``None``.
        http: for a request over HTTP(S), the client's address and the Basic-authentication user.
        server: the server answering (a read-only view: program, version, socket path, stats).
        request_id: this request's number, increasing from 1 for each server (for logs).
        started_at: ``time.monotonic()`` when the request was dispatched.
    """

    __slots__ = (
        "_peer",
        "_sock",
        "arguments",
        "command",
        "http",
        "remote_address",
        "request_id",
        "server",
        "service",
        "started_at",
    )

    def __init__(
        self,
        request: Request,
        server: ServerInfo,
        sock: socket.socket | None,
        peer: PeerCredentials | None = None,
        *,
        request_id: int = 0,
        started_at: float = 0.0,
        http: HttpPeer | None = None,
    ) -> None:
        self.command = request.command
        self.arguments = request.arguments
        self.service = request.service
        self.http = http
        self.remote_address = request.remote_address or (http.address if http is not None else None)
        self.server = server
        self._sock = sock
        self._peer = peer
        self.request_id = request_id
        self.started_at = started_at

    @property
    def peer(self) -> PeerCredentials | None:
        """The peer's pid/uid/gid (read once, lazily: most commands never ask). ``None`` without a socket."""
        if self._peer is None and self._sock is not None:
            try:
                self._peer = read_peer_credentials(self._sock)
            except OSError:
                return None
        return self._peer

    def __repr__(self) -> str:
        return f"CommandContext(command={self.command!r}, request_id={self.request_id}, peer={self._peer!r})"


class _Entry:
    __slots__ = (
        "access",
        "arguments",
        "cacheable",
        "cached",
        "cached_result",
        "handler",
        "inline",
        "is_coroutine",
        "name",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        handler: Handler,
        access: Access | None,
        *,
        cacheable: bool,
        inline: bool,
        timeout: float | None,
        arguments: ArgumentSpec | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.arguments = arguments
        self.access = access
        self.cacheable = cacheable
        self.cached: bytes | None = None
        self.cached_result = 0
        self.is_coroutine = inspect.iscoroutinefunction(handler)
        self.inline = inline and not self.is_coroutine
        self.timeout = timeout

    def call(self, arguments: object, context: CommandContext) -> object:
        """The handler's result, after its declared arguments are checked (a CommandError if not)."""
        if self.arguments is not None:
            arguments = self.arguments.check(arguments)
        return self.handler(arguments, context)


class Call:
    """An accepted request for a handler that does not run on the I/O thread.

    The engine runs :meth:`run` in a worker thread, or awaits :meth:`run_async` on the asyncio loop; both
    yield the encoded reply and never raise.
    """

    __slots__ = ("_context", "_entry", "_registry", "request")

    def __init__(self, registry: CommandRegistry, entry: _Entry, request: Request, context: CommandContext):
        self._registry = registry
        self._entry = entry
        self._context = context
        self.request = request

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def is_coroutine(self) -> bool:
        return self._entry.is_coroutine

    @property
    def timeout(self) -> float | None:
        return self._entry.timeout

    def run(self) -> bytes:
        """Call the handler on this thread (a coroutine handler runs on this thread's own loop)."""
        registry = self._registry
        if not registry.observed:
            return self._run()
        reply = registry.run_before(self._entry.name, self._context)
        if reply is None:
            reply = self._run()
        registry.finished(self._entry.name, self._context, reply)
        return reply

    def _run(self) -> bytes:
        entry = self._entry
        try:
            result = entry.call(self.request.arguments, self._context)
            if inspect.isawaitable(result):
                return self._registry.failure(
                    entry.name, TypeError("a coroutine handler cannot run on a worker thread")
                )
        except Exception as error:
            return self._registry.failure(entry.name, error)
        return self._registry.encode(entry, result)

    async def run_async(self) -> bytes:
        registry = self._registry
        if not registry.observed:
            return await self._run_async()
        reply = registry.run_before(self._entry.name, self._context)
        if reply is None:
            reply = await self._run_async()
        registry.finished(self._entry.name, self._context, reply)
        return reply

    async def _run_async(self) -> bytes:
        entry = self._entry
        try:
            result = entry.call(self.request.arguments, self._context)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            return self._registry.failure(entry.name, error)
        return self._registry.encode(entry, result)


DispatchResult: TypeAlias = bytes | Call


class CommandRegistry:
    """Commands by name; :meth:`dispatch` answers inline commands and hands the others back as a Call."""

    def __init__(
        self,
        server: ServerInfo,
        access: Access | None,
        *,
        default_timeout: float | None = None,
        expose_errors: bool = True,
    ) -> None:
        self._server = server
        self._commands: dict[str, _Entry] = {}
        self._access = access
        self._own_uid = os.geteuid()
        self._any_access = access is not None
        self._on_change: list[Callable[[], None]] = []
        self._default_timeout = default_timeout
        self._expose_errors = expose_errors
        self._before: list[BeforeHook] = []
        self._after: list[AfterHook] = []
        self._metrics: CommandStats | None = None
        self._last_id = 0
        self.observed = False  # metrics or hooks: worth a clock read and a context per command
        self._hooked = False

    def use_metrics(self, metrics: CommandStats | None) -> None:
        """Record each command's result and latency in ``metrics`` (``None``: record nothing)."""
        self._metrics = metrics
        self.observed = metrics is not None or self._hooked

    def add_before_hook(self, hook: BeforeHook) -> None:
        self._before.append(hook)
        self.observed = self._hooked = True

    def add_after_hook(self, hook: AfterHook) -> None:
        self._after.append(hook)
        self.observed = self._hooked = True

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        access: Access | None = None,
        replace: bool = False,
        cacheable: bool = False,
        inline: bool = False,
        timeout: float | None = None,
        arguments: ArgumentSpec | None = None,
    ) -> None:
        """Register ``handler`` for ``name`` (its ``arguments`` checked first when declared).

        ``cacheable`` marks a reply that depends on nothing (not the arguments, the peer or the time):
        it is encoded once and the same bytes are sent to every client (``version-get``). ``inline``
        runs a plain function on the I/O thread (it must be quick and must not block).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a command name must be a non-empty string, not {name!r}")
        if name in self._commands and not replace:
            raise ValueError(f"command {name!r} is already registered")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self._commands[name] = _Entry(
            name,
            handler,
            access,
            cacheable=cacheable,
            inline=inline,
            timeout=timeout if timeout is not None else self._default_timeout,
            arguments=arguments,
        )
        if access is not None:
            self._any_access = True
        for callback in self._on_change:
            callback()

    def remove(self, name: str) -> None:
        del self._commands[name]
        for callback in self._on_change:
            callback()

    def set_access(self, name: str, access: Access | None) -> None:
        self._commands[name].access = access
        if access is not None:
            self._any_access = True

    def on_change(self, callback: Callable[[], None]) -> None:
        self._on_change.append(callback)

    def invalidate(self, name: str) -> None:
        entry = self._commands.get(name)
        if entry is not None:
            entry.cached = None

    def names(self) -> list[str]:
        return sorted(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def dispatch(
        self, request: Request, sock: socket.socket | None, http: HttpPeer | None = None
    ) -> DispatchResult:
        """The encoded reply of an inline command (or a refusal), else the :class:`Call` to run.

        ``sock`` is a unix client's socket (its credentials decide access), ``http`` an HTTP client.
        """
        if self.observed:
            return self._dispatch_observed(request, sock, http)
        name = request.command
        entry = self._commands.get(name)
        if entry is None:
            return encode_reply(unsupported_reply(name))
        peer: PeerCredentials | None = None
        if self._any_access:
            refusal, peer = self._check_access(entry, sock, http)
            if refusal is not None:
                return refusal
        cached = entry.cached
        if cached is not None:
            return cached
        self._last_id += 1
        context = CommandContext(request, self._server, sock, peer, request_id=self._last_id, http=http)
        if not entry.inline:
            return Call(self, entry, request, context)
        return self._run_inline(entry, request.arguments, context)

    def _run_inline(self, entry: _Entry, arguments: Any, context: CommandContext) -> bytes:
        try:
            result = entry.call(arguments, context)
        except Exception as error:
            return self.failure(entry.name, error)
        return self.encode(entry, result)

    def _dispatch_observed(
        self, request: Request, sock: socket.socket | None, http: HttpPeer | None
    ) -> DispatchResult:
        """:meth:`dispatch` with metrics or hooks: the same decisions, each one recorded.

        Hooks run where the handler runs: in the worker for a handler, and right here on the I/O thread
        for an inline command (the built-ins), so they must be as quick as an inline handler.
        """
        started = time.monotonic()
        name = request.command
        entry = self._commands.get(name)
        if entry is None:
            unsupported = encode_reply(unsupported_reply(name))
            if self._metrics is not None:
                self._metrics.record_on_io_thread(
                    UNKNOWN_COMMAND, Result.UNSUPPORTED, time.monotonic() - started
                )
            return unsupported
        peer: PeerCredentials | None = None
        self._last_id += 1
        refusal: bytes | None = None
        if self._any_access:
            refusal, peer = self._check_access(entry, sock, http)
        cached = entry.cached
        if cached is not None and refusal is None and not self._hooked and self._metrics is not None:
            # Metrics alone on a cached reply (version-get): no context to build, and its result is known.
            self._metrics.record_on_io_thread(name, entry.cached_result, time.monotonic() - started)
            return cached
        context = CommandContext(
            request, self._server, sock, peer, request_id=self._last_id, started_at=started, http=http
        )
        if refusal is not None:
            self.finished(name, context, refusal, on_io_thread=True)
            return refusal
        if not entry.inline:
            return Call(self, entry, request, context)
        reply = self.run_before(name, context)
        if reply is None and cached is not None:
            self.finished(name, context, cached, entry.cached_result, on_io_thread=True)
            return cached
        if reply is None:
            reply = self._run_inline(entry, request.arguments, context)
        self.finished(name, context, reply, on_io_thread=True)
        return reply

    def run_before(self, name: str, context: CommandContext) -> bytes | None:
        """The before-hooks; the reply that refuses the command, or None to run it.

        A hook that raises anything but CommandError refuses too (logged, result 1): a hook may be an
        authorization check, and a broken check must not let every command through.
        """
        for hook in self._before:
            try:
                refusal = hook(context)
            except Exception as error:
                return self.failure(name, error)
            if refusal is not None:
                try:
                    return encode_reply(refusal)
                except Exception as error:
                    return self.failure(name, error)
        return None

    def finished(
        self,
        name: str,
        context: CommandContext,
        reply: bytes,
        result: int | None = None,
        *,
        on_io_thread: bool = False,
    ) -> None:
        """Record the command's result and latency, then run the after-hooks (which cannot change it)."""
        seconds = time.monotonic() - context.started_at
        if result is None:
            result = result_of(reply)
        metrics = self._metrics
        if metrics is not None:
            if on_io_thread:
                metrics.record_on_io_thread(name, result, seconds)
            else:
                metrics.record(name, result, seconds)
        for hook in self._after:
            try:
                hook(context, result, seconds)
            except Exception:
                logger.exception("after-command hook %r failed for %r", hook, name)

    def encode(self, entry: _Entry, result: object) -> bytes:
        """The encoded reply (a ``bytearray`` only from config-get, which the engine treats the same)."""
        try:
            if type(result) is bytes or type(result) is bytearray:
                # A built-in's reply, encoded (and cached) by the built-in itself. A bytearray (config-get's
                # batched encoding) is sent exactly as bytes are, so it goes under the one type.
                data = cast(bytes, result)
            elif isinstance(result, Reply):
                data = encode_reply(result)
            elif result is None:
                data = encode_reply(Reply(Result.SUCCESS))
            elif isinstance(result, Mapping):
                data = encode_reply(Reply(Result.SUCCESS, "", dict(result)))
            else:
                raise TypeError(f"a handler must return a Reply, a map or None, not {type(result).__name__}")
        except Exception as error:
            return self.failure(entry.name, error)
        if entry.cacheable:
            entry.cached = data
            entry.cached_result = result_of(data)
        return data

    def failure(self, name: str, error: Exception) -> bytes:
        """The reply for a handler that raised: its CommandError as asked, anything else as result 1."""
        if isinstance(error, CommandError):
            try:
                return encode_reply(Reply(error.result, error.text or "", error.arguments))
            except Exception as encode_error:
                error = encode_error  # fall through to the generic failure
        logger.error("command %r failed", name, exc_info=error)
        if not self._expose_errors:
            return encode_reply(Reply(Result.ERROR, GENERIC_FAILURE_TEXT))
        # Kea's BaseCommandMgr::processCommand answers any exception with this prefix and ex.what().
        text = str(error) or type(error).__name__
        return encode_reply(Reply(Result.ERROR, f"Error during command processing: {text}"))

    def _check_access(
        self, entry: _Entry, sock: socket.socket | None, http: HttpPeer | None = None
    ) -> tuple[bytes | None, PeerCredentials | None]:
        if self._access is None and entry.access is None:
            return None, None
        if http is not None:
            # uid and gid rules name local users, which an HTTP client is not: refuse rather than guess.
            logger.warning(
                "refused %r from %s over http: it is limited to local uids/gids", entry.name, http.address
            )
            text = (
                f"{ACCESS_DENIED_PREFIX}'{entry.name}' command is limited to local users by uid/gid, "
                "not over http"
            )
            return encode_reply(Reply(Result.ERROR, text)), None
        if sock is None:
            return None, None
        try:
            peer = read_peer_credentials(sock, groups=True)
        except OSError as error:
            # The peer is gone or the socket is odd: refuse rather than guess.
            text = f"{ACCESS_DENIED_PREFIX}cannot read peer credentials: {error.strerror}"
            return encode_reply(Reply(Result.ERROR, text)), None
        if peer.uid == self._own_uid:
            return None, peer
        for access in (self._access, entry.access):
            if access is not None and not access.allows(peer.uid, peer.gid, peer.groups):
                logger.warning(
                    "refused %r from pid %d (uid %d, gid %d): not allowed",
                    entry.name,
                    peer.pid,
                    peer.uid,
                    peer.gid,
                )
                text = (
                    f"{ACCESS_DENIED_PREFIX}'{entry.name}' command not allowed "
                    f"for uid {peer.uid} (gid {peer.gid})"
                )
                return encode_reply(Reply(Result.ERROR, text)), peer
        return None, peer
