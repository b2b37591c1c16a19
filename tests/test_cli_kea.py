"""``ctrlsock`` against a real ``kea-dhcp4`` 2.2: send, status, cleanup, stuck through ``kea-lfc``.

Kea writes no holder record (its lock file is empty), so every holder here comes from the kernel
(``/proc/locks`` and ``/proc/*/fdinfo``), which is the point of these tests.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.cli import ExitCode
from tests.children.cli_support import holder_pids, run_cli, status_json
from tests.kea import KeaDaemon, start_kea

pytestmark = pytest.mark.kea

# Commands that change or stop Kea are sent last, or with arguments that keep it as it is.
HARMLESS_FIRST = ("list-commands", "version-get", "build-report", "status-get", "config-get")


@pytest.fixture
def kea_directory() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cs-k", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def send(kea: KeaDaemon, command: str, *options: str) -> tuple[int, Any]:
    done = run_cli("send", kea.socket_path, command, *options)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout else None


def test_send_every_built_in_command(kea_daemon: KeaDaemon) -> None:
    code, reply = send(kea_daemon, "list-commands")
    assert code == 0
    commands = set(reply["arguments"])
    assert {"list-commands", "version-get", "shutdown", "config-get"} <= commands

    for command in HARMLESS_FIRST:
        if command in commands:
            code, reply = send(kea_daemon, command)
            assert code == reply["result"] == 0, (command, reply)
    code, reply = send(kea_daemon, "version-get")
    assert reply["text"].startswith("2.")

    _, config = send(kea_daemon, "config-get")
    arguments = json.dumps(config["arguments"])
    if "config-test" in commands:
        code, reply = send(kea_daemon, "config-test", "--arguments", arguments)
        assert code == reply["result"] == 0, reply
    if "config-write" in commands:
        target = kea_daemon.directory / "written.json"
        code, reply = send(kea_daemon, "config-write", "--arguments", json.dumps({"filename": str(target)}))
        assert code == reply["result"], reply
    # Every other command Kea lists gets an answer whose result is our exit code, whatever it is.
    for command in sorted(commands - set(HARMLESS_FIRST) - {"shutdown", "config-set", "config-reload"}):
        if command in {"config-test", "config-write"}:
            continue
        code, reply = send(kea_daemon, command, "--timeout", "5")
        assert reply is not None, command
        assert code == reply["result"], (command, reply)
    code, reply = send(kea_daemon, "unknown-command")
    assert code == reply["result"] == 2
    code, reply = send(kea_daemon, "shutdown")
    assert code == reply["result"] == 0
    assert kea_daemon.process.wait(timeout=20) == 0


def test_status_says_running_with_keas_pid(kea_daemon: KeaDaemon) -> None:
    code, reports = status_json(kea_daemon.socket_path)
    assert code == ExitCode.OK
    assert reports[0]["state"] == "running"
    assert kea_daemon.pid in holder_pids(reports[0])
    assert reports[0]["record"] is None  # Kea writes none: the holder is the kernel's word

    done = run_cli("status", kea_daemon.socket_path)
    assert done.returncode == ExitCode.OK
    assert str(kea_daemon.pid) in done.stdout
    assert "kea-dhcp4" in done.stdout


def test_status_of_keas_directory_reports_only_its_socket(kea_daemon: KeaDaemon) -> None:
    # Kea keeps its logger's kea.log.lock in the same directory: that lock guards a log, not a socket.
    assert (kea_daemon.directory / "kea.log.lock").exists()
    code, reports = status_json(kea_daemon.directory)
    assert [report["socket"] for report in reports] == [str(kea_daemon.socket_path)]
    assert code == ExitCode.OK


def test_stale_after_sigkill_and_cleanup_lets_kea_start_again(kea_directory: Path) -> None:
    kea = start_kea(kea_directory)
    try:
        kea.kill()
        code, reports = status_json(kea.socket_path)
        assert code == ExitCode.STALE
        assert reports[0]["state"] == "stale"

        done = run_cli("cleanup", kea.socket_path)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
        assert not kea.socket_path.exists()
        assert run_cli("status", kea.socket_path).returncode == ExitCode.STOPPED

        kea = kea.restart()
        code, reports = status_json(kea.socket_path)
        assert code == ExitCode.OK
        assert kea.pid in holder_pids(reports[0])
    finally:
        kea.cleanup()


def test_lfc_child_holding_keas_lock_is_stuck(kea_directory: Path) -> None:
    kea = start_kea(kea_directory, lfc_sleep=60)
    try:
        lfc_pid = kea.wait_for_lfc()[0]
        kea.kill()
        assert lfc_pid in kea.lfc_pids()
        done = run_cli("status", "--json", "--timeout", "0.5", kea.socket_path)
        assert done.returncode == ExitCode.STUCK, done.stdout
        report = json.loads(done.stdout)[0]
        assert report["state"] == "stuck"
        assert lfc_pid in holder_pids(report)

        done = run_cli("cleanup", kea.socket_path)
        assert done.returncode == ExitCode.STUCK
        assert "refused" in done.stdout

        done = run_cli("cleanup", "--terminate-holders", "--yes", kea.socket_path)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
        assert str(lfc_pid) in done.stdout
        kea = kea.restart()
        assert run_cli("status", kea.socket_path).returncode == ExitCode.OK
    finally:
        kea.cleanup()
