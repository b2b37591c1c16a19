"""The Kea fixture itself: other interop tests trust what it reports."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.kea import KeaDaemon, ask_kea, start_kea

pytestmark = pytest.mark.kea


def test_kea_answers_version_get(kea_daemon: KeaDaemon) -> None:
    reply = ask_kea(kea_daemon.socket_path, "version-get")
    assert reply["result"] == 0
    assert reply["text"].startswith("2.")
    assert kea_daemon.lock_path.stat().st_size == 0  # Kea writes no holder record


def test_kea_lfc_child_inherits_lock_after_kill() -> None:
    directory = Path(tempfile.mkdtemp(prefix="cs-k", dir="/tmp"))
    daemon = start_kea(directory, lfc_sleep=30)
    try:
        lfc_pid = daemon.wait_for_lfc()[0]
        daemon.kill()
        fds = {os.readlink(f"/proc/{lfc_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{lfc_pid}/fd")}
        assert str(daemon.lock_path) in fds
    finally:
        daemon.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
