"""One rule for a safe socket directory, shared by ``serve``, ``status`` and ``cleanup``.

A path is walked one component at a time from ``/`` with ``openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)``, the
way systemd's ``chase()`` does with ``CHASE_SAFE`` (its fix for CVE-2018-6954 in systemd-tmpfiles, where root
followed a user's symlink into a directory of root's). The walk refuses:

- a symlink component: a user who owns any directory on the way could point it elsewhere (into a directory
  only root may write) between a check and an action, and root would act there. The real path must be given
  (``/run``, not ``/var/run``);
- an unsafe transition: from a directory owned by a user other than root into a directory owned by a
  different user. Whoever owns a directory can rename its entries at will, so the directories below it are
  only as trusted as its owner. Root's directories may lead anywhere; ``..`` is judged the same way, in the
  direction walked.

The final directory must also not let others swap its entries: it is refused when writable by others, or by a
group the caller is not in, without the sticky bit. In a sticky directory that others may write (``/tmp``)
only the caller's own files are touched, because the sticky bit is what makes "the files are ours" mean
something there.

Everything afterwards goes through the final directory's descriptor (``fstatat``, ``openat``, ``unlinkat``)
and sockets are reached through ``/proc/self/fd``, so a component renamed or replaced after the walk cannot
redirect an action.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from ctrlsock.errors import UnsafePathError

__all__ = [
    "ConnectOutcome",
    "SafeDirectory",
    "check_directory_safe",
    "open_safe_directory",
    "owner_words",
]

_WALK_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A component may be ``..``; bounds a path like ``a/../a/../...`` that a caller got from somewhere odd.
_MAX_COMPONENTS: Final = 4096


class ConnectOutcome(StrEnum):
    """What one ``connect()`` to a socket file found."""

    REFUSED = "refused"
    ACCEPTED = "accepted"
    #: The backlog is full: a listener exists.
    BUSY = "busy"
    DENIED = "denied"
    #: The name no longer names the inode that was examined (or nothing).
    REPLACED = "replaced"
    #: ``/proc/self/fd`` could not be used, so nothing was learnt.
    UNKNOWN = "unknown"


def owner_words(uid: int) -> str:
    """``uid 0 (root)``, or ``uid 1234`` when the user has no name."""
    import pwd  # noqa: PLC0415 - only needed to word a refusal

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _is_unsafe_transition(parent: os.stat_result, child: os.stat_result) -> bool:
    # systemd's unsafe_transition() in src/basic/chase.c: leaving root's directories is always fine,
    # otherwise the walk must stay within one owner.
    return parent.st_uid not in {0, child.st_uid}


def _writers_problem(st: os.stat_result) -> str | None:
    if st.st_mode & stat.S_ISVTX:
        return None
    if st.st_mode & stat.S_IWOTH:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}) without the sticky bit"
    our_groups = {os.getegid(), *os.getgroups()}
    if st.st_mode & stat.S_IWGRP and st.st_gid not in our_groups:
        return (
            f"is writable by group {st.st_gid} (mode {stat.S_IMODE(st.st_mode):04o}), which we are not in, "
            "without the sticky bit"
        )
    return None


def _kind_problem(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "it is a symlink: ctrlsock never follows or removes one"
    if stat.S_ISREG(mode):
        return "it is a regular file, not a socket: ctrlsock never removes one"
    if stat.S_ISDIR(mode):
        return "it is a directory, not a socket"
    if not stat.S_ISSOCK(mode):
        return "it is not a socket"
    return None


class SafeDirectory:
    """A directory reached by the safe-path rule, held open (``O_PATH``, close-on-exec).

    Made by :func:`open_safe_directory`; close it, or use it as a context manager. Every method acts
    relative to the descriptor, never by path, and never follows a symlink in ``name``.

    Attributes:
        path: the directory as it was named (for messages only; never used to act).
        stat: its ``fstat`` at the end of the walk.
    """

    def __init__(self, path: Path, fd: int, st: os.stat_result) -> None:
        self.path = path
        self.stat = st
        self._fd = fd

    def fileno(self) -> int:
        """The ``O_PATH`` descriptor, for ``dir_fd=`` arguments."""
        if self._fd < 0:
            raise ValueError(f"safe directory {self.path} is closed")
        return self._fd

    def close(self) -> None:
        """Close the descriptor; idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SafeDirectory {self.path} fd={self._fd}>"

    @property
    def writers_problem(self) -> str | None:
        """Why others could swap entries here (writable without the sticky bit), or None."""
        return _writers_problem(self.stat)

    @property
    def is_shared(self) -> bool:
        """Sticky and writable by others (``/tmp``): only the caller's own files may be touched here."""
        return bool(self.stat.st_mode & stat.S_ISVTX and self.stat.st_mode & (stat.S_IWOTH | stat.S_IWGRP))

    def removal_problem(self, st: os.stat_result) -> str | None:
        """Why the entry ``st`` describes is not ours to remove, or None when it may be (if orphaned).

        Only a socket is ever removed: never a symlink, a regular file or a directory (Kea 2.2 deletes
        whatever is at its socket path; we never do). The directory must not let others swap it. It must be
        the caller's own, or root may remove another user's, except in a shared sticky directory.
        """
        kind = _kind_problem(st.st_mode)
        if kind is not None:
            return kind
        if (problem := self.writers_problem) is not None:
            return f"its directory {self.path} {problem}"
        euid = os.geteuid()
        if st.st_uid == euid:
            return None
        if euid != 0:
            return f"it is owned by {owner_words(st.st_uid)}, not by us"
        if self.is_shared:
            return (
                f"it is owned by {owner_words(st.st_uid)} in {self.path}, which others may write: "
                "there only our own files are removed, even by root"
            )
        return None

    def lstat(self, name: str) -> os.stat_result | None:
        """``fstatat(name, AT_SYMLINK_NOFOLLOW)``, or None when there is no such entry."""
        try:
            return os.stat(name, dir_fd=self.fileno(), follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``openat(name, flags | O_NOFOLLOW | O_CLOEXEC)``; the caller closes the descriptor."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fileno())

    def unlink(self, name: str) -> None:
        """``unlinkat(name)``: removes the entry itself, whatever it is a link to."""
        os.unlink(name, dir_fd=self.fileno())

    def unlink_if_same(self, name: str, st: os.stat_result) -> bool:
        """``unlinkat(name)`` only while ``name`` still names the inode ``st`` describes.

        Raises:
            FileNotFoundError: nothing is there any more.
        """
        again = os.stat(name, dir_fd=self.fileno(), follow_symlinks=False)
        if (again.st_dev, again.st_ino, again.st_mode) != (st.st_dev, st.st_ino, st.st_mode):
            return False
        self.unlink(name)
        return True

    def connect(self, name: str, st: os.stat_result) -> ConnectOutcome:
        """One non-blocking ``connect()`` to the socket ``name``, only if it is still the inode ``st``.

        The socket file is opened ``O_PATH`` and reached as ``/proc/self/fd/N``: that names exactly the
        inode examined and always fits ``sun_path`` (systemd's ``connect_unix_path()`` does the same for
        long paths). A full backlog answers EAGAIN at once instead of blocking.
        """
        try:
            fd = self.open(name, os.O_PATH)
        except FileNotFoundError:
            return ConnectOutcome.REPLACED
        try:
            pinned = os.fstat(fd)
            if (pinned.st_dev, pinned.st_ino) != (st.st_dev, st.st_ino):
                return ConnectOutcome.REPLACED
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as sock:
                try:
                    sock.connect(f"/proc/self/fd/{fd}")
                except ConnectionRefusedError:
                    return ConnectOutcome.REFUSED
                except BlockingIOError:
                    return ConnectOutcome.BUSY
                except PermissionError:
                    return ConnectOutcome.DENIED
                except OSError:
                    return ConnectOutcome.UNKNOWN
                return ConnectOutcome.ACCEPTED
        finally:
            os.close(fd)

    def try_flock(self, name: str) -> int | None:
        """``flock(LOCK_EX | LOCK_NB)`` on the file ``name`` (created 0600 if missing); None on contention.

        Nothing is written: whoever needs the file's content judges it through the returned descriptor,
        which is the only one on its open file, so closing it releases the lock. A file root creates in
        another user's directory is given to that user: the daemon that lives there must be able to open it
        later, and a lock file is never unlinked to make room for its own.
        """
        flags = os.O_RDWR | os.O_NONBLOCK
        try:
            fd = self.open(name, flags)
        except FileNotFoundError:
            fd = self.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600)
            if os.geteuid() == 0 and self.stat.st_uid != 0:
                os.fchown(fd, self.stat.st_uid, self.stat.st_gid)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A file unlinked or replaced between our open and our flock is not the lock others will take.
            locked, named = os.fstat(fd), self.lstat(name)
            if (
                locked.st_nlink
                and named is not None
                and (named.st_dev, named.st_ino) == (locked.st_dev, locked.st_ino)
            ):
                return fd
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def names(self) -> list[str]:
        """The entries, listed through a readable descriptor opened relative to this one."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fileno())
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)


def _component_problem(dir_fd: int, walked: Path) -> str:
    """Why ``openat(O_DIRECTORY | O_NOFOLLOW)`` of ``walked`` failed with ELOOP or ENOTDIR."""
    try:
        st = os.stat(walked.name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as error:
        return f"cannot be examined: {os.strerror(error.errno or errno.EIO)}"
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(walked.name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return (
            f"is a symlink (to {target}): a socket's directory path is never followed through a symlink, "
            "give the real directory"
        )
    return "is not a directory"


def _step(dir_fd: int, dir_st: os.stat_result, name: str, walked: Path) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(name, _WALK_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in {errno.ELOOP, errno.ENOTDIR}:
            raise UnsafePathError(walked, _component_problem(dir_fd, walked)) from None
        error.filename = str(walked)
        raise
    try:
        st = os.fstat(fd)
        if _is_unsafe_transition(dir_st, st):
            raise UnsafePathError(
                walked,
                f"unsafe path: it belongs to {owner_words(st.st_uid)} but is reached from a directory of "
                f"{owner_words(dir_st.st_uid)}, who could swap it for another; a socket's path may pass from "
                "root's directories into a user's, never from one user's into another's",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_safe_directory(directory: Path) -> SafeDirectory:
    """Walk ``directory`` from ``/`` by the safe-path rule and return its descriptor.

    A relative path is taken from the current directory (``getcwd()`` names no symlink). Write bits are not
    judged here (see :attr:`SafeDirectory.writers_problem`): a caller that only reads needs the walk alone.

    Args:
        directory: the directory holding a socket and its lock file.

    Returns:
        The open directory; the caller closes it.

    Raises:
        UnsafePathError: a component is a symlink or not a directory, or the walk passes from one user's
            directory into another user's; ``reason`` says which, ``path`` names the component.
        OSError: a component is missing (``FileNotFoundError``) or may not be searched
            (``PermissionError``); ``filename`` names it.
    """
    given = Path(directory)
    absolute = given if given.is_absolute() else Path(os.getcwd()) / given
    parts = absolute.parts[1:]
    if len(parts) > _MAX_COMPONENTS:
        raise UnsafePathError(given, f"has more than {_MAX_COMPONENTS} components")
    fd = os.open("/", _WALK_FLAGS)
    st = os.fstat(fd)
    walked = Path("/")
    try:
        for name in parts:
            if name == ".":
                continue
            walked = walked.parent if name == ".." else walked / name
            child, child_st = _step(fd, st, name, walked)
            os.close(fd)
            fd, st = child, child_st
    except BaseException:
        os.close(fd)
        raise
    return SafeDirectory(given, fd, st)


def check_directory_safe(directory: Path) -> None:
    """Refuse a socket directory that fails the safe-path rule (see the module docstring).

    Args:
        directory: the directory holding a socket and its lock file.

    Raises:
        UnsafePathError: a component is a symlink, not a directory, missing or not searchable; the walk
            passes from one user's directory into another user's; or the directory is writable by others
            (or by a group we are not in) without the sticky bit. ``reason`` says which.
    """
    try:
        with open_safe_directory(directory) as safe:
            problem = safe.writers_problem
    except OSError as error:
        if isinstance(error, UnsafePathError):
            raise
        where = Path(error.filename) if error.filename else Path(directory)
        raise UnsafePathError(
            where, f"cannot be examined: {os.strerror(error.errno or errno.EIO)}"
        ) from error
    if problem is not None:
        raise UnsafePathError(Path(directory), problem)
