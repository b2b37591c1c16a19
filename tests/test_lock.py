"""ctrlsock.lock with real processes, real files and the real kernel flock; no mocks."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrlsock.errors import LockError, LockHeldError, UnsafePathError
from ctrlsock.lock import (
    MAX_RECORD_SIZE,
    RECORD_FORMAT,
    RECORD_VERSION,
    HolderRecord,
    LockIntegrity,
    describe_holder,
    judge_record,
    lock_path_for,
    read_record,
    take_lock,
    try_take_lock,
)
from ctrlsock.procfs import (
    HOW_INHERITED,
    HOW_ORIGINAL_LOCKER_DEAD,
    current_boot_id,
    current_pid_namespace,
    find_deleted_lock_holders,
    find_lock_holders,
    is_flock_held,
    read_process,
)
from ctrlsock.record import RecordStatus
from tests.kea import KeaDaemon, start_kea
from tests.support import Child, kill_foreign, wait_for_state

RACERS = 20


def test_lock_path_is_the_socket_path_plus_lock(sock_path: Path) -> None:
    assert lock_path_for(sock_path) == sock_path.parent / "ctrl.sock.lock"
    assert lock_path_for(Path("/run/kea/kea4-ctrl-socket")) == Path("/run/kea/kea4-ctrl-socket.lock")


# --- taking and releasing -------------------------------------------------------------------------


def test_take_lock_writes_the_record_and_release_clears_it(sock_path: Path) -> None:
    lock = take_lock(sock_path, program="mydaemon")
    try:
        assert lock.is_held
        assert lock.lock_path == lock_path_for(sock_path)
        assert stat.S_IMODE(os.stat(lock.lock_path).st_mode) == 0o600
        assert not os.get_inheritable(lock.fileno())  # O_CLOEXEC
        record = read_record(lock.lock_path)
        assert record == lock.record
        me = read_process(os.getpid())
        assert me is not None
        assert record.version == RECORD_VERSION
        assert record.pid == os.getpid()
        assert record.start_time == me.start_time
        assert record.boot_id == current_boot_id()
        assert record.pid_namespace == current_pid_namespace()
        assert record.hostname == os.uname().nodename
        assert record.program == "mydaemon"
        assert record.socket_path == str(sock_path)
        assert abs(record.started_at - time.time()) < 600
        assert lock.lock_path.read_bytes() == record.encode()
        verdict = judge_record(record)
        assert (verdict.trusted, verdict.alive, verdict.status) == (True, True, "running")
    finally:
        lock.release()
    assert not lock.is_held
    assert lock.lock_path.exists()  # never unlinked: a waiter may hold it open
    assert lock.lock_path.read_bytes() == b""
    assert read_record(lock.lock_path) is None
    assert not is_flock_held(lock.lock_path)
    lock.release()  # idempotent
    with pytest.raises(LockError):
        lock.fileno()


def test_release_without_clearing_leaves_the_record_as_a_crash_would(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        pass
    assert read_record(lock.lock_path) is None
    lock = take_lock(sock_path)
    lock.release(clear_record=False)
    assert read_record(lock.lock_path) == lock.record


def test_second_taker_in_the_same_process_is_refused(sock_path: Path) -> None:
    with take_lock(sock_path, program="first") as lock:
        with pytest.raises(LockHeldError) as caught:
            take_lock(sock_path)
        error = caught.value
        assert isinstance(error, BlockingIOError)
        assert error.lock_path == lock.lock_path
        assert str(error).startswith(
            f"cannot lock socket lockfile, {lock.lock_path}: held by pid {os.getpid()} ("
        )
        assert "first, running since " in str(error)
        assert try_take_lock(sock_path) is None
        assert read_record(lock.lock_path) == lock.record  # the loser did not touch the record


def test_a_longer_crashed_record_is_overwritten_then_truncated(sock_path: Path) -> None:
    lock_path = lock_path_for(sock_path)
    lock_path.write_bytes(HolderRecord(version=1, pid=2**22, program="x" * 10_000).encode())
    with take_lock(sock_path) as lock:
        assert lock_path.read_bytes() == lock.record.encode()


def test_a_forked_child_does_not_hold_or_clear_the_lock(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0 if not lock.is_held else 1
            lock.release()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert read_record(lock.lock_path) == lock.record
        assert [h.pid for h in find_lock_holders(lock.lock_path)] == [os.getpid()]


# --- crashed, stopped and inherited holders --------------------------------------------------------


def test_sigkilled_holder_frees_the_lock_and_leaves_its_record(sock_path: Path) -> None:
    with Child("lock_holder.py", str(sock_path), "--program", "mydaemon") as holder:
        (pid,) = map(int, holder.expect_ready())
        holder.kill()
    lock_path = lock_path_for(sock_path)
    assert not is_flock_held(lock_path)
    record = read_record(lock_path)
    assert record is not None
    assert (record.pid, record.program) == (pid, "mydaemon")
    verdict = judge_record(record)
    assert (verdict.trusted, verdict.alive, verdict.status) == (False, False, "dead")
    assert verdict.reason == f"pid {pid} is dead"
    with take_lock(sock_path) as lock:
        assert read_record(lock_path) == lock.record


def test_sigstopped_holder_is_named_stopped(sock_path: Path) -> None:
    with Child("lock_holder.py", str(sock_path), "--program", "mydaemon") as holder:
        (pid,) = map(int, holder.expect_ready())
        os.kill(pid, signal.SIGSTOP)
        wait_for_state(pid, "T")
        with pytest.raises(LockHeldError) as caught:
            take_lock(sock_path)
        message = str(caught.value)
        assert f"held by pid {pid} (mydaemon, stopped (SIGSTOP) since " in message
        assert caught.value.holders == (message.split("held by ", 1)[1],)
        assert caught.value.pids == (pid,)
        record = read_record(lock_path_for(sock_path))
        assert record is not None
        verdict = judge_record(record)
        assert (verdict.trusted, verdict.alive, verdict.status) == (True, True, "stopped")
        assert verdict.reason == f"pid {pid} is stopped (SIGSTOP)"
        os.kill(pid, signal.SIGCONT)
        holder.send_line()
        assert holder.readline() == "released"
    assert read_record(lock_path_for(sock_path)) is None


def test_inherited_descriptor_holder_is_named_after_its_parent_was_killed(sock_path: Path) -> None:
    with Child("lock_holder.py", str(sock_path), "--program", "mydaemon", "--spawn-inheritor") as holder:
        holder_pid, inheritor_pid = map(int, holder.expect_ready())
        try:
            holder.kill()
            lock_path = lock_path_for(sock_path)
            holders = find_lock_holders(lock_path)
            assert [(h.pid, h.how) for h in holders] == [
                (inheritor_pid, HOW_INHERITED),
                (holder_pid, HOW_ORIGINAL_LOCKER_DEAD),
            ]
            with pytest.raises(LockHeldError) as caught:
                take_lock(sock_path)
            message = str(caught.value)
            assert f"held by pid {inheritor_pid} (python" in message
            assert "inherited the lock descriptor" in message
            assert caught.value.pids == (inheritor_pid,)
            assert f"pid {holder_pid} (mydaemon, dead, the original locker" in message
            # The record still names the killed daemon, and says so.
            record = read_record(lock_path)
            assert record is not None
            assert record.pid == holder_pid
            assert judge_record(record).status == "dead"
        finally:
            kill_foreign(inheritor_pid)
    with take_lock(sock_path):
        pass


def test_kea_style_empty_lock_file_is_handled(sock_path: Path) -> None:
    lock_path = lock_path_for(sock_path)
    lock_path.touch(mode=0o644)
    os.chmod(lock_path, 0o644)
    assert read_record(lock_path) is None
    with Child("lock_flock.py", str(lock_path)) as kea:
        (pid,) = map(int, kea.expect_ready())
        with pytest.raises(LockHeldError) as caught:
            take_lock(sock_path)
        assert f"held by pid {pid} (python" in str(caught.value)
        assert "recorded owner" not in str(caught.value)  # there is no record to speak of
        kea.send_line()
        kea.process.wait(timeout=10)
    with take_lock(sock_path) as lock:
        assert read_record(lock_path) == lock.record
        assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o644  # an existing file keeps its mode
    assert lock_path.read_bytes() == b""


# --- record verdicts ------------------------------------------------------------------------------


def _record_for(pid: int, **changes: object) -> HolderRecord:
    process = read_process(pid)
    assert process is not None
    fields: dict[str, object] = {
        "version": RECORD_VERSION,
        "pid": pid,
        "start_time": process.start_time,
        "boot_id": current_boot_id(),
        "pid_namespace": current_pid_namespace(),
        "hostname": os.uname().nodename,
        "program": "mydaemon",
        "socket_path": "/run/x/ctrl.sock",
        "started_at": process.started_at,
    }
    fields.update(changes)
    return HolderRecord(**fields)  # type: ignore[arg-type]


def test_record_with_live_pid_but_other_start_time_is_not_trusted(sock_path: Path) -> None:
    # PID reuse: the pid is alive, but it is not the process that wrote the record.
    pid = os.getpid()
    record = _record_for(pid, start_time=read_process(pid).start_time + 1)  # type: ignore[union-attr]
    verdict = judge_record(record)
    assert (verdict.trusted, verdict.alive, verdict.status) == (False, False, "reused")
    assert verdict.reason == f"pid {pid} was reused (start time differs)"
    assert verdict.process is not None
    assert verdict.process.pid == pid
    # Written into a lock file nobody holds, it does not stop a start: the kernel lock is the truth.
    lock_path = lock_path_for(sock_path)
    lock_path.write_bytes(record.encode())
    with take_lock(sock_path) as lock:
        assert read_record(lock_path) == lock.record


def test_record_from_another_boot_is_not_trusted() -> None:
    verdict = judge_record(_record_for(os.getpid(), boot_id="00000000-0000-0000-0000-000000000000"))
    assert (verdict.trusted, verdict.alive, verdict.status) == (False, False, "other-boot")
    assert verdict.reason == "record is from another boot"


def test_record_from_another_pid_namespace_is_not_trusted() -> None:
    verdict = judge_record(_record_for(os.getpid(), pid_namespace=current_pid_namespace() + 1))
    assert (verdict.trusted, verdict.status) == (False, "other-namespace")
    assert verdict.reason == "record is from another PID namespace"


def test_record_of_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for_state(child.pid, "Z")
        verdict = judge_record(_record_for(child.pid))
        assert (verdict.trusted, verdict.alive, verdict.status) == (True, False, "zombie")
        assert "zombie" in verdict.reason
    finally:
        child.wait()


def test_record_of_this_process_is_trusted_and_alive() -> None:
    verdict = judge_record(_record_for(os.getpid()))
    assert (verdict.trusted, verdict.alive, verdict.status) == (True, True, "running")


def test_record_without_start_time_is_not_trusted_for_a_live_pid() -> None:
    # A bare pid (or a record missing its start time) names a pid, not a process: whatever runs under
    # that pid now may have been handed it after the writer died.
    for record in (HolderRecord(version=0, pid=os.getpid()), _record_for(os.getpid(), start_time=0)):
        verdict = judge_record(record)
        assert (verdict.trusted, verdict.status) == (False, RecordStatus.UNVERIFIABLE)
        assert verdict.reason == (
            f"the record has no start time: whether pid {os.getpid()} is the process that wrote it "
            "cannot be checked"
        )


def test_describe_holder_names_a_reused_pid(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        (holder,) = find_lock_holders(lock.lock_path)
        fake = _record_for(os.getpid(), start_time=lock.record.start_time + 7)
        assert "not the recorded owner: its pid was reused" in describe_holder(holder, fake)
        assert describe_holder(holder, lock.record).startswith(f"pid {os.getpid()} (")


# --- the race -------------------------------------------------------------------------------------


def test_twenty_racers_exactly_one_wins_and_every_loser_names_it(sock_path: Path) -> None:
    barrier_read, barrier_write = os.pipe()
    racers: list[Child] = []
    try:
        for _ in range(RACERS):
            racers.append(Child("lock_racer.py", str(sock_path), str(barrier_read), pass_fds=(barrier_read,)))
        for racer in racers:
            assert racer.readline() == "ready"
        os.close(barrier_write)  # every racer's read() returns EOF now: go
        barrier_write = -1
        results = [racer.readline().split(" ", 2) for racer in racers]
        winners = [int(words[1]) for words in results if words[0] == "won"]
        assert len(winners) == 1, results
        (winner,) = winners
        losers = [words for words in results if words[0] == "lost"]
        assert len(losers) == RACERS - 1
        for _, _, message in losers:
            assert message.startswith(f"cannot lock socket lockfile, {lock_path_for(sock_path)}: held by")
            assert f"pid {winner} (" in message, message
        record = read_record(lock_path_for(sock_path))
        assert record is not None
        assert record.pid == winner
    finally:
        if barrier_write >= 0:
            os.close(barrier_write)
        os.close(barrier_read)
        for racer in racers:
            racer.kill()


# --- unsafe paths ---------------------------------------------------------------------------------


def test_symlink_at_lock_path_is_refused_and_target_untouched(sock_path: Path) -> None:
    target = sock_path.parent / "precious"
    target.write_bytes(b"do not truncate me\n")
    os.chmod(target, 0o644)
    lock_path = lock_path_for(sock_path)
    lock_path.symlink_to(target)
    with pytest.raises(UnsafePathError) as caught:
        take_lock(sock_path)
    assert caught.value.path == lock_path
    assert "symlink" in caught.value.reason
    with pytest.raises(UnsafePathError):
        try_take_lock(sock_path)  # unsafe paths raise even from try_*
    assert target.read_bytes() == b"do not truncate me\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert lock_path.is_symlink()
    assert read_record(lock_path) is None


def test_dangling_symlink_at_lock_path_is_refused_and_nothing_created(sock_path: Path) -> None:
    target = sock_path.parent / "nothing-here"
    lock_path_for(sock_path).symlink_to(target)
    with pytest.raises(UnsafePathError):
        take_lock(sock_path)
    assert not target.exists()


def test_directory_at_lock_path_is_refused(sock_path: Path) -> None:
    lock_path_for(sock_path).mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        take_lock(sock_path)


def test_missing_directory_is_not_created(sock_dir: Path) -> None:
    socket_path = sock_dir / "missing" / "ctrl.sock"
    with pytest.raises(LockError, match="does not exist"):
        take_lock(socket_path)
    assert not socket_path.parent.exists()


# --- the record format ----------------------------------------------------------------------------


def test_decode_reads_older_newer_and_bare_pid_records() -> None:
    assert HolderRecord.decode(b"") is None
    assert HolderRecord.decode(b"\n  \n") is None
    assert HolderRecord.decode(b"4242\n") == HolderRecord(version=0, pid=4242)
    newer = {"format": RECORD_FORMAT, "version": 99, "pid": 7, "program": "x", "future": {"a": [1]}}
    assert HolderRecord.decode(json.dumps(newer).encode()) == HolderRecord(version=99, pid=7, program="x")
    ill_typed = {"format": RECORD_FORMAT, "version": 1, "pid": 7, "start_time": "soon", "hostname": 5}
    assert HolderRecord.decode(json.dumps(ill_typed).encode()) == HolderRecord(version=1, pid=7)
    # Foreign JSON, bad pids, deep nesting, huge numbers, junk: None, never an exception.
    for data in [
        b'{"pid": 7}',
        b"[1, 2]",
        json.dumps({"format": RECORD_FORMAT, "version": 1, "pid": True}).encode(),
        json.dumps({"format": RECORD_FORMAT, "version": 1, "pid": 0}).encode(),
        json.dumps({"format": RECORD_FORMAT, "version": 1, "pid": 2**40}).encode(),
        b"[" * 100_000,
        b'{"format": "ctrlsock-holder", "version": 1, "pid": ' + b"9" * 5000 + b"}",
        b"99999999999999999999",
        b"\xff\xfe",
        b"\x00" * 100,
    ]:
        assert HolderRecord.decode(data) is None, data


def test_decode_ignores_the_tail_of_an_older_longer_record() -> None:
    new = HolderRecord(version=1, pid=12, program="new").encode()
    old = HolderRecord(version=1, pid=34, program="an older and much longer program name").encode()
    torn = new + old[len(new) :]
    assert HolderRecord.decode(torn) == HolderRecord(version=1, pid=12, program="new")


def test_read_record_caps_what_it_reads(sock_dir: Path) -> None:
    path = sock_dir / "big.lock"
    record = HolderRecord(version=1, pid=5)
    path.write_bytes(record.encode() + b" " * (MAX_RECORD_SIZE * 4))
    assert read_record(path) == record
    assert read_record(sock_dir / "missing.lock") is None
    assert read_record(sock_dir) is None


records = st.builds(
    HolderRecord,
    version=st.integers(min_value=0, max_value=2**63),
    pid=st.integers(min_value=1, max_value=2**31 - 1),
    start_time=st.integers(min_value=0, max_value=2**64 - 1),
    boot_id=st.text(),
    pid_namespace=st.integers(min_value=0, max_value=2**64 - 1),
    hostname=st.text(),
    program=st.text(),
    socket_path=st.text(),
    started_at=st.floats(allow_nan=False, allow_infinity=False),
    stopping_since=st.floats(allow_nan=False, allow_infinity=False),
)


@given(records)
def test_holder_record_round_trips(record: HolderRecord) -> None:
    assert HolderRecord.decode(record.encode()) == record


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash_decode(data: bytes) -> None:
    result = HolderRecord.decode(data)
    assert result is None or isinstance(result, HolderRecord)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=4,
)


@settings(max_examples=60)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "format",
                "version",
                "pid",
                "start_time",
                "boot_id",
                "pid_namespace",
                "hostname",
                "program",
                "socket_path",
                "started_at",
                "stopping_since",
                "x",
            ]
        ),
        json_values,
    )
)
def test_ill_typed_records_never_crash_decode(fields: dict[str, object]) -> None:
    fields.setdefault("format", RECORD_FORMAT)
    result = HolderRecord.decode(json.dumps(fields).encode())
    assert result is None or result.pid > 0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_in_a_lock_file_never_crash_the_reader(sock_dir: Path, data: bytes) -> None:
    path = sock_dir / "fuzz.lock"
    path.write_bytes(data)
    result = read_record(path)
    assert result is None or isinstance(result, HolderRecord)


# --- a real Kea 2.2 -------------------------------------------------------------------------------


@pytest.mark.kea
def test_running_kea_is_named_and_its_empty_lock_file_untouched(kea_daemon: KeaDaemon) -> None:
    assert kea_daemon.lock_path == lock_path_for(kea_daemon.socket_path)
    assert read_record(kea_daemon.lock_path) is None  # Kea writes nothing
    with pytest.raises(LockHeldError) as caught:
        take_lock(kea_daemon.socket_path)
    assert f"held by pid {kea_daemon.pid} (kea-dhcp4, running since " in str(caught.value)
    assert kea_daemon.lock_path.read_bytes() == b""


@pytest.mark.kea
def test_killed_kea_frees_its_lock_and_restarts_after_ours(kea_daemon: KeaDaemon) -> None:
    kea_daemon.kill()
    with take_lock(kea_daemon.socket_path, program="ctrlsock-test"):
        pass
    assert kea_daemon.lock_path.read_bytes() == b""  # cleared: Kea finds an empty file as it left it
    kea_daemon.socket_path.unlink()  # Kea 2.2 would delete it anyway; here it must be gone to bind
    restarted = kea_daemon.restart()
    try:
        with pytest.raises(LockHeldError, match=f"pid {restarted.pid} "):
            take_lock(kea_daemon.socket_path)
    finally:
        restarted.cleanup()


@pytest.mark.kea
def test_kea_lease_cleaner_that_inherited_the_lock_is_named(sock_dir: Path) -> None:
    kea = start_kea(sock_dir, lfc_sleep=30)
    try:
        (lfc_pid, *_) = kea.wait_for_lfc()
        kea_pid = kea.pid
        kea.kill()
        with pytest.raises(LockHeldError) as caught:
            take_lock(kea.socket_path)
        message = str(caught.value)
        assert f"pid {lfc_pid} (sleep, running since " in message
        assert "inherited the lock descriptor" in message
        assert f"pid {kea_pid} (dead, the original locker" in message
    finally:
        kea.cleanup()


def test_mark_stopping_rewrites_the_record_and_release_clears_it(sock_dir: Path) -> None:
    socket_path = sock_dir / "s.sock"
    lock = take_lock(socket_path, program="stopper")
    try:
        assert read_record(lock.lock_path) == lock.record
        assert lock.record.stopping_since == 0.0
        before = time.time()
        lock.mark_stopping()
        on_disk = read_record(lock.lock_path)
        assert on_disk is not None
        assert on_disk.stopping_since >= before
        assert on_disk == dataclasses.replace(lock.record, stopping_since=on_disk.stopping_since)
        assert on_disk.pid == os.getpid() and on_disk.program == "stopper"
    finally:
        lock.release()
    assert lock.lock_path.read_bytes() == b""


# --- a lock file deleted under its holder -------------------------------------------------------------


def test_take_lock_refuses_while_a_live_process_holds_the_deleted_lock_file(sock_path: Path) -> None:
    lock_path = lock_path_for(sock_path)
    with Child("lock_holder.py", str(sock_path), "--program", "mydaemon") as holder:
        (pid,) = map(int, holder.expect_ready())
        lock_path.unlink()  # what a /tmp cleaner does
        with pytest.raises(LockHeldError) as caught:
            take_lock(sock_path)
        assert caught.value.pids == (pid,)
        assert f"held by pid {pid} (" in str(caught.value)
        assert "on the deleted lock file" in str(caught.value)
        assert try_take_lock(sock_path) is None
        # Refused before creating anything: the daemon can still put its own lock file back.
        assert not lock_path.exists()
    with take_lock(sock_path) as lock:  # once the daemon is gone, the path is free again
        assert lock.record.pid == os.getpid()


def test_check_intact_tells_deleted_and_replaced_lock_files(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        assert lock.check_intact() is LockIntegrity.INTACT
        lock.lock_path.unlink()
        assert lock.check_intact() is LockIntegrity.DELETED
        lock.lock_path.write_bytes(b"")
        assert lock.check_intact() is LockIntegrity.REPLACED


def test_restore_puts_a_locked_file_with_our_record_back(sock_path: Path) -> None:
    lock = take_lock(sock_path, program="mydaemon")
    try:
        assert lock.restore() is True  # intact: nothing to do
        lock.lock_path.unlink()
        assert lock.restore() is True
        assert lock.check_intact() is LockIntegrity.INTACT
        assert read_record(lock.lock_path) == lock.record
        assert stat.S_IMODE(os.lstat(lock.lock_path).st_mode) == 0o600
        assert is_flock_held(lock.lock_path)
        assert [h.pid for h in find_lock_holders(lock.lock_path)] == [os.getpid()]
        assert [name for name in os.listdir(sock_path.parent)] == [lock.lock_path.name]  # no debris
        assert try_take_lock(sock_path) is None
    finally:
        lock.release()
    assert lock.lock_path.read_bytes() == b""
    assert not is_flock_held(lock.lock_path)
    assert find_deleted_lock_holders(lock.lock_path) == []  # the old, unlinked file was let go too
    with take_lock(sock_path):
        pass


def test_restore_leaves_a_file_that_appeared_at_the_path_alone(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        lock.lock_path.unlink()
        lock.lock_path.write_bytes(b"someone else's")
        assert lock.restore() is False
        assert lock.lock_path.read_bytes() == b"someone else's"
        assert lock.check_intact() is LockIntegrity.REPLACED


def test_a_forked_child_does_not_keep_a_restored_lock(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        lock.lock_path.unlink()
        assert lock.restore()
        ready_read, ready_write = os.pipe()
        done_read, done_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(done_write)
            os.close(ready_read)
            # Python code runs in the child only after the at-fork handlers did.
            os.write(ready_write, b"r")
            os.read(done_read, 1)  # alive until the parent has looked
            os._exit(0 if not lock.is_held else 1)
        os.close(ready_write)
        os.close(done_read)
        try:
            assert os.read(ready_read, 1) == b"r"
            holders = find_lock_holders(lock.lock_path)
            assert [h.pid for h in holders] == [os.getpid()]
        finally:
            os.close(done_write)
            os.close(ready_read)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
