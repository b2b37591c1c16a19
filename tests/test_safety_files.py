"""Cleanup never writes a file that is not ours, and says truthfully what it did and refused.

Every command runs for real (``ctrlsock`` as a subprocess where the admin would type it) against real files,
and every canary is fingerprinted by hash, inode and times before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.errors import UnsafePathError
from ctrlsock.lock import lock_path_for, take_lock
from ctrlsock.probe import State, probe_paths
from ctrlsock.record import HolderRecord, is_holder_record
from ctrlsock.recover import ActionKind, cleanup
from tests.children.cli_support import run_cli
from tests.children.probe_support import running_server
from tests.children.safety_support import (
    BIG_LOCK,
    FOREIGN_LOCKS,
    fingerprint,
    fingerprints,
    leave_crashed_daemon,
    leave_orphaned_socket,
    make_foreign_locks,
)

TIMEOUT = 0.3
CANARIES = [*FOREIGN_LOCKS, BIG_LOCK]


def test_cleanup_of_a_directory_cleans_the_crash_and_never_writes_foreign_lock_files(sock_dir: Path) -> None:
    canaries = make_foreign_locks(sock_dir)
    crashed = sock_dir / "ctrl.sock"
    pid = leave_crashed_daemon(crashed)
    before = {path: fingerprint(path, whole=True) for path in canaries}

    done = run_cli("cleanup", sock_dir)

    assert {path: fingerprint(path, whole=True) for path in canaries} == before
    assert not crashed.exists()
    assert lock_path_for(crashed).read_bytes() == b""
    assert f"the record left by pid {pid}" in done.stdout
    for name in CANARIES:
        assert not any(name in line and "clear" in line for line in done.stdout.splitlines()), done.stdout


@pytest.mark.parametrize("name", CANARIES)
def test_cleanup_of_a_foreign_lock_file_refuses_and_never_writes_it(sock_dir: Path, name: str) -> None:
    canaries = make_foreign_locks(sock_dir)
    path = sock_dir / name
    before = fingerprints(canaries)

    dry = run_cli("cleanup", "--dry-run", path)
    real = run_cli("cleanup", "--json", path)

    assert fingerprints(canaries) == before
    assert "would clear" not in dry.stdout
    assert "refused" in dry.stdout and "not a ctrlsock holder record" in dry.stdout, dry.stdout
    assert real.returncode != 0
    [document] = json.loads(real.stdout)
    assert [(a["path"], a["what"], a["done"]) for a in document["actions"]] == [(str(path), "refused", False)]
    assert "another program's file, which ctrlsock never writes" in document["actions"][0]["reason"]


def test_a_kea_style_empty_lock_file_needs_nothing(sock_dir: Path) -> None:
    sock_path = sock_dir / "kea4-ctrl-socket"
    lock_path = lock_path_for(sock_path)
    lock_path.write_bytes(b"")
    before = fingerprint(lock_path)
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert (result.state_after, result.actions) == (State.STOPPED, [])
    assert fingerprint(lock_path) == before


def test_an_orphaned_socket_beside_an_empty_kea_lock_is_removed_and_the_lock_left_untouched(
    sock_dir: Path,
) -> None:
    sock_path = sock_dir / "kea4-ctrl-socket"
    leave_orphaned_socket(sock_path)
    lock_path = lock_path_for(sock_path)
    lock_path.write_bytes(b"")
    before = fingerprint(lock_path)
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert [(a.path, a.what) for a in result.actions] == [(sock_path, ActionKind.REMOVED)]
    assert fingerprint(lock_path) == before


def test_a_record_file_with_a_second_name_is_never_emptied(sock_dir: Path) -> None:
    # A hard link planted elsewhere would make root empty that file too.
    sock_path = sock_dir / "ctrl.sock"
    leave_crashed_daemon(sock_path)
    lock_path = lock_path_for(sock_path)
    os.link(lock_path, sock_dir / "elsewhere")
    before = fingerprint(lock_path)
    result = cleanup(sock_path, timeout=TIMEOUT)
    assert [(a.path, a.what) for a in result.actions] == [
        (sock_path, ActionKind.REMOVED),
        (lock_path, ActionKind.REFUSED),
    ]
    assert "2 names (hard links)" in result.actions[1].reason
    assert fingerprint(lock_path)[-1] == before[-1]


def test_a_directory_scan_counts_a_lock_only_for_a_socket_or_when_empty_or_ours(sock_dir: Path) -> None:
    make_foreign_locks(sock_dir)
    lock_path_for(sock_dir / "kea.sock").write_bytes(b"")  # Kea, stopped cleanly
    leave_crashed_daemon(sock_dir / "ours.sock")
    (sock_dir / "ours.sock").unlink()  # only our record is left
    leave_orphaned_socket(sock_dir / "bare.sock")
    (sock_dir / "foreign.sock.lock").write_bytes(b"version = 3\n")
    leave_orphaned_socket(sock_dir / "foreign.sock")  # a socket: its lock is judged by cleanup, not the scan

    found = {report.socket_path.name for report in probe_paths([sock_dir], timeout=TIMEOUT)}

    assert found == {"kea.sock", "ours.sock", "bare.sock", "foreign.sock"}


# --- telling the truth ------------------------------------------------------------------------------


@pytest.mark.parametrize("leftover", ["orphaned socket", "empty lock file"])
def test_cleanup_in_a_world_writable_directory_is_refused(sock_dir: Path, leftover: str) -> None:
    sock_path = sock_dir / "ctrl.sock"
    if leftover == "orphaned socket":
        leave_orphaned_socket(sock_path)
    else:
        lock_path_for(sock_path).write_bytes(b"")
    os.chmod(sock_dir, 0o777)
    before = fingerprint(sock_path if sock_path.exists() else lock_path_for(sock_path))

    result = cleanup(sock_path, timeout=TIMEOUT)
    done = run_cli("cleanup", "--json", sock_path)

    assert result.refused
    assert "writable by others (mode 0777) without the sticky bit" in result.actions[0].reason
    assert done.returncode != 0, done.stdout
    [document] = json.loads(done.stdout)
    assert [a["what"] for a in document["actions"]] == ["refused"]
    assert fingerprint(sock_path if sock_path.exists() else lock_path_for(sock_path)) == before


def test_cleanup_json_names_the_pid_its_reasons_name(sock_dir: Path) -> None:
    crashed = sock_dir / "crashed.sock"
    pid = leave_crashed_daemon(crashed)
    done = run_cli("cleanup", "--json", crashed)
    [document] = json.loads(done.stdout)
    cleared = [a for a in document["actions"] if a["what"] == "cleared"]
    assert [(a["pid"], f"pid {pid}" in a["reason"]) for a in cleared] == [(pid, True)]

    running = sock_dir / "running.sock"
    with running_server(running) as server:
        done = run_cli("cleanup", "--json", running)
        [document] = json.loads(done.stdout)
        [refusal] = document["actions"]
        assert (refusal["what"], refusal["pid"]) == ("refused", server.pid)
        assert f"pid {server.pid}" in refusal["reason"]


def test_action_words_are_one_vocabulary(sock_path: Path) -> None:
    leave_orphaned_socket(sock_path)
    with take_lock(sock_path) as lock:
        from ctrlsock.recover import remove_orphans  # noqa: PLC0415

        [action] = remove_orphans(lock, dry_run=True)
    assert action.what is ActionKind.WOULD_REMOVE
    assert action.to_json()["what"] == "would remove"
    assert {kind.value for kind in ActionKind} >= {"removed", "cleared", "refused", "kept", "terminated"}


def test_a_lock_file_root_creates_in_a_users_directory_belongs_to_that_user(nobody_dir: Path) -> None:
    # The user's daemon must be able to open it later; lock files are never unlinked to make room.
    os.chown(nobody_dir, 65534, 65534)
    sock_path = nobody_dir / "ctrl.sock"
    leave_orphaned_socket(sock_path)
    os.chown(sock_path, 65534, 65534)

    result = cleanup(sock_path, timeout=TIMEOUT)

    assert [a.what for a in result.actions] == [ActionKind.REMOVED]
    st = os.stat(lock_path_for(sock_path))
    assert (st.st_uid, st.st_gid, st.st_size) == (65534, 65534, 0)


@pytest.mark.parametrize("name", CANARIES)
def test_taking_the_lock_never_writes_a_foreign_lock_file(sock_dir: Path, name: str) -> None:
    canaries = make_foreign_locks(sock_dir)
    before = fingerprints(canaries)
    socket_path = sock_dir / name.removesuffix(".lock")
    with pytest.raises(UnsafePathError, match="not a ctrlsock holder record"):
        take_lock(socket_path)
    assert fingerprints(canaries) == before


def test_serve_never_writes_a_foreign_lock_file(sock_dir: Path) -> None:
    canaries = make_foreign_locks(sock_dir)
    before = fingerprints(canaries)
    done = run_cli("serve", sock_dir / "Cargo", timeout=30)
    assert done.returncode == 73, done.stderr
    assert "another program's file, which ctrlsock never writes" in done.stderr
    assert fingerprints(canaries) == before
    assert not (sock_dir / "Cargo").exists()


@given(st.binary(max_size=512))
def test_only_a_versioned_record_of_ours_counts_as_our_lock_file(data: bytes) -> None:
    record = HolderRecord.decode(data)
    assert is_holder_record(data) == (record is not None and record.version >= 1)


@given(st.integers(min_value=1, max_value=2**31 - 1), st.text(max_size=40), st.integers(0, 99))
def test_a_record_we_write_is_ours_and_a_pid_file_is_not(pid: int, program: str, version: int) -> None:
    assert is_holder_record(HolderRecord(version=1, pid=pid, program=program).encode())
    assert not is_holder_record(f"{pid}\n".encode())
    assert not is_holder_record(f"version = {version}\n".encode())
