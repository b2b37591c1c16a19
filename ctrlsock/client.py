"""Send one command to a control socket and read its one reply, with timeouts (Kea's wire protocol).

One request per connection, like Kea: connect, send the whole request, shut our sending side down, read
until the server closes, and check with the framer that a complete JSON value arrived (a reply cut short
is an error, never a success). Kea 2.2 answers normally after the half-close (measured), and the
half-close lets a server see at once that an incomplete request will never be finished.

The asyncio client (:mod:`ctrlsock.async_client`) does the same I/O on an event loop and shares what is
not I/O with this module, so both raise the very same errors: :class:`ReplyReader` judges the bytes of a
reply, :func:`decode_reply_from` turns its document into a :class:`Reply`, and :func:`translate_os_error`
is the one place where an ``OSError`` becomes a ctrlsock error. This module imports no asyncio:
``ctrlsock status`` uses it on its fast path.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final

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

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_SOCKET_PATH",
    "ReplyReader",
    "Stage",
    "decode_reply_from",
    "encode_command",
    "send_command",
    "send_raw",
    "translate_os_error",
]

DEFAULT_TIMEOUT: Final = 10.0
RECV_SIZE: Final = 256 * 1024


class Stage(StrEnum):
    """How far an exchange got; names the step in an error message."""

    CONNECT = "connect"
    SEND = "send"
    RECEIVE = "receive"

    @property
    def phrase(self) -> str:
        """The words for an error message: ``timed out {phrase} PATH``."""
        return _PHRASES[self]


_PHRASES: Final = {
    Stage.CONNECT: "connecting to",
    Stage.SEND: "sending to",
    Stage.RECEIVE: "reading the reply from",
}


def send_command(
    socket_path: Path | str,
    command: str,
    arguments: object = None,
    *,
    service: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
) -> Reply:
    """Send one command and return the server's reply (whatever its result code).

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
        The decoded reply; a list of one reply (kea-ctrl-agent's form) is unwrapped. Call
        :meth:`Reply.raise_for_result` on it to turn a failure into an exception.

    Raises:
        SocketPathTooLongError, SocketNotFoundError, ServerRefusedError, SocketPermissionError,
        ClientTimeoutError, TruncatedReplyError, BadReplyError: each with ``.path``.
        LocalProtocolError: ``arguments`` cannot be encoded as JSON.
    """
    path = Path(socket_path)
    reader = _exchange(path, encode_command(command, arguments, service), timeout, connect_timeout)
    return decode_reply_from(path, reader.document)


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
    return _exchange(Path(socket_path), request, timeout, connect_timeout).raw


def encode_command(command: str, arguments: object, service: Sequence[str] | None) -> bytes:
    """The request document for ``command`` (``service`` copied into a tuple)."""
    return encode_request(Request(command, arguments, tuple(service) if service is not None else None))


class ReplyReader:
    """The bytes of one reply, judged as they arrive; sans-IO, shared by both clients.

    Feed every chunk read with :meth:`receive_data` and finally ``b""`` for end of file; once that
    returns ``True``, :attr:`document` holds the first complete JSON value and :attr:`raw` every byte.
    Replies are framed without size or depth limits: those guard servers, and a client asked for the
    reply.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._feed = JsonFeed(max_size=None, max_depth=None)
        self._received = bytearray()
        self._document: bytes | None = None

    @property
    def received(self) -> int:
        """Bytes received so far."""
        return len(self._received)

    @property
    def complete(self) -> bool:
        """Whether a complete JSON value has arrived (more bytes may still follow)."""
        return self._document is not None

    @property
    def document(self) -> bytes:
        """The first complete JSON value (comments removed); only valid once :attr:`complete`."""
        assert self._document is not None, "the reply is not complete"
        return self._document

    @property
    def raw(self) -> bytes:
        """Every byte received."""
        return bytes(self._received)

    def receive_data(self, data: bytes) -> bool:
        """Take the next chunk; ``b""`` is end of file. Returns whether the reply is finished (EOF).

        Raises:
            BadReplyError: the bytes cannot begin a JSON value.
            TruncatedReplyError: end of file came before a complete JSON value.
        """
        if self._document is None:
            self._feed.receive_data(data)
            try:
                self._document = self._feed.next_document()
            except RemoteProtocolError as error:
                if data:
                    raise BadReplyError(f"bad reply from {self.path}: {error}", path=self.path) from None
                raise truncated_reply(self.path, self.received) from None
        if not data:
            return True
        self._received += data
        return False


def decode_reply_from(path: Path, document: bytes) -> Reply:
    """Decode a complete reply document from the server at ``path``.

    Raises:
        BadReplyError: it is JSON but not a Kea-style reply.
    """
    try:
        return decode_reply(document)
    except RemoteProtocolError as error:
        raise BadReplyError(f"bad reply from {path}: {error}", path=path) from None


def truncated_reply(path: Path, received: int) -> TruncatedReplyError:
    """The error for a server that closed before a complete reply, after ``received`` bytes."""
    if received == 0:
        message = f"{path}: the server closed the connection without replying"
    else:
        message = f"{path}: reply truncated: the server closed the connection after {received} bytes"
    return TruncatedReplyError(message, path=path, received=received)


def translate_os_error(
    error: OSError, path: Path, stage: Stage, timeout: float, received: int
) -> CtrlSockError:
    """The one place where OS errors become ctrlsock errors, for both clients.

    Args:
        error: What the call raised; any ``TimeoutError`` (a socket timeout, an expired asyncio timeout)
            counts as the exchange timing out.
        path: The socket.
        stage: The step that failed.
        timeout: The seconds that applied to that step, for the message.
        received: Reply bytes received so far.
    """
    if isinstance(error, TimeoutError) or error.errno in (errno.ETIMEDOUT, errno.EAGAIN):
        if stage is Stage.RECEIVE and received:
            detail = f"after {received} bytes of an incomplete reply"
        else:
            detail = "without an answer"
        return ClientTimeoutError(
            f"timed out {stage.phrase} {path}: {timeout:g} s passed {detail}", path=path
        )
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return SocketNotFoundError(f"no socket at {path}", path=path)
    if error.errno == errno.ECONNREFUSED:
        return ServerRefusedError(f"connection refused: nothing accepts connections on {path}", path=path)
    if error.errno in (errno.EACCES, errno.EPERM):
        return SocketPermissionError(f"permission denied: {path}", path=path)
    if error.errno in (errno.ECONNRESET, errno.EPIPE):
        return truncated_reply(path, received)
    if error.errno == errno.ENAMETOOLONG:
        return SocketPathTooLongError(path)
    reason = error.strerror or str(error)
    return ClientError(f"{stage.phrase} {path} failed: {reason}", path=path)


def _exchange(path: Path, request: bytes, timeout: float, connect_timeout: float | None) -> ReplyReader:
    """Connect, send, half-close, read to EOF."""
    SocketPathTooLongError.check(path)
    deadline = time.monotonic() + timeout
    connect_seconds = timeout if connect_timeout is None else min(connect_timeout, timeout)
    reader = ReplyReader(path)
    stage = Stage.CONNECT
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            _connect(sock, path, connect_seconds)
            stage = Stage.SEND
            sock.settimeout(_remaining(deadline))
            try:
                # MSG_NOSIGNAL: an embedding program may not ignore SIGPIPE.
                sock.sendall(request, socket.MSG_NOSIGNAL)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered early (e.g. "command too large") and closed: read it.
                pass
            stage = Stage.RECEIVE
            while True:
                try:
                    sock.settimeout(_remaining(deadline))
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    if reader.complete:
                        # A complete reply, but the server kept the connection open: good enough.
                        return reader
                    raise
                except ConnectionResetError:
                    data = b""
                if reader.receive_data(data):
                    return reader
    except ClientError:
        raise
    except OSError as error:
        seconds = connect_seconds if stage is Stage.CONNECT else timeout
        raise translate_os_error(error, path, stage, seconds, reader.received) from error


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
