"""``--terminate-holders`` never signals a live daemon that is busy rather than hung.

The daemon here is real: it holds the lock with its record, listens, and keeps a CPU busy without ever
answering, as one does while it builds a huge reply. The probe sees a lock held and no answer in time; only
proof that the daemon is frozen (stopped) may let it be signalled.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.lock import lock_path_for
from ctrlsock.probe import State, probe
from ctrlsock.recover import ActionKind
from ctrlsock.terminate import terminate_holders
from tests.children.cli_support import run_cli
from tests.children.safety_support import fingerprints
from tests.support import Child, process_state, wait_for_state

TIMEOUT = 0.3


@pytest.fixture
def busy_daemon(sock_path: Path) -> Iterator[Child]:
    with Child("safety_daemon.py", "busy", sock_path) as child:
        child.expect_ready()
        yield child


def test_terminate_holders_never_signals_a_busy_daemon(sock_path: Path, busy_daemon: Child) -> None:
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.RUNNING, report.problems  # busy: it used CPU time while we waited
    [daemon] = [h for h in report.holders if h.pid == busy_daemon.pid]
    assert daemon.frozen is False
    assert [action.what for action in terminate_holders(report, grace=1.0)] == [ActionKind.REFUSED]

    # Even a report that calls it stuck without proof that it is frozen signals nobody.
    report.state, daemon.frozen = State.STUCK, None
    actions = terminate_holders(report, grace=1.0, timeout=TIMEOUT)

    assert [(a.what, a.pid) for a in actions if a.pid is not None] == [(ActionKind.REFUSED, busy_daemon.pid)]
    assert "busy rather than hung" in actions[0].reason
    assert busy_daemon.process.poll() is None
    assert process_state(busy_daemon.pid) not in {"T", "Z", None}


def test_cleanup_terminate_holders_yes_leaves_a_busy_daemon_alone(
    sock_path: Path, busy_daemon: Child
) -> None:
    files = [sock_path, lock_path_for(sock_path)]
    before = fingerprints(files)

    dry = run_cli("cleanup", "--terminate-holders", "--dry-run", sock_path)
    real = run_cli("cleanup", "--terminate-holders", "--yes", "--json", sock_path)

    assert "would terminate" not in dry.stdout
    assert busy_daemon.process.poll() is None, "the busy daemon was signalled"
    assert real.returncode != 0
    [document] = json.loads(real.stdout)
    refusals = [a for a in document["actions"] if a["pid"] == busy_daemon.pid]
    assert refusals and all(a["what"] == "refused" for a in refusals)
    assert fingerprints(files) == before


def test_a_frozen_daemon_may_still_be_terminated(sock_path: Path, busy_daemon: Child) -> None:
    busy_daemon.process.send_signal(signal.SIGSTOP)
    wait_for_state(busy_daemon.pid, "T")
    report = probe(sock_path, timeout=TIMEOUT)
    actions = terminate_holders(report, grace=5.0, timeout=TIMEOUT)
    assert [(a.pid, a.what) for a in actions] == [(busy_daemon.pid, ActionKind.TERMINATED)]
    assert busy_daemon.process.wait(timeout=10) == -signal.SIGTERM
