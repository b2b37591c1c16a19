"""One HTTP control connection's protocol state for the engine, with no I/O.

The engine reads and writes every connection the same way; what differs is here. A unix
:class:`~.session.Session` frames one JSON document and closes after its reply; an :class:`HttpSession` takes
requests from :class:`~ctrlsock.http_protocol.ServerConnection` (h11 underneath), gives the engine the same
events (a :class:`~ctrlsock.protocol.Request`, :class:`~.session.Unparsed` for a large body,
:class:`~.session.Rejected` with the HTTP status), and frames each encoded reply as Kea's HTTP layer does:
a ``200`` whose body is a one-entry JSON list, or a refusal's bare ``{"result": status, "text": phrase}``.
After a reply the connection carries the client's next request (HTTP/1.1 keep-alive) unless either side
said close.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

from ctrlsock.http_protocol import (
    PEER_CLOSED,
    ControlRequest,
    Rejection,
    ServerConnection,
    UndecodedRequest,
    User,
    error_body,
)
from ctrlsock.protocol import Request

from .session import LARGE_REQUEST, NEED_DATA, Event, Rejected, Unparsed, decode_unparsed

__all__ = ["HttpSession"]

_BAD_REQUEST: Final = int(HTTPStatus.BAD_REQUEST)
REQUEST_TIMEOUT: Final = int(HTTPStatus.REQUEST_TIMEOUT)


class HttpSession:
    """The HTTP side of one connection: bytes in, the engine's events out, replies framed as responses."""

    __slots__ = ("_http", "closed_by_peer", "rejected_detail", "user")

    def __init__(
        self,
        *,
        users: Sequence[User],
        realm: str,
        max_body: int,
        max_header_size: int,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        self._http = ServerConnection(
            users=users,
            realm=realm,
            max_body=max_body,
            max_header_size=max_header_size,
            large_body=LARGE_REQUEST,
            headers=headers,
        )
        self.user: str | None = None  # who the current request authenticated as
        self.rejected_detail = ""  # why the last request was refused, for the server's log
        self.closed_by_peer = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.closed_by_peer = True
        self._http.receive_data(data)

    def next_event(self) -> Event:
        """The next request (or refusal), or ``NEED_DATA`` (also when the client closed between requests)."""
        found = self._http.next_request()
        if isinstance(found, ControlRequest):
            self.user = found.user
            return found.request
        if isinstance(found, UndecodedRequest):
            self.user = found.user
            return Unparsed(found.document)
        if isinstance(found, Rejection):
            self.rejected_detail = found.detail
            if self.closed_by_peer:
                return NEED_DATA  # cut off mid-request: nobody is left to tell
            return Rejected(error_body(found.status), int(found.status))
        if found is PEER_CLOSED:
            self.closed_by_peer = True
        return NEED_DATA

    @staticmethod
    def decode(document: bytes) -> Request | Rejected:
        """A large body, decoded off the I/O thread: a request, or 400 as for a small one."""
        event = decode_unparsed(document)
        if isinstance(event, Rejected):
            return Rejected(error_body(_BAD_REQUEST), _BAD_REQUEST)
        return event

    def data_to_send(self) -> bytes:
        """``100 Continue`` for a client that waits for it before its body, else nothing."""
        return self._http.data_to_send()

    @property
    def buffered(self) -> int:
        """Bytes of the request under way held so far."""
        return self._http.buffered

    @property
    def request_started(self) -> bool:
        """Whether bytes of a request have arrived (its request timeout runs), rather than none yet."""
        return not self._http.idle

    def frame(self, reply: bytes, status: int | None, *, close: bool) -> bytes:
        """The response for ``reply`` (an encoded Kea reply), or for a refusal with HTTP ``status``.

        Empty when no request is being answered (a reply to a client that sent nothing yet, such as the
        stop's "shutting down"): HTTP has no way to say it, so the engine just closes.
        """
        http = self._http
        if status is not None:
            # Also before the headers are whole: a client trickling them gets its 408.
            if not http.can_reject:
                return b""
            return http.reject(Rejection(HTTPStatus(status), self.rejected_detail))
        if not http.can_respond:
            return b""
        return http.respond(b"[" + reply + b"]", close=close)

    @property
    def reusable(self) -> bool:
        """Whether the response went out and the connection can carry the next request."""
        return self._http.reusable

    def start_next_cycle(self) -> None:
        self.user = None
        self.rejected_detail = ""
        self._http.start_next_cycle()
