"""Child processes in tests: start a tests/children script, read its lines with a deadline, kill and reap it.

Readiness is a signal the child gives (a ``ready`` line), never a sleep. The only polling is of
``/proc/PID/stat``, and only where the kernel, not the child, decides when a state is reached (SIGSTOP).
Not a child script: the scripts in tests/children run by path and import nothing from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Self

import pytest

REPO_DIR: Final = Path(__file__).resolve().parents[1]
CHILDREN_DIR: Final = REPO_DIR / "tests" / "children"
LINE_TIMEOUT: Final = 20.0
REAP_TIMEOUT: Final = 10.0


def start_child(
    script: str, *args: object, env: dict[str, str] | None = None, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Run tests/children/SCRIPT from the repository root, its stdin and stdout unbuffered pipes.

    The caller waits for its ``ready`` line (``expect_ready``) and calls ``stop_child`` in ``finally``.
    """
    return subprocess.Popen(
        [sys.executable, str(CHILDREN_DIR / script), *(str(arg) for arg in args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        env=env,
        cwd=REPO_DIR,
        pass_fds=pass_fds,
    )


def read_line(process: subprocess.Popen[Any], timeout: float = LINE_TIMEOUT) -> str:
    """The child's next stdout line without its line break.

    Raises ``TimeoutError`` if no whole line comes within ``timeout``, ``EOFError`` if stdout closes first.
    Reads the descriptor byte by byte: a buffered ``readline`` could pull the next line into a Python
    buffer, where ``select`` no longer sees it.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(
                    f"child {process.pid} printed no line within {timeout} s (so far {bytes(line)!r})"
                )
            byte = os.read(fd, 1)
            if not byte:
                raise EOFError(
                    f"child {process.pid} closed stdout, {_exit_status(process)} (so far {bytes(line)!r})"
                )
            line += byte
    return line[:-1].decode()


def _exit_status(process: subprocess.Popen[Any]) -> str:
    try:
        return f"exit status {process.wait(timeout=REAP_TIMEOUT)}"
    except subprocess.TimeoutExpired:
        return "still running"


def expect_ready(process: subprocess.Popen[Any], timeout: float = LINE_TIMEOUT) -> list[str]:
    """Wait for the child's next line, which must be ``ready [WORD...]``; return the words after ``ready``."""
    words = read_line(process, timeout).split()
    assert words[:1] == ["ready"], words
    return words[1:]


def stop_child(
    process: subprocess.Popen[Any], sig: int = signal.SIGKILL, timeout: float = REAP_TIMEOUT
) -> int:
    """Send ``sig`` unless the child exited, reap it, close its pipes; return its exit status.

    A child that ``sig`` did not end within ``timeout`` is killed: no test leaves a process behind.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


class Child:
    """A tests/children script, its lines read with a deadline; leaving the ``with`` kills and reaps it."""

    def __init__(self, script: str, *args: object, pass_fds: Sequence[int] = ()) -> None:
        self.process = start_child(script, *args, pass_fds=pass_fds)

    @property
    def pid(self) -> int:
        return self.process.pid

    def readline(self, timeout: float = LINE_TIMEOUT) -> str:
        return read_line(self.process, timeout)

    def expect_ready(self) -> list[str]:
        return expect_ready(self.process)

    def send_line(self, text: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child (unless it exited), reap it and close its pipes."""
        stop_child(self.process)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in ``/proc/PID/stat`` (``R``, ``S``, ``T``, ``Z``...), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and ")": the state follows the last ")".
    return stat.rpartition(")")[2].split()[0]


def has_exited(pid: int) -> bool:
    """True once ``pid`` has exited; a zombie counts (this machine's PID 1 reaps slowly)."""
    return process_state(pid) in {None, "Z", "X"}


def wait_for_state(pid: int, states: str, timeout: float = LINE_TIMEOUT) -> str:
    """Poll ``/proc/PID/stat`` (bounded) until the state letter is one of ``states``; return it.

    Used only where the kernel, not the child, decides when a state is reached (SIGSTOP, exit).
    """
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state is not None and state in states:
            return state
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not reach state {states!r} (last {state!r})")


def wait_gone(pid: int, timeout: float = REAP_TIMEOUT) -> None:
    """Block until ``pid`` has exited (a zombie counts), through a pidfd: no polling sleep."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"pid {pid} still alive after {timeout} s")
    finally:
        os.close(fd)


def kill_foreign(pid: int) -> None:
    """SIGKILL a process we did not start directly (a grandchild) and wait until it has exited."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(pid)


class LogWatch(logging.Handler):
    """Collects the server's log records and lets a test block until one matching a text arrives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 5.0) -> logging.LogRecord:
        def find() -> logging.LogRecord | None:
            return next((r for r in self.records if text in r.getMessage()), None)

        with self._changed:
            assert self._changed.wait_for(lambda: find() is not None, timeout), f"no log record with {text!r}"
            found = find()
            assert found is not None
            return found


#: ``python3 -c ASK_SCRIPT SOCKET COMMAND`` sends one command and prints the raw reply. It imports nothing
#: from the repository, so it runs as another user (``setpriv``, ``subprocess.run(user=...)``).
ASK_SCRIPT: Final = """
import json, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.settimeout(10)
    sock.connect(sys.argv[1])
    sock.sendall(json.dumps({"command": sys.argv[2]}).encode())
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
sys.stdout.write(b"".join(parts).decode())
"""


#: The Basic authentication password the HTTP tests configure (``password_files`` writes it to a file).
HTTP_PASSWORD: Final = "kea-test-password"


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *(str(arg) for arg in args)], check=True, capture_output=True, timeout=30)


def _certificate(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, request, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", request, "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> dict[str, Path]:
    """With the ``openssl`` command line: a CA, a server certificate for IP 127.0.0.1, a client certificate
    for that CA, and another CA nothing chains to. Keys: ``ca``, ``server-cert``, ``server-key``,
    ``client-cert``, ``client-key``, ``other-ca``.
    """
    directory.mkdir()
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", ca_key, "-out", ca_cert, "-days", "2", "-subj", "/CN=ctrlsock test CA")  # fmt: skip
    server = _certificate(directory, "server", (ca_cert, ca_key), "subjectAltName=IP:127.0.0.1")
    client = _certificate(directory, "client", (ca_cert, ca_key), "extendedKeyUsage=clientAuth")
    other_ca = directory / "other-ca.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", directory / "other-ca.key", "-out", other_ca, "-days", "2",
             "-subj", "/CN=another CA")  # fmt: skip
    return {
        "ca": ca_cert,
        "server-cert": server[0],
        "server-key": server[1],
        "client-cert": client[0],
        "client-key": client[1],
        "other-ca": other_ca,
    }


def readme_python_blocks() -> list[str]:
    """The README's Python examples: the daemon quickstart first, then the HTTP listener example."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO_DIR / "README.md").read_text(), flags=re.DOTALL)
    assert len(blocks) == 2, "the README has a Python quickstart and an HTTP listener example"
    return [str(block) for block in blocks]


def require_tool(name: str) -> str:
    """The path of the command ``name``; skipped without it, except in CI (``CI`` or
    ``CTRLSOCK_REQUIRE_KEA`` set), whose ``.ci/run`` installs every tool the tests use: there a missing one
    is a failure.
    """
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CTRLSOCK_REQUIRE_KEA") or os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path
