"""The probe against real child daemons, real locks and real files: states, holders and problems."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from ctrlsock.lock import HolderRecord, lock_path_for, take_lock
from ctrlsock.probe import HOW_INHERITED_DESCRIPTOR, HOW_RECORDED_AND_LOCKER, State, probe, probe_paths
from ctrlsock.procfs import read_process
from tests.children.probe_support import run_as_nobody, running_server
from tests.kea import KeaDaemon, start_kea

# Stuck states cost one full timeout each (nothing answers): keep it short.
TIMEOUT = 0.3


def leave_orphaned_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed daemon leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def write_record(lock_path: Path, record: HolderRecord) -> None:
    lock_path.write_bytes(record.encode())


def test_probe_says_stopped_when_nothing_is_there(sock_path: Path) -> None:
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STOPPED
    assert report.holders == []
    assert report.problems == []


def test_probe_says_stopped_after_a_clean_release(sock_path: Path) -> None:
    take_lock(sock_path).release(clear_record=True)
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STOPPED
    assert report.record is None


def test_probe_says_running_and_names_the_owner(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        report = probe(sock_path, timeout=5.0)
    assert report.state is State.RUNNING, report.problems
    assert report.answer_ms is not None
    assert report.record is not None and report.record.pid == server.pid
    assert [(h.pid, h.how, h.status, h.alive) for h in report.holders] == [
        (server.pid, HOW_RECORDED_AND_LOCKER, "running", True)
    ]
    assert report.problems == []


def test_probe_says_stale_after_sigkill(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.kill()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    assert report.record is not None and report.record.pid == server.pid
    [holder] = report.holders
    assert (holder.pid, holder.how, holder.status, holder.alive) == (
        server.pid,
        "recorded owner",
        "dead",
        False,
    )
    assert "socket file left behind: nobody holds the lock and connect() is refused" in report.problems
    assert any(f"pid {server.pid}" in p and "is dead" in p for p in report.problems)


def test_probe_says_stuck_when_the_holder_is_stopped(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.stop()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STUCK
    assert [(h.pid, h.status, h.alive) for h in report.holders] == [(server.pid, "stopped", True)]
    assert f"lock held by pid {server.pid} (probe_server), which is stopped (SIGSTOP)" in report.problems
    assert f"socket accepts connections but nothing answers within {TIMEOUT:g} s" in report.problems
    assert report.answer_ms is None


def test_probe_names_the_child_that_inherited_the_lock(sock_path: Path) -> None:
    with running_server(sock_path, "--inheritor") as server:
        assert server.inheritor is not None
        server.kill()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STUCK
    by_pid = {h.pid: h for h in report.holders}
    assert by_pid[server.inheritor].how == HOW_INHERITED_DESCRIPTOR
    assert by_pid[server.inheritor].program == "sleep"
    assert by_pid[server.inheritor].holds_lock
    assert by_pid[server.pid].status == "dead"
    assert [h.pid for h in report.lock_holders] == [server.inheritor]
    assert (
        f"lock held by pid {server.inheritor} (sleep), which inherited it; "
        f"the recorded owner pid {server.pid} (probe_server) is dead"
    ) in report.problems
    assert f"socket accepts connections but nothing answers within {TIMEOUT:g} s" in report.problems


def test_probe_finds_the_dead_original_locker_without_a_record(sock_path: Path) -> None:
    # Kea's way: an empty lock file, so the only witness of the original owner is /proc/locks.
    with running_server(sock_path, "--lock", "flock", "--inheritor") as server:
        server.kill()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STUCK
    assert report.record is None
    assert (
        f"lock held by pid {server.inheritor} (sleep), which inherited it; "
        f"the original locker pid {server.pid} is dead"
    ) in report.problems


def test_probe_says_running_for_a_kea_style_empty_lock_file(sock_path: Path) -> None:
    with running_server(sock_path, "--lock", "flock") as server:
        report = probe(sock_path, timeout=5.0)
    assert lock_path_for(sock_path).read_bytes() == b""
    assert report.state is State.RUNNING
    assert report.record is None
    assert [(h.pid, h.how) for h in report.holders] == [(server.pid, "lock owner")]


def test_probe_says_stuck_when_the_lock_is_held_without_a_socket(sock_path: Path) -> None:
    with running_server(sock_path, "--no-bind") as server:
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STUCK
    assert report.holders[0].pid == server.pid
    assert f"the lock is held but there is no socket at {sock_path}" in report.problems


def test_probe_says_foreign_when_a_server_answers_without_the_lock(sock_path: Path) -> None:
    with running_server(sock_path, "--lock", "none"):
        report = probe(sock_path, timeout=5.0)
    assert report.state is State.FOREIGN
    assert "a server answers on the socket but nobody holds the lock" in report.problems


def test_probe_says_stuck_for_a_listener_that_never_answers_without_the_lock(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen()
        report = probe(sock_path, timeout=TIMEOUT)
    # Foreign is only a server that answers; a listener that never does is named, as a stuck holder.
    assert report.state is State.STUCK
    [holder] = report.holders
    assert (holder.pid, holder.how, holder.holds_socket, holder.holds_lock) == (
        os.getpid(),
        "holds the listening socket",
        True,
        False,
    )
    assert any(
        f"pid {os.getpid()} (" in p and "keeps the listening socket open but does not hold the lock" in p
        for p in report.problems
    )


@pytest.mark.parametrize("kind", ["regular file", "directory", "symlink"])
def test_probe_says_not_a_socket_for_a_non_socket_at_the_socket_path(sock_dir: Path, kind: str) -> None:
    sock_path = sock_dir / "ctrl.sock"
    if kind == "regular file":
        sock_path.write_text("precious")
    elif kind == "directory":
        sock_path.mkdir()
    else:
        target = sock_dir / "target.sock"
        leave_orphaned_socket(target)
        sock_path.symlink_to(target)
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.NOT_A_SOCKET
    assert f"{sock_path} is a {kind}, not a socket; ctrlsock never removes it" in report.problems
    if kind != "directory":  # a directory given to probe_paths stands for the sockets in it
        [listed] = probe_paths([sock_path], timeout=TIMEOUT)
        assert listed.state is State.NOT_A_SOCKET


def test_probe_says_unknown_for_a_symlink_at_the_lock_path(sock_dir: Path) -> None:
    (sock_dir / "elsewhere").write_text("")
    lock_path_for(sock_dir / "ctrl.sock").symlink_to(sock_dir / "elsewhere")
    report = probe(sock_dir / "ctrl.sock", timeout=TIMEOUT)
    assert report.state is State.UNKNOWN
    assert any("is a symlink, not a lock file" in p for p in report.problems)


def test_probe_does_not_trust_a_record_whose_pid_was_reused(sock_path: Path) -> None:
    me = read_process(os.getpid())
    assert me is not None
    record = HolderRecord.for_current_process(sock_path, "mydaemon")
    write_record(
        lock_path_for(sock_path), HolderRecord(**{**record.__dict__, "start_time": me.start_time + 7})
    )
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    [holder] = report.holders
    assert (holder.pid, holder.status, holder.alive) == (os.getpid(), "dead", False)
    assert any("not trusted" in p and "reused" in p for p in report.problems)


def test_probe_does_not_trust_a_record_from_another_boot(sock_path: Path) -> None:
    record = HolderRecord.for_current_process(sock_path, "mydaemon")
    write_record(lock_path_for(sock_path), HolderRecord(**{**record.__dict__, "boot_id": "another-boot"}))
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    assert report.holders[0].alive is False
    assert any("not trusted" in p and "another boot" in p for p in report.problems)


def test_probe_names_a_live_recorded_owner_that_does_not_hold_the_lock(sock_path: Path) -> None:
    write_record(lock_path_for(sock_path), HolderRecord.for_current_process(sock_path, "mydaemon"))
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    assert f"the record names pid {os.getpid()} (mydaemon), which is alive but does not hold the lock" in (
        report.problems
    )


def test_probe_says_stale_for_garbage_in_the_lock_file(sock_path: Path) -> None:
    lock_path_for(sock_path).write_bytes(b"\xff\x00 not a record")
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    assert any("bytes that are not a holder record" in p for p in report.problems)


def test_probe_changes_nothing(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        server.kill()
    lock_path = lock_path_for(sock_path)

    def look() -> tuple[object, ...]:
        lock_st, sock_st = os.lstat(lock_path), os.lstat(sock_path)
        return (
            lock_path.read_bytes(),
            lock_st.st_ino,
            lock_st.st_mtime_ns,
            sock_st.st_ino,
            sock_st.st_mtime_ns,
        )

    before = look()
    assert probe(sock_path, timeout=TIMEOUT).state is State.STALE
    assert probe_paths([sock_path.parent], timeout=TIMEOUT)[0].state is State.STALE
    assert look() == before


def test_probe_paths_scans_every_socket_and_lock_file_in_a_directory(sock_dir: Path) -> None:
    leave_orphaned_socket(sock_dir / "a.sock")
    take_lock(sock_dir / "b.sock").release(clear_record=False)  # a record left behind, no socket
    (sock_dir / "notes.txt").write_text("not a socket")
    # Kea's logger keeps kea.log.lock beside its sockets: a lock guarding a regular file is not ours.
    (sock_dir / "kea.log").write_text("log")
    (sock_dir / "kea.log.lock").write_bytes(b"")
    with running_server(sock_dir / "c.sock"):
        reports = probe_paths([sock_dir], timeout=5.0)
    states = {report.socket_path.name: report.state for report in reports}
    assert states == {"a.sock": State.STALE, "b.sock": State.STALE, "c.sock": State.RUNNING}
    # Named explicitly, the same path is judged, and is not ours.
    [explicit] = probe_paths([sock_dir / "kea.log.lock"], timeout=TIMEOUT)
    assert explicit.state is State.NOT_A_SOCKET


def test_probe_paths_takes_a_lock_file_for_its_socket(sock_path: Path) -> None:
    leave_orphaned_socket(sock_path)
    [report] = probe_paths([lock_path_for(sock_path)], timeout=TIMEOUT)
    assert report.socket_path == sock_path
    assert report.state is State.STALE


def test_report_to_json_has_the_documented_keys(sock_path: Path) -> None:
    with running_server(sock_path) as server:
        document = probe(sock_path, timeout=5.0).to_json()
    assert set(document) == {"socket", "lock", "state", "holders", "record", "answer_ms", "problems"}
    assert document["state"] == "running"
    assert document["holders"][0]["pid"] == server.pid
    assert set(document["holders"][0]) == {"pid", "program", "alive", "how", "status", "since"}
    assert document["record"]["pid"] == server.pid


# --- another user's view ----------------------------------------------------------------------------


def test_probe_says_unknown_without_permission(nobody_dir: Path) -> None:
    os.chmod(nobody_dir, 0o700)  # root's private directory: nobody cannot even look
    leave_orphaned_socket(nobody_dir / "ctrl.sock")
    document = json.loads(run_as_nobody("probe", str(nobody_dir / "ctrl.sock")))
    assert document["state"] == "unknown"
    assert any(p.startswith("permission denied: ") for p in document["problems"])


def test_probe_paths_says_unknown_for_a_directory_it_may_not_list(nobody_dir: Path) -> None:
    os.chmod(nobody_dir, 0o700)
    [document] = json.loads(run_as_nobody("paths", str(nobody_dir)))
    assert document["state"] == "unknown"
    assert document["problems"] == [f"permission denied: cannot list the directory {nobody_dir}"]


def test_probe_says_stale_for_another_users_orphaned_socket_and_that_cleanup_refuses(
    nobody_dir: Path,
) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(nobody_dir, nobody.pw_uid, nobody.pw_gid)
    leave_orphaned_socket(nobody_dir / "ctrl.sock")  # owned by root
    os.chmod(nobody_dir / "ctrl.sock", 0o777)  # so nobody may connect() and see it refused
    document = json.loads(run_as_nobody("probe", str(nobody_dir / "ctrl.sock")))
    assert document["state"] == "stale"
    assert (
        "the socket is owned by uid 0 (root), not by us: cleanup will refuse to remove it"
        in (document["problems"])
    )


# --- a real Kea 2.2 -----------------------------------------------------------------------------------


@pytest.mark.kea
def test_probe_says_running_for_kea_with_its_pid(kea_daemon: KeaDaemon) -> None:
    report = probe(kea_daemon.socket_path, timeout=5.0)
    assert report.state is State.RUNNING, report.problems
    assert report.record is None  # Kea's lock file is empty: the holder comes from /proc/locks
    assert report.holders[0].pid == kea_daemon.pid
    assert report.holders[0].program == "kea-dhcp4"
    assert report.holders[0].how == "lock owner"


@pytest.mark.kea
def test_probe_says_stale_after_kea_is_killed(kea_daemon: KeaDaemon) -> None:
    kea_daemon.kill()
    report = probe(kea_daemon.socket_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    assert "socket file left behind: nobody holds the lock and connect() is refused" in report.problems


@pytest.mark.kea
def test_probe_says_stuck_and_names_keas_lease_file_cleaner() -> None:
    directory = Path(tempfile.mkdtemp(prefix="cs-k", dir="/tmp"))
    daemon = start_kea(directory, lfc_sleep=60)
    try:
        lfc_pids = daemon.wait_for_lfc()
        daemon.kill()
        report = probe(daemon.socket_path, timeout=TIMEOUT)
        assert report.state is State.STUCK
        # Every cleaner Kea started is named, and only processes that inherited the descriptor hold it.
        assert set(lfc_pids) <= {h.pid for h in report.lock_holders}
        assert {h.how for h in report.lock_holders} == {HOW_INHERITED_DESCRIPTOR}
        assert any(
            f"which inherited it; the original locker pid {daemon.pid} is dead" in p for p in report.problems
        )
    finally:
        daemon.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
