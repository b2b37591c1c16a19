"""The client against real AF_UNIX servers run in threads, every error path, and a real Kea 2.2."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.client import (
    ReplyReader,
    Stage,
    decode_reply_from,
    send_command,
    send_raw,
    translate_os_error,
)
from ctrlsock.errors import (
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TruncatedReplyError,
)
from ctrlsock.protocol import JsonFeed, Reply, decode_reply, decode_request, encode_reply

REPO = Path(__file__).resolve().parents[1]


def read_request(conn: socket.socket) -> tuple[bytes, bool]:
    """Read one framed request; then whether the client half-closed (EOF follows the request)."""
    feed = JsonFeed()
    while (document := feed.next_document()) is None:
        data = conn.recv(65536)
        feed.receive_data(data)
    half_closed = conn.recv(1) == b""
    return document, half_closed


@contextmanager
def serve_once(path: Path, handler: Callable[[socket.socket], None]) -> Iterator[list[object]]:
    """Listen on ``path``, run ``handler`` on one accepted connection in a thread, then close it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(10)
    seen: list[object] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                handler(conn)
        except BaseException as error:  # reported in the test thread
            failures.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(15)
        listener.close()
    assert not failures, failures


def test_send_command_round_trip_and_half_close(sock_path: Path) -> None:
    seen: list[object] = []

    def handler(conn: socket.socket) -> None:
        document, half_closed = read_request(conn)
        seen.extend([decode_request(document), half_closed])
        conn.sendall(encode_reply(Reply(0, "1.2.3", {"extended": "x"})))

    with serve_once(sock_path, handler):
        reply = send_command(sock_path, "version-get", {"a": 1}, service=["dhcp4"])
    assert reply == Reply(0, "1.2.3", {"extended": "x"})
    request, half_closed = seen
    assert request.command == "version-get"  # type: ignore[attr-defined]
    assert request.arguments == {"a": 1}  # type: ignore[attr-defined]
    assert request.service == ("dhcp4",)  # type: ignore[attr-defined]
    assert half_closed is True


def test_reply_wrapped_in_a_list_is_unwrapped(sock_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b'[ { "result": 2, "text": "\'x\' command not supported." } ]')

    with serve_once(sock_path, handler):
        assert send_command(sock_path, "x") == Reply(2, "'x' command not supported.")


def test_send_raw_returns_every_byte_until_eof(sock_path: Path) -> None:
    big = b'{"result":0,"arguments":"' + b"x" * (8 * 1024 * 1024) + b'"}  trailing'

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(big)

    with serve_once(sock_path, handler):
        assert send_raw(sock_path, b'{"command":"big"}', timeout=30) == big


def test_reply_sent_before_the_request_is_finished_is_still_read(sock_path: Path) -> None:
    # A server that refuses a too-large request answers and closes while we are still sending.
    def handler(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b'{"result":1,"text":"command too large"}')

    with serve_once(sock_path, handler):
        reply = send_raw(sock_path, b'{"command":"x","arguments":"' + b"y" * (16 * 1024 * 1024) + b'"}')
    assert reply == b'{"result":1,"text":"command too large"}'


def test_missing_socket(sock_dir: Path) -> None:
    for path in (sock_dir / "nothing.sock", sock_dir / "no" / "dir.sock"):
        with pytest.raises(SocketNotFoundError) as caught:
            send_command(path, "version-get")
        assert caught.value.path == path
        assert isinstance(caught.value, FileNotFoundError)


def test_refused_by_a_bound_socket_nobody_listens_on(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(sock_path))
        with pytest.raises(ServerRefusedError) as caught:
            send_command(sock_path, "version-get")
    assert caught.value.path == sock_path
    assert isinstance(caught.value, ConnectionRefusedError)


def test_path_too_long_is_refused_before_connecting(sock_dir: Path) -> None:
    path = sock_dir / ("x" * (108 - len(str(sock_dir)) - 1))
    assert len(str(path)) == 108
    with pytest.raises(SocketPathTooLongError) as caught:
        send_command(path, "version-get")
    assert caught.value.path == path


def test_permission_denied(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(1)
        os.chmod(sock_path, 0o600)
        if os.geteuid() != 0:
            os.chmod(sock_path, 0o000)
            with pytest.raises(SocketPermissionError) as caught:
                send_command(sock_path, "version-get", timeout=2)
            assert caught.value.path == sock_path
            return
        # Root passes permission checks: ask as nobody, in a real child process that drops root after
        # start-up (the interpreter itself may live where nobody cannot read, e.g. under /root).
        os.chmod(sock_dir, 0o755)
        code = (
            "import os, sys; sys.path.insert(0, sys.argv[1])\n"
            "from ctrlsock.client import send_command\n"
            "from ctrlsock.errors import SocketPermissionError\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "try:\n    send_command(sys.argv[2], 'version-get', timeout=2)\n"
            "except SocketPermissionError as e:\n    print('permission', e.path)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(REPO), str(sock_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.stdout.strip() == f"permission {sock_path}", result.stderr


def test_timeout_when_the_server_accepts_but_never_answers(sock_path: Path) -> None:
    release = threading.Event()

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        release.wait(10)

    with serve_once(sock_path, handler):
        try:
            with pytest.raises(ClientTimeoutError) as caught:
                send_command(sock_path, "version-get", timeout=0.3)
        finally:
            release.set()
    assert caught.value.path == sock_path
    assert isinstance(caught.value, TimeoutError)


def test_timeout_in_the_middle_of_a_reply_names_the_bytes(sock_path: Path) -> None:
    release = threading.Event()

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b'{"result":0,')
        release.wait(10)

    with serve_once(sock_path, handler):
        try:
            with pytest.raises(ClientTimeoutError, match="after 12 bytes"):
                send_command(sock_path, "version-get", timeout=0.3)
        finally:
            release.set()


def test_connect_timeout_when_the_backlog_is_full(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(0)
        pending: list[socket.socket] = []
        try:
            while True:  # fill the backlog: nobody ever accepts
                filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                filler.setblocking(False)
                pending.append(filler)
                try:
                    filler.connect(str(sock_path))
                except BlockingIOError:
                    break
            with pytest.raises(ClientTimeoutError, match="timed out connecting to"):
                send_command(sock_path, "version-get", timeout=5, connect_timeout=0.2)
        finally:
            for filler in pending:
                filler.close()


@pytest.mark.parametrize("sent", [b"", b'{"result":0,"te'])
def test_truncated_reply(sock_path: Path, sent: bytes) -> None:
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(sent)

    with serve_once(sock_path, handler), pytest.raises(TruncatedReplyError) as caught:
        send_command(sock_path, "version-get")
    assert caught.value.received == len(sent)
    assert caught.value.path == sock_path


@pytest.mark.parametrize("sent", [b"hello", b'{"x":1}', b'{"result":"0"}', b"[]"])
def test_bad_reply(sock_path: Path, sent: bytes) -> None:
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(sent)

    with serve_once(sock_path, handler), pytest.raises(BadReplyError) as caught:
        send_command(sock_path, "version-get")
    assert caught.value.path == sock_path


def test_send_raw_passes_invalid_replies_through_when_complete(sock_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b'{"x":1}')

    with serve_once(sock_path, handler):
        assert send_raw(sock_path, b'{"command":"x"}') == b'{"x":1}'


def test_client_socket_is_close_on_exec(sock_path: Path) -> None:
    flags: list[bool] = []

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        # The client's descriptor is in this same process: find it by its peer.
        for fd in os.listdir("/proc/self/fd"):
            try:
                probe = socket.socket(fileno=int(fd))
            except OSError:
                continue
            try:
                if probe.family == socket.AF_UNIX and probe.getpeername() == str(sock_path):
                    flags.append(probe.get_inheritable())
            except OSError:
                pass
            finally:
                probe.detach()
        conn.sendall(b'{"result":0}')

    with serve_once(sock_path, handler):
        send_command(sock_path, "x")
    assert flags == [False]


@pytest.mark.kea
def test_real_kea_answers_through_the_client(kea_daemon: object) -> None:
    socket_path = kea_daemon.socket_path  # type: ignore[attr-defined]
    version = send_command(socket_path, "version-get")
    assert version.result == 0
    assert version.text.startswith("2.")
    assert "extended" in version.arguments
    commands = send_command(socket_path, "list-commands")
    assert commands.result == 0
    assert commands.arguments == sorted(commands.arguments)
    assert {"version-get", "status-get", "list-commands", "shutdown"} <= set(commands.arguments)
    status = send_command(socket_path, "status-get", service=["dhcp4"])
    assert status.result == 0
    assert status.text == ""
    assert status.arguments["pid"] == kea_daemon.pid  # type: ignore[attr-defined]
    assert send_command(socket_path, "no-such-command") == Reply(
        2, "'no-such-command' command not supported."
    )
    assert send_raw(socket_path, b"x") == b'{ "result": 1, "text": "invalid first character x" }'
    with pytest.raises(TruncatedReplyError, match="without replying"):
        # Kea closes silently when the request ends before the document does.
        send_raw(socket_path, b'{"command":')


# --- the sans-IO parts both clients share --------------------------------------------------------------

reply_documents = st.builds(
    lambda result, text, arguments: encode_reply(Reply(result, text, arguments)),
    st.integers(0, 5),
    st.text(max_size=20),
    st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
)


@given(document=reply_documents, trailing=st.binary(max_size=20), cuts=st.lists(st.integers(0, 200)))
def test_reply_reader_finds_the_reply_however_it_is_cut(
    document: bytes, trailing: bytes, cuts: list[int]
) -> None:
    data = document + trailing
    reader = ReplyReader(Path("/x"))
    start = 0
    for cut in [*sorted({min(cut, len(data)) for cut in cuts}), len(data)]:
        if cut > start:
            assert reader.receive_data(data[start:cut]) is False
            start = cut
    assert reader.receive_data(b"") is True
    assert reader.document == document
    assert reader.raw == data
    assert reader.received == len(data)
    assert decode_reply_from(Path("/x"), reader.document) == decode_reply(document)


@given(document=reply_documents, data=st.data())
def test_reply_reader_cut_short_is_truncated_with_the_byte_count(
    document: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(document) - 1))
    reader = ReplyReader(Path("/x"))
    for byte in document[:cut]:
        assert reader.receive_data(bytes([byte])) is False
    with pytest.raises(TruncatedReplyError) as caught:
        reader.receive_data(b"")
    assert caught.value.received == cut
    assert not reader.complete


def test_reply_reader_refuses_what_cannot_begin_json() -> None:
    reader = ReplyReader(Path("/x"))
    with pytest.raises(BadReplyError, match=r"^bad reply from /x: invalid first character h$"):
        reader.receive_data(b"hello")


def test_decode_reply_from_names_the_socket() -> None:
    with pytest.raises(BadReplyError, match=r"^bad reply from /x: reply has no 'result'$") as caught:
        decode_reply_from(Path("/x"), b'{"x":1}')
    assert caught.value.path == Path("/x")


def test_stages_are_a_vocabulary_with_message_words() -> None:
    assert [str(stage) for stage in Stage] == ["connect", "send", "receive"]
    assert [stage.phrase for stage in Stage] == ["connecting to", "sending to", "reading the reply from"]
    timeout = translate_os_error(TimeoutError(), Path("/x"), Stage.RECEIVE, 2.0, 7)
    assert (
        str(timeout) == "timed out reading the reply from /x: 2 s passed after 7 bytes of an incomplete reply"
    )
    other = translate_os_error(OSError(errno.EIO, "Input/output error"), Path("/x"), Stage.SEND, 2.0, 0)
    assert type(other) is ClientError
    assert str(other) == "sending to /x failed: Input/output error"
