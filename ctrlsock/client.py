"""Send one command to a control socket and read its one reply, with timeouts (Kea's wire protocol).

One request per connection, like Kea: connect, send the whole request, shut our sending side down, read
until the server closes, and check with the framer that a complete JSON value arrived (a reply cut short
is an error, never a success). Kea 2.2 answers normally after the half-close (measured), and the
half-close lets a server see at once that an incomplete request will never be finished.

Every ``OSError`` is translated to ctrlsock's errors in one place, :func:`_translate`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ctrlsock.errors import (
    MAX_SOCKET_PATH,
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    CtrlSockError,
    RemoteProtocolError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TruncatedReplyError,
)
from ctrlsock.protocol import JsonFeed, Reply, Request, decode_reply, encode_request

__all__ = ["DEFAULT_TIMEOUT", "MAX_SOCKET_PATH", "send_command", "send_raw"]

DEFAULT_TIMEOUT: Final = 10.0
_RECV_SIZE: Final = 256 * 1024


def send_command(
    socket_path: Path | str,
    command: str,
    arguments: Any = None,
    *,
    service: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
) -> Reply:
    """Send one command and return the server's reply (whatever its result code).

    Args:
        socket_path: The control socket.
        command: The command name, e.g. ``"version-get"``.
        arguments: Any JSON-serializable value, left out when ``None``.
        service: The ``service`` list (as kea-ctrl-agent sends it), left out when ``None``.
        timeout: Seconds for the whole exchange: connect, send, and the complete reply.
        connect_timeout: Seconds to wait for the connection to be accepted into the server's backlog;
            defaults to ``timeout``.

    Returns:
        The decoded reply; a list of one reply (kea-ctrl-agent's form) is unwrapped.

    Raises:
        SocketPathTooLongError, SocketNotFoundError, ServerRefusedError, SocketPermissionError,
        ClientTimeoutError, TruncatedReplyError, BadReplyError: each with ``.path``.
    """
    request = Request(command, arguments, tuple(service) if service is not None else None)
    path = Path(socket_path)
    _, document = _exchange(path, encode_request(request), timeout, connect_timeout, max_depth=None)
    try:
        return decode_reply(document)
    except RemoteProtocolError as error:
        raise BadReplyError(f"bad reply from {path}: {error}", path=path) from None


def send_raw(
    socket_path: Path | str,
    request: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
) -> bytes:
    """Send ``request`` as is and return every byte the server sent until it closed.

    The reply must hold a complete JSON value (checked with the framer, which never limits its size or
    depth here), else :class:`TruncatedReplyError`; bytes after it are returned too.

    Raises:
        The same errors as :func:`send_command`; :class:`BadReplyError` when the reply does not even start
        like JSON.
    """
    raw, _ = _exchange(Path(socket_path), request, timeout, connect_timeout, max_depth=None)
    return raw


def _exchange(
    path: Path, request: bytes, timeout: float, connect_timeout: float | None, *, max_depth: int | None
) -> tuple[bytes, bytes]:
    """Connect, send, half-close, read to EOF. Returns (all bytes received, the first JSON document)."""
    SocketPathTooLongError.check(path)
    deadline = time.monotonic() + timeout
    feed = JsonFeed(max_size=None, max_depth=max_depth)
    received = bytearray()
    stage = "connecting to"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            _connect(sock, path, timeout if connect_timeout is None else min(connect_timeout, timeout))
            stage = "sending to"
            sock.settimeout(_remaining(deadline))
            try:
                # MSG_NOSIGNAL: an embedding program may not ignore SIGPIPE.
                sock.sendall(request, socket.MSG_NOSIGNAL)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered early (e.g. "command too large") and closed: read it.
                pass
            stage = "reading the reply from"
            document: bytes | None = None
            while True:
                sock.settimeout(_remaining(deadline))
                try:
                    data = sock.recv(_RECV_SIZE)
                except TimeoutError:
                    if document is not None:
                        # A complete reply, but the server kept the connection open: good enough.
                        return bytes(received), document
                    raise
                except ConnectionResetError:
                    data = b""
                if document is None:
                    feed.receive_data(data)
                    try:
                        document = feed.next_document()
                    except RemoteProtocolError as error:
                        if data:
                            raise BadReplyError(f"bad reply from {path}: {error}", path=path) from None
                        raise _truncated(path, len(received)) from None
                if not data:
                    assert document is not None  # next_document() raised otherwise
                    return bytes(received), document
                received += data
    except ClientError:
        raise
    except OSError as error:
        raise _translate(error, path, stage, timeout, len(received)) from error


def _connect(sock: socket.socket, path: Path, timeout: float) -> None:
    # A unix-socket connect() waits for room in the server's listen backlog only on a blocking socket,
    # for as long as SO_SNDTIMEO says; a socket with a Python timeout is non-blocking underneath and
    # fails at once with EAGAIN instead. So: blocking mode, SO_SNDTIMEO, then EAGAIN means "timed out".
    sock.settimeout(None)
    seconds = max(timeout, 0.001)
    whole = int(seconds)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", whole, int((seconds - whole) * 1e6))
    )
    try:
        sock.connect(os.fspath(path))
    except BlockingIOError as error:
        raise TimeoutError(errno.ETIMEDOUT, "timed out waiting for the server to accept") from error


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(errno.ETIMEDOUT, "timed out")
    return remaining


def _truncated(path: Path, received: int) -> TruncatedReplyError:
    if received == 0:
        message = f"{path}: the server closed the connection without replying"
    else:
        message = f"{path}: reply truncated: the server closed the connection after {received} bytes"
    return TruncatedReplyError(message, path=path, received=received)


def _translate(error: OSError, path: Path, stage: str, timeout: float, received: int) -> CtrlSockError:
    """The one place where OS errors become ctrlsock errors."""
    if isinstance(error, TimeoutError) or error.errno in (errno.ETIMEDOUT, errno.EAGAIN):
        if stage == "reading the reply from" and received:
            detail = f"after {received} bytes of an incomplete reply"
        else:
            detail = "without an answer"
        return ClientTimeoutError(f"timed out {stage} {path}: {timeout:g} s passed {detail}", path=path)
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return SocketNotFoundError(f"no socket at {path}", path=path)
    if error.errno == errno.ECONNREFUSED:
        return ServerRefusedError(f"connection refused: nothing accepts connections on {path}", path=path)
    if error.errno in (errno.EACCES, errno.EPERM):
        return SocketPermissionError(f"permission denied: {path}", path=path)
    if error.errno in (errno.ECONNRESET, errno.EPIPE):
        return _truncated(path, received)
    if error.errno == errno.ENAMETOOLONG:
        return SocketPathTooLongError(path)
    reason = error.strerror or str(error)
    return ClientError(f"{stage} {path} failed: {reason}", path=path)
