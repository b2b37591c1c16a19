"""The sans-IO protocol: framing like Kea's JSONFeed, Kea's validation texts, replies.

The texts asserted here were read from a real kea-dhcp4 2.2.0 (``socat UNIX:PATH -,ignoreeof``).
The framer is checked against a byte-at-a-time transcription of Kea's JSONFeed state machine below
(the oracle), fed with arbitrary bytes cut at arbitrary offsets.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrlsock.errors import CommandError, LocalProtocolError, RemoteProtocolError, ReplyError
from ctrlsock.protocol import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_REQUEST_SIZE,
    TIMEOUT_TEXT,
    JsonFeed,
    JsonValue,
    Reply,
    Request,
    Result,
    decode_reply,
    decode_request,
    describe_result,
    encode_reply,
    encode_request,
    error_reply,
    timeout_text,
    unsupported_reply,
)

# --- the oracle: Kea's JSONFeed, one byte at a time --------------------------------------------------


def kea_frame(data: bytes, *, eof: bool, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, Any]:
    """("doc", bytes) | ("error", text) | ("need", None): Kea 2.2's JSONFeed, plus ctrlsock's two
    documented rules: a depth limit, and outside strings ``\\\\`` and ``\\"`` pair up as escapes."""
    state = "start"
    depth = 0
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i : i + 1]
        if state in ("start", "before"):
            if byte in (b" ", b"\t", b"\r", b"\n"):
                state = "before"
            elif byte in (b"{", b"["):
                out += byte
                depth = 1
                state = "inner"
            elif byte == b"#":
                state = "before-eol"
            elif byte == b"/":
                state = "before-slash"
            else:
                char = chr(byte[0]) if byte[0] else ""
                word = "first character" if state == "start" else "character"
                return "error", f"invalid {word} {char}"
        elif state in ("before-slash", "slash"):
            inner = state == "slash"
            if byte == b"*":
                state = "c" if inner else "before-c"
            elif byte == b"/":
                state = "eol" if inner else "before-eol"
            else:
                return "error", f"invalid characters /{chr(byte[0]) if byte[0] else ''}"
        elif state in ("before-eol", "eol"):
            if byte == b"\n":
                if state == "eol":
                    out += b"\n"
                    state = "inner"
                else:
                    state = "before"
        elif state in ("before-c", "c"):
            if byte == b"*":
                state += "-star"
        elif state in ("before-c-star", "c-star"):
            if byte == b"/":
                state = "inner" if state == "c-star" else "before"
            elif byte != b"*":
                state = state[: -len("-star")]
        elif state == "inner":
            if byte in (b"{", b"["):
                depth += 1
                if depth > max_depth:
                    return "error", f"JSON nesting too deep: more than {max_depth} levels"
                out += byte
            elif byte in (b"}", b"]"):
                out += byte
                depth -= 1
                if depth == 0:
                    return "doc", bytes(out)
            elif byte == b'"':
                out += byte
                state = "string"
            elif byte == b"#":
                state = "eol"
            elif byte == b"/":
                state = "slash"
            elif byte == b"\\":
                out += byte
                if data[i + 1 : i + 2] in (b"\\", b'"'):
                    i += 1
                    out += data[i : i + 1]
            else:
                out += byte
        elif state == "string":
            out += byte
            if byte == b'"':
                state = "inner"
            elif byte == b"\\":
                state = "escape"
        elif state == "escape":
            out += byte
            state = "string"
        i += 1
    if eof:
        return "error", "eof"
    return "need", None


def run_feed(
    chunks: list[bytes], *, eof: bool, fast: bool, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[str, Any]:
    feed = JsonFeed(max_depth=max_depth)
    if fast:
        # Let the block scanner work on tiny blocks so that short inputs exercise it too.
        feed._fast_min = 1
        feed._fast_block = 7
    try:
        for chunk in chunks:
            feed.receive_data(chunk)
            document = feed.next_document()
            if document is not None:
                return "doc", document
        if eof:
            feed.receive_data(b"")
            document = feed.next_document()
            assert document is None
    except RemoteProtocolError as error:
        if error.message.startswith("connection closed"):
            return "error", "eof"
        return "error", error.message
    return "need", None


def cut(data: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({min(offset, len(data)) for offset in offsets})
    pieces = []
    previous = 0
    for point in [*points, len(data)]:
        pieces.append(data[previous:point])
        previous = point
    return [piece for piece in pieces if piece]


# Bytes that matter to the framer, heavily weighted, plus anything at all.
framing_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b"#", b"/", b"*", b"\n", b" ", b"a", b"\xff"]),
        st.binary(min_size=1, max_size=3),
    ),
    max_size=60,
).map(b"".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
requests = st.builds(
    Request,
    command=st.text(max_size=12),
    arguments=json_values,
    service=st.none() | st.lists(st.text(max_size=6), max_size=3).map(tuple),
    remote_address=st.none() | st.text(max_size=10),
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=framing_bytes,
    offsets=st.lists(st.integers(0, 80), max_size=6),
    eof=st.booleans(),
    fast=st.booleans(),
)
def test_framer_matches_keas_state_machine_whatever_the_cuts(
    data: bytes, offsets: list[int], eof: bool, fast: bool
) -> None:
    assert run_feed(cut(data, offsets), eof=eof, fast=fast, max_depth=4) == kea_frame(
        data, eof=eof, max_depth=4
    )


@settings(max_examples=200)
@given(data=st.binary(max_size=200), eof=st.booleans())
def test_any_bytes_fed_byte_by_byte_raise_only_remote_protocol_errors(data: bytes, eof: bool) -> None:
    feed = JsonFeed()
    try:
        for index in range(len(data)):
            feed.receive_data(data[index : index + 1])
            document = feed.next_document()
            if document is not None:
                decode_request(document)
                return
        if eof:
            feed.receive_data(b"")
            feed.next_document()
    except RemoteProtocolError as error:
        assert error.result == Result.ERROR
        assert encode_reply(error_reply(error))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(requests, min_size=1, max_size=5), offsets=st.lists(st.integers(0, 400), max_size=8))
def test_requests_cut_anywhere_frame_to_the_same_requests(batch: list[Request], offsets: list[int]) -> None:
    stream = b" \n".join(encode_request(request) for request in batch)
    feed = JsonFeed()
    framed: list[Request] = []
    for piece in cut(stream, offsets):
        feed.receive_data(piece)
        while (document := feed.next_document()) is not None:
            framed.append(decode_request(document))
    feed.receive_data(b"")
    assert framed == batch
    assert feed.buffered == 0


@given(request=requests, offsets=st.lists(st.integers(0, 400), max_size=8))
def test_one_request_per_feed_with_trailing_garbage(request: Request, offsets: list[int]) -> None:
    data = b"  # leading comment\n/* and another */ " + encode_request(request) + b"} trailing ]garbage"
    feed = JsonFeed()
    document = None
    for piece in cut(data, offsets):
        feed.receive_data(piece)
        document = feed.next_document()
        if document is not None:
            break
    assert document is not None
    assert decode_request(document) == request


@pytest.mark.parametrize("chunk", [1 << 30, 65536, 4099])
def test_million_deep_nesting_is_a_protocol_error_not_a_crash(chunk: int) -> None:
    data = b"[" * 1_000_000 + b"]" * 1_000_000
    feed = JsonFeed()
    with pytest.raises(RemoteProtocolError, match="nesting too deep: more than 100 levels"):
        for offset in range(0, len(data), chunk):
            feed.receive_data(data[offset : offset + chunk])
            feed.next_document()
    # The error sticks.
    with pytest.raises(RemoteProtocolError, match="nesting too deep"):
        feed.next_document()


def test_deep_nesting_in_direct_decode_is_a_protocol_error() -> None:
    for data in (b'{"command":"x","arguments":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}", b"[" * 100_000):
        with pytest.raises(RemoteProtocolError):
            decode_request(data)
        with pytest.raises(RemoteProtocolError):
            decode_reply(data)


def test_depth_limit_is_exact() -> None:
    for limit in (1, 5, DEFAULT_MAX_DEPTH):
        ok = b"[" * limit + b"]" * limit
        feed = JsonFeed(max_depth=limit)
        feed.receive_data(ok)
        assert feed.next_document() == ok
        feed = JsonFeed(max_depth=limit)
        feed.receive_data(b"[" * (limit + 1))
        with pytest.raises(RemoteProtocolError, match=f"more than {limit} levels"):
            feed.next_document()


def test_unlimited_depth_frames_anything_without_recursion() -> None:
    data = b"[" * 300_000 + b"]" * 300_000
    feed = JsonFeed(max_depth=None)
    feed.receive_data(data)
    assert feed.next_document() == data


def test_size_limit() -> None:
    feed = JsonFeed(max_size=10)
    feed.receive_data(b'{"a":"12"}')
    assert feed.next_document() == b'{"a":"12"}'
    feed = JsonFeed(max_size=10)
    feed.receive_data(b'{"a":"123')
    assert feed.next_document() is None
    feed.receive_data(b"4")
    with pytest.raises(RemoteProtocolError, match="command too large: more than 10 bytes"):
        feed.next_document()
    assert DEFAULT_MAX_REQUEST_SIZE >= 64 * 1024 * 1024


def test_large_request_with_strings_escapes_and_comments_frames_whole() -> None:
    entry = {"s": 'a "quoted" \\ back {[ ]} # // /* */', "n": [1, 2, {"x": None}], "u": "é\u2028"}
    body = ",\n".join(
        json.dumps(entry) + ("  // a comment\n" if index % 97 == 0 else "") for index in range(40000)
    )
    data = ('{"command":"config-set","arguments":[' + body + "]}").encode()
    for chunk in (len(data), 65536, 1000):
        feed = JsonFeed()
        document = None
        for offset in range(0, len(data), chunk):
            feed.receive_data(data[offset : offset + chunk])
            document = feed.next_document()
            if document is not None:
                break
        assert document is not None
        request = decode_request(document)
        assert len(request.arguments) == 40000
        assert request.arguments[123] == entry


# --- Kea's texts, measured on kea-dhcp4 2.2.0 -------------------------------------------------------

KEA_TEXTS = [
    (b"x", "invalid first character x"),
    (b'"abc"', 'invalid first character "'),
    (b"1", "invalid first character 1"),
    (b"\x00", "invalid first character "),
    (b"\x0b{}", "invalid first character \x0b"),
    (b"\xef\xbb\xbf{}", "invalid first character \xef"),
    (b"  \n\tx", "invalid character x"),
    (b"#c\nx", "invalid character x"),
    (b"/* c */x", "invalid character x"),
    (b"/x", "invalid characters /x"),
    (b'{"command":"version-get" /x}', "invalid characters /x"),
    (b"[1,2]", "Error during command processing: Invalid command Element specified, expected map"),
    (b"[]", "Error during command processing: Invalid command Element specified, expected map"),
    (
        b"{}",
        "Error during command processing: Invalid answer specified, does not contain mandatory 'command'",
    ),
    (
        b'{"arguments":{}}',
        "Error during command processing: Invalid answer specified, does not contain mandatory 'command'",
    ),
    (
        b'{"command":1}',
        "Error during command processing: 'command' element in command message is not a string",
    ),
    (
        b'{"command":"version-get","foo":1}',
        "Error during command processing: Received command contains unsupported parameter 'foo'",
    ),
    (
        b'{"command":"version-get","zzz":1,"aaa":2}',
        "Error during command processing: Received command contains unsupported parameter 'aaa'",
    ),
    (
        b'{"command":"x","arguments":{},"ARGUMENTS":1}',
        "Error during command processing: Received command contains unsupported parameter 'ARGUMENTS'",
    ),
    (b'{"command":"x","arguments":{"a":1e999}}', "Number overflow: 1e999"),
]


@pytest.mark.parametrize(("data", "text"), KEA_TEXTS)
def test_kea_error_texts(data: bytes, text: str) -> None:
    feed = JsonFeed()
    feed.receive_data(data)
    feed.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as caught:
        document = feed.next_document()
        assert document is not None
        decode_request(document)
    assert caught.value.message == text
    assert caught.value.result == 1
    assert (
        encode_reply(error_reply(caught.value))
        == json.dumps({"result": 1, "text": text}, ensure_ascii=False, separators=(",", ":")).encode()
    )


def test_json_syntax_errors_use_keas_position_form() -> None:
    with pytest.raises(RemoteProtocolError, match=r" in <wire>:0:26$"):
        decode_request(b'{"command":"version-get",}')


@pytest.mark.parametrize(
    "data",
    [
        b'#c\n{"command":"version-get"}',
        b'// c\n{"command":"version-get"}',
        b'/* c */{"command":"version-get"}',
        b'/*/ {"command":"x"} */{"command":"version-get"}',
        b'{"command":"version-get"} trailing garbage',
        b'{"command":"version-get"}]',
        b'{"command":"version-get" # c\n}',
        b'{"command":"version-get" /* c */}',
        b'{"command":"version-get" // }\n}',
        b'{"command":"version-get"/**/}',
        b'\r\n{"command":"version-get"}',
        b'{"command":"version-get","arguments":null}',
    ],
)
def test_comments_and_trailing_bytes_are_accepted_like_kea(data: bytes) -> None:
    feed = JsonFeed()
    feed.receive_data(data)
    document = feed.next_document()
    assert document is not None
    assert decode_request(document) == Request("version-get")


def test_hash_and_slashes_inside_strings_are_not_comments() -> None:
    feed = JsonFeed()
    feed.receive_data(b'{"command":"ve#rsion//get/*"}')
    document = feed.next_document()
    assert document is not None
    assert decode_request(document).command == "ve#rsion//get/*"


def test_incomplete_documents_need_more_data_then_fail_at_eof() -> None:
    for data in (b"  ", b"#x", b"/", b"/*", b'{"command":"version-get"', b'{"command":"version-get"/'):
        feed = JsonFeed()
        feed.receive_data(data)
        assert feed.next_document() is None
        feed.receive_data(b"")
        with pytest.raises(RemoteProtocolError, match="connection closed before"):
            feed.next_document()
        assert feed.buffered == len(data)


def test_started_and_buffered() -> None:
    feed = JsonFeed()
    feed.receive_data(b"  /* c */ ")
    assert feed.next_document() is None
    assert not feed.started
    feed.receive_data(b'{"a"')
    assert feed.next_document() is None
    assert feed.started
    assert feed.buffered == 14


def test_data_after_eof_is_a_local_error() -> None:
    feed = JsonFeed()
    feed.receive_data(b"")
    assert feed.eof
    with pytest.raises(LocalProtocolError):
        feed.receive_data(b"{}")


# --- requests -----------------------------------------------------------------------------------


def test_unknown_command_text() -> None:
    assert unsupported_reply("nope") == Reply(2, "'nope' command not supported.")
    assert encode_reply(unsupported_reply("")) == b'{"result":2,"text":"\'\' command not supported."}'


def test_request_keys_from_kea_ctrl_agent() -> None:
    request = decode_request(
        b'{"command":"status-get","arguments":{"a":1},"service":["dhcp4"],"remote-address":"192.0.2.1"}'
    )
    assert request == Request("status-get", {"a": 1}, ("dhcp4",), "192.0.2.1")
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'{"command":"x","service":"dhcp4"}', "service value must be a list, not string"),
        (b'{"command":"x","service":[1]}', "service value must be a list of strings"),
        (b'{"command":"x","remote-address":1}', "remote-address value must be a string, not number"),
    ],
)
def test_service_and_remote_address_types(data: bytes, text: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_request(data)
    assert caught.value.message == "Error during command processing: " + text


def test_null_members_count_as_absent() -> None:
    assert decode_request(b'{"command":"x","service":null,"remote-address":null}') == Request("x")


def test_json_constants_and_control_characters() -> None:
    with pytest.raises(RemoteProtocolError, match="NaN"):
        decode_request(b'{"command":"x","arguments":NaN}')
    # Kea takes raw control characters inside strings.
    assert decode_request(b'{"command":"x","arguments":"a\nb\tc"}').arguments == "a\nb\tc"


@given(raw=st.binary(max_size=40))
def test_raw_non_utf8_bytes_round_trip_losslessly(raw: bytes) -> None:
    safe = raw.replace(b"\\", b"").replace(b'"', b"").translate(None, bytes(range(32)))
    data = b'{"command":"x\xff","arguments":{"k":"' + safe + b'"}}'
    feed = JsonFeed()
    feed.receive_data(data)
    document = feed.next_document()
    assert document is not None
    request = decode_request(document)
    assert request.command == "x\udcff"
    assert encode_request(request) == data
    assert encode_reply(Reply(0, "", request.arguments)) == b'{"result":0,"arguments":{"k":"' + safe + b'"}}'


def test_escaped_lone_surrogate_still_encodes() -> None:
    request = decode_request(b'{"command":"\\ud800"}')
    assert decode_request(encode_request(request)) == request


def test_encode_request_leaves_out_null_members() -> None:
    assert encode_request(Request("version-get")) == b'{"command":"version-get"}'
    assert (
        encode_request(Request("x", [1], ("dhcp4",), "::1"))
        == b'{"command":"x","arguments":[1],"service":["dhcp4"],"remote-address":"::1"}'
    )


# --- replies ------------------------------------------------------------------------------------


def test_reply_encoding_is_compact_and_omits_empty_members() -> None:
    assert encode_reply(Reply(0)) == b'{"result":0}'
    assert encode_reply(Reply(Result.SUCCESS, "2.2.0", {"extended": "x"})) == (
        b'{"result":0,"text":"2.2.0","arguments":{"extended":"x"}}'
    )
    assert encode_reply(Reply(3, "", [])) == b'{"result":3,"arguments":[]}'


def test_reply_encoding_errors_are_local() -> None:
    with pytest.raises(LocalProtocolError):
        encode_reply(Reply(0, "", {"x": object()}))
    with pytest.raises(LocalProtocolError):
        encode_reply(Reply(True))
    with pytest.raises(LocalProtocolError):
        encode_reply(Reply(0, "", float("nan")))


@given(result=st.integers(0, 5), text=st.text(), arguments=json_values)
def test_replies_round_trip(result: int, text: str, arguments: Any) -> None:
    reply = Reply(result, text, arguments)
    assert decode_reply(encode_reply(reply)) == reply


def test_decode_reply_unwraps_kea_ctrl_agent_lists() -> None:
    assert decode_reply(b'[{"result":0,"text":"2.2.0"}]') == Reply(0, "2.2.0")
    assert decode_reply(b'{ "arguments": { "pid": 1 }, "result": 0 }') == Reply(0, "", {"pid": 1})


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b'[{"result":0},{"result":0}]',
        b"[1]",
        b'"x"',
        b"{}",
        b'{"result":"0"}',
        b'{"result":true}',
        b'{"result":0,"text":1}',
        b"{",
        b"nope",
    ],
)
def test_decode_reply_rejects_anything_else(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_reply(data)


def test_result_codes_and_timeout_texts() -> None:
    assert [int(code) for code in Result] == [0, 1, 2, 3, 4, 5]
    assert timeout_text() == TIMEOUT_TEXT == "Connection over control channel timed out"
    assert (
        timeout_text(12) == "Connection over control channel timed out, discarded partial command of 12 bytes"
    )


# --- reply helpers and the JSON value type ------------------------------------------------------------

json_values_with_floats = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def is_json_value(value: object) -> bool:
    """Whether ``value`` is a member of ``JsonValue``, all the way down."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_json_value(item) for key, item in value.items())
    return False


@given(
    result=st.integers(-(2**40), 2**40) | st.integers(0, 5), text=st.text(), arguments=json_values_with_floats
)
def test_decoded_reply_is_ok_or_raises_an_error_carrying_it(
    result: int, text: str, arguments: JsonValue
) -> None:
    reply = decode_reply(encode_reply(Reply(result, text, arguments)))
    assert reply == Reply(result, text, arguments)
    assert is_json_value(reply.arguments)
    assert reply.ok is (result == Result.SUCCESS)
    if reply.ok:
        assert reply.raise_for_result() is reply
        return
    with pytest.raises(ReplyError) as caught:
        reply.raise_for_result()
    error = caught.value
    assert error.reply is reply
    # A CommandError with the reply's members: a handler letting it propagate answers with the same reply.
    assert isinstance(error, CommandError)
    assert (error.result, error.text, error.arguments) == (result, text, arguments)
    expected = f"result {describe_result(result)}"
    assert str(error) == (f"{expected}: {text}" if text else f"{expected}, no text")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ReplyError
    assert str(copy) == str(error)
    assert copy.reply == reply


@given(document=st.binary(max_size=60) | json_values_with_floats.map(lambda v: json.dumps(v).encode()))
def test_any_decoded_reply_holds_json_values_only(document: bytes) -> None:
    try:
        reply = decode_reply(b'{"result":0,"arguments":' + document + b"}")
    except RemoteProtocolError:
        return
    assert is_json_value(reply.arguments)


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (0, "0 (success)"),
        (1, "1 (error)"),
        (2, "2 (unsupported)"),
        (3, "3 (empty)"),
        (4, "4 (conflict)"),
        (5, "5 (fatal)"),
        (6, "6 (not a kea result code)"),
        (-1, "-1 (not a kea result code)"),
    ],
)
def test_describe_result_names_keas_codes(result: int, words: str) -> None:
    assert describe_result(result) == words


def test_empty_is_not_ok_and_raises() -> None:
    # Kea's "nothing found" (3) is not a success: a caller that accepts it checks reply.result itself.
    reply = Reply(Result.EMPTY, "no lease found")
    assert not reply.ok
    with pytest.raises(ReplyError, match=r"^result 3 \(empty\): no lease found$"):
        reply.raise_for_result()
