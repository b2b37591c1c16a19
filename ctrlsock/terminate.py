"""Ending the processes that keep a stuck lock: the only code in ctrlsock that signals a process.

Only processes the probe named as really keeping the lock or the listening socket are candidates, and only
when the state is ``stuck``. Of those, a process that keeps the lock through a descriptor it inherited (Kea's
``kea-lfc``) is a bystander that may be stopped, as is a forked child that kept the listening socket. The
daemon itself (the recorded owner, or the process that took the lock) may be busy rather than hung, for
example while it writes a huge reply to slow readers; it is signalled only on proof that it is frozen: a
stopped state (``T``), or no CPU time used while the probe's connection waited (``Holder.frozen``). Each
process is addressed through a pidfd opened before it is checked again, so a pid reused meanwhile is never
signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path
from typing import Final

from ctrlsock.holder_words import who as holder_who
from ctrlsock.probe import Holder, HolderHow, ProbeReport, State, probe
from ctrlsock.procfs import ProcessStatus, read_process
from ctrlsock.recover import Action, ActionKind

__all__ = ["terminate_holders"]

#: After SIGKILL, how long to wait for a holder to exit before reporting it as unkillable (a process in
#: uninterruptible sleep, ``D``, dies only when its I/O returns).
KILL_WAIT: Final = 5.0


def _refused(path: Path, reason: str, pid: int | None = None) -> Action:
    return Action(path, False, ActionKind.REFUSED, reason, pid)


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


#: Processes that keep the lock or the listening socket without being the daemon: a child that inherited
#: the lock descriptor (Kea's ``kea-lfc``), or a forked worker that kept the listening socket.
_BYSTANDERS: Final = frozenset({HolderHow.INHERITED_DESCRIPTOR, HolderHow.LISTENER})


def _proven_frozen(holder: Holder) -> bool:
    return holder.frozen is True or holder.status is ProcessStatus.STOPPED


def _why_spared(holder: Holder) -> str | None:
    """Why ``holder`` is never signalled, or None when it may be."""
    if holder.pid in {1, os.getpid()}:
        return "is never signalled"
    if holder.how in _BYSTANDERS or _proven_frozen(holder):
        return None
    return (
        "is the daemon that owns the lock, alive and not proven frozen: it may be busy rather than hung, "
        "so it is never signalled (stop it through its service manager)"
    )


def _still_same(holder: Holder) -> str | None:
    """Why ``holder`` must not be signalled now, or None when it is still the process the probe saw."""
    process = read_process(holder.pid)
    if process is None or process.is_zombie:
        return "it has exited already"
    if holder.start_time is not None and process.start_time != holder.start_time:
        return f"pid {holder.pid} now names another process (start time differs)"
    if holder.how not in _BYSTANDERS and holder.frozen is not True and not process.is_stopped:
        return "it was continued and runs again"
    return None


def _signal_each(
    lock_path: Path, targets: list[Holder], *, dry_run: bool
) -> tuple[list[Action], dict[int, int]]:
    """SIGTERM and SIGCONT each target that may be signalled; their pidfds, and an action for the rest."""
    actions: list[Action] = []
    pidfds: dict[int, int] = {}
    for holder in targets:
        who = holder_who(holder.pid, holder.program)
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

    Only processes the probe named as really keeping the lock or the listening socket are signalled, and
    only when the state is ``stuck``: a process that inherited the lock descriptor, a forked child that kept
    the listening socket, or the daemon itself when it is proven frozen (stopped, or no CPU time used while
    the probe waited). A live daemon that is merely slow, a recorded owner that holds nothing, pid 1 and
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
    words = {h.pid: holder_who(h.pid, h.program) for h in targets}
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
