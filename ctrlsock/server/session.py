"""Per-connection protocol state, with no I/O: bytes in, events out, then a reply out.

One request per connection, as Kea does it: the session frames the first JSON document out of whatever
chunks arrive. Like h11, bytes go in through :meth:`Session.receive_data` (``b""`` means the peer closed)
and :meth:`Session.next_event` says what happened: :data:`NEED_DATA`, a :class:`~ctrlsock.protocol.Request`,
an :class:`Unparsed` document (a large one, which the engine decodes off its I/O thread), or
:class:`Rejected` (the encoded Kea error reply for bytes that are not a request). The session then holds
the encoded reply and how much of it the socket took. The engine owns the sockets, the clock and the
timers; this class only knows bytes, which is what lets the tests drive it without sockets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from ctrlsock.errors import RemoteProtocolError
from ctrlsock.protocol import (
    JsonFeed,
    Reply,
    Request,
    Result,
    decode_request,
    encode_reply,
    error_reply,
    timeout_text,
)

__all__ = [
    "NEED_DATA",
    "Event",
    "NeedData",
    "Rejected",
    "Session",
    "Unparsed",
    "decode_unparsed",
    "quick_request",
    "timeout_reply",
]

_EMPTY: Final = memoryview(b"")

LARGE_REQUEST: Final = 256 * 1024
"""Documents at least this big are handed out undecoded: ``json.loads`` of a million-key request takes
most of a second, which must not be spent on the thread that serves every other client."""


class NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA: Final = NeedData.NEED_DATA
"""More bytes are needed (or, after EOF, the peer sent nothing at all: nothing to answer)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The bytes cannot be a request: send ``reply`` (Kea's error text) and close.

    Over HTTP, ``status`` is the response's status (400, 401, ...) and ``reply`` its bare-map body.
    """

    reply: bytes
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A whole, framed request too large to decode on the I/O thread: :func:`decode_unparsed` it elsewhere."""

    document: bytes


Event: TypeAlias = NeedData | Request | Rejected | Unparsed


def decode_unparsed(document: bytes) -> Request | Rejected:
    try:
        return decode_request(document)
    except RemoteProtocolError as error:
        return Rejected(encode_reply(error_reply(error)))


def timeout_reply(discarded: int) -> bytes:
    """Kea's inactivity-timer reply: its exact text, plus the size of a partial command it discards."""
    return encode_reply(Reply(Result.ERROR, timeout_text(discarded)))


def quick_request(data: bytes, max_depth: int | None) -> Request | None:
    """The request when one chunk is exactly one whole JSON object (the common case), else ``None``.

    A shortcut past the framer that gives the same answer it would: a chunk that starts with ``{``, ends
    with ``}`` and parses as one JSON value *is* the first document, with nothing before or after it. The
    depth limit is kept by counting every bracket (an upper bound of the nesting). Anything else (leading
    whitespace or comments, trailing bytes, a split or invalid request) returns ``None`` and goes through
    :class:`JsonFeed`, which then produces Kea's exact error text.
    """
    if data[:1] != b"{" or data[-1:] != b"}":
        return None
    if max_depth is not None and data.count(b"{") + data.count(b"[") > max_depth:
        return None
    try:
        return decode_request(data)
    except RemoteProtocolError:
        return None


class Session:
    """One connection's protocol state: reading a request, then writing one reply.

    Engines subclass it to attach their socket (one object per connection, not two).

    Writing: :meth:`start_reply` takes the encoded reply once; :attr:`pending` is the unsent tail, a
    ``memoryview`` into that one buffer (never a re-sliced copy, so a 64 MiB reply costs one copy however
    slowly it drains); :meth:`advance` records what the socket took.
    """

    __slots__ = ("_chunk", "_feed", "_max_depth", "_max_size", "_offset", "_reply", "received")

    def __init__(self, max_size: int | None, max_depth: int | None) -> None:
        self._max_size = max_size
        self._max_depth = max_depth
        self._feed: JsonFeed | None = None  # made only when a request does not come whole in one chunk
        self._chunk: bytes | None = None  # a first chunk not yet looked at
        self._reply: memoryview = _EMPTY
        self._offset = 0
        self.received = 0

    # --- reading -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer (``b""`` at EOF); then ask :meth:`next_event`."""
        first = not self.received and self._feed is None and self._chunk is None
        self.received += len(data)
        if first and data:
            self._chunk = data  # maybe a whole request: next_event tries the shortcut first
            return
        feed = self._start_feed()
        if feed is None:
            return  # EOF before any byte
        feed.receive_data(data)

    def _start_feed(self) -> JsonFeed | None:
        feed = self._feed
        if feed is None:
            chunk, self._chunk = self._chunk, None
            if chunk is None:
                return None
            feed = self._feed = JsonFeed(max_size=self._max_size, max_depth=self._max_depth)
            feed.receive_data(chunk)
        return feed

    def next_event(self, *, quick: bool = True) -> Event:
        """What the bytes so far amount to.

        Args:
            quick: try :func:`quick_request` on a first chunk (the engine passes ``False`` when it already
                did).
        """
        chunk = self._chunk
        if (
            chunk is not None
            and quick
            and self._feed is None
            and len(chunk) < LARGE_REQUEST
            and (self._max_size is None or len(chunk) <= self._max_size)
        ):
            request = quick_request(chunk, self._max_depth)
            if request is not None:
                self._chunk = None
                return request
        feed = self._start_feed()
        if feed is None:
            return NEED_DATA
        try:
            document = feed.next_document()
        except RemoteProtocolError as error:
            return Rejected(encode_reply(error_reply(error)))
        if document is None:
            return NEED_DATA
        self._feed = None  # the request bytes are no longer needed
        if len(document) >= LARGE_REQUEST:
            return Unparsed(document)
        return decode_unparsed(document)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete request held so far (what a timeout reply says it discards)."""
        if self._chunk is not None:
            return len(self._chunk)
        return 0 if self._feed is None else self._feed.buffered

    def timeout_reply(self) -> bytes:
        """The reply for a client that went quiet before finishing its request."""
        return timeout_reply(self.buffered)

    # --- writing -----------------------------------------------------------------------------------

    def start_reply(self, reply: bytes) -> None:
        """Hold the encoded reply; the feed (and any request bytes in it) is no longer needed."""
        self._feed = None
        self._chunk = None
        self._reply = memoryview(reply)
        self._offset = 0

    @property
    def pending(self) -> memoryview:
        """The unsent tail of the reply (a view, no copy)."""
        return self._reply[self._offset :]

    @property
    def reply_size(self) -> int:
        return len(self._reply)

    @property
    def sent(self) -> int:
        return self._offset

    def advance(self, count: int) -> bool:
        """Record that the socket took ``count`` more bytes; True when the whole reply is out."""
        self._offset += count
        return self._offset >= len(self._reply)

    def release_reply(self) -> None:
        """Drop the reference to the reply buffer (the connection is done, or being dropped)."""
        self._reply = _EMPTY
        self._offset = 0
