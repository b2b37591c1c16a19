"""Per-connection protocol state, with no I/O: bytes in, a request or an error reply out, then a reply out.

One request per connection, as Kea does it (DESIGN.md section 4): the session frames the first JSON document
out of whatever chunks arrive, hands back the decoded request (or the encoded Kea error reply when the bytes
are not a valid request), then holds the encoded reply and how much of it the socket took. The engines
(``engine.py`` for selectors/threads, ``aio.py`` for asyncio) own the sockets, the clock and the timers; this
class only knows bytes, which is what lets both engines share it and the tests drive it without sockets.
"""

from __future__ import annotations

from typing import Final

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

__all__ = ["Session", "quick_request", "timeout_reply"]

_EMPTY: Final = memoryview(b"")


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

    Reading: :meth:`receive_data` returns ``None`` while more bytes are needed, the :class:`Request` once
    one is complete, or the encoded error reply (``bytes``) when the peer broke the protocol; ``b""`` means
    the peer closed its side. Writing: :meth:`start_reply` takes the encoded reply once; :attr:`pending`
    is the unsent tail, a ``memoryview`` into that one buffer (never a re-sliced copy, so a 64 MiB reply
    costs one copy however slowly it drains); :meth:`advance` records what the socket took.
    """

    __slots__ = ("_feed", "_max_depth", "_max_size", "_offset", "_reply", "received")

    def __init__(self, max_size: int | None, max_depth: int | None) -> None:
        self._max_size = max_size
        self._max_depth = max_depth
        self._feed: JsonFeed | None = None  # made only when a request does not come whole in one chunk
        self._reply: memoryview = _EMPTY
        self._offset = 0
        self.received = 0

    # --- reading -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes, *, quick: bool = True) -> Request | bytes | None:
        """Feed bytes from the peer (``b""`` at EOF).

        Args:
            data: the bytes.
            quick: try :func:`quick_request` on a first chunk (the engine passes ``False`` when it already
                did).

        Returns:
            ``None`` when more data is needed (or, after EOF, when the peer sent nothing at all: the engine
            then just closes), the :class:`Request` when it is complete, or the encoded Kea error reply.
        """
        first = not self.received
        self.received += len(data)
        feed = self._feed
        if feed is None:
            if not data:
                return None  # closed without a byte: nothing to answer
            if first and quick and (self._max_size is None or len(data) <= self._max_size):
                request = quick_request(data, self._max_depth)
                if request is not None:
                    return request
            feed = self._feed = JsonFeed(max_size=self._max_size, max_depth=self._max_depth)
        try:
            feed.receive_data(data)
            document = feed.next_document()
            if document is None:
                return None
            return decode_request(document)
        except RemoteProtocolError as error:
            return encode_reply(error_reply(error))

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete request held so far (what a timeout reply says it discards)."""
        return 0 if self._feed is None else self._feed.buffered

    def timeout_reply(self) -> bytes:
        """The reply for a client that went quiet before finishing its request."""
        return timeout_reply(self.buffered)

    # --- writing -----------------------------------------------------------------------------------

    def start_reply(self, reply: bytes) -> None:
        """Hold the encoded reply; the feed (and any request bytes in it) is no longer needed."""
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
