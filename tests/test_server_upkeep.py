"""Defence against /tmp cleaners: the socket and lock file are touched, and deleted ones are healed.

Intervals are short here (production: an hour and a minute). The server says what it did in its log; the
tests wait for those lines, then look at the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import LockHeldError
from ctrlsock.lock import lock_path_for, take_lock
from ctrlsock.server import ControlServer, ServerConfig
from ctrlsock.testing import ServerFactory
from tests.children.server_client import ask
from tests.support import LogWatch

QUICK = 0.1


@pytest.fixture(params=["thread", "asyncio"])
def serve(
    request: pytest.FixtureRequest, sock_path: Path, ctrlsock_server_factory: ServerFactory
) -> Callable[[ServerConfig], ControlServer]:
    """Start a server in the thread embedding, or on an asyncio loop running in another thread."""

    def start(config: ServerConfig) -> ControlServer:
        server = ControlServer(sock_path, program="upkeep-test", config=config)
        return ctrlsock_server_factory(request.param, server=server)

    return start


def test_socket_and_lock_file_are_touched(serve: Any, sock_path: Path, log_watch: LogWatch) -> None:
    serve(ServerConfig(touch_interval=QUICK, recheck_interval=None, stop_grace=1.0))
    lock_path = lock_path_for(sock_path)
    for path in (sock_path, lock_path):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    log_watch.records.clear()
    log_watch.wait_for("touched")
    assert os.lstat(sock_path).st_mtime > 1_000_000
    assert os.lstat(lock_path).st_mtime > 1_000_000


def test_a_deleted_socket_is_bound_again(serve: Any, sock_path: Path, log_watch: LogWatch) -> None:
    serve(ServerConfig(touch_interval=None, recheck_interval=QUICK, stop_grace=1.0))
    before = os.lstat(sock_path).st_ino
    sock_path.unlink()  # what `find /tmp -delete` does
    log_watch.wait_for("was deleted; bound it again")
    assert os.lstat(sock_path).st_ino != before
    assert ask(sock_path, "version-get")["result"] == 0


def test_a_deleted_lock_file_is_put_back_locked(serve: Any, sock_path: Path, log_watch: LogWatch) -> None:
    server = serve(ServerConfig(touch_interval=None, recheck_interval=QUICK, stop_grace=1.0))
    lock_path = lock_path_for(sock_path)
    lock_path.unlink()
    log_watch.wait_for("put a new, locked one in its place")
    assert lock_path.exists()
    with pytest.raises(LockHeldError):
        take_lock(sock_path, program="second-daemon")  # no split brain: the path is still ours
    assert ask(sock_path, "version-get")["result"] == 0
    server.stop()
    assert not sock_path.exists()


def test_a_lock_file_replaced_by_another_stops_serving_and_leaves_it_alone(
    serve: Any, sock_path: Path, log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(touch_interval=None, recheck_interval=QUICK, stop_grace=1.0))
    lock_path = lock_path_for(sock_path)
    lock_path.unlink()
    lock_path.write_bytes(b"another daemon's lock file\n")
    log_watch.wait_for("another file is there now")
    assert server.wait(10)
    assert lock_path.read_bytes() == b"another daemon's lock file\n"


def test_a_stop_leaves_a_file_that_replaced_our_socket_in_place(
    serve: Any, sock_path: Path, log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(touch_interval=None, recheck_interval=None, stop_grace=1.0))
    sock_path.unlink()
    sock_path.write_text("not ours\n")
    server.stop()
    assert sock_path.read_text() == "not ours\n"
    log_watch.wait_for("left in place")
