"""The sans-IO session: framing, error replies and reply bookkeeping without sockets (h11's way)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrlsock.protocol import JsonFeed, Request, decode_request
from ctrlsock.server.session import Session, quick_request, timeout_reply


def session() -> Session:
    return Session(max_size=1 << 20, max_depth=100)


def feed_all(chunks: list[bytes]) -> Request | bytes | None:
    s = session()
    for chunk in chunks:
        result = s.receive_data(chunk)
        if result is not None:
            return result
    return s.receive_data(b"")


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
        result = s.receive_data(data[index : index + 1])
        if result is not None:
            assert isinstance(result, Request | bytes)
            if isinstance(result, bytes):
                assert json.loads(result)["result"] == 1
            return
    final = s.receive_data(b"")
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
    assert session().receive_data(b"") is None


def test_eof_after_partial_request_is_an_error_reply() -> None:
    s = session()
    assert s.receive_data(b'{"command": "x"') is None
    reply = s.receive_data(b"")
    assert isinstance(reply, bytes)
    assert json.loads(reply)["result"] == 1


def test_timeout_reply_names_the_discarded_bytes() -> None:
    s = session()
    s.receive_data(b'{"comm')
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
