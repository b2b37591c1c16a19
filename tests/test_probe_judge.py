"""The probe's judge from tables: evidence in, state and problems out, without processes or files.

Each row is one situation an admin meets; the evidence is what ``gather_evidence`` would have collected.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.probe.judge import holders_from, judge
from ctrlsock.probe.model import (
    Answer,
    AnswerOutcome,
    Evidence,
    HolderHow,
    PathKind,
    ProbeReport,
    Progress,
    State,
)
from ctrlsock.procfs import LockHolder, LockHow, ProcessInfo
from ctrlsock.record import HolderRecord, RecordStatus, RecordVerdict

SOCK = Path("/run/d/ctrl.sock")
LOCK = Path("/run/d/ctrl.sock.lock")
OWNER = 4242
CHILD = 4343
STARTED = 1_700_000_000.0


def process(
    pid: int = OWNER, program: str = "python3", state: str = "S", start_time: int = 1000
) -> ProcessInfo:
    return ProcessInfo(pid, 1, program, (), state, start_time, 0, STARTED, 0)


def locker(pid: int = OWNER, how: LockHow = LockHow.LOCKER, state: str = "S") -> LockHolder:
    return LockHolder(pid, process(pid, state=state), how)


def dead_locker(pid: int = OWNER) -> LockHolder:
    return LockHolder(pid, None, LockHow.ORIGINAL_LOCKER_DEAD)


def record(pid: int = OWNER, start_time: int = 1000, stopping_since: float = 0.0) -> HolderRecord:
    return HolderRecord(
        version=1,
        pid=pid,
        start_time=start_time,
        program="mydaemon",
        started_at=STARTED,
        stopping_since=stopping_since,
    )


def verdict(status: RecordStatus, rec: HolderRecord | None = None, state: str = "S") -> RecordVerdict:
    rec = rec or record()
    trusted = status in {RecordStatus.RUNNING, RecordStatus.STOPPED, RecordStatus.ZOMBIE}
    alive = status in {
        RecordStatus.RUNNING,
        RecordStatus.STOPPED,
        RecordStatus.UNKNOWN,
        RecordStatus.UNVERIFIABLE,
    }
    proc = process(rec.pid, state=state) if status not in {RecordStatus.DEAD} else None
    reasons = {
        RecordStatus.RUNNING: f"pid {rec.pid} is running",
        RecordStatus.DEAD: f"pid {rec.pid} is dead",
        RecordStatus.REUSED: f"pid {rec.pid} was reused (start time differs)",
        RecordStatus.UNVERIFIABLE: f"the record has no start time: whether pid {rec.pid} is the process that "
        "wrote it cannot be checked",
    }
    return RecordVerdict(rec, trusted, alive, proc, reasons.get(status, status.value), status)


def evidence(*bases: dict[str, Any], **changes: Any) -> Evidence:
    """Evidence about SOCK: the fields of ``bases`` in order, then ``changes``; later ones win."""
    fields: dict[str, Any] = {}
    for base in bases:
        fields.update(base)
    fields.update(changes)
    return dataclasses.replace(Evidence(SOCK, LOCK, 1.0, euid=0), **fields)


ANSWERED = Answer(AnswerOutcome.ANSWERED, 1.5)
TIMEOUT = Answer(AnswerOutcome.TIMEOUT, 1000.0, "timed out")
REFUSED = Answer(AnswerOutcome.REFUSED)
ABSENT = Answer(AnswerOutcome.ABSENT)
SOCKET = {"socket_kind": PathKind.SOCKET, "lock_kind": PathKind.REGULAR}
HELD = {
    **SOCKET,
    "held": True,
    "lock_holders": (locker(),),
    "record": record(),
    "verdict": verdict(RecordStatus.RUNNING),
}
NO_CPU = Progress(OWNER, 0.0, "S", 1000.0)
BUSY = Progress(OWNER, 870.0, "R", 1000.0)
STOPPED_PROCESS = Progress(OWNER, 0.0, "T", 1000.0)
STOPPING_AT = STARTED + 3600.0


def stopping_words() -> str:
    return f"stopping since {time.strftime('%H:%M:%S', time.localtime(STOPPING_AT))} (draining connections)"


# (name, evidence, expected state, a problem that must be among the problems, or "" for none at all)
ROWS: list[tuple[str, Evidence, State, str]] = [
    ("nothing there", evidence(), State.STOPPED, ""),
    (
        "missing directory",
        evidence(missing_directory=Path("/run/d")),
        State.STOPPED,
        "directory /run/d does not exist",
    ),
    (
        "no permission",
        evidence(denied="permission denied: cannot look at /run/d"),
        State.UNKNOWN,
        "permission denied",
    ),
    ("healthy daemon", evidence(HELD, answer=ANSWERED), State.RUNNING, ""),
    (
        "kea: empty lock file, held",
        evidence(SOCKET, held=True, lock_holders=(locker(),), answer=ANSWERED),
        State.RUNNING,
        "",
    ),
    (
        "busy daemon uses CPU",
        evidence(HELD, answer=TIMEOUT, progress=BUSY),
        State.RUNNING,
        "busy: pid 4242 (mydaemon) did not answer within 1 s but used 870 ms of CPU time meanwhile",
    ),
    (
        "hung daemon uses no CPU",
        evidence(HELD, answer=TIMEOUT, progress=NO_CPU),
        State.STUCK,
        "pid 4242 (mydaemon) used no CPU time in 1.0 s while a connection waited",
    ),
    (
        "stopped daemon",
        evidence(
            HELD,
            lock_holders=(locker(state="T"),),
            verdict=verdict(RecordStatus.STOPPED, state="T"),
            answer=TIMEOUT,
            progress=STOPPED_PROCESS,
        ),
        State.STUCK,
        "lock held by pid 4242 (mydaemon), which is stopped (SIGSTOP)",
    ),
    (
        "held, no socket",
        evidence(HELD, socket_kind=PathKind.MISSING, answer=ABSENT),
        State.STUCK,
        f"the lock is held but there is no socket at {SOCK}",
    ),
    (
        "socket deleted under a listening daemon",
        evidence(
            HELD,
            socket_kind=PathKind.MISSING,
            answer=ABSENT,
            listeners={7: str(SOCK)},
            owner_listens=True,
        ),
        State.UNLINKED,
        f"the socket {SOCK} was deleted while pid 4242 (mydaemon) still listens on it",
    ),
    (
        "stopping, socket gone",
        evidence(
            HELD,
            socket_kind=PathKind.MISSING,
            record=record(stopping_since=STOPPING_AT),
            verdict=verdict(RecordStatus.RUNNING, record(stopping_since=STOPPING_AT)),
            answer=ABSENT,
        ),
        State.STOPPING,
        stopping_words(),
    ),
    (
        "stopping, still answers",
        evidence(
            HELD,
            record=record(stopping_since=STOPPING_AT),
            verdict=verdict(RecordStatus.RUNNING, record(stopping_since=STOPPING_AT)),
            answer=ANSWERED,
        ),
        State.STOPPING,
        stopping_words(),
    ),
    (
        "stopping mark of a dead owner is not stopping",
        evidence(
            SOCKET,
            record=record(stopping_since=STOPPING_AT),
            verdict=verdict(RecordStatus.DEAD, record(stopping_since=STOPPING_AT)),
            answer=REFUSED,
        ),
        State.STALE,
        "a holder record is left behind: the recorded owner pid 4242 (mydaemon) is dead",
    ),
    (
        "lock file deleted under a healthy daemon",
        evidence(socket_kind=PathKind.SOCKET, answer=ANSWERED, deleted_lock_holders=(locker(),)),
        State.UNLINKED,
        f"the lock file {LOCK} was deleted while pid 4242 (python3) holds it",
    ),
    (
        "lock file deleted and a second daemon took a new one",
        evidence(
            SOCKET,
            held=True,
            lock_holders=(locker(CHILD),),
            answer=ANSWERED,
            deleted_lock_holders=(locker(),),
        ),
        State.UNLINKED,
        f"a new lock file at {LOCK} is held by pid 4343 (python3): two daemons claim this socket",
    ),
    (
        "lock file deleted: the daemon is named from the record it still holds",
        evidence(
            socket_kind=PathKind.SOCKET,
            answer=ANSWERED,
            deleted_lock_holders=(locker(),),
            deleted_records={OWNER: record()},
        ),
        State.UNLINKED,
        f"the lock file {LOCK} was deleted while pid 4242 (mydaemon) holds it",
    ),
    (
        "lock file and socket deleted under a daemon",
        evidence(lock_kind=PathKind.MISSING, answer=ABSENT, deleted_lock_holders=(locker(),)),
        State.UNLINKED,
        f"the socket {SOCK} was deleted too",
    ),
    (
        "a daemon that restored its deleted lock file is not unlinked",
        evidence(HELD, answer=ANSWERED, deleted_lock_holders=(locker(),)),
        State.RUNNING,
        "",
    ),
    (
        "server without the lock answers",
        evidence(SOCKET, answer=ANSWERED),
        State.FOREIGN,
        "a server answers on the socket but nobody holds the lock",
    ),
    (
        "forked child keeps the listener",
        evidence(
            SOCKET,
            record=record(),
            verdict=verdict(RecordStatus.DEAD),
            answer=TIMEOUT,
            listeners={7: str(SOCK)},
            listener_holders=(process(CHILD),),
        ),
        State.STUCK,
        "pid 4343 (python3) keeps the listening socket open but does not hold the lock: "
        "connections are accepted and never answered",
    ),
    (
        "a listener nobody can see",
        evidence(SOCKET, answer=TIMEOUT),
        State.UNKNOWN,
        "no process keeping the socket can be seen",
    ),
    (
        "crash leftovers",
        evidence(SOCKET, record=record(), verdict=verdict(RecordStatus.DEAD), answer=REFUSED),
        State.STALE,
        "socket file left behind: nobody holds the lock and connect() is refused",
    ),
    (
        "stale in a world-writable directory",
        evidence(
            SOCKET,
            answer=REFUSED,
            directory_warning="/run/d is writable by others (mode 0777) without the sticky bit",
        ),
        State.STALE,
        "cleanup will refuse to remove it: /run/d is writable by others (mode 0777) without the sticky bit",
    ),
    (
        "another user's orphan",
        evidence(SOCKET, answer=REFUSED, socket_uid=0, socket_owner="uid 0 (root)", euid=65534),
        State.STALE,
        "the socket is owned by uid 0 (root), not by us: cleanup will refuse to remove it",
    ),
    (
        "record without start time for a live pid",
        evidence(
            lock_kind=PathKind.REGULAR,
            record=record(start_time=0),
            verdict=verdict(RecordStatus.UNVERIFIABLE, record(start_time=0)),
        ),
        State.STALE,
        "a holder record is left behind and not trusted: the record has no start time",
    ),
    (
        "record without start time, its pid holds the lock",
        evidence(
            HELD,
            record=record(start_time=0),
            verdict=verdict(RecordStatus.UNVERIFIABLE, record(start_time=0)),
            answer=ANSWERED,
        ),
        State.RUNNING,
        "",
    ),
    (
        "regular file at the socket path",
        evidence(socket_kind=PathKind.REGULAR),
        State.NOT_A_SOCKET,
        f"{SOCK} is a regular file, not a socket; ctrlsock never removes it",
    ),
    (
        "directory at the socket path",
        evidence(socket_kind=PathKind.DIRECTORY),
        State.NOT_A_SOCKET,
        "directory",
    ),
    ("symlink at the socket path", evidence(socket_kind=PathKind.SYMLINK), State.NOT_A_SOCKET, "symlink"),
    (
        "symlink at the lock path",
        evidence(socket_kind=PathKind.SOCKET, lock_kind=PathKind.SYMLINK),
        State.UNKNOWN,
        f"{LOCK} is a symlink, not a lock file",
    ),
    (
        "inherited lock after the daemon died",
        evidence(
            SOCKET,
            held=True,
            lock_holders=(locker(CHILD, LockHow.INHERITED), dead_locker()),
            record=record(),
            verdict=verdict(RecordStatus.DEAD),
            answer=TIMEOUT,
        ),
        State.STUCK,
        "lock held by pid 4343 (python3), which inherited it; the recorded owner pid 4242 (mydaemon) is dead",
    ),
    (
        "lock held, nobody visible",
        evidence(SOCKET, held=True, answer=TIMEOUT),
        State.STUCK,
        "the lock is held but no process holding it can be seen",
    ),
    (
        "permission to connect denied",
        evidence(HELD, answer=Answer(AnswerOutcome.PERMISSION, detail="denied")),
        State.UNKNOWN,
        "permission denied: cannot connect to",
    ),
    (
        "garbage in the lock file",
        evidence(lock_kind=PathKind.REGULAR, foreign_bytes=12),
        State.STALE,
        "the lock file holds 12 bytes that are not a holder record we can read",
    ),
    (
        "unreadable lock file",
        evidence(lock_kind=PathKind.REGULAR, record_unreadable=True),
        State.UNKNOWN,
        "permission denied: cannot read",
    ),
    (
        "half a reply without the lock",
        evidence(SOCKET, answer=Answer(AnswerOutcome.TRUNCATED, detail="cut")),
        State.FOREIGN,
        "closes them without a complete reply",
    ),
    (
        "bad reply from the owner",
        evidence(HELD, answer=Answer(AnswerOutcome.BAD_REPLY, 2.0, "not json")),
        State.RUNNING,
        "the socket answers, but not with a Kea-style reply: not json",
    ),
]


@pytest.mark.parametrize(("name", "given", "state", "problem"), ROWS, ids=[row[0] for row in ROWS])
def test_judge_from_table(name: str, given: Evidence, state: State, problem: str) -> None:
    got_state, problems = judge(given)
    assert got_state is state, (name, problems)
    if problem:
        assert any(problem in p for p in problems), problems
    else:
        assert problems == []


def test_a_busy_owner_is_marked_as_making_progress() -> None:
    holders = holders_from(evidence(HELD, answer=TIMEOUT, progress=BUSY))
    [owner] = holders
    assert (owner.how, owner.frozen, owner.holds_lock) == (HolderHow.RECORDED_AND_LOCKER, False, True)


def test_a_hung_owner_is_offered_for_termination() -> None:
    holders = holders_from(evidence(HELD, answer=TIMEOUT, progress=NO_CPU))
    assert [
        (h.pid, h.frozen) for h in ProbeReport(SOCK, LOCK, State.STUCK, holders=holders).lock_holders
    ] == [(OWNER, True)]


def test_a_child_keeping_the_listener_is_offered_for_termination() -> None:
    holders = holders_from(
        evidence(SOCKET, answer=TIMEOUT, listeners={7: str(SOCK)}, listener_holders=(process(CHILD),))
    )
    report = ProbeReport(SOCK, LOCK, State.STUCK, holders=holders)
    assert [(h.pid, h.how, h.holds_socket, h.holds_lock) for h in report.lock_holders] == [
        (CHILD, HolderHow.LISTENER, True, False)
    ]


def test_the_recorded_owner_and_the_kernel_locker_are_one_holder() -> None:
    [holder] = holders_from(evidence(HELD, answer=ANSWERED))
    assert (holder.pid, holder.how, holder.program) == (OWNER, HolderHow.RECORDED_AND_LOCKER, "mydaemon")


def test_a_dead_owner_named_by_record_and_kernel_is_listed_once() -> None:
    holders = holders_from(
        evidence(
            SOCKET,
            held=True,
            lock_holders=(locker(CHILD, LockHow.INHERITED), dead_locker()),
            record=record(),
            verdict=verdict(RecordStatus.DEAD),
        )
    )
    assert [(h.pid, h.how) for h in holders] == [
        (CHILD, HolderHow.INHERITED_DESCRIPTOR),
        (OWNER, HolderHow.RECORDED_ORIGINAL_DEAD),
    ]


def test_every_state_is_reached_by_some_row() -> None:
    assert {row[2] for row in ROWS} == set(State)
