"""The probe tells the truth about real daemons, real files and real users: busy is not stuck, a deleted
file is named, forked children that keep the listener are found, and no path is ever left without a report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ctrlsock.lock import HolderRecord, lock_path_for
from ctrlsock.probe import HolderHow, State, probe, probe_paths
from ctrlsock.terminate import terminate_holders
from tests.children.cli_support import run_cli
from tests.support import REPO_DIR, Child, has_exited, kill_foreign, wait_for_state, wait_gone

# Stuck and busy states cost one full timeout each (nothing answers): keep it short.
TIMEOUT = 0.3
# A busy daemon must get CPU time within the window even on a loaded 2-core machine.
BUSY_TIMEOUT = 1.0


def daemon(sock_path: Path, mode: str, *options: str) -> Child:
    return Child("probe_daemon.py", sock_path, mode, *options)


def leave_orphaned_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


# --- busy is not stuck --------------------------------------------------------------------------------


def test_a_busy_daemon_is_running_and_never_offered_for_termination(sock_path: Path) -> None:
    with daemon(sock_path, "busy") as busy:
        busy.expect_ready()
        report = probe(sock_path, timeout=BUSY_TIMEOUT)
        assert report.state is State.RUNNING, report.problems
        [owner] = report.holders
        assert (owner.pid, owner.how, owner.frozen) == (busy.pid, HolderHow.RECORDED_AND_LOCKER, False)
        assert any(
            p.startswith(
                f"busy: pid {busy.pid} (probe_daemon) did not answer within {BUSY_TIMEOUT:g} s but used "
            )
            for p in report.problems
        ), report.problems
        [action] = terminate_holders(report, dry_run=True)
        assert action.what == "refused"
        assert busy.process.poll() is None


def test_a_hung_daemon_that_uses_no_cpu_is_stuck(sock_path: Path) -> None:
    with daemon(sock_path, "idle") as idle:
        idle.expect_ready()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STUCK, report.problems
    assert report.holders[0].frozen is True
    assert f"pid {idle.pid} (probe_daemon) used no CPU time in" in " ".join(report.problems)
    assert [h.pid for h in report.lock_holders] == [idle.pid]


def test_a_stopped_busy_daemon_is_stuck(sock_path: Path) -> None:
    with daemon(sock_path, "busy") as busy:
        busy.expect_ready()
        os.kill(busy.pid, signal.SIGSTOP)
        try:
            wait_for_state(busy.pid, "T")
            report = probe(sock_path, timeout=TIMEOUT)
        finally:
            os.kill(busy.pid, signal.SIGCONT)
    assert report.state is State.STUCK
    assert f"lock held by pid {busy.pid} (probe_daemon), which is stopped (SIGSTOP)" in report.problems


# --- a /tmp cleaner deleted the daemon's files --------------------------------------------------------


def test_a_deleted_lock_file_under_a_healthy_daemon_is_unlinked(sock_path: Path) -> None:
    with daemon(sock_path, "serve") as served:
        served.expect_ready()
        lock_path_for(sock_path).unlink()
        report = probe(sock_path, timeout=5.0)
    assert report.state is State.UNLINKED, report.problems
    assert any(
        f"the lock file {lock_path_for(sock_path)} was deleted while pid {served.pid} (probe_daemon) holds it"
        in p
        for p in report.problems
    ), report.problems
    assert "the socket still answers" in report.problems
    assert [(h.pid, h.how) for h in report.holders] == [(served.pid, HolderHow.DELETED_LOCK)]


def test_a_daemon_that_restored_its_deleted_lock_file_is_running_again(sock_path: Path) -> None:
    with daemon(sock_path, "serve") as served:
        served.expect_ready()
        lock_path_for(sock_path).unlink()
        assert probe(sock_path, timeout=5.0).state is State.UNLINKED
        served.send_line("restore")
        assert served.readline() == "restored True"
        report = probe(sock_path, timeout=5.0)
        assert report.state is State.RUNNING, report.problems
        assert [(h.pid, h.how) for h in report.holders] == [(served.pid, HolderHow.RECORDED_AND_LOCKER)]


@pytest.mark.parametrize("bind_name", [False, True], ids=["bound-in-place", "bound-under-the-bind-name"])
def test_a_deleted_socket_under_a_healthy_daemon_is_unlinked(sock_path: Path, bind_name: bool) -> None:
    options = ["--bind-name"] if bind_name else []
    with daemon(sock_path, "serve", *options) as served:
        served.expect_ready()
        sock_path.unlink()
        report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.UNLINKED, report.problems
    assert (
        f"the socket {sock_path} was deleted while pid {served.pid} (probe_daemon) still listens on it "
        "(a /tmp cleaner?): clients cannot reach it; restart the daemon to recreate it"
    ) == report.problems[0]


# --- forked children that keep the listener -----------------------------------------------------------


def test_a_forked_child_keeping_the_listener_is_stuck_and_named(sock_path: Path) -> None:
    with daemon(sock_path, "fork") as parent:
        words = parent.expect_ready()
        child = int(words[1])
        try:
            parent.kill()
            report = probe(sock_path, timeout=TIMEOUT)
            assert report.state is State.STUCK, report.problems
            assert (
                f"pid {child} (python3) keeps the listening socket open but does not hold the lock: "
                "connections are accepted and never answered"
            ) in report.problems
            assert f"the recorded owner pid {parent.pid} (probe_daemon) is dead" in report.problems
            assert [(h.pid, h.how, h.holds_socket) for h in report.lock_holders] == [
                (child, HolderHow.LISTENER, True)
            ]
        finally:
            kill_foreign(child)


def test_cleanup_terminate_holders_recovers_from_a_forked_child_keeping_the_listener(sock_path: Path) -> None:
    with daemon(sock_path, "fork") as parent:
        child = int(parent.expect_ready()[1])
        try:
            parent.kill()
            done = run_cli("cleanup", "--terminate-holders", "--yes", sock_path)
            assert done.returncode == 0, done.stdout + done.stderr
            wait_gone(child)
            assert has_exited(child)
            assert not sock_path.exists()
            assert probe(sock_path, timeout=TIMEOUT).state is State.STOPPED
        finally:
            kill_foreign(child)


# --- a clean stop is not stuck -------------------------------------------------------------------------


def test_a_daemon_draining_after_a_clean_stop_is_stopping(sock_path: Path) -> None:
    with daemon(sock_path, "stop") as stopper:
        stopper.expect_ready()
        stopper.send_line("stop")
        assert stopper.readline() == "stopping"
        report = probe(sock_path, timeout=TIMEOUT)
        assert report.state is State.STOPPING, report.problems
        assert report.record is not None and report.record.stopping_since > 0
        since = time.strftime("%H:%M:%S", time.localtime(report.record.stopping_since))
        assert report.problems[0] == f"stopping since {since} (draining connections)"
        assert report.lock_holders[0].pid == stopper.pid


# --- every path gets the truth ------------------------------------------------------------------------


def test_every_path_gets_its_own_report_and_an_empty_directory_reads_as_stopped(sock_dir: Path) -> None:
    empty = sock_dir / "empty"
    empty.mkdir()
    leave_orphaned_socket(sock_dir / "a.sock")
    reports = probe_paths([sock_dir / "a.sock", empty], timeout=TIMEOUT)
    assert [(r.socket_path, r.state) for r in reports] == [
        (sock_dir / "a.sock", State.STALE),
        (empty, State.STOPPED),
    ]
    assert reports[1].problems == [f"no control sockets in {empty}"]


def test_a_socket_in_a_missing_directory_is_stopped_and_says_so(sock_dir: Path) -> None:
    report = probe(sock_dir / "nonexistent" / "nope.sock", timeout=TIMEOUT)
    assert report.state is State.STOPPED
    assert report.problems == [f"directory {sock_dir / 'nonexistent'} does not exist"]
    assert not (sock_dir / "nonexistent").exists()


def test_a_stale_socket_in_a_directory_others_may_write_warns_that_cleanup_refuses(sock_dir: Path) -> None:
    shared = sock_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable, not sticky
    leave_orphaned_socket(shared / "ctrl.sock")
    report = probe(shared / "ctrl.sock", timeout=TIMEOUT)
    assert report.state is State.STALE
    assert any(
        p.startswith("cleanup will refuse to remove it: ") and "writable by others" in p
        for p in report.problems
    ), report.problems


def test_a_record_without_start_time_is_not_trusted_for_a_live_pid(sock_path: Path) -> None:
    lock_path_for(sock_path).write_bytes(
        HolderRecord(version=1, pid=os.getpid(), program="mydaemon").encode()
    )
    report = probe(sock_path, timeout=TIMEOUT)
    assert report.state is State.STALE
    [holder] = report.holders
    assert (holder.pid, holder.status) == (os.getpid(), "unknown")
    assert any(
        "not trusted: the record has no start time" in p and f"pid {os.getpid()}" in p
        for p in report.problems
    ), report.problems


# --- another user, no permission -----------------------------------------------------------------------


def nobody_python() -> str:
    """An interpreter the user nobody may run (this one may live under /root)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if not candidate:
            continue
        done = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", candidate, "-c", "pass"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            return candidate
    pytest.skip("no python3 that the user nobody may run")


def probe_as_nobody(*paths: Path) -> list[dict[str, object]]:
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ctrlsock.probe import probe_paths\n"
        "reports = probe_paths([Path(p) for p in sys.argv[1:]], timeout=0.5)\n"
        "print(json.dumps([r.to_json() for r in reports]))\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", nobody_python(), "-c", script]
        + [str(path) for path in paths],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO_DIR), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    documents = json.loads(done.stdout)
    assert isinstance(documents, list)
    return documents


def test_no_permission_is_unknown_with_the_reason_never_an_exception(nobody_dir: Path) -> None:
    nobody_dir.chmod(0o755)
    private = nobody_dir / "private"
    private.mkdir()
    private.chmod(0o750)  # root's, and nobody is not in root's group
    leave_orphaned_socket(private / "ctrl.sock")
    with daemon(nobody_dir / "d.sock", "serve") as served:
        served.expect_ready()
        (nobody_dir / "d.sock").chmod(0o600)  # nobody may not connect
        inside, listing, connect = probe_as_nobody(private / "ctrl.sock", private, nobody_dir / "d.sock")
    assert inside["state"] == "unknown"
    assert inside["problems"] == [f"permission denied: cannot look at {private / 'ctrl.sock'}"]
    assert listing["state"] == "unknown"
    assert listing["problems"] == [f"permission denied: cannot list the directory {private}"]
    assert connect["state"] == "unknown"
    assert any(str(p).startswith("permission denied: cannot connect to") for p in connect["problems"])  # type: ignore[union-attr]
