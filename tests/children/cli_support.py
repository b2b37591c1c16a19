"""Helpers for the CLI tests: run ``ctrlsock`` as a real subprocess, start ``ctrlsock serve`` and children.

Not a child script itself; imported by tests/test_cli*.py. Readiness is always a signal (a ``ready``
line, or ``READY=1`` on ``$NOTIFY_SOCKET`` for ``serve``), never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support import REPO_DIR, read_line, start_child, stop_child

READY_TIMEOUT = 20.0


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def run_cli(
    *args: object,
    input: str | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``ctrlsock ARGS...`` as the installed console script would run it (``python -m ctrlsock``)."""
    return subprocess.run(
        [sys.executable, "-m", "ctrlsock", *(str(arg) for arg in args)],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        cwd=REPO_DIR,
        user=user,
        check=False,
    )


def run_cli_bytes(*args: object, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ctrlsock", *(str(arg) for arg in args)],
        capture_output=True,
        timeout=timeout,
        env=cli_env(),
        cwd=REPO_DIR,
        check=False,
    )


def start_child_until_ready(script: str, *args: object) -> tuple[subprocess.Popen[bytes], list[str]]:
    """A tests/children script run with the CLI's environment, once it printed ``ready``.

    Returns the process and the lines it printed before ``ready``.
    """
    process = start_child(script, *args, env=cli_env())
    early_lines: list[str] = []
    try:
        while (line := read_line(process)) != "ready":
            early_lines.append(line)
    except BaseException:
        stop_child(process)
        raise
    return process, early_lines


class Serve:
    """``ctrlsock serve SOCKET ...`` in the background, ready once it sent ``READY=1`` to our socket."""

    def __init__(self, socket_path: Path | None, *options: object, env: dict[str, str] | None = None) -> None:
        self.socket_path = socket_path
        # The notify socket and the log get their own directory: a status of the socket's directory
        # must not see them. The log is a file, not a pipe nobody drains, so serve never blocks on it.
        self._work_dir = Path(tempfile.mkdtemp(prefix="cs-n", dir="/tmp"))
        self._notify_path = self._work_dir / "notify"
        self.log_path = self._work_dir / "serve.log"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._notify.bind(str(self._notify_path))
        arguments = [str(socket_path)] if socket_path is not None else []
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ctrlsock", "serve", *arguments, *(str(option) for option in options)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**(env or cli_env()), "NOTIFY_SOCKET": str(self._notify_path)},
                cwd=REPO_DIR,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        exited = os.pidfd_open(self.process.pid)  # readable once the process exits
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._notify, selectors.EVENT_READ)
                selector.register(exited, selectors.EVENT_READ)
                while (remaining := deadline - time.monotonic()) > 0:
                    for key, _ in selector.select(remaining):
                        if key.fileobj is self._notify:
                            if b"READY=1" in self._notify.recv(4096):
                                return
                        else:
                            code = self.process.wait(timeout=10)
                            raise RuntimeError(
                                f"ctrlsock serve exited with {code} before ready: {self.log()}"
                            )
        finally:
            os.close(exited)
        raise TimeoutError(f"ctrlsock serve did not send READY=1: {self.log()}")

    def kill(self) -> None:
        stop_child(self.process)

    def terminate(self) -> int:
        return stop_child(self.process, signal.SIGTERM)

    def close(self) -> None:
        stop_child(self.process)
        self._notify.close()
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def serving(socket_path: Path | None, *options: object, env: dict[str, str] | None = None) -> Iterator[Serve]:
    server = Serve(socket_path, *options, env=env)
    try:
        yield server
    finally:
        server.close()


def status_json(*paths: object, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    done = run_cli("status", "--json", *paths, env=env)
    assert not done.stderr, done.stderr
    document: list[dict[str, Any]] = json.loads(done.stdout)
    return done.returncode, document


def holder_pids(report: dict[str, Any]) -> set[int]:
    return {holder["pid"] for holder in report["holders"]}


def pids_in(text: str, pids: Sequence[int]) -> bool:
    return all(str(pid) in text for pid in pids)
