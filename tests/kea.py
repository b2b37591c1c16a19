"""A real Kea 2.2 ``kea-dhcp4`` for interop tests, started without privileges in a temporary directory.

Facts this relies on, measured with Kea 2.2.0: with no interfaces and a memfile lease database Kea starts as
any user; ``KEA_PIDFILE_DIR``/``KEA_LOCKFILE_DIR`` keep it out of ``/run/kea``; ready means ``version-get``
answers, not that ``connect()`` succeeds; after SIGKILL Kea's PID file must be removed by hand or the next
start refuses; ``lfc-interval: 1`` with ``KEA_LFC_EXECUTABLE`` makes Kea spawn our script every second with
its lock descriptor and listening socket inherited.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import has_exited, kill_foreign, stop_child

KEA_BINARY = "kea-dhcp4"
READY_TIMEOUT = 15.0


def kea_available() -> bool:
    return shutil.which(KEA_BINARY) is not None


def require_kea() -> None:
    """Skip without Kea, except in CI (``CTRLSOCK_REQUIRE_KEA=1``) where a missing Kea is a failure."""
    if kea_available():
        return
    if os.environ.get("CTRLSOCK_REQUIRE_KEA"):
        pytest.fail("kea-dhcp4 is not installed but CTRLSOCK_REQUIRE_KEA is set")
    pytest.skip("kea-dhcp4 is not installed")


def ask_kea(socket_path: Path, command: str, timeout: float = 2.0) -> dict[str, Any]:
    """One raw round trip, independent of ctrlsock's own client so the fixture can judge it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps({"command": command}).encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply: dict[str, Any] = json.loads(b"".join(chunks))
    return reply


@dataclass
class KeaDaemon:
    directory: Path
    process: subprocess.Popen[bytes]
    config_path: Path
    lfc_sleep: float | None = None
    _env: dict[str, str] = field(default_factory=dict)

    @property
    def socket_path(self) -> Path:
        return self.directory / "kea4.sock"

    @property
    def lock_path(self) -> Path:
        return self.directory / "kea4.sock.lock"

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.config_path.stem}.kea-dhcp4.pid"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.directory / "kea.log"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kea-dhcp4 exited with {self.process.returncode}: {self._tail_log()}")
            try:
                if ask_kea(self.socket_path, "version-get").get("result") == 0:
                    return
            except (OSError, ValueError) as error:
                last_error = error
            time.sleep(0.02)  # polling Kea's own readiness: it offers no signal to block on
        raise TimeoutError(f"kea-dhcp4 not ready after {timeout}s ({last_error}): {self._tail_log()}")

    def _tail_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-2000:]
        return "(no log)"

    def kill(self) -> None:
        """SIGKILL, reap, and remove the PID file Kea would otherwise trip over on its next start."""
        stop_child(self.process)
        self.pid_file.unlink(missing_ok=True)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> KeaDaemon:
        """Start a new Kea on the same directory, config and socket; the old one must be gone."""
        return start_kea(self.directory, lfc_sleep=self.lfc_sleep)

    def lfc_pids(self) -> list[int]:
        """Live processes running our fake lease-file cleaner (they inherited Kea's lock descriptor)."""
        record = self.directory / "lfc.pids"
        try:
            pids = [int(line) for line in record.read_text().split()]
        except FileNotFoundError:
            return []
        return [pid for pid in pids if not has_exited(pid)]

    def wait_for_lfc(self, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pids := self.lfc_pids():
                return pids
            time.sleep(0.05)  # Kea starts the cleaner on its own timer (lfc-interval: 1 s)
        raise TimeoutError("kea-dhcp4 did not start the lease-file cleaner")

    def cleanup(self) -> None:
        """Stop Kea and any cleaner children it left; used by fixtures in ``finally``."""
        self.kill()
        for pid in self.lfc_pids():
            kill_foreign(pid)


def write_config(directory: Path, *, lfc_sleep: float | None) -> Path:
    config = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": []},
            "control-socket": {"socket-type": "unix", "socket-name": str(directory / "kea4.sock")},
            "lease-database": {
                "type": "memfile",
                "name": str(directory / "leases.csv"),
                "lfc-interval": 1 if lfc_sleep is not None else 0,
            },
            "loggers": [
                {
                    "name": "kea-dhcp4",
                    "output_options": [{"output": str(directory / "kea.log")}],
                    "severity": "INFO",
                }
            ],
        }
    }
    path = directory / "kea.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_kea(directory: Path, *, lfc_sleep: float | None = None) -> KeaDaemon:
    """Start ``kea-dhcp4`` with its control socket at ``directory/kea4.sock`` and wait until it answers.

    With ``lfc_sleep``, Kea runs a fake lease-file cleaner every second that records its pid in
    ``directory/lfc.pids`` and sleeps that long, holding Kea's inherited lock and listening socket.
    """
    require_kea()
    config_path = write_config(directory, lfc_sleep=lfc_sleep)
    env = dict(os.environ, KEA_PIDFILE_DIR=str(directory), KEA_LOCKFILE_DIR=str(directory))
    if lfc_sleep is not None:
        script = directory / "fake-lfc.sh"
        script.write_text(f'#!/bin/sh\necho $$ >> "{directory}/lfc.pids"\nexec sleep {lfc_sleep}\n')
        script.chmod(0o755)
        env["KEA_LFC_EXECUTABLE"] = str(script)
    process = subprocess.Popen(
        [KEA_BINARY, "-c", str(config_path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon = KeaDaemon(directory, process, config_path, lfc_sleep=lfc_sleep, _env=env)
    try:
        daemon.wait_ready()
    except BaseException:
        daemon.cleanup()
        raise
    return daemon


@dataclass
class CtrlAgent:
    """A real ``kea-ctrl-agent`` forwarding HTTP commands for service ``dhcp4`` to a unix socket."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def post(self, document: dict[str, Any], timeout: float = 5.0) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            data=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kea-ctrl-agent exited with {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.02)  # the agent offers no readiness signal but its listening port
        raise TimeoutError(f"kea-ctrl-agent not listening after {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_ctrl_agent(directory: Path, socket_path: Path, *, extra: dict[str, Any] | None = None) -> CtrlAgent:
    """Start ``kea-ctrl-agent`` on a free loopback port, forwarding service ``dhcp4`` to ``socket_path``.

    ``extra`` is merged into its ``Control-agent`` map (``authentication``, ``trust-anchor``...).
    """
    if shutil.which("kea-ctrl-agent") is None:
        if os.environ.get("CTRLSOCK_REQUIRE_KEA"):
            pytest.fail("kea-ctrl-agent is not installed but CTRLSOCK_REQUIRE_KEA is set")
        pytest.skip("kea-ctrl-agent is not installed")
    port = _free_loopback_port()
    log_path = directory / "ctrl-agent.log"
    config = {
        "Control-agent": {
            "http-host": "127.0.0.1",
            "http-port": port,
            "control-sockets": {"dhcp4": {"socket-type": "unix", "socket-name": str(socket_path)}},
            "loggers": [
                {"name": "kea-ctrl-agent", "output_options": [{"output": str(log_path)}], "severity": "INFO"}
            ],
            **(extra or {}),
        }
    }
    config_path = directory / "ctrl-agent.json"
    config_path.write_text(json.dumps(config))
    env = dict(os.environ, KEA_PIDFILE_DIR=str(directory), KEA_LOCKFILE_DIR=str(directory))
    process = subprocess.Popen(
        ["kea-ctrl-agent", "-c", str(config_path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = CtrlAgent(process, port, log_path)
    try:
        agent.wait_ready()
    except BaseException:
        agent.stop()
        raise
    return agent
