"""Helpers shared by test_probe.py and test_recover.py: start child daemons and wait for ``ready``."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHILDREN = Path(__file__).resolve().parent
REPO = CHILDREN.parents[1]
READY_TIMEOUT = 20.0


def read_line(process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT) -> str:
    """One line from the child's stdout, or fail after ``timeout`` (never a sleep)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"child {process.args!r} printed nothing within {timeout} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"child {process.args!r} exited with {process.wait()} before it was ready")
    return line.decode().strip()


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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cleanup(self) -> None:
        if self.stopped and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.kill()
        for pid in [self.inheritor, *self.extra_pids]:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stdin is not None:
            self.process.stdin.close()


def start_server(socket_path: Path, *options: str) -> ServerChild:
    process = subprocess.Popen(
        [sys.executable, str(CHILDREN / "probe_server.py"), str(socket_path), *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    child = ServerChild(process)
    try:
        line = read_line(process)
        if line.startswith("ready child "):
            child.inheritor = int(line.split()[2])
        else:
            assert line == "ready", line
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


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Block until ``pid`` has exited (zombie counts), through a pidfd: no polling sleep."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"pid {pid} still alive after {timeout} s")
    finally:
        os.close(fd)


def run_as_nobody(*arguments: str) -> str:
    """Run ``probe_as_user.py`` as ``nobody`` and return its stdout (one JSON document)."""
    result = subprocess.run(
        [sys.executable, str(CHILDREN / "probe_as_user.py"), *arguments],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"probe_as_user.py failed: {result.stderr.decode()}")
    return result.stdout.decode()
