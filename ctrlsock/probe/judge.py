"""From evidence to a verdict: the state of a socket path, who is involved, and every problem in words.

Pure: no file, process or socket is looked at here, only the :class:`~ctrlsock.probe.model.Evidence` that
:func:`~ctrlsock.probe.evidence.gather_evidence` collected, so every rule is tested from tables.

The three signals and what each proves:

- the kernel lock: ``flock`` is kernel truth, a dead process holds none;
- the holder record: believed only when its pid is, right now, the same process (start time, boot, PID
  namespace); Kea writes no record, and an empty file is normal;
- a real ``list-commands``: ``connect()`` alone proves nothing, since a child that inherited a killed daemon's
  listening socket accepts connections and never answers. A daemon that does not answer in time but uses CPU
  meanwhile is busy, not stuck: only a stopped process, or one that used no CPU time while a connection
  waited, is called stuck.
"""

from __future__ import annotations

import time

from ctrlsock.holder_words import condition_words, who
from ctrlsock.probe.model import (
    AnswerOutcome,
    Evidence,
    Holder,
    HolderHow,
    PathKind,
    State,
)
from ctrlsock.procfs import LockHolder, LockHow, ProcessInfo, ProcessStatus
from ctrlsock.record import DOUBTFUL_STATUSES, RecordStatus, RecordVerdict

__all__ = ["holders_from", "judge"]

_HOW_WORDS = {
    LockHow.LOCKER: HolderHow.LOCK_OWNER,
    LockHow.INHERITED: HolderHow.INHERITED_DESCRIPTOR,
    LockHow.ORIGINAL_LOCKER_DEAD: HolderHow.ORIGINAL_DEAD,
    LockHow.ORIGINAL_LOCKER_CLOSED: HolderHow.ORIGINAL_CLOSED,
}
_GONE_ORIGINALS = {HolderHow.ORIGINAL_DEAD, HolderHow.ORIGINAL_CLOSED, HolderHow.RECORDED_ORIGINAL_DEAD}


# --- holders ------------------------------------------------------------------------------------------


def _process_status(process: ProcessInfo | None) -> tuple[bool, ProcessStatus]:
    if process is None:
        return False, ProcessStatus.DEAD
    status = process.status
    return status is not ProcessStatus.ZOMBIE, status


def _from_kernel(found: LockHolder, how: HolderHow | None = None) -> Holder:
    process = found.process
    alive, status = _process_status(process)
    return Holder(
        pid=found.pid,
        program=process.program if process is not None else None,
        alive=alive,
        status=status,
        how=how or _HOW_WORDS[found.how],
        since=process.started_at if process is not None else None,
        start_time=process.start_time if process is not None else None,
        holds_lock=found.holds_lock and alive,
    )


def _recorded(verdict: RecordVerdict) -> Holder:
    record = verdict.record
    if verdict.trusted:
        alive, status = _process_status(verdict.process)
    elif verdict.status in {RecordStatus.OTHER_NAMESPACE, RecordStatus.UNKNOWN, RecordStatus.UNVERIFIABLE}:
        # Not visible or not checkable from here: it may well be alive (a container, hidepid, a pid file).
        alive, status = verdict.alive, ProcessStatus.UNKNOWN
    else:
        # Dead, another boot, or the pid now names another process: the recorded process itself is gone.
        alive, status = False, ProcessStatus.DEAD
    process = verdict.process if verdict.trusted else None
    return Holder(
        pid=record.pid,
        program=record.program or (process.program if process is not None else None),
        alive=alive,
        status=status,
        how=HolderHow.RECORDED,
        since=record.started_at or None,
        start_time=record.start_time,
    )


def holders_from(evidence: Evidence) -> list[Holder]:
    """Everyone involved: lock holders first, then the recorded owner if it holds nothing, then processes
    keeping the listening socket without the lock; one entry per process."""
    holders = [_from_kernel(found) for found in evidence.lock_holders]
    # A daemon that put a new lock file in place still holds the deleted one too: it is not unlinked.
    current = {found.pid for found in evidence.lock_holders if found.holds_lock}
    for found in evidence.deleted_lock_holders:
        if found.pid in current:
            continue
        holder = _from_kernel(found, HolderHow.DELETED_LOCK)
        deleted_record = evidence.deleted_records.get(found.pid)
        if deleted_record is not None and deleted_record.start_time == holder.start_time:
            # The name the daemon gave itself, from the record in the file it still holds.
            holder.program = deleted_record.program or holder.program
        holders.append(holder)
    verdict = evidence.verdict
    if verdict is not None:
        recorded = _recorded(verdict)
        same = next((h for h in holders if h.pid == recorded.pid and h.holds_lock), None)
        dead_locker = next(
            (h for h in holders if h.pid == recorded.pid and h.how is HolderHow.ORIGINAL_DEAD), None
        )
        # A record without a start time is confirmed by the kernel when its pid holds this very lock.
        confirmed = verdict.status is RecordStatus.UNVERIFIABLE or (
            verdict.trusted and same is not None and same.start_time == recorded.start_time
        )
        if same is not None and confirmed:
            same.how = HolderHow.RECORDED_AND_LOCKER
            # The name the daemon gave itself beats comm ("python3" for every Python daemon).
            same.program = recorded.program or same.program
        elif dead_locker is not None and recorded.status is ProcessStatus.DEAD:
            # One dead process, two witnesses (/proc/locks and the record): list it once.
            dead_locker.how = HolderHow.RECORDED_ORIGINAL_DEAD
            dead_locker.program = recorded.program or dead_locker.program
            dead_locker.since = recorded.since
            dead_locker.start_time = recorded.start_time
        else:
            holders.append(recorded)
    for process in evidence.listener_holders:
        known = next((h for h in holders if h.pid == process.pid), None)
        if known is not None:
            known.holds_socket = known.alive and not known.holds_lock
            continue
        alive, status = _process_status(process)
        holders.append(
            Holder(
                pid=process.pid,
                program=process.program,
                alive=alive,
                status=status,
                how=HolderHow.LISTENER,
                since=process.started_at,
                start_time=process.start_time,
                holds_socket=alive,
            )
        )
    progress = evidence.progress
    if progress is not None:
        for holder in holders:
            if holder.pid == progress.pid:
                holder.frozen = progress.frozen
    return holders


# --- the verdict --------------------------------------------------------------------------------------


def judge(evidence: Evidence) -> tuple[State, list[str]]:
    """The state of the socket path and every problem, in one plain sentence each.

    Args:
        evidence: from :func:`~ctrlsock.probe.evidence.gather_evidence`.

    Returns:
        The state and the problems, most important first.
    """
    problems: list[str] = []
    state = _judge(evidence, holders_from(evidence), problems)
    return state, problems


def _record_doubt(evidence: Evidence) -> str:
    verdict = evidence.verdict
    return verdict.reason if verdict is not None and verdict.status in DOUBTFUL_STATUSES else ""


def _recorded_holder(evidence: Evidence, holders: list[Holder]) -> Holder | None:
    """The recorded owner when it holds nothing (listed apart, or merged with the dead original locker)."""
    return next((h for h in holders if h.how in {HolderHow.RECORDED, HolderHow.RECORDED_ORIGINAL_DEAD}), None)


def _judge(evidence: Evidence, holders: list[Holder], problems: list[str]) -> State:
    socket_path, lock_path = evidence.socket_path, evidence.lock_path
    if evidence.denied:
        problems.append(evidence.denied)
        return State.UNKNOWN
    if evidence.missing_directory is not None:
        problems.append(f"directory {evidence.missing_directory} does not exist")
        return State.STOPPED
    if evidence.socket_kind not in {PathKind.MISSING, PathKind.SOCKET}:
        problems.append(f"{socket_path} is a {evidence.socket_kind}, not a socket; ctrlsock never removes it")
        if evidence.held:
            _describe_lock(evidence, holders, problems)
        return State.NOT_A_SOCKET
    if evidence.lock_kind not in {PathKind.MISSING, PathKind.REGULAR}:
        problems.append(
            f"{lock_path} is a {evidence.lock_kind}, not a lock file; ctrlsock never follows or removes it, "
            "so who owns the socket cannot be told"
        )
        return State.UNKNOWN
    if any(h.how is HolderHow.DELETED_LOCK for h in holders):
        return _unlinked_lock(evidence, holders, problems)
    if evidence.held:
        return _held(evidence, holders, problems)
    return _not_held(evidence, holders, problems)


def _unlinked_lock(evidence: Evidence, holders: list[Holder], problems: list[str]) -> State:
    for holder in (h for h in holders if h.how is HolderHow.DELETED_LOCK):
        named = who(holder.pid, holder.program)
        sentence = (
            f"the lock file {evidence.lock_path} was deleted while {named} holds it (a /tmp cleaner?): "
            "another daemon could start on this socket; restart the daemon to recreate it"
        )
        problems.append(sentence)
    if evidence.socket_kind is PathKind.MISSING:
        problems.append(f"the socket {evidence.socket_path} was deleted too")
    elif evidence.answer.answered:
        problems.append("the socket still answers")
    if evidence.held:
        others = ", ".join(
            who(h.pid, h.program) for h in holders if h.holds_lock and h.how is not HolderHow.DELETED_LOCK
        )
        problems.append(
            f"a new lock file at {evidence.lock_path} is held by {others or 'another process'}: "
            "two daemons claim this socket"
        )
    return State.UNLINKED


def _owner(holders: list[Holder]) -> Holder | None:
    """The live process that took the lock (recorded or named by the kernel), not an inheritor."""
    return next(
        (
            h
            for h in holders
            if h.holds_lock and h.how in {HolderHow.RECORDED_AND_LOCKER, HolderHow.LOCK_OWNER}
        ),
        None,
    )


def _held(evidence: Evidence, holders: list[Holder], problems: list[str]) -> State:
    _describe_lock(evidence, holders, problems)
    answer, socket_path = evidence.answer, evidence.socket_path
    owner = _owner(holders)
    record = evidence.record
    if (
        record is not None
        and record.stopping_since
        and owner is not None
        and owner.how is HolderHow.RECORDED_AND_LOCKER
    ):
        since = time.strftime("%H:%M:%S", time.localtime(record.stopping_since))
        problems.insert(0, f"stopping since {since} (draining connections)")
        return State.STOPPING
    if answer.answered:
        if answer.outcome is AnswerOutcome.BAD_REPLY:
            problems.append(f"the socket answers, but not with a Kea-style reply: {answer.detail}")
        return State.RUNNING
    if answer.outcome is AnswerOutcome.PERMISSION:
        problems.append(
            f"permission denied: cannot connect to {socket_path}, so whether it answers is unknown"
        )
        return State.UNKNOWN
    if evidence.socket_kind is PathKind.MISSING and owner is not None and evidence.owner_listens:
        problems.insert(
            0,
            f"the socket {socket_path} was deleted while {who(owner.pid, owner.program)} still listens on it "
            "(a /tmp cleaner?): clients cannot reach it; restart the daemon to recreate it",
        )
        return State.UNLINKED
    progress = evidence.progress
    if answer.outcome is AnswerOutcome.TIMEOUT and progress is not None and not progress.frozen:
        busy = next((h for h in holders if h.pid == progress.pid), None)
        name = who(progress.pid, busy.program if busy is not None else None)
        problems.append(
            f"busy: {name} did not answer within {evidence.timeout:g} s but used {progress.cpu_ms:.0f} ms "
            f"of CPU time meanwhile"
        )
        return State.RUNNING
    problems.append(_silence(evidence))
    if progress is not None and progress.frozen and progress.state not in {"T", "t"}:
        busy = next((h for h in holders if h.pid == progress.pid), None)
        name = who(progress.pid, busy.program if busy is not None else None)
        problems.append(
            f"{name} used no CPU time in {progress.waited_ms / 1000.0:.1f} s while a connection waited"
        )
    return State.STUCK


def _silence(evidence: Evidence) -> str:
    answer, socket_path = evidence.answer, evidence.socket_path
    if answer.outcome is AnswerOutcome.TIMEOUT:
        return f"socket accepts connections but nothing answers within {evidence.timeout:g} s"
    if answer.outcome is AnswerOutcome.REFUSED:
        return "the lock is held but connect() to the socket is refused: nothing listens on it"
    if answer.outcome is AnswerOutcome.ABSENT:
        return f"the lock is held but there is no socket at {socket_path}"
    if answer.outcome is AnswerOutcome.TRUNCATED:
        return f"the socket closed the connection before a complete reply: {answer.detail}"
    return f"connecting to the socket failed: {answer.detail}"


def _not_held(evidence: Evidence, holders: list[Holder], problems: list[str]) -> State:
    """Nobody holds the lock: something unexpected answers, or what is left behind."""
    state = _something_without_lock(evidence, holders, problems)
    if state is not None:
        return state
    if evidence.record_error:
        problems.append(evidence.record_error)
    leftovers = _left_socket(evidence, problems)
    leftovers = _left_record(evidence, holders, problems) or leftovers
    if not leftovers and evidence.record_unreadable:
        problems.append(
            f"permission denied: cannot read {evidence.lock_path}, "
            "so whether a record is left behind is unknown"
        )
        return State.UNKNOWN
    return State.STALE if leftovers else State.STOPPED


def _something_without_lock(evidence: Evidence, holders: list[Holder], problems: list[str]) -> State | None:
    """The state when something that does not hold the lock reacts on the socket, else None."""
    answer = evidence.answer
    outcome = answer.outcome
    listeners = [h for h in holders if h.holds_socket]
    if answer.answered:
        problems.append("a server answers on the socket but nobody holds the lock")
        return State.FOREIGN
    if outcome in {AnswerOutcome.TIMEOUT, AnswerOutcome.TRUNCATED} and listeners:
        for holder in listeners:
            problems.append(
                f"{who(holder.pid, holder.program)} keeps the listening socket open but does not hold the "
                "lock: connections are accepted and never answered"
            )
        gone = _recorded_holder(evidence, holders)
        if gone is not None and not gone.alive:
            problems.append(
                f"the recorded owner {who(gone.pid, gone.program)} {condition_words(gone.status)}"
            )
        return State.STUCK
    if outcome is AnswerOutcome.TIMEOUT:
        problems.append(
            f"socket accepts connections but nothing answers within {evidence.timeout:g} s, nobody holds the "
            "lock, and no process keeping the socket can be seen (another PID namespace, or no permission "
            "to read /proc)"
        )
        return State.UNKNOWN
    if outcome is AnswerOutcome.TRUNCATED:
        problems.append(
            "something accepts connections on the socket but closes them without a complete reply, "
            f"and nobody holds the lock: {answer.detail}"
        )
        return State.FOREIGN
    if outcome is AnswerOutcome.PERMISSION:
        problems.append(
            f"permission denied: cannot connect to {evidence.socket_path}, "
            "so whether a server answers is unknown"
        )
        return State.UNKNOWN
    if outcome is AnswerOutcome.ERROR:
        problems.append(f"connecting to the socket failed: {answer.detail}")
        return State.UNKNOWN
    return None


def _left_socket(evidence: Evidence, problems: list[str]) -> bool:
    """Name a socket file left behind (and why cleanup may refuse it); whether there is one."""
    if evidence.socket_kind is not PathKind.SOCKET or evidence.answer.outcome is not AnswerOutcome.REFUSED:
        return False
    problems.append("socket file left behind: nobody holds the lock and connect() is refused")
    if evidence.socket_uid is not None and evidence.euid not in {evidence.socket_uid, 0}:
        problems.append(
            f"the socket is owned by {evidence.socket_owner}, not by us: cleanup will refuse to remove it"
        )
    if evidence.directory_warning:
        problems.append(f"cleanup will refuse to remove it: {evidence.directory_warning}")
    return True


def _left_record(evidence: Evidence, holders: list[Holder], problems: list[str]) -> bool:
    """Name a holder record or foreign bytes left in the lock file; whether there are any."""
    left = False
    recorded = _recorded_holder(evidence, holders)
    if recorded is not None:
        left = True
        doubt = _record_doubt(evidence)
        named = who(recorded.pid, recorded.program)
        condition = condition_words(recorded.status)
        if doubt:
            problems.append(f"a holder record is left behind and not trusted: {doubt}")
        elif recorded.alive:
            problems.append(f"the record names {named}, which {condition} but does not hold the lock")
        else:
            problems.append(f"a holder record is left behind: the recorded owner {named} {condition}")
    if evidence.foreign_bytes:
        problems.append(
            f"the lock file holds {evidence.foreign_bytes} bytes that are not a holder record we can read"
        )
        left = True
    return left


def _describe_lock(evidence: Evidence, holders: list[Holder], problems: list[str]) -> None:
    """Name who keeps the lock and every way that disagrees with the record."""
    lockers = [h for h in holders if h.holds_lock]
    recorded = _recorded_holder(evidence, holders)
    doubt = _record_doubt(evidence)
    dead_original = next((h for h in holders if h.how in _GONE_ORIGINALS), None)
    # Why the original owner is not the one holding it: the record says so first, else /proc/locks.
    if recorded is not None and not recorded.alive:
        gone = f"the recorded owner {who(recorded.pid, recorded.program)} {condition_words(recorded.status)}"
    elif dead_original is not None:
        verb = "closed its descriptor" if dead_original.how is HolderHow.ORIGINAL_CLOSED else "is dead"
        gone = f"the original locker {who(dead_original.pid, dead_original.program)} {verb}"
    else:
        gone = ""
    if not lockers:
        problems.append(
            "the lock is held but no process holding it can be seen "
            "(another PID namespace, or no permission to read /proc)"
        )
    owner_alive = any(h.how is not HolderHow.INHERITED_DESCRIPTOR for h in lockers)
    for holder in lockers:
        named = who(holder.pid, holder.program)
        if holder.how is HolderHow.INHERITED_DESCRIPTOR:
            stopped = " and is stopped (SIGSTOP)" if holder.status is ProcessStatus.STOPPED else ""
            if owner_alive:
                # Not wrong yet, but it would keep the lock (and the socket) if the owner died.
                problems.append(f"{named} also holds the lock through an inherited descriptor{stopped}")
                continue
            sentence = f"lock held by {named}, which inherited it{stopped}"
            problems.append(f"{sentence}; {gone}" if gone else sentence)
        elif holder.status is ProcessStatus.STOPPED:
            problems.append(f"lock held by {named}, which is stopped (SIGSTOP)")
    if recorded is not None:
        if doubt:
            problems.append(f"the holder record is not trusted: {doubt}")
        elif recorded.alive:
            problems.append(
                f"the record names {who(recorded.pid, recorded.program)}, "
                f"which {condition_words(recorded.status)} but does not hold the lock"
            )
        elif not any(h.how is HolderHow.INHERITED_DESCRIPTOR for h in lockers) and lockers:
            names = ", ".join(who(h.pid, h.program) for h in lockers)
            problems.append(f"lock held by {names}; {gone}")
