"""Send commands to an HTTP(S) control endpoint (Kea 3's servers, kea-ctrl-agent), blocking, kept alive.

The HTTP and Kea parts are :mod:`ctrlsock.http_protocol`'s; this module only moves bytes over a TCP
socket, optionally in TLS (a custom CA, a client certificate, the host name checked), and turns OS and
TLS errors into ctrlsock's in one place. The errors are the unix client's where they mean the same
(``ServerRefusedError``, ``ClientTimeoutError``, ``TruncatedReplyError``, ``BadReplyError``), with ``url``
set instead of ``path``; HTTP adds ``HttpStatusError``, ``AuthenticationError`` and ``TlsError``.

The command line imports this module only for a URL target: ``ctrlsock status SOCKET`` never pays for
``ssl``.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from ctrlsock.client import Stage
from ctrlsock.errors import (
    ClientError,
    ClientTimeoutError,
    CtrlSockError,
    LocalProtocolError,
    ServerRefusedError,
    SocketPermissionError,
    TlsError,
    TruncatedReplyError,
)
from ctrlsock.http_protocol import (
    NEED_DATA,
    ClientConnection,
    ControlUrl,
    Credentials,
    HttpReply,
    Scheme,
    parse_control_url,
    replies_from,
)
from ctrlsock.protocol import Reply

__all__ = [
    "DEFAULT_TIMEOUT",
    "Credentials",
    "HttpControlClient",
    "read_password_file",
    "send_command_http",
    "tls_context",
]

DEFAULT_TIMEOUT: Final = 10.0
RECV_SIZE: Final = 256 * 1024


def read_password_file(path: Path | str) -> str:
    """The password in ``path``: its first line, without the line end (``echo secret > FILE`` works).

    Raises:
        ClientError: the file cannot be read, is not UTF-8, or its first line is empty.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ClientError(f"cannot read password file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ClientError(f"password file {path} is not UTF-8 text") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ClientError(f"password file {path} has an empty first line")
    return password


def tls_context(
    *, ca: Path | str | None = None, cert: Path | str | None = None, key: Path | str | None = None
) -> ssl.SSLContext:
    """A client TLS context: the system's CAs or ``ca``, host names checked, ``cert``/``key`` presented.

    Raises:
        TlsError: a file cannot be loaded (named in the message).
        LocalProtocolError: a key without its certificate.
    """
    if key is not None and cert is None:
        raise LocalProtocolError("a client key needs its certificate too (--cert)")
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    except (OSError, ssl.SSLError) as error:
        raise TlsError(f"cannot load CA file {ca}: {_reason(error)}") from None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), None if key is None else str(key))
        except (OSError, ssl.SSLError) as error:
            raise TlsError(f"cannot load client certificate {cert}: {_reason(error)}") from None
    return context


def _reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")
    return error.strerror or str(error)


class HttpControlClient:
    """A persistent connection to one control endpoint; commands go one after another on it.

    Opened on the first command, reopened when the server closed it. Close it (or use ``with``).
    """

    def __init__(
        self,
        url: ControlUrl | str,
        *,
        auth: Credentials | None = None,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keep_alive: bool = True,
    ) -> None:
        self.url = url if isinstance(url, ControlUrl) else parse_control_url(url)
        self.auth = auth
        self.timeout = timeout
        self.keep_alive = keep_alive
        if self.url.scheme is Scheme.HTTPS:
            self._tls: ssl.SSLContext | None = tls_context(ca=ca, cert=cert, key=key)
        elif ca is not None or cert is not None or key is not None:
            raise LocalProtocolError(f"--ca, --cert and --key need an https url, not {self.url}")
        else:
            self._tls = None
        self._sock: socket.socket | None = None
        self._conn: ClientConnection | None = None

    def __enter__(self) -> HttpControlClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, if open."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._conn = None

    def send_command(
        self, command: str, arguments: object = None, *, service: Sequence[str] | None = None
    ) -> tuple[Reply, ...]:
        """Send one command; return its replies, one per service (one without ``service``).

        Raises:
            ServerRefusedError, ClientTimeoutError, TruncatedReplyError, BadReplyError, TlsError,
            ClientError: with ``.url``.
            HttpStatusError, AuthenticationError: the endpoint refused the request.
            LocalProtocolError: ``arguments`` cannot be encoded as JSON.
        """
        return replies_from(self.exchange(_encode(command, arguments, service)), self.url)

    def exchange(self, body: bytes) -> HttpReply:
        """Send ``body`` (a command document, as is) and return the whole HTTP response."""
        reused = self._conn is not None
        try:
            return self._exchange(body)
        except TruncatedReplyError as error:
            # A kept-alive connection the server closed while idle (Kea after 30 s) fails on first use
            # without a byte of answer: that, and only that, is worth one retry on a new connection.
            if not (reused and error.received == 0):
                raise
            self.close()
            return self._exchange(body)

    def _exchange(self, body: bytes) -> HttpReply:
        deadline = time.monotonic() + self.timeout
        stage = Stage.CONNECT
        received = 0
        try:
            if self._conn is None or self._sock is None:
                self._open(deadline)
            assert self._conn is not None and self._sock is not None
            conn, sock = self._conn, self._sock
            stage = Stage.SEND
            sock.settimeout(_remaining(deadline))
            sock.sendall(conn.send_body(body))
            stage = Stage.RECEIVE
            while True:
                reply = conn.next_reply()
                if reply is not NEED_DATA:
                    break
                sock.settimeout(_remaining(deadline))
                try:
                    data = sock.recv(RECV_SIZE)
                except ConnectionResetError:
                    data = b""
                conn.receive_data(data)
                received = conn.received
        except CtrlSockError:
            self.close()
            raise
        except OSError as error:
            self.close()
            raise self._translate(error, stage, received) from error
        if reply.keep_alive and self.keep_alive:
            conn.start_next_cycle()
        else:
            self.close()
        return reply

    def _open(self, deadline: float) -> None:
        sock = socket.create_connection((self.url.host, self.url.port), timeout=_remaining(deadline))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(_remaining(deadline))
                sock = self._tls.wrap_socket(sock, server_hostname=self.url.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._conn = ClientConnection(self.url, credentials=self.auth, keep_alive=self.keep_alive)

    def _translate(self, error: OSError, stage: Stage, received: int) -> CtrlSockError:
        url = str(self.url)
        if isinstance(error, ssl.SSLError):
            if isinstance(error, ssl.SSLCertVerificationError):
                reason = f"certificate verify failed: {error.verify_message or _reason(error)}"
            else:
                reason = _reason(error)
            return TlsError(f"tls with {url} failed: {reason}", url=url)
        if isinstance(error, TimeoutError) or error.errno in (errno.ETIMEDOUT, errno.EAGAIN):
            detail = f"after {received} bytes of an incomplete reply" if received else "without an answer"
            return ClientTimeoutError(
                f"timed out {stage.phrase} {url}: {self.timeout:g} s passed {detail}", url=url
            )
        if error.errno == errno.ECONNREFUSED:
            return ServerRefusedError(f"connection refused: nothing accepts connections on {url}", url=url)
        if error.errno in (errno.EACCES, errno.EPERM):
            return SocketPermissionError(f"permission denied: {url}", url=url)
        if error.errno in (errno.ECONNRESET, errno.EPIPE):
            return TruncatedReplyError(
                f"{url}: the server closed the connection {'without replying' if not received else 'early'}",
                url=url,
                received=received,
            )
        if isinstance(error, socket.gaierror):
            return ClientError(f"cannot resolve host {self.url.host!r} of {url}: {error.strerror}", url=url)
        return ClientError(f"{stage.phrase} {url} failed: {error.strerror or error}", url=url)


def _encode(command: str, arguments: object, service: Sequence[str] | None) -> bytes:
    from ctrlsock.client import encode_command  # noqa: PLC0415  (the same request document as on a unix socket)

    return encode_command(command, arguments, service)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(errno.ETIMEDOUT, "timed out")
    return remaining


def send_command_http(
    url: ControlUrl | str,
    command: str,
    arguments: object = None,
    *,
    service: Sequence[str] | None = None,
    auth: Credentials | None = None,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Reply, ...]:
    """Send one command to an HTTP(S) control endpoint and return its replies, one per service.

    Args:
        url: ``http://HOST:PORT[/PATH]`` or ``https://...``.
        command: The command name.
        arguments: Any value JSON can encode, left out when ``None``.
        service: The ``service`` list: the daemons kea-ctrl-agent forwards to (one reply each); left out,
            the endpoint answers itself.
        auth: Basic authentication credentials.
        ca: A CA bundle to trust instead of the system's (https only).
        cert: A client certificate (PEM; may hold the key too).
        key: The client certificate's key.
        timeout: Seconds for the whole exchange.

    Raises:
        The errors of :meth:`HttpControlClient.send_command`.
    """
    with HttpControlClient(
        url, auth=auth, ca=ca, cert=cert, key=key, timeout=timeout, keep_alive=False
    ) as client:
        return client.send_command(command, arguments, service=service)
