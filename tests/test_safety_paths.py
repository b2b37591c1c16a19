"""One safe-path rule for serve, status and cleanup: no symlink on the way, no step from one user's directory
into another's, and every action through the final directory's descriptor.

The attack is real: a directory owned by ``nobody`` holds a symlink made by ``nobody`` to a directory only
root may enter, where root's own socket and lock file lie. Root must refuse, and leave every byte as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.errors import UnsafePathError
from ctrlsock.lock import lock_path_for, take_lock
from ctrlsock.probe import probe
from ctrlsock.recover import ActionKind, check_directory_safe, cleanup, remove_orphans, remove_own_socket
from ctrlsock.safepath import open_safe_directory
from tests.children.cli_support import run_cli
from tests.children.safety_support import as_nobody, fingerprints, leave_crashed_daemon, leave_orphaned_socket

TIMEOUT = 0.3
NOBODY = 65534
EXIT_UNSAFE_PATH = 73


@pytest.fixture
def root_only_dir() -> Iterator[Path]:
    """``/tmp/cs-root-only-*``: root's, mode 0700, with root's crashed daemon's socket and record in it."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    path = Path(tempfile.mkdtemp(prefix="cs-root-only-", dir="/tmp"))
    os.chmod(path, 0o700)
    try:
        leave_crashed_daemon(path / "x.sock")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def users_dir(nobody_dir: Path) -> Path:
    """A directory owned by ``nobody`` (in root's ``/tmp``-like parent)."""
    os.chown(nobody_dir, NOBODY, NOBODY)
    return nobody_dir


def _root_files(directory: Path) -> list[Path]:
    return [directory / "x.sock", lock_path_for(directory / "x.sock")]


def test_root_never_follows_a_users_symlink_to_a_root_only_directory(
    users_dir: Path, root_only_dir: Path
) -> None:
    link = users_dir / "sockdir"
    as_nobody("ln", "-s", root_only_dir, link)
    assert os.lstat(link).st_uid == NOBODY
    before = fingerprints(_root_files(root_only_dir))

    for arguments in (
        ["cleanup", link / "x.sock"],
        ["cleanup", "--dry-run", link / "x.sock"],
        ["cleanup", link],
    ):
        done = run_cli(*arguments)
        assert done.returncode == EXIT_UNSAFE_PATH, (arguments, done.stdout, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith("ctrlsock: ") and "is a symlink" in line, line
        assert fingerprints(_root_files(root_only_dir)) == before

    with pytest.raises(UnsafePathError, match="is a symlink"):
        cleanup(link / "x.sock", timeout=TIMEOUT)
    # status applies the same rule: it says why cleanup will refuse.
    report = probe(link / "x.sock", timeout=TIMEOUT)
    assert any(f"{link}: is a symlink" in problem for problem in report.problems), report.problems
    assert fingerprints(_root_files(root_only_dir)) == before


def test_a_step_from_a_users_directory_into_roots_is_an_unsafe_transition(users_dir: Path) -> None:
    # Root made "run" inside nobody's directory; nobody may rename it away and put anything there.
    inner = users_dir / "run"
    inner.mkdir(mode=0o755)
    leave_crashed_daemon(inner / "x.sock")
    before = fingerprints(_root_files(inner))

    done = run_cli("cleanup", inner / "x.sock")

    assert done.returncode == EXIT_UNSAFE_PATH, done.stderr
    assert "unsafe path" in done.stderr and "uid 65534" in done.stderr
    assert fingerprints(_root_files(inner)) == before
    with pytest.raises(UnsafePathError, match="unsafe path"):
        check_directory_safe(inner)


def test_root_may_step_into_a_users_directory(users_dir: Path) -> None:
    check_directory_safe(users_dir)
    sock_path = users_dir / "x.sock"
    leave_orphaned_socket(sock_path)
    os.chown(sock_path, NOBODY, NOBODY)
    assert [a.what for a in cleanup(sock_path, timeout=TIMEOUT).actions] == [ActionKind.REMOVED]


def test_serve_through_a_symlinked_parent_is_refused(sock_dir: Path) -> None:
    real = sock_dir / "real"
    real.mkdir(mode=0o700)
    (sock_dir / "link").symlink_to(real)

    done = run_cli("serve", sock_dir / "link" / "s.sock", timeout=30)

    assert done.returncode == EXIT_UNSAFE_PATH, done.stderr
    assert "is a symlink (to " in done.stderr
    assert list(real.iterdir()) == []


def test_remove_orphans_acts_only_in_the_directory_reached_safely(sock_dir: Path) -> None:
    real = sock_dir / "real"
    real.mkdir(mode=0o700)
    (sock_dir / "link").symlink_to(real)
    leave_orphaned_socket(real / "x.sock")
    before = fingerprints([real / "x.sock"])
    with take_lock(sock_dir / "link" / "x.sock") as lock:
        [action] = remove_orphans(lock)
        st = os.lstat(real / "x.sock")
        own = remove_own_socket(lock, (st.st_dev, st.st_ino))
    assert action.what is ActionKind.REFUSED
    assert "is a symlink" in action.reason
    assert own is not None and own.what is ActionKind.REFUSED
    assert "is a symlink" in own.reason
    assert fingerprints([real / "x.sock"]) == before


def test_the_walk_refuses_a_symlink_anywhere_and_accepts_dot_dot(sock_dir: Path) -> None:
    (sock_dir / "a" / "b").mkdir(parents=True, mode=0o700)
    (sock_dir / "link").symlink_to(sock_dir / "a")
    with pytest.raises(UnsafePathError, match="is a symlink") as caught:
        check_directory_safe(sock_dir / "link" / "b")
    assert caught.value.path == sock_dir / "link"
    with open_safe_directory(sock_dir / "a" / "b" / ".." / "b") as safe:
        assert os.fstat(safe.fileno()).st_ino == os.stat(sock_dir / "a" / "b").st_ino
        assert safe.writers_problem is None
    with pytest.raises(UnsafePathError, match="cannot be examined"):
        check_directory_safe(sock_dir / "missing")
    with pytest.raises(UnsafePathError, match="not a directory"):
        (sock_dir / "file").write_text("x")
        check_directory_safe(sock_dir / "file" / "sub")
