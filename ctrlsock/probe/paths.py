"""Probe one socket path, or several (a directory stands for every socket in it)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ctrlsock.names import LOCK_SUFFIX, lock_path_for
from ctrlsock.probe.evidence import gather_evidence
from ctrlsock.probe.judge import holders_from, judge
from ctrlsock.probe.model import Evidence, ProbeReport, State
from ctrlsock.procfs import is_flock_held
from ctrlsock.record import read_record

__all__ = ["probe", "probe_paths", "report_from"]


def report_from(evidence: Evidence) -> ProbeReport:
    """The report for ``evidence``: the judge's verdict with the holders and the record."""
    state, problems = judge(evidence)
    answer = evidence.answer
    return ProbeReport(
        socket_path=evidence.socket_path,
        lock_path=evidence.lock_path,
        state=state,
        holders=holders_from(evidence),
        record=evidence.record,
        answer_ms=round(answer.elapsed_ms or 0.0, 3) if answer.answered else None,
        problems=problems,
    )


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
    evidence = gather_evidence(socket_path, timeout)
    report = report_from(evidence)
    if report.state is State.FOREIGN and not evidence.held and is_flock_held(evidence.lock_path):
        # The lock was free when we looked and is held now: a daemon started while we probed (it takes the
        # lock before it binds). Look again rather than report a disagreement that was only our timing.
        report = report_from(gather_evidence(socket_path, timeout))
    return report


def _guards_a_socket(lock_path: Path, guarded: Path) -> bool:
    """Whether ``lock_path`` is the lock of a control socket at ``guarded``, as far as a scan can tell.

    Other programs keep ``*.lock`` files too (Kea's logger takes kea.log.lock in /run/kea; Cargo.lock,
    yarn.lock, flake.lock): a lock counts only when ``guarded`` is a socket, or is missing and the lock
    file is empty (Kea's) or holds our record (a crashed daemon's).
    """
    try:
        return stat.S_ISSOCK(os.lstat(guarded).st_mode)
    except FileNotFoundError:
        pass
    except OSError:
        return True  # not ours to look at: the probe reports it (unknown)
    try:
        if os.lstat(lock_path).st_size == 0:
            return True
        record = read_record(lock_path)
    except PermissionError:
        return True
    except OSError:
        return False
    return record is not None and record.version >= 1


def _socket_paths_in(directory: Path) -> list[Path]:
    found: set[Path] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.name.endswith(LOCK_SUFFIX) and len(entry.name) > len(LOCK_SUFFIX):
                guarded = path.with_name(entry.name[: -len(LOCK_SUFFIX)])
                if _guards_a_socket(path, guarded):
                    found.add(guarded)
                continue
            try:
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    found.add(path)
            except OSError:
                continue
    return sorted(found)


def _directory_report(directory: Path, state: State, problem: str) -> ProbeReport:
    return ProbeReport(
        socket_path=directory, lock_path=lock_path_for(directory), state=state, problems=[problem]
    )


def probe_paths(paths: Sequence[Path], *, timeout: float = 1.0) -> list[ProbeReport]:
    """Probe several socket paths; a directory means every socket and every ``*.lock`` in it.

    A path ending in ``.lock`` that is not a socket names the lock file: its socket path is probed.

    Args:
        paths: socket paths, lock files or directories.
        timeout: per socket, how long it gets to answer.

    Returns:
        At least one report per path given, in the order given (a directory's sorted by name). A directory
        we may not list gives one ``unknown`` report for the directory itself; a directory without sockets
        one ``stopped`` report saying so.
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
                    _directory_report(
                        path, State.UNKNOWN, f"permission denied: cannot list the directory {path}"
                    )
                )
                continue
            except OSError as error:
                reports.append(
                    _directory_report(
                        path, State.UNKNOWN, f"cannot list the directory {path}: {error.strerror}"
                    )
                )
                continue
            if not targets:
                reports.append(_directory_report(path, State.STOPPED, f"no control sockets in {path}"))
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
