"""A real ``ctrlsock serve`` with a large configuration and many clients that never read: busy, not stuck.

This is what an admin meets when monitoring polls ``status`` while clients fetch a huge ``config-get``: the
daemon works for every one of them, so the probe must not call it stuck nor offer it for termination.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.probe import State, probe
from ctrlsock.terminate import terminate_holders
from tests.children.cli_support import cli_env
from tests.support import REPO_DIR, read_line, stop_child

CLIENTS = 30
CONFIG_BYTES = 46 * 1024 * 1024


@pytest.fixture
def large_config_daemon(sock_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    config = sock_dir / "config.json"
    config.write_text(json.dumps({"Dhcp4": {"user-context": {"blob": "x" * CONFIG_BYTES}}}))
    sock_path = sock_dir / "ctrl.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "ctrlsock", "serve", str(sock_path), "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
        env=cli_env(),
        cwd=REPO_DIR,
    )
    try:
        while "serving" not in read_line(process, timeout=60.0):
            pass
        yield process, sock_path
    finally:
        stop_child(process, signal.SIGKILL)


def test_a_daemon_serving_a_huge_config_to_clients_that_do_not_read_is_not_stuck(
    large_config_daemon: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, sock_path = large_config_daemon
    clients: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(str(sock_path))
            client.sendall(b'{"command": "config-get"}')
            clients.append(client)  # and never read
        report = probe(sock_path, timeout=1.0)
        assert report.state is State.RUNNING, report.problems
        [owner] = report.holders
        assert owner.pid == process.pid
        assert owner.frozen is not True
        actions = terminate_holders(report, dry_run=True)
        assert all(action.what != "would terminate" for action in actions), actions
        assert process.poll() is None
    finally:
        for client in clients:
            client.close()
