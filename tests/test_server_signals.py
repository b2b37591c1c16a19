"""SIGTERM and SIGINT in a real daemon process: every server stops cleanly, then the process ends as the
signal would; a daemon's own handler is chained; a signal during start-up is honoured; ``shutdown`` ends a
thread-embedded daemon."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ctrlsock.lock import lock_path_for
from tests.children.server_client import ask, connect, read_to_eof
from tests.support import Child


def polls(seconds: float = 10.0) -> Iterator[None]:
    """Iterations until a deadline, for asking the server (it answers at once) until a state shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


WAIT = 10.0


def cleanly_stopped(socket_path: Path) -> bool:
    """The socket is gone and the lock's record was cleared (what ``ctrlsock status`` calls stopped)."""
    return not socket_path.exists() and lock_path_for(socket_path).stat().st_size == 0


def exit_status(child: Child) -> int:
    return child.process.wait(timeout=WAIT)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_sigterm_stops_cleanly_then_ends_as_sigterm(embedding: str, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", embedding, sock_path) as child:
        child.expect_ready()
        assert ask(sock_path, "version-get")["result"] == 0
        child.process.send_signal(signal.SIGTERM)
        assert exit_status(child) == -signal.SIGTERM
    assert cleanly_stopped(sock_path)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_sigint_stops_cleanly_then_raises_keyboard_interrupt(embedding: str, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", embedding, sock_path) as child:
        child.expect_ready()
        child.process.send_signal(signal.SIGINT)
        assert child.readline() == "keyboard interrupt"
        assert exit_status(child) == 130
    assert cleanly_stopped(sock_path)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_two_servers_in_one_process_both_stop(embedding: str, sock_dir: Path) -> None:
    first, second = sock_dir / "one.sock", sock_dir / "two.sock"
    with Child("server_signals.py", embedding, first, second) as child:
        child.expect_ready()
        child.process.send_signal(signal.SIGTERM)
        assert exit_status(child) == -signal.SIGTERM
    assert cleanly_stopped(first)
    assert cleanly_stopped(second)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_the_daemons_own_handler_is_chained_after_the_stop(embedding: str, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", embedding, sock_path, "--chain") as child:
        child.expect_ready()
        child.process.send_signal(signal.SIGTERM)
        assert child.readline() == "daemon handler"
        assert exit_status(child) == 7
    assert cleanly_stopped(sock_path)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_sigterm_during_start_up_is_honoured(embedding: str, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", embedding, sock_path, "--signal-at-startup") as child:
        assert exit_status(child) == -signal.SIGTERM
    assert cleanly_stopped(sock_path)


def test_sigterm_during_start_up_of_ctrlsock_serve_is_honoured(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", "daemon", sock_path, "--signal-at-startup") as child:
        assert child.readline() == "stopped 0"
        assert exit_status(child) == 0
    assert cleanly_stopped(sock_path)


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_sigterm_with_a_hung_handler_answers_its_client_and_ends(embedding: str, sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", embedding, sock_path, "--stop-grace", "0.3") as child:
        child.expect_ready()
        with connect(sock_path, timeout=WAIT) as sock, ThreadPoolExecutor(1) as pool:
            sock.sendall(b'{"command": "hang"}')
            for _ in polls():  # the hang command runs before the signal comes
                if ask(sock_path, "status-get")["arguments"]["commands-running"] == 1:
                    break
            reply = pool.submit(read_to_eof, sock)
            child.process.send_signal(signal.SIGTERM)
            assert exit_status(child) == -signal.SIGTERM
            assert json.loads(reply.result(WAIT)) == {"result": 1, "text": "Server is shutting down"}
    assert cleanly_stopped(sock_path)


def test_shutdown_ends_a_thread_embedded_daemon_with_its_exit_value(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", "thread", sock_path) as child:
        child.expect_ready()
        assert ask(sock_path, "shutdown", {"exit-value": 5}) == {"result": 0, "text": "Shutting down."}
        assert exit_status(child) == 5
    assert cleanly_stopped(sock_path)


def test_shutdown_ends_serve_forever(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with Child("server_signals.py", "asyncio", sock_path) as child:
        child.expect_ready()
        assert ask(sock_path, "shutdown")["result"] == 0
        assert child.readline() == "serve_forever returned"
        assert exit_status(child) == 0
    assert cleanly_stopped(sock_path)


def test_install_signal_handlers_on_two_servers_stops_both_and_goes_on(sock_dir: Path) -> None:
    # In a child of its own: the signal goes to a real daemon process, never to the test runner.
    first, second = sock_dir / "one.sock", sock_dir / "two.sock"
    with Child("server_signals.py", "installed", first, second) as child:
        child.expect_ready()
        assert ask(first, "version-get")["result"] == 0
        assert ask(second, "version-get")["result"] == 0
        child.process.send_signal(signal.SIGTERM)
        assert child.readline() == "all stopped, going on"
        assert exit_status(child) == 0
    assert cleanly_stopped(first)
    assert cleanly_stopped(second)
