"""The command registry: name → handler, access checks by peer credentials, and turning whatever a handler
does (returns, raises, awaits) into the encoded reply bytes, so that nothing a peer or a handler does reaches
the daemon's loop (STYLE.md, Errors)."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ctrlsock.errors import CommandError
from ctrlsock.protocol import Reply, Request, Result, encode_reply, unsupported_reply

from .config import Access

if TYPE_CHECKING:
    from .core import ControlServer

__all__ = [
    "CommandContext",
    "CommandRegistry",
    "Handler",
    "HandlerResult",
    "PeerCredentials",
]

logger = logging.getLogger("ctrlsock.server")

HandlerResult: TypeAlias = Reply | Mapping[str, Any] | None
"""A handler returns a :class:`Reply`, a map (a result-0 reply's ``arguments``) or ``None`` (result 0)."""

Handler: TypeAlias = Callable[[Any, "CommandContext"], HandlerResult | Awaitable[HandlerResult]]
"""``handler(arguments, context)``; a plain function or a coroutine function."""

_PEERCRED: Final = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The connecting process as the kernel saw it at ``connect()`` (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


def read_peer_credentials(sock: socket.socket) -> PeerCredentials:
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return PeerCredentials(pid, uid, gid)


class CommandContext:
    """What a handler knows about the request besides its arguments.

    Attributes:
        command: the command name.
        arguments: the request's ``arguments`` (also passed to the handler positionally).
        service: the request's ``service`` list (kea-ctrl-agent forwards it), or ``None``.
        remote_address: the request's ``remote-address`` (added by kea-ctrl-agent), or ``None``.
        server: the :class:`ControlServer` answering.
    """

    __slots__ = ("_peer", "_sock", "arguments", "command", "remote_address", "server", "service")

    def __init__(
        self,
        request: Request,
        server: ControlServer,
        sock: socket.socket | None,
        peer: PeerCredentials | None = None,
    ) -> None:
        self.command = request.command
        self.arguments = request.arguments
        self.service = request.service
        self.remote_address = request.remote_address
        self.server = server
        self._sock = sock
        self._peer = peer

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
        return f"CommandContext(command={self.command!r}, peer={self._peer!r})"


class _Entry:
    __slots__ = ("access", "cacheable", "cached", "handler", "is_coroutine", "name")

    def __init__(self, name: str, handler: Handler, access: Access | None, cacheable: bool) -> None:
        self.name = name
        self.handler = handler
        self.access = access
        self.cacheable = cacheable
        self.cached: bytes | None = None
        self.is_coroutine = inspect.iscoroutinefunction(handler)


DispatchResult: TypeAlias = bytes | Coroutine[Any, Any, bytes]


class CommandRegistry:
    """Commands by name, and :meth:`dispatch` that always yields reply bytes (or a coroutine of them)."""

    def __init__(self, server: ControlServer, access: Access | None) -> None:
        self._server = server
        self._commands: dict[str, _Entry] = {}
        self._access = access
        self._own_uid = os.geteuid()
        self._any_access = access is not None
        self._on_change: list[Callable[[], None]] = []

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        access: Access | None = None,
        replace: bool = False,
        cacheable: bool = False,
    ) -> None:
        """Register ``handler`` for ``name``.

        ``cacheable`` marks a reply that depends on nothing (not the arguments, the peer or the time):
        it is encoded once and the same bytes are sent to every client (``version-get``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a command name must be a non-empty string, not {name!r}")
        if name in self._commands and not replace:
            raise ValueError(f"command {name!r} is already registered")
        self._commands[name] = _Entry(name, handler, access, cacheable)
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

    def dispatch(self, request: Request, sock: socket.socket | None) -> DispatchResult:
        """Run the command; returns the encoded reply, or a coroutine producing it for async handlers."""
        name = request.command
        entry = self._commands.get(name)
        if entry is None:
            return encode_reply(unsupported_reply(name))
        peer: PeerCredentials | None = None
        if self._any_access:
            refusal, peer = self._check_access(entry, sock)
            if refusal is not None:
                return refusal
        cached = entry.cached
        if cached is not None:
            return cached
        context = CommandContext(request, self._server, sock, peer)
        try:
            result = entry.handler(request.arguments, context)
        except Exception as error:
            return _failure(name, error)
        if entry.is_coroutine or inspect.isawaitable(result):
            return self._finish(entry, result)  # type: ignore[arg-type]  # awaitable checked just above
        return self._encode(entry, result)

    async def _finish(self, entry: _Entry, awaitable: Awaitable[HandlerResult]) -> bytes:
        try:
            result = await awaitable
        except Exception as error:
            return _failure(entry.name, error)
        return self._encode(entry, result)

    def _encode(self, entry: _Entry, result: object) -> bytes:
        try:
            if isinstance(result, Reply):
                data = encode_reply(result)
            elif result is None:
                data = encode_reply(Reply(Result.SUCCESS))
            elif isinstance(result, Mapping):
                data = encode_reply(Reply(Result.SUCCESS, "", dict(result)))
            else:
                raise TypeError(f"a handler must return a Reply, a map or None, not {type(result).__name__}")
        except Exception as error:
            return _failure(entry.name, error)
        if entry.cacheable:
            entry.cached = data
        return data

    def _check_access(
        self, entry: _Entry, sock: socket.socket | None
    ) -> tuple[bytes | None, PeerCredentials | None]:
        if self._access is None and entry.access is None:
            return None, None
        if sock is None:
            return None, None
        try:
            peer = read_peer_credentials(sock)
        except OSError as error:
            # The peer is gone or the socket is odd: refuse rather than guess.
            return encode_reply(Reply(Result.ERROR, f"cannot read peer credentials: {error.strerror}")), None
        if peer.uid == self._own_uid:
            return None, peer
        for access in (self._access, entry.access):
            if access is not None and not access.allows(peer.uid, peer.gid):
                logger.warning(
                    "refused %r from pid %d (uid %d, gid %d): not allowed",
                    entry.name,
                    peer.pid,
                    peer.uid,
                    peer.gid,
                )
                text = f"'{entry.name}' command not allowed for uid {peer.uid} (gid {peer.gid})"
                return encode_reply(Reply(Result.ERROR, text)), peer
        return None, peer


def _failure(name: str, error: Exception) -> bytes:
    if isinstance(error, CommandError):
        try:
            return encode_reply(Reply(error.result, error.text or "", error.arguments))
        except Exception as encode_error:
            error = encode_error  # fall through to the generic failure
    logger.error("command %r failed", name, exc_info=error)
    # Kea's BaseCommandMgr::processCommand answers any exception with this prefix and ex.what().
    text = str(error) or type(error).__name__
    return encode_reply(Reply(Result.ERROR, f"Error during command processing: {text}"))
