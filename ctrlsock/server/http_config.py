"""What an HTTP(S) control listener is: its address, users, TLS and timeouts, and when it may be exposed.

Kea 3's DHCP servers serve their commands over HTTP themselves (``"socket-type": "http"`` entries in
``control-sockets``, Kea ChangeLog 2271); a :class:`HttpListenerConfig` is one such entry. The checks here run
before anything is bound: a listener reachable from other hosts must have both TLS and authentication, or an
explicit ``allow_insecure`` from the admin, because every command (``config-set``, ``shutdown``) is as
powerful over the network as it is on the local socket.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ctrlsock.errors import ServerError
from ctrlsock.http_protocol import DEFAULT_MAX_HEADER_SIZE, User, check_response_headers

HttpUser = User
"""A Basic-authentication user of a listener: ``HttpUser("admin", password)``."""

__all__ = [
    "DEFAULT_HTTP_HOST",
    "DEFAULT_HTTP_IDLE_TIMEOUT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_HTTP_REQUEST_TIMEOUT",
    "HttpListenerConfig",
    "HttpUser",
    "TlsConfig",
    "User",
    "is_loopback",
]

DEFAULT_HTTP_HOST: Final = "127.0.0.1"
"""Loopback: a listener is reachable from other hosts only when the admin names another address."""
DEFAULT_HTTP_PORT: Final = 8000
"""Kea's default ``socket-port`` (kea-ctrl-agent's ``http-port``)."""
DEFAULT_HTTP_REQUEST_TIMEOUT: Final = 10.0
"""Seconds a request has, from its first byte, to arrive whole, headers and body (Kea: 10 s)."""
DEFAULT_HTTP_IDLE_TIMEOUT: Final = 30.0
"""Seconds a kept-alive connection may wait for its next request before it is closed (Kea: 30 s)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) can only be reached from this host."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name resolved at bind time: it may be any address


@dataclass(frozen=True)
class TlsConfig:
    """TLS for a listener, with Kea's keys: ``cert-file``, ``key-file``, ``trust-anchor``, ``cert-required``.

    Attributes:
        cert_file: the server's certificate chain (PEM).
        key_file: its private key (PEM).
        trust_anchor: a CA file or directory that client certificates must chain to; ``None`` accepts no
            client certificates (and so requires none).
        cert_required: with a ``trust_anchor``, refuse clients without a valid certificate (Kea's default).
    """

    cert_file: Path
    key_file: Path
    trust_anchor: Path | None = None
    cert_required: bool = True

    def __post_init__(self) -> None:
        if self.cert_required and self.trust_anchor is None:
            object.__setattr__(self, "cert_required", False)  # nothing to check certificates against

    def context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 or later, the certificate loaded, client certificates as configured.

        Raises:
            ServerError: a file cannot be read or does not hold what it should.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ServerError(
                f"cannot load the certificate {self.cert_file} with the key {self.key_file}: {_why(error)}"
            ) from error
        anchor = self.trust_anchor
        if anchor is not None:
            try:
                if anchor.is_dir():
                    context.load_verify_locations(capath=anchor)
                else:
                    context.load_verify_locations(cafile=anchor)
            except (OSError, ssl.SSLError) as error:
                raise ServerError(f"cannot load the trust anchor {anchor}: {_why(error)}") from error
            context.verify_mode = ssl.CERT_REQUIRED if self.cert_required else ssl.CERT_OPTIONAL
        return context


def _why(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return error.strerror or str(error)


@dataclass(frozen=True)
class HttpListenerConfig:
    """One HTTP(S) control listener, served by the same engine as the unix socket.

    Attributes:
        host: the address to bind (loopback by default; ``::1`` and other IPv6 addresses work).
        port: the TCP port (0: any free port, which :attr:`ControlServer.http_addresses` then tells).
        users: Basic authentication users; empty means no authentication.
        realm: the realm named in a 401's ``WWW-Authenticate``.
        tls: serve HTTPS with these files; ``None`` serves plain HTTP.
        allow_insecure: bind an address other hosts can reach without TLS or without users. Refused
            otherwise: commands over the network are as powerful as on the local socket.
        request_timeout: seconds a request has, from its first byte, to arrive whole (a client trickling
            its headers, "slowloris", gets 408 and is closed).
        idle_timeout: seconds a kept-alive connection may wait for its next request.
        max_header_size: most bytes of request line and headers (431 beyond it).
        headers: extra response headers, as Kea 3's ``http-headers`` (``Strict-Transport-Security``, say).
    """

    host: str = DEFAULT_HTTP_HOST
    port: int = DEFAULT_HTTP_PORT
    users: Sequence[HttpUser] = ()
    realm: str = "ctrlsock"
    tls: TlsConfig | None = None
    allow_insecure: bool = False
    request_timeout: float = DEFAULT_HTTP_REQUEST_TIMEOUT
    idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", tuple(self.users))
        object.__setattr__(self, "headers", tuple(self.headers))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, not {self.port}")
        for name in ("request_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        check_response_headers(self.headers)
        if self.max_header_size < 1024:
            raise ValueError(f"max_header_size must be at least 1024, not {self.max_header_size}")
        names = [user.user for user in self.users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"user {duplicates[0]!r} is listed more than once")
        for user in self.users:
            if ":" in user.user or not user.user:
                raise ValueError(f"user name {user.user!r} is empty or has a colon")
            if not user.password:
                raise ValueError(f"user {user.user!r} has an empty password")

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def exposure_problem(self) -> str | None:
        """Why binding this listener would expose the commands, or ``None`` when it is safe (or allowed)."""
        if self.allow_insecure or is_loopback(self.host):
            return None
        checks = (("TLS", self.tls is not None), ("authentication", bool(self.users)))
        missing = [what for what, present in checks if not present]
        if not missing:
            return None
        return (
            f"{self.host} is reachable from other hosts and the listener has no {' and no '.join(missing)}; "
            "every command (config-set, shutdown) would be open to the network. Add them, bind a loopback "
            "address, or allow it explicitly (allow_insecure, --http-allow-insecure)"
        )

    def check(self) -> None:
        """Raise :class:`ServerError` when the listener may not be bound as configured."""
        problem = self.exposure_problem
        if problem is not None:
            raise ServerError(f"refusing to serve http on {self.host}:{self.port}: {problem}")
