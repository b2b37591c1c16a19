"""The asyncio client against a real ctrlsock server, misbehaving servers and a real Kea 2.2.

Every error path runs both clients on the same socket and requires the very same outcome (class,
message, path, byte count): the asyncio client must be a drop-in for the blocking one.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.async_client import send_command_async, send_raw_async
from ctrlsock.client import send_command, send_raw
from ctrlsock.errors import (
    BadReplyError,
    ClientTimeoutError,
    CtrlSockError,
    LocalProtocolError,
    ReplyError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    TruncatedReplyError,
)
from ctrlsock.protocol import Reply, Result
from tests.kea import KeaDaemon
from tests.support import CHILDREN_DIR, REPO_DIR, Child, wait_for_state

Outcome = Reply | tuple[type[CtrlSockError], str, Path | None, int | None]


def outcome(call: Callable[[], Reply]) -> Outcome:
    try:
        return call()
    except CtrlSockError as error:
        return type(error), str(error), getattr(error, "path", None), getattr(error, "received", None)


def both(socket_path: Path, command: str = "version-get", **options: Any) -> Outcome:
    """Send ``command`` with the blocking client, then the asyncio one; they must agree exactly."""
    blocking = outcome(lambda: send_command(socket_path, command, **options))
    in_loop = outcome(lambda: asyncio.run(send_command_async(socket_path, command, **options)))
    assert in_loop == blocking
    return in_loop


def error_of(result: Outcome) -> type[CtrlSockError]:
    assert isinstance(result, tuple), result
    return result[0]


@pytest.fixture
def ctrlsock_server(sock_path: Path) -> Iterator[Child]:
    """A real ctrlsock server (the threaded embedding) in a child process, serving ``sock_path``."""
    with Child("server_daemon.py", "thread", sock_path) as child:
        child.expect_ready()
        yield child


@pytest.fixture
def peer(sock_dir: Path) -> Iterator[Callable[[str], tuple[Child, Path]]]:
    """Start tests/children/client_peer.py in a MODE; returns the child and its socket."""
    children: list[Child] = []

    def start(mode: str) -> tuple[Child, Path]:
        path = sock_dir / f"{mode}.sock"
        child = Child("client_peer.py", path, mode)
        children.append(child)
        child.expect_ready()
        return child, path

    try:
        yield start
    finally:
        for child in children:
            child.kill()


# --- a real ctrlsock server -----------------------------------------------------------------------


def test_async_client_gets_the_real_servers_replies(ctrlsock_server: Child, sock_path: Path) -> None:
    async def scenario() -> list[Reply]:
        return [
            await send_command_async(sock_path, "version-get"),
            await send_command_async(sock_path, "list-commands", service=["dhcp4"]),
            await send_command_async(sock_path, "no-such-command"),
            await send_command_async(sock_path, "whoami", {"ignored": [1, 2.5, None, True]}),
        ]

    version, commands, unknown, whoami = asyncio.run(scenario())
    assert version.ok
    assert version.text == "9.8.7"
    assert isinstance(commands.arguments, list)
    assert {"blob", "whoami", "version-get"} <= set(commands.arguments)
    assert unknown == Reply(Result.UNSUPPORTED, "'no-such-command' command not supported.")
    assert isinstance(whoami.arguments, dict)
    assert whoami.arguments["pid"] == os.getpid()
    assert whoami.arguments["server-pid"] == ctrlsock_server.pid
    with pytest.raises(ReplyError, match=r"^result 2 \(unsupported\): 'no-such-command' command not"):
        unknown.raise_for_result()


def test_async_client_reads_a_large_reply_whole(ctrlsock_server: Child, sock_path: Path) -> None:
    size = 8 * 1024 * 1024
    reply = asyncio.run(send_command_async(sock_path, "blob", {"size": size}, timeout=30))
    assert isinstance(reply.arguments, dict)
    assert reply.arguments["blob"] == "x" * size


def test_send_raw_async_returns_the_same_bytes_as_send_raw(ctrlsock_server: Child, sock_path: Path) -> None:
    request = b'/* a comment */ {"command": "version-get"}'
    in_loop = asyncio.run(send_raw_async(sock_path, request))
    assert in_loop == send_raw(sock_path, request)
    assert in_loop.startswith(b'{"result":0,"text":"9.8.7"')


def test_many_concurrent_calls_on_one_loop_each_get_their_own_reply(
    ctrlsock_server: Child, sock_path: Path
) -> None:
    sizes = [1000 + index for index in range(300)]

    async def scenario() -> list[Reply]:
        calls = [send_command_async(sock_path, "blob", {"size": size}, timeout=60) for size in sizes]
        return await asyncio.gather(*calls)

    replies = asyncio.run(scenario())
    for size, reply in zip(sizes, replies, strict=True):
        assert reply.ok
        assert isinstance(reply.arguments, dict)
        assert reply.arguments["blob"] == "x" * size


def test_timeout_when_the_server_is_stopped(ctrlsock_server: Child, sock_path: Path) -> None:
    # A SIGSTOPped server's socket still accepts into the backlog and takes the request: no reply comes.
    os.kill(ctrlsock_server.pid, signal.SIGSTOP)
    wait_for_state(ctrlsock_server.pid, "T")
    result = both(sock_path, timeout=0.3)
    assert result == (
        ClientTimeoutError,
        f"timed out reading the reply from {sock_path}: 0.3 s passed without an answer",
        sock_path,
        None,
    )


def test_permission_denied_as_nobody(nobody_dir: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv to run a client as nobody")
    nobody_dir.chmod(0o755)  # nobody may reach the socket; only its mode (0600, root's) refuses
    sock_path = nobody_dir / "ctrl.sock"
    with Child("server_daemon.py", "thread", sock_path) as server:
        server.expect_ready()
        lines = []
        for client in ("blocking", "asyncio"):
            done = subprocess.run(
                [
                    *(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable),
                    *(str(CHILDREN_DIR / "client_call.py"), client, str(sock_path), "version-get"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO_DIR,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            lines.append(done.stdout.strip())
    assert lines == [f"error SocketPermissionError permission denied: {sock_path}"] * 2


# --- every error, both clients ---------------------------------------------------------------------


def test_missing_socket_and_missing_directory(sock_dir: Path) -> None:
    for path in (sock_dir / "nothing.sock", sock_dir / "no" / "dir.sock"):
        result = both(path)
        assert result == (SocketNotFoundError, f"no socket at {path}", path, None)
    assert issubclass(SocketNotFoundError, FileNotFoundError)


def test_arguments_json_cannot_encode_are_refused_before_connecting(sock_path: Path) -> None:
    # The socket does not even exist: encoding comes first, and its error is ours, not the server's.
    result = both(sock_path, "x", arguments={"when": {1, 2}})
    assert error_of(result) is LocalProtocolError
    assert isinstance(result, tuple)
    assert result[1].startswith("cannot encode as JSON: ")


def test_refused_by_a_socket_nobody_listens_on(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(sock_path))
        assert error_of(both(sock_path)) is ServerRefusedError


def test_refused_after_the_server_was_killed(ctrlsock_server: Child, sock_path: Path) -> None:
    # SIGKILL leaves the socket file behind with nobody listening: Kea's "stale socket".
    ctrlsock_server.kill()
    assert error_of(both(sock_path)) is ServerRefusedError


def test_path_too_long_is_refused_before_connecting(sock_dir: Path) -> None:
    path = sock_dir / ("x" * (108 - len(str(sock_dir)) - 1))
    assert error_of(both(path)) is SocketPathTooLongError


def test_truncated_reply_from_a_server_that_closes_mid_reply(
    peer: Callable[[str], tuple[Child, Path]],
) -> None:
    _, path = peer("truncate")
    result = both(path)
    assert result == (
        TruncatedReplyError,
        f"{path}: reply truncated: the server closed the connection after 40 bytes",
        path,
        40,
    )
    with pytest.raises(TruncatedReplyError):
        asyncio.run(send_raw_async(path, b'{"command":"x"}'))


@pytest.mark.parametrize("mode", ["garbage", "not-reply"])
def test_bad_reply(peer: Callable[[str], tuple[Child, Path]], mode: str) -> None:
    _, path = peer(mode)
    result = both(path)
    assert error_of(result) is BadReplyError
    assert isinstance(result, tuple)
    assert result[1].startswith(f"bad reply from {path}: ")


def test_a_reply_sent_before_the_request_is_finished_is_still_read(
    peer: Callable[[str], tuple[Child, Path]],
) -> None:
    _, path = peer("early")
    assert both(path, "config-set", arguments="y" * (16 * 1024 * 1024)) == Reply(1, "command too large")


def test_send_raw_async_passes_complete_non_replies_through(
    peer: Callable[[str], tuple[Child, Path]],
) -> None:
    _, path = peer("not-reply")
    assert asyncio.run(send_raw_async(path, b'{"command":"x"}')) == b'{"x":1}'


def test_a_complete_reply_counts_when_the_server_keeps_the_connection_open(
    peer: Callable[[str], tuple[Child, Path]],
) -> None:
    _, path = peer("linger")
    assert both(path, timeout=0.3) == Reply(0, "lingering")


def test_timeout_in_the_middle_of_a_reply_names_the_bytes(peer: Callable[[str], tuple[Child, Path]]) -> None:
    _, path = peer("partial")
    result = both(path, timeout=0.3)
    assert result == (
        ClientTimeoutError,
        f"timed out reading the reply from {path}: 0.3 s passed after 12 bytes of an incomplete reply",
        path,
        None,
    )


def fill_backlog(listener: socket.socket, path: Path) -> list[socket.socket]:
    """Connect until the listen backlog is full (nobody accepts); the caller closes what it gets."""
    pending: list[socket.socket] = []
    while True:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        pending.append(filler)
        try:
            filler.connect(str(path))
        except BlockingIOError:
            return pending


def test_connect_timeout_when_the_backlog_stays_full(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(0)
        pending = fill_backlog(listener, sock_path)
        try:
            result = both(sock_path, timeout=5, connect_timeout=0.2)
        finally:
            for filler in pending:
                filler.close()
    assert result == (
        ClientTimeoutError,
        f"timed out connecting to {sock_path}: 0.2 s passed without an answer",
        sock_path,
        None,
    )


def test_async_connect_waits_for_room_in_a_full_backlog(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(0)
        listener.setblocking(False)
        pending = fill_backlog(listener, sock_path)
        accepted: list[socket.socket] = []

        async def scenario() -> Reply:
            loop = asyncio.get_running_loop()
            call = asyncio.create_task(send_command_async(sock_path, "version-get", timeout=10))
            # The task runs up to its first pause: one connect() refused with EAGAIN, a retry scheduled.
            await asyncio.sleep(0)
            assert not call.done()
            # Make room: accept the fillers that got in (all but the last, refused one).
            for _ in range(len(pending) - 1):
                connection, _ = await loop.sock_accept(listener)
                accepted.append(connection)
            # The client gets in on a retry (or fails, which ends the wait too).
            accept = asyncio.create_task(loop.sock_accept(listener))
            await asyncio.wait({accept, call}, return_when=asyncio.FIRST_COMPLETED)
            assert accept.done(), call
            client, _ = accept.result()
            accepted.append(client)
            request = await loop.sock_recv(client, 65536)
            assert request == b'{"command":"version-get"}'
            await loop.sock_sendall(client, b'{"result":0,"text":"let in"}')
            client.close()
            return await call

        try:
            reply = asyncio.run(scenario())
        finally:
            for connection in pending + accepted:
                connection.close()
    assert reply == Reply(0, "let in")


def test_a_cancelled_call_closes_its_socket(peer: Callable[[str], tuple[Child, Path]]) -> None:
    child, path = peer("hold")

    def client_fds() -> list[int]:
        found = []
        for name in os.listdir("/proc/self/fd"):
            try:
                probe = socket.socket(fileno=int(name))
            except OSError:
                continue
            try:
                if probe.family == socket.AF_UNIX and probe.getpeername() == str(path):
                    found.append(int(name))
            except OSError:
                pass
            finally:
                probe.detach()
        return found

    async def scenario() -> None:
        call = asyncio.create_task(send_command_async(path, "hold", timeout=30))
        assert await asyncio.to_thread(child.readline) == "request"
        [fd] = client_fds()
        assert not os.get_inheritable(fd)  # close-on-exec, like the blocking client's
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client_fds() == []
        assert await asyncio.to_thread(child.readline) == "closed"  # the server saw the connection end

    asyncio.run(scenario())


# --- a real Kea 2.2 ----------------------------------------------------------------------------------


@pytest.mark.kea
def test_real_kea_answers_both_clients_alike(kea_daemon: KeaDaemon) -> None:
    path = kea_daemon.socket_path
    version = both(path)
    assert isinstance(version, Reply)
    assert version.ok
    assert version.text.startswith("2.")
    status = asyncio.run(send_command_async(path, "status-get", service=["dhcp4"]))
    assert isinstance(status.arguments, dict)
    assert status.arguments["pid"] == kea_daemon.pid
    assert both(path, "no-such-command") == Reply(2, "'no-such-command' command not supported.")
    assert asyncio.run(send_raw_async(path, b"x")) == b'{ "result": 1, "text": "invalid first character x" }'
    with pytest.raises(TruncatedReplyError, match="without replying"):
        # Kea closes silently when the request ends before the document does.
        asyncio.run(send_raw_async(path, b'{"command":'))


@pytest.mark.kea
def test_real_kea_answers_many_concurrent_async_calls(kea_daemon: KeaDaemon) -> None:
    path = kea_daemon.socket_path

    async def scenario() -> list[Reply]:
        return await asyncio.gather(*(send_command_async(path, "list-commands") for _ in range(50)))

    replies = asyncio.run(scenario())
    assert replies[0].ok
    assert all(reply == replies[0] for reply in replies)


@pytest.mark.kea
def test_real_kea_stopped_times_out_alike(kea_daemon: KeaDaemon) -> None:
    path = kea_daemon.socket_path
    os.kill(kea_daemon.pid, signal.SIGSTOP)
    try:
        wait_for_state(kea_daemon.pid, "T")
        result = both(path, timeout=0.3)
    finally:
        os.kill(kea_daemon.pid, signal.SIGCONT)
    assert error_of(result) is ClientTimeoutError


# --- the README's client example ---------------------------------------------------------------------


def readme_client_example() -> str:
    readme = (REPO_DIR / "README.md").read_text()
    section = readme.split("## Talking to a control socket from Python\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    return str(code)


def test_readme_client_example_prints_the_servers_pid(ctrlsock_server: Child, sock_path: Path) -> None:
    code = readme_client_example().replace("/run/mydaemon/ctrl.sock", str(sock_path))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_DIR, check=True
    )
    assert done.stdout == f"pid {ctrlsock_server.pid}\n"


def test_readme_client_example_reports_a_missing_socket(sock_path: Path) -> None:
    code = readme_client_example().replace("/run/mydaemon/ctrl.sock", str(sock_path))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_DIR, check=True
    )
    assert done.stdout == f"unreachable: no socket at {sock_path}\n"


@pytest.mark.kea
def test_real_kea_killed_leaves_a_socket_both_clients_call_refused(kea_daemon: KeaDaemon) -> None:
    path = kea_daemon.socket_path
    kea_daemon.kill()
    assert path.exists()  # SIGKILL leaves Kea's socket file behind
    result = both(path)
    assert result == (
        ServerRefusedError,
        f"connection refused: nothing accepts connections on {path}",
        path,
        None,
    )
