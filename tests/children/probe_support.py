"""Helpers shared by test_probe.py and test_recover.py: start ``probe_server.py`` and wait for ``ready``."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import (
    CHILDREN_DIR,
    REPO_DIR,
    expect_ready,
    kill_foreign,
    start_child,
    stop_child,
    wait_for_state,
)


@dataclass
class ServerChild:
    """A running ``probe_server.py`` and the ``sleep`` it may have spawned with the lock inherited."""

    process: subprocess.Popen[bytes]
    inheritor: int | None = None
    stopped: bool = False
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the server and reap it (so it is dead, not a zombie)."""
        stop_child(self.process)

    def stop(self) -> None:
        """SIGSTOP the server and return once the kernel shows it stopped (the signal acts asynchronously)."""
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True
        wait_for_state(self.pid, "T")

    def cleanup(self) -> None:
        if self.stopped and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.kill()
        for pid in [self.inheritor, *self.extra_pids]:
            if pid is not None:
                kill_foreign(pid)


def start_server(socket_path: Path, *options: str) -> ServerChild:
    """``probe_server.py SOCKET OPTIONS...`` once it printed ``ready`` (or ``ready child PID``)."""
    child = ServerChild(start_child("probe_server.py", socket_path, *options))
    try:
        words = expect_ready(child.process)
        if words[:1] == ["child"]:
            child.inheritor = int(words[1])
        else:
            assert not words, words
    except BaseException:
        child.cleanup()
        raise
    return child


@contextlib.contextmanager
def running_server(socket_path: Path, *options: str) -> Iterator[ServerChild]:
    child = start_server(socket_path, *options)
    try:
        yield child
    finally:
        child.cleanup()


def run_as_nobody(*arguments: str) -> str:
    """Run ``probe_as_user.py`` as ``nobody`` and return its stdout (one JSON document)."""
    result = subprocess.run(
        [sys.executable, str(CHILDREN_DIR / "probe_as_user.py"), *arguments],
        capture_output=True,
        cwd=REPO_DIR,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"probe_as_user.py failed: {result.stderr.decode()}")
    return result.stdout.decode()
