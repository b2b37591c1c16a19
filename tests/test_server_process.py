"""The server as real processes: SIGTERM in each embedding, socket activation, umask, other users."""

from __future__ import annotations

import grp
import json
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import LockHeldError
from ctrlsock.lock import lock_path_for
from ctrlsock.server import ControlServer, ServerConfig
from tests.children.server_client import ask
from tests.support import ASK_SCRIPT, read_line, stop_child

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "children" / "server_daemon.py"
READY_TIMEOUT = 20.0


@pytest.fixture
def spawn() -> Iterator[Any]:
    children: list[subprocess.Popen[str]] = []

    def start(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, **kwargs
        )
        children.append(process)
        return process

    try:
        yield start
    finally:
        for process in children:
            stop_child(process)


@pytest.mark.parametrize("embedding", ["thread", "asyncio", "daemon"])
def test_sigterm_stops_cleanly(spawn: Any, sock_path: Path, embedding: str) -> None:
    child = spawn(embedding, str(sock_path))
    assert read_line(child) == "ready"
    reply = ask(sock_path, "status-get")
    assert reply["arguments"]["pid"] == child.pid
    assert lock_path_for(sock_path).stat().st_size > 0
    child.send_signal(signal.SIGTERM)
    assert read_line(child) == "stopped 0"
    assert child.wait(timeout=10) == 0
    assert not sock_path.exists()
    assert lock_path_for(sock_path).stat().st_size == 0  # record cleared: "stopped cleanly"


@pytest.mark.parametrize("embedding", ["thread", "asyncio", "daemon"])
def test_shutdown_command_stops_the_process(spawn: Any, sock_path: Path, embedding: str) -> None:
    child = spawn(embedding, str(sock_path))
    assert read_line(child) == "ready"
    assert ask(sock_path, "shutdown", {"exit-value": 5}) == {"result": 0, "text": "Shutting down."}
    assert read_line(child) == "stopped 5"
    assert child.wait(timeout=10) == 0
    assert not sock_path.exists()


def test_second_process_fails_naming_the_first(spawn: Any, sock_path: Path) -> None:
    first = spawn("thread", str(sock_path))
    assert read_line(first) == "ready"
    second = spawn("daemon", str(sock_path))
    line = read_line(second)
    assert line.startswith("error: cannot lock socket lockfile")
    assert f"pid {first.pid}" in line
    assert second.wait(timeout=10) == 2
    with pytest.raises(LockHeldError, match=f"pid {first.pid}"):
        ControlServer(sock_path).start_in_thread()
    assert ask(sock_path, "version-get")["text"] == "9.8.7"


@pytest.mark.parametrize(("umask", "mode"), [("0", "600"), ("077", "660"), ("022", "660")])
def test_socket_has_its_mode_whatever_the_umask(spawn: Any, sock_path: Path, umask: str, mode: str) -> None:
    child = spawn("thread", str(sock_path), "--umask", umask, "--mode", mode)
    assert read_line(child) == "ready"
    assert stat.S_IMODE(os.lstat(sock_path).st_mode) == int(mode, 8)


def _activate(listener_fd: int) -> None:
    # What systemd does between fork and exec: the passed socket at fd 3, LISTEN_PID naming the new process.
    os.dup2(listener_fd, 3, inheritable=True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = "control"


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_socket_activation_uses_the_passed_socket_and_never_unlinks_it(
    spawn: Any, sock_path: Path, embedding: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(16)
        inode = os.lstat(sock_path).st_ino
        child = spawn(
            embedding,
            str(sock_path),
            pass_fds=(3,),
            preexec_fn=lambda: _activate(listener.fileno()),
        )
        assert read_line(child) == "ready"
        status = ask(sock_path, "status-get")["arguments"]
        assert status["pid"] == child.pid
        assert status["socket-activated"] is True
        child.send_signal(signal.SIGTERM)
        assert read_line(child) == "stopped 0"
        assert child.wait(timeout=10) == 0
        # systemd's socket stays: same file, still listening (ours, the "manager's", still holds it).
        assert os.lstat(sock_path).st_ino == inode
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(sock_path))
    assert lock_path_for(sock_path).stat().st_size == 0


# --- other users (SO_PEERCRED) ------------------------------------------------------------------------


def ask_as(user: str, path: Path, command: str) -> dict[str, Any]:
    result = subprocess.run(
        [OTHER_USER_PYTHON, "-c", ASK_SCRIPT, str(path), command],
        user=user,
        group=grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


# The test interpreter may live under /root; the other user's client needs only the stdlib.
OTHER_USER_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another user needs root")


@pytest.fixture
def shared_server(sock_dir: Path) -> Iterator[Any]:
    """Start a server in a directory and socket another user can reach."""
    os.chmod(sock_dir, 0o711)
    servers: list[ControlServer] = []

    def start(config: ServerConfig, **kwargs: Any) -> ControlServer:
        server = ControlServer(sock_dir / "ctrl.sock", config=config, **kwargs)
        server.start_in_thread()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@needs_root
def test_peer_uid_not_allowed_is_refused(shared_server: Any) -> None:
    nobody = pwd.getpwnam("nobody")
    server = shared_server(ServerConfig(mode=0o666, allow_uids=frozenset({4242})))
    reply = ask_as("nobody", server.socket_path, "version-get")
    assert reply == {
        "result": 1,
        "text": (
            f"access denied: 'version-get' command not allowed for uid {nobody.pw_uid} (gid {nobody.pw_gid})"
        ),
    }
    assert ask(server.socket_path, "version-get")["result"] == 0  # root, the server's own uid


@needs_root
def test_peer_gid_allowed_is_answered(shared_server: Any) -> None:
    nobody = pwd.getpwnam("nobody")
    server = shared_server(ServerConfig(mode=0o666, allow_gids=frozenset({nobody.pw_gid})))
    assert ask_as("nobody", server.socket_path, "version-get")["result"] == 0


@needs_root
def test_per_command_access_refuses_only_that_command(shared_server: Any) -> None:
    from ctrlsock.server import Access  # noqa: PLC0415

    server = shared_server(ServerConfig(mode=0o666, command_access={"shutdown": Access(uids=frozenset({0}))}))
    assert ask_as("nobody", server.socket_path, "version-get")["result"] == 0
    refused = ask_as("nobody", server.socket_path, "shutdown")
    assert refused["result"] == 1
    assert refused["text"].startswith("access denied: 'shutdown' command not allowed for uid")
    assert server.is_serving


@needs_root
def test_socket_mode_keeps_other_users_out(shared_server: Any) -> None:
    server = shared_server(ServerConfig())  # 0600
    result = subprocess.run(
        [OTHER_USER_PYTHON, "-c", ASK_SCRIPT, str(server.socket_path), "version-get"],
        user="nobody",
        group=grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert result.returncode != 0
    assert "PermissionError" in result.stderr


def test_sd_notify_ready_and_stopping(spawn: Any, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(sock_dir / "notify"))
        manager.settimeout(READY_TIMEOUT)
        child = spawn("thread", str(sock_path), env={**os.environ, "NOTIFY_SOCKET": str(sock_dir / "notify")})
        assert read_line(child) == "ready"
        assert manager.recv(4096) == b"READY=1"
        child.send_signal(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        assert read_line(child) == "stopped 0"


def _low_nofile() -> None:
    import resource  # noqa: PLC0415

    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_running_out_of_descriptors_pauses_accepts_and_recovers(
    spawn: Any, sock_path: Path, embedding: str
) -> None:
    child = spawn(embedding, str(sock_path), preexec_fn=_low_nofile, stderr=subprocess.PIPE)
    assert read_line(child) == "ready"
    held = []
    try:
        for _ in range(80):  # more than the server can hold: the rest wait in the listen backlog
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(sock_path))
            held.append(sock)
        assert child.stderr is not None
        ready, _, _ = select.select([child.stderr], [], [], READY_TIMEOUT)
        assert ready, "the server never ran out of descriptors"
        assert "pausing accepts" in child.stderr.readline()
    finally:
        for sock in held:
            sock.close()
    assert ask(sock_path, "version-get", timeout=10)["text"] == "9.8.7"
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert read_line(child) == "stopped 0"
    assert child.wait(timeout=10) == 0


def test_passed_socket_for_another_path_is_left_to_the_daemon(spawn: Any, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(sock_dir / "http.sock"))
        other.listen(4)
        child = spawn("thread", str(sock_path), pass_fds=(3,), preexec_fn=lambda: _activate(other.fileno()))
        assert read_line(child) == "ready"
        status = ask(sock_path, "status-get")["arguments"]
        assert status["socket-activated"] is False
        assert f"socket:[{os.fstat(other.fileno()).st_ino}]" in {
            os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")
        }
        child.send_signal(signal.SIGTERM)
        assert read_line(child) == "stopped 0"
    assert not sock_path.exists()
    assert (sock_dir / "http.sock").exists()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
def test_real_socket_activation_with_systemd_socket_activate(sock_path: Path) -> None:
    # systemd's own tool: it binds and listens, then on the first connection execs our daemon with the
    # socket as fd 3 and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set, exactly as PID 1 would.
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "--listen",
            str(sock_path),
            "--fdname",
            "control",
            sys.executable,
            str(CHILD),
            "thread",
            str(sock_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert activator.stderr is not None
        ready, _, _ = select.select([activator.stderr], [], [], READY_TIMEOUT)
        assert ready
        assert "Listening on" in activator.stderr.readline()
        inode = os.lstat(sock_path).st_ino
        # The first connection starts the daemon, which answers it on the passed socket.
        status = ask(sock_path, "status-get", timeout=READY_TIMEOUT)["arguments"]
        assert status["socket-activated"] is True
        assert status["pid"] == activator.pid  # the tool execs the daemon in its own process
        assert read_line(activator) == "ready"
        activator.send_signal(signal.SIGTERM)
        assert read_line(activator) == "stopped 0"
        assert activator.wait(timeout=10) == 0
        assert os.lstat(sock_path).st_ino == inode  # never unlinked: the manager owns it
    finally:
        stop_child(activator)
