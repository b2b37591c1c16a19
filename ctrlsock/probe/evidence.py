"""Gather what a probe judges: every read of the filesystem, ``/proc`` and the socket happens here.

Read-only: nothing here takes the lock, writes a byte or signals a process. It costs little for a healthy
daemon: the pid ``/proc/locks`` names is checked through its own descriptors, never by reading every
process; a look at every process is made only when something is wrong (nothing answers, nobody holds the
lock), where it finds a child that inherited the lock or the listening socket.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from pathlib import Path

from ctrlsock.client import send_command
from ctrlsock.errors import (
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TruncatedReplyError,
    UnsafePathError,
)
from ctrlsock.holder_words import owner_words
from ctrlsock.names import bind_path_for, lock_path_for
from ctrlsock.probe.model import PROBE_COMMAND, Answer, AnswerOutcome, Evidence, PathKind, Progress
from ctrlsock.procfs import (
    LockHolder,
    LockHow,
    ProcessInfo,
    clock_ticks_per_second,
    find_deleted_lock_holders,
    find_lock_holders,
    find_lockers,
    find_socket_holders,
    holds_socket,
    is_flock_held,
    listening_socket_inodes,
    read_cpu_ticks,
)
from ctrlsock.record import HolderRecord, RecordVerdict, judge_record, read_record, read_record_through
from ctrlsock.safepath import check_directory_safe

__all__ = ["gather_evidence"]


def gather_evidence(socket_path: Path, timeout: float) -> Evidence:
    """Look at ``socket_path``, its lock file, the processes around them, and ask the socket.

    Never raises for lack of permission: the evidence then says what could not be seen.

    Args:
        socket_path: the control socket path.
        timeout: how long the socket gets to answer ``list-commands``, in seconds.
    """
    socket_path = Path(socket_path)
    lock_path = lock_path_for(socket_path)
    try:
        return _gather(socket_path, lock_path, timeout)
    except PermissionError as error:
        where = error.filename or socket_path
        return Evidence(socket_path, lock_path, timeout, denied=f"permission denied: cannot look at {where}")


def _kind(st: os.stat_result | None) -> PathKind:
    if st is None:
        return PathKind.MISSING
    mode = st.st_mode
    if stat.S_ISSOCK(mode):
        return PathKind.SOCKET
    if stat.S_ISLNK(mode):
        return PathKind.SYMLINK
    if stat.S_ISREG(mode):
        return PathKind.REGULAR
    if stat.S_ISDIR(mode):
        return PathKind.DIRECTORY
    return PathKind.SPECIAL


def _lstat(path: Path) -> os.stat_result | None:
    """``lstat``, or None when absent; PermissionError propagates."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _missing_directory(directory: Path) -> Path | None:
    """``directory`` when it does not exist (or is not a directory), else None."""
    try:
        return None if stat.S_ISDIR(os.stat(directory).st_mode) else directory
    except (FileNotFoundError, NotADirectoryError):
        return directory


def _directory_warning(directory: Path) -> str:
    """Why cleanup would refuse to act in ``directory`` (the one safe-path rule), or ``""``."""
    try:
        check_directory_safe(directory)
    except UnsafePathError as error:
        return str(error)
    return ""


def _ask(socket_path: Path, timeout: float) -> Answer:
    started = time.monotonic()
    try:
        send_command(socket_path, PROBE_COMMAND, timeout=timeout)
    except SocketNotFoundError:
        return Answer(AnswerOutcome.ABSENT)
    except ServerRefusedError:
        return Answer(AnswerOutcome.REFUSED)
    except SocketPermissionError as error:
        return Answer(AnswerOutcome.PERMISSION, detail=str(error))
    except ClientTimeoutError as error:
        return Answer(AnswerOutcome.TIMEOUT, (time.monotonic() - started) * 1000.0, str(error))
    except TruncatedReplyError as error:
        return Answer(AnswerOutcome.TRUNCATED, detail=str(error))
    except BadReplyError as error:
        return Answer(AnswerOutcome.BAD_REPLY, (time.monotonic() - started) * 1000.0, str(error))
    except (ClientError, SocketPathTooLongError) as error:
        return Answer(AnswerOutcome.ERROR, detail=str(error))
    except OSError as error:  # anything the client did not translate
        return Answer(AnswerOutcome.ERROR, detail=os.strerror(error.errno) if error.errno else str(error))
    # Any reply counts, whatever its result: an "unsupported" still proves a live server reads the socket.
    return Answer(AnswerOutcome.ANSWERED, (time.monotonic() - started) * 1000.0)


def _read_record(lock_path: Path, size: int) -> tuple[HolderRecord | None, bool, str, int]:
    """(record, unreadable for lack of permission, other error, size of content that is not a record)."""
    try:
        record = read_record(lock_path)
    except PermissionError:
        return None, True, "", 0
    except OSError as error:
        return None, False, f"cannot read the lock file: {os.strerror(error.errno or 0)}", 0
    return record, False, "", size if record is None else 0


def _owner_pid(holders: tuple[LockHolder, ...], verdict: RecordVerdict | None) -> int | None:
    """The process whose progress says whether the daemon works: the live pid that took the lock."""
    for holder in holders:
        if holder.how is LockHow.LOCKER and holder.process is not None and not holder.process.is_zombie:
            return holder.pid
    if verdict is not None and verdict.trusted and verdict.alive:
        return verdict.record.pid
    return None


def _socket_names(socket_path: Path) -> set[str]:
    """The addresses a listener for ``socket_path`` shows in ``/proc/net/unix``: as bound, in any spelling."""
    names: set[str] = set()
    for path in (socket_path, bind_path_for(socket_path)):
        names.add(os.fspath(path))
        names.add(os.path.abspath(path))
        names.add(os.path.join(os.path.realpath(path.parent), path.name))
    return names


def _gather(socket_path: Path, lock_path: Path, timeout: float) -> Evidence:
    socket_st = _lstat(socket_path)
    lock_st = _lstat(lock_path)
    if socket_st is None and lock_st is None:
        missing = _missing_directory(socket_path.parent)
        if missing is not None:
            return Evidence(socket_path, lock_path, timeout, missing_directory=missing)
    socket_kind = _kind(socket_st)
    lock_kind = _kind(lock_st)
    euid = os.geteuid()

    holders: tuple[LockHolder, ...] = ()
    held = scanned = False
    record: HolderRecord | None = None
    verdict: RecordVerdict | None = None
    unreadable, record_error, foreign_bytes = False, "", 0
    if lock_kind is PathKind.REGULAR:
        assert lock_st is not None
        lockers = find_lockers(lock_path)
        if lockers is None:
            holders, scanned = tuple(find_lock_holders(lock_path)), True
        else:
            holders = tuple(lockers)
        held = bool(holders) or is_flock_held(lock_path)
        record, unreadable, record_error, foreign_bytes = _read_record(lock_path, lock_st.st_size)
        verdict = judge_record(record) if record is not None else None

    owner = _owner_pid(holders, verdict)
    before = read_cpu_ticks(owner) if owner is not None else None
    if socket_kind is PathKind.SOCKET:
        answer = _ask(socket_path, timeout)
    elif socket_kind is PathKind.MISSING:
        answer = Answer(AnswerOutcome.ABSENT)
    else:
        answer = Answer(AnswerOutcome.NOT_ASKED)
    progress = None
    if answer.outcome is AnswerOutcome.TIMEOUT and owner is not None and before is not None:
        after = read_cpu_ticks(owner)
        if after is not None:
            progress = Progress(
                pid=owner,
                cpu_ms=(after[0] - before[0]) * 1000.0 / clock_ticks_per_second(),
                state=after[1],
                waited_ms=answer.elapsed_ms or timeout * 1000.0,
            )

    socket_uid = socket_st.st_uid if socket_st is not None and socket_kind is PathKind.SOCKET else None
    evidence = Evidence(
        socket_path,
        lock_path,
        timeout,
        socket_kind=socket_kind,
        socket_uid=socket_uid,
        socket_owner=owner_words(socket_uid) if socket_uid is not None and socket_uid != euid else "",
        euid=euid,
        lock_kind=lock_kind,
        held=held,
        lock_holders=holders,
        scanned=scanned,
        record=record,
        verdict=verdict,
        record_unreadable=unreadable,
        record_error=record_error,
        foreign_bytes=foreign_bytes,
        answer=answer,
        progress=progress,
    )
    if held and answer.answered:
        return evidence  # the healthy case: the answer and the locker's own descriptors are the proof
    return _look_closer(evidence, owner)


def _look_closer(evidence: Evidence, owner: int | None) -> Evidence:
    """What only a wider look shows, once something is wrong."""
    socket_path, lock_path = evidence.socket_path, evidence.lock_path
    holders, scanned = evidence.lock_holders, evidence.scanned
    if evidence.held and not scanned:
        # Children that inherited the lock are invisible to the look at the locker alone.
        holders, scanned = tuple(find_lock_holders(lock_path)), True
    deleted = tuple(find_deleted_lock_holders(lock_path))
    deleted_records: dict[int, HolderRecord] = {}
    for found in deleted:
        record = read_record_through(found.pid, found.fd) if found.fd is not None else None
        if record is not None:
            deleted_records[found.pid] = record
    listeners: dict[int, str] = {}
    owner_listens = False
    listener_holders: tuple[ProcessInfo, ...] = ()
    outcome = evidence.answer.outcome
    if evidence.socket_kind in {PathKind.MISSING, PathKind.SOCKET}:
        listeners = listening_socket_inodes(_socket_names(socket_path))
    if listeners:
        owners = {h.pid for h in holders if h.holds_lock} | {h.pid for h in deleted}
        if owner is not None:
            owners.add(owner)
        owner_listens = any(holds_socket(pid, listeners) for pid in sorted(owners))
        if not evidence.held and outcome in {AnswerOutcome.TIMEOUT, AnswerOutcome.TRUNCATED}:
            listener_holders = tuple(find_socket_holders(listeners))
    warning = ""
    if evidence.socket_kind is PathKind.SOCKET and outcome is AnswerOutcome.REFUSED:
        warning = _directory_warning(socket_path.parent)
    return dataclasses.replace(
        evidence,
        lock_holders=holders,
        scanned=scanned,
        deleted_lock_holders=deleted,
        deleted_records=deleted_records,
        listeners=listeners,
        owner_listens=owner_listens,
        listener_holders=listener_holders,
        directory_warning=warning,
    )
