"""The holder record written into a socket's lock file, and how much it is worth now.

The kernel lock is the truth (a dead process holds no ``flock``); the record says who took it and is
judged, never trusted blindly: a reused pid is caught by its start time, a record from before a reboot by
the boot id, one from another container by the PID-namespace inode. A record without a start time names
a pid, not a process, and is never taken for whatever process has that pid now.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ctrlsock.procfs import ProcessInfo, current_boot_id, current_pid_namespace, read_process

__all__ = [
    "MAX_RECORD_SIZE",
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "HolderRecord",
    "RecordStatus",
    "RecordVerdict",
    "is_holder_record",
    "judge_record",
    "read_record",
    "read_record_through",
]

#: The ``format`` key that marks a record as ours; a JSON file without it is foreign and ignored.
RECORD_FORMAT: Final = "ctrlsock-holder"
#: Version 1: the fields of :class:`HolderRecord`. Readers accept any version and read what they can.
RECORD_VERSION: Final = 1
#: Readers never read more than this; a record is a few hundred bytes.
MAX_RECORD_SIZE: Final = 64 * 1024

# Largest pid Linux can hand out is 2**22; anything beyond a C int cannot be passed to kill().
_MAX_PID: Final = 2**31 - 1


@dataclass(frozen=True)
class HolderRecord:
    """Who took the lock, as written into the lock file while holding it.

    Fields a record did not carry (an older or newer version) read as ``0``/``""``/``0.0``: unknown.

    Attributes:
        version: the record format version (``RECORD_VERSION`` when we wrote it; 0 for a bare pid).
        pid: the holder's pid, in its PID namespace.
        start_time: the holder's start time in clock ticks since boot (``/proc/PID/stat`` field 22).
        boot_id: ``/proc/sys/kernel/random/boot_id`` when the lock was taken.
        pid_namespace: the inode of the holder's PID namespace.
        hostname: the node name.
        program: the daemon's program name.
        socket_path: the socket path the lock guards.
        started_at: unix time the lock was taken.
        stopping_since: unix time the holder began a clean stop (``0.0`` while it serves): a daemon
            draining its connections holds the lock without a socket, and must not be taken for stuck.
    """

    version: int
    pid: int
    start_time: int = 0
    boot_id: str = ""
    pid_namespace: int = 0
    hostname: str = ""
    program: str = ""
    socket_path: str = ""
    started_at: float = 0.0
    stopping_since: float = 0.0

    def encode(self) -> bytes:
        """One line of JSON, keys in a fixed order, ending in a newline."""
        document = {
            "format": RECORD_FORMAT,
            "version": self.version,
            "pid": self.pid,
            "start_time": self.start_time,
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "hostname": self.hostname,
            "program": self.program,
            "socket_path": self.socket_path,
            "started_at": self.started_at,
            "stopping_since": self.stopping_since,
        }
        # ensure_ascii: a path decoded with surrogateescape survives as \\udcXX escapes.
        return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> HolderRecord | None:
        """Read a record from a lock file's bytes; never raises.

        Accepts our JSON record of any version (unknown keys are ignored, missing or ill-typed ones read
        as unknown) and a bare decimal pid, as many pid files hold (version 0). Bytes after the first
        JSON document are ignored: a reader racing a writer may see a new record followed by the tail
        of a longer old one, before the writer truncates.

        Returns:
            The record, or ``None`` for an empty file (Kea's lock files are empty), a cleared record,
            a foreign or malformed file, or a record without a usable pid.
        """
        if len(data) > MAX_RECORD_SIZE:
            data = data[:MAX_RECORD_SIZE]
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
        if not text:
            return None
        if text.isascii() and text.isdigit():
            pid = int(text) if len(text) <= 10 else 0
            return cls(version=0, pid=pid) if 0 < pid <= _MAX_PID else None
        try:
            document, _ = json.JSONDecoder().raw_decode(text)
        except (ValueError, RecursionError):
            # ValueError covers malformed JSON and integers beyond sys.get_int_max_str_digits();
            # json raises RecursionError, not ValueError, on deep nesting.
            return None
        if not isinstance(document, dict) or document.get("format") != RECORD_FORMAT:
            return None
        version = _int_field(document, "version", -1)
        pid = _int_field(document, "pid", 0)
        if version < 0 or not 0 < pid <= _MAX_PID:
            return None
        return cls(
            version=version,
            pid=pid,
            start_time=_int_field(document, "start_time", 0),
            boot_id=_str_field(document, "boot_id"),
            pid_namespace=_int_field(document, "pid_namespace", 0),
            hostname=_str_field(document, "hostname"),
            program=_str_field(document, "program"),
            socket_path=_str_field(document, "socket_path"),
            started_at=_float_field(document, "started_at"),
            stopping_since=_float_field(document, "stopping_since"),
        )

    @classmethod
    def for_current_process(cls, socket_path: Path | str, program: str | None = None) -> HolderRecord:
        """The record this process writes when it takes the lock for ``socket_path``.

        Args:
            socket_path: the socket the lock guards.
            program: the daemon's name; defaults to this process's ``comm`` (or ``argv[0]``'s name).
        """
        pid = os.getpid()
        process = read_process(pid)
        if program is None:
            program = process.program if process is not None else Path(sys.argv[0] or "python").name
        return cls(
            version=RECORD_VERSION,
            pid=pid,
            start_time=process.start_time if process is not None else 0,
            boot_id=current_boot_id(),
            pid_namespace=current_pid_namespace(),
            hostname=os.uname().nodename,
            program=program,
            socket_path=os.fspath(socket_path),
            started_at=time.time(),
        )


def _int_field(document: dict[str, Any], key: str, default: int) -> int:
    value = document.get(key)
    # bool is an int subclass: "pid": true is not a pid.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    return default


def _str_field(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    return value if isinstance(value, str) else ""


def _float_field(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            result = float(value)
            if math.isfinite(result):
                return result
    return 0.0


def is_holder_record(data: bytes) -> bool:
    """Whether a lock file's bytes are a record ctrlsock wrote (version 1 or later): proof the file is ours.

    A bare decimal pid (version 0) is what any pid file holds, and proves nothing. Only a file that is empty
    (Kea's) or holds such a record may ever be written by ctrlsock.
    """
    if len(data) > MAX_RECORD_SIZE:
        return False
    record = HolderRecord.decode(data)
    return record is not None and record.version >= 1


def read_record_through(pid: int, fd: int) -> HolderRecord | None:
    """The holder record in the file process ``pid`` has open as descriptor ``fd`` (even if unlinked).

    Opened read-only through ``/proc/PID/fd/FD``, which reaches the open file itself; never raises.
    """
    try:
        descriptor = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return HolderRecord.decode(os.pread(descriptor, MAX_RECORD_SIZE, 0))
    except OSError:
        return None
    finally:
        os.close(descriptor)


def read_record(lock_path: Path) -> HolderRecord | None:
    """The holder record in ``lock_path``, read without locking or writing anything.

    Opened ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK`` (``O_NONBLOCK``: a lease on the file must not block a
    status check). Never raises because of what the file contains.

    Returns:
        The record, or ``None`` when the file is missing, is a symlink or not a regular file, is empty
        (Kea, or a cleared record) or holds no record of ours.

    Raises:
        PermissionError: the file exists but may not be read by this user (a status check should then
            say "unknown" rather than guess).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:
        # ELOOP: a symlink at the lock path, which we never follow; ENXIO/EWOULDBLOCK: a fifo or a
        # socket, or a lease being broken. None of them holds a record.
        if error.errno in {errno.ELOOP, errno.ENXIO, errno.EWOULDBLOCK, errno.ENOTDIR}:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RECORD_SIZE:
            chunk = os.read(fd, MAX_RECORD_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return HolderRecord.decode(b"".join(chunks))


# --- judging a record -----------------------------------------------------------------------------


class RecordStatus(StrEnum):
    """What the process a record names is now, in one word."""

    RUNNING = "running"
    STOPPED = "stopped"
    ZOMBIE = "zombie"
    DEAD = "dead"
    REUSED = "reused"
    OTHER_BOOT = "other-boot"
    OTHER_NAMESPACE = "other-namespace"
    #: The pid exists but ``/proc`` hides it from us (``hidepid``).
    UNKNOWN = "unknown"
    #: The record has no start time: a live process with that pid cannot be told from a reused pid.
    UNVERIFIABLE = "unverifiable"


#: Statuses that mean "this record cannot be checked here", not "its owner died".
DOUBTFUL_STATUSES: Final = frozenset(
    {
        RecordStatus.REUSED,
        RecordStatus.OTHER_BOOT,
        RecordStatus.OTHER_NAMESPACE,
        RecordStatus.UNKNOWN,
        RecordStatus.UNVERIFIABLE,
    }
)


@dataclass
class RecordVerdict:
    """What a holder record is worth now.

    Attributes:
        record: the record judged.
        trusted: the record's pid names, right now, the very process that wrote it: same boot, same
            PID namespace, same start time, and it exists (possibly stopped or a zombie).
        alive: that process exists and is not a zombie (a stopped process is alive).
        process: what ``/proc`` says about the record's pid now (even when it is a different process).
        reason: plain words, e.g. ``pid 640 is dead``, ``pid 640 was reused (start time differs)``.
        status: one word (:class:`RecordStatus`).
    """

    record: HolderRecord
    trusted: bool
    alive: bool
    process: ProcessInfo | None
    reason: str
    status: RecordStatus


def judge_record(record: HolderRecord) -> RecordVerdict:
    """Decide whether ``record`` still describes a process, and which state it is in.

    ``kill(pid, 0)`` alone would be wrong twice: it succeeds on a zombie, and on an unrelated process
    that reused the pid. So the state letter and the start time come from ``/proc/PID/stat``. A record
    without a start time (a bare pid file, or a writer that could not read its own ``stat``) is never
    trusted for a live process: that pid may have been handed to anything since.
    """
    pid = record.pid
    boot_id = current_boot_id()
    if record.boot_id and boot_id and record.boot_id != boot_id:
        return RecordVerdict(
            record, False, False, None, "record is from another boot", RecordStatus.OTHER_BOOT
        )
    namespace = current_pid_namespace()
    if record.pid_namespace and namespace and record.pid_namespace != namespace:
        return RecordVerdict(
            record, False, False, None, "record is from another PID namespace", RecordStatus.OTHER_NAMESPACE
        )
    process = read_process(pid)
    if process is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return RecordVerdict(record, False, False, None, f"pid {pid} is dead", RecordStatus.DEAD)
        except PermissionError:
            pass
        return RecordVerdict(
            record,
            False,
            True,
            None,
            f"pid {pid} exists but /proc does not show it to us",
            RecordStatus.UNKNOWN,
        )
    if not record.start_time:
        if process.is_zombie:
            return RecordVerdict(
                record,
                False,
                False,
                process,
                f"pid {pid} is a zombie (exited, not yet reaped)",
                RecordStatus.ZOMBIE,
            )
        return RecordVerdict(
            record,
            False,
            True,
            process,
            f"the record has no start time: whether pid {pid} is the process that wrote it cannot be checked",
            RecordStatus.UNVERIFIABLE,
        )
    if process.start_time != record.start_time:
        return RecordVerdict(
            record, False, False, process, f"pid {pid} was reused (start time differs)", RecordStatus.REUSED
        )
    if process.is_zombie:
        return RecordVerdict(
            record,
            True,
            False,
            process,
            f"pid {pid} is a zombie (exited, not yet reaped)",
            RecordStatus.ZOMBIE,
        )
    if process.is_stopped:
        return RecordVerdict(
            record, True, True, process, f"pid {pid} is stopped (SIGSTOP)", RecordStatus.STOPPED
        )
    return RecordVerdict(record, True, True, process, f"pid {pid} is running", RecordStatus.RUNNING)
