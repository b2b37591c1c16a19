"""An HTTP(S) control listener: its bound TCP socket, its TLS context, and its connections' deadlines.

The engine accepts on it next to the unix socket. Each listener keeps two deadline queues of its own, one per
timeout, so that (as for the unix socket's) the queue in arming order is also in deadline order: connections
waiting for their next request (closed silently at ``idle_timeout``, as Kea does) and requests under way
(answered with 408 at ``request_timeout`` from their first byte, which is what stops a client trickling its
headers).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections import OrderedDict
from typing import TYPE_CHECKING

from ctrlsock.errors import ServerError

from .http_config import HttpListenerConfig

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["HttpListener", "open_http_listener"]

logger = logging.getLogger("ctrlsock.server")


class HttpListener:
    """A listening TCP socket serving HTTP(S) commands, as configured."""

    def __init__(self, config: HttpListenerConfig, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.tls = tls
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{config.scheme}://{shown}:{port}/"
        self.idle: OrderedDict[Connection, float] = OrderedDict()  # waiting for the next request
        self.requests: OrderedDict[Connection, float] = OrderedDict()  # a request under way

    def next_deadline(self) -> float | None:
        firsts = [next(iter(queue.values())) for queue in (self.idle, self.requests) if queue]
        return min(firsts) if firsts else None

    def forget(self, conn: Connection) -> None:
        self.idle.pop(conn, None)
        self.requests.pop(conn, None)

    def close(self) -> None:
        self.sock.close()


def open_http_listener(config: HttpListenerConfig, backlog: int) -> HttpListener:
    """Bind and listen (non-blocking, close-on-exec), with the TLS context loaded first.

    Raises:
        ServerError: the address cannot be bound (in use, not local, ...) or the TLS files are unusable.
    """
    config.check()
    context = config.tls.context() if config.tls is not None else None
    try:
        infos = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as error:
        raise ServerError(f"cannot serve http on {config.host}:{config.port}: {error.strerror}") from error
    family, kind, protocol, _name, address = infos[0]
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, protocol)
    try:
        # A restarted daemon must get its port back while the old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" then means IPv6 only, as written, not also every IPv4 address.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise ServerError(
            f"cannot serve http on {config.host}:{config.port}: {error.strerror or error}"
        ) from error
    return HttpListener(config, sock, context)
