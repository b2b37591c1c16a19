"""Read-only views of Linux ``/proc``: processes, and who holds a ``flock`` on a file.

Nothing here takes a lock, opens a lock file for writing, or signals a process: a status check that
took the lock even briefly could make a starting daemon fail: its own non-blocking ``flock`` would meet
ours and it would report the socket as taken.

Kernel facts this module relies on (measured on 6.18, stable since 2.6):

- ``/proc/PID/stat`` puts the command name in parentheses and the name may itself contain ``)``, spaces
  or newlines, so the fields are parsed after the *last* ``)``. Field 3 is the state letter, field 4
  the parent pid, field 22 the start time in clock ticks since boot.
- ``/proc/locks`` lines read ``1: FLOCK  ADVISORY  WRITE 10639 fe:00:2180108 0 EOF``: the pid that took
  the lock (it stays there after that process died, as long as another descriptor on the same open
  file keeps the lock), then the device as hex ``major:minor`` and the inode in decimal. Lines of
  waiters blocked on a lock read ``1: -> FLOCK ...`` and are not holders.
- ``/proc/PID/fdinfo/FD`` carries the same text after ``lock:`` for a descriptor whose open file
  description holds the lock: every process that inherited the descriptor shows it, which is how a
  child that inherited a dead daemon's lock is found.
- ``/proc/PID/fd/N`` of a file unlinked after it was opened reads ``<path> (deleted)``.
- ``/proc/net/unix`` lists every AF_UNIX socket of this network namespace with its socket inode and the
  address it was bound to (the name given to ``bind()``, even after that file was unlinked or renamed);
  flag ``00010000`` (``__SO_ACCEPTCON``) marks a listening socket. A descriptor on it reads
  ``socket:[INODE]`` in ``/proc/PID/fd``.
- Fields 14 and 15 of ``/proc/PID/stat`` (``utime``, ``stime``) are the CPU time of all its threads in clock
  ticks: a process whose sum does not move is making no progress.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Final

__all__ = [
    "HOW_INHERITED",
    "HOW_LOCKER",
    "HOW_ORIGINAL_LOCKER_CLOSED",
    "HOW_ORIGINAL_LOCKER_DEAD",
    "LockHolder",
    "LockHow",
    "ProcessInfo",
    "ProcessStatus",
    "current_boot_id",
    "current_pid_namespace",
    "find_deleted_lock_holders",
    "find_lock_holders",
    "find_lockers",
    "find_socket_holders",
    "holds_socket",
    "is_flock_held",
    "listening_socket_inodes",
    "parse_listening_sockets",
    "read_cpu_ticks",
    "read_process",
]

PROC: Final = Path("/proc")


class LockHow(StrEnum):
    """How a process is tied to a ``flock``."""

    #: The pid ``/proc/locks`` names, and it still holds the lock through a descriptor.
    LOCKER = "locker"
    #: Holds the lock through a descriptor it inherited; not the pid ``/proc/locks`` names.
    INHERITED = "inherited"
    #: ``/proc/locks`` names a pid that no longer exists (or a zombie); others keep the lock.
    ORIGINAL_LOCKER_DEAD = "original-locker-dead"
    #: ``/proc/locks`` names a live pid that no longer has the file open (it closed its descriptor, or the
    #: pid was reused by an unrelated process); others keep the lock.
    ORIGINAL_LOCKER_CLOSED = "original-locker-closed"


class ProcessStatus(StrEnum):
    """A process's condition in one word, as ``status`` prints it."""

    RUNNING = "running"
    #: Stopped by ``SIGSTOP``/``SIGTSTP`` or by a tracer: alive, but it makes no progress.
    STOPPED = "stopped"
    #: Exited, not yet reaped.
    ZOMBIE = "zombie"
    DEAD = "dead"
    #: Not visible from here (another PID namespace, ``hidepid``), or a record that cannot be checked.
    UNKNOWN = "unknown"


# The older names of the members, kept for callers written against them.
HOW_LOCKER: Final = LockHow.LOCKER
HOW_INHERITED: Final = LockHow.INHERITED
HOW_ORIGINAL_LOCKER_DEAD: Final = LockHow.ORIGINAL_LOCKER_DEAD
HOW_ORIGINAL_LOCKER_CLOSED: Final = LockHow.ORIGINAL_LOCKER_CLOSED

#: ``/proc/net/unix`` flag of a listening socket (``__SO_ACCEPTCON``).
_SO_ACCEPTCON: Final = 0x10000

# /proc/PID/stat fields counted from 1, as proc(5) numbers them; the list after the last ")" starts at 3.
_STAT_FIRST_FIELD_AFTER_COMM: Final = 3
_STAT_PPID: Final = 4
_STAT_UTIME: Final = 14
_STAT_STIME: Final = 15
_STAT_STARTTIME: Final = 22

# Descriptor link targets that can never be a lock file: skip their stat() in the /proc/*/fd scan.
_NOT_A_FILE_PREFIXES: Final = ("socket:", "pipe:", "anon_inode:", "/dev/", "/proc/", "/sys/", "net:", "mnt:")


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc`` shows it at the moment it was read.

    Attributes:
        pid: the process id (in the PID namespace of this ``/proc``).
        ppid: the parent's pid.
        program: the command name (``comm``, at most 15 bytes), e.g. ``kea-dhcp4``.
        cmdline: the arguments; empty for zombies and kernel threads.
        state: one letter from ``/proc/PID/stat``: ``R S D T t Z X I``.
        start_time: clock ticks since boot when the process started (field 22); with ``pid`` and the
            boot id it names exactly one process, which catches a reused pid.
        uid: the real user id, or -1 when ``/proc/PID/status`` could not be read.
        started_at: the start as unix time, computed from the boot time and ``start_time``.
        cpu_ticks: CPU time used so far by all its threads (``utime + stime``), in clock ticks.
    """

    pid: int
    ppid: int
    program: str
    cmdline: tuple[str, ...]
    state: str
    start_time: int
    uid: int
    started_at: float
    cpu_ticks: int = 0

    @property
    def is_zombie(self) -> bool:
        """Exited but not yet reaped: ``kill(pid, 0)`` still succeeds, yet nothing runs."""
        return self.state in {"Z", "X", "x"}

    @property
    def is_stopped(self) -> bool:
        """Stopped by ``SIGSTOP``/``SIGTSTP`` (``T``) or by a tracer (``t``)."""
        return self.state in {"T", "t"}

    @property
    def status(self) -> ProcessStatus:
        """Running, stopped or zombie."""
        if self.is_zombie:
            return ProcessStatus.ZOMBIE
        if self.is_stopped:
            return ProcessStatus.STOPPED
        return ProcessStatus.RUNNING


@dataclass(frozen=True)
class LockHolder:
    """A process found holding (or named as having taken) a ``flock``.

    Attributes:
        pid: the process id.
        process: what ``/proc`` says about it, or ``None`` when it no longer exists.
        how: how it is tied to the lock.
        fd: the descriptor through which it holds the lock, when known.
    """

    pid: int
    process: ProcessInfo | None
    how: LockHow
    fd: int | None = None

    @property
    def holds_lock(self) -> bool:
        """True when this process really keeps the lock alive (not only named by ``/proc/locks``)."""
        return self.how in {HOW_LOCKER, HOW_INHERITED}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


@cache
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    # Not cached: it is one small read, and a cached value would survive a checkpoint/restore.
    text = _read_text(PROC / "stat") or ""
    for line in text.splitlines():
        if line.startswith("btime "):
            with contextlib.suppress(ValueError):
                return float(line.split()[1])
    return 0.0


def _parse_stat(text: str) -> tuple[str, str, int, int, int] | None:
    """(comm, state, ppid, start_time, cpu_ticks) from a ``/proc/PID/stat`` line, or None if malformed."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        return None
    comm = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 1 :].split()
    try:
        state = fields[0]
        ppid = int(fields[_STAT_PPID - _STAT_FIRST_FIELD_AFTER_COMM])
        start_time = int(fields[_STAT_STARTTIME - _STAT_FIRST_FIELD_AFTER_COMM])
        cpu_ticks = int(fields[_STAT_UTIME - _STAT_FIRST_FIELD_AFTER_COMM]) + int(
            fields[_STAT_STIME - _STAT_FIRST_FIELD_AFTER_COMM]
        )
    except (IndexError, ValueError):
        return None
    return comm, state, ppid, start_time, cpu_ticks


def _read_uid(pid: int) -> int:
    text = _read_text(PROC / str(pid) / "status") or ""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                return int(parts[1])
    return -1


def read_process(pid: int) -> ProcessInfo | None:
    """What ``/proc`` says about ``pid`` now.

    Args:
        pid: a process id in the PID namespace of this ``/proc``.

    Returns:
        The process, or ``None`` when it does not exist or its ``stat`` cannot be read (``hidepid``).
        A zombie is returned with ``state == "Z"``: check :attr:`ProcessInfo.is_zombie`.
    """
    if pid <= 0:
        return None
    text = _read_text(PROC / str(pid) / "stat")
    if text is None:
        return None
    parsed = _parse_stat(text)
    if parsed is None:
        return None
    comm, state, ppid, start_time, cpu_ticks = parsed
    try:
        raw_cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:  # exited since the stat read, or hidden
        raw_cmdline = b""
    cmdline = tuple(part.decode("utf-8", "replace") for part in raw_cmdline.split(b"\0") if part)
    return ProcessInfo(
        pid=pid,
        ppid=ppid,
        program=comm,
        cmdline=cmdline,
        state=state,
        start_time=start_time,
        uid=_read_uid(pid),
        started_at=_boot_time() + start_time / _clock_ticks(),
        cpu_ticks=cpu_ticks,
    )


def read_cpu_ticks(pid: int) -> tuple[int, str] | None:
    """(CPU time used so far in clock ticks, state letter) of ``pid``: one small read, or None if gone."""
    text = _read_text(PROC / str(pid) / "stat")
    parsed = _parse_stat(text) if text is not None else None
    if parsed is None:
        return None
    return parsed[4], parsed[1]


def clock_ticks_per_second() -> int:
    """``sysconf(_SC_CLK_TCK)``: the unit of ``start_time`` and ``cpu_ticks``."""
    return _clock_ticks()


def current_boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), or ``""`` if it cannot be read."""
    return (_read_text(PROC / "sys/kernel/random/boot_id") or "").strip()


def current_pid_namespace() -> int:
    """The inode of this process's PID namespace (``/proc/self/ns/pid``), or 0 if it cannot be read."""
    try:
        return os.stat(PROC / "self/ns/pid").st_ino
    except OSError:
        return 0


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """(major, minor, inode) of ``path`` itself, never following a symlink; None if absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        # A symlink's own inode is never the one locked through O_NOFOLLOW.
        return None
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def _parse_lock_line(line: str) -> tuple[str, int, tuple[int, int, int]] | None:
    """(type, pid, (major, minor, inode)) from a ``/proc/locks`` or fdinfo ``lock:`` line."""
    fields = line.split()
    # Strip the "N:" ordinal; a "->" after it marks a blocked waiter, which holds nothing.
    if not fields or not fields[0].endswith(":"):
        return None
    fields = fields[1:]
    if not fields or fields[0] == "->":
        return None
    try:
        lock_type = fields[0]
        pid = int(fields[3])
        major, minor, inode = fields[4].split(":")
        return lock_type, pid, (int(major, 16), int(minor, 16), int(inode))
    except (IndexError, ValueError):
        return None


def _flock_pids(identity: tuple[int, int, int]) -> list[int]:
    """Pids ``/proc/locks`` names for a FLOCK on ``identity``, in order, without duplicates."""
    text = _read_text(PROC / "locks") or ""
    pids: list[int] = []
    for line in text.splitlines():
        parsed = _parse_lock_line(line)
        if parsed is not None and parsed[0] == "FLOCK" and parsed[2] == identity and parsed[1] not in pids:
            pids.append(parsed[1])
    return pids


def is_flock_held(lock_path: Path) -> bool:
    """Whether any process holds a ``flock`` on ``lock_path``, from ``/proc/locks``.

    Never opens the file, so it never takes (or disturbs) the lock.
    """
    identity = _file_identity(lock_path)
    return identity is not None and bool(_flock_pids(identity))


def _all_pids() -> Iterator[int]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _fds_with_lock(pid: int, identity: tuple[int, int, int]) -> tuple[bool, bool]:
    """(has the file open, one of those descriptors shows the FLOCK) for process ``pid``.

    Unreadable descriptor tables (another user's process, a process that just exited) count as
    "not open": the caller only learns what it may see.
    """
    fd_dir = PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False, False
    major, minor, inode = identity
    has_open = False
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith(_NOT_A_FILE_PREFIXES):
            continue
        try:
            # stat() through the magic link reaches the open file itself, even if renamed or unlinked.
            st = os.stat(fd_dir / fd)
        except OSError:
            continue
        if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) != identity:
            continue
        has_open = True
        fdinfo = _read_text(PROC / str(pid) / "fdinfo" / fd) or ""
        for line in fdinfo.splitlines():
            if not line.startswith("lock:"):
                continue
            parsed = _parse_lock_line(line.removeprefix("lock:"))
            if parsed is not None and parsed[0] == "FLOCK" and parsed[2] == (major, minor, inode):
                return True, True
    return has_open, False


def find_lock_holders(lock_path: Path) -> list[LockHolder]:
    """Every process holding the ``flock`` on ``lock_path``, and how, without taking the lock.

    Three kernel signals are combined, as ``lsof`` does: ``/proc/locks`` (the pid that took the lock,
    which stays after it died), ``/proc/*/fd`` (who has the file open) and ``/proc/*/fdinfo`` (whose
    descriptor carries the lock). A child that inherited a killed daemon's descriptor is therefore
    found as ``"inherited"`` while the dead daemon appears as ``"original-locker-dead"``.

    Args:
        lock_path: the lock file; a symlink there is not followed (and yields no holders).

    Returns:
        Holders in this order: the locker, the inheritors by pid, then a locker named by the kernel
        that no longer holds it. Empty when nobody holds the lock (``/proc/locks`` is checked first,
        so the common case costs one read, not a scan of every process).
    """
    identity = _file_identity(lock_path)
    if identity is None:
        return []
    kernel_pids = _flock_pids(identity)
    if not kernel_pids:
        return []

    holders: list[LockHolder] = []
    inherited: list[LockHolder] = []
    gone: list[LockHolder] = []
    seen_with_lock: set[int] = set()
    open_without_lock: set[int] = set()
    for pid in _all_pids():
        has_open, has_lock = _fds_with_lock(pid, identity)
        if has_lock:
            seen_with_lock.add(pid)
            process = read_process(pid)
            if pid in kernel_pids:
                holders.append(LockHolder(pid, process, HOW_LOCKER))
            else:
                inherited.append(LockHolder(pid, process, HOW_INHERITED))
        elif has_open:
            open_without_lock.add(pid)

    for pid in kernel_pids:
        if pid in seen_with_lock:
            continue
        process = read_process(pid)
        if process is None or process.is_zombie:
            gone.append(LockHolder(pid, process, HOW_ORIGINAL_LOCKER_DEAD))
        elif pid in open_without_lock or _fd_table_readable(pid):
            # We could see its descriptors and none carries the lock: the kernel's pid is stale (it
            # closed its descriptor, or the pid now names an unrelated process).
            gone.append(LockHolder(pid, process, HOW_ORIGINAL_LOCKER_CLOSED))
        else:
            # Alive and its descriptors hidden from us: trust the kernel that it is the locker.
            holders.append(LockHolder(pid, process, HOW_LOCKER))

    inherited.sort(key=lambda holder: holder.pid)
    return holders + inherited + gone


def _fd_table_readable(pid: int) -> bool:
    try:
        os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return False
    return True


def find_lockers(lock_path: Path) -> list[LockHolder] | None:
    """The holders of the ``flock`` on ``lock_path`` found by looking only at the pids ``/proc/locks`` names.

    The cheap look for a healthy daemon: one read of ``/proc/locks`` and the descriptor table of the pid it
    names, whatever the number of processes on the host.

    Returns:
        ``[]`` when nobody holds the lock; the lockers when every pid ``/proc/locks`` names still holds it
        through a descriptor of its own; ``None`` when one does not (it died or closed its descriptor and
        others keep the lock): only :func:`find_lock_holders`, which reads every process, can say who.
    """
    identity = _file_identity(lock_path)
    if identity is None:
        return []
    holders: list[LockHolder] = []
    for pid in _flock_pids(identity):
        _, has_lock = _fds_with_lock(pid, identity)
        if not has_lock:
            return None
        holders.append(LockHolder(pid, read_process(pid), LockHow.LOCKER))
    return holders


def _lock_line_identities(pid: int, fd: str) -> set[tuple[int, int, int]]:
    """The files whose FLOCK descriptor ``fd`` of ``pid`` carries, from its fdinfo."""
    identities: set[tuple[int, int, int]] = set()
    for line in (_read_text(PROC / str(pid) / "fdinfo" / fd) or "").splitlines():
        if line.startswith("lock:"):
            parsed = _parse_lock_line(line.removeprefix("lock:"))
            if parsed is not None and parsed[0] == "FLOCK":
                identities.add(parsed[2])
    return identities


def find_deleted_lock_holders(lock_path: Path) -> list[LockHolder]:
    """Live processes that hold a ``flock`` on a file that was ``lock_path`` and has been unlinked.

    A /tmp cleaner that deletes a running daemon's lock file leaves the daemon holding a lock nobody can
    see at the path any more. Its descriptor still reads ``<lock_path> (deleted)`` in ``/proc/PID/fd``, so
    only the pids ``/proc/locks`` names for some FLOCK are looked at (a few, whatever the host runs).

    Args:
        lock_path: the lock file's path; its directory is resolved, as the kernel prints it.

    Returns:
        The processes, in pid order, as ``locker`` holders.
    """
    directory = os.path.realpath(lock_path.parent)
    wanted = {f"{os.path.join(directory, lock_path.name)} (deleted)"}
    if lock_path.is_absolute():
        wanted.add(f"{lock_path} (deleted)")
    text = _read_text(PROC / "locks") or ""
    candidates: set[int] = set()
    for line in text.splitlines():
        parsed = _parse_lock_line(line)
        if parsed is not None and parsed[0] == "FLOCK":
            candidates.add(parsed[1])
    holders: list[LockHolder] = []
    for pid in sorted(candidates):
        fd = _deleted_lock_fd(pid, wanted)
        if fd is not None:
            process = read_process(pid)
            if process is not None and not process.is_zombie:
                holders.append(LockHolder(pid, process, LockHow.LOCKER, fd))
    return holders


def _deleted_lock_fd(pid: int, wanted: set[str]) -> int | None:
    """The descriptor of ``pid`` on an unlinked file named one of ``wanted`` that carries its FLOCK."""
    fd_dir = PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(fd_dir / fd) not in wanted:
                continue
            st = os.stat(fd_dir / fd)
        except OSError:
            continue
        if st.st_nlink != 0:
            continue  # linked again under that name meanwhile: not a deleted file
        if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in _lock_line_identities(pid, fd):
            return int(fd)
    return None


def listening_socket_inodes(addresses: Iterable[str]) -> dict[int, str]:
    """The listening AF_UNIX sockets bound to one of ``addresses``: {socket inode: address}.

    Read from ``/proc/net/unix``, which shows the address given to ``bind()`` even when the file at that
    path has since been unlinked or renamed (as ``link()`` + ``unlink()`` of a temporary name leaves it).
    """
    return parse_listening_sockets(_read_text(PROC / "net/unix") or "", set(addresses))


def parse_listening_sockets(text: str, addresses: set[str]) -> dict[int, str]:
    """The listening sockets bound to one of ``addresses`` in the text of ``/proc/net/unix``; never raises.

    Lines read ``Num RefCount Protocol Flags Type St Inode Path``; the path is the rest of the line (it may
    hold spaces), absent for an unbound socket.
    """
    found: dict[int, str] = {}
    # Split on newlines only: a path may hold any other byte, including those str.splitlines() breaks at.
    for line in text.split("\n")[1:]:
        fields = line.split(maxsplit=7)
        if len(fields) < 8:
            continue
        _, _, _, flags, _, _, inode, address = fields
        if address not in addresses:
            continue
        try:
            if int(flags, 16) & _SO_ACCEPTCON:
                found[int(inode)] = address
        except ValueError:
            continue
    return found


def _socket_links(inodes: Iterable[int]) -> set[str]:
    return {f"socket:[{inode}]" for inode in inodes}


def holds_socket(pid: int, inodes: Iterable[int]) -> bool:
    """Whether process ``pid`` has a descriptor on one of the sockets ``inodes``."""
    links = _socket_links(inodes)
    fd_dir = PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd_dir / fd) in links:
                return True
        except OSError:
            continue
    return False


def find_socket_holders(inodes: Iterable[int]) -> list[ProcessInfo]:
    """Every process (that we may look at) with a descriptor on one of the sockets ``inodes``, by pid.

    This reads every ``/proc/PID/fd``: call it only when something is wrong.
    """
    links = _socket_links(inodes)
    if not links:
        return []
    found: list[ProcessInfo] = []
    for pid in sorted(_all_pids()):
        fd_dir = PROC / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in links:
                process = read_process(pid)
                if process is not None:
                    found.append(process)
                break
    return found
