"""Recovery against real child daemons and real files: what is removed, and everything that never is."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.errors import RecoveryError, UnsafePathError
from ctrlsock.lock import lock_path_for, read_record, take_lock
from ctrlsock.probe import State, probe
from ctrlsock.recover import check_directory_safe, cleanup, remove_orphans
from ctrlsock.terminate import terminate_holders
from tests.children.probe_support import run_as_nobody, running_server
from tests.kea import start_kea
from tests.support import wait_gone

TIMEOUT = 0.3


def leave_orphaned_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def snapshot(path: Path) -> tuple[int, int, bytes | None]:
    """(inode, mode, content for regular files) of ``path`` itself: proof it was left alone."""
    st = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
    return st.st_ino, st.st_mode, content


# --- the happy path: a crash, then recovery -------------------------------------------------------


def test_cleanup_after_sigkill_leaves_stopped_and_a_new_start_succeeds(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.kill()
    lock_path = lock_path_for(sock_path)
    lock_inode = os.stat(lock_path).st_ino

    result = cleanup(sock_path, timeout=TIMEOUT)

    assert (result.state_before, result.state_after) == (State.STALE, State.STOPPED)
    assert [(a.path, a.what, a.done) for a in result.actions] == [
        (sock_path, "removed", True),
        (lock_path, "cleared", True),
    ]
    assert "connect() is refused" in result.actions[0].reason
    assert f"pid {server.pid}" in result.actions[1].reason
    assert not sock_path.exists()
    # The lock file stays (same inode: a waiter is never split off) and is empty: "stopped cleanly".
    assert os.stat(lock_path).st_ino == lock_inode
    assert lock_path.read_bytes() == b""

    with running_server(sock_path) as again:
        report = probe(sock_path, timeout=5.0)
        assert report.state is State.RUNNING
        assert report.holders[0].pid == again.pid


def test_take_lock_then_remove_orphans_then_bind(sock_path: Path) -> None:
    # How a daemon starts after a crash: the held lock is the proof, then the path is free to bind.
    with running_server(sock_path) as server:
        server.kill()
    with take_lock(sock_path, program="mydaemon") as lock:
        actions = remove_orphans(lock)
        assert [(a.what, a.path) for a in actions] == [("removed", sock_path)]
        # Our own fresh record is in the lock file, untouched by recovery.
        record = read_record(lock.lock_path)
        assert record is not None and record.pid == os.getpid()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(sock_path))


def test_cleanup_of_a_stopped_path_does_nothing(sock_path: Path) -> None:
    take_lock(sock_path).release()
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert result.actions == []
    assert result.state_after is State.STOPPED


def test_cleanup_clears_a_dead_owners_record_without_a_socket(sock_path: Path) -> None:
    with running_server(sock_path, "--no-bind") as server:
        server.kill()
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert [(a.what, a.path) for a in result.actions] == [("cleared", lock_path_for(sock_path))]
    assert result.state_after is State.STOPPED


# --- holders that are alive -----------------------------------------------------------------------


def test_cleanup_refuses_while_the_holder_is_stopped(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.stop()
        lock_path = lock_path_for(sock_path)
        before = (snapshot(sock_path), snapshot(lock_path))

        result = cleanup(sock_path, timeout=TIMEOUT)

        assert result.state_before is State.STUCK
        [action] = result.actions
        assert (action.what, action.done) == ("refused", False)
        assert f"pid {server.pid} (probe_server), which is stopped (SIGSTOP)" in action.reason
        assert (snapshot(sock_path), snapshot(lock_path)) == before


def test_cleanup_refuses_a_running_daemon(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        result = cleanup(sock_path, timeout=5.0)
        assert result.state_before is State.RUNNING
        assert result.actions[0].what == "refused"
        assert f"pid {server.pid}" in result.actions[0].reason
        assert sock_path.exists()


def test_inherited_lock_is_refused_until_its_holder_is_terminated(sock_path: Path) -> None:
    with running_server(sock_path, "--inheritor") as server:
        assert server.inheritor is not None
        server.kill()
        report = probe(sock_path, timeout=TIMEOUT)
        assert report.state is State.STUCK
        assert [h.pid for h in report.lock_holders] == [server.inheritor]

        refused = cleanup(sock_path, timeout=TIMEOUT)
        assert [a.what for a in refused.actions] == ["refused"]
        assert f"pid {server.inheritor} (sleep), which inherited it" in refused.actions[0].reason
        assert sock_path.exists()

        actions = terminate_holders(report, grace=10.0, timeout=TIMEOUT)
        assert [(a.pid, a.what, a.done) for a in actions] == [(server.inheritor, "terminated", True)]
        wait_gone(server.inheritor)

        result = cleanup(sock_path, timeout=TIMEOUT)
        assert (result.state_before, result.state_after) == (State.STALE, State.STOPPED)
        assert not sock_path.exists()


def test_terminate_holders_continues_and_stops_a_stopped_holder(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.stop()
        report = probe(sock_path, timeout=TIMEOUT)
        actions = terminate_holders(report, grace=10.0, timeout=TIMEOUT)
        assert [(a.pid, a.what) for a in actions] == [(server.pid, "terminated")]
        server.process.wait(timeout=10)
        assert cleanup(sock_path, timeout=TIMEOUT).state_after is State.STOPPED


def test_terminate_holders_kills_a_frozen_holder_that_ignores_sigterm(sock_path: Path) -> None:
    with running_server(sock_path, "--ignore-term", "--no-bind") as server:
        server.stop()  # proof that it is hung; a live owner is never signalled
        report = probe(sock_path, timeout=TIMEOUT)
        assert report.state is State.STUCK
        actions = terminate_holders(report, grace=0.2, timeout=TIMEOUT)
        assert [(a.pid, a.what, a.done) for a in actions] == [(server.pid, "killed", True)]
        assert "ignored SIGTERM" in actions[0].reason
        assert server.process.wait(timeout=10) == -9


def test_terminate_holders_refuses_unless_stuck(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        report = probe(sock_path, timeout=5.0)
        [action] = terminate_holders(report, grace=1.0)
        assert action.what == "refused"
        assert "running, not stuck" in action.reason
        assert server.process.poll() is None


def test_terminate_holders_dry_run_signals_nobody(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.stop()
        report = probe(sock_path, timeout=TIMEOUT)
        [action] = terminate_holders(report, grace=1.0, dry_run=True)
        assert (action.pid, action.what, action.done) == (server.pid, "would terminate", False)
        assert server.process.poll() is None


def test_terminate_holders_never_signals_a_reused_pid(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.stop()
        report = probe(sock_path, timeout=TIMEOUT)
        assert report.lock_holders[0].start_time is not None
        report.lock_holders[0].start_time += 1  # as if the pid now named another process
        [action] = terminate_holders(report, grace=1.0, timeout=TIMEOUT)[:1]
        assert action.what == "refused"
        assert "start time differs" in action.reason
        assert server.process.poll() is None


# --- what is never removed ------------------------------------------------------------------------


def test_a_regular_file_at_the_socket_path_is_never_removed(sock_path: Path) -> None:
    sock_path.write_text("precious")
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert result.state_before is State.NOT_A_SOCKET
    assert [a.what for a in result.actions] == ["refused"]
    with take_lock(sock_path) as lock:
        [action] = remove_orphans(lock)
    assert action.what == "refused"
    assert "regular file" in action.reason
    assert sock_path.read_text() == "precious"


def test_a_directory_at_the_socket_path_is_never_removed(sock_path: Path) -> None:
    sock_path.mkdir()
    (sock_path / "inside").write_text("kept")
    with take_lock(sock_path) as lock:
        [action] = remove_orphans(lock)
    assert action.what == "refused"
    assert (sock_path / "inside").read_text() == "kept"


@pytest.mark.parametrize("target_kind", ["orphaned socket", "regular file"])
def test_a_symlink_at_the_socket_path_is_never_removed_nor_followed(sock_dir: Path, target_kind: str) -> None:
    sock_path = sock_dir / "ctrl.sock"
    target = sock_dir / "target"
    if target_kind == "orphaned socket":
        leave_orphaned_socket(target)
    else:
        target.write_text("precious")
    sock_path.symlink_to(target)
    before = (snapshot(sock_path), snapshot(target))

    assert [a.what for a in cleanup(sock_path, timeout=TIMEOUT).actions] == ["refused"]
    assert [a.what for a in cleanup(sock_path, dry_run=True, timeout=TIMEOUT).actions] == ["refused"]
    with take_lock(sock_path) as lock:
        [action] = remove_orphans(lock)
    assert action.what == "refused"
    assert "symlink" in action.reason
    assert (snapshot(sock_path), snapshot(target)) == before


def test_remove_orphans_refuses_a_socket_someone_accepts_on_while_we_hold_the_lock(sock_path: Path) -> None:
    with take_lock(sock_path) as lock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rogue:
        rogue.bind(str(sock_path))
        rogue.listen()
        [action] = remove_orphans(lock)
        assert action.what == "refused"
        assert "does not take the lock" in action.reason
        assert sock_path.exists()


def test_remove_orphans_demands_the_held_lock(sock_path: Path) -> None:
    leave_orphaned_socket(sock_path)
    lock = take_lock(sock_path)
    lock.release()
    with pytest.raises(RecoveryError, match="does not hold the lock"):
        remove_orphans(lock)
    assert sock_path.exists()


def test_dry_run_removes_nothing_and_says_why(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.kill()
    lock_path = lock_path_for(sock_path)
    before = (snapshot(sock_path), snapshot(lock_path))

    result = cleanup(sock_path, dry_run=True, timeout=TIMEOUT)

    assert [(a.path, a.what, a.done) for a in result.actions] == [
        (sock_path, "would remove", False),
        (lock_path, "would clear", False),
    ]
    assert all(a.reason for a in result.actions)
    assert result.state_after is State.STALE
    assert (snapshot(sock_path), snapshot(lock_path)) == before

    with take_lock(sock_path) as lock:
        [action] = remove_orphans(lock, dry_run=True)
        assert action.what == "would remove"
    assert sock_path.exists()


# --- directories and owners -----------------------------------------------------------------------


def test_an_unsafe_directory_is_refused(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    leave_orphaned_socket(sock_path)
    os.chmod(sock_dir, 0o777)
    with pytest.raises(UnsafePathError, match="writable by others"):
        check_directory_safe(sock_dir)
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert [a.what for a in result.actions] == ["refused"]
    assert "writable by others" in result.actions[0].reason
    with take_lock(sock_path) as lock:
        [action] = remove_orphans(lock)
    assert action.what == "refused"
    assert sock_path.exists()


def test_a_sticky_shared_directory_allows_only_our_own_files(sock_dir: Path) -> None:
    os.chmod(sock_dir, 0o1777)
    check_directory_safe(sock_dir)
    ours = sock_dir / "ours.sock"
    leave_orphaned_socket(ours)
    assert [a.what for a in cleanup(ours, timeout=TIMEOUT).actions] == ["removed"]

    theirs = sock_dir / "theirs.sock"
    leave_orphaned_socket(theirs)
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
        [action] = cleanup(theirs, timeout=TIMEOUT).actions
        assert action.what == "refused"
        assert "only our own files are removed, even by root" in action.reason
        assert theirs.exists()


def test_root_removes_another_users_orphaned_socket_in_a_safe_directory(nobody_dir: Path) -> None:
    # The documented rule: owned by us, or we are root (and the directory is not shared).
    sock_path = nobody_dir / "ctrl.sock"
    leave_orphaned_socket(sock_path)
    nobody = pwd.getpwnam("nobody")
    os.chown(sock_path, nobody.pw_uid, nobody.pw_gid)
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert [a.what for a in result.actions] == ["removed"]


def test_another_users_socket_is_refused_when_we_are_not_root(nobody_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(nobody_dir, nobody.pw_uid, nobody.pw_gid)
    sock_path = nobody_dir / "ctrl.sock"
    leave_orphaned_socket(sock_path)  # owned by root
    os.chmod(sock_path, 0o777)  # nobody may connect() and see it refused
    before = snapshot(sock_path)

    document = json.loads(run_as_nobody("cleanup", str(sock_path)))
    assert document["state_before"] == "stale"
    assert [a["what"] for a in document["actions"]] == ["refused"]
    assert "owned by uid 0 (root), not by us" in document["actions"][0]["reason"]

    actions = json.loads(run_as_nobody("remove", str(sock_path)))
    assert [a["what"] for a in actions] == ["refused"]
    assert "owned by uid 0 (root), not by us" in actions[0]["reason"]
    assert snapshot(sock_path) == before


# --- a real Kea 2.2 -------------------------------------------------------------------------------


@pytest.fixture
def kea_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cs-k", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.kea
def test_cleanup_after_kea_is_killed_lets_kea_start_again(kea_dir: Path) -> None:
    daemon = start_kea(kea_dir)
    try:
        daemon.kill()
        result = cleanup(daemon.socket_path, timeout=TIMEOUT)
        assert (result.state_before, result.state_after) == (State.STALE, State.STOPPED)
        assert [a.what for a in result.actions] == ["removed"]
        daemon = daemon.restart()
        report = probe(daemon.socket_path, timeout=5.0)
        assert report.state is State.RUNNING
        assert report.holders[0].pid == daemon.pid
    finally:
        daemon.cleanup()


@pytest.mark.kea
def test_kea_lease_file_cleaner_holding_the_lock_is_terminated_then_kea_starts(kea_dir: Path) -> None:
    daemon = start_kea(kea_dir, lfc_sleep=60)
    try:
        daemon.wait_for_lfc()
        daemon.kill()
        report = probe(daemon.socket_path, timeout=TIMEOUT)
        assert report.state is State.STUCK
        lfc_pids = {h.pid for h in report.lock_holders}
        assert lfc_pids and set(daemon.lfc_pids()) <= lfc_pids
        assert cleanup(daemon.socket_path, timeout=TIMEOUT).actions[0].what == "refused"

        actions = terminate_holders(report, grace=10.0, timeout=TIMEOUT)
        assert {a.pid for a in actions if a.what in {"terminated", "killed"}} == lfc_pids
        for pid in lfc_pids:
            wait_gone(pid)
        result = cleanup(daemon.socket_path, timeout=TIMEOUT)
        assert result.state_after is State.STOPPED, result.after
        daemon = start_kea(kea_dir)  # no cleaner this time
        assert probe(daemon.socket_path, timeout=5.0).state is State.RUNNING
    finally:
        daemon.cleanup()
