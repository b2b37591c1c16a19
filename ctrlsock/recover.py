"""Safe recovery: the only code in ctrlsock that removes files or empties a lock file.

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
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ctrlsock.errors import RecoveryError, UnsafePathError
from ctrlsock.holder_words import who as holder_who
from ctrlsock.lock import SocketLock
from ctrlsock.names import bind_path_for, lock_path_for, socket_name_for_bind
from ctrlsock.probe import ProbeReport, State, probe
from ctrlsock.procfs import find_lock_holders
from ctrlsock.record import MAX_RECORD_SIZE, HolderRecord, is_holder_record
from ctrlsock.safepath import (
    ConnectOutcome,
    SafeDirectory,
    check_directory_safe,
    open_safe_directory,
)

__all__ = [
    "Action",
    "ActionKind",
    "CleanupResult",
    "check_directory_safe",
    "cleanup",
    "remove_orphans",
    "remove_own_socket",
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


def _why(error: OSError) -> str:
    """An OS error in words: an unsafe path's own reason, else the errno's text and the file it names."""
    if isinstance(error, UnsafePathError) or not error.errno:
        return str(error)
    words = os.strerror(error.errno)
    return f"{error.filename}: {words}" if error.filename else words


# --- sockets: the control socket and its temporary bind names -----------------------------------------


def _judge_socket(safe: SafeDirectory, name: str, *, remove: bool, reason: str) -> Action | None:
    """Judge (and with ``remove``, remove) the socket ``name``; None when there is nothing there."""
    path = safe.path / name
    try:
        st = safe.lstat(name)
    except OSError as error:
        return _refused(path, f"cannot examine it: {_why(error)}")
    if st is None:
        return None
    if (problem := safe.removal_problem(st)) is not None:
        return _refused(path, problem)
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
        return _refused(path, f"removing it failed: {_why(error)}")
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
        names = [bind_path_for(Path(socket_name)).name]  # not listable: at least the name this release uses
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
    data = os.pread(fd, MAX_RECORD_SIZE + 1, 0)
    record = HolderRecord.decode(data)
    if record is None or not is_holder_record(data):
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
    who = holder_who(record.pid, record.program)
    return f"the record left by {who}; {_KEEP_LOCK_REASON}", record.pid


# --- the proof, for daemons ---------------------------------------------------------------------------


def _require_held(lock: SocketLock) -> None:
    """The proof: the kernel says this process holds the flock on the file the lock path names now."""
    pid = os.getpid()
    holders = find_lock_holders(lock.lock_path) if lock.is_held else []
    if not any(holder.pid == pid and holder.holds_lock for holder in holders):
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
        return [_refused(socket_path, f"cannot open its directory safely: {_why(error)}")]
    with safe:
        locked, named = os.fstat(lock.fileno()), safe.lstat(Path(lock.lock_path).name)
        if named is None or (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
            return [_refused(socket_path, f"the lock held is not the lock file in {safe.path}")]
        action = _judge_socket(safe, socket_path.name, remove=not dry_run, reason=_ORPHAN_REASON)
        debris = _judge_debris(safe, socket_path.name, remove=not dry_run)
    return ([action] if action is not None else []) + debris


def remove_own_socket(lock: SocketLock, inode: tuple[int, int]) -> Action | None:
    """Remove the socket a serving daemon bound, at its clean stop: only while the path still names that
    very socket inode (``(st_dev, st_ino)`` from when it was bound) and the lock is still held.

    Returns:
        ``removed``, or ``refused`` when something else is there now (another file is never touched);
        None when the path is already gone or the lock is no longer held.
    """
    if not lock.is_held:
        return None
    socket_path = Path(lock.socket_path)
    try:
        safe = open_safe_directory(socket_path.parent)
    except OSError as error:
        return _refused(socket_path, f"cannot open its directory: {_why(error)}")
    with safe:
        try:
            st = safe.lstat(socket_path.name)
            if st is None:
                return None
            if not stat.S_ISSOCK(st.st_mode) or (st.st_dev, st.st_ino) != inode:
                return _refused(socket_path, "it was replaced by another file; leaving it in place")
            if not safe.unlink_if_same(socket_path.name, st):
                return _refused(socket_path, "it was replaced while being examined")
        except FileNotFoundError:
            return None
        except OSError as error:
            return _refused(socket_path, f"removing it failed: {_why(error)}")
    return Action(socket_path, True, ActionKind.REMOVED, "our own socket, at a clean stop")


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
        result.actions.append(_refused(socket_path, f"cannot open its directory: {_why(error)}"))
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
        return [_refused(socket_path, f"cannot take the lock: {_why(error)}")]
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
            result.actions.append(_refused(bind_path, safe.removal_problem(st) or "it is not a socket"))
            return result
        owner_state = probe(owner, timeout=timeout).state
        lock = _read_lock_file(safe, owner_lock.name)
        if lock.content is _LockContent.FOREIGN:
            result.actions.append(_foreign_lock(owner_lock, lock))
            return result
        fd = None
        if owner_state in {State.STALE, State.STOPPED} and lock.content is not _LockContent.MISSING:
            try:
                fd = -1 if dry_run else safe.try_flock(owner_lock.name)
            except OSError as error:
                result.actions.append(_refused(bind_path, f"cannot take {owner.name}'s lock: {_why(error)}"))
                return result
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
