"""ctrlsock.procfs against the real /proc: real processes, real flocks, no mocks."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.lock import lock_path_for, take_lock
from ctrlsock.procfs import (
    HOW_INHERITED,
    HOW_LOCKER,
    HOW_ORIGINAL_LOCKER_DEAD,
    LockHow,
    current_boot_id,
    current_pid_namespace,
    find_deleted_lock_holders,
    find_lock_holders,
    find_lockers,
    find_socket_holders,
    holds_socket,
    is_flock_held,
    listening_socket_inodes,
    parse_listening_sockets,
    read_cpu_ticks,
    read_process,
)
from tests.support import Child, kill_foreign, wait_for_state


def test_read_process_describes_this_process() -> None:
    info = read_process(os.getpid())
    assert info is not None
    assert info.pid == os.getpid()
    assert info.ppid == os.getppid()
    assert info.uid == os.getuid()
    assert info.state == "R"
    assert info.status == "running"
    assert info.cmdline[0] == sys.executable or Path(info.cmdline[0]).name.startswith("python")
    # started_at comes from btime + ticks: in the past, and not before the parent started.
    parent = read_process(os.getppid())
    assert parent is not None
    assert parent.started_at <= info.started_at <= time.time()
    assert info.start_time == read_process(os.getpid()).start_time  # type: ignore[union-attr]


def test_read_process_parses_after_the_last_parenthesis() -> None:
    # comm may hold ")", "(" and spaces: fields must be split after the *last* ")".
    name = "a) b (c) d"
    with Child("lock_named.py", name) as child:
        (pid,) = child.expect_ready()
        info = read_process(int(pid))
        assert info is not None
        assert info.program == name
        assert info.ppid == os.getpid()
        assert info.state in {"S", "R"}


def test_read_process_returns_none_for_a_pid_that_cannot_exist() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert read_process(pid_max + 1) is None
    assert read_process(0) is None
    assert read_process(-1) is None


def test_read_process_shows_stopped_and_zombie_states() -> None:
    with Child("lock_named.py", "stopme") as child:
        (pid,) = child.expect_ready()
        os.kill(int(pid), signal.SIGSTOP)
        wait_for_state(int(pid), "T")
        info = read_process(int(pid))
        assert info is not None
        assert info.is_stopped
        assert info.status == "stopped"
        os.kill(int(pid), signal.SIGCONT)
        # Exit without being reaped: a zombie, which kill(pid, 0) would still call alive.
        assert child.process.stdin is not None
        child.process.stdin.close()
        wait_for_state(int(pid), "Z")
        zombie = read_process(int(pid))
        assert zombie is not None
        assert zombie.is_zombie
        assert zombie.status == "zombie"
        os.kill(int(pid), 0)  # the trap: a zombie still passes kill(pid, 0)


def test_boot_id_and_pid_namespace_match_the_kernel() -> None:
    assert current_boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert current_pid_namespace() == os.stat("/proc/self/ns/pid").st_ino
    assert current_pid_namespace() > 0


def test_is_flock_held_follows_the_kernel_lock(sock_dir: Path) -> None:
    path = sock_dir / "x.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not is_flock_held(path)
        assert find_lock_holders(path) == []
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert is_flock_held(path)
        (holder,) = find_lock_holders(path)
        assert holder.pid == os.getpid()
        assert holder.how == HOW_LOCKER
        assert holder.holds_lock
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert not is_flock_held(path)
    finally:
        os.close(fd)


def test_no_holders_for_missing_file_or_symlink(sock_dir: Path) -> None:
    target = sock_dir / "target.lock"
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        link = sock_dir / "link.lock"
        link.symlink_to(target)
        # The symlink's own inode is never locked through O_NOFOLLOW; it is not followed here either.
        assert find_lock_holders(link) == []
        assert not is_flock_held(link)
        assert find_lock_holders(sock_dir / "missing.lock") == []
    finally:
        os.close(fd)


def test_a_blocked_waiter_is_not_a_holder(sock_dir: Path) -> None:
    path = sock_dir / "x.lock"
    path.touch()
    with Child("lock_flock.py", str(path)) as holder:
        (holder_pid,) = holder.expect_ready()
        # A blocking flock from a second process shows as "-> FLOCK" in /proc/locks: a waiter.
        waiter = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl,os,sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), 2)",
                str(path),
            ]
        )
        try:
            deadline = time.monotonic() + 10
            while f"-> FLOCK  ADVISORY  WRITE {waiter.pid} " not in Path("/proc/locks").read_text():
                assert time.monotonic() < deadline, "waiter never blocked"
                time.sleep(0.005)
            assert [holder.pid for holder in find_lock_holders(path)] == [int(holder_pid)]
        finally:
            waiter.kill()
            waiter.wait()


def test_inherited_descriptor_found_after_original_locker_was_killed(sock_path: Path) -> None:
    with Child("lock_holder.py", str(sock_path), "--spawn-inheritor") as holder:
        holder_pid, inheritor_pid = map(int, holder.expect_ready())
        lock_path = sock_path.with_name(sock_path.name + ".lock")
        try:
            before = {h.pid: h.how for h in find_lock_holders(lock_path)}
            assert before == {holder_pid: HOW_LOCKER, inheritor_pid: HOW_INHERITED}
            holder.kill()
            holders = find_lock_holders(lock_path)
            assert [(h.pid, h.how) for h in holders] == [
                (inheritor_pid, HOW_INHERITED),
                (holder_pid, HOW_ORIGINAL_LOCKER_DEAD),
            ]
            assert holders[0].process is not None
            assert holders[0].process.ppid != holder_pid  # reparented: its parent is gone
            assert holders[1].process is None
            assert is_flock_held(lock_path)
        finally:
            kill_foreign(inheritor_pid)
        assert not is_flock_held(lock_path)


def test_read_process_of_init() -> None:
    info = read_process(1)
    assert info is not None
    assert info.pid == 1
    assert info.ppid == 0
    assert info.start_time >= 0


# --- the cheap lookups of the probe ------------------------------------------------------------------


def test_find_lockers_looks_only_at_the_pid_the_kernel_names(sock_path: Path) -> None:
    lock_path = lock_path_for(sock_path)
    assert find_lockers(lock_path) == []
    with take_lock(sock_path) as lock:
        [holder] = find_lockers(lock.lock_path) or []
        assert (holder.pid, holder.how) == (os.getpid(), LockHow.LOCKER)
    assert find_lockers(lock_path) == []


def test_a_lock_file_deleted_under_its_holder_is_found(sock_path: Path) -> None:
    with take_lock(sock_path) as lock:
        assert find_deleted_lock_holders(lock.lock_path) == []
        lock.lock_path.unlink()
        [holder] = find_deleted_lock_holders(lock.lock_path)
        assert (holder.pid, holder.fd) == (os.getpid(), lock.fileno())
        # Another path's deleted lock is not this one's.
        assert find_deleted_lock_holders(sock_path.with_name("other.sock.lock")) == []
    assert find_deleted_lock_holders(lock.lock_path) == []


def test_a_listening_socket_is_found_by_its_bound_name_even_after_unlink(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        assert listening_socket_inodes([str(sock_path)]) == {}  # bound, not listening yet
        listener.listen()
        inode = os.fstat(listener.fileno()).st_ino
        assert listening_socket_inodes([str(sock_path)]) == {inode: str(sock_path)}
        sock_path.unlink()
        assert listening_socket_inodes([str(sock_path)]) == {inode: str(sock_path)}
        assert holds_socket(os.getpid(), [inode])
        assert os.getpid() in [process.pid for process in find_socket_holders([inode])]
    assert listening_socket_inodes([str(sock_path)]) == {}


def test_cpu_ticks_grow_while_a_process_works() -> None:
    before = read_cpu_ticks(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = read_cpu_ticks(os.getpid())
    assert after is not None and after[0] > before[0]
    assert after[1] == "R"
    assert read_cpu_ticks(2**22 + 1) is None


_NET_UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


@given(
    inode=st.integers(min_value=1, max_value=2**40),
    flags=st.sampled_from([0x10000, 0x0, 0x10001]),
    address=st.text(
        alphabet=st.characters(blacklist_characters="\n\r\x00", blacklist_categories=["Zl", "Zp"]), min_size=1
    )
    .map(lambda text: "/" + text.strip())
    .filter(lambda text: text.strip() == text),
)
def test_parse_listening_sockets_finds_a_listener_by_its_address(
    inode: int, flags: int, address: str
) -> None:
    line = f"0000000000000000: 00000002 00000000 {flags:08X} 0001 01 {inode:5d} {address}\n"
    other = "0000000000000000: 00000002 00000000 00010000 0001 01 77 /elsewhere\n"
    found = parse_listening_sockets(_NET_UNIX_HEADER + other + line, {address})
    assert found == ({inode: address} if flags & 0x10000 else {})


@given(st.text())
def test_parse_listening_sockets_never_raises(text: str) -> None:
    assert isinstance(parse_listening_sockets(text, {"/x"}), dict)
