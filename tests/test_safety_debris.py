"""A crash between bind and link leaves the temporary bind name: it is removed only under its socket's lock.

The daemon is real: it takes the socket's lock, binds the temporary name, and is SIGKILLed there (debris) or
left alive there (a daemon starting up, whose socket must never be touched). No lock file is ever created
for a temporary bind name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.lock import lock_path_for
from ctrlsock.names import bind_path_for
from ctrlsock.probe import State
from ctrlsock.recover import ActionKind, cleanup
from tests.children.cli_support import run_cli, status_json
from tests.children.safety_support import fingerprints
from tests.support import Child

TIMEOUT = 0.3
LEGACY_NAME = ".ctrl.sock.0badc0de~"


def _bind_name(sock_path: Path, legacy: bool) -> Path:
    return sock_path.with_name(LEGACY_NAME) if legacy else bind_path_for(sock_path)


@pytest.fixture(params=[False, True], ids=["bind-name", "legacy-name"])
def binding_daemon(request: pytest.FixtureRequest, sock_path: Path) -> Iterator[tuple[Child, Path]]:
    legacy: bool = request.param
    options = ["--legacy"] if legacy else []
    with Child("safety_daemon.py", "binding", sock_path, *options) as child:
        child.expect_ready()
        yield child, _bind_name(sock_path, legacy)


def _no_lock_for(bind_path: Path) -> bool:
    return not lock_path_for(bind_path).exists()


@pytest.mark.parametrize("target", ["directory", "socket"])
def test_cleanup_removes_crash_debris_of_the_bind_name(
    sock_dir: Path, sock_path: Path, binding_daemon: tuple[Child, Path], target: str
) -> None:
    child, bind_path = binding_daemon
    child.kill()  # a crash between bind and link
    assert bind_path.is_socket()

    done = run_cli("cleanup", sock_dir if target == "directory" else sock_path)

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert not bind_path.exists()
    assert _no_lock_for(bind_path)
    assert lock_path_for(sock_path).read_bytes() == b""  # the crashed daemon's record, cleared
    _, reports = status_json(sock_dir)
    assert [report["socket"] for report in reports] == [str(sock_path)]


def test_cleanup_never_touches_a_starting_daemons_bind_name(
    sock_dir: Path, sock_path: Path, binding_daemon: tuple[Child, Path]
) -> None:
    child, bind_path = binding_daemon
    files = [bind_path, lock_path_for(sock_path)]
    before = fingerprints(files)

    run_cli("cleanup", sock_dir)
    result = cleanup(bind_path, timeout=TIMEOUT)

    assert fingerprints(files) == before
    assert _no_lock_for(bind_path)
    assert child.process.poll() is None
    [action] = result.actions
    assert action.what is ActionKind.KEPT
    assert "whose lock is held" in action.reason


def test_a_bind_name_without_its_socket_lock_is_kept(sock_dir: Path, sock_path: Path) -> None:
    from tests.children.safety_support import leave_orphaned_socket  # noqa: PLC0415

    bind_path = bind_path_for(sock_path)
    leave_orphaned_socket(bind_path)
    result = cleanup(bind_path, timeout=TIMEOUT)
    assert [a.what for a in result.actions] == [ActionKind.KEPT]
    assert result.state_after is State.STOPPED
    assert bind_path.is_socket() and _no_lock_for(bind_path)
