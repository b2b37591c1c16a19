"""A daemon frozen with SIGSTOP (a container freeze, a debugger) for longer than its idle timeout: the
whole requests that arrived meanwhile are answered after SIGCONT, not timed out."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.children.server_client import ask, connect, read_to_eof
from tests.support import Child, wait_for_state


def polls(seconds: float = 10.0) -> Iterator[None]:
    """Iterations until a deadline, for asking the server (it answers at once) until a state shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


IDLE_TIMEOUT = 0.3
WAIT = 10.0


def open_connections(sock_path: Path) -> int:
    return int(ask(sock_path, "status-get")["arguments"]["connections-open"])


def freeze_and_ask(child: Child, sock_path: Path, clients: list[socket.socket]) -> list[dict[str, Any]]:
    # Connections the server has accepted and waits on (their idle timers run)...
    clients.extend(connect(sock_path, timeout=WAIT) for _ in range(5))
    for _ in polls():
        if open_connections(sock_path) == len(clients) + 1:
            break
    assert open_connections(sock_path) == len(clients) + 1
    child.process.send_signal(signal.SIGSTOP)
    wait_for_state(child.pid, "T")
    try:
        # ...and others that only reach the listen backlog while it is frozen.
        clients.extend(connect(sock_path, timeout=WAIT) for _ in range(5))
        for index, sock in enumerate(clients):
            sock.sendall(json.dumps({"command": "whoami", "arguments": {"n": index}}).encode())
        time.sleep(IDLE_TIMEOUT * 4)  # the freeze outlasting the idle timeout is the point of the test
    finally:
        child.process.send_signal(signal.SIGCONT)
    return [json.loads(read_to_eof(sock)) for sock in clients]


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_requests_sent_during_a_freeze_are_answered_after_it(embedding: str, sock_path: Path) -> None:
    clients: list[socket.socket] = []
    with Child("server_daemon.py", embedding, sock_path, "--idle-timeout", IDLE_TIMEOUT) as child:
        child.expect_ready()
        try:
            replies = freeze_and_ask(child, sock_path, clients)
        finally:
            for sock in clients:
                sock.close()
    assert [reply["result"] for reply in replies] == [0] * len(clients), replies
