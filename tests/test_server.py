"""The command channel over real AF_UNIX sockets, in both embeddings (``make_server`` is parametrized)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import CommandError, ServerError
from ctrlsock.lock import lock_path_for
from ctrlsock.protocol import Reply, encode_reply
from ctrlsock.server import Access, CommandContext, ControlServer, JsonFileConfig, ServerConfig
from ctrlsock.testing import ServerFactory
from tests.children.server_client import ask, ask_raw, connect, read_to_eof, slow_read
from tests.support import LogWatch

FAST = ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=1.0)
IDLE = ServerConfig(idle_timeout=0.3, write_deadline=5.0, stop_grace=1.0)


def add_test_commands(server: ControlServer) -> None:
    @server.command("echo")
    def echo(arguments: Any, context: CommandContext) -> dict[str, Any]:
        return {"echo": arguments, "command": context.command, "service": context.service}

    @server.command("blob")
    def blob(arguments: Any, context: CommandContext) -> dict[str, Any]:
        return {"blob": "x" * int(arguments["size"])}

    @server.command("boom")
    def boom(arguments: Any, context: CommandContext) -> None:
        raise RuntimeError("boom went the handler")

    @server.command("refuse")
    def refuse(arguments: Any, context: CommandContext) -> None:
        raise CommandError("no lease for you", result=3, arguments={"why": "empty"})

    @server.command("weird")
    def weird(arguments: Any, context: CommandContext) -> Any:
        return 42

    @server.command("later")
    async def later(arguments: Any, context: CommandContext) -> Reply:
        return Reply(0, "awaited", {"x": arguments})


@pytest.fixture(params=["thread", "asyncio"])
def make_server(
    request: pytest.FixtureRequest, sock_path: Path, ctrlsock_server_factory: ServerFactory
) -> Callable[..., ControlServer]:
    """Servers in the thread embedding, or on an asyncio loop that runs in another thread: every test that
    uses it (or ``server``) runs against both."""

    def make(config: ServerConfig = FAST, **kwargs: Any) -> ControlServer:
        server = ControlServer(sock_path, program="test-server", version="1.2.3", config=config, **kwargs)
        add_test_commands(server)
        return ctrlsock_server_factory(request.param, server=server)

    return make


@pytest.fixture
def server(make_server: Callable[..., ControlServer]) -> ControlServer:
    return make_server()


def blob_reply(size: int) -> bytes:
    return encode_reply(Reply(0, "", {"blob": "x" * size}))


def read_some(sock: socket.socket) -> bytes:
    """Read to EOF, or to the reset a close with unread request bytes causes (after the data)."""
    parts = []
    with contextlib.suppress(ConnectionResetError):
        while data := sock.recv(65536):
            parts.append(data)
    return b"".join(parts)


def wait_peer_closed(sock: socket.socket, timeout: float = 5.0) -> None:
    """Block until the server closed its end (POLLRDHUP), without reading what it sent."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    assert poller.poll(timeout * 1000), "the server did not close the connection"


# --- built-in commands ---------------------------------------------------------------------------------


def test_list_commands_is_sorted_and_has_no_text(server: ControlServer) -> None:
    reply = ask(server.socket_path, "list-commands")
    assert reply["result"] == 0
    assert "text" not in reply
    assert reply["arguments"] == sorted(reply["arguments"])
    assert {"build-report", "list-commands", "shutdown", "status-get", "version-get", "echo"} <= set(
        reply["arguments"]
    )
    assert "config-get" not in reply["arguments"]


def test_version_get_answers_short_text_and_extended(server: ControlServer) -> None:
    reply = ask(server.socket_path, "version-get")
    assert reply["result"] == 0
    assert reply["text"] == "1.2.3"
    assert reply["arguments"]["extended"].startswith("1.2.3")
    # Cached after the first time: the same bytes every time.
    assert ask_raw(server.socket_path, b'{"command": "version-get"}') == ask_raw(
        server.socket_path, b'{"command":"version-get"}'
    )


def test_build_report_answers(server: ControlServer) -> None:
    reply = ask(server.socket_path, "build-report")
    assert reply["result"] == 0
    assert "test-server" in reply["text"]


def test_status_get_reports_pid_uptime_and_connections(server: ControlServer) -> None:
    ask(server.socket_path, "version-get")
    reply = ask(server.socket_path, "status-get")
    assert reply["result"] == 0
    assert "text" not in reply
    status = reply["arguments"]
    assert status["pid"] == os.getpid()
    assert status["uptime"] >= 0
    assert status["reload"] >= 0
    assert status["socket"] == str(server.socket_path)
    assert status["lock"] == str(lock_path_for(server.socket_path))
    assert status["connections-served"] >= 1
    assert status["connections-open"] == 1  # this very request
    assert status["replies-dropped"] == 0


def test_list_commands_follows_registration(server: ControlServer) -> None:
    assert "added-late" not in ask(server.socket_path, "list-commands")["arguments"]
    server.add_command("added-late", lambda arguments, context: None)
    assert "added-late" in ask(server.socket_path, "list-commands")["arguments"]


def test_shutdown_runs_the_callback(make_server: Callable[..., ControlServer]) -> None:
    called = threading.Event()
    server = make_server(on_shutdown=called.set)
    reply = ask(server.socket_path, "shutdown")
    assert reply == {"result": 0, "text": "Shutting down."}
    assert called.wait(5)
    assert server.is_serving  # the daemon's callback decides


def test_shutdown_without_callback_stops_the_server(make_server: Callable[..., ControlServer]) -> None:
    server = make_server()
    reply = ask(server.socket_path, "shutdown", {"exit-value": 3})
    assert reply == {"result": 0, "text": "Shutting down."}
    assert server.wait(5)
    assert server.exit_value == 3
    assert not server.socket_path.exists()


def test_shutdown_rejects_a_non_integer_exit_value(server: ControlServer) -> None:
    reply = ask(server.socket_path, "shutdown", {"exit-value": "x"})
    assert reply["result"] == 1
    assert server.is_serving


# --- framing and errors ----------------------------------------------------------------------------


def test_socat_the_documented_kea_shell_client_gets_the_reply(server: ControlServer) -> None:
    # `socat UNIX:PATH -,ignoreeof` is Kea's documented client; it half-closes after stdin's EOF.
    if shutil.which("socat") is None:
        if os.environ.get("CI"):
            pytest.fail("socat is not installed but CI must run this interop test")
        pytest.skip("socat is not installed")
    done = subprocess.run(
        ["socat", f"UNIX:{server.socket_path}", "-,ignoreeof"],
        input=b'{ "command": "list-commands" }\n',
        capture_output=True,
        timeout=10,
        check=True,
    )
    reply = json.loads(done.stdout)
    assert reply["result"] == 0
    assert "list-commands" in reply["arguments"]


def test_request_split_in_pieces_is_answered(server: ControlServer) -> None:
    request = b'{"command": "echo", "arguments": {"a": [1, 2, {"b": "}"}]}}'
    with connect(server.socket_path) as sock:
        for index in range(0, len(request), 7):
            sock.sendall(request[index : index + 7])
            time.sleep(0.01)  # force separate reads on the server: the point is the split, not a state
        reply = json.loads(read_to_eof(sock))
    assert reply["result"] == 0
    assert reply["arguments"]["echo"] == {"a": [1, 2, {"b": "}"}]}


def test_comments_before_the_request_are_skipped(server: ControlServer) -> None:
    raw = b'# hash\n// slashes\n/* block\n */ {"command": "version-get"}'
    assert json.loads(ask_raw(server.socket_path, raw))["text"] == "1.2.3"


def test_trailing_garbage_after_the_request_is_ignored(server: ControlServer) -> None:
    raw = b'{"command": "version-get"} and then some garbage }}}'
    assert json.loads(ask_raw(server.socket_path, raw))["text"] == "1.2.3"


def test_service_and_remote_address_reach_the_handler(server: ControlServer) -> None:
    raw = b'{"command": "echo", "service": ["dhcp4"], "remote-address": "192.0.2.1"}'
    reply = json.loads(ask_raw(server.socket_path, raw))
    assert reply["arguments"]["service"] == ["dhcp4"]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"hello", "invalid first character h"),
        (b'"just a string"', 'invalid first character "'),
        (b'{"arguments": {}}', "Error during command processing: "),
        (b'{"command": 1}', "Error during command processing: "),
        (b'{"command": "x", "service": "dhcp4"}', "Error during command processing: "),
        (b'{"command": "x", "bogus": 1}', "Error during command processing: "),
        (b"[]", "Error during command processing: "),
    ],
)
def test_bad_requests_get_kea_error_texts(server: ControlServer, raw: bytes, text: str) -> None:
    reply = json.loads(ask_raw(server.socket_path, raw))
    assert reply["result"] == 1
    assert reply["text"].startswith(text)


def test_deep_nesting_is_an_error_reply_not_a_crash(server: ControlServer) -> None:
    raw = b"[" * 1_000_000
    with connect(server.socket_path) as sock:
        # The server answers as soon as the depth limit is crossed and closes: the rest of our send
        # meets a closed socket, and the reply is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        reply = json.loads(read_some(sock))
    assert reply["result"] == 1
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_unknown_command_is_unsupported(server: ControlServer) -> None:
    assert ask(server.socket_path, "no-such-thing") == {
        "result": 2,
        "text": "'no-such-thing' command not supported.",
    }


def test_handler_exception_is_result_1_and_a_logged_traceback(
    server: ControlServer, log_watch: LogWatch
) -> None:
    reply = ask(server.socket_path, "boom")
    assert reply == {"result": 1, "text": "Error during command processing: boom went the handler"}
    record = log_watch.wait_for("'boom' failed")
    assert record.exc_info is not None
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_command_error_sets_result_text_and_arguments(server: ControlServer) -> None:
    assert ask(server.socket_path, "refuse") == {
        "result": 3,
        "text": "no lease for you",
        "arguments": {"why": "empty"},
    }


def test_handler_returning_garbage_is_an_error_reply(server: ControlServer, log_watch: LogWatch) -> None:
    reply = ask(server.socket_path, "weird")
    assert reply["result"] == 1
    log_watch.wait_for("'weird' failed")


def test_coroutine_handler_works_in_the_thread_embedding(server: ControlServer) -> None:
    assert ask(server.socket_path, "later", [1]) == {"result": 0, "text": "awaited", "arguments": {"x": [1]}}


def test_client_closing_without_a_request_costs_nothing(server: ControlServer) -> None:
    for _ in range(20):
        connect(server.socket_path).close()
    with connect(server.socket_path) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert ask(server.socket_path, "version-get")["result"] == 0


# --- timeouts --------------------------------------------------------------------------------------


def test_idle_client_gets_keas_timeout_text(make_server: Callable[..., ControlServer]) -> None:
    server = make_server(IDLE)
    with connect(server.socket_path) as sock:
        reply = json.loads(read_to_eof(sock))
    assert reply == {"result": 1, "text": "Connection over control channel timed out"}


def test_partial_request_timeout_says_how_much_was_discarded(
    make_server: Callable[..., ControlServer],
) -> None:
    server = make_server(IDLE)
    partial = b'{"command": "ver'
    with connect(server.socket_path) as sock:
        sock.sendall(partial)
        reply = json.loads(read_to_eof(sock))
    assert reply == {
        "result": 1,
        "text": "Connection over control channel timed out, discarded partial command of 16 bytes",
    }


# --- big replies, slow and vanishing readers --------------------------------------------------------


def test_big_reply_reaches_a_slow_reader_whole_while_others_are_served(
    make_server: Callable[..., ControlServer],
) -> None:
    # idle_timeout is short and the reader pauses longer than it: the write path has its own deadline,
    # so an honest slow reader is never truncated (Kea 2.2 cuts it after 10 s of pause).
    server = make_server(ServerConfig(idle_timeout=0.5, write_deadline=5.0, stop_grace=1.0))
    size = 32 * 1024 * 1024
    with connect(server.socket_path, rcvbuf=4096, timeout=30) as slow:
        slow.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
        first = slow.recv(4096)  # the reply has started; the server now waits on a full socket buffer
        assert first
        for _ in range(3):
            assert ask(server.socket_path, "version-get")["result"] == 0
        time.sleep(0.6)  # pause longer than the idle timeout on purpose
        rest = slow_read(slow, chunk=4096, pause=0.6, every=4096)
    assert first + rest == blob_reply(size)
    assert server.stats.dropped == 0


def test_client_that_never_reads_is_dropped_after_the_write_deadline(
    make_server: Callable[..., ControlServer], log_watch: LogWatch
) -> None:
    server = make_server(ServerConfig(idle_timeout=5.0, write_deadline=0.3, stop_grace=1.0))
    size = 8 * 1024 * 1024
    with connect(server.socket_path, rcvbuf=4096) as stuck:
        stuck.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
        wait_peer_closed(stuck)
        record = log_watch.wait_for("dropped reply")
        assert "no write progress" in record.getMessage()
        assert f"pid {os.getpid()}" in record.getMessage()
        received = read_to_eof(stuck)
    assert 0 < len(received) < len(blob_reply(size))
    assert server.stats.dropped == 1
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_client_vanishing_mid_reply_costs_only_its_connection(
    server: ControlServer, log_watch: LogWatch
) -> None:
    size = 8 * 1024 * 1024
    with connect(server.socket_path, rcvbuf=4096) as gone:
        gone.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
        assert gone.recv(1024)
    record = log_watch.wait_for("dropped reply")
    assert "went away" in record.getMessage()
    assert server.is_serving
    assert ask(server.socket_path, "version-get")["result"] == 0
    assert ask(server.socket_path, "status-get")["arguments"]["replies-dropped"] == 1


# --- start-up and stop -----------------------------------------------------------------------------


def test_socket_is_created_0600_by_default(server: ControlServer) -> None:
    st = os.lstat(server.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert not [p for p in server.socket_path.parent.iterdir() if p.name.startswith(".")]


def test_socket_mode_and_group_are_applied(make_server: Callable[..., ControlServer]) -> None:
    gid = os.getgroups()[-1] if os.getgroups() else os.getgid()
    server = make_server(ServerConfig(mode=0o660, group=gid))
    st = os.lstat(server.socket_path)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == gid


def test_no_server_socket_leaks_into_a_child_process(server: ControlServer) -> None:
    # A child started without closing descriptors (as Kea starts kea-lfc) must inherit neither the
    # listener nor an accepted connection: everything is SOCK_CLOEXEC.
    with connect(server.socket_path) as held:
        held.sendall(b'{"command": ')  # an accepted connection stays open on the server meanwhile
        check = (
            "import os, socket\n"
            "names = []\n"
            "for fd in map(int, os.listdir('/proc/self/fd')):\n"
            "    try:\n"
            "        s = socket.socket(fileno=os.dup(fd))\n"
            "    except OSError:\n"
            "        continue\n"
            "    with s:\n"
            "        names.append(str(s.getsockname()))\n"
            "print(repr(names))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", check], close_fds=False, capture_output=True, text=True, check=True
        )
    assert str(server.socket_path.parent) not in result.stdout


def test_second_server_on_the_same_socket_fails_naming_the_holder(
    server: ControlServer, sock_path: Path
) -> None:
    from ctrlsock.errors import LockHeldError  # noqa: PLC0415

    other = ControlServer(sock_path, config=FAST)
    with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
        other.start_in_thread()
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_orphaned_socket_is_replaced(sock_path: Path, make_server: Callable[..., ControlServer]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock_path))  # bound, never listening, then closed: what a crash leaves
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    server = make_server()
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_regular_file_at_the_path_is_refused_and_kept(sock_path: Path) -> None:
    sock_path.write_text("precious")
    server = ControlServer(sock_path, config=FAST)
    with pytest.raises(ServerError):
        server.start_in_thread()
    assert sock_path.read_text() == "precious"
    # The lock was released again: a later attempt is not blocked by us.
    assert lock_path_for(sock_path).stat().st_size == 0


def test_clean_stop_removes_socket_and_clears_the_record(make_server: Callable[..., ControlServer]) -> None:
    server = make_server()
    lock_path = lock_path_for(server.socket_path)
    assert lock_path.stat().st_size > 0  # the holder record
    server.stop()
    assert not server.socket_path.exists()
    assert lock_path.exists()  # never unlinked (waiters may hold it open)
    assert lock_path.stat().st_size == 0
    # And it can start again.
    server.start_in_thread()
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_stop_leaves_a_socket_that_is_not_ours(make_server: Callable[..., ControlServer]) -> None:
    server = make_server()
    server.socket_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as intruder:
        intruder.bind(str(server.socket_path))
        server.stop()
        assert stat.S_ISSOCK(os.lstat(server.socket_path).st_mode)
    server.socket_path.unlink()  # the intruder's file: the fixture checks no socket is left at the path


def test_stop_lets_an_in_flight_reply_finish(make_server: Callable[..., ControlServer]) -> None:
    server = make_server(ServerConfig(idle_timeout=1.0, write_deadline=5.0, stop_grace=5.0))
    size = 4 * 1024 * 1024
    with connect(server.socket_path, rcvbuf=4096, timeout=10) as reader:
        reader.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
        first = reader.recv(4096)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        rest = read_to_eof(reader)
        stopper.join()
    assert first + rest == blob_reply(size)
    assert not server.socket_path.exists()


# --- access by peer credentials (same uid here; other users in test_server_process.py) --------------


def test_server_uid_always_passes_the_allow_list(make_server: Callable[..., ControlServer]) -> None:
    server = make_server(ServerConfig(allow_uids=frozenset({12345}), idle_timeout=1.0))
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_whoami_context_has_peer_credentials(make_server: Callable[..., ControlServer]) -> None:
    server = make_server()

    @server.command("whoami")
    def whoami(arguments: Any, context: CommandContext) -> dict[str, int]:
        assert context.peer is not None
        return {"pid": context.peer.pid, "uid": context.peer.uid}

    assert ask(server.socket_path, "whoami")["arguments"] == {"pid": os.getpid(), "uid": os.getuid()}


def test_access_allows_by_uid_or_gid() -> None:
    access = Access.of(uids=[1], gids=[5])
    assert access is not None
    assert access.allows(1, 99)
    assert access.allows(99, 5)
    assert not access.allows(2, 6)
    assert Access.of() is None


# --- config commands -------------------------------------------------------------------------------


def test_config_commands_over_a_json_file(sock_dir: Path, make_server: Callable[..., ControlServer]) -> None:
    config_path = sock_dir / "daemon.json"
    config_path.write_text(json.dumps({"Daemon": {"answer": 42}}))
    server = make_server(config_provider=JsonFileConfig(config_path, root_key="Daemon"))
    path = server.socket_path
    assert {"config-get", "config-set", "config-test", "config-reload", "config-write"} <= set(
        ask(path, "list-commands")["arguments"]
    )
    assert ask(path, "config-get") == {"result": 0, "arguments": {"Daemon": {"answer": 42}}}
    assert ask(path, "config-test") == {"result": 1, "text": "Missing mandatory 'arguments' parameter."}
    assert ask(path, "config-test", {"Other": {}}) == {
        "result": 1,
        "text": "Missing mandatory 'Daemon' parameter.",
    }
    assert ask(path, "config-test", {"Daemon": 1}) == {
        "result": 1,
        "text": "'Daemon' parameter expected to be a map.",
    }
    assert ask(path, "config-test", {"Daemon": {"answer": 1}})["text"].startswith("Configuration seems sane")
    assert ask(path, "config-get")["arguments"] == {"Daemon": {"answer": 42}}
    assert ask(path, "config-set", {"Daemon": {"answer": 7}}) == {
        "result": 0,
        "text": "Configuration successful.",
    }
    assert ask(path, "config-get")["arguments"] == {"Daemon": {"answer": 7}}
    written = ask(path, "config-write", {"filename": "saved.json"})
    assert written["result"] == 0
    assert written["arguments"]["filename"] == str(sock_dir / "saved.json")
    assert json.loads((sock_dir / "saved.json").read_text()) == {"Daemon": {"answer": 7}}
    assert ask(path, "config-write", {"filename": "/etc/evil.json"})["result"] == 1
    assert ask(path, "config-reload") == {"result": 0, "text": "Configuration successful."}
    assert ask(path, "config-get")["arguments"] == {"Daemon": {"answer": 42}}
    config_path.write_text("{not json")
    reloaded = ask(path, "config-reload")
    assert reloaded["result"] == 1
    assert reloaded["text"].startswith("Config reload failed: ")


def test_reply_partly_sent_on_the_fast_path_continues_exactly(
    make_server: Callable[..., ControlServer],
) -> None:
    # Hold the engine in a handler while a second client connects and sends, so that its accept finds
    # the whole request already there (the no-registration fast path) and the 2 MiB reply does not fit.
    server = make_server()
    release = threading.Event()

    @server.command("hold")
    def hold(arguments: Any, context: CommandContext) -> None:
        release.wait(10)

    holder = threading.Thread(target=ask, args=(server.socket_path, "hold"))
    holder.start()
    size = 2 * 1024 * 1024
    try:
        with connect(server.socket_path, rcvbuf=4096, timeout=10) as sock:
            sock.sendall(json.dumps({"command": "blob", "arguments": {"size": size}}).encode())
            release.set()
            received = read_to_eof(sock)
    finally:
        release.set()
        holder.join()
    assert received == blob_reply(size)


def test_directory_others_can_write_is_refused(sock_dir: Path) -> None:
    from ctrlsock.errors import UnsafePathError  # noqa: PLC0415

    os.chmod(sock_dir, 0o777)
    server = ControlServer(sock_dir / "ctrl.sock", config=FAST)
    with pytest.raises(UnsafePathError, match="writable by others"):
        server.start_in_thread()
    assert list(sock_dir.iterdir()) == []


def test_socket_path_too_long_is_a_clear_error(sock_dir: Path) -> None:
    from ctrlsock.errors import SocketPathTooLongError  # noqa: PLC0415

    server = ControlServer(sock_dir / ("x" * 120), config=FAST)
    with pytest.raises(SocketPathTooLongError):
        server.start_in_thread()
