"""Safe recovery: the only code in ctrlsock that removes files or signals processes.

Holding the lock proves that no cooperating server serves the path (DESIGN.md section 3), so every function
that removes something demands the held lock (:func:`remove_orphans` takes a
:class:`~ctrlsock.lock.SocketLock`) or takes it itself (:func:`cleanup`). What may be removed, and nothing
else (issue 2, DESIGN.md sections 2, 6):

- the socket path, only if ``lstat`` says it is a socket (never a symlink, a regular file or a directory:
  Kea 2.2 deletes anything there, we never do), it is owned by us or we are root, its directory is safe, and
  a ``connect()`` to it is refused. If something *accepts* while we hold the lock, a server that does not
  take the lock owns it: refused, and said so.
- the lock file is never unlinked. A process blocked in ``flock()`` on it would wake up holding a lock on an
  unlinked inode while the next one creates a new file and locks that: two "owners" (filelock's rule).
  Instead the record is cleared by truncating it while the lock is held
  (``SocketLock.release(clear_record=True)``), which is the "stopped cleanly" state.

The ownership rule, thought through: a socket owned by another uid is removed only by root. A non-root user
could not take the lock of another user's private socket anyway, and an orphaned socket of another user in a
directory both may write is not ours to judge (``foreign``). Root may remove another user's orphaned socket
(that is its job as admin: a daemon running as ``kea`` was killed), but *not* in a directory that others may
write even with the sticky bit (``/tmp``): there only files owned by the caller are touched, because the
sticky bit is what makes "the files are ours" meaningful there (DESIGN.md section 6).

A directory is unsafe when it is writable by others (the ``other`` write bit, or the group write bit of a
group we are not in) without the sticky bit: anyone there could swap the socket for something else between
our checks and the ``unlink``. All checks and the ``unlink`` go through one descriptor on the directory, so
a renamed or replaced directory component cannot redirect them; the socket's inode is checked again right
before the unlink.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ctrlsock.errors import LockError, RecoveryError, UnsafePathError
from ctrlsock.lock import SocketLock, try_take_lock
from ctrlsock.probe import Holder, ProbeReport, State, probe
from ctrlsock.procfs import HOW_INHERITED, HOW_LOCKER, find_lock_holders, read_process

__all__ = [
    "Action",
    "CleanupResult",
    "check_directory_safe",
    "cleanup",
    "remove_orphans",
    "terminate_holders",
]

#: ``Action.what`` values.
REMOVED: Final = "removed"
WOULD_REMOVE: Final = "would remove"
CLEARED: Final = "cleared"
WOULD_CLEAR: Final = "would clear"
REFUSED: Final = "refused"
KEPT: Final = "kept"
TERMINATED: Final = "terminated"
KILLED: Final = "killed"
WOULD_TERMINATE: Final = "would terminate"

CLEANUP_PROGRAM: Final = "ctrlsock-cleanup"
#: After SIGKILL, how long to wait for a holder to exit before reporting it as unkillable (a process in
#: uninterruptible sleep, ``D``, dies only when its I/O returns).
KILL_WAIT: Final = 5.0

_KEEP_LOCK_REASON: Final = (
    "lock files are never unlinked: a process waiting on it would end up locking a deleted inode"
)


@dataclass
class Action:
    """One thing recovery did, would do, or refused to do, with the reason in plain words.

    Attributes:
        path: the file concerned (the lock file for actions on its holders).
        done: whether it happened (``False`` for refusals and dry runs).
        what: ``"removed"``, ``"would remove"``, ``"cleared"`` (a stale record was emptied, the lock file
            kept), ``"would clear"``, ``"refused"``, ``"kept"``, and for holders ``"terminated"`` (exited
            after SIGTERM), ``"killed"`` (needed SIGKILL), ``"would terminate"``.
        reason: why.
        pid: the process signalled, for actions on holders.
    """

    path: Path
    done: bool
    what: str
    reason: str
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "done": self.done,
            "what": self.what,
            "reason": self.reason,
            "pid": self.pid,
        }


@dataclass
class CleanupResult:
    """What :func:`cleanup` found, did and left.

    Attributes:
        actions: one entry per path touched or refused.
        state_before: the probe's verdict before anything was done.
        state_after: the verdict afterwards (the same as before for a refusal or a dry run).
        before: the probe report the decision was based on.
        after: the probe report afterwards (``None`` when nothing was done).
    """

    actions: list[Action]
    state_before: State
    state_after: State
    before: ProbeReport
    after: ProbeReport | None = None

    @property
    def refused(self) -> bool:
        """True when something was left because removing it was refused."""
        return any(action.what == REFUSED for action in self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "socket": str(self.before.socket_path),
            "state_before": self.state_before.value,
            "state_after": self.state_after.value,
            "actions": [action.to_json() for action in self.actions],
        }


# --- the directory ------------------------------------------------------------------------------------


def _directory_problem(st: os.stat_result) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
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


def _is_shared(st: os.stat_result) -> bool:
    """A sticky directory that others may write (``/tmp``): only the caller's own files are touched."""
    return bool(st.st_mode & stat.S_ISVTX and st.st_mode & (stat.S_IWOTH | stat.S_IWGRP))


def check_directory_safe(directory: Path) -> None:
    """Refuse a directory in which others could swap files between our checks and a removal.

    Args:
        directory: the directory holding a socket and its lock file.

    Raises:
        UnsafePathError: it is writable by others (or by a group we are not in) without the sticky bit, or
            is not a directory; ``reason`` says which.
    """
    try:
        st = os.stat(directory)
    except OSError as error:
        raise UnsafePathError(directory, f"cannot be examined: {os.strerror(error.errno or 0)}") from error
    problem = _directory_problem(st)
    if problem is not None:
        raise UnsafePathError(directory, problem)


def _owner_words(uid: int) -> str:
    import pwd  # noqa: PLC0415 - only needed to word a refusal

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


# --- the socket ---------------------------------------------------------------------------------------


def _connect_outcome(dir_fd: int, name: str) -> str:
    """``"refused"``, ``"accepted"``, ``"busy"``, ``"absent"`` or ``"denied"`` for one connect() attempt.

    Connects through ``/proc/self/fd/DIRFD/NAME`` so the directory is the one we examined (and a long path
    still fits ``sun_path``). Non-blocking: a full backlog answers EAGAIN at once instead of blocking.
    """
    with socket.socket(
        socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    ) as sock:
        try:
            sock.connect(f"/proc/self/fd/{dir_fd}/{name}")
        except ConnectionRefusedError:
            return "refused"
        except BlockingIOError:
            return "busy"
        except (FileNotFoundError, NotADirectoryError):
            return "absent"
        except PermissionError:
            return "denied"
        return "accepted"


def _socket_action(socket_path: Path, *, remove: bool) -> Action | None:
    """Judge (and with ``remove``, remove) the socket path; None when there is nothing there."""
    directory = socket_path.parent
    name = socket_path.name
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        return Action(
            socket_path, False, REFUSED, f"cannot open its directory: {os.strerror(error.errno or 0)}"
        )
    try:
        dir_st = os.fstat(dir_fd)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            return Action(socket_path, False, REFUSED, f"cannot examine it: {os.strerror(error.errno or 0)}")
        if stat.S_ISLNK(st.st_mode):
            return Action(
                socket_path, False, REFUSED, "it is a symlink: ctrlsock never follows or removes one"
            )
        if stat.S_ISREG(st.st_mode):
            return Action(
                socket_path, False, REFUSED, "it is a regular file, not a socket: ctrlsock never removes one"
            )
        if stat.S_ISDIR(st.st_mode):
            return Action(socket_path, False, REFUSED, "it is a directory, not a socket")
        if not stat.S_ISSOCK(st.st_mode):
            return Action(socket_path, False, REFUSED, "it is not a socket")
        problem = _directory_problem(dir_st)
        if problem is not None:
            return Action(socket_path, False, REFUSED, f"its directory {directory} {problem}")
        euid = os.geteuid()
        if st.st_uid != euid:
            if euid != 0:
                return Action(
                    socket_path, False, REFUSED, f"it is owned by {_owner_words(st.st_uid)}, not by us"
                )
            if _is_shared(dir_st):
                return Action(
                    socket_path,
                    False,
                    REFUSED,
                    f"it is owned by {_owner_words(st.st_uid)} in {directory}, which others may write: "
                    "there only our own files are removed, even by root",
                )
        outcome = _connect_outcome(dir_fd, name)
        if outcome == "absent":
            return None
        if outcome in {"accepted", "busy"}:
            return Action(
                socket_path,
                False,
                REFUSED,
                "a server accepts connections on it although we hold the lock: "
                "a process that does not take the lock owns it",
            )
        if outcome == "denied":
            return Action(
                socket_path, False, REFUSED, "no permission to connect to it, so it cannot be judged"
            )
        reason = "orphaned socket: nobody holds the lock and connect() is refused"
        if not remove:
            return Action(socket_path, False, WOULD_REMOVE, reason)
        # The directory is safe (only we, root or the file's owner could have swapped the entry), yet check
        # the inode once more so a socket re-created meanwhile by a starting daemon is never removed.
        try:
            again = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if (again.st_dev, again.st_ino, again.st_mode) != (st.st_dev, st.st_ino, st.st_mode):
            return Action(socket_path, False, REFUSED, "it was replaced while being examined")
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            return Action(socket_path, False, REFUSED, f"removing it failed: {os.strerror(error.errno or 0)}")
        return Action(socket_path, True, REMOVED, reason)
    finally:
        os.close(dir_fd)


def _require_held(lock: SocketLock) -> None:
    """The proof: the kernel says this process holds the flock on the file the lock path names now."""
    pid = os.getpid()
    holders = find_lock_holders(lock.lock_path) if lock.is_held else []
    if not any(holder.pid == pid and holder.how in {HOW_LOCKER, HOW_INHERITED} for holder in holders):
        raise RecoveryError(
            f"refusing to remove anything: this process does not hold the lock {lock.lock_path}",
            reasons=(f"{lock.lock_path}: not held by pid {pid}",),
        )


def remove_orphans(lock: SocketLock, *, dry_run: bool = False) -> list[Action]:
    """Remove what a crashed owner left at the locked socket path, and nothing that is not provably orphaned.

    A daemon calls this right after :func:`ctrlsock.lock.take_lock` and before binding; ``cleanup`` calls it
    for admins. The lock file is kept (its record is the caller's own now); see the module docstring.

    Args:
        lock: the held lock: the proof that no cooperating server serves the path. It is checked against
            ``/proc/locks``, so a released or foreign ``SocketLock`` is rejected.
        dry_run: only report what would be removed and why.

    Returns:
        One action per path found: ``removed`` / ``would remove`` or ``refused`` with the reason.

    Raises:
        RecoveryError: this process does not hold the lock.
    """
    _require_held(lock)
    action = _socket_action(Path(lock.socket_path), remove=not dry_run)
    return [action] if action is not None else []


# --- cleanup for admins -------------------------------------------------------------------------------


def _refusal(report: ProbeReport) -> str:
    details = "; ".join(report.problems)
    if report.state is State.RUNNING:
        who = ", ".join(f"pid {h.pid}" for h in report.lock_holders) or "a process"
        reason = f"a daemon ({who}) holds the lock and answers: stop it first"
    elif report.state is State.STUCK:
        reason = "the lock is held but nothing answers: stop its holders first (--terminate-holders)"
    elif report.state is State.FOREIGN:
        reason = "the path is occupied by something that is not ours to judge"
    else:
        reason = "its state cannot be told"
    return f"{reason}: {details}" if details else reason


def cleanup(socket_path: Path, *, dry_run: bool = False, timeout: float = 1.0) -> CleanupResult:
    """Probe a socket path and, if it is stale, remove what is provably orphaned.

    Refuses unless the probe says ``stale`` (or ``stopped``, which needs nothing). Then takes the lock
    without waiting (a daemon starting meanwhile wins and nothing is touched), removes the orphaned socket,
    and releases the lock clearing the record. A dry run never takes the lock (taking it, even briefly,
    could make a starting daemon fail) and never writes: it runs every check and reports.

    Args:
        socket_path: the control socket path.
        dry_run: report what would be done and why, change nothing.
        timeout: how long the socket gets to answer the probe's ``list-commands``.

    Returns:
        The actions (with a reason each) and the states before and after.
    """
    socket_path = Path(socket_path)
    before = probe(socket_path, timeout=timeout)
    result = CleanupResult(actions=[], state_before=before.state, state_after=before.state, before=before)
    if before.state not in {State.STALE, State.STOPPED}:
        result.actions.append(Action(socket_path, False, REFUSED, _refusal(before)))
        return result
    try:
        check_directory_safe(socket_path.parent)
    except UnsafePathError as error:
        result.actions.append(Action(socket_path, False, REFUSED, f"its directory {error}"))
        return result
    if before.state is State.STOPPED:
        return result  # nothing is left behind

    try:
        # A record (ours, Kea-style garbage, anything): the lock file is emptied, never unlinked.
        leftover_record = os.lstat(before.lock_path).st_size > 0
    except OSError:
        leftover_record = False
    record_words = "the record left by " + (
        f"pid {before.record.pid} ({before.record.program})"
        if before.record is not None
        else "an unknown owner"
    )
    if dry_run:
        action = _socket_action(socket_path, remove=False)
        if action is not None:
            result.actions.append(action)
        if leftover_record:
            result.actions.append(
                Action(before.lock_path, False, WOULD_CLEAR, f"{record_words}; {_KEEP_LOCK_REASON}")
            )
        return result

    try:
        lock = try_take_lock(socket_path, program=CLEANUP_PROGRAM)
    except (LockError, UnsafePathError) as error:
        result.actions.append(Action(socket_path, False, REFUSED, f"cannot take the lock: {error}"))
        return result
    if lock is None:
        result.actions.append(
            Action(
                socket_path, False, REFUSED, "another process took the lock meanwhile (a daemon starting?)"
            )
        )
        return result
    try:
        result.actions.extend(remove_orphans(lock))
    finally:
        lock.release(clear_record=True)
    if leftover_record:
        result.actions.append(Action(before.lock_path, True, CLEARED, f"{record_words}; {_KEEP_LOCK_REASON}"))
    result.after = probe(socket_path, timeout=timeout)
    result.state_after = result.after.state
    return result


# --- holders of a stuck lock --------------------------------------------------------------------------


def _wait_exit(pidfds: dict[int, int], deadline: float) -> set[int]:
    """Wait until each pidfd is readable (its process exited) or the deadline; returns the pids gone."""
    gone: set[int] = set()
    poller = select.poll()
    by_fd = {fd: pid for pid, fd in pidfds.items()}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while len(gone) < len(pidfds):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000.0):
            gone.add(by_fd[fd])
            poller.unregister(fd)
    return gone


def _still_same(holder: Holder) -> str | None:
    """Why ``holder`` must not be signalled now, or None when it is still the process the probe saw."""
    process = read_process(holder.pid)
    if process is None or process.is_zombie:
        return "it has exited already"
    if holder.start_time is not None and process.start_time != holder.start_time:
        return f"pid {holder.pid} now names another process (start time differs)"
    return None


def terminate_holders(
    report: ProbeReport, *, grace: float = 5.0, timeout: float = 1.0, dry_run: bool = False
) -> list[Action]:
    """Stop the processes that keep a stuck lock: SIGTERM (and SIGCONT), wait, then SIGKILL, then re-probe.

    Only the processes the probe named as really holding the kernel lock are signalled, never a recorded
    owner that holds nothing, never pid 1 or ourselves, and only when the state is ``stuck`` (a daemon that
    answers is stopped through its own ``shutdown``). Each is addressed through a pidfd opened before its
    start time is checked again, so a pid reused meanwhile is never signalled.

    Args:
        report: a fresh probe report of the socket path.
        grace: seconds to wait after SIGTERM before SIGKILL.
        timeout: for the re-probe's ``list-commands``.
        dry_run: only say who would be signalled.

    Returns:
        One action per holder (``terminated``, ``killed``, ``would terminate`` or ``refused``), and a
        ``refused`` action for the lock file if it is still held afterwards.
    """
    lock_path = report.lock_path
    if report.state is not State.STUCK:
        return [
            Action(
                lock_path,
                False,
                REFUSED,
                f"the socket is {report.state.value}, not stuck: "
                "only the holders of a stuck lock are signalled",
            )
        ]
    targets = report.lock_holders
    if not targets:
        return [Action(lock_path, False, REFUSED, "no process holding the lock can be seen")]

    actions: list[Action] = []
    pidfds: dict[int, int] = {}
    words: dict[int, str] = {}
    try:
        for holder in targets:
            who = f"pid {holder.pid} ({holder.program})" if holder.program else f"pid {holder.pid}"
            words[holder.pid] = who
            if holder.pid in {1, os.getpid()}:
                actions.append(Action(lock_path, False, REFUSED, f"{who} is never signalled", holder.pid))
                continue
            try:
                pidfd = os.pidfd_open(holder.pid)
            except ProcessLookupError:
                continue  # exited on its own
            why_not = _still_same(holder)
            if why_not is not None:
                os.close(pidfd)
                actions.append(
                    Action(lock_path, False, REFUSED, f"{who} not signalled: {why_not}", holder.pid)
                )
                continue
            if dry_run:
                os.close(pidfd)
                actions.append(
                    Action(
                        lock_path, False, WOULD_TERMINATE, f"{who} holds the lock ({holder.how})", holder.pid
                    )
                )
                continue
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                # A stopped process handles SIGTERM only once continued (systemd does the same).
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)
            except ProcessLookupError:
                os.close(pidfd)
                continue
            except PermissionError:
                os.close(pidfd)
                actions.append(
                    Action(lock_path, False, REFUSED, f"no permission to signal {who}", holder.pid)
                )
                continue
            pidfds[holder.pid] = pidfd
        if not pidfds:
            return actions

        gone = _wait_exit(pidfds, time.monotonic() + grace)
        for pid in gone:
            actions.append(Action(lock_path, True, TERMINATED, f"{words[pid]} exited after SIGTERM", pid))
        left = {pid: fd for pid, fd in pidfds.items() if pid not in gone}
        for fd in left.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        killed = _wait_exit(left, time.monotonic() + KILL_WAIT) if left else set()
        for pid in left:
            if pid in killed:
                actions.append(
                    Action(lock_path, True, KILLED, f"{words[pid]} ignored SIGTERM for {grace:g} s", pid)
                )
            else:
                actions.append(
                    Action(lock_path, False, REFUSED, f"{words[pid]} did not exit even after SIGKILL", pid)
                )
    finally:
        for fd in pidfds.values():
            os.close(fd)

    if not dry_run:
        after = probe(report.socket_path, timeout=timeout)
        if after.state in {State.STUCK, State.RUNNING}:
            why = "; ".join(after.problems) or after.state.value
            actions.append(Action(lock_path, False, REFUSED, f"the lock is still held afterwards: {why}"))
    return actions
