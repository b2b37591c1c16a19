"""The probe's vocabulary: states, holders, the report, and the evidence a verdict rests on.

Plain data, no I/O: :mod:`ctrlsock.probe.evidence` fills an :class:`Evidence`, :mod:`ctrlsock.probe.judge`
turns it into a state, holders and problems.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ctrlsock.procfs import LockHolder, ProcessInfo, ProcessStatus
from ctrlsock.record import HolderRecord, RecordVerdict

__all__ = [
    "PROBE_COMMAND",
    "Answer",
    "AnswerOutcome",
    "Evidence",
    "Holder",
    "HolderHow",
    "PathKind",
    "ProbeReport",
    "Progress",
    "State",
]

#: The command a probe sends: every Kea daemon and every ctrlsock server has it, and it changes nothing.
PROBE_COMMAND: Final = "list-commands"


class State(StrEnum):
    """What a socket path is in.

    ``running``: the lock is held and the socket answers (possibly slowly, while its owner works).
    ``stopped``: nothing is held and nothing is left behind. ``stale``: nobody holds the lock but a socket
    file or a dead owner's record is left (a crash). ``stuck``: something holds the lock or the listening
    socket and makes no progress. ``foreign``: a server that does not hold the lock answers on the socket.
    ``unknown``: we cannot tell (no permission, or the lock path is not a file). ``stopping``: the recorded
    owner has begun a clean stop and drains. ``unlinked``: a live daemon holds the lock but its socket or
    lock file was deleted under it. ``not-a-socket``: the socket path names a file, directory or symlink.
    """

    RUNNING = "running"
    STOPPED = "stopped"
    STALE = "stale"
    STUCK = "stuck"
    FOREIGN = "foreign"
    UNKNOWN = "unknown"
    #: The recorded owner has begun a clean stop and is draining its connections (its socket may be gone).
    STOPPING = "stopping"
    #: A live daemon holds the lock, but its socket or lock file was deleted under it (a /tmp cleaner).
    UNLINKED = "unlinked"
    #: The socket path names something that is not a socket: a regular file, a directory, a symlink.
    NOT_A_SOCKET = "not-a-socket"


class HolderHow(StrEnum):
    """How a :class:`Holder` is tied to the socket, in plain words."""

    RECORDED = "recorded owner"
    RECORDED_AND_LOCKER = "recorded owner, holds the lock"
    LOCK_OWNER = "lock owner"
    INHERITED_DESCRIPTOR = "inherited descriptor"
    ORIGINAL_DEAD = "original locker, dead"
    ORIGINAL_CLOSED = "original locker, closed its descriptor"
    RECORDED_ORIGINAL_DEAD = "recorded owner, original locker, dead"
    #: Holds the flock on a lock file that was unlinked from the lock path.
    DELETED_LOCK = "holds the deleted lock file"
    #: Keeps the listening socket open without holding the lock (a forked or exec'ed child).
    LISTENER = "holds the listening socket"


class PathKind(StrEnum):
    """What ``lstat`` found at a path."""

    MISSING = "missing"
    SOCKET = "socket"
    REGULAR = "regular file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    SPECIAL = "special file"


class AnswerOutcome(StrEnum):
    """What became of the probe's ``list-commands``."""

    #: Not sent: nothing at the socket path is a socket.
    NOT_ASKED = "not-asked"
    ANSWERED = "answered"
    #: Something complete came back, but not in Kea's words: a server reads the socket all the same.
    BAD_REPLY = "bad-reply"
    REFUSED = "refused"
    ABSENT = "absent"
    TIMEOUT = "timeout"
    TRUNCATED = "truncated"
    PERMISSION = "permission"
    ERROR = "error"


@dataclass(frozen=True)
class Answer:
    """The probe's ``list-commands``: its outcome, how long an answer took, and the error's words."""

    outcome: AnswerOutcome
    elapsed_ms: float | None = None
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.outcome in {AnswerOutcome.ANSWERED, AnswerOutcome.BAD_REPLY}


@dataclass(frozen=True)
class Progress:
    """Whether the owner worked while the probe waited for an answer that did not come.

    Attributes:
        pid: the process watched (the recorded owner, or else the pid holding the lock).
        cpu_ms: CPU time all its threads used during the wait, in milliseconds (0 when it did nothing).
        state: its state letter at the end of the wait (``T``: stopped).
        waited_ms: how long the probe waited.
    """

    pid: int
    cpu_ms: float
    state: str
    waited_ms: float

    @property
    def frozen(self) -> bool:
        """No evidence of progress: stopped, or no CPU time used while a connection waited."""
        return self.state in {"T", "t"} or self.cpu_ms <= 0.0


@dataclass(frozen=True)
class Evidence:
    """Everything :func:`~ctrlsock.probe.evidence.gather_evidence` saw; the judge reads only this.

    Attributes:
        socket_path: the socket path probed.
        lock_path: its lock file.
        timeout: how long the socket was given to answer, in seconds.
        denied: why a path could not be looked at (no permission), or ``""``.
        missing_directory: the socket's directory when it does not exist.
        socket_kind: what is at the socket path.
        socket_uid: the socket file's owner, when it is a socket.
        socket_owner: that owner in words.
        euid: the effective uid of the probe.
        directory_warning: why cleanup would refuse the socket's directory, or ``""``.
        lock_kind: what is at the lock path.
        held: some process holds the ``flock`` on the lock path.
        lock_holders: who holds it, from the kernel (``/proc/locks``, then fdinfo).
        scanned: ``lock_holders`` come from a look at every process (else only at the pids the kernel
            names, which cannot see inherited descriptors).
        record: the holder record in the lock file.
        verdict: what the record is worth now.
        record_unreadable: the lock file may not be read by us.
        record_error: why reading it failed otherwise, or ``""``.
        foreign_bytes: the size of a lock file whose content is not a record of ours (0 otherwise).
        answer: the probe's ``list-commands``.
        progress: CPU evidence about the owner, when it did not answer within the timeout.
        deleted_lock_holders: live processes holding the flock on a lock file unlinked from the path.
        deleted_records: the holder record in each one's deleted lock file, by pid.
        listeners: listening sockets bound to the socket path or its temporary bind name, {inode: name}.
        owner_listens: the owner (recorded, or the process holding the lock) has one of ``listeners`` open.
        listener_holders: processes with one of ``listeners`` open, when a look at every process was
            needed (nobody answering).
    """

    socket_path: Path
    lock_path: Path
    timeout: float
    denied: str = ""
    missing_directory: Path | None = None
    socket_kind: PathKind = PathKind.MISSING
    socket_uid: int | None = None
    socket_owner: str = ""
    euid: int = 0
    directory_warning: str = ""
    lock_kind: PathKind = PathKind.MISSING
    held: bool = False
    lock_holders: tuple[LockHolder, ...] = ()
    scanned: bool = False
    record: HolderRecord | None = None
    verdict: RecordVerdict | None = None
    record_unreadable: bool = False
    record_error: str = ""
    foreign_bytes: int = 0
    answer: Answer = Answer(AnswerOutcome.NOT_ASKED)
    progress: Progress | None = None
    deleted_lock_holders: tuple[LockHolder, ...] = ()
    deleted_records: dict[int, HolderRecord] = field(default_factory=dict)
    listeners: dict[int, str] = field(default_factory=dict)
    owner_listens: bool = False
    listener_holders: tuple[ProcessInfo, ...] = ()


@dataclass
class Holder:
    """A process the probe found holding the lock or the listening socket, or named by the record.

    Attributes:
        pid: the process id (in this PID namespace, except for a record from another namespace).
        program: its command name, from ``/proc`` or else from the record; ``None`` when unknown.
        alive: it exists and is not a zombie (a stopped process is alive).
        status: running, stopped (SIGSTOP), zombie, dead, or unknown for a process we cannot see (another
            PID namespace, or a record we cannot check).
        how: how it is tied to the socket (:class:`HolderHow`).
        since: when it started, as unix time, if known.
        start_time: its start in clock ticks since boot, if known: with ``pid`` it names exactly one
            process, which :func:`ctrlsock.recover.terminate_holders` checks before signalling.
        holds_lock: it keeps the kernel lock alive through a descriptor (the recorded owner alone does not).
        holds_socket: it keeps the listening socket open without holding the lock (a forked child).
        frozen: whether it made progress while the probe waited for an answer: ``True`` when it is stopped
            or used no CPU time, ``False`` when it worked (a busy daemon: never signal it), ``None`` when
            not measured (it answered, or it was not the process watched).
    """

    pid: int
    program: str | None
    alive: bool
    status: ProcessStatus
    how: HolderHow
    since: float | None = None
    start_time: int | None = None
    holds_lock: bool = False
    holds_socket: bool = False
    frozen: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "program": self.program,
            "alive": self.alive,
            "how": self.how.value,
            "status": self.status.value,
            "since": self.since,
        }


@dataclass
class ProbeReport:
    """Everything a probe found about one socket path.

    Attributes:
        socket_path: the socket path probed.
        lock_path: its lock file, ``<socket>.lock``.
        state: the verdict.
        holders: processes holding the lock (first), then the recorded owner if it holds nothing, then
            processes keeping the listening socket without the lock.
        record: the holder record read from the lock file, if any (Kea writes none).
        answer_ms: how long a real ``list-commands`` took to be answered, or ``None`` if nothing answered.
        problems: each disagreement between the kernel lock, the record and the socket, and anything an
            admin should know (a slow answer, a missing directory), in one plain sentence each.
    """

    socket_path: Path
    lock_path: Path
    state: State
    holders: list[Holder] = field(default_factory=list)
    record: HolderRecord | None = None
    answer_ms: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def lock_holders(self) -> list[Holder]:
        """The live processes that keep the kernel lock or the listening socket (what ``--terminate-holders``
        considers); each one's ``frozen`` says whether it was seen making progress."""
        return [
            holder for holder in self.holders if (holder.holds_lock or holder.holds_socket) and holder.alive
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "socket": str(self.socket_path),
            "lock": str(self.lock_path),
            "state": self.state.value,
            "holders": [holder.to_json() for holder in self.holders],
            "record": dataclasses.asdict(self.record) if self.record is not None else None,
            "answer_ms": self.answer_ms,
            "problems": list(self.problems),
        }
