"""Test-side helpers for the lock tests: run a tests/children script, read its lines with a deadline.

Not a child script itself; it lives here because tests/children/lock_* is the lock tests' corner.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

CHILDREN = Path(__file__).resolve().parent
LINE_TIMEOUT = 15.0


class Child:
    """A child process whose stdout lines are read with a timeout (never a sleep), always reaped."""

    def __init__(self, script: str, *args: str, pass_fds: tuple[int, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILDREN / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            pass_fds=pass_fds,
        )
        assert self.process.stdout is not None
        self._stdout = self.process.stdout
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def readline(self, timeout: float = LINE_TIMEOUT) -> str:
        """The next line without its newline; fails the test if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"child {self.pid} printed no line within {timeout} s")
                chunk = os.read(self._stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"child {self.pid} closed stdout (exit {self.process.poll()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def expect_ready(self) -> list[str]:
        """Wait for ``ready ...`` and return the words after it."""
        words = self.readline().split()
        assert words[:1] == ["ready"], words
        return words[1:]

    def send_line(self, text: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and, for SIGKILL, reap the child."""
        if self.process.poll() is None:
            os.kill(self.pid, sig)
        if sig == signal.SIGKILL:
            self.process.wait(timeout=LINE_TIMEOUT)

    def close(self) -> None:
        """Kill (continuing it first if stopped) and reap; close the pipes."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=LINE_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for_state(pid: int, states: str, timeout: float = LINE_TIMEOUT) -> str:
    """Poll ``/proc/PID/stat`` (bounded) until the state letter is one of ``states``; return it.

    Used only where the kernel, not the child, decides when a state is reached (SIGSTOP, exit).
    """
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            state = "gone"
            if "gone" in states:
                return state
        else:
            state = text[text.rfind(")") + 2]
            if state in states:
                return state
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not reach state {states!r} (last {state!r})")


def kill_foreign(pid: int) -> None:
    """SIGKILL a process we did not start directly (a grandchild); wait until it is gone or a zombie."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for_state(pid, "Z X gone")
