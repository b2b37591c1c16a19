"""Read-only diagnosis of a control socket path: who holds its lock, and does anything answer.

A probe never takes the lock and never writes a byte to any file: taking the lock even briefly can make a
starting daemon fail (DESIGN.md section 3), and a status check that changed what it looks at would destroy
the evidence an admin needs. It cross-checks three independent signals and names every disagreement:

- the kernel lock: ``flock`` is kernel truth, a dead process holds none. ``/proc/locks`` names the pid that
  took it (even after that pid died), ``/proc/*/fdinfo`` and ``/proc/*/fd`` find every process that still
  keeps it through an inherited descriptor (``ctrlsock.procfs``);
- the holder record in the lock file (``ctrlsock.lock``): is the recorded pid alive, the same process
  (start time), from this boot and this PID namespace? Kea writes no record: an empty file is normal;
- a real ``list-commands`` on the socket within a timeout: ``connect()`` alone proves nothing, since a
  child that inherited a killed daemon's listening socket accepts connections and never answers.

States (issue 2): ``running`` lock held and the socket answers; ``stopped`` nothing held and nothing left
behind (or a cleared record); ``stale`` nobody holds the lock but a socket file or a dead owner's record is
left (a crash: always recoverable by taking the lock); ``stuck`` the lock is held but nothing answers;
``foreign`` the path is occupied by something that is not ours to judge (a regular file, a directory, a
symlink, another user's orphaned socket, a server that answers while nobody holds the lock); ``unknown``
we lack the permission to tell.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

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
)
from ctrlsock.holder_words import condition_words, owner_words, who
from ctrlsock.names import LOCK_SUFFIX, lock_path_for
from ctrlsock.procfs import (
    HOW_INHERITED,
    HOW_LOCKER,
    HOW_ORIGINAL_LOCKER_CLOSED,
    HOW_ORIGINAL_LOCKER_DEAD,
    LockHolder,
    ProcessInfo,
    find_lock_holders,
    is_flock_held,
)
from ctrlsock.record import DOUBTFUL_STATUSES, HolderRecord, RecordStatus, judge_record, read_record

__all__ = ["Holder", "ProbeReport", "State", "probe", "probe_paths"]

#: The command a probe sends: every Kea daemon and every ctrlsock server has it, and it changes nothing.
PROBE_COMMAND: Final = "list-commands"

#: ``Holder.how`` values, in plain words.
HOW_RECORDED: Final = "recorded owner"
HOW_RECORDED_AND_LOCKER: Final = "recorded owner, holds the lock"
HOW_LOCK_OWNER: Final = "lock owner"
HOW_INHERITED_DESCRIPTOR: Final = "inherited descriptor"
HOW_ORIGINAL_DEAD: Final = "original locker, dead"
HOW_ORIGINAL_CLOSED: Final = "original locker, closed its descriptor"
HOW_RECORDED_ORIGINAL_DEAD: Final = "recorded owner, original locker, dead"

_HOW_WORDS: Final = {
    HOW_LOCKER: HOW_LOCK_OWNER,
    HOW_INHERITED: HOW_INHERITED_DESCRIPTOR,
    HOW_ORIGINAL_LOCKER_DEAD: HOW_ORIGINAL_DEAD,
    HOW_ORIGINAL_LOCKER_CLOSED: HOW_ORIGINAL_CLOSED,
}


class State(StrEnum):
    """What a socket path is in; see the module docstring for the exact definitions."""

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


@dataclass
class Holder:
    """A process the probe found holding the lock, or named by the record.

    Attributes:
        pid: the process id (in this PID namespace, except for a record from another namespace).
        program: its command name, from ``/proc`` or else from the record; ``None`` when unknown.
        alive: it exists and is not a zombie (a stopped process is alive).
        status: ``"running"``, ``"stopped"`` (SIGSTOP), ``"zombie"``, ``"dead"``, or ``"unknown"`` for a
            record from another PID namespace, which we cannot see.
        how: plain words: ``"lock owner"``, ``"inherited descriptor"``, ``"recorded owner"``,
            ``"recorded owner, holds the lock"``, ``"original locker, dead"``...
        since: when it started, as unix time, if known.
        start_time: its start in clock ticks since boot, if known: with ``pid`` it names exactly one
            process, which :func:`ctrlsock.recover.terminate_holders` checks before signalling.
        holds_lock: it keeps the kernel lock alive through a descriptor (the recorded owner alone does not).
    """

    pid: int
    program: str | None
    alive: bool
    status: str
    how: str
    since: float | None = None
    start_time: int | None = None
    holds_lock: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "program": self.program,
            "alive": self.alive,
            "how": self.how,
            "status": self.status,
            "since": self.since,
        }


@dataclass
class ProbeReport:
    """Everything a probe found about one socket path.

    Attributes:
        socket_path: the socket path probed.
        lock_path: its lock file, ``<socket>.lock``.
        state: the verdict.
        holders: processes holding the lock (first), then the recorded owner if it holds nothing.
        record: the holder record read from the lock file, if any (Kea writes none).
        answer_ms: how long a real ``list-commands`` took to be answered, or ``None`` if nothing answered.
        problems: each disagreement between the kernel lock, the record and the socket, in one plain sentence.
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
        """Only the processes that really keep the kernel lock (what ``--terminate-holders`` may signal)."""
        return [holder for holder in self.holders if holder.holds_lock and holder.alive]

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


# --- small facts --------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _lstat(path: Path) -> os.stat_result | None:
    """``lstat`` or None when absent; PermissionError propagates (the caller reports ``unknown``)."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _process_status(process: ProcessInfo | None) -> tuple[bool, str]:
    if process is None:
        return False, "dead"
    if process.is_zombie:
        return False, "zombie"
    if process.is_stopped:
        return True, "stopped"
    return True, "running"


# --- the three signals --------------------------------------------------------------------------------


@dataclass
class _Answer:
    outcome: str  # "answered" "refused" "absent" "timeout" "truncated" "bad-reply" "permission" "error"
    elapsed_ms: float | None = None
    detail: str = ""


def _ask(socket_path: Path, timeout: float) -> _Answer:
    started = time.monotonic()
    try:
        send_command(socket_path, PROBE_COMMAND, timeout=timeout)
    except SocketNotFoundError:
        return _Answer("absent")
    except ServerRefusedError:
        return _Answer("refused")
    except SocketPermissionError as error:
        return _Answer("permission", detail=str(error))
    except ClientTimeoutError as error:
        return _Answer("timeout", detail=str(error))
    except TruncatedReplyError as error:
        return _Answer("truncated", detail=str(error))
    except BadReplyError as error:
        # Something complete came back: a server answers, though not in Kea's words.
        return _Answer("bad-reply", (time.monotonic() - started) * 1000.0, str(error))
    except (ClientError, SocketPathTooLongError) as error:
        return _Answer("error", detail=str(error))
    except OSError as error:  # anything the client did not translate
        return _Answer("error", detail=os.strerror(error.errno) if error.errno else str(error))
    # Any reply counts, whatever its result: an "unsupported" still proves a live server reads the socket.
    return _Answer("answered", (time.monotonic() - started) * 1000.0)


def _holders_from_kernel(lock_holders: list[LockHolder]) -> list[Holder]:
    holders = []
    for found in lock_holders:
        alive, status = _process_status(found.process)
        process = found.process
        holders.append(
            Holder(
                pid=found.pid,
                program=process.program if process is not None else None,
                alive=alive,
                status=status,
                how=_HOW_WORDS.get(found.how, found.how),
                since=process.started_at if process is not None else None,
                start_time=process.start_time if process is not None else None,
                holds_lock=found.how in {HOW_LOCKER, HOW_INHERITED} and alive,
            )
        )
    return holders


def _recorded_holder(record: HolderRecord) -> tuple[Holder, bool, str]:
    """(the recorded owner, whether it is the same live process, why the record is doubted or "").

    A dead or zombie owner is a plain fact, not a doubt; a reused pid, another boot or another PID
    namespace means the record cannot be checked against this system's processes.
    """
    verdict = judge_record(record)
    if verdict.trusted:
        alive, status = _process_status(verdict.process)
    elif verdict.status in {RecordStatus.OTHER_NAMESPACE, RecordStatus.UNKNOWN}:
        # Not visible from here: it may well be alive (in a container, or hidden by hidepid).
        alive, status = verdict.alive, "unknown"
    else:
        # Dead, another boot, or the pid now names another process: the recorded process itself is gone.
        alive, status = False, "dead"
    process = verdict.process if verdict.trusted else None
    holder = Holder(
        pid=record.pid,
        program=record.program or (process.program if process is not None else None),
        alive=alive,
        status=status,
        how=HOW_RECORDED,
        since=record.started_at or None,
        start_time=record.start_time,
    )
    doubt = verdict.reason if verdict.status in DOUBTFUL_STATUSES else ""
    return holder, verdict.trusted, doubt


# --- the verdict --------------------------------------------------------------------------------------


def probe(socket_path: Path, *, timeout: float = 1.0) -> ProbeReport:
    """Look at a socket path and say what state it is in, with evidence.

    Never takes the lock, never writes to any file, never signals a process. It does connect to the
    socket and send ``list-commands``, which changes nothing in a Kea or ctrlsock daemon.

    Args:
        socket_path: the control socket path (its lock file is ``<socket>.lock``).
        timeout: how long the socket gets to answer ``list-commands``, in seconds.

    Returns:
        The report; ``state`` is ``unknown`` (with the reason in ``problems``) when we lack the
        permission to tell, never an exception.
    """
    socket_path = Path(socket_path)
    report = _probe_once(socket_path, timeout)
    if report.state is State.FOREIGN and not report.holders and is_flock_held(report.lock_path):
        # The lock was free when we looked and is held now: a daemon started while we probed (it takes the
        # lock before it binds). Look again rather than report a disagreement that was only our timing.
        report = _probe_once(socket_path, timeout)
    return report


def _probe_once(socket_path: Path, timeout: float) -> ProbeReport:
    lock_path = lock_path_for(socket_path)
    report = ProbeReport(socket_path=socket_path, lock_path=lock_path, state=State.UNKNOWN)
    problems = report.problems

    # 1. What occupies the two paths (lstat: a symlink is judged as itself, never followed).
    try:
        socket_st = _lstat(socket_path)
        lock_st = _lstat(lock_path)
    except PermissionError as error:
        problems.append(f"no permission to look at {error.filename or socket_path.parent}")
        return report

    # 2. The kernel lock, and every process keeping it.
    held = False
    kernel_holders: list[Holder] = []
    if lock_st is not None and stat.S_ISREG(lock_st.st_mode):
        try:
            found = find_lock_holders(lock_path)
            held = bool(found) or is_flock_held(lock_path)
        except PermissionError as error:
            problems.append(f"no permission to read who holds the lock: {error}")
            return report
        kernel_holders = _holders_from_kernel(found)

    # 3. The record (read-only, O_NOFOLLOW); Kea's lock file is empty, which is not a problem.
    record: HolderRecord | None = None
    record_unreadable = False
    unreadable_bytes = 0
    if lock_st is not None and stat.S_ISREG(lock_st.st_mode):
        try:
            record = read_record(lock_path)
        except PermissionError:
            record_unreadable = True
        except OSError as error:
            problems.append(f"cannot read the lock file: {os.strerror(error.errno or errno.EIO)}")
            record_unreadable = True
        if record is None and not record_unreadable and lock_st.st_size > 0:
            unreadable_bytes = lock_st.st_size
    report.record = record

    recorded: Holder | None = None
    record_trusted = False
    record_reason = ""
    if record is not None:
        recorded, record_trusted, record_reason = _recorded_holder(record)
    holders = list(kernel_holders)
    if recorded is not None:
        same = next((h for h in holders if h.pid == recorded.pid and h.holds_lock), None)
        dead_locker = next((h for h in holders if h.pid == recorded.pid and h.how == HOW_ORIGINAL_DEAD), None)
        if same is not None and record_trusted and same.start_time == recorded.start_time:
            same.how = HOW_RECORDED_AND_LOCKER
            # The name the daemon gave itself beats comm ("python3" for every Python daemon).
            same.program = recorded.program or same.program
            recorded = None  # merged: the record and the kernel agree
        elif dead_locker is not None and recorded.status == "dead":
            # One dead process, two witnesses (/proc/locks and the record): list it once.
            dead_locker.how = HOW_RECORDED_ORIGINAL_DEAD
            dead_locker.program = recorded.program or dead_locker.program
            dead_locker.since = recorded.since
            dead_locker.start_time = recorded.start_time
        else:
            holders.append(recorded)
    report.holders = holders
    lockers = [h for h in holders if h.holds_lock]

    # 4. A real command, only where a socket is (never connect through a symlink).
    answer = _Answer("absent")
    if socket_st is not None and stat.S_ISSOCK(socket_st.st_mode):
        answer = _ask(socket_path, timeout)
    if answer.outcome in {"answered", "bad-reply"}:
        report.answer_ms = round(answer.elapsed_ms or 0.0, 3)

    # --- paths that are not ours to judge
    if socket_st is not None and not stat.S_ISSOCK(socket_st.st_mode):
        kind = _kind(socket_st.st_mode)
        problems.append(f"{socket_path} is a {kind}, not a socket; ctrlsock never removes it")
        report.state = State.FOREIGN
        _describe_lock(
            report,
            held=held,
            lockers=lockers,
            recorded=recorded,
            record_reason=record_reason,
        )
        return report
    if lock_st is not None and not stat.S_ISREG(lock_st.st_mode):
        kind = _kind(lock_st.st_mode)
        problems.append(f"{lock_path} is a {kind}, not a lock file; ctrlsock never follows or removes it")
        report.state = State.FOREIGN
        return report

    # --- the lock is held: running or stuck
    if held:
        _describe_lock(
            report,
            held=held,
            lockers=lockers,
            recorded=recorded,
            record_reason=record_reason,
        )
        if answer.outcome in {"answered", "bad-reply"}:
            if answer.outcome == "bad-reply":
                problems.append(f"the socket answers, but not with a Kea-style reply: {answer.detail}")
            report.state = State.RUNNING
            return report
        if answer.outcome == "permission":
            problems.append(f"no permission to connect to {socket_path}, so whether it answers is unknown")
            report.state = State.UNKNOWN
            return report
        report.state = State.STUCK
        problems.append(_silence(answer, socket_path, timeout))
        return report

    # --- nobody holds the lock
    if answer.outcome in {"answered", "bad-reply"}:
        problems.append("a server answers on the socket but nobody holds the lock")
        report.state = State.FOREIGN
        return report
    if answer.outcome == "timeout":
        problems.append(
            f"socket accepts connections but nothing answers within {timeout:g} s, and nobody holds the lock"
        )
        report.state = State.FOREIGN
        return report
    if answer.outcome == "permission":
        problems.append(f"no permission to connect to {socket_path}, so whether a server answers is unknown")
        report.state = State.UNKNOWN
        return report
    if answer.outcome == "truncated":
        problems.append(
            f"something accepts connections on the socket but closes them without a complete reply, "
            f"and nobody holds the lock: {answer.detail}"
        )
        report.state = State.FOREIGN
        return report
    if answer.outcome == "error":
        problems.append(f"connecting to the socket failed: {answer.detail}")
        report.state = State.UNKNOWN
        return report

    leftovers = False
    if socket_st is not None:  # a socket file, and connect() is refused (or it vanished meanwhile)
        if answer.outcome == "refused":
            problems.append("socket file left behind: nobody holds the lock and connect() is refused")
            leftovers = True
        euid = os.geteuid()
        if leftovers and euid not in {socket_st.st_uid, 0}:
            problems.append(f"the socket is owned by {owner_words(socket_st.st_uid)}, not by us")
            report.state = State.FOREIGN
            return report
    if recorded is not None:
        leftovers = True
        if record_reason:
            problems.append(f"a holder record is left behind and not trusted: {record_reason}")
        elif recorded.alive:
            problems.append(
                f"the record names {who(recorded.pid, recorded.program)}, "
                f"which {condition_words(recorded.status)} but does not hold the lock"
            )
        else:
            problems.append(
                f"a holder record is left behind: the recorded owner {who(recorded.pid, recorded.program)} "
                f"{condition_words(recorded.status)}"
            )
    if unreadable_bytes:
        problems.append(
            f"the lock file holds {unreadable_bytes} bytes that are not a holder record we can read"
        )
        leftovers = True
    if not leftovers and record_unreadable:
        problems.append(f"no permission to read {lock_path}, so whether a record is left behind is unknown")
        report.state = State.UNKNOWN
        return report
    report.state = State.STALE if leftovers else State.STOPPED
    return report


def _silence(answer: _Answer, socket_path: Path, timeout: float) -> str:
    if answer.outcome == "timeout":
        return f"socket accepts connections but nothing answers within {timeout:g} s"
    if answer.outcome == "refused":
        return "the lock is held but connect() to the socket is refused: nothing listens on it"
    if answer.outcome == "absent":
        return f"the lock is held but there is no socket at {socket_path}"
    if answer.outcome == "truncated":
        return f"the socket closed the connection before a complete reply: {answer.detail}"
    return f"connecting to the socket failed: {answer.detail}"


def _describe_lock(
    report: ProbeReport,
    *,
    held: bool,
    lockers: list[Holder],
    recorded: Holder | None,
    record_reason: str,
) -> None:
    """Name who keeps the lock and every way that disagrees with the record."""
    problems = report.problems
    if not held:
        return
    dead_original = next(
        (
            h
            for h in report.holders
            if h.how in {HOW_ORIGINAL_DEAD, HOW_ORIGINAL_CLOSED, HOW_RECORDED_ORIGINAL_DEAD}
        ),
        None,
    )
    # Why the original owner is not the one holding it: the record says so first, else /proc/locks.
    if recorded is not None and not recorded.alive:
        gone = f"the recorded owner {who(recorded.pid, recorded.program)} {condition_words(recorded.status)}"
    elif dead_original is not None:
        verb = "closed its descriptor" if dead_original.how == HOW_ORIGINAL_CLOSED else "is dead"
        gone = f"the original locker {who(dead_original.pid, dead_original.program)} {verb}"
    else:
        gone = ""
    if not lockers:
        problems.append(
            "the lock is held but no process holding it can be seen "
            "(another PID namespace, or no permission to read /proc)"
        )
    owner_alive = any(h.how != HOW_INHERITED_DESCRIPTOR for h in lockers)
    for holder in lockers:
        if holder.how == HOW_INHERITED_DESCRIPTOR:
            named = who(holder.pid, holder.program)
            stopped = " and is stopped (SIGSTOP)" if holder.status == "stopped" else ""
            if owner_alive:
                # Not wrong yet, but it would keep the lock (and the socket) if the owner died.
                problems.append(f"{named} also holds the lock through an inherited descriptor{stopped}")
                continue
            sentence = f"lock held by {named}, which inherited it{stopped}"
            problems.append(f"{sentence}; {gone}" if gone else sentence)
        elif holder.status == "stopped":
            problems.append(f"lock held by {who(holder.pid, holder.program)}, which is stopped (SIGSTOP)")
    if recorded is not None:
        if record_reason:
            problems.append(f"the holder record is not trusted: {record_reason}")
        elif recorded.alive:
            problems.append(
                f"the record names {who(recorded.pid, recorded.program)}, "
                f"which {condition_words(recorded.status)} but does not hold the lock"
            )
        elif not any(h.how == HOW_INHERITED_DESCRIPTOR for h in lockers) and lockers:
            names = ", ".join(who(h.pid, h.program) for h in lockers)
            problems.append(f"lock held by {names}; {gone}")


# --- scanning -----------------------------------------------------------------------------------------


def _is_socket_or_missing(path: Path) -> bool:
    """False only when ``path`` is known to be something other than a socket."""
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return True  # missing, or not ours to look at: the probe reports it (stale or unknown)


def _socket_paths_in(directory: Path) -> list[Path]:
    found: set[Path] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.name.endswith(LOCK_SUFFIX) and len(entry.name) > len(LOCK_SUFFIX):
                guarded = path.with_name(entry.name[: -len(LOCK_SUFFIX)])
                # Other programs keep locks beside their files in the same directories (Kea's logger takes
                # kea.log.lock in /run/kea): a lock whose path names an existing non-socket guards that
                # file, not a control socket. Only a missing path (a crashed daemon's) or a socket counts.
                if _is_socket_or_missing(guarded):
                    found.add(guarded)
                continue
            try:
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    found.add(path)
            except OSError:
                continue
    return sorted(found)


def probe_paths(paths: Sequence[Path], *, timeout: float = 1.0) -> list[ProbeReport]:
    """Probe several socket paths; a directory means every socket and every ``*.lock`` in it.

    A path ending in ``.lock`` that is not a socket names the lock file: its socket path is probed.

    Args:
        paths: socket paths, lock files or directories.
        timeout: per socket, how long it gets to answer.

    Returns:
        One report per socket path, in the order given (a directory's sorted by name). A directory
        we may not list gives one ``unknown`` report for the directory itself.
    """
    reports: list[ProbeReport] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        targets: list[Path]
        try:
            st = os.lstat(path)
            is_directory = stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and path.is_dir())
        except OSError:
            st, is_directory = None, False
        if is_directory:
            try:
                targets = _socket_paths_in(path)
            except PermissionError:
                reports.append(
                    ProbeReport(
                        socket_path=path,
                        lock_path=lock_path_for(path),
                        state=State.UNKNOWN,
                        problems=[f"no permission to list the directory {path}"],
                    )
                )
                continue
        elif (
            path.name.endswith(LOCK_SUFFIX)
            and len(path.name) > len(LOCK_SUFFIX)
            and (st is None or not stat.S_ISSOCK(st.st_mode))
        ):
            targets = [path.with_name(path.name[: -len(LOCK_SUFFIX)])]
        else:
            targets = [path]
        for target in targets:
            if target in seen:
                continue
            seen.add(target)
            reports.append(probe(target, timeout=timeout))
    return reports
