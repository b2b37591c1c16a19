"""Kea's HTTP control channel, sans-IO: control requests and replies over HTTP/1.1, both sides.

HTTP/1.1 itself is h11's (a sans-IO library: bytes in through ``receive_data``, events out of
``next_event``); this module adds what Kea puts on top of it, and makes no syscalls either. Facts it follows,
measured on kea-ctrl-agent 2.2.0 and read from Kea 3's sources (the DHCP servers serve HTTP since 2.7.2):

- A command is a ``POST`` with ``Content-Type: application/json`` and a ``Content-Length`` body holding the
  same command document as on the unix socket. kea-ctrl-agent 2.2 ignores the path (``/`` by
  convention) and answers a chunked body with 400.
- A ``200`` body is a JSON list of replies, one per entry of the request's ``service`` list (one, the
  agent's own, without ``service``). kea-ctrl-agent 2.2 answers a service it cannot reach with
  ``{"result": 1, "text": "forwarding socket is not configured for the server type dhcp6"}`` in the list.
- Any refusal by the HTTP layer is a bare map whose ``result`` is the HTTP status and whose ``text`` is the
  reason phrase: ``{ "result": 401, "text": "Unauthorized" }`` with ``WWW-Authenticate: Basic
  realm="..."``, ``{ "result": 400, "text": "Bad Request" }`` for a non-JSON body, another method or content
  type alike (Kea 2.2). A server built on this module gives the more precise standard statuses (405, 411,
  413, 415) with the same body shape.
- Connections are kept alive (HTTP/1.1 persistent connections), so a client may send many commands on one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

import h11

from ctrlsock.errors import (
    AuthenticationError,
    BadReplyError,
    HttpStatusError,
    LocalProtocolError,
    RemoteProtocolError,
    TruncatedReplyError,
)
from ctrlsock.protocol import (
    DEFAULT_MAX_REQUEST_SIZE,
    Reply,
    Request,
    decode_replies,
    decode_request,
    encode_reply,
    encode_request,
)

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "JSON_CONTENT_TYPE",
    "NEED_DATA",
    "PEER_CLOSED",
    "ClientConnection",
    "ControlRequest",
    "ControlUrl",
    "Credentials",
    "HttpReply",
    "NeedData",
    "PeerClosed",
    "Rejection",
    "Scheme",
    "ServerConnection",
    "UndecodedRequest",
    "User",
    "check_basic_auth",
    "check_response_headers",
    "error_body",
    "parse_control_url",
    "replies_from",
]

JSON_CONTENT_TYPE: Final = "application/json"
#: The most bytes of a request line and headers held before a request is refused; h11's own default.
DEFAULT_MAX_HEADER_SIZE: Final = 16 * 1024
_USER_AGENT: Final = b"ctrlsock"


class Scheme(StrEnum):
    """The URL schemes a control endpoint may have."""

    HTTP = "http"
    HTTPS = "https"

    @property
    def default_port(self) -> int:
        """The port a URL without one means."""
        return 443 if self is Scheme.HTTPS else 80


@dataclass(frozen=True)
class ControlUrl:
    """``http://HOST:PORT[/PATH]`` or ``https://...``, split; ``str()`` gives it back."""

    scheme: Scheme
    host: str
    port: int
    path: str = "/"

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the host (bracketed if IPv6), with the port unless it is the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == self.scheme.default_port else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme.value}://{self.host_header}{self.path}"


def parse_control_url(text: str) -> ControlUrl:
    """Parse a control endpoint's URL.

    Raises:
        LocalProtocolError: not an ``http``/``https`` URL with a host, or a bad port, a query, a fragment
            or credentials in it (credentials go in ``--auth-user`` and a password file, never a URL).
    """
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise LocalProtocolError(f"bad url {text!r}: {error}") from None
    try:
        scheme = Scheme(parts.scheme.lower())
    except ValueError:
        raise LocalProtocolError(f"bad url {text!r}: the scheme must be http or https") from None
    if not parts.hostname:
        raise LocalProtocolError(f"bad url {text!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise LocalProtocolError(f"bad url {text!r}: credentials do not belong in a url")
    if parts.query or parts.fragment:
        raise LocalProtocolError(f"bad url {text!r}: a control url has no query or fragment")
    return ControlUrl(scheme, parts.hostname, port or scheme.default_port, parts.path or "/")


@dataclass(frozen=True)
class Credentials:
    """A user and password for HTTP Basic authentication (RFC 7617)."""

    user: str
    password: str

    def __post_init__(self) -> None:
        # RFC 7617 section 2: a user-id containing a colon cannot be told apart from the password.
        if ":" in self.user:
            raise LocalProtocolError(
                f"user {self.user!r} contains a colon, which basic authentication cannot carry"
            )

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=<hidden>)"

    @property
    def token(self) -> bytes:
        """``user:password`` in UTF-8, the bytes Basic authentication encodes."""
        return f"{self.user}:{self.password}".encode()

    def authorization(self) -> bytes:
        """The ``Authorization`` header's value."""
        return b"Basic " + base64.b64encode(self.token)


# --- the client side ------------------------------------------------------------------------------


class NeedData(Enum):
    """More bytes are needed before anything can be said (h11's ``NEED_DATA``)."""

    NEED_DATA = "need-data"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True)
class HttpReply:
    """A complete HTTP response to a control request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Whether the connection may carry the next request (persistent, not closed by either side).
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The first header named ``name`` (case-insensitive), if any."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


def _decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("ascii").lower(), value.decode("latin-1")) for name, value in headers)


class ClientConnection:
    """One client connection, sans-IO: requests out as bytes, responses in as bytes, kept alive.

    ``send_command`` gives the bytes to write; feed what is read to ``receive_data`` (``b""`` at end of
    file) until ``next_reply`` returns an :class:`HttpReply`; then, if ``reusable``, ``start_next_cycle`` and
    send the next command.
    """

    def __init__(
        self,
        url: ControlUrl,
        *,
        credentials: Credentials | None = None,
        keep_alive: bool = True,
        fast_path: bool = True,
    ) -> None:
        self.url = url
        self.fast_path = fast_path
        self.credentials = credentials
        self.keep_alive = keep_alive
        self._conn = h11.Connection(h11.CLIENT)
        self._status: int | None = None
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self._body = bytearray()
        self._received = 0
        self._eof = False
        # The fast path (see _fast_reply): the request h11 has not been shown yet, and the reply read
        # without it.
        self._unseen: tuple[list[tuple[bytes, bytes]], bytes] | None = None
        self._fast: HttpReply | None = None

    @property
    def received(self) -> int:
        """Bytes received for the current response."""
        return self._received

    @property
    def reusable(self) -> bool:
        """Whether both sides finished the last exchange and the connection can carry another."""
        if self._eof:
            return False  # a body ended by the server's close, or a close after it: the connection is gone
        if self._fast is not None:
            return True
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def send_command(
        self, command: str, arguments: object = None, *, service: Sequence[str] | None = None
    ) -> bytes:
        """The bytes of a control request for ``command``.

        Raises:
            LocalProtocolError: the arguments cannot be encoded, or the connection is not idle.
        """
        body = encode_request(Request(command, arguments, tuple(service) if service is not None else None))
        return self.send_body(body)

    def send_body(self, body: bytes) -> bytes:
        """The bytes of a control request carrying ``body`` (a command document) as it is."""
        headers = [
            (b"Host", self.url.host_header.encode("idna")),
            (b"Content-Type", JSON_CONTENT_TYPE.encode()),
            (b"Content-Length", str(len(body)).encode()),
            (b"Accept", JSON_CONTENT_TYPE.encode()),
            (b"User-Agent", _USER_AGENT),
        ]
        if self.credentials is not None:
            headers.append((b"Authorization", self.credentials.authorization()))
        if not self.keep_alive:
            headers.append((b"Connection", b"close"))
        self._status = None
        self._body = bytearray()
        self._received = 0
        if (
            self.fast_path
            and self.keep_alive
            and self._conn.our_state is h11.IDLE
            and self._conn.their_state is h11.IDLE
            and not self._conn.trailing_data[0]
            and self._unseen is None
            and self._fast is None
            and _FAST_TARGET.fullmatch(self.url.path.encode())
        ):
            # What h11 would write (a test holds them equal); h11 is shown the request only if the reply
            # needs it (see _show_h11).
            self._unseen = (headers, body)
            fields = [name + b": " + value + b"\r\n" for name, value in headers]
            return b"".join([b"POST ", self.url.path.encode(), b" HTTP/1.1\r\n", *fields, b"\r\n", body])
        try:
            data = self._conn.send(h11.Request(method="POST", target=self.url.path.encode(), headers=headers))
            data = (data or b"") + (self._conn.send(h11.Data(data=body)) or b"")
            data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as error:
            raise LocalProtocolError(f"cannot send a request to {self.url}: {error}") from None
        self._status = None
        self._body = bytearray()
        self._received = 0
        return data

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the server; ``b""`` means it closed the connection."""
        self._received += len(data)
        self._eof = self._eof or not data
        if self._unseen is not None and self._fast is None and data and self._received == len(data):
            self._fast = _fast_reply(data)
            if self._fast is not None:
                return
        self._show_h11()
        self._conn.receive_data(data)

    def _show_h11(self) -> None:
        """Let h11 see the request the fast path sent, so that it can read the reply the slow way."""
        unseen, self._unseen = self._unseen, None
        if unseen is None:
            return
        headers, body = unseen
        self._conn.send(h11.Request(method="POST", target=self.url.path.encode(), headers=headers))
        self._conn.send(h11.Data(data=body))
        self._conn.send(h11.EndOfMessage())

    def next_reply(self) -> HttpReply | NeedData:
        """The complete response, or :data:`NEED_DATA`.

        Raises:
            TruncatedReplyError: the server closed before the response was complete.
            BadReplyError: the bytes are not an HTTP response.
        """
        if self._fast is not None:
            return self._fast
        if self._unseen is not None:
            return NEED_DATA  # nothing received yet
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as error:
                if self._eof:
                    # Whatever h11 says of it, the bytes ended before a complete response.
                    raise self._truncated() from None
                raise BadReplyError(
                    f"bad http response from {self.url}: {error}", url=str(self.url)
                ) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if isinstance(event, h11.ConnectionClosed):
                raise self._truncated()
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue: the final response follows
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._reason = event.reason.decode("latin-1")
                self._headers = _decode_headers(event.headers)
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self._status is not None
                return HttpReply(
                    self._status,
                    self._reason,
                    self._headers,
                    bytes(self._body),
                    keep_alive=self.reusable,
                )

    def start_next_cycle(self) -> None:
        """Ready the connection for the next request (only when :attr:`reusable`)."""
        if self._fast is not None:
            self._fast = self._unseen = None  # h11 saw none of that exchange: it is still idle
            return
        self._conn.start_next_cycle()

    def _truncated(self) -> TruncatedReplyError:
        if self._received == 0:
            message = f"{self.url}: the server closed the connection without replying"
        else:
            message = (
                f"{self.url}: reply truncated: the server closed the connection after {self._received} bytes"
            )
        return TruncatedReplyError(message, url=str(self.url), received=self._received)


# The fast paths, client and server: see ServerConnection._fast_request.
_FAST_HEADER: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?)[ \t]*"
)
_FAST_DIGITS: Final = re.compile(rb"[0-9]{1,12}")
# Headers whose meaning changes how the message is framed or the connection is used: a request carrying
# one of them takes h11's full path.
_FAST_DECLINES: Final = frozenset({b"transfer-encoding", b"connection", b"expect", b"upgrade", b"te"})
_FAST_TARGET: Final = re.compile(rb"/[\x21-\x7e]*")
_FAST_STATUS_LINE: Final = re.compile(rb"HTTP/1\.1 200 ([\x21-\x7e](?:[ \x21-\x7e]*[\x21-\x7e])?)?")


def _fast_reply(data: bytes) -> HttpReply | None:
    """The response, when ``data`` is exactly one whole, plain ``200`` response; else None (h11 reads it).

    As on the server side: a strict subset of what h11 accepts (one chunk, CRLF lines, one Content-Length
    and nothing that changes framing or the connection), read as h11 reads it.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = data[:head_end].split(b"\r\n")
    status = _FAST_STATUS_LINE.fullmatch(lines[0])
    if status is None:
        return None
    headers: list[tuple[str, str]] = []
    length = None
    for line in lines[1:]:
        match = _FAST_HEADER.fullmatch(line)
        if match is None:
            return None
        name = match[1].lower()
        if name in _FAST_DECLINES:
            return None
        if name == b"content-length":
            if length is not None or not _FAST_DIGITS.fullmatch(match[2]):
                return None
            length = int(match[2])
        headers.append((name.decode("ascii"), match[2].decode("latin-1")))
    body = data[head_end + 4 :]
    if length is None or len(body) != length:
        return None
    reason = (status[1] or b"").decode("latin-1")
    return HttpReply(200, reason, tuple(headers), body, keep_alive=True)


def replies_from(reply: HttpReply, url: ControlUrl | str) -> tuple[Reply, ...]:
    """The replies in an HTTP response: one per service entry of a ``200`` list.

    A ``200`` body that is a bare map (a server that does not wrap) counts as one reply.

    Raises:
        AuthenticationError: 401 or 403 (with the body's reply when it has one).
        HttpStatusError: any other status than 200.
        BadReplyError: a 200 whose body is not a reply or a list of replies.
    """
    where = str(url)
    if reply.status != HTTPStatus.OK:
        body = _body_reply(reply.body)
        text = body.text if body is not None and body.text else reply.reason
        detail = f"http {reply.status} {text}".rstrip()
        if reply.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            realm = _realm(reply.header("www-authenticate"))
            detail += f" (realm {realm!r})" if realm else ""
            raise AuthenticationError(
                f"{where}: authentication failed: {detail}", url=where, status=reply.status, reply=body
            )
        raise HttpStatusError(f"{where}: {detail}", url=where, status=reply.status, reply=body)
    try:
        return decode_replies(reply.body)
    except RemoteProtocolError as error:
        raise BadReplyError(f"bad reply from {where}: {error}", url=where) from None


def _body_reply(body: bytes) -> Reply | None:
    try:
        replies = decode_replies(body)
    except RemoteProtocolError:
        return None
    return replies[0] if len(replies) == 1 else None


def _realm(challenge: str | None) -> str | None:
    if not challenge or not challenge.lower().startswith("basic"):
        return None
    _, found, rest = challenge.partition('realm="')
    return rest.partition('"')[0] if found else None


# --- the server side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """One user allowed in with Basic authentication; the password comes from a file the admin keeps."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"User(user={self.user!r}, password=<hidden>)"


_RESPONSE_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESPONSE_HEADER_VALUE: Final = re.compile(r"[\x21-\x7e](?:[ \t\x21-\x7e]*[\x21-\x7e])?")
# Headers the server writes itself or that change framing or the connection: an extra one would
# contradict them (two lengths, a close the connection does not do).
_RESERVED_RESPONSE_HEADERS: Final = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "www-authenticate",
    }
)


def check_response_headers(headers: Iterable[tuple[str, str]]) -> None:
    """Refuse extra response headers that are not plain fields (Kea 3's ``http-headers``).

    Raises:
        ValueError: a name that is not a token, a value with control characters (a CR LF would inject
            headers), or a header the server writes itself or that frames the response.
    """
    for name, value in headers:
        if not _RESPONSE_HEADER_NAME.fullmatch(name):
            raise ValueError(f"response header name {name!r} is not an HTTP token")
        if not _RESPONSE_HEADER_VALUE.fullmatch(value):
            raise ValueError(f"response header {name} has an empty value or one with control characters")
        if name.lower() in _RESERVED_RESPONSE_HEADERS:
            raise ValueError(f"response header {name} is the server's own to write")


def check_basic_auth(authorization: bytes | None, users: Sequence[User]) -> str | None:
    """The name of the user ``authorization`` (an ``Authorization`` header value) proves, else None.

    Every user's ``user:password`` is compared with :func:`hmac.compare_digest`, all of them every time,
    so that neither the time taken nor which comparison stops early tells a guesser how close it came.
    """
    token = _basic_token(authorization)
    # Digests of equal length: compare_digest's time then depends on neither the guess nor its length.
    given = hashlib.sha256(token if token is not None else b"").digest()
    matched: str | None = None
    for user in users:
        expected = hashlib.sha256(f"{user.user}:{user.password}".encode()).digest()
        if hmac.compare_digest(given, expected) and token is not None:
            matched = user.user
    return matched


def _basic_token(authorization: bytes | None) -> bytes | None:
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def error_body(status: HTTPStatus | int) -> bytes:
    """Kea's body for a refusal by the HTTP layer: ``{ "result": 401, "text": "Unauthorized" }``."""
    status = HTTPStatus(status)
    return json.dumps({"result": int(status), "text": status.phrase}).encode()


@dataclass(frozen=True)
class ControlRequest:
    """A complete, authenticated control request: the command and the raw document it came in."""

    request: Request
    document: bytes
    user: str | None = None


@dataclass(frozen=True)
class UndecodedRequest:
    """A complete, authenticated request whose body is too large to decode on the caller's thread."""

    document: bytes
    user: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A request refused before any command ran: answer with :meth:`ServerConnection.reject` and close."""

    status: HTTPStatus
    #: Why, in words for the server's log (the client only gets the status and its phrase, as from Kea).
    detail: str


class PeerClosed(Enum):
    """The client closed the connection between requests."""

    CLOSED = "closed"


PEER_CLOSED: Final = PeerClosed.CLOSED


_HEAD_END: Final = re.compile(rb"\n\r?\n")
"""The blank line that ends a head, as h11 finds it (bare LF lines included)."""
_FAST_REQUEST_LINE: Final = re.compile(rb"POST /[\x21-\x7e]* HTTP/1\.1")
# The response head of a 200, as h11 writes it (a test holds them byte for byte equal).
_FAST_200: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


class _Stage(StrEnum):
    HEADERS = "headers"
    BODY = "body"
    REJECTED = "rejected"


class ServerConnection:
    """One server connection, sans-IO: bytes in, control requests or rejections out, responses as bytes.

    Feed bytes with ``receive_data``; ``next_request`` returns a :class:`ControlRequest` (or, for a body of
    ``large_body`` bytes or more, an :class:`UndecodedRequest`), a :class:`Rejection`, :data:`PEER_CLOSED` or
    :data:`NEED_DATA`. Answer a request with ``reply`` or ``respond`` (then ``start_next_cycle`` if
    ``reusable``) and a rejection with ``reject``, after which the connection closes. A client that waits for
    ``100 Continue`` before its body finds it in :meth:`data_to_send` once its headers are accepted.
    """

    def __init__(
        self,
        *,
        users: Sequence[User] = (),
        realm: str = "ctrlsock",
        max_body: int = DEFAULT_MAX_REQUEST_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        large_body: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        fast_path: bool = True,
    ) -> None:
        self.users = tuple(users)
        self.fast_path = fast_path
        self.realm = realm
        self.max_body = max_body
        self.large_body = large_body
        check_response_headers(headers)
        self._extra_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        self.max_header_size = max_header_size
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        self._stage = _Stage.HEADERS
        self._body = bytearray()
        self._user: str | None = None
        self._outgoing = b""
        self._fast: ControlRequest | None = None  # taken by the fast path, not yet answered
        self._fast_data = b""
        self._fast_answered = False
        self._after_fast: list[bytes] = []  # bytes that came after it, for h11 once it has seen it
        self._fast_headers = b"".join(name + b": " + value + b"\r\n" for name, value in self._extra_headers)

    @property
    def reusable(self) -> bool:
        """Whether both sides finished and the connection can carry the client's next request."""
        if self._fast_answered:
            return True  # as h11 says until it reads a close that came meanwhile (the next cycle does)
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    @property
    def idle(self) -> bool:
        """Whether no request is under way (what an idle timeout may close without a reply)."""
        return (
            self._fast is None
            and not self._after_fast
            and self._conn.their_state is h11.IDLE
            and not self._conn.trailing_data[0]
        )

    @property
    def can_respond(self) -> bool:
        """Whether a request is being answered (a response now is valid HTTP)."""
        return self._fast is not None or self._conn.our_state is h11.SEND_RESPONSE

    @property
    def can_reject(self) -> bool:
        """Whether a refusal can still be sent (also before a request's headers are complete)."""
        return self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    @property
    def buffered(self) -> int:
        """Bytes of the request under way held so far: unparsed bytes plus the body read."""
        after = sum(len(data) for data in self._after_fast)
        return len(self._conn.trailing_data[0]) + len(self._body) + after

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the client; ``b""`` means it closed its side."""
        if self._fast is not None:
            if data and b"" in self._after_fast:
                raise RuntimeError("received close, then received more data?")  # as h11 does
            self._after_fast.append(data)  # h11 must see the fast request first
            return
        if (
            data
            and self.fast_path
            and self._fast is None
            and self._stage is _Stage.HEADERS
            and self._conn.their_state is h11.IDLE
            and self._conn.our_state is h11.IDLE
            and not self._conn.trailing_data[0]
        ):
            self._fast = self._fast_request(data)
            if self._fast is not None:
                self._fast_data = data
                return
        self._conn.receive_data(data)

    def _fast_request(self, data: bytes) -> ControlRequest | None:
        """The request, when ``data`` is exactly one whole, plain, acceptable control request; else None.

        The common case (kea-shell, curl, ``ctrlsock send``: one POST with a Content-Length body, arriving
        whole) costs h11 most of the time a command takes. This path accepts only a strict subset of what
        h11 accepts, reads it the same way (a property test feeds both the same bytes), and hands anything
        else, refusals included, to h11: it can only ever say yes to a request h11 would also take.
        """
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0 or head_end + 4 > self.max_header_size:
            return None
        lines = data[:head_end].split(b"\r\n")
        if not _FAST_REQUEST_LINE.fullmatch(lines[0]):
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            match = _FAST_HEADER.fullmatch(line)
            if match is None:
                return None
            name = match[1].lower()
            if name in headers or name in _FAST_DECLINES:
                return None
            headers[name] = match[2]
        length = headers.get(b"content-length")
        if b"host" not in headers or length is None or not _FAST_DIGITS.fullmatch(length):
            return None
        body = data[head_end + 4 :]
        if len(body) != int(length) or len(body) > self.max_body:
            return None
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != JSON_CONTENT_TYPE.encode():
            return None
        if self.large_body is not None and len(body) >= self.large_body:
            return None
        user = None
        if self.users:
            user = check_basic_auth(headers.get(b"authorization"), self.users)
            if user is None:
                return None
        try:
            request = decode_request(body)
        except RemoteProtocolError:
            return None
        return ControlRequest(request, body, user)

    def data_to_send(self) -> bytes:
        """Bytes to send now that answer no request (``100 Continue``); empty most of the time."""
        data, self._outgoing = self._outgoing, b""
        return data

    def next_request(self) -> ControlRequest | UndecodedRequest | Rejection | PeerClosed | NeedData:
        """The next thing to act on (see the class docstring)."""
        if self._stage is _Stage.REJECTED:
            return NEED_DATA
        if self._fast is not None and not self._fast_answered:
            return self._fast
        if self._stage is _Stage.HEADERS and self._head_too_large():
            return self._rejected(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as error:
                status = HTTPStatus(error.error_status_hint)
                return self._rejected(status, f"bad http request: {error}")
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return NEED_DATA
            if isinstance(event, h11.ConnectionClosed):
                return PEER_CLOSED
            if isinstance(event, h11.Request):
                rejection = self._check_head(event)
                if rejection is not None:
                    return rejection
                self._stage = _Stage.BODY
                self._body = bytearray()
                if self._conn.they_are_waiting_for_100_continue:
                    # curl sends Expect: 100-continue with a large body and waits a second for this.
                    continuation = h11.InformationalResponse(status_code=100, headers=[])
                    self._outgoing += self._conn.send(continuation) or b""
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.max_body:  # only a lying Content-Length gets here
                    return self._rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                self._stage = _Stage.HEADERS
                document, self._body = bytes(self._body), bytearray()
                if self.large_body is not None and len(document) >= self.large_body:
                    return UndecodedRequest(document, self._user)
                return self._control_request(document)

    def _head_too_large(self) -> bool:
        """Whether the request line and headers go on past ``max_header_size``.

        h11 enforces its limit only while the head is incomplete: a head that arrives whole in one read
        would pass however large it is.
        """
        if self._conn.their_state is not h11.IDLE:
            return False
        data = self._conn.trailing_data[0]
        limit = self.max_header_size
        return len(data) > limit and _HEAD_END.search(data, 0, limit + 2) is None

    def _check_head(self, event: h11.Request) -> Rejection | None:
        headers = {name.lower(): value for name, value in event.headers}
        if event.method != b"POST":
            return self._rejected(
                HTTPStatus.METHOD_NOT_ALLOWED, f"method {event.method.decode('latin-1')} is not POST"
            )
        if self.users:
            self._user = check_basic_auth(headers.get(b"authorization"), self.users)
            if self._user is None:
                return self._rejected(HTTPStatus.UNAUTHORIZED, "no valid basic authentication")
        if b"content-length" not in headers:
            # Kea reads only Content-Length bodies; a chunked body is refused before it is read.
            return self._rejected(HTTPStatus.LENGTH_REQUIRED, "no content-length")
        if int(headers[b"content-length"]) > self.max_body:  # h11 checked it is a decimal number
            return self._rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != JSON_CONTENT_TYPE.encode():
            return self._rejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "content-type is not application/json")
        return None

    def _control_request(self, document: bytes) -> ControlRequest | Rejection:
        try:
            request = decode_request(document)
        except RemoteProtocolError as error:
            return self._rejected(HTTPStatus.BAD_REQUEST, f"bad command: {error}")
        return ControlRequest(request, document, self._user)

    def _rejected(self, status: HTTPStatus, detail: str) -> Rejection:
        self._stage = _Stage.REJECTED
        return Rejection(status, detail)

    def reply(self, replies: Sequence[Reply]) -> bytes:
        """The ``200`` response carrying ``replies`` as a JSON list, as Kea wraps them."""
        return self.respond(b"[" + b",".join(encode_reply(reply) for reply in replies) + b"]")

    def respond(self, body: bytes, *, close: bool = False) -> bytes:
        """The ``200`` response carrying ``body``, an encoded JSON list of replies.

        Args:
            close: say ``Connection: close`` (the server is stopping): the connection is then not reusable.
        """
        if self._fast is not None and not close:
            self._fast_answered = True
            return b"".join((_FAST_200, str(len(body)).encode(), b"\r\n", self._fast_headers, b"\r\n", body))
        if self._fast is not None:
            self._feed_fast_to_h11()  # h11 writes a closing response only for a request it has seen
        extra = [(b"Connection", b"close")] if close else []
        return self._respond(HTTPStatus.OK, body, extra)

    def _feed_fast_to_h11(self) -> None:
        # Re-read through h11 the request the fast path took, so that h11 can write a response that closes
        # the connection (rare: the server is stopping).
        self._fast, data, self._fast_data = None, self._fast_data, b""
        self._conn.receive_data(data)
        while self._conn.their_state is not h11.DONE:
            if self._conn.next_event() is h11.NEED_DATA:
                break
        self._release_after_fast()

    def _release_after_fast(self) -> None:
        after, self._after_fast = self._after_fast, []
        for data in after:
            if self._conn.their_state is h11.CLOSED:
                break  # h11 takes nothing after the end of the stream
            self._conn.receive_data(data)

    def reject(self, rejection: Rejection) -> bytes:
        """The response for a rejection, with Kea's body; the connection closes after it."""
        if self._fast is not None:
            self._feed_fast_to_h11()
        headers: list[tuple[bytes, bytes]] = [(b"Connection", b"close")]
        if rejection.status is HTTPStatus.UNAUTHORIZED:
            headers.append((b"WWW-Authenticate", f'Basic realm="{self.realm}"'.encode()))
        return self._respond(rejection.status, error_body(rejection.status), headers)

    def _respond(self, status: HTTPStatus, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        headers = [
            (b"Content-Type", JSON_CONTENT_TYPE.encode()),
            (b"Content-Length", str(len(body)).encode()),
            *self._extra_headers,
            *extra,
        ]
        head = self._conn.send(h11.Response(status_code=int(status), headers=headers, reason=status.phrase))
        # h11 passes a Content-Length body through untouched: join it with the head once (a reply may be
        # tens of MiB), rather than concatenating pieces.
        parts = [head or b"", *(self._conn.send_with_data_passthrough(h11.Data(data=body)) or ())]
        parts.append(self._conn.send(h11.EndOfMessage()) or b"")
        return b"".join(parts)

    def start_next_cycle(self) -> None:
        """Ready the connection for the client's next request (only when :attr:`reusable`)."""
        if self._fast_answered:
            self._fast, self._fast_data, self._fast_answered = None, b"", False
            self._release_after_fast()  # h11 never saw that exchange: it is still idle
            return
        self._conn.start_next_cycle()
