"""One client's connection as the engine holds it: its socket, its protocol state and what it waits on.

A :class:`Connection` is a unix client: one :class:`~.session.Session` request, one reply, close. An
:class:`HttpConnection` is an HTTP(S) client: the same reply buffer and bookkeeping, with the protocol of
an :class:`~.http_session.HttpSession` and, over TLS, a :class:`TlsStream` in place of the socket. The
engine calls ``sock.recv(n, flags)`` and ``sock.send(data, flags)`` on both and never needs to know which
it has.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING, ClassVar, Final

from ctrlsock.protocol import Request

from .commands import Call, HttpPeer
from .http_session import REQUEST_TIMEOUT, HttpSession
from .session import Event, Rejected, Session, decode_unparsed

if TYPE_CHECKING:
    from .http_listener import HttpListener

__all__ = ["Connection", "HttpConnection", "TlsStream"]

_TLS_RECORD: Final = 16384
"""Bytes handed to one ``SSL_write``: a TLS record's payload. CPython does not set
``SSL_MODE_ENABLE_PARTIAL_WRITE``, so a bigger write either completes whole or must be retried with the same
buffer; one record at a time keeps progress visible to the write deadline."""


class Connection(Session):
    """A session plus its socket, what the waiter watches it for, and the command it waits on."""

    __slots__ = ("__weakref__", "call", "counted", "events", "fd", "sock", "task")

    #: HTTP only: the listener it came in on and the peer's address (``None`` for a unix client).
    listener: ClassVar[HttpListener | None] = None
    remote: ClassVar[HttpPeer | None] = None
    #: The HTTP status a timeout reply carries (``None``: a unix client gets Kea's text only).
    timeout_status: ClassVar[int | None] = None
    handshaking: bool = False
    lingering: bool = False

    def __init__(self, max_size: int | None, max_depth: int | None, sock: socket.socket | TlsStream) -> None:
        super().__init__(max_size, max_depth)
        self.sock = sock
        self.fd = sock.fileno()
        self.events = 0
        self.call: Call | None = None  # the command this client waits for, while it runs or queues
        self.task: asyncio.Task[bytes] | None = None
        self.counted = 0  # request bytes counted against max_buffered

    def frame(self, reply: bytes, status: int | None, *, closing: bool) -> bytes:
        """The bytes that carry ``reply`` on this connection: a unix client gets the reply itself."""
        return reply

    @staticmethod
    def decode(document: bytes) -> Request | Rejected:
        """Decode a large request (called off the I/O thread)."""
        return decode_unparsed(document)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection carries another request after this reply (never, for a unix client)."""
        return False


class HttpConnection(Connection):
    """An HTTP(S) client: requests and replies framed by its :class:`HttpSession`, kept alive between them."""

    __slots__ = ("handshaking", "http", "lingering", "listener", "remote", "timeout_status")

    def __init__(
        self,
        max_size: int,
        max_depth: int | None,
        sock: socket.socket | TlsStream,
        listener: HttpListener,
        remote: HttpPeer,
    ) -> None:
        super().__init__(max_size, max_depth, sock)
        config = listener.config
        self.http = HttpSession(
            users=config.users,
            realm=config.realm,
            max_body=max_size,
            max_header_size=config.max_header_size,
            headers=config.headers,
        )
        self.listener = listener  # type: ignore[misc]  # a slot here, a class default on Connection
        self.remote = remote  # type: ignore[misc]
        self.timeout_status = REQUEST_TIMEOUT  # type: ignore[misc]
        self.handshaking = isinstance(sock, TlsStream)
        self.lingering = False  # answered and half-closed: reading only to drop what the client still sends

    # --- reading: the HTTP session's, not the unix framer's --------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self.received += len(data)
        self.http.receive_data(data)

    def next_event(self, *, quick: bool = True) -> Event:
        return self.http.next_event()

    @property
    def buffered(self) -> int:
        return self.http.buffered

    def timeout_reply(self) -> bytes:
        return b""  # the framing is the 408 itself

    @staticmethod
    def decode(document: bytes) -> Request | Rejected:
        return HttpSession.decode(document)

    # --- writing ---------------------------------------------------------------------------------------

    def frame(self, reply: bytes, status: int | None, *, closing: bool) -> bytes:
        return self.http.frame(reply, status, close=closing)

    @property
    def keep_alive(self) -> bool:
        return self.http.reusable

    @property
    def peer(self) -> HttpPeer:
        """Who sent the current request: the address, and the user it authenticated as."""
        remote = self.remote
        assert remote is not None
        user = self.http.user
        return remote if user is None else HttpPeer(remote.address, remote.port, remote.tls, user)

    def next_cycle(self) -> None:
        """The response went out: wait for the client's next request on the same connection."""
        self.release_reply()
        self.http.start_next_cycle()
        self.received = 0


class TlsStream:
    """A non-blocking TLS socket behind the plain socket calls the engine makes.

    ``SSLSocket`` takes no flags and signals "would block" with ``SSLWantReadError``/``SSLWantWriteError``;
    here they become the ``BlockingIOError`` the engine handles for every socket, and a clean or abrupt close
    by the peer becomes the empty read it takes for end of file. Other TLS errors are ``OSError``\\ s, which
    the engine already treats as a client gone wrong.
    """

    __slots__ = ("_ssl",)

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._ssl = sock

    def fileno(self) -> int:
        return self._ssl.fileno()

    def do_handshake(self) -> None:
        """One step of the handshake; ``BlockingIOError`` subclasses say which way to wait."""
        self._ssl.do_handshake()

    def recv(self, size: int, flags: int = 0) -> bytes:
        try:
            return self._ssl.recv(size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        # OpenSSL writes with write(), without MSG_NOSIGNAL: a client that left gives EPIPE rather than
        # killing the daemon only because CPython ignores SIGPIPE at start-up.
        try:
            return self._ssl.send(data[:_TLS_RECORD])
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None

    def shutdown(self, how: int) -> None:
        """Half-close the TCP connection (no TLS close_notify: the connection ends here anyway)."""
        self._ssl.shutdown(how)

    def close(self) -> None:
        self._ssl.close()
