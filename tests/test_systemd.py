"""ctrlsock.server.systemd against real descriptors, real child processes and real datagram sockets.

Passed descriptors are tested in children only: adopting fd 3 inside the pytest process would wrap and
later close a descriptor pytest owns. The in-process tests use environments that adopt nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import ServerError
from ctrlsock.server.systemd import is_unix_stream_listener, listen_fds, listen_fds_with_names, notify
from tests.support import read_line, stop_child

CHILD = Path(__file__).parent / "children" / "systemd_listener.py"
READ_TIMEOUT = 10.0
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")

# Plays the service manager's last step: move the given descriptors to 3, 4, ... (through high numbers
# first, so that a source already sitting on 4 is not overwritten by the move to 4), set LISTEN_PID to
# its own pid (kept by exec) unless told otherwise, then exec the service.
EXEC_WITH_FDS = """
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for index, fd in enumerate(parked):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid()) if sys.argv[2] == "self" else sys.argv[2]
os.execv(sys.argv[3], sys.argv[3:])
"""


def _start_with_fds(
    socks: Sequence[socket.socket | int],
    *,
    listen_pid: str = "self",
    env: dict[str, str],
    args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    fds = [item if isinstance(item, int) else item.fileno() for item in socks]
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            EXEC_WITH_FDS,
            ",".join(map(str, fds)),
            listen_pid,
            sys.executable,
            str(CHILD),
            *args,
        ],
        pass_fds=fds,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _report(process: subprocess.Popen[str]) -> dict[str, Any]:
    line = read_line(process)
    assert not line.startswith("error:"), line
    report: dict[str, Any] = json.loads(line)
    assert read_line(process) == "ready"
    return report


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def _exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(READ_TIMEOUT)
        client.connect(str(path))
        client.sendall(data)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def clean_listen_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


# --- listen_fds in this process: only environments that adopt nothing --------------------------------


def test_listen_fds_is_empty_without_environment(clean_listen_env: pytest.MonkeyPatch) -> None:
    assert listen_fds() == []
    assert listen_fds_with_names() == []


def test_listen_fds_ignores_descriptors_meant_for_another_pid(clean_listen_env: pytest.MonkeyPatch) -> None:
    clean_listen_env.setenv("LISTEN_PID", str(os.getppid()))
    clean_listen_env.setenv("LISTEN_FDS", "1")
    assert listen_fds() == []
    # Unset even when nothing was adopted (libsystemd does the same): our children must not see them.
    assert "LISTEN_PID" not in os.environ
    assert "LISTEN_FDS" not in os.environ


def test_listen_fds_keeps_environment_when_asked(clean_listen_env: pytest.MonkeyPatch) -> None:
    clean_listen_env.setenv("LISTEN_PID", str(os.getppid()))
    clean_listen_env.setenv("LISTEN_FDS", "1")
    clean_listen_env.setenv("LISTEN_FDNAMES", "ctrl")
    assert listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDNAMES"] == "ctrl"


def test_listen_fds_with_zero_descriptors_is_empty(clean_listen_env: pytest.MonkeyPatch) -> None:
    clean_listen_env.setenv("LISTEN_PID", str(os.getpid()))
    clean_listen_env.setenv("LISTEN_FDS", "0")
    assert listen_fds() == []


@pytest.mark.parametrize(
    ("pid", "fds", "names", "message"),
    [
        ("abc", "1", None, "$LISTEN_PID must be a decimal number, not 'abc'"),
        (" 12", "1", None, "$LISTEN_PID must be a decimal number"),
        ("self", "-1", None, "$LISTEN_FDS must be a decimal number, not '-1'"),
        ("self", "two", None, "$LISTEN_FDS must be a decimal number"),
        ("self", "2", "ctrl", "$LISTEN_FDNAMES names 1 descriptors but $LISTEN_FDS is 2"),
    ],
)
def test_listen_fds_rejects_malformed_variables(
    clean_listen_env: pytest.MonkeyPatch, pid: str, fds: str, names: str | None, message: str
) -> None:
    clean_listen_env.setenv("LISTEN_PID", str(os.getpid()) if pid == "self" else pid)
    clean_listen_env.setenv("LISTEN_FDS", fds)
    if names is not None:
        clean_listen_env.setenv("LISTEN_FDNAMES", names)
    with pytest.raises(ServerError, match="^" + message.replace("$", r"\$")):
        listen_fds_with_names()
    assert "LISTEN_PID" not in os.environ


# --- listen_fds in a child that really received descriptors -------------------------------------------


def test_child_adopts_passed_listener_as_close_on_exec_socket(sock_dir: Path) -> None:
    path = sock_dir / "ctrl.sock"
    with _listener(path) as listener:
        process = _start_with_fds([listener], env={"LISTEN_FDS": "1"})
    try:
        report = _report(process)
        assert report["sockets"] == [
            {
                "name": "unknown",
                "fd": 3,
                "family": "AF_UNIX",
                "type": "SOCK_STREAM",
                "unix_stream_listener": True,
                "inheritable": False,
                "sockname": str(path),
            }
        ]
        assert report["environment"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
        # The parent closed its copy: only the child can be answering.
        assert _exchange(path, b"hello") == b"echo:hello"
    finally:
        stop_child(process)


def test_child_gets_names_of_several_descriptors_in_order(sock_dir: Path) -> None:
    with _listener(sock_dir / "a.sock") as first, _listener(sock_dir / "b.sock") as second:
        process = _start_with_fds(
            [first, second], env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "ctrl:metrics"}, args=["--keep-env"]
        )
    try:
        report = _report(process)
        assert [(item["name"], item["fd"], item["sockname"]) for item in report["sockets"]] == [
            ("ctrl", 3, str(sock_dir / "a.sock")),
            ("metrics", 4, str(sock_dir / "b.sock")),
        ]
        assert report["environment"]["LISTEN_FDNAMES"] == "ctrl:metrics"
        assert report["environment"]["LISTEN_PID"] == str(report["pid"])
    finally:
        stop_child(process)


def test_child_leaves_descriptors_meant_for_another_pid_alone(sock_dir: Path) -> None:
    with _listener(sock_dir / "ctrl.sock") as listener:
        process = _start_with_fds([listener], listen_pid=str(os.getpid()), env={"LISTEN_FDS": "1"})
    try:
        report = _report(process)
        assert report["sockets"] == []
        assert report["fd3_inheritable"] is True  # untouched: not ours to mark close-on-exec
    finally:
        stop_child(process)


def test_passed_descriptor_that_is_not_a_socket_is_an_error() -> None:
    read_end, write_end = os.pipe()
    try:
        process = _start_with_fds([read_end], env={"LISTEN_FDS": "1"})
    finally:
        os.close(read_end)
        os.close(write_end)
    try:
        assert read_line(process).startswith("error: passed descriptor 3 is not a usable socket")
        assert process.wait(READ_TIMEOUT) == 2
    finally:
        stop_child(process)


def _require_socket_activate() -> str:
    # Skipped on a developer's machine without it; under CI (.ci/run installs systemd) a failure.
    if SOCKET_ACTIVATE is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-socket-activate is not installed; .ci/run must install systemd")
        pytest.skip("systemd-socket-activate is not installed")
    return SOCKET_ACTIVATE


def test_systemd_socket_activate_starts_child_with_named_listener(sock_dir: Path) -> None:
    socket_activate = _require_socket_activate()
    path = sock_dir / "ctrl.sock"
    process = subprocess.Popen(
        [socket_activate, "--listen", str(path), "--fdname=ctrl", sys.executable, str(CHILD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith(f"Listening on {path}")
        # systemd-socket-activate execs the service on the first connection, as PID 1 does; that
        # connection waits in the backlog and the service answers it.
        assert _exchange(path, b"first") == b"echo:first"
        report = _report(process)
        assert report["pid"] == process.pid  # exec'd in place: LISTEN_PID matched
        assert [(item["name"], item["fd"], item["inheritable"]) for item in report["sockets"]] == [
            ("ctrl", 3, False)
        ]
    finally:
        stop_child(process)


# --- is_unix_stream_listener ------------------------------------------------------------------------


def test_listening_unix_stream_socket_is_a_listener(sock_dir: Path) -> None:
    path = sock_dir / "ctrl.sock"
    with _listener(path) as sock:
        assert is_unix_stream_listener(sock)
        assert is_unix_stream_listener(sock, path)
        assert is_unix_stream_listener(sock, str(path))
        assert not is_unix_stream_listener(sock, sock_dir / "other.sock")


def test_abstract_listener_matches_its_abstract_name() -> None:
    name = f"\0cs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(name)
        sock.listen()
        assert is_unix_stream_listener(sock, name)
        assert not is_unix_stream_listener(sock, name[1:])


def test_sockets_that_are_not_unix_stream_listeners(sock_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound_only:
        bound_only.bind(str(sock_dir / "bound.sock"))
        assert not is_unix_stream_listener(bound_only)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        datagram.bind(str(sock_dir / "dgram.sock"))
        assert not is_unix_stream_listener(datagram)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        assert not is_unix_stream_listener(tcp)
    left, right = socket.socketpair()
    with left, right:
        assert not is_unix_stream_listener(left)
    closed = _listener(sock_dir / "closed.sock")
    closed.close()
    assert not is_unix_stream_listener(closed)


# --- notify -----------------------------------------------------------------------------------------


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(READ_TIMEOUT)
    # systemd attributes a notification to a unit by the sender's kernel credentials.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return sock


def _receive(sock: socket.socket) -> tuple[bytes, int]:
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = -1
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[:4], sys.byteorder)
    return data, pid


def test_notify_without_notify_socket_returns_false(clean_listen_env: pytest.MonkeyPatch) -> None:
    assert notify("READY=1") is False
    clean_listen_env.setenv("NOTIFY_SOCKET", "")
    assert notify("READY=1") is False


def test_notify_sends_state_to_path_socket_with_our_credentials(
    clean_listen_env: pytest.MonkeyPatch, sock_dir: Path
) -> None:
    path = sock_dir / "notify"
    with _receiver(str(path)) as receiver:
        clean_listen_env.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1\nSTATUS=serving") is True
        assert _receive(receiver) == (b"READY=1\nSTATUS=serving", os.getpid())
        assert notify("STOPPING=1") is True  # the variable stays for later messages
        assert _receive(receiver)[0] == b"STOPPING=1"


def test_notify_sends_to_abstract_socket_named_with_at(clean_listen_env: pytest.MonkeyPatch) -> None:
    name = f"cs-notify-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as receiver:
        clean_listen_env.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1") is True
        assert _receive(receiver)[0] == b"READY=1"


def test_notify_to_missing_or_invalid_socket_returns_false(
    clean_listen_env: pytest.MonkeyPatch, sock_dir: Path
) -> None:
    clean_listen_env.setenv("NOTIFY_SOCKET", str(sock_dir / "gone"))
    assert notify("READY=1") is False
    clean_listen_env.setenv("NOTIFY_SOCKET", "relative/notify")
    assert notify("READY=1") is False
    clean_listen_env.setenv("NOTIFY_SOCKET", f"@cs-nobody-{uuid.uuid4().hex}")
    assert notify("READY=1") is False
    with _listener(sock_dir / "stream.sock"):  # a stream socket cannot take datagrams
        clean_listen_env.setenv("NOTIFY_SOCKET", str(sock_dir / "stream.sock"))
        assert notify("READY=1") is False


def test_notify_reaches_manager_from_a_child_started_under_it(sock_dir: Path) -> None:
    path = sock_dir / "notify"
    with _receiver(str(path)) as receiver:
        code = (
            "from ctrlsock.server.systemd import notify; import sys; sys.exit(0 if notify('READY=1') else 1)"
        )
        child = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "NOTIFY_SOCKET": str(path)},
            cwd=Path(__file__).parents[1],
            timeout=READ_TIMEOUT,
            check=False,
        )
        assert child.returncode == 0
        data, pid = _receive(receiver)
        assert data == b"READY=1"
        assert pid not in (-1, os.getpid())


# --- ctrlsock serve under a service manager --------------------------------------------------------
# The manager's side is played for real: this test binds and keeps the listening socket (as PID 1 does
# for ctrlsock@.socket), or systemd-socket-activate does; NOTIFY_SOCKET is a datagram socket bound here.

REPO = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "ctrlsock", "serve"]


def _serve_env(notify_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "NOTIFY_SOCKET": str(notify_path),
        **extra,
    }


def _request(path: Path, command: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(_exchange(path, json.dumps({"command": command}).encode()))
    return reply


def _wait_for_state(receiver: socket.socket, wanted: bytes) -> int:
    """Read notifications until one carries ``wanted``; return the sender's pid."""
    while True:
        data, pid = _receive(receiver)
        if wanted in data.split(b"\n"):
            return pid


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(READ_TIMEOUT)


def test_serve_notifies_ready_then_stopping(sock_dir: Path) -> None:
    path = sock_dir / "ctrl.sock"
    with _receiver(str(sock_dir / "notify")) as receiver:
        process = subprocess.Popen([*SERVE, str(path)], env=_serve_env(sock_dir / "notify"), text=True)
        try:
            assert _wait_for_state(receiver, b"READY=1") == process.pid  # NotifyAccess=main holds
            assert _request(path, "list-commands")["result"] == 0  # READY=1 means it answers
            assert _stop(process) == 0
            assert _wait_for_state(receiver, b"STOPPING=1") == process.pid
        finally:
            stop_child(process)


def test_serve_adopts_manager_socket_and_leaves_it_in_place_across_restarts(sock_dir: Path) -> None:
    path = sock_dir / "ctrl.sock"
    notify_path = sock_dir / "notify"
    env = _serve_env(notify_path, LISTEN_FDS="1", LISTEN_FDNAMES="control")
    serve = [str(path)]
    with _listener(path) as listener, _receiver(str(notify_path)) as receiver:
        listener_inode = path.lstat().st_ino
        process = _start_serve(listener, env, serve)
        try:
            assert _wait_for_state(receiver, b"READY=1") == process.pid
            reply = _request(path, "status-get")
            assert reply["result"] == 0
            assert reply["arguments"]["pid"] == process.pid
            assert _stop(process) == 0
        finally:
            stop_child(process)
        # The service is gone; the manager's socket is not: same file, still accepting.
        assert path.lstat().st_ino == listener_inode
        assert is_unix_stream_listener(listener, path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waiting:
            waiting.settimeout(READ_TIMEOUT)
            waiting.connect(str(path))  # queued in the backlog while no service runs
            waiting.sendall(b'{"command": "list-commands"}')
            process = _start_serve(listener, env, serve)  # the manager starts the service again
            try:
                chunks = []
                while chunk := waiting.recv(65536):
                    chunks.append(chunk)
                assert json.loads(b"".join(chunks))["result"] == 0
                assert _stop(process) == 0
            finally:
                stop_child(process)
        assert path.lstat().st_ino == listener_inode


def _start_serve(listener: socket.socket, env: dict[str, str], args: list[str]) -> subprocess.Popen[str]:
    fd = listener.fileno()
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            EXEC_WITH_FDS,
            str(fd),
            "self",
            sys.executable,
            "-m",
            "ctrlsock",
            "serve",
            *args,
        ],
        pass_fds=[fd],
        env=env,
        text=True,
    )


def test_systemd_socket_activate_round_trip_with_ctrlsock_serve(sock_dir: Path) -> None:
    socket_activate = _require_socket_activate()
    path = sock_dir / "ctrl.sock"
    notify_path = sock_dir / "notify"
    with _receiver(str(notify_path)) as receiver:
        process = subprocess.Popen(
            [
                socket_activate,
                "--listen",
                str(path),
                "--fdname=control",
                f"--setenv=PYTHONPATH={REPO}",
                f"--setenv=NOTIFY_SOCKET={notify_path}",
                *SERVE,
                str(path),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            assert process.stderr.readline().startswith(f"Listening on {path}")
            listener_inode = path.lstat().st_ino
            # The first connection starts the service, which answers it.
            reply = _request(path, "list-commands")
            assert reply["result"] == 0
            assert "status-get" in reply["arguments"]
            assert _wait_for_state(receiver, b"READY=1") == process.pid
            assert _request(path, "status-get")["arguments"]["pid"] == process.pid
            assert _stop(process) == 0
        finally:
            stop_child(process)
        # ctrlsock serve did not bind this socket, so it must not unlink it.
        assert path.lstat().st_ino == listener_inode
