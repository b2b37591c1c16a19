"""The asyncio client: one command, one reply, with the blocking client's errors, timeouts and checks.

The exchange is the blocking client's (:mod:`ctrlsock.client`): connect, send the whole request, shut our
sending side down, read until the server closes, and have the same :class:`~ctrlsock.client.ReplyReader`
judge the bytes, so a reply cut short is a :class:`~ctrlsock.errors.TruncatedReplyError` here too. Every
``OSError`` goes through the same :func:`~ctrlsock.client.translate_os_error`: a caller can switch
clients without changing an ``except`` clause.

The socket is non-blocking and every call tries the syscall first, waiting for readiness on the running
loop only after ``BlockingIOError``. A cancelled call closes its socket at once, so the server sees the
connection end.

This module is separate from :mod:`ctrlsock.client` so that ``ctrlsock status``, which uses the blocking
client, never imports asyncio.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ctrlsock.client import (
    DEFAULT_TIMEOUT,
    RECV_SIZE,
    ReplyReader,
    Stage,
    decode_reply_from,
    encode_command,
    translate_os_error,
)
from ctrlsock.errors import ClientError, SocketPathTooLongError
from ctrlsock.protocol import Reply

__all__ = ["send_command_async", "send_raw_async"]

# Linux gives no readiness event when a full unix-socket listen backlog gets room (a non-blocking
# connect() fails with EAGAIN, and the unconnected socket polls as writable at once), so a connect is
# retried after a short pause that grows up to this many seconds.
_CONNECT_RETRY_FIRST: Final = 0.001
_CONNECT_RETRY_MAX: Final = 0.05


async def send_command_async(
    socket_path: Path | str,
    command: str,
    arguments: object = None,
    *,
    service: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
) -> Reply:
    """Send one command and return the server's reply (whatever its result code), on the running loop.

    The arguments, the reply and every error are those of :func:`ctrlsock.client.send_command`.

    Args:
        socket_path: The control socket.
        command: The command name, e.g. ``"version-get"``.
        arguments: Any value JSON can encode (else :class:`~ctrlsock.errors.LocalProtocolError`), left
            out when ``None``; typed ``object`` so that a literal passed here keeps its own type.
        service: The ``service`` list (as kea-ctrl-agent sends it), left out when ``None``.
        timeout: Seconds for the whole exchange: connect, send, and the complete reply.
        connect_timeout: Seconds to wait for the connection to be accepted into the server's backlog;
            defaults to ``timeout``.

    Returns:
        The decoded reply; a list of one reply (kea-ctrl-agent's form) is unwrapped.

    Raises:
        SocketPathTooLongError, SocketNotFoundError, ServerRefusedError, SocketPermissionError,
        ClientTimeoutError, TruncatedReplyError, BadReplyError: each with ``.path``.
        LocalProtocolError: ``arguments`` cannot be encoded as JSON.
    """
    path = Path(socket_path)
    reader = await _exchange(path, encode_command(command, arguments, service), timeout, connect_timeout)
    return decode_reply_from(path, reader.document)


async def send_raw_async(
    socket_path: Path | str,
    request: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
) -> bytes:
    """Send ``request`` as is and return every byte the server sent until it closed, on the running loop.

    As :func:`ctrlsock.client.send_raw`: the reply must hold a complete JSON value, else
    :class:`~ctrlsock.errors.TruncatedReplyError`; bytes after it are returned too.
    """
    reader = await _exchange(Path(socket_path), request, timeout, connect_timeout)
    return reader.raw


async def _exchange(path: Path, request: bytes, timeout: float, connect_timeout: float | None) -> ReplyReader:
    """Connect, send, half-close, read to EOF."""
    SocketPathTooLongError.check(path)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    connect_seconds = timeout if connect_timeout is None else min(connect_timeout, timeout)
    reader = ReplyReader(path)
    stage = Stage.CONNECT
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            async with asyncio.timeout(connect_seconds):
                await _connect(sock, path)
            stage = Stage.SEND
            async with asyncio.timeout_at(deadline):
                try:
                    await _send_all(loop, sock, request)
                    sock.shutdown(socket.SHUT_WR)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may have answered early (e.g. "command too large") and closed: read it.
                    pass
                stage = Stage.RECEIVE
                while True:
                    try:
                        data = await _recv(loop, sock)
                    except ConnectionResetError:
                        data = b""
                    if reader.receive_data(data):
                        return reader
    except ClientError:
        raise
    except OSError as error:
        if isinstance(error, TimeoutError) and reader.complete:
            # A complete reply, but the server kept the connection open: good enough.
            return reader
        seconds = connect_seconds if stage is Stage.CONNECT else timeout
        raise translate_os_error(error, path, stage, seconds, reader.received) from error


async def _connect(sock: socket.socket, path: Path) -> None:
    # A unix-socket connect() completes at once or fails; EAGAIN means the listen backlog is full.
    delay = _CONNECT_RETRY_FIRST
    while True:
        try:
            sock.connect(os.fspath(path))
        except BlockingIOError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _CONNECT_RETRY_MAX)
        else:
            return


async def _send_all(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            # MSG_NOSIGNAL: an embedding program may not ignore SIGPIPE.
            sent = sock.send(view, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            await _wait_ready(loop, sock.fileno(), writable=True)
            continue
        view = view[sent:]


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            await _wait_ready(loop, sock.fileno(), writable=False)


async def _wait_ready(loop: asyncio.AbstractEventLoop, fd: int, *, writable: bool) -> None:
    """Wait until ``fd`` is readable (or writable); the callback is removed however the wait ends."""
    ready = loop.create_future()
    if writable:
        loop.add_writer(fd, _wake, ready)
    else:
        loop.add_reader(fd, _wake, ready)
    try:
        await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
