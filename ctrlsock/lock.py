"""The socket's lock ``<socket>.lock`` and the holder record written into it.

Holding the ``flock`` on ``<socket>.lock`` is what makes a process the owner of a control socket path,
and the only proof recovery accepts before it removes anything (DESIGN.md section 2). The kernel lock
is the truth (a dead process holds no ``flock``); the record in the file says who took it and is
judged, never trusted blindly: a reused pid is caught by its start time, a record from before a reboot
by the boot id, one from another container by the PID-namespace inode.

How the lock is taken, and what filelock does for us (read from filelock 4.2.11's ``_unix.py``):

- ``open(O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CREAT | O_EXCL)``, then without ``O_CREAT`` if it exists:
  a symlink at the lock path fails with ``ELOOP`` instead of being followed (CVE-2025-68146), and the
  file is never ``O_TRUNC``-ed before the lock is won (filelock #591), so a loser never wipes the
  holder's record. ``O_CLOEXEC`` comes from Python itself: ``os.open`` makes every descriptor
  non-inheritable (PEP 446), so a daemon's children exec'ed later do not inherit the lock by accident.
- ``flock(LOCK_EX | LOCK_NB)``, then ``fstat``: a file unlinked between open and flock (``st_nlink == 0``)
  is retried. filelock does **not** check that the path still names the locked inode (a file renamed
  over the path between our open and our flock would leave us locking an orphan); our ``on_acquired``
  hook compares ``lstat(path)`` with ``fstat(fd)`` and raises, filelock then releases and we retry.
- The mode (0600) is applied with ``fchmod`` only when this attempt created the file; a Kea lock file
  keeps its own mode.
- filelock creates missing parent directories (``mkdir(parents=True)``) with the default mode; a
  control socket's directory must be made deliberately (Kea restricts it to 0750), so we refuse a
  missing directory before filelock gets the chance.
- filelock closes its descriptor in a child made by ``os.fork()``; a child exec'ed through
  ``subprocess`` with ``pass_fds`` keeps it, on purpose.
- Release leaves the file in place (``preserve_lock_file=True`` makes that a promise): unlinking a lock
  file others may wait on splits them across inodes. We truncate the record first, so an empty file
  with nobody holding it means "stopped cleanly", a record with nobody holding it means "crashed".
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    from filelock import FileLock

from ctrlsock.errors import LockError, LockHeldError, UnsafePathError
from ctrlsock.names import LOCK_SUFFIX, lock_path_for
from ctrlsock.procfs import (
    HOW_INHERITED,
    HOW_LOCKER,
    HOW_ORIGINAL_LOCKER_CLOSED,
    HOW_ORIGINAL_LOCKER_DEAD,
    LockHolder,
    ProcessInfo,
    current_boot_id,
    current_pid_namespace,
    find_lock_holders,
    is_flock_held,
    read_process,
)

__all__ = [
    "LOCK_SUFFIX",
    "MAX_RECORD_SIZE",
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "HolderRecord",
    "RecordVerdict",
    "SocketLock",
    "describe_holder",
    "describe_holders",
    "judge_record",
    "lock_path_for",
    "read_record",
    "take_lock",
    "try_take_lock",
]

#: The ``format`` key that marks a record as ours; a JSON file without it is foreign and ignored.
RECORD_FORMAT: Final = "ctrlsock-holder"
#: Version 1: the fields of :class:`HolderRecord`. Readers accept any version and read what they can.
RECORD_VERSION: Final = 1
#: Readers never read more than this; a record is a few hundred bytes.
MAX_RECORD_SIZE: Final = 64 * 1024
LOCK_FILE_MODE: Final = 0o600

# Largest pid Linux can hand out is 2**22; anything beyond a C int cannot be passed to kill().
_MAX_PID: Final = 2**31 - 1
# Attempts when the path was replaced under us, or the lock was released between our failed flock
# and our look at its holders. Each is a real race, so a handful is plenty.
_MAX_ATTEMPTS: Final = 8


# --- the holder record ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HolderRecord:
    """Who took the lock, as written into the lock file while holding it.

    Fields a record did not carry (an older or newer version) read as ``0``/``""``/``0.0``: unknown.

    Attributes:
        version: the record format version (``RECORD_VERSION`` when we wrote it; 0 for a bare pid).
        pid: the holder's pid, in its PID namespace.
        start_time: the holder's start time in clock ticks since boot (``/proc/PID/stat`` field 22).
        boot_id: ``/proc/sys/kernel/random/boot_id`` when the lock was taken.
        pid_namespace: the inode of the holder's PID namespace.
        hostname: the node name.
        program: the daemon's program name.
        socket_path: the socket path the lock guards.
        started_at: unix time the lock was taken.
        stopping_since: unix time the holder began a clean stop (``0.0`` while it serves): a daemon
            draining its connections holds the lock without a socket, and must not be taken for stuck.
    """

    version: int
    pid: int
    start_time: int = 0
    boot_id: str = ""
    pid_namespace: int = 0
    hostname: str = ""
    program: str = ""
    socket_path: str = ""
    started_at: float = 0.0
    stopping_since: float = 0.0

    def encode(self) -> bytes:
        """One line of JSON, keys in a fixed order, ending in a newline."""
        document = {
            "format": RECORD_FORMAT,
            "version": self.version,
            "pid": self.pid,
            "start_time": self.start_time,
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "hostname": self.hostname,
            "program": self.program,
            "socket_path": self.socket_path,
            "started_at": self.started_at,
            "stopping_since": self.stopping_since,
        }
        # ensure_ascii: a path decoded with surrogateescape survives as \\udcXX escapes.
        return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> HolderRecord | None:
        """Read a record from a lock file's bytes; never raises.

        Accepts our JSON record of any version (unknown keys are ignored, missing or ill-typed ones read
        as unknown) and a bare decimal pid, as many pid files hold (version 0). Bytes after the first
        JSON document are ignored: a reader racing a writer may see a new record followed by the tail
        of a longer old one, before the writer truncates.

        Returns:
            The record, or ``None`` for an empty file (Kea's lock files are empty), a cleared record,
            a foreign or malformed file, or a record without a usable pid.
        """
        if len(data) > MAX_RECORD_SIZE:
            data = data[:MAX_RECORD_SIZE]
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
        if not text:
            return None
        if text.isascii() and text.isdigit():
            pid = int(text) if len(text) <= 10 else 0
            return cls(version=0, pid=pid) if 0 < pid <= _MAX_PID else None
        try:
            document, _ = json.JSONDecoder().raw_decode(text)
        except (ValueError, RecursionError):
            # ValueError covers malformed JSON and integers beyond sys.get_int_max_str_digits();
            # json raises RecursionError, not ValueError, on deep nesting.
            return None
        if not isinstance(document, dict) or document.get("format") != RECORD_FORMAT:
            return None
        version = _int_field(document, "version", -1)
        pid = _int_field(document, "pid", 0)
        if version < 0 or not 0 < pid <= _MAX_PID:
            return None
        return cls(
            version=version,
            pid=pid,
            start_time=_int_field(document, "start_time", 0),
            boot_id=_str_field(document, "boot_id"),
            pid_namespace=_int_field(document, "pid_namespace", 0),
            hostname=_str_field(document, "hostname"),
            program=_str_field(document, "program"),
            socket_path=_str_field(document, "socket_path"),
            started_at=_float_field(document, "started_at"),
            stopping_since=_float_field(document, "stopping_since"),
        )

    @classmethod
    def for_current_process(cls, socket_path: Path | str, program: str | None = None) -> HolderRecord:
        """The record this process writes when it takes the lock for ``socket_path``.

        Args:
            socket_path: the socket the lock guards.
            program: the daemon's name; defaults to this process's ``comm`` (or ``argv[0]``'s name).
        """
        pid = os.getpid()
        process = read_process(pid)
        if program is None:
            program = process.program if process is not None else Path(sys.argv[0] or "python").name
        return cls(
            version=RECORD_VERSION,
            pid=pid,
            start_time=process.start_time if process is not None else 0,
            boot_id=current_boot_id(),
            pid_namespace=current_pid_namespace(),
            hostname=os.uname().nodename,
            program=program,
            socket_path=os.fspath(socket_path),
            started_at=time.time(),
        )


def _int_field(document: dict[str, Any], key: str, default: int) -> int:
    value = document.get(key)
    # bool is an int subclass: "pid": true is not a pid.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    return default


def _str_field(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    return value if isinstance(value, str) else ""


def _float_field(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            result = float(value)
            if math.isfinite(result):
                return result
    return 0.0


def read_record(lock_path: Path) -> HolderRecord | None:
    """The holder record in ``lock_path``, read without locking or writing anything.

    Opened ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK`` (``O_NONBLOCK``: a lease on the file must not block a
    status check). Never raises because of what the file contains.

    Returns:
        The record, or ``None`` when the file is missing, is a symlink or not a regular file, is empty
        (Kea, or a cleared record) or holds no record of ours.

    Raises:
        PermissionError: the file exists but may not be read by this user (a status check should then
            say "unknown" rather than guess).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:
        # ELOOP: a symlink at the lock path, which we never follow; ENXIO/EWOULDBLOCK: a fifo or a
        # socket, or a lease being broken. None of them holds a record.
        if error.errno in {errno.ELOOP, errno.ENXIO, errno.EWOULDBLOCK, errno.ENOTDIR}:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RECORD_SIZE:
            chunk = os.read(fd, MAX_RECORD_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return HolderRecord.decode(b"".join(chunks))


# --- judging a record -----------------------------------------------------------------------------


@dataclass
class RecordVerdict:
    """What a holder record is worth now.

    Attributes:
        record: the record judged.
        trusted: the record's pid names, right now, the very process that wrote it: same boot, same
            PID namespace, same start time, and it exists (possibly stopped or a zombie).
        alive: that process exists and is not a zombie (a stopped process is alive).
        process: what ``/proc`` says about the record's pid now (even when it is a different process).
        reason: plain words, e.g. ``pid 640 is dead``, ``pid 640 was reused (start time differs)``.
        status: one word: ``running``, ``stopped``, ``zombie``, ``dead``, ``reused``, ``other-boot``,
            ``other-namespace``, ``unknown`` (the pid exists but ``/proc`` hides it from us).
    """

    record: HolderRecord
    trusted: bool
    alive: bool
    process: ProcessInfo | None
    reason: str
    status: str


def judge_record(record: HolderRecord) -> RecordVerdict:
    """Decide whether ``record`` still describes a process, and which state it is in.

    ``kill(pid, 0)`` alone would be wrong twice: it succeeds on a zombie, and on an unrelated process
    that reused the pid. So the state letter and the start time come from ``/proc/PID/stat``.
    """
    pid = record.pid
    boot_id = current_boot_id()
    if record.boot_id and boot_id and record.boot_id != boot_id:
        return RecordVerdict(record, False, False, None, "record is from another boot", "other-boot")
    namespace = current_pid_namespace()
    if record.pid_namespace and namespace and record.pid_namespace != namespace:
        return RecordVerdict(
            record, False, False, None, "record is from another PID namespace", "other-namespace"
        )
    process = read_process(pid)
    if process is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return RecordVerdict(record, False, False, None, f"pid {pid} is dead", "dead")
        except PermissionError:
            pass
        return RecordVerdict(
            record, False, True, None, f"pid {pid} exists but /proc does not show it to us", "unknown"
        )
    if record.start_time and process.start_time != record.start_time:
        return RecordVerdict(
            record, False, False, process, f"pid {pid} was reused (start time differs)", "reused"
        )
    if process.is_zombie:
        return RecordVerdict(
            record, True, False, process, f"pid {pid} is a zombie (exited, not yet reaped)", "zombie"
        )
    if process.is_stopped:
        return RecordVerdict(record, True, True, process, f"pid {pid} is stopped (SIGSTOP)", "stopped")
    return RecordVerdict(record, True, True, process, f"pid {pid} is running", "running")


def _format_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _state_words(process: ProcessInfo) -> str:
    since = f" since {_format_time(process.started_at)}"
    if process.is_zombie:
        return "zombie: exited, not yet reaped"
    if process.is_stopped:
        return "stopped (SIGSTOP)" + since
    return "running" + since


def describe_holder(holder: LockHolder, record: HolderRecord | None) -> str:
    """Plain words for one lock holder, as errors, ``status`` and the CLI print them.

    The usual case reads ``pid 4242 (mydaemon, running since 2026-11-22 09:14)``; anything unusual is
    added: ``stopped (SIGSTOP)``, ``inherited the lock descriptor``, ``not the recorded owner``...

    Args:
        holder: from :func:`~ctrlsock.procfs.find_lock_holders`.
        record: the lock file's record, if any, to say whether this holder is the recorded owner.
    """
    process = holder.process
    recorded = record is not None and record.pid == holder.pid
    reused = (
        record is not None
        and recorded
        and bool(record.start_time)
        and process is not None
        and process.start_time != record.start_time
    )
    program = process.program if process is not None else ""
    if record is not None and recorded and not reused and record.program:
        # The name the daemon gave itself beats comm ("python3" for every Python daemon).
        program = record.program
    parts = [program] if program else []
    if holder.how in {HOW_LOCKER, HOW_INHERITED}:
        parts.append(_state_words(process) if process is not None else "state unknown")
        if holder.how == HOW_INHERITED:
            parts.append("inherited the lock descriptor")
    elif holder.how == HOW_ORIGINAL_LOCKER_DEAD:
        parts.append("zombie, the original locker" if process is not None else "dead, the original locker")
        parts.append("the lock lives on in other processes")
    elif holder.how == HOW_ORIGINAL_LOCKER_CLOSED:
        parts.append("took the lock but no longer holds it; the lock lives on in other processes")
    else:
        parts.append(holder.how)
    if recorded and holder.how in {HOW_LOCKER, HOW_INHERITED}:
        if reused:
            parts.append("not the recorded owner: its pid was reused")
        elif holder.how == HOW_INHERITED:
            parts.append("the recorded owner")
    return f"pid {holder.pid} ({', '.join(parts)})"


def describe_holders(holders: list[LockHolder], record: HolderRecord | None) -> tuple[str, ...]:
    """One description per holder, then what the record says when its pid holds nothing.

    This is what :class:`~ctrlsock.errors.LockHeldError` carries: e.g.
    ``("pid 812 (kea-lfc, running since ..., inherited the lock descriptor)",
    "recorded owner: pid 640 is dead")``.
    """
    words = [describe_holder(holder, record) for holder in holders]
    if not holders:
        words.append("a process that could not be identified")
    if record is not None and not any(holder.pid == record.pid for holder in holders):
        verdict = judge_record(record)
        reason = verdict.reason
        if verdict.trusted and verdict.alive:
            # A disagreement worth naming: the record's writer lives on but keeps no lock.
            reason += " but does not hold the lock"
        words.append(f"recorded owner: {reason}")
    return tuple(words)


# --- taking the lock ------------------------------------------------------------------------------


class _PathReplacedError(Exception):
    """The lock path no longer names the inode we locked; take it again."""


class SocketLock:
    """The held lock on ``<socket>.lock``: the proof recovery demands before it removes anything.

    Made by :func:`take_lock` / :func:`try_take_lock`, never directly. Release it with :meth:`release`
    or use it as a context manager. Keep a reference for as long as you own the socket: like a file,
    a lock that is garbage-collected is closed, and its flock goes with it (the record is left).
    A child made by ``fork()`` does not hold it (filelock closes its descriptor there) and its
    ``release()`` does nothing, so it cannot clear its parent's record.

    Attributes:
        socket_path: the socket path the lock guards.
        lock_path: the lock file.
        record: the record written into the lock file when it was taken.
    """

    def __init__(self, socket_path: Path, lock_path: Path, record: HolderRecord, fd: int, lock: FileLock):
        self.socket_path = socket_path
        self.lock_path = lock_path
        self.record = record
        self._fd = fd
        self._filelock = lock
        self._owner_pid = os.getpid()
        self._held = True

    @property
    def is_held(self) -> bool:
        """True until released (and never in a forked child)."""
        return self._held and os.getpid() == self._owner_pid

    def fileno(self) -> int:
        """The locked descriptor, for a caller that must hand the lock to an exec'ed process on purpose.

        Raises:
            LockError: the lock is no longer held.
        """
        if not self.is_held:
            raise LockError(f"socket lock on {self.lock_path} is not held")
        return self._fd

    def mark_stopping(self) -> None:
        """Rewrite the record to say a clean stop has begun, so probes report "stopping", not "stuck".

        Does nothing when the lock is no longer held (or in a forked child).
        """
        if not self.is_held or self.record.stopping_since:
            return
        self.record = dataclasses.replace(self.record, stopping_since=time.time())
        _write_record(self._fd, self.record.encode())

    def release(self, clear_record: bool = True) -> None:
        """Release the lock; idempotent.

        Args:
            clear_record: truncate the record first (while still holding the lock), meaning "stopped
                cleanly". ``False`` leaves it, as a crash would. The lock file itself is never
                unlinked: a waiter may have it open, and unlinking would split waiters across inodes.
        """
        if not self.is_held:
            return
        self._held = False
        try:
            if clear_record:
                os.ftruncate(self._fd, 0)
        finally:
            self._filelock.release(force=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.is_held else "released"
        return f"<SocketLock {self.lock_path} {state} by pid {self.record.pid}>"


def _write_record(fd: int, data: bytes) -> None:
    # Whole, then truncate to its length: a shorter record over a longer crashed one never leaves a
    # window in which the file is empty (which would read as "stopped cleanly").
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    os.ftruncate(fd, len(data))


def _check_lock_path(lock_path: Path) -> None:
    try:
        st = os.lstat(lock_path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(lock_path, "the lock file is a symlink; refusing to follow it")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(lock_path, "the lock file is not a regular file")
    # filelock would create a missing directory with the default mode (see the module docstring).
    if not lock_path.parent.is_dir():
        raise LockError(
            f"cannot lock socket lockfile, {lock_path}: directory {lock_path.parent} does not exist"
        )


def _attempt(socket_path: Path, lock_path: Path, program: str | None) -> SocketLock | None:
    """One non-blocking attempt; None on contention."""
    taken: list[tuple[int, HolderRecord]] = []

    def on_acquired(fd: int) -> None:
        locked = os.fstat(fd)
        try:
            named = os.lstat(lock_path)
        except FileNotFoundError:
            raise _PathReplacedError from None
        # DESIGN.md 2.1: after winning, the path must still name the locked inode, else retry.
        if locked.st_nlink == 0 or (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
            raise _PathReplacedError
        record = HolderRecord.for_current_process(socket_path, program)
        _write_record(fd, record.encode())
        taken.append((fd, record))

    # Imported here: probes (``ctrlsock status`` every few seconds) read records but never take the lock,
    # and filelock is half of what importing this module costs.
    from filelock import FileLock, Timeout  # noqa: PLC0415

    lock = FileLock(
        lock_path,
        mode=LOCK_FILE_MODE,
        thread_local=False,  # a daemon may take the lock in one thread and release it in another
        blocking=False,
        fallback_to_soft=False,  # a soft lock proves nothing to recovery: fail closed on ENOSYS
        preserve_lock_file=True,
        on_acquired=on_acquired,
    )
    try:
        lock.acquire()
    except Timeout:
        return None
    except _PathReplacedError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(lock_path, "the lock file is a symlink; refusing to follow it") from error
        raise LockError(f"cannot lock socket lockfile, {lock_path}: {error.strerror or error}") from error
    fd, record = taken[0]
    return SocketLock(socket_path, lock_path, record, fd, lock)


def _take(socket_path: Path, program: str | None) -> SocketLock | LockHeldError:
    """The held lock, or the error that names who holds it."""
    socket_path = Path(socket_path)
    lock_path = lock_path_for(socket_path)
    for _ in range(_MAX_ATTEMPTS):
        _check_lock_path(lock_path)
        taken = _attempt(socket_path, lock_path, program)
        if taken is not None:
            return taken
        holders = find_lock_holders(lock_path)
        if holders or is_flock_held(lock_path):
            return _held_error(lock_path, holders)
        # Nobody holds it now: the holder released between our flock and our look, or the path was
        # replaced under us. Either way, try again.
    return _held_error(lock_path, find_lock_holders(lock_path))


def _held_error(lock_path: Path, holders: list[LockHolder]) -> LockHeldError:
    live = tuple(holder.pid for holder in holders if holder.holds_lock)
    return LockHeldError(lock_path, describe_holders(holders, read_record(lock_path)), pids=live)


def take_lock(socket_path: Path, *, program: str | None = None) -> SocketLock:
    """Take ``<socket>.lock`` without waiting and write our holder record into it.

    Args:
        socket_path: the control socket the lock guards.
        program: the name recorded for admins; defaults to this process's ``comm``.

    Returns:
        The held lock.

    Raises:
        LockHeldError: another process holds it; the message names every holder found through the
            kernel and whether each is alive, and what the record says, e.g. ``cannot lock socket
            lockfile, /run/x/ctrl.sock.lock: held by pid 4242 (mydaemon, running since 2026-11-22 09:14)``.
        UnsafePathError: the lock path is a symlink or not a regular file.
        LockError: the directory is missing, or the file cannot be opened or locked.
    """
    taken = _take(socket_path, program)
    if isinstance(taken, LockHeldError):
        raise taken
    return taken


def try_take_lock(socket_path: Path, *, program: str | None = None) -> SocketLock | None:
    """Like :func:`take_lock`, but return ``None`` when another process holds the lock.

    Unsafe paths and other errors still raise.
    """
    taken = _take(socket_path, program)
    return None if isinstance(taken, LockHeldError) else taken
