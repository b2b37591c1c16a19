"""The sans-IO session: framing, error replies and reply bookkeeping without sockets (h11's way)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrlsock.protocol import JsonFeed, Request, decode_request
from ctrlsock.server.session import (
    LARGE_REQUEST,
    NEED_DATA,
    Rejected,
    Session,
    Unparsed,
    decode_unparsed,
    quick_request,
    timeout_reply,
)


def session() -> Session:
    return Session(max_size=1 << 20, max_depth=100)


def step(s: Session, data: bytes) -> Request | bytes | None:
    """Feed one chunk and turn the event into what the tests compare: a request, reply bytes or None."""
    s.receive_data(data)
    event = s.next_event()
    if event is NEED_DATA:
        return None
    if isinstance(event, Unparsed):
        event = decode_unparsed(event.document)
    if isinstance(event, Rejected):
        return event.reply
    assert isinstance(event, Request)
    return event


def feed_all(chunks: list[bytes]) -> Request | bytes | None:
    s = session()
    for chunk in chunks:
        result = step(s, chunk)
        if result is not None:
            return result
    return step(s, b"")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
requests = st.builds(
    lambda command, arguments: {"command": command, **({"arguments": arguments} if arguments else {})},
    st.text(min_size=1, max_size=20),
    json_values,
)


@given(requests, st.lists(st.integers(min_value=1, max_value=50), max_size=10), st.binary(max_size=20))
def test_request_cut_anywhere_gives_the_same_request(
    request: dict[str, Any], cuts: list[int], trailing: bytes
) -> None:
    raw = json.dumps(request).encode() + trailing
    chunks = []
    position = 0
    for size in cuts:
        chunks.append(raw[position : position + size])
        position += size
    chunks.append(raw[position:])
    result = feed_all([c for c in chunks if c])
    assert isinstance(result, Request)
    assert result.command == request["command"]
    assert result.arguments == request.get("arguments")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_fed_byte_by_byte_give_a_request_a_reply_or_need_more(data: bytes) -> None:
    s = session()
    for index in range(len(data)):
        result = step(s, data[index : index + 1])
        if result is not None:
            assert isinstance(result, Request | bytes)
            if isinstance(result, bytes):
                assert json.loads(result)["result"] == 1
            return
    final = step(s, b"")
    if final is not None:
        assert isinstance(final, bytes)
        assert json.loads(final)["result"] == 1


@given(st.binary(max_size=200) | requests.map(lambda r: json.dumps(r).encode()))
def test_quick_request_agrees_with_the_framer(data: bytes) -> None:
    quick = quick_request(data, 100)
    if quick is None:
        return
    feed = JsonFeed(max_depth=100)
    feed.receive_data(data)
    document = feed.next_document()
    assert document is not None
    assert decode_request(document) == quick


def test_deep_nesting_is_a_reply_not_a_crash() -> None:
    result = feed_all([b"[" * 1_000_000])
    assert isinstance(result, bytes)
    assert json.loads(result)["result"] == 1


def test_quick_request_leaves_deep_or_padded_requests_to_the_framer() -> None:
    assert quick_request(b'{"command": "x"}', 100) == Request("x")
    assert quick_request(b' {"command": "x"}', 100) is None
    assert quick_request(b'{"command": "x"} ', 100) is None
    assert quick_request(b'{"command": "x", "arguments": ' + b"[" * 100 + b"]" * 100 + b"}", 100) is None
    assert quick_request(b'{"command": 1}', 100) is None


def test_eof_without_data_needs_no_reply() -> None:
    assert step(session(), b"") is None


def test_eof_after_partial_request_is_an_error_reply() -> None:
    s = session()
    assert step(s, b'{"command": "x"') is None
    reply = step(s, b"")
    assert isinstance(reply, bytes)
    assert json.loads(reply)["result"] == 1


def test_timeout_reply_names_the_discarded_bytes() -> None:
    s = session()
    assert step(s, b'{"comm') is None
    assert json.loads(s.timeout_reply()) == {
        "result": 1,
        "text": "Connection over control channel timed out, discarded partial command of 6 bytes",
    }
    assert json.loads(timeout_reply(0)) == {"result": 1, "text": "Connection over control channel timed out"}


def test_reply_is_kept_once_and_sent_by_offsets() -> None:
    s = session()
    reply = b"x" * 10
    s.start_reply(reply)
    assert bytes(s.pending) == reply
    assert not s.advance(4)
    assert bytes(s.pending) == reply[4:]
    assert s.pending.obj is reply  # a view into the one buffer, not a copy
    assert s.advance(6)
    s.release_reply()
    assert s.reply_size == 0


def test_a_large_request_is_handed_out_undecoded() -> None:
    # Decoding a big document is left to the engine's worker, off the thread that serves everyone.
    s = Session(max_size=None, max_depth=100)
    document = b'{"command": "config-set", "arguments": {"x": "' + b"y" * LARGE_REQUEST + b'"}}'
    s.receive_data(document[:1000])
    assert s.next_event() is NEED_DATA
    s.receive_data(document[1000:])
    event = s.next_event()
    assert isinstance(event, Unparsed)
    assert decode_unparsed(event.document) == Request("config-set", {"x": "y" * LARGE_REQUEST})


def test_a_large_request_in_one_chunk_is_handed_out_undecoded_too() -> None:
    s = Session(max_size=None, max_depth=100)
    s.receive_data(b'{"command": "x", "arguments": "' + b"y" * LARGE_REQUEST + b'"}')
    assert isinstance(s.next_event(), Unparsed)
