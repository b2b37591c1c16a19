"""The Kea-compatible command channel, sans-IO: framing, requests, replies, result codes, limits.

Nothing here touches a socket or makes a syscall: bytes go in through :meth:`JsonFeed.receive_data`
(``b""`` means the peer closed), complete documents come out of :meth:`JsonFeed.next_document`, and
:func:`decode_request` / :func:`encode_reply` turn them into values and back. The server and the client
both build on it, so both speak the same dialect of Kea's wire protocol.

Wire facts this module follows, measured on Kea 2.2.0 (``kea-dhcp4``, ``socat UNIX:PATH -,ignoreeof``):

- One JSON document per connection, no length prefix. Kea's JSONFeed skips leading whitespace (space, tab,
  CR, LF only) and ``#``, ``//``, ``/* */`` comments, also inside the document, and counts brackets outside
  string literals; the request ends when the depth returns to 0 and anything after it is ignored.
- A bad very first byte gets ``invalid first character X``; a bad byte after leading whitespace or comments
  gets ``invalid character X``; a ``/`` not starting a comment gets ``invalid characters /X``.
- Validation errors are prefixed ``Error during command processing: ``; an unknown command gets result 2 and
  ``'NAME' command not supported.``
- Kea treats every byte as a character, so raw non-UTF-8 bytes in strings never fail; we decode with
  ``surrogateescape``, which gives the very same bytes back when encoded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, TypeAlias

from ctrlsock.errors import LocalProtocolError, RemoteProtocolError, ReplyError

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_WRITE_DEADLINE",
    "PROCESSING_ERROR_PREFIX",
    "TIMEOUT_TEXT",
    "JsonFeed",
    "JsonValue",
    "Reply",
    "Request",
    "Result",
    "decode_replies",
    "decode_reply",
    "decode_request",
    "describe_result",
    "encode_reply",
    "encode_request",
    "error_reply",
    "timeout_text",
    "unsupported_reply",
]

#: Kea has no size limit at all. 64 MiB admits the largest ``config-set`` documents we know of (tens of
#: thousands of subnets and host reservations are a few tens of MiB) while bounding what one client can
#: make a daemon hold.
DEFAULT_MAX_REQUEST_SIZE: Final = 64 * 1024 * 1024
#: Kea 3.x caps nesting at 100; Kea 2.2 crashed on 200,000-deep nesting. Real commands nest < 15 deep.
DEFAULT_MAX_DEPTH: Final = 100
#: Kea 2.2's control channel inactivity timer.
DEFAULT_IDLE_TIMEOUT: Final = 10.0
#: How long a reply may make no progress before the reader is dropped (Kea has none and truncates).
DEFAULT_WRITE_DEADLINE: Final = 60.0
TIMEOUT_TEXT: Final = "Connection over control channel timed out"
PROCESSING_ERROR_PREFIX: Final = "Error during command processing: "

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""Any JSON value, as :func:`json.loads` returns it: narrow it with ``isinstance`` before use.

A reply's ``arguments`` have this type, so a type checker makes the caller check the shape a server
sent instead of trusting it (``reply.arguments["pid"]`` is an error until ``arguments`` is known to be a
``dict``).
"""


class Result(IntEnum):
    """Kea's result codes (``CONTROL_RESULT_*``)."""

    SUCCESS = 0
    ERROR = 1
    UNSUPPORTED = 2
    EMPTY = 3
    CONFLICT = 4
    FATAL = 5


@dataclass(frozen=True)
class Request:
    """One command as it travels on the wire.

    Attributes:
        command: The command name (any string, even empty: Kea answers ``'' command not supported.``).
        arguments: Any JSON value, ``None`` when absent (Kea treats ``null`` and absent alike).
        service: The ``service`` list kea-ctrl-agent forwards, ``None`` when absent.
        remote_address: The ``remote-address`` kea-ctrl-agent adds, ``None`` when absent.
    """

    command: str
    arguments: Any = None
    service: tuple[str, ...] | None = None
    remote_address: str | None = None


@dataclass(frozen=True)
class Reply:
    """One answer: a Kea result code, a text (omitted on the wire when empty) and arguments.

    Attributes:
        result: A Kea result code (:class:`Result`); any integer a server sent is kept as is.
        text: The text, ``""`` when absent (Kea leaves it out on success).
        arguments: Any JSON value, ``None`` when absent.
    """

    result: int
    text: str = ""
    arguments: JsonValue = None

    @property
    def ok(self) -> bool:
        """Whether the result is :attr:`Result.SUCCESS` (``EMPTY``, "nothing found", is not)."""
        return self.result == Result.SUCCESS

    def raise_for_result(self) -> Reply:
        """Return this reply if it succeeded, else raise :class:`~ctrlsock.errors.ReplyError` carrying it.

        For chaining: ``send_command(path, "status-get").raise_for_result().arguments``. A handler that
        lets the error propagate answers its own client with the same result, text and arguments.

        Raises:
            ReplyError: the result is not :attr:`Result.SUCCESS`, ``EMPTY`` (3) included.
        """
        if self.result != Result.SUCCESS:
            message = f"result {describe_result(self.result)}"
            raise ReplyError(f"{message}: {self.text}" if self.text else f"{message}, no text", reply=self)
        return self


# --- framing --------------------------------------------------------------------------------------

# Scanner states. Before the document (leading whitespace and comments), then inside it.
_START: Final = 0  # the very first byte of the stream
_BEFORE: Final = 1  # whitespace or a comment was seen, no document yet
_BEFORE_SLASH: Final = 2
_BEFORE_EOL_COMMENT: Final = 3
_BEFORE_C_COMMENT: Final = 4
_BEFORE_C_STAR: Final = 5
_INNER: Final = 6
_INNER_BACKSLASH: Final = 7  # an odd run of backslashes outside strings ended the data seen so far
_STRING: Final = 8
_ESCAPE: Final = 9
_SLASH: Final = 10
_EOL_COMMENT: Final = 11
_C_COMMENT: Final = 12
_C_STAR: Final = 13
_DONE: Final = 14

_WHITESPACE_RE: Final = re.compile(rb"[ \t\r\n]*")
# Inside the document: everything up to the next byte that matters outside strings, whole string
# literals included (an unfinished one stops it at its opening quote).
_INNER_SKIP_RE: Final = re.compile(rb'(?:[^"{}\[\]#/\\]++|"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+")*+')
# The rest of a string literal up to (not including) its closing quote or a final lone backslash.
_STRING_BODY_RE: Final = re.compile(rb'[^"\\]*+(?:\\[\s\S][^"\\]*+)*+')

# The fast scanner works on whole blocks with C-speed bytes methods only (no per-byte Python loop):
# - neutralize escapes: drop every ``\\`` pair, then every ``\"`` pair (left to right, as escapes pair);
# - keep only the bytes that matter outside strings plus quotes (``bytes.translate``);
# - drop ``""`` pairs: each is an empty (of special bytes) string or an empty stretch between two strings,
#   so what lies outside strings is unchanged; split the few quotes left to drop string interiors;
# - a comment start outside strings sends the block to the exact scanner; brackets are mapped to ``()``
#   and innermost pairs removed pass by pass: what is left, ``)``*a ``(``*b, says whether the depth can
#   reach 0 in this block (a >= depth) and bounds the deepest point (depth + passes + b).
# Where the block might end the document or break the depth limit, the exact scanner decides.
_SKELETON_DELETE: Final = bytes(sorted(set(range(256)) - set(b'"{}[]#/')))
_PARENS: Final = bytes.maketrans(b"{[}]", b"(())")
_FAST_BLOCK: Final = 256 * 1024
_FAST_MIN: Final = 512
_FAST_MAX_PASSES: Final = 32

_UNLIMITED: Final = 1 << 62


def _char(byte: int) -> str:
    # Kea prints the offending byte as a one-byte character; its JSON writer then shows a non-ASCII byte
    # as \u00XX, which is what chr() of the byte gives once we encode the reply. A NUL ends Kea's C
    # string, so its text just stops there ("invalid first character ").
    return chr(byte) if byte else ""


class JsonFeed:
    """Find where each JSON document ends in a byte stream, the way Kea's JSONFeed does.

    Feed bytes as they arrive with :meth:`receive_data` (``b""`` once the peer closed), then call
    :meth:`next_document`: it returns the first complete document (comments removed, as Kea does) or
    ``None`` when more data is needed. Bytes after a document are kept: a further call frames the next
    document from them, and a server that wants Kea's behaviour simply never asks.

    Brackets are counted outside string literals; a backslash escapes the next byte inside strings, and
    outside strings (where JSON allows no backslash at all) ``\\\\`` and ``\\"`` are taken as pairs too, which
    can only change where an invalid request is cut. The scan is incremental and works on large blocks
    with C-level bytes methods, so a 50 MiB request is framed at well over 50 MB/s.

    Args:
        max_size: Largest document in bytes, counted from the first byte after the previous document
            (leading whitespace and comments included); ``None`` for no limit.
        max_depth: Deepest bracket nesting allowed; ``None`` for no limit (the depth is counted, never
            recursed into, so any depth is safe to frame).

    Raises:
        RemoteProtocolError: from :meth:`next_document`, with Kea's texts; the feed stays failed and raises
            the same error again.
    """

    def __init__(
        self, max_size: int | None = DEFAULT_MAX_REQUEST_SIZE, max_depth: int | None = DEFAULT_MAX_DEPTH
    ) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self._buf = bytearray()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._fast_block = _FAST_BLOCK
        self._fast_min = _FAST_MIN
        self._reset()

    def _reset(self) -> None:
        self._state = _START
        self._pos = 0  # next byte to scan, an index into _buf
        self._depth = 0
        self._doc_start = -1
        self._comment_start = -1
        self._cuts: list[tuple[int, int]] = []  # comment ranges inside the document, removed on output

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a document (Kea's ``partial command of N bytes``)."""
        return len(self._buf)

    @property
    def eof(self) -> bool:
        """Whether :meth:`receive_data` was given ``b""``."""
        return self._eof

    @property
    def started(self) -> bool:
        """Whether the current document has begun (its first ``{`` or ``[`` was seen)."""
        return self._doc_start >= 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side (end of file)."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of file")
        self._buf += data

    def next_document(self) -> bytes | None:
        """Return the next complete JSON document, or ``None`` if more data is needed.

        Raises:
            RemoteProtocolError: the bytes cannot be a request (Kea's texts), a limit was exceeded, or the
                peer closed before a document was complete.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_document()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _next_document(self) -> bytes | None:
        buf = self._buf
        max_size = _UNLIMITED if self.max_size is None else self.max_size
        limit = min(len(buf), max_size)
        self._scan(limit)
        if self._state == _DONE:
            return self._take_document()
        if self._pos >= max_size:
            raise RemoteProtocolError(f"command too large: more than {max_size} bytes")
        if self._eof:
            if self._doc_start < 0:
                raise RemoteProtocolError(
                    f"connection closed before a JSON document began ({len(buf)} bytes received)"
                )
            raise RemoteProtocolError(
                f"connection closed before the end of the JSON document ({len(buf)} bytes received)"
            )
        return None

    def _take_document(self) -> bytes:
        buf = self._buf
        end = self._pos
        pieces: list[bytes] = []
        start = self._doc_start
        for cut_start, cut_end in self._cuts:
            pieces.append(bytes(buf[start:cut_start]))
            start = cut_end
        pieces.append(bytes(buf[start:end]))
        document = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        del buf[:end]
        self._reset()
        return document

    # -- scanning ----------------------------------------------------------------------------------

    def _scan(self, limit: int) -> None:
        size = self._fast_block
        while self._pos < limit and self._state != _DONE:
            state = self._state
            if state in (_INNER, _STRING) and limit - self._pos >= self._fast_min:
                end = min(self._pos + size, limit)
                if self._scan_fast(end):
                    # Grow back gradually: where comments are frequent, the block size settles near the
                    # distance between them instead of failing on a full block each time.
                    size = min(size * 2, self._fast_block)
                    continue
                if size > self._fast_min:
                    # The document may end, nest too deep, or hold a comment in this block: narrow it
                    # down so the exact scanner only walks a small piece.
                    size = max(size // 2, self._fast_min)
                    continue
                self._scan_exact(min(self._pos + size, limit))
            else:
                # Leave the exact scanner as soon as the fast one can take over again.
                self._scan_exact(limit, leave_early=True)

    def _scan_fast(self, end: int) -> bool:
        """Consume ``_buf[_pos:end]`` if it neither ends the document, breaks a limit, nor holds a comment."""
        block = bytes(self._buf[self._pos : end])
        if b"\\" in block:
            block = block.replace(b"\\\\", b"").replace(b'\\"', b"")
        skeleton = block.translate(None, _SKELETON_DELETE)
        in_string = self._state == _STRING
        quotes = skeleton.count(b'"')
        if quotes:
            reduced = skeleton.replace(b'""', b"")
            if b'"' in reduced:
                parts = reduced.split(b'"')
                outside = b"".join(parts[1::2] if in_string else parts[0::2])
            else:
                # An even number of quotes went, so the parity of what remains is unchanged: none left
                # means we are outside strings wherever a special byte was kept.
                outside = reduced if not in_string else b""
        else:
            outside = b"" if in_string else skeleton
        if b"#" in outside or b"/" in outside:
            return False
        depth = self._depth
        if outside:
            brackets = outside.translate(_PARENS)
            max_depth = _UNLIMITED if self.max_depth is None else self.max_depth
            passes = 0
            budget = max_depth - depth
            while b"()" in brackets:
                passes += 1
                if passes > budget or passes > _FAST_MAX_PASSES:
                    # Each pass costs a sweep of the block: deep nesting goes to the exact scanner.
                    return False
                brackets = brackets.replace(b"()", b"")
            closes = brackets.count(b")")
            opens = len(brackets) - closes
            if closes >= depth or depth + passes + opens > max_depth:
                return False
            depth += opens - closes
        self._depth = depth
        if quotes % 2:
            in_string = not in_string
        if block.endswith(b"\\"):
            self._state = _ESCAPE if in_string else _INNER_BACKSLASH
        else:
            self._state = _STRING if in_string else _INNER
        self._pos = end
        return True

    def _scan_exact(self, end: int, *, leave_early: bool = False) -> None:
        """Kea's JSONFeed state machine, one token at a time, over ``_buf[_pos:end]``.

        With ``leave_early``, return once an escape, a comment or the document's first bracket is behind
        us, back in a state the fast scanner handles.
        """
        buf = self._buf
        pos = self._pos
        state = self._state
        depth = self._depth
        max_depth = _UNLIMITED if self.max_depth is None else self.max_depth
        try:
            while pos < end:
                if state == _INNER:
                    match = _INNER_SKIP_RE.match(buf, pos, end)
                    assert match is not None  # the pattern matches the empty string
                    pos = match.end()
                    if pos == end:
                        break
                    byte = buf[pos]
                    pos += 1
                    if byte in b"{[":
                        depth += 1
                        if depth > max_depth:
                            raise RemoteProtocolError(f"JSON nesting too deep: more than {max_depth} levels")
                    elif byte in b"}]":
                        depth -= 1
                        if depth == 0:
                            state = _DONE
                            break
                    elif byte == 0x22:  # "
                        state = _STRING
                    elif byte == 0x23:  # #
                        self._comment_start = pos - 1
                        state = _EOL_COMMENT
                    elif byte == 0x2F:  # /
                        self._comment_start = pos - 1
                        state = _SLASH
                    else:  # a backslash outside strings
                        state = _INNER_BACKSLASH
                elif state == _STRING:
                    match = _STRING_BODY_RE.match(buf, pos, end)
                    assert match is not None  # the pattern matches the empty string
                    pos = match.end()
                    if pos == end:
                        break
                    state = _INNER if buf[pos] == 0x22 else _ESCAPE
                    pos += 1
                elif state == _ESCAPE:
                    pos += 1
                    state = _STRING
                    if leave_early:
                        break
                elif state == _INNER_BACKSLASH:
                    if buf[pos] in b'\\"':
                        pos += 1
                    state = _INNER
                    if leave_early:
                        break
                elif state in (_START, _BEFORE):
                    match = _WHITESPACE_RE.match(buf, pos, end)
                    assert match is not None
                    if match.end() > pos:
                        pos = match.end()
                        state = _BEFORE
                        continue
                    byte = buf[pos]
                    pos += 1
                    if byte in b"{[":
                        self._doc_start = pos - 1
                        depth = 1
                        state = _INNER
                        if leave_early:
                            break
                    elif byte == 0x23:
                        state = _BEFORE_EOL_COMMENT
                    elif byte == 0x2F:
                        state = _BEFORE_SLASH
                    elif state == _START:
                        raise RemoteProtocolError(f"invalid first character {_char(byte)}")
                    else:
                        raise RemoteProtocolError(f"invalid character {_char(byte)}")
                elif state in (_SLASH, _BEFORE_SLASH):
                    byte = buf[pos]
                    pos += 1
                    inner = state == _SLASH
                    if byte == 0x2A:  # *
                        state = _C_COMMENT if inner else _BEFORE_C_COMMENT
                    elif byte == 0x2F:
                        state = _EOL_COMMENT if inner else _BEFORE_EOL_COMMENT
                    else:
                        raise RemoteProtocolError(f"invalid characters /{_char(byte)}")
                elif state in (_EOL_COMMENT, _BEFORE_EOL_COMMENT):
                    newline = buf.find(b"\n", pos, end)
                    if newline < 0:
                        pos = end
                        break
                    pos = newline + 1
                    if state == _EOL_COMMENT:
                        # Kea drops the comment and keeps the newline.
                        self._cuts.append((self._comment_start, newline))
                        state = _INNER
                        if leave_early:
                            break
                    else:
                        state = _BEFORE
                elif state in (_C_COMMENT, _BEFORE_C_COMMENT):
                    close = buf.find(b"*/", pos, end)
                    if close >= 0:
                        pos = close + 2
                        state = self._end_c_comment(state == _C_COMMENT, pos)
                        if leave_early and state == _INNER:
                            break
                    else:
                        star = buf[end - 1] == 0x2A
                        pos = end
                        if star:
                            state = _C_STAR if state == _C_COMMENT else _BEFORE_C_STAR
                else:  # _C_STAR, _BEFORE_C_STAR: the previous byte was a '*' inside a comment
                    byte = buf[pos]
                    pos += 1
                    inner = state == _C_STAR
                    if byte == 0x2F:
                        state = self._end_c_comment(inner, pos)
                        if leave_early and state == _INNER:
                            break
                    elif byte != 0x2A:
                        state = _C_COMMENT if inner else _BEFORE_C_COMMENT
        finally:
            self._pos = pos
            self._state = state
            self._depth = depth

    def _end_c_comment(self, inner: bool, end: int) -> int:
        if inner:
            self._cuts.append((self._comment_start, end))
            return _INNER
        return _BEFORE


# --- decoding and encoding ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity; Kea's parser (and JSON) do not.
    raise RemoteProtocolError(f"invalid JSON constant {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # Kea: "Number overflow: 1e999 in <wire>:0:42".
        raise RemoteProtocolError(f"Number overflow: {text}")
    return value


_DECODER: Final = json.JSONDecoder(strict=False, parse_constant=_reject_constant, parse_float=_parse_float)


def _loads(document: bytes | bytearray | memoryview) -> Any:
    # surrogateescape keeps raw non-UTF-8 bytes (Kea accepts them) and gives them back on encoding.
    text = bytes(document).decode("utf-8", "surrogateescape")
    try:
        return _DECODER.decode(text)
    except RemoteProtocolError:
        raise
    except json.JSONDecodeError as error:
        # Kea's form: "String expected in <wire>:0:26" (its lines count from 0, columns from 1).
        raise RemoteProtocolError(f"{error.msg} in <wire>:{error.lineno - 1}:{error.colno}") from None
    except RecursionError:
        # json recurses once per nesting level; the framer caps the depth first, this guards direct calls.
        raise RemoteProtocolError("JSON nesting too deep") from None
    except ValueError as error:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise RemoteProtocolError(f"invalid JSON: {error}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "map"


_REQUEST_KEYS: Final = frozenset({"command", "arguments", "service", "remote-address"})


def _processing_error(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(PROCESSING_ERROR_PREFIX + detail)


def decode_request(document: bytes | bytearray | memoryview) -> Request:
    """Parse and validate one request document with Kea's rules and texts.

    Kea 2.2 (``parseCommand``): the document must be a map; ``command`` is required and must be a string;
    only ``command``, ``arguments``, ``service`` and ``remote-address`` are allowed (the first other key in
    sorted order is named). Beyond Kea 2.2's daemons, which ignore them, ``service`` must be a list of
    strings and ``remote-address`` a string (``null`` counts as absent), as kea-ctrl-agent sends them.

    Raises:
        RemoteProtocolError: with the text for the error reply (result 1).
    """
    value = _loads(document)
    if not isinstance(value, dict):
        raise _processing_error("Invalid command Element specified, expected map")
    if "command" not in value:
        raise _processing_error("Invalid answer specified, does not contain mandatory 'command'")
    if len(value) > 1:
        unknown = sorted(key for key in value if key not in _REQUEST_KEYS)
        if unknown:
            raise _processing_error(f"Received command contains unsupported parameter '{unknown[0]}'")
    command = value["command"]
    if not isinstance(command, str):
        raise _processing_error("'command' element in command message is not a string")
    service = value.get("service")
    if service is not None:
        if not isinstance(service, list):
            raise _processing_error(f"service value must be a list, not {_type_name(service)}")
        if not all(isinstance(name, str) for name in service):
            raise _processing_error("service value must be a list of strings")
        service = tuple(service)
    remote_address = value.get("remote-address")
    if remote_address is not None and not isinstance(remote_address, str):
        raise _processing_error(f"remote-address value must be a string, not {_type_name(remote_address)}")
    return Request(command, value.get("arguments"), service, remote_address)


def _dumps(value: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise LocalProtocolError(f"cannot encode as JSON: {error}") from None
    try:
        # Strings decoded with surrogateescape go back to their original bytes.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A lone surrogate that did not come from a raw byte (e.g. from "\ud800" on the wire).
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def encode_request(request: Request) -> bytes:
    """Encode a request as one compact JSON document (``null`` members left out)."""
    if not isinstance(request.command, str):
        raise LocalProtocolError(f"'command' must be a string, not {_type_name(request.command)}")
    value: dict[str, Any] = {"command": request.command}
    if request.arguments is not None:
        value["arguments"] = request.arguments
    if request.service is not None:
        value["service"] = list(request.service)
    if request.remote_address is not None:
        value["remote-address"] = request.remote_address
    return _dumps(value)


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply once: ``{"result":N,"text":"...","arguments":...}``, compact.

    ``text`` is left out when empty and ``arguments`` when ``None``, as Kea does.

    Raises:
        LocalProtocolError: the result is not an int, or the arguments are not JSON-serializable.
    """
    result = reply.result
    if isinstance(result, bool) or not isinstance(result, int):
        raise LocalProtocolError(f"'result' must be an integer, not {_type_name(result)}")
    value: dict[str, Any] = {"result": int(result)}
    if reply.text:
        value["text"] = reply.text
    if reply.arguments is not None:
        value["arguments"] = reply.arguments
    return _dumps(value)


def decode_reply(document: bytes | bytearray | memoryview) -> Reply:
    """Parse one reply document; a list of exactly one reply (kea-ctrl-agent's form) is unwrapped.

    Raises:
        RemoteProtocolError: the document is not a map with an integer ``result`` and, when present, a
            string ``text``.
    """
    value = _loads(document)
    if isinstance(value, list):
        if len(value) != 1:
            raise RemoteProtocolError(f"reply is a list of {len(value)} replies, expected exactly one")
        value = value[0]
    return _reply_from(value)


def decode_replies(document: bytes | bytearray | memoryview) -> tuple[Reply, ...]:
    """Parse a reply document that may be a list of replies, one per service (Kea's HTTP form).

    A bare map is one reply; a list gives its replies in order (an empty list, none).

    Raises:
        RemoteProtocolError: the document, or an entry of the list, is not a valid reply.
    """
    value = _loads(document)
    if isinstance(value, list):
        return tuple(_reply_from(entry) for entry in value)
    return (_reply_from(value),)


def _reply_from(value: Any) -> Reply:
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"reply must be a map, not {_type_name(value)}")
    if "result" not in value:
        raise RemoteProtocolError("reply has no 'result'")
    result = value["result"]
    if isinstance(result, bool) or not isinstance(result, int):
        raise RemoteProtocolError(f"reply 'result' must be an integer, not {_type_name(result)}")
    text = value.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise RemoteProtocolError(f"reply 'text' must be a string, not {_type_name(text)}")
    return Reply(result, text, value.get("arguments"))


def describe_result(result: int) -> str:
    """A result code with its name: ``2 (unsupported)``; a code Kea does not define says so."""
    try:
        name = Result(result).name.lower()
    except ValueError:
        name = "not a kea result code"
    return f"{result} ({name})"


def error_reply(error: RemoteProtocolError) -> Reply:
    """The reply Kea sends for a request it could not frame or validate."""
    return Reply(error.result, error.message)


def unsupported_reply(command: str) -> Reply:
    """Kea's answer to an unknown command: result 2, ``'NAME' command not supported.``"""
    return Reply(Result.UNSUPPORTED, f"'{command}' command not supported.")


def timeout_text(discarded: int = 0) -> str:
    """Kea's idle-timeout text, naming the partial request dropped if any."""
    if discarded:
        return f"{TIMEOUT_TEXT}, discarded partial command of {discarded} bytes"
    return TIMEOUT_TEXT
