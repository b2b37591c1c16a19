"""A forked worker does not keep the control server's listener or connections: after the daemon is killed,
the worker holds no socket of ours and a new server starts on the path."""

from __future__ import annotations

import os
from pathlib import Path

from ctrlsock.names import bind_path_for
from ctrlsock.server import ControlServer
from tests.children.server_client import ask
from tests.support import Child, kill_foreign, wait_gone


def unix_inodes_bound_at(paths: set[str]) -> set[str]:
    """Inodes of the unix sockets bound at these names, from /proc/net/unix (its last column)."""
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] in paths:
            inodes.add(fields[6])
    return inodes


def socket_inodes_of(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_a_forked_worker_keeps_neither_listener_nor_connections(sock_path: Path) -> None:
    child = Child("server_fork.py", sock_path)
    worker = 0
    try:
        worker = int(child.expect_ready()[0])
        # The listener and the connections it accepted carry its bound name in /proc/net/unix.
        server_side = unix_inodes_bound_at({str(sock_path), str(bind_path_for(sock_path))})
        server_side &= socket_inodes_of(child.pid)
        assert len(server_side) >= 2, f"the listener and an accepted connection, not {server_side}"
        child.kill()  # SIGKILL: no clean stop, the worker lives on
        wait_gone(child.pid)
        assert not server_side & socket_inodes_of(worker)
        server = ControlServer(sock_path, program="after-fork")
        server.start_in_thread()
        try:
            assert ask(sock_path, "version-get")["result"] == 0
        finally:
            server.stop()
    finally:
        child.kill()
        if worker:
            kill_foreign(worker)
