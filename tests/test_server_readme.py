"""The README's "daemon in ten lines", run verbatim as a real daemon process in both embeddings.

Only the socket path changes (to a temporary directory whose ``mydaemon`` directory does not exist yet, as
``/run/mydaemon`` on a fresh boot); the asyncio embedding is the one the README's comment gives.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.children.server_client import ask
from tests.support import REPO_DIR, read_line, readme_python_blocks, stop_child

WAIT = 10.0

PRELUDE = """\
import threading

def run_the_rest_of_my_daemon():
    print("ready", flush=True)
    threading.Event().wait()

"""


def quickstart() -> str:
    return readme_python_blocks()[0]


def daemon_script(socket_path: Path, embedding: str) -> str:
    code = quickstart().replace("/run/mydaemon/ctrl.sock", str(socket_path))
    if embedding == "asyncio":
        lines = code.splitlines()
        at = next(
            index for index, line in enumerate(lines) if line.startswith("with server.running_in_thread()")
        )
        asyncio_form = lines[at].split("in asyncio:", 1)[1].strip()  # the README's own asyncio line
        body = asyncio_form.replace(": await", ":\n    print('ready', flush=True)\n    await", 1)
        code = (
            "\n".join(lines[:at])
            + "\n\nimport asyncio\n\nasync def main():\n"
            + textwrap.indent(body, "    ")
        )
        code += "\n\nasyncio.run(main())\n"
    return PRELUDE + code


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_the_readme_daemon_runs_verbatim_and_ends_stopped_after_sigterm(
    embedding: str, sock_dir: Path
) -> None:
    run_dir = sock_dir / "run"
    run_dir.mkdir(mode=0o755)
    socket_path = run_dir / "mydaemon" / "ctrl.sock"
    process = subprocess.Popen(
        [sys.executable, "-c", daemon_script(socket_path, embedding)],
        stdout=subprocess.PIPE,
        bufsize=0,
        cwd=REPO_DIR,
    )
    try:
        assert read_line(process) == "ready"
        directory = socket_path.parent.stat()
        assert stat.S_IMODE(directory.st_mode) == 0o700
        assert directory.st_uid == os.geteuid()
        assert ask(socket_path, "lease-get", {"ip-address": "192.0.2.1"}) == {
            "result": 0,
            "arguments": {"ip-address": "192.0.2.1", "state": 0},
        }
        assert ask(socket_path, "lease-get") == {"result": 1, "text": "missing 'ip-address'"}
        assert ask(socket_path, "lease-get", [1]) == {"result": 1, "text": "missing 'ip-address'"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT) == -signal.SIGTERM
    finally:
        stop_child(process)
    status = subprocess.run(
        [sys.executable, "-m", "ctrlsock", "status", str(socket_path), "--json"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=REPO_DIR,
        check=False,
    )
    assert '"state": "stopped"' in status.stdout, status.stdout + status.stderr
    assert status.returncode == 3
