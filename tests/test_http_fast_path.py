"""The HTTP fast paths against h11's full path: the same bytes fed to both sides, both ways.

The promise under test (``ServerConnection._fast_request``, ``_fast_reply`` on the client): a fast path
accepts only a strict subset of what h11 accepts and reads it the same way, and what it writes is what h11
writes. So for any bytes, a connection with the fast path and one without (``fast_path=False``) must give
the same events, the same response bytes and the same keep-alive decisions, through a whole exchange and
the next one. Requests and responses come from a grammar of the odd things HTTP peers send (casing,
whitespace, duplicates, framing headers, bare LF, obs-fold, non-ASCII, wrong lengths, wrong passwords),
then from random mutations of those.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ctrlsock.errors import CtrlSockError
from ctrlsock.http_protocol import (
    NEED_DATA,
    ClientConnection,
    ControlRequest,
    ControlUrl,
    Credentials,
    HttpReply,
    Rejection,
    Scheme,
    ServerConnection,
    User,
    check_response_headers,
    parse_control_url,
)

USERS = (User("admin", "s3cret"), User("ünï", "pa:ss wörd"))
URL = parse_control_url("http://127.0.0.1:8000/")
FUZZ = settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])

# --- the server side: requests -------------------------------------------------------------------------

_BODIES = [
    b'{"command": "version-get"}',
    b'{"command":"config-get","arguments":{"a":[1,2,{"b":null}]},"service":["dhcp4"]}',
    b'{"command": "x", "arguments": {"s": "\xc3\xa9t\xc3\xa9"}}',
    b'{"command": "x", "remote-address": "192.0.2.1"}',
    b'{"command": "version-get"',  # cut short
    b'{"arguments": {}}',  # not a command
    b"[1, 2]",
    b"not json",
    b"\xff\xfe{}",
    b"",
    b'{"command": "x", "arguments": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}',
]


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


_AUTHORIZATIONS = [
    _basic("admin", "s3cret"),
    b"basic " + base64.b64encode(b"admin:s3cret"),
    b"BASIC   " + base64.b64encode(b"admin:s3cret") + b"  ",
    _basic("ünï", "pa:ss wörd"),
    _basic("admin", "wrong"),
    _basic("nobody", "s3cret"),
    b"Basic not-base64!",
    b"Bearer abc",
    b"Basic",
    b"",
]

_NAMES = {
    "host": ["Host", "host", "HOST", "hOsT"],
    "content-type": ["Content-Type", "content-type", "CONTENT-TYPE"],
    "content-length": ["Content-Length", "content-length", "CoNtEnT-lEnGtH"],
    "authorization": ["Authorization", "authorization"],
}
_CONTENT_TYPES = [
    b"application/json",
    b"Application/JSON",
    b"application/json; charset=utf-8",
    b"application/json ;charset=utf-8",
    b"application/jsonx",
    b"text/plain",
    b"",
    b"application/json\xc3\xa9",
]
_EXTRA_HEADERS = [
    (b"Transfer-Encoding", b"chunked"),
    (b"transfer-encoding", b"identity"),
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive"),
    (b"connection", b"Upgrade"),
    (b"Upgrade", b"websocket"),
    (b"Expect", b"100-continue"),
    (b"TE", b"trailers"),
    (b"Accept", b"application/json"),
    (b"User-Agent", b"kea-shell/2.2"),
    (b"X-Odd", b"a\tb  c"),
    (b"X-Empty", b""),
    (b"X-Latin", b"caf\xe9"),
    (b"X-Ctl", b"a\x7fb"),
    (b"X!#$%&'*+-.^_`|~", b"token chars"),
    (b"Bad Name", b"x"),
    (b"", b"no name"),
]


_ODDITIES = (
    "extra", "extra", "extra",
    "method", "target", "version", "space", "length", "host", "content-type", "authorization", "extra",
    "duplicate", "separator", "trailing", "fold", "line-end", "blank", "casing", "order", "body",
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One HTTP request: a plain control request with up to three odd things about it."""
    odd = draw(st.sets(st.sampled_from(_ODDITIES), max_size=draw(st.sampled_from([0, 1, 1, 1, 2, 3]))))

    def pick(kind: str, usual: Any, others: Sequence[Any]) -> Any:
        return draw(st.sampled_from(others)) if kind in odd else usual

    body = draw(st.sampled_from(_BODIES if "body" in odd else _BODIES[:4]))
    method = pick("method", b"POST", [b"post", b"GET", b"PUT", b"POST\t"])
    target = pick(
        "target", b"/", [b"/x", b"/a/b?c=d", b"*", b"http://h:8000/", b"/caf\xc3\xa9", b"/a%20b", b"/\x7f"]
    )
    version = pick("version", b"HTTP/1.1", [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])
    space = pick("space", b" ", [b"  ", b"\t"])
    request_line = method + space + target + b" " + version

    length_value = pick(
        "length", "right", ["more", "less", "zeros", "list", "sign", "spaces", "huge", "none"]
    )
    true_length = len(body)
    length = {
        "right": str(true_length).encode(),
        "more": str(true_length + 1).encode(),
        "less": str(max(true_length - 1, 0)).encode(),
        "zeros": b"000" + str(true_length).encode(),
        "list": f"{true_length}, {true_length}".encode(),
        "sign": f"+{true_length}".encode(),
        "spaces": f"  {true_length}\t".encode(),
        "huge": b"99999999999999",
        "none": b"",
    }[length_value]

    def name(kind: str) -> bytes:
        return pick("casing", _NAMES[kind][0], _NAMES[kind]).encode()  # type: ignore[no-any-return]

    fields: list[tuple[bytes, bytes]] = []
    if "host" not in odd:
        fields.append((name("host"), b"127.0.0.1:8000"))
    content_type = pick("content-type", b"application/json", [*_CONTENT_TYPES[1:], None])
    if content_type is not None:
        fields.append((name("content-type"), content_type))
    if length_value != "none":
        fields.append((name("content-length"), length))
    authorization = draw(
        st.sampled_from(_AUTHORIZATIONS if "authorization" in odd else [_AUTHORIZATIONS[0], None])
    )
    if authorization is not None:
        fields.append((name("authorization"), authorization))
    if "extra" in odd:
        # Mostly those that change framing or the connection: what the fast path must leave to h11.
        framing = st.sampled_from(_EXTRA_HEADERS[:8])
        fields += draw(st.lists(framing | framing | st.sampled_from(_EXTRA_HEADERS), min_size=1, max_size=2))
    else:
        fields += draw(st.lists(st.sampled_from(_EXTRA_HEADERS[8:11]), max_size=2))
    if "duplicate" in odd:
        fields.append(draw(st.sampled_from(fields)))
    if "order" in odd:
        fields = draw(st.permutations(fields))

    lines = [request_line]
    for field_name, value in fields:
        separator = pick("separator", b": ", [b":", b":  ", b":\t", b" : ", b" :"])
        trailing = pick("trailing", b"", [b" ", b"\t", b" \t "])
        line = field_name + separator + value + trailing
        if "fold" in odd and draw(st.booleans()):
            line += b"\r\n folded"  # obs-fold
        lines.append(line)
    ends = [pick("line-end", b"\r\n", [b"\r\n", b"\n", b"\r", b"\r\r\n"]) for _ in lines]
    head = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    blank = pick("blank", b"\r\n", [b"\n", b"\r\n\r\n", b" \r\n"])
    return bytes(head + blank + body)


_FRAMING = {b"connection", b"content-length", b"content-type", b"transfer-encoding"}
_MUTANT_BYTES = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"\x80", b"\xff", b"0", b"A", b",", b";"]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base``'s bytes with a few random insertions, deletions, replacements and repeats."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(_MUTANT_BYTES) | st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


_OPTIONS: list[dict[str, Any]] = [
    {},
    {"users": USERS, "realm": "kea"},
    {"max_body": 40},
    {"large_body": 30},
    {"max_header_size": 1024, "headers": [("Strict-Transport-Security", "max-age=31536000")]},
]
_SECOND_REQUESTS = [
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n"
    b'{"command": "version-get"}',
    # chunked: refused with 411 (Kea reads only Content-Length bodies)
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'1a\r\n{"command": "version-get"}\r\n0\r\n\r\n',
    # Expect: 100-continue, headers first (a 100 Continue is owed)
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 26\r\n"
    b"Expect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"",  # the client closes
]


def _outcome(step: Callable[[], object]) -> object:
    """What a step gave, or the class of what it raised (both paths must raise alike, if at all)."""
    try:
        return step()
    except Exception as error:  # any exception: compared by class between the paths
        return ("raised", type(error).__name__)


def _server_transcript(
    fast_path: bool,
    *,
    options: dict[str, Any],
    first: bytes,
    pipelined: Sequence[bytes],
    later: bytes,
    close: bool,
) -> list[object]:
    """Feed ``first``, then ``pipelined`` before answering, answer, then ``later``: everything seen."""
    conn = ServerConnection(fast_path=fast_path, **options)
    seen: list[object] = []

    def drain() -> None:
        # Until the connection says it needs more (or stops): events, and what it would send.
        for _ in range(4):
            event = _outcome(conn.next_request)
            seen.append(event)
            seen.append(("send", conn.data_to_send(), conn.idle, conn.can_respond, conn.can_reject))
            if isinstance(event, ControlRequest):
                seen.append(_outcome(lambda: conn.respond(b'[{"result": 0}]', close=close)))
                seen.append(("reusable", conn.reusable))
                if not conn.reusable:
                    return
                conn.start_next_cycle()
                seen.append(("idle", conn.idle, conn.buffered))
            elif isinstance(event, Rejection):
                seen.append(_outcome(lambda event=event: conn.reject(event)))  # type: ignore[misc]
                seen.append(("reusable", conn.reusable))
                return
            else:
                return

    seen.append(_outcome(lambda: conn.receive_data(first)))
    event = _outcome(conn.next_request)
    seen.append(event)
    for data in pipelined:  # a client sending on before its first request is answered
        seen.append(_outcome(lambda data=data: conn.receive_data(data)))  # type: ignore[misc]
    if isinstance(event, ControlRequest):
        seen.append(_outcome(lambda: conn.respond(b"[]", close=close)))
        seen.append(("reusable", conn.reusable))
        if conn.reusable:
            conn.start_next_cycle()
            drain()
    elif isinstance(event, Rejection):
        seen.append(_outcome(lambda: conn.reject(event)))
        return seen
    else:
        drain()
    if conn.reusable or conn.idle:
        seen.append(_outcome(lambda: conn.receive_data(later)))
        drain()
    return seen


def _check_server(data: bytes, options: dict[str, Any]) -> None:
    fast = ServerConnection(**options)
    slow = ServerConnection(fast_path=False, **options)
    fast.receive_data(data)
    slow.receive_data(data)
    got_fast = _outcome(fast.next_request)
    got_slow = _outcome(slow.next_request)
    # Taken by the fast path or not, the answer is h11's: the same request, from the same user.
    assert got_fast == got_slow, f"{data!r}: the fast-path connection gave {got_fast!r}, h11 {got_slow!r}"
    if not isinstance(got_fast, ControlRequest):
        return
    taken = fast._fast is not None
    assert fast.respond(b"[]") == slow.respond(b"[]")
    assert fast.reusable == slow.reusable
    if fast.reusable:
        fast.start_next_cycle()
        slow.start_next_cycle()
        state = [(conn.idle, conn.buffered, _outcome(conn.next_request)) for conn in (fast, slow)]
        assert state[0] == state[1]
        if taken:
            # What the fast path takes is one whole request: h11 too read every byte of it.
            assert state[1] == (True, 0, NEED_DATA)


@FUZZ
@given(requests(), st.sampled_from(_OPTIONS))
def test_the_fast_path_takes_a_request_only_as_h11_reads_it(data: bytes, options: dict[str, Any]) -> None:
    _check_server(data, options)


@pytest.mark.parametrize("extra", [name + b": " + value + b"\r\n" for name, value in _EXTRA_HEADERS[:10]])
def test_a_plain_request_with_one_more_header_is_read_alike(extra: bytes) -> None:
    _check_server(_post(b'{"command": "version-get"}', extra=extra), {})
    _check_server(_post(b'{"command": "version-get"}', extra=extra), {"users": USERS})


@FUZZ
@given(mutated(requests()), st.sampled_from(_OPTIONS))
def test_mutated_requests_are_read_alike_by_both_paths(data: bytes, options: dict[str, Any]) -> None:
    _check_server(data, options)


def test_the_grammar_reaches_both_paths() -> None:
    """The generators above are worth something only if the fast path takes some of what they make and
    declines some that h11 still takes: count both over a fixed sample."""
    taken = declined_but_accepted = 0
    for data in _sample(requests(), 300):
        fast = ServerConnection()
        fast.receive_data(data)
        slow = ServerConnection(fast_path=False)
        slow.receive_data(data)
        if isinstance(slow.next_request(), ControlRequest):
            if fast._fast is not None:
                taken += 1
            else:
                declined_but_accepted += 1
    assert taken >= 20, taken
    assert declined_but_accepted >= 20, declined_but_accepted


def _sample(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(max_examples=count, database=None, derandomize=True)
    @given(strategy)
    def collect(data: bytes) -> None:
        found.append(data)

    collect()
    return found


@FUZZ
@given(
    requests() | mutated(requests()),
    st.lists(st.sampled_from([*_SECOND_REQUESTS, b"POST / HT", b"\r\n"]), max_size=2),
    st.sampled_from(_SECOND_REQUESTS),
    st.booleans(),
    st.sampled_from(_OPTIONS),
)
@example(first=_SECOND_REQUESTS[0], pipelined=[], later=_SECOND_REQUESTS[1], close=False, options={})
def test_a_whole_exchange_and_the_next_go_alike_on_both_paths(
    first: bytes, pipelined: list[bytes], later: bytes, close: bool, options: dict[str, Any]
) -> None:
    """A fast exchange, then the client's next request taking h11's path (chunked, 100-continue, a
    refusal, a close), also with bytes pipelined before the first answer: same events, same bytes."""
    fast = _server_transcript(
        True, options=options, first=first, pipelined=pipelined, later=later, close=close
    )
    slow = _server_transcript(
        False, options=options, first=first, pipelined=pipelined, later=later, close=close
    )
    assert fast == slow


@pytest.mark.parametrize(
    "pipelined",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Le",  # the start of a next request
        _SECOND_REQUESTS[0],  # a whole next request
        b"",  # the client shuts down its side, waiting for the answer
    ],
)
@pytest.mark.parametrize("answer", ["respond-close", "reject"])
def test_bytes_after_a_fast_request_do_not_change_how_it_is_answered(pipelined: bytes, answer: str) -> None:
    """A client may send its next request before the first is answered. The fast path's request then
    goes to h11 only when it is answered with a close (a stopping server) or refused: h11 must read it
    before those later bytes, as the connection without the fast path does."""
    transcripts = []
    for fast_path in (True, False):
        conn = ServerConnection(fast_path=fast_path)
        conn.receive_data(_SECOND_REQUESTS[0])
        first = conn.next_request()
        assert isinstance(first, ControlRequest)
        conn.receive_data(pipelined)
        if answer == "respond-close":
            sent = _outcome(lambda conn=conn: conn.respond(b"[]", close=True))  # type: ignore[misc]
        else:
            sent = _outcome(lambda conn=conn: conn.reject(Rejection(HTTPStatus.REQUEST_TIMEOUT, "t")))  # type: ignore[misc]
        transcripts.append((sent, conn.reusable, conn.can_respond))
    assert transcripts[0] == transcripts[1]


def _plain_field(header: tuple[bytes, bytes]) -> bool:
    """A header a listener accepts among its extra response headers (others are refused up front)."""
    try:
        check_response_headers([(header[0].decode(), header[1].decode())])
    except ValueError:
        return False
    return True


@given(
    st.binary(min_size=0, max_size=3000),
    st.lists(
        st.tuples(
            st.from_regex(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}\Z"),
            st.from_regex(rb"\A[\x21-\x7e]+( [\x21-\x7e]+)*\Z"),
        ).filter(_plain_field),
        max_size=3,
    ),
)
def test_the_fast_200_is_byte_for_byte_h11s(body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(name.decode(), value.decode()) for name, value in extra]
    request = _post(b'{"command": "version-get"}')
    responses = []
    for fast_path in (True, False):
        conn = ServerConnection(headers=headers, fast_path=fast_path)
        conn.receive_data(request)
        assert isinstance(conn.next_request(), ControlRequest)
        assert (conn._fast is not None) is fast_path  # the fast path did take it
        responses.append((conn.respond(body), conn.reusable))
    assert responses[0] == responses[1]


@pytest.mark.parametrize(
    "header",
    [
        ("Connection", "close"),
        ("Content-Length", "3"),
        ("Transfer-Encoding", "chunked"),
        ("X-Injected", "a\r\nSet-Cookie: x=1"),
        ("Bad Name", "x"),
    ],
)
def test_extra_headers_that_frame_close_or_break_the_response_are_refused_or_answered_alike(
    header: tuple[str, str],
) -> None:
    """An admin's ``http-headers`` entry that h11 would act on or refuse must not make the fast 200
    differ from h11's: either such a header is refused when the connection is made, or both paths send
    the same bytes and agree on keeping the connection."""
    try:
        connections = [ServerConnection(headers=[header], fast_path=fast_path) for fast_path in (True, False)]
    except (ValueError, CtrlSockError, h11.LocalProtocolError):
        return  # refused up front: fine
    responses = []
    for conn in connections:
        conn.receive_data(_post(b'{"command": "version-get"}'))
        assert isinstance(conn.next_request(), ControlRequest)
        responses.append((_outcome(lambda conn=conn: conn.respond(b"[]")), conn.reusable))  # type: ignore[misc]
    assert responses[0] == responses[1]


def _post(body: bytes, path: bytes = b"/", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def test_a_fast_request_with_users_names_the_user_as_h11_does() -> None:
    for authorization, user in ((_basic("admin", "s3cret"), "admin"), (_basic("ünï", "pa:ss wörd"), "ünï")):
        data = _post(b'{"command": "version-get"}', extra=b"Authorization: " + authorization + b"\r\n")
        fast = ServerConnection(users=USERS)
        fast.receive_data(data)
        found = fast.next_request()
        assert fast._fast is not None  # the fast path took it
        assert isinstance(found, ControlRequest) and found.user == user
        slow = ServerConnection(users=USERS, fast_path=False)
        slow.receive_data(data)
        assert slow.next_request() == found


# --- the client side ------------------------------------------------------------------------------------

_PATHS = ["/", "/x", "/a/b", "/a?b", "/caf%C3%A9", "/é", "/a b", "", "x", "/\t"]


@given(
    st.sampled_from(_PATHS),
    st.sampled_from([Scheme.HTTP, Scheme.HTTPS]),
    st.sampled_from(["127.0.0.1", "::1", "localhost", "bücher.example"]),
    st.sampled_from([80, 443, 8000]),
    st.none() | st.builds(Credentials, st.text(min_size=1).filter(lambda user: ":" not in user), st.text()),
    st.booleans(),
    st.sampled_from(
        [("version-get", None, None), ("config-get", {"a": [1, "é"]}, None), ("x", None, ["dhcp4", "d6"])]
    ),
)
def test_both_paths_send_the_same_request_bytes(  # noqa: PLR0917  (one parameter per strategy)
    path: str,
    scheme: Scheme,
    host: str,
    port: int,
    credentials: Credentials | None,
    keep_alive: bool,
    command: tuple[str, Any, list[str] | None],
) -> None:
    url = ControlUrl(scheme, host, port, path)
    name, arguments, service = command
    sent = []
    for fast_path in (True, False):
        conn = ClientConnection(url, credentials=credentials, keep_alive=keep_alive, fast_path=fast_path)
        first = _outcome(lambda conn=conn: conn.send_command(name, arguments, service=service))  # type: ignore[misc]
        # The same again after a reply (a kept-alive connection's second request).
        second: object = None
        if isinstance(first, bytes):
            conn.receive_data(_response(b"[]"))
            reply = conn.next_reply()
            second = ("not reusable", reply)
            if conn.reusable:
                conn.start_next_cycle()
                second = _outcome(lambda conn=conn: conn.send_command(name, arguments, service=service))  # type: ignore[misc]
        sent.append((first, second))
    assert sent[0] == sent[1]


def _response(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body
    )


_REPLY_BODIES = [
    b'[{"result": 0, "text": "2.2.0"}]',
    b"[]",
    b"",
    b'{ "result": 401, "text": "Unauthorized" }',
]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """One HTTP response to a control request, plausible with something odd, maybe with bytes after it."""
    body = draw(st.sampled_from(_REPLY_BODIES))
    status_line = draw(
        st.sampled_from(
            [b"HTTP/1.1 200 OK"] * 6
            + [
                b"HTTP/1.1 200 ",
                b"HTTP/1.1 200",
                b"HTTP/1.1 200 All good here",
                b"HTTP/1.1 200 OK ",
                b"HTTP/1.1 200  OK",
                b"HTTP/1.1 200 \xc3\xa9",
                b"HTTP/1.1 200 O\tK",
                b"HTTP/1.0 200 OK",
                b"http/1.1 200 OK",
                b"HTTP/1.1 401 Unauthorized",
                b"HTTP/1.1 500 Internal Server Error",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
                b"HTTP/1.1 2000 OK",
            ]
        )
    )
    framing = draw(st.sampled_from(["length"] * 6 + ["wrong", "twice", "list", "chunked", "none", "both"]))
    fields: list[bytes] = []
    length = str(len(body)).encode()
    if framing in ("length", "twice", "both"):
        fields.append(
            draw(st.sampled_from([b"Content-Length: ", b"content-length:", b"CONTENT-LENGTH:\t"])) + length
        )
    if framing == "twice":
        fields.append(b"Content-Length: " + length)
    if framing == "wrong":
        fields.append(b"Content-Length: " + str(len(body) + draw(st.sampled_from([1, -1]))).encode())
    if framing == "list":
        fields.append(b"Content-Length: " + length + b", " + length)
    if framing in ("chunked", "both"):
        fields.append(b"Transfer-Encoding: chunked")
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    fields.append(
        draw(st.sampled_from([b"Content-Type: application/json", b"content-type:application/json"]))
    )
    fields += draw(
        st.lists(
            st.sampled_from(
                [
                    b"Connection: close",
                    b"Connection: keep-alive",
                    b"connection: Keep-Alive",
                    b'WWW-Authenticate: Basic realm="kea-control-agent"',
                    b"Date: Tue, 01 Dec 2026 10:00:00 GMT",
                    b"X-Odd:   spaced  value\t",
                    b"X-Dup: 1",
                    b"x-dup: 2",
                    b"X-Latin: caf\xe9",
                    b" folded continuation",
                    b"Bad Header",
                    b"Upgrade: h2c",
                ]
            ),
            max_size=3,
        )
    )
    fields = draw(st.permutations(fields))
    end = draw(st.sampled_from([b"\r\n"] * 10 + [b"\n"]))
    response = status_line + b"\r\n" + b"".join(field + end for field in fields) + b"\r\n" + body
    trailing = draw(st.sampled_from([b""] * 4 + [b"HTTP/1.1 200 OK\r\n", b"x", _response(b"[]")]))
    return response + trailing


def _client_transcript(fast_path: bool, chunks: Sequence[bytes], eof: bool) -> list[object]:
    conn = ClientConnection(URL, fast_path=fast_path)
    seen: list[object] = [conn.send_command("version-get")]
    reply: object = NEED_DATA
    for chunk in [*chunks, *([b""] if eof else [])]:
        conn.receive_data(chunk)
        reply = _outcome(conn.next_reply)
        seen.append(_reply_fields(reply))
        if reply is not NEED_DATA:
            break
    seen.append(("reusable", conn.reusable))
    if isinstance(reply, HttpReply) and conn.reusable:
        # The next exchange on the same connection.
        conn.start_next_cycle()
        seen.append(_outcome(lambda: conn.send_command("status-get")))
        seen.append(_outcome(lambda: conn.receive_data(_response(b"[]"))))
        seen.append(_reply_fields(_outcome(conn.next_reply)))
    return seen


def _reply_fields(reply: object) -> object:
    if isinstance(reply, HttpReply):
        return (reply.status, reply.reason, reply.headers, reply.body, reply.keep_alive)
    return reply


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)] or [b""]


@FUZZ
@given(
    responses() | mutated(responses()),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=3),
    st.booleans(),
)
@example(_response(b"[]"), [], False)
@example(_response(b"[]"), [], True)
@example(_response(b"[]", headers=b"Connection: close\r\n"), [], False)
def test_both_paths_read_a_response_alike(data: bytes, cuts: list[int], eof: bool) -> None:
    chunks = _cut(data, cuts)
    assert _client_transcript(True, chunks, eof) == _client_transcript(False, chunks, eof)


def test_the_client_fast_path_is_taken_for_a_plain_200() -> None:
    """Otherwise the comparisons above would compare h11 with itself."""
    conn = ClientConnection(URL)
    conn.send_command("version-get")
    conn.receive_data(_response(b'[{"result": 0}]'))
    assert conn._fast is not None
    reply = conn.next_reply()
    assert isinstance(reply, HttpReply) and reply.keep_alive and json.loads(reply.body) == [{"result": 0}]


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_reply_ended_by_the_servers_close_is_not_kept_alive(fast_path: bool) -> None:
    """A 200 with neither Content-Length nor chunked ends where the server closes: the connection is gone,
    so the reply must not say it can carry another request (h11 calls such a response keep-alive)."""
    conn = ClientConnection(URL, fast_path=fast_path)
    conn.send_command("version-get")
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[]")
    assert conn.next_reply() is NEED_DATA
    conn.receive_data(b"")
    reply = conn.next_reply()
    assert isinstance(reply, HttpReply) and reply.body == b"[]"
    assert not reply.keep_alive
    assert not conn.reusable
