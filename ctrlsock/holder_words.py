"""Plain words for the processes around a lock: who they are, what state they are in, how they hold it.

Errors (:class:`~ctrlsock.errors.LockHeldError`), ``status`` and recovery all describe holders; they ask this
module, so that one process is never named two ways.
"""

from __future__ import annotations

import time
from typing import Final

from ctrlsock.procfs import LockHolder, LockHow, ProcessInfo, ProcessStatus
from ctrlsock.record import HolderRecord, RecordVerdict

# One rule, one place: the words for a file's owner live with the safe-path rule that refuses it.
from ctrlsock.safepath import owner_words

__all__ = [
    "condition_words",
    "describe_holder",
    "describe_holders",
    "format_time",
    "owner_words",
    "process_words",
    "who",
]


def who(pid: int, program: str | None) -> str:
    """``pid 4242 (mydaemon)``, or ``pid 4242`` when the program is unknown."""
    return f"pid {pid} ({program})" if program else f"pid {pid}"


def format_time(timestamp: float) -> str:
    """Local time to the minute, as ``2026-11-22 09:14``."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def process_words(process: ProcessInfo) -> str:
    """``running since 2026-11-22 09:14``, ``stopped (SIGSTOP) since ...``, or that it is a zombie."""
    since = f" since {format_time(process.started_at)}"
    if process.is_zombie:
        return "zombie: exited, not yet reaped"
    if process.is_stopped:
        return "stopped (SIGSTOP)" + since
    return "running" + since


_CONDITIONS: Final = {
    ProcessStatus.STOPPED: "is stopped (SIGSTOP)",
    ProcessStatus.ZOMBIE: "is a zombie",
    ProcessStatus.DEAD: "is dead",
    ProcessStatus.UNKNOWN: "cannot be seen from here",
    ProcessStatus.RUNNING: "is alive",
}


def condition_words(status: ProcessStatus) -> str:
    """A process's status as a clause: ``is stopped (SIGSTOP)``, ``is dead``..."""
    return _CONDITIONS[status]


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
    if holder.how in {LockHow.LOCKER, LockHow.INHERITED}:
        parts.append(process_words(process) if process is not None else "state unknown")
        if holder.how == LockHow.INHERITED:
            parts.append("inherited the lock descriptor")
    elif holder.how == LockHow.ORIGINAL_LOCKER_DEAD:
        parts.append("zombie, the original locker" if process is not None else "dead, the original locker")
        parts.append("the lock lives on in other processes")
    else:
        parts.append("took the lock but no longer holds it; the lock lives on in other processes")
    if recorded and holder.how in {LockHow.LOCKER, LockHow.INHERITED}:
        if reused:
            parts.append("not the recorded owner: its pid was reused")
        elif holder.how == LockHow.INHERITED:
            parts.append("the recorded owner")
    return f"pid {holder.pid} ({', '.join(parts)})"


def describe_holders(
    holders: list[LockHolder], record: HolderRecord | None, verdict: RecordVerdict | None
) -> tuple[str, ...]:
    """One description per holder, then what the record says when its pid holds nothing.

    This is what :class:`~ctrlsock.errors.LockHeldError` carries: e.g.
    ``("pid 812 (kea-lfc, running since ..., inherited the lock descriptor)",
    "recorded owner: pid 640 is dead")``.

    Args:
        holders: from :func:`~ctrlsock.procfs.find_lock_holders`.
        record: the lock file's record, if any.
        verdict: ``judge_record(record)``, when there is a record.
    """
    words = [describe_holder(holder, record) for holder in holders]
    if not holders:
        words.append("a process that could not be identified")
    if record is not None and verdict is not None and not any(holder.pid == record.pid for holder in holders):
        reason = verdict.reason
        if verdict.trusted and verdict.alive:
            # A disagreement worth naming: the record's writer lives on but keeps no lock.
            reason += " but does not hold the lock"
        words.append(f"recorded owner: {reason}")
    return tuple(words)
