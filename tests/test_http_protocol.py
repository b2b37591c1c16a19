"""The HTTP control channel's sans-IO layer: both sides fed whole, byte by byte, cut anywhere, with trailing
data.

The response bytes below are kea-ctrl-agent 2.2's own, as captured with curl (headers in its order).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.cli.paths import is_url
from ctrlsock.errors import (
    AuthenticationError,
    BadReplyError,
    HttpStatusError,
    LocalProtocolError,
    TruncatedReplyError,
)
from ctrlsock.http_protocol import (
    NEED_DATA,
    PEER_CLOSED,
    ClientConnection,
    ControlRequest,
    ControlUrl,
    Credentials,
    HttpReply,
    NeedData,
    PeerClosed,
    Rejection,
    Scheme,
    ServerConnection,
    User,
    check_basic_auth,
    error_body,
    parse_control_url,
    replies_from,
)
from ctrlsock.protocol import Reply, Request

URL = parse_control_url("http://127.0.0.1:8000")


def _fix_length(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = [
        f"Content-Length: {len(body)}".encode() if line.startswith(b"Content-Length") else line
        for line in head.split(b"\r\n")
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


KEA_LIST_REPLY = _fix_length(
    b"HTTP/1.1 200 OK\r\nContent-Length: 110\r\nContent-Type: application/json\r\n"
    b"Date: Tue, 01 Dec 2026 06:39:40 GMT\r\n\r\n"
    b'[ { "arguments": [ "list-commands" ], "result": 0 }, '
    b'{ "result": 1, "text": "forwarding socket is not configured" } ]'
)
KEA_UNAUTHORIZED = (
    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 41\r\nContent-Type: application/json\r\n"
    b'Date: Tue, 01 Dec 2026 06:39:40 GMT\r\nWWW-Authenticate: Basic realm="kea-test"\r\n\r\n'
    b'{ "result": 401, "text": "Unauthorized" }'
)
KEA_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 40\r\nContent-Type: application/json\r\n\r\n"
    b'{ "result": 400, "text": "Bad Request" }'
)


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    # Empty pieces are left out: feeding b"" means end of file.
    for cut in sorted(set(cuts)):
        if start < cut:
            yield data[start:cut]
            start = cut
    if start < len(data):
        yield data[start:]


def _client_reads(data: bytes, cuts: list[int] | None = None) -> HttpReply:
    client = ClientConnection(URL)
    client.send_command("list-commands")
    for chunk in _chunks(data, cuts or []):
        assert client.next_reply() is NEED_DATA
        client.receive_data(chunk)
    reply = client.next_reply()
    assert isinstance(reply, HttpReply)
    return reply


# --- URLs and credentials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8000", ControlUrl(Scheme.HTTP, "127.0.0.1", 8000, "/")),
        ("https://kea.example:8443/dhcp", ControlUrl(Scheme.HTTPS, "kea.example", 8443, "/dhcp")),
        ("HTTP://[::1]:8000/", ControlUrl(Scheme.HTTP, "::1", 8000, "/")),
        ("https://kea.example", ControlUrl(Scheme.HTTPS, "kea.example", 443, "/")),
    ],
)
def test_control_urls_parse(text: str, expected: ControlUrl) -> None:
    assert is_url(text)
    assert parse_control_url(text) == expected
    assert parse_control_url(str(expected)) == expected


@given(
    st.sampled_from(Scheme),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}|127\.0\.0\.[0-9]{1,2}", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,8}){1,3}", fullmatch=True),
)
def test_any_control_url_reads_back_from_its_text(scheme: Scheme, host: str, port: int, path: str) -> None:
    url = ControlUrl(scheme, host, port, path)
    assert parse_control_url(str(url)) == url


@pytest.mark.parametrize(
    "text",
    [
        "ftp://host/",
        "http://",
        "http://host:99999/",
        "http://user:pw@host/",
        "http://host/?a=1",
        "http://h/#x",
    ],
)
def test_bad_control_urls_are_refused_naming_the_url(text: str) -> None:
    with pytest.raises(LocalProtocolError, match="bad url"):
        parse_control_url(text)


def test_a_socket_path_is_not_a_url() -> None:
    assert not is_url("/run/kea/kea4-ctrl-socket")
    assert not is_url("http:socket")


def test_host_header_names_a_port_only_when_not_the_default() -> None:
    assert parse_control_url("http://h:80/").host_header == "h"
    assert parse_control_url("https://h:80/").host_header == "h:80"
    assert parse_control_url("http://[::1]:81/").host_header == "[::1]:81"


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("admin", "s3cret")
    assert "s3cret" not in repr(credentials)
    assert credentials.authorization() == b"Basic " + base64.b64encode(b"admin:s3cret")
    with pytest.raises(LocalProtocolError, match="colon"):
        Credentials("ad:min", "x")


# --- the client side ------------------------------------------------------------------------------


def test_request_is_a_kea_style_post() -> None:
    client = ClientConnection(URL, credentials=Credentials("admin", "s3cret"))
    data = client.send_command("list-commands", {"a": 1}, service=["dhcp4"])
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST / HTTP/1.1"
    headers = {line.split(b": ", 1)[0].lower(): line.split(b": ", 1)[1] for line in lines[1:]}
    assert headers[b"host"] == b"127.0.0.1:8000"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"authorization"] == b"Basic YWRtaW46czNjcmV0"
    assert b"connection" not in headers  # HTTP/1.1: persistent unless told otherwise
    assert json.loads(body) == {"command": "list-commands", "arguments": {"a": 1}, "service": ["dhcp4"]}


def test_kea_list_reply_fed_whole_gives_one_reply_per_service() -> None:
    reply = _client_reads(KEA_LIST_REPLY)
    assert (reply.status, reply.keep_alive) == (200, True)
    assert replies_from(reply, URL) == (
        Reply(0, "", ["list-commands"]),
        Reply(1, "forwarding socket is not configured"),
    )


def test_kea_list_reply_fed_byte_by_byte_is_the_same() -> None:
    whole = _client_reads(KEA_LIST_REPLY)
    assert _client_reads(KEA_LIST_REPLY, list(range(1, len(KEA_LIST_REPLY)))) == whole


@given(st.lists(st.integers(min_value=0, max_value=len(KEA_LIST_REPLY))))
def test_kea_list_reply_cut_anywhere_is_the_same(cuts: list[int]) -> None:
    assert _client_reads(KEA_LIST_REPLY, cuts) == _client_reads(KEA_LIST_REPLY)


def test_keep_alive_carries_a_second_command_after_trailing_bytes() -> None:
    client = ClientConnection(URL)
    client.send_command("list-commands")
    # The next response arriving with the first (pipelined bytes) waits for the next cycle.
    client.receive_data(KEA_LIST_REPLY + KEA_BAD_REQUEST)
    first = client.next_reply()
    assert isinstance(first, HttpReply) and first.status == 200
    assert client.reusable
    client.start_next_cycle()
    client.send_command("version-get")
    second = client.next_reply()
    assert isinstance(second, HttpReply) and second.status == 400


def test_unauthorized_is_an_authentication_error_naming_status_and_realm() -> None:
    with pytest.raises(AuthenticationError) as caught:
        replies_from(_client_reads(KEA_UNAUTHORIZED), URL)
    error = caught.value
    assert (error.status, error.url, error.reply) == (401, str(URL), Reply(401, "Unauthorized"))
    assert (
        str(error)
        == "http://127.0.0.1:8000/: authentication failed: http 401 Unauthorized (realm 'kea-test')"
    )
    assert isinstance(error, PermissionError)


def test_a_bare_map_with_another_status_is_an_http_status_error() -> None:
    with pytest.raises(HttpStatusError) as caught:
        replies_from(_client_reads(KEA_BAD_REQUEST), URL)
    assert not isinstance(caught.value, AuthenticationError)
    assert (caught.value.status, str(caught.value)) == (400, "http://127.0.0.1:8000/: http 400 Bad Request")


def test_a_status_error_without_a_json_body_uses_the_reason_phrase() -> None:
    response = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!"
    with pytest.raises(HttpStatusError, match="http 502 Bad Gateway") as caught:
        replies_from(_client_reads(response), URL)
    assert caught.value.reply is None


def test_a_200_with_a_bare_map_is_one_reply() -> None:
    response = _fix_length(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n{"result": 0, "text": "ok"}')
    assert replies_from(_client_reads(response), URL) == (Reply(0, "ok"),)


@pytest.mark.parametrize("body", [b"not json", b'[{"result": "0"}]', b"[1]", b'{"text": "x"}'])
def test_a_200_that_is_not_a_reply_is_a_bad_reply(body: bytes) -> None:
    response = _fix_length(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + body)
    with pytest.raises(BadReplyError, match=r"bad reply from http://127\.0\.0\.1:8000/"):
        replies_from(_client_reads(response), URL)


@pytest.mark.parametrize("cut", [0, 20, len(KEA_LIST_REPLY) - 1])
def test_a_response_cut_short_by_end_of_file_is_truncated(cut: int) -> None:
    client = ClientConnection(URL)
    client.send_command("list-commands")
    client.receive_data(KEA_LIST_REPLY[:cut])
    client.receive_data(b"")
    with pytest.raises(TruncatedReplyError) as caught:
        client.next_reply()
    assert caught.value.received == cut
    assert caught.value.url == str(URL)


def test_a_close_delimited_response_is_not_reusable() -> None:
    reply = _client_reads(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]")
    assert not reply.keep_alive
    assert replies_from(reply, URL) == ()


@given(st.binary(max_size=300))
def test_garbage_from_a_server_raises_only_client_errors(data: bytes) -> None:
    client = ClientConnection(URL)
    client.send_command("list-commands")
    for byte in range(len(data)):
        client.receive_data(data[byte : byte + 1])
        try:
            if client.next_reply() is not NEED_DATA:
                return
        except BadReplyError:
            return
    client.receive_data(b"")
    with contextlib.suppress(BadReplyError, TruncatedReplyError):
        client.next_reply()


# --- the server side ------------------------------------------------------------------------------


def _post(
    body: bytes, *, auth: bytes | None = None, extra: bytes = b"", content_type: bytes = b"application/json"
) -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type + b"\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    return head + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def _server_reads(data: bytes, cuts: list[int] | None = None, **options: object) -> object:
    server = ServerConnection(**options)  # type: ignore[arg-type]
    for chunk in _chunks(data, cuts or []):
        assert server.next_request() is NEED_DATA
        server.receive_data(chunk)
    return server.next_request()


COMMAND = b'{"command": "list-commands", "service": ["dhcp4"]}'


def test_a_control_request_fed_whole_byte_by_byte_and_cut_anywhere_is_the_same() -> None:
    expected = ControlRequest(Request("list-commands", None, ("dhcp4",)), COMMAND)
    data = _post(COMMAND)
    assert _server_reads(data) == expected
    assert _server_reads(data, list(range(1, len(data)))) == expected


@given(st.lists(st.integers(min_value=0, max_value=len(_post(COMMAND)))))
def test_a_control_request_cut_anywhere_is_the_same(cuts: list[int]) -> None:
    assert _server_reads(_post(COMMAND), cuts) == ControlRequest(
        Request("list-commands", None, ("dhcp4",)), COMMAND
    )


def test_keep_alive_serves_a_second_request_sent_with_the_first() -> None:
    server = ServerConnection()
    server.receive_data(_post(COMMAND) + _post(b'{"command": "version-get"}'))
    first = server.next_request()
    assert isinstance(first, ControlRequest)
    response = server.reply([Reply(0, "", ["list-commands"])])
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b'\r\n\r\n[{"result":0,"arguments":["list-commands"]}]')
    assert server.reusable
    server.start_next_cycle()
    second = server.next_request()
    assert isinstance(second, ControlRequest) and second.request.command == "version-get"


def test_a_client_closing_between_requests_is_peer_closed() -> None:
    server = ServerConnection()
    assert server.idle
    server.receive_data(b"")
    assert server.next_request() is PEER_CLOSED


def _rejection(data: bytes, **options: object) -> Rejection:
    result = _server_reads(data, **options)
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HTTPStatus.METHOD_NOT_ALLOWED),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n", HTTPStatus.LENGTH_REQUIRED),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            HTTPStatus.LENGTH_REQUIRED,
        ),
        (_post(COMMAND, content_type=b"text/plain"), HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        (_post(b"not json"), HTTPStatus.BAD_REQUEST),
        (_post(b'{"command": 1}'), HTTPStatus.BAD_REQUEST),
        (b"GARBAGE\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n{", HTTPStatus.BAD_REQUEST),  # no Host
    ],
)
def test_bad_requests_are_rejected_with_their_status(data: bytes, status: HTTPStatus) -> None:
    assert _rejection(data).status is status


def test_a_body_over_the_limit_is_rejected_before_it_is_read() -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
    )
    assert _rejection(head, max_body=1024).status is HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_headers_that_never_end_are_rejected_at_the_limit() -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 5000
    assert _rejection(data, max_header_size=4096).status in (
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 411, 413, 415])
def test_rejections_answer_with_kea_style_bodies_and_close(status: int) -> None:
    server = ServerConnection(realm="r")
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_request()
    response = server.reject(Rejection(HTTPStatus(status), "test"))
    client = ClientConnection(URL)
    client.send_command("x")
    client.receive_data(response)
    reply = client.next_reply()
    assert isinstance(reply, HttpReply)
    assert reply.status == status
    assert json.loads(reply.body) == {"result": status, "text": HTTPStatus(status).phrase}
    assert reply.body == error_body(status)
    assert not reply.keep_alive
    assert (reply.header("www-authenticate") == 'Basic realm="r"') == (status == 401)


def test_a_garbage_request_still_gets_a_400_response() -> None:
    server = ServerConnection()
    server.receive_data(b"GARBAGE\r\n\r\n")
    rejection = server.next_request()
    assert isinstance(rejection, Rejection)
    assert server.reject(rejection).startswith(b"HTTP/1.1 400 Bad Request\r\n")


@given(st.binary(max_size=400))
def test_any_bytes_give_only_requests_rejections_or_need_data(data: bytes) -> None:
    server = ServerConnection(max_body=64)
    for byte in range(len(data)):
        server.receive_data(data[byte : byte + 1])
        if server.next_request() is not NEED_DATA:
            return
    server.receive_data(b"")
    assert isinstance(server.next_request(), ControlRequest | Rejection | PeerClosed | NeedData)


# --- basic authentication -------------------------------------------------------------------------

USERS = (User("admin", "s3cret"), User("monitor", "ro"))


def _basic(token: bytes) -> bytes:
    return b"Basic " + base64.b64encode(token)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_basic(b"admin:s3cret"), "admin"),
        (_basic(b"monitor:ro"), "monitor"),
        (b"basic " + base64.b64encode(b"monitor:ro"), "monitor"),
        (_basic(b"admin:ro"), None),
        (_basic(b"admin:s3cret "), None),
        (_basic(b"admin"), None),
        (b"Bearer abc", None),
        (b"Basic !!!", None),
        (None, None),
    ],
)
def test_basic_auth_names_the_user_only_for_exact_credentials(
    header: bytes | None, expected: str | None
) -> None:
    assert check_basic_auth(header, USERS) == expected


@given(st.text(min_size=1).filter(lambda name: ":" not in name), st.text())
def test_basic_auth_round_trips_any_user_and_password(user: str, password: str) -> None:
    header = Credentials(user, password).authorization()
    assert check_basic_auth(header, [User(user, password)]) == user
    assert check_basic_auth(header, [User(user, password + "x")]) is None


def test_a_server_with_users_rejects_before_reading_the_body() -> None:
    assert _rejection(_post(COMMAND), users=USERS).status is HTTPStatus.UNAUTHORIZED
    assert _rejection(_post(COMMAND, auth=_basic(b"admin:no")), users=USERS).status is HTTPStatus.UNAUTHORIZED
    accepted = _server_reads(_post(COMMAND, auth=_basic(b"monitor:ro")), users=USERS)
    assert isinstance(accepted, ControlRequest) and accepted.user == "monitor"


def test_user_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(USERS[0])
