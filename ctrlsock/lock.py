"""The socket's lock ``<socket>.lock``: taking it, writing the holder record, keeping it intact.

Holding the ``flock`` on ``<socket>.lock`` is what makes a process the owner of a control socket path,
and the only proof recovery accepts before it removes anything: a dead process holds no ``flock``, so
whoever holds it is alive and nobody else may touch the socket. The record written into the file
(``ctrlsock.record``) says who took it.

How the lock is taken, and what filelock does for us (read from filelock 4.2.11's ``_unix.py``):

- ``open(O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CREAT | O_EXCL)``, then without ``O_CREAT`` if it exists:
  a symlink at the lock path fails with ``ELOOP`` instead of being followed (CVE-2025-68146), and the
  file is never ``O_TRUNC``-ed before the lock is won (tox-dev/filelock issue 591), so a loser never wipes the
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

import dataclasses
import errno
import fcntl
import os
import stat
import time
import weakref
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from filelock import FileLock

from ctrlsock.errors import LockError, LockHeldError, UnsafePathError
from ctrlsock.holder_words import describe_holder, describe_holders
from ctrlsock.names import LOCK_SUFFIX, lock_path_for
from ctrlsock.procfs import (
    LockHolder,
    find_deleted_lock_holders,
    find_lock_holders,
    is_flock_held,
)
from ctrlsock.record import (
    MAX_RECORD_SIZE,
    RECORD_FORMAT,
    RECORD_VERSION,
    HolderRecord,
    RecordVerdict,
    is_holder_record,
    judge_record,
    read_record,
)

# The record and the holder words lived here before they had modules of their own; callers still import
# them from here.
__all__ = [
    "LOCK_SUFFIX",
    "MAX_RECORD_SIZE",
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "HolderRecord",
    "LockIntegrity",
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

LOCK_FILE_MODE: Final = 0o600

# Attempts when the path was replaced under us, or the lock was released between our failed flock
# and our look at its holders. Each is a real race, so a handful is plenty.
_MAX_ATTEMPTS: Final = 8


# --- taking the lock ------------------------------------------------------------------------------


class _PathReplacedError(Exception):
    """The lock path no longer names the inode we locked; take it again."""


class _ForeignFileError(Exception):
    """The lock file holds something other than a holder record: another program's file."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class LockIntegrity(StrEnum):
    """Whether the lock path still names the file a :class:`SocketLock` holds."""

    INTACT = "intact"
    #: Nothing is at the lock path any more (a /tmp cleaner unlinked it): a second daemon could take a new
    #: lock file there while we still serve.
    DELETED = "deleted"
    #: Another file is at the lock path now (someone else may hold it).
    REPLACED = "replaced"


# Locks holding files put back by restore(): filelock closes its own descriptor in a forked child, and
# ours must not outlive the parent there either, or the child would keep the lock after the daemon died.
_RESTORED: weakref.WeakSet[SocketLock] = weakref.WeakSet()


def _close_restored_in_child() -> None:
    for lock in list(_RESTORED):
        for fd in lock._restored_fds:
            os.close(fd)
        lock._restored_fds.clear()


os.register_at_fork(after_in_child=_close_restored_in_child)


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
        # Descriptors of lock files put back by restore(): each holds its own flock until release().
        self._restored_fds: list[int] = []
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

    def check_intact(self) -> LockIntegrity:
        """Whether ``lock_path`` still names the file whose ``flock`` we hold (``fstat`` against ``lstat``).

        Cheap (two system calls): a daemon may call it every few seconds.
        """
        held = os.fstat(self._fd)
        try:
            named = os.lstat(self.lock_path)
        except FileNotFoundError:
            return LockIntegrity.DELETED
        if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return LockIntegrity.INTACT if held.st_nlink else LockIntegrity.DELETED
        return LockIntegrity.REPLACED

    def restore(self) -> bool:
        """Put a new, already locked lock file at ``lock_path`` after ours was deleted under us.

        The new file is made without a name (``O_TMPFILE``, or else under a temporary name in the same
        directory), locked, given our record, and only then ``link()``-ed to the lock path: ``link()`` fails
        if anything appeared there meanwhile, so a daemon that took the path in between keeps it, untouched.
        From then on this lock holds both files and :meth:`release` lets go of both.

        Returns:
            True when the lock path names a file we hold (already, or now); False when another file is
            there (check who holds it) or the lock is not held.

        Raises:
            LockError: the directory cannot be written.
        """
        if not self.is_held:
            return False
        integrity = self.check_intact()
        if integrity is LockIntegrity.INTACT:
            return True
        if integrity is LockIntegrity.REPLACED:
            return False
        fd = _open_unnamed(self.lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_record(fd, self.record.encode())
            try:
                _link_descriptor(fd, self.lock_path)
            except FileExistsError:
                os.close(fd)
                return False
        except OSError as error:
            os.close(fd)
            raise LockError(
                f"cannot restore the lock file {self.lock_path}: {error.strerror or error}"
            ) from error
        self._restored_fds.append(fd)
        _RESTORED.add(self)
        self._fd = fd
        return True

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
            for fd in self._restored_fds:
                os.close(fd)  # closing the only descriptor on it releases its flock
            self._restored_fds.clear()
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


def _link_descriptor(fd: int, path: Path) -> None:
    """Give the file open on ``fd`` the name ``path``; ``FileExistsError`` if anything is there.

    ``linkat(AT_SYMLINK_FOLLOW)`` through ``/proc/self/fd`` (linkat(2)); passing a directory descriptor
    makes CPython call ``linkat`` rather than ``link``, which would not follow the magic link.
    """
    proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=proc_fds, follow_symlinks=True)
    finally:
        os.close(proc_fds)


def _open_unnamed(lock_path: Path) -> int:
    """A new empty file in ``lock_path``'s directory, with no name (or with a name already removed)."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        return os.open(lock_path.parent, flags | os.O_TMPFILE, LOCK_FILE_MODE)
    except OSError as error:
        # Filesystems without O_TMPFILE answer EOPNOTSUPP (or EISDIR on kernels that predate it).
        if error.errno not in {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}:
            raise
    temporary = lock_path.with_name(f".{lock_path.name}.{os.getpid()}.restore~")
    fd = os.open(temporary, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, LOCK_FILE_MODE)
    os.unlink(temporary)  # our descriptor keeps it; linkat() through /proc/self/fd names it again
    return fd


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
        # A file unlinked or renamed over between our open() and our flock() is not the lock of this
        # path: after winning, the path must still name the locked inode, else take it again.
        if locked.st_nlink == 0 or (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
            raise _PathReplacedError
        # Only an empty file (Kea's) or our own record may be overwritten: Cargo.lock, yarn.lock or a data
        # file whose name happens to end in .lock is never written.
        if locked.st_size and (
            locked.st_size > MAX_RECORD_SIZE or not is_holder_record(os.pread(fd, locked.st_size, 0))
        ):
            raise _ForeignFileError(locked.st_size)
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
    except _ForeignFileError as error:
        raise UnsafePathError(
            lock_path,
            f"it holds {error.size} bytes that are not a ctrlsock holder record: another program's file, "
            "which ctrlsock never writes",
        ) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(lock_path, "the lock file is a symlink; refusing to follow it") from error
        raise LockError(f"cannot lock socket lockfile, {lock_path}: {error.strerror or error}") from error
    fd, record = taken[0]
    return SocketLock(socket_path, lock_path, record, fd, lock)


def _take(socket_path: Path, program: str | None, *, explain: bool) -> SocketLock | LockHeldError:
    """The held lock, or on contention the error naming who holds it (naming nobody unless ``explain``)."""
    socket_path = Path(socket_path)
    lock_path = lock_path_for(socket_path)
    # Checked before the attempt, so that a refused start creates no file the running daemon's restore()
    # would then meet at its path; and after winning, for a holder that appeared in between.
    refused = _deleted_lock_refusal(lock_path, explain=explain)
    if refused is not None:
        return refused
    for _ in range(_MAX_ATTEMPTS):
        _check_lock_path(lock_path)
        taken = _attempt(socket_path, lock_path, program)
        if taken is not None:
            refused = _deleted_lock_refusal(lock_path, explain=explain)
            if refused is not None:
                taken.release(clear_record=True)
                return refused
            return taken
        if not explain:
            if is_flock_held(lock_path):
                return LockHeldError(lock_path, ())
            continue
        holders = find_lock_holders(lock_path)
        if holders or is_flock_held(lock_path):
            return _held_error(lock_path, holders)
        # Nobody holds it now: the holder released between our flock and our look, or the path was
        # replaced under us. Either way, try again.
    return _held_error(lock_path, find_lock_holders(lock_path)) if explain else LockHeldError(lock_path, ())


def _deleted_lock_refusal(lock_path: Path, *, explain: bool) -> LockHeldError | None:
    """The refusal when a live process holds a lock file that was at ``lock_path`` and was unlinked.

    That process is a daemon serving this socket whose lock file a /tmp cleaner deleted: a new lock file at
    the path would let a second daemon serve the same socket beside it.
    """
    holders = find_deleted_lock_holders(lock_path)
    if not holders:
        return None
    words = tuple(f"{describe_holder(holder, None)}, on the deleted lock file" for holder in holders)
    pids = tuple(holder.pid for holder in holders)
    return LockHeldError(lock_path, words if explain else (), pids=pids)


def _held_error(lock_path: Path, holders: list[LockHolder]) -> LockHeldError:
    live = tuple(holder.pid for holder in holders if holder.holds_lock)
    record = read_record(lock_path)
    verdict = judge_record(record) if record is not None else None
    return LockHeldError(lock_path, describe_holders(holders, record, verdict), pids=live)


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
        UnsafePathError: the lock path is a symlink or not a regular file, or the file holds something
            other than a holder record (another program's file, never written).
        LockError: the directory is missing, or the file cannot be opened or locked.
    """
    taken = _take(socket_path, program, explain=True)
    if isinstance(taken, LockHeldError):
        raise taken
    return taken


def try_take_lock(socket_path: Path, *, program: str | None = None) -> SocketLock | None:
    """Like :func:`take_lock`, but return ``None`` when another process holds the lock.

    Cheaper than :func:`take_lock` on contention: it does not look for who holds the lock. Unsafe paths and
    other errors still raise.
    """
    taken = _take(socket_path, program, explain=False)
    return None if isinstance(taken, LockHeldError) else taken
