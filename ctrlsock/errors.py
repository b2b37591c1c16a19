"""The exception tree: one root, and each branch also a builtin callers already catch.

Data lives in attributes, never parsed out of a message. Every error pickles (a daemon may hand
errors across a process pool), which builtin ``OSError`` subclasses with custom constructors do not do
by default: ``__reduce__`` below rebuilds from the attributes instead of from ``args``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # For an annotation only: protocol imports this module, so a run-time import would be circular.
    from ctrlsock.protocol import Reply

MAX_SOCKET_PATH: Final = 107
"""``sun_path`` holds 108 bytes including the terminating NUL (unix(7))."""


def _rebuild(cls: type[CtrlSockError], state: dict[str, Any], args: tuple[Any, ...]) -> CtrlSockError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class CtrlSockError(Exception):
    """Root of every error ctrlsock raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self.__dict__), self.args))


# --- protocol -------------------------------------------------------------------------------------


class ProtocolError(CtrlSockError, ValueError):
    """The bytes on the wire are not a valid request or reply."""

    def __init__(self, message: str, *, result: int = 1) -> None:
        super().__init__(message)
        self.result = result


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``message`` is the Kea-style text to put in the error reply."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry (a bug in the caller)."""


# --- paths ----------------------------------------------------------------------------------------


class SocketPathTooLongError(CtrlSockError, ValueError):
    """The path does not fit ``sun_path`` (107 bytes plus NUL)."""

    def __init__(self, path: Path, *, limit: int = MAX_SOCKET_PATH) -> None:
        size = len(os.fsencode(path))
        super().__init__(f"socket path is {size} bytes, longer than the {limit} a unix socket allows: {path}")
        self.path = path
        self.limit = limit

    @classmethod
    def check(cls, path: Path) -> None:
        """Raise unless ``path`` fits ``sun_path``; every place that binds or connects asks here."""
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise cls(path)


class UnsafePathError(CtrlSockError, PermissionError):
    """A path is not safe to use or remove (a symlink, another user's file, an open directory...)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --- the lock -------------------------------------------------------------------------------------


class LockError(CtrlSockError):
    """The socket's lock file could not be used."""


class LockHeldError(LockError, BlockingIOError):
    """Another process holds ``<socket>.lock``.

    ``holders`` are plain-words descriptions, one per process found holding the lock,
    for example ``pid 4242 (mydaemon, running since 2026-11-22 09:14)``; ``pids`` are the processes
    that really hold it, for callers that act on them.
    """

    def __init__(self, lock_path: Path, holders: tuple[str, ...], *, pids: tuple[int, ...] = ()) -> None:
        who = "; ".join(holders) if holders else "by a process that could not be identified"
        if holders:
            who = f"held by {who}"
        # Kea's phrase is kept on purpose: admins search for it.
        super().__init__(f"cannot lock socket lockfile, {lock_path}: {who}")
        self.lock_path = lock_path
        self.holders = holders
        self.pids = pids


# --- the client -----------------------------------------------------------------------------------


class ClientError(CtrlSockError, ConnectionError):
    """Sending a command or reading its reply failed.

    ``path`` is the unix socket, ``url`` the HTTP endpoint; the one that does not apply is ``None``.
    """

    def __init__(self, message: str, *, path: Path | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.url = url


class SocketNotFoundError(ClientError, FileNotFoundError):
    """No socket at the path."""


class ServerRefusedError(ClientError, ConnectionRefusedError):
    """The socket file exists but nobody accepts on it (``ECONNREFUSED``)."""


class SocketPermissionError(ClientError, PermissionError):
    """The socket may not be opened by this user, or the server refused our credentials."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The server did not accept, answer or finish its reply in time."""


class TruncatedReplyError(ClientError):
    """The server closed the connection before a complete JSON reply arrived."""

    def __init__(
        self, message: str, *, path: Path | None = None, url: str | None = None, received: int = 0
    ) -> None:
        super().__init__(message, path=path, url=url)
        self.received = received


class BadReplyError(ClientError):
    """The reply is complete but is not a valid Kea-style reply."""


class HttpStatusError(ClientError):
    """An HTTP control endpoint refused the request with a status other than 200.

    ``status`` is the HTTP status; ``reply`` the body's Kea-style map (``{"result": 400, "text": "Bad
    Request"}``) when it had one, else ``None``.
    """

    def __init__(self, message: str, *, url: str, status: int, reply: Reply | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.reply = reply


class AuthenticationError(HttpStatusError, PermissionError):
    """The HTTP endpoint refused our credentials, or wanted some (401 Unauthorized, 403 Forbidden)."""


class TlsError(ClientError):
    """The TLS handshake failed: an untrusted or mismatched certificate, or no client certificate."""


# --- recovery and serving -------------------------------------------------------------------------


class RecoveryError(CtrlSockError):
    """Cleaning up a socket path was refused; ``reasons`` says why, one entry per path."""

    def __init__(self, message: str, *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class ServerError(CtrlSockError):
    """The command channel could not start or serve."""


class CommandError(CtrlSockError):
    """Raised by a command handler to answer with a chosen result code, text and arguments."""

    def __init__(self, text: str, *, result: int = 1, arguments: Any = None) -> None:
        super().__init__(text)
        self.text = text
        self.result = result
        self.arguments = arguments


class ReplyError(CommandError):
    """A server answered with a result other than success: raised by ``Reply.raise_for_result()``.

    ``reply`` is the whole reply; ``result``, ``text`` and ``arguments`` are its members, so a command
    handler that lets this error propagate answers its own client with the same result and text.
    """

    def __init__(self, message: str, *, reply: Reply) -> None:
        super().__init__(reply.text, result=reply.result, arguments=reply.arguments)
        self.message = message
        self.reply = reply
