"""Safe recovery: the only code in ctrlsock that removes files, empties a lock file or signals a process.

Holding the ``flock`` on ``<socket>.lock`` proves that no cooperating server (ours or Kea) serves the path,
because each takes it before binding and keeps it while serving. So every function that removes something
demands the held lock (:func:`remove_orphans` takes a :class:`~ctrlsock.lock.SocketLock`) or takes it
itself (:func:`cleanup`). All of it happens through one descriptor on the socket's directory, reached by the
safe-path rule of :mod:`ctrlsock.safepath`, so a renamed directory or a symlink cannot redirect an action.
What may be changed, and nothing else:

- the socket path, only if ``lstat`` says it is a socket (never a symlink, a regular file or a directory:
  Kea 2.2 deletes anything there, we never do), it is owned by us or we are root (and then not in a sticky
  shared directory such as ``/tmp``, where the sticky bit is what makes "the files are ours" mean
  something), its directory cannot be written by others, and ``connect()`` to that very inode is refused.
  If something accepts while we hold the lock, a server that does not take the lock owns it: refused.
- the server's temporary bind names (``names.bind_path_for``, and an older release's random ones), by the
  same rules, only while holding the lock of the socket they belong to: a starting daemon holds it while
  its bind name exists, so it never loses that socket.
- the lock file's content, only when it is a holder record in our format: it is emptied, never unlinked.
  A process blocked in ``flock()`` on it would wake up holding a lock on an unlinked inode while the next
  one creates a new file and locks that: two "owners" (filelock's rule). An empty file (Kea's) needs
  nothing. Anything else (``Cargo.lock``, ``yarn.lock``, a bare pid) belongs to another program and is
  never written; nor is a record file with a second name, which could be a hard link planted to make root
  empty a file elsewhere (the attack behind CVE-2017-18078 in systemd-tmpfiles).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ctrlsock.errors import RecoveryError, UnsafePathError
from ctrlsock.lock import MAX_RECORD_SIZE, HolderRecord, SocketLock
from ctrlsock.names import lock_path_for, socket_name_for_bind
from ctrlsock.probe import HOW_INHERITED_DESCRIPTOR, Holder, ProbeReport, State, probe
from ctrlsock.procfs import HOW_INHERITED, HOW_LOCKER, find_lock_holders, read_process
from ctrlsock.safepath import (
    ConnectOutcome,
    SafeDirectory,
    check_directory_safe,
    open_safe_directory,
    owner_words,
)

__all__ = [
    "Action",
    "ActionKind",
    "CleanupResult",
    "check_directory_safe",
    "cleanup",
    "remove_orphans",
    "terminate_holders",
]


class ActionKind(StrEnum):
    """What an :class:`Action` did, would do, or refused."""

    REMOVED = "removed"
    WOULD_REMOVE = "would remove"
    #: A record left by a dead owner was emptied; the lock file itself is kept.
    CLEARED = "cleared"
    WOULD_CLEAR = "would clear"
    REFUSED = "refused"
    #: Left alone on purpose, without a refusal (a starting daemon's temporary socket).
    KEPT = "kept"
    #: A holder exited after SIGTERM.
    TERMINATED = "terminated"
    #: A holder needed SIGKILL.
    KILLED = "killed"
    WOULD_TERMINATE = "would terminate"


class _LockContent(StrEnum):
    MISSING = "missing"
    EMPTY = "empty"
    RECORD = "record"
    FOREIGN = "foreign"


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
        what: see :class:`ActionKind`.
        reason: why.
        pid: the process the reason names (a holder signalled, a daemon in the way, a record's owner).
    """

    path: Path
    done: bool
    what: ActionKind
    reason: str
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "done": self.done,
            "what": self.what.value,
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
        """True when something was left because removing or clearing it was refused."""
        return any(action.what is ActionKind.REFUSED for action in self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "socket": str(self.before.socket_path),
            "state_before": self.state_before.value,
            "state_after": self.state_after.value,
            "actions": [action.to_json() for action in self.actions],
        }


def _refused(path: Path, reason: str, pid: int | None = None) -> Action:
    return Action(path, False, ActionKind.REFUSED, reason, pid)


# --- sockets: the control socket and its temporary bind names -----------------------------------------


def _kind_refusal(path: Path, mode: int) -> Action | None:
    if stat.S_ISLNK(mode):
        return _refused(path, "it is a symlink: ctrlsock never follows or removes one")
    if stat.S_ISREG(mode):
        return _refused(path, "it is a regular file, not a socket: ctrlsock never removes one")
    if stat.S_ISDIR(mode):
        return _refused(path, "it is a directory, not a socket")
    if not stat.S_ISSOCK(mode):
        return _refused(path, "it is not a socket")
    return None


def _owner_refusal(safe: SafeDirectory, path: Path, st: os.stat_result) -> Action | None:
    euid = os.geteuid()
    if st.st_uid == euid:
        return None
    if euid != 0:
        return _refused(path, f"it is owned by {owner_words(st.st_uid)}, not by us")
    if safe.is_shared:
        return _refused(
            path,
            f"it is owned by {owner_words(st.st_uid)} in {safe.path}, which others may write: "
            "there only our own files are removed, even by root",
        )
    return None


def _judge_socket(safe: SafeDirectory, name: str, *, remove: bool, reason: str) -> Action | None:
    """Judge (and with ``remove``, remove) the socket ``name``; None when there is nothing there."""
    path = safe.path / name
    try:
        st = safe.lstat(name)
    except OSError as error:
        return _refused(path, f"cannot examine it: {os.strerror(error.errno or 0)}")
    if st is None:
        return None
    refusal = _kind_refusal(path, st.st_mode)
    if refusal is None and (problem := safe.writers_problem) is not None:
        refusal = _refused(path, f"its directory {safe.path} {problem}")
    refusal = refusal or _owner_refusal(safe, path, st)
    if refusal is not None:
        return refusal
    outcome = safe.connect(name, st)
    if outcome is ConnectOutcome.REPLACED:
        return _refused(path, "it was replaced while being examined")
    if outcome is ConnectOutcome.UNKNOWN:
        return _refused(path, "connect() through /proc/self/fd failed, so whether it is orphaned is unknown")
    if outcome in {ConnectOutcome.ACCEPTED, ConnectOutcome.BUSY}:
        return _refused(
            path,
            "a server accepts connections on it although we hold the lock: "
            "a process that does not take the lock owns it",
        )
    if outcome is ConnectOutcome.DENIED:
        return _refused(path, "no permission to connect to it, so it cannot be judged")
    if not remove:
        return Action(path, False, ActionKind.WOULD_REMOVE, reason)
    # Only we, root or the file's owner could have swapped the entry (the directory is safe), yet the inode is
    # checked once more so a socket re-created meanwhile is never removed.
    try:
        if not safe.unlink_if_same(name, st):
            return _refused(path, "it was replaced while being examined")
    except FileNotFoundError:
        return None
    except OSError as error:
        return _refused(path, f"removing it failed: {os.strerror(error.errno or 0)}")
    return Action(path, True, ActionKind.REMOVED, reason)


_ORPHAN_REASON: Final = "orphaned socket: nobody holds the lock and connect() is refused"
_DEBRIS_REASON: Final = (
    "temporary bind name left by a crash of {owner}'s daemon: we hold {owner}'s lock and connect() is refused"
)


def _debris_names(safe: SafeDirectory, socket_name: str) -> list[str]:
    """The sockets in ``safe`` that are temporary bind names of ``socket_name`` (any release's)."""
    try:
        names = safe.names()
    except OSError:
        names = [f".{socket_name}.bind~"]  # not listable: at least the name this release uses
    found = []
    for name in sorted(names):
        if socket_name_for_bind(name) != socket_name:
            continue
        with contextlib.suppress(OSError):
            st = safe.lstat(name)
            if st is not None and stat.S_ISSOCK(st.st_mode):
                found.append(name)
    return found


def _judge_debris(safe: SafeDirectory, socket_name: str, *, remove: bool) -> list[Action]:
    reason = _DEBRIS_REASON.format(owner=socket_name)
    judged = (
        _judge_socket(safe, name, remove=remove, reason=reason) for name in _debris_names(safe, socket_name)
    )
    return [action for action in judged if action is not None]


# --- the lock file ------------------------------------------------------------------------------------


@dataclass
class _LockFile:
    content: _LockContent
    size: int = 0
    record: HolderRecord | None = None
    nlink: int = 1


def _judge_lock_content(fd: int) -> _LockFile:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return _LockFile(_LockContent.FOREIGN, st.st_size, nlink=st.st_nlink)
    if st.st_size == 0:
        return _LockFile(_LockContent.EMPTY, 0, nlink=st.st_nlink)
    if st.st_size > MAX_RECORD_SIZE:  # a record is a few hundred bytes; never read a big file
        return _LockFile(_LockContent.FOREIGN, st.st_size, nlink=st.st_nlink)
    record = HolderRecord.decode(os.pread(fd, MAX_RECORD_SIZE + 1, 0))
    # Version 0 is a bare decimal pid, which any pid file holds: not proof the file is ours.
    if record is None or record.version < 1:
        return _LockFile(_LockContent.FOREIGN, st.st_size, nlink=st.st_nlink)
    return _LockFile(_LockContent.RECORD, st.st_size, record, st.st_nlink)


def _read_lock_file(safe: SafeDirectory, lock_name: str) -> _LockFile:
    try:
        fd = safe.open(lock_name, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return _LockFile(_LockContent.MISSING)
    try:
        return _judge_lock_content(fd)
    finally:
        os.close(fd)


def _foreign_lock(lock_path: Path, lock: _LockFile) -> Action:
    return _refused(
        lock_path,
        f"it holds {lock.size} bytes that are not a ctrlsock holder record: another program's file, "
        "which ctrlsock never writes",
    )


def _record_words(lock: _LockFile) -> tuple[str, int | None]:
    record = lock.record
    if record is None:
        return "the record left by an unknown owner", None
    who = f"pid {record.pid} ({record.program})" if record.program else f"pid {record.pid}"
    return f"the record left by {who}; {_KEEP_LOCK_REASON}", record.pid


# --- the proof, for daemons ---------------------------------------------------------------------------


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

    A daemon calls this right after :func:`ctrlsock.lock.take_lock` and before binding; ``cleanup`` does
    the same for admins. The lock file is kept (its record is the caller's own now); see the module
    docstring. The socket and any temporary bind names of a crash are judged.

    Args:
        lock: the held lock: the proof that no cooperating server serves the path. It is checked against
            ``/proc/locks``, and must be the lock file in the directory reached by the safe-path rule.
        dry_run: only report what would be removed and why.

    Returns:
        One action per path found: ``removed`` / ``would remove`` or ``refused`` with the reason.

    Raises:
        RecoveryError: this process does not hold the lock.
    """
    _require_held(lock)
    socket_path = Path(lock.socket_path)
    try:
        safe = open_safe_directory(socket_path.parent)
    except OSError as error:
        return [_refused(socket_path, f"cannot open its directory safely: {error}")]
    with safe:
        locked, named = os.fstat(lock.fileno()), safe.lstat(Path(lock.lock_path).name)
        if named is None or (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
            return [_refused(socket_path, f"the lock held is not the lock file in {safe.path}")]
        action = _judge_socket(safe, socket_path.name, remove=not dry_run, reason=_ORPHAN_REASON)
        debris = _judge_debris(safe, socket_path.name, remove=not dry_run)
    return ([action] if action is not None else []) + debris


# --- cleanup for admins -------------------------------------------------------------------------------


def _refusal(report: ProbeReport) -> Action:
    details = "; ".join(report.problems)
    lockers = report.lock_holders
    pid = lockers[0].pid if lockers else (report.record.pid if report.record is not None else None)
    if report.state is State.RUNNING:
        who = ", ".join(f"pid {h.pid}" for h in lockers) or "a process"
        reason = f"a daemon ({who}) holds the lock and answers: stop it first"
    elif report.state is State.STUCK:
        reason = "the lock is held but nothing answers: stop its holders first (--terminate-holders)"
    elif report.state is State.STOPPING:
        reason = "the daemon is stopping cleanly and still holds the lock: wait for it"
    elif report.state in {State.FOREIGN, State.NOT_A_SOCKET}:
        reason = "the path is occupied by something that is not ours to judge"
    elif report.state is State.UNLINKED:
        reason = "a live daemon holds the lock but its files were deleted under it: restart it"
    else:
        reason = "its state cannot be told"
    return _refused(report.socket_path, f"{reason}: {details}" if details else reason, pid)


def _finish(result: CleanupResult, timeout: float) -> CleanupResult:
    result.after = probe(result.before.socket_path, timeout=timeout)
    result.state_after = result.after.state
    return result


def cleanup(socket_path: Path, *, dry_run: bool = False, timeout: float = 1.0) -> CleanupResult:
    """Probe a socket path and, if it is stale, remove what is provably orphaned.

    Refuses unless the probe says ``stale`` (or ``stopped``, which needs nothing unless a crash left a
    temporary bind name). Then takes the lock without waiting (a daemon starting meanwhile wins and nothing
    is touched), removes the orphaned socket and bind names, empties a record of ours, and releases the
    lock. A dry run never takes the lock (taking it, even briefly, could make a starting daemon fail) and
    never writes: it runs every check and reports. A temporary bind name given as ``socket_path`` is judged
    under its socket's lock.

    Args:
        socket_path: the control socket path.
        dry_run: report what would be done and why, change nothing.
        timeout: how long the socket gets to answer the probe's ``list-commands``.

    Returns:
        The actions (with a reason each) and the states before and after.

    Raises:
        UnsafePathError: the socket's directory path breaks the safe-path rule (a symlink component, or a
            path from one user's directory into another's); nothing was touched.
    """
    socket_path = Path(socket_path)
    if socket_name_for_bind(socket_path.name) is not None:
        return _cleanup_bind_name(socket_path, dry_run=dry_run, timeout=timeout)
    before = probe(socket_path, timeout=timeout)
    result = CleanupResult(actions=[], state_before=before.state, state_after=before.state, before=before)
    if before.state not in {State.STALE, State.STOPPED}:
        result.actions.append(_refusal(before))
        return result
    try:
        safe = open_safe_directory(socket_path.parent)
    except FileNotFoundError:
        return result  # no directory: nothing is left behind
    except OSError as error:
        if isinstance(error, UnsafePathError):
            raise
        result.actions.append(_refused(socket_path, f"cannot open its directory: {error}"))
        return result
    with safe:
        result.actions.extend(_cleanup_in(safe, before, dry_run=dry_run))
    if dry_run or not any(action.done for action in result.actions):
        return result
    return _finish(result, timeout)


def _cleanup_in(safe: SafeDirectory, before: ProbeReport, *, dry_run: bool) -> list[Action]:
    socket_path, lock_path = before.socket_path, before.lock_path
    if (problem := safe.writers_problem) is not None:
        return [_refused(socket_path, f"its directory {safe.path} {problem}")]
    lock = _read_lock_file(safe, lock_path.name)
    if lock.content is _LockContent.FOREIGN:
        return [_foreign_lock(lock_path, lock)]
    if before.state is State.STOPPED and not _debris_names(safe, socket_path.name):
        return []  # nothing is left behind
    if dry_run:
        actions = _judge_debris(safe, socket_path.name, remove=False)
        action = _judge_socket(safe, socket_path.name, remove=False, reason=_ORPHAN_REASON)
        actions[:0] = [action] if action is not None else []
        if lock.content is _LockContent.RECORD:
            words, pid = _record_words(lock)
            actions.append(Action(lock_path, False, ActionKind.WOULD_CLEAR, words, pid))
        return actions

    try:
        fd = safe.try_flock(lock_path.name)
    except OSError as error:
        return [_refused(socket_path, f"cannot take the lock: {os.strerror(error.errno or 0)}")]
    if fd is None:
        return [_refused(socket_path, "another process took the lock meanwhile (a daemon starting?)")]
    try:
        lock = _judge_lock_content(fd)  # again, now that nobody cooperating can write it
        if lock.content is _LockContent.FOREIGN:
            return [_foreign_lock(lock_path, lock)]
        action = _judge_socket(safe, socket_path.name, remove=True, reason=_ORPHAN_REASON)
        actions = ([action] if action is not None else []) + _judge_debris(
            safe, socket_path.name, remove=True
        )
        if lock.content is _LockContent.RECORD:
            words, pid = _record_words(lock)
            if lock.nlink != 1:
                actions.append(
                    _refused(
                        lock_path, f"it has {lock.nlink} names (hard links), so it is never written", pid
                    )
                )
            else:
                os.ftruncate(fd, 0)
                actions.append(Action(lock_path, True, ActionKind.CLEARED, words, pid))
        return actions
    finally:
        os.close(fd)  # the only descriptor on this open file: closing it releases the flock


def _cleanup_bind_name(bind_path: Path, *, dry_run: bool, timeout: float) -> CleanupResult:
    """Judge a temporary bind name under its socket's lock; never a lock file of its own."""
    owner = bind_path.with_name(socket_name_for_bind(bind_path.name) or "")
    owner_lock = lock_path_for(owner)
    report = ProbeReport(socket_path=bind_path, lock_path=owner_lock, state=State.STOPPED)
    result = CleanupResult(actions=[], state_before=State.STOPPED, state_after=State.STOPPED, before=report)
    try:
        safe = open_safe_directory(bind_path.parent)
    except (FileNotFoundError, NotADirectoryError):
        return result
    with safe:
        st = safe.lstat(bind_path.name)
        if st is None:
            return result
        report.state = _set_states(result, State.STALE)
        if not stat.S_ISSOCK(st.st_mode):
            report.state = _set_states(result, State.NOT_A_SOCKET)
            result.actions.append(_kind_refusal(bind_path, st.st_mode) or _refused(bind_path, "not a socket"))
            return result
        owner_state = probe(owner, timeout=timeout).state
        lock = _read_lock_file(safe, owner_lock.name)
        if lock.content is _LockContent.FOREIGN:
            result.actions.append(_foreign_lock(owner_lock, lock))
            return result
        fd = None
        if owner_state in {State.STALE, State.STOPPED} and lock.content is not _LockContent.MISSING:
            fd = -1 if dry_run else safe.try_flock(owner_lock.name)
        if fd is None:
            # A daemon starting binds under this name while it holds the lock; without a lock file at all,
            # nothing proves the name is not in use.
            why = "is held" if lock.content is not _LockContent.MISSING else "does not exist"
            kept = f"temporary bind name of {owner.name}, whose lock {why} ({owner.name} is {owner_state})"
            result.actions.append(Action(bind_path, False, ActionKind.KEPT, kept))
            report.state = _set_states(result, owner_state)
            return result
        reason = _DEBRIS_REASON.format(owner=owner.name)
        try:
            action = _judge_socket(safe, bind_path.name, remove=not dry_run, reason=reason)
        finally:
            if fd >= 0:
                os.close(fd)
    if action is not None:
        result.actions.append(action)
        if action.done:
            result.state_after = State.STOPPED
    return result


def _set_states(result: CleanupResult, state: State) -> State:
    result.state_before = result.state_after = state
    return state


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


def _why_spared(holder: Holder) -> str | None:
    """Why ``holder`` is never signalled, or None when it may be.

    Only a process that keeps the lock through a descriptor it inherited (Kea's ``kea-lfc``) is a bystander
    that may be stopped. The daemon itself (the recorded owner, or the process that took the lock) may be
    busy rather than hung; only proof that it is frozen, a stopped state (``T``), lets it be signalled.
    """
    if holder.pid in {1, os.getpid()}:
        return "is never signalled"
    if holder.how == HOW_INHERITED_DESCRIPTOR or holder.status == "stopped":
        return None
    return (
        "is the daemon that owns the lock, alive and not stopped: it may be busy rather than hung, "
        "so it is never signalled (stop it through its service manager)"
    )


def _still_same(holder: Holder) -> str | None:
    """Why ``holder`` must not be signalled now, or None when it is still the process the probe saw."""
    process = read_process(holder.pid)
    if process is None or process.is_zombie:
        return "it has exited already"
    if holder.start_time is not None and process.start_time != holder.start_time:
        return f"pid {holder.pid} now names another process (start time differs)"
    if holder.how != HOW_INHERITED_DESCRIPTOR and not process.is_stopped:
        return "it was continued and runs again"
    return None


def _signal_each(
    lock_path: Path, targets: list[Holder], *, dry_run: bool
) -> tuple[list[Action], dict[int, int]]:
    """SIGTERM and SIGCONT each target that may be signalled; their pidfds, and an action for the rest."""
    actions: list[Action] = []
    pidfds: dict[int, int] = {}
    for holder in targets:
        who = f"pid {holder.pid} ({holder.program})" if holder.program else f"pid {holder.pid}"
        spared = _why_spared(holder)
        if spared is not None:
            actions.append(_refused(lock_path, f"{who} {spared}", holder.pid))
            continue
        try:
            pidfd = os.pidfd_open(holder.pid)
        except ProcessLookupError:
            continue  # exited on its own
        why_not = _still_same(holder)
        if why_not is not None or dry_run:
            os.close(pidfd)
            if why_not is not None:
                actions.append(_refused(lock_path, f"{who} not signalled: {why_not}", holder.pid))
            else:
                reason = f"{who} holds the lock ({holder.how})"
                actions.append(Action(lock_path, False, ActionKind.WOULD_TERMINATE, reason, holder.pid))
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
            actions.append(_refused(lock_path, f"no permission to signal {who}", holder.pid))
            continue
        pidfds[holder.pid] = pidfd
    return actions, pidfds


def terminate_holders(
    report: ProbeReport, *, grace: float = 5.0, timeout: float = 1.0, dry_run: bool = False
) -> list[Action]:
    """Stop the processes that keep a stuck lock: SIGTERM (and SIGCONT), wait, then SIGKILL, then re-probe.

    Only processes the probe named as really holding the kernel lock are signalled, and only when the state
    is ``stuck``: a descendant that inherited the lock descriptor, or the daemon itself when it is proven
    frozen (stopped). A live daemon that is merely slow, a recorded owner that holds nothing, pid 1 and
    ourselves are never signalled. Each is addressed through a pidfd opened before its start time and state
    are checked again, so a pid reused meanwhile is never signalled.

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
        reason = (
            f"the socket is {report.state.value}, not stuck: only the holders of a stuck lock are signalled"
        )
        return [_refused(lock_path, reason)]
    targets = report.lock_holders
    if not targets:
        return [_refused(lock_path, "no process holding the lock can be seen")]
    words = {h.pid: f"pid {h.pid} ({h.program})" if h.program else f"pid {h.pid}" for h in targets}
    actions, pidfds = _signal_each(lock_path, targets, dry_run=dry_run)
    try:
        if not pidfds:
            return actions
        gone = _wait_exit(pidfds, time.monotonic() + grace)
        for pid in gone:
            actions.append(
                Action(lock_path, True, ActionKind.TERMINATED, f"{words[pid]} exited after SIGTERM", pid)
            )
        left = {pid: fd for pid, fd in pidfds.items() if pid not in gone}
        for fd in left.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        killed = _wait_exit(left, time.monotonic() + KILL_WAIT) if left else set()
        for pid in left:
            if pid in killed:
                reason = f"{words[pid]} ignored SIGTERM for {grace:g} s"
                actions.append(Action(lock_path, True, ActionKind.KILLED, reason, pid))
            else:
                actions.append(_refused(lock_path, f"{words[pid]} did not exit even after SIGKILL", pid))
    finally:
        for fd in pidfds.values():
            os.close(fd)

    after = probe(report.socket_path, timeout=timeout)
    if after.state in {State.STUCK, State.RUNNING}:
        why = "; ".join(after.problems) or after.state.value
        actions.append(_refused(lock_path, f"the lock is still held afterwards: {why}"))
    return actions
