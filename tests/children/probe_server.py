"""A tiny daemon for probe and recovery tests: takes the lock, binds the socket, answers every request.

Usage: probe_server.py SOCKET [--lock ctrlsock|flock|none] [--inheritor] [--no-bind] [--ignore-term]

``--lock ctrlsock`` (default) takes the lock through ``ctrlsock.lock.take_lock`` (with a holder record);
``--lock flock`` takes a bare ``flock`` on an empty ``<socket>.lock`` as Kea does (no record, no
``O_CLOEXEC``); ``--lock none`` takes no lock (a non-cooperating server).
``--inheritor`` then fork+execs ``sleep`` with the lock descriptor and the listening socket passed on purpose
(as Kea passes them to ``kea-lfc``) and prints ``ready child PID`` instead of ``ready``.
Every request gets ``{"result": 0, "arguments": [...]}`` and the connection is closed.
Prints ``ready`` once it serves.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def find_lock_fd(lock_path: Path) -> int:
    """Our own descriptor on the lock file, whoever opened it (works whatever lock.py keeps inside)."""
    wanted = os.stat(lock_path)
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (wanted.st_dev, wanted.st_ino):
            return int(name)
    raise RuntimeError(f"no descriptor on {lock_path}")


def answer(connection: socket.socket) -> None:
    connection.settimeout(5.0)
    data = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
            try:
                json.loads(data)
            except ValueError:
                continue
            break
        reply = {"result": 0, "arguments": ["list-commands", "status-get"]}
        connection.sendall(json.dumps(reply).encode())
    except OSError:
        pass
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket_path", type=Path)
    parser.add_argument("--lock", choices=["ctrlsock", "flock", "none"], default="ctrlsock")
    parser.add_argument("--inheritor", action="store_true")
    parser.add_argument("--no-bind", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    options = parser.parse_args()
    if options.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    socket_path: Path = options.socket_path
    lock_path = Path(f"{socket_path}.lock")

    keep: object = None
    if options.lock == "ctrlsock":
        from ctrlsock.lock import take_lock  # noqa: PLC0415 - only this mode needs ctrlsock

        keep = take_lock(socket_path, program="probe_server")
    elif options.lock == "flock":
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        keep = fd

    listener: socket.socket | None = None
    if not options.no_bind:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        listener.listen(16)

    if options.inheritor:
        fds = [find_lock_fd(lock_path)]
        if listener is not None:
            fds.append(listener.fileno())
        child = subprocess.Popen(
            ["sleep", "600"], pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        # One line: the parent reads exactly one line before it trusts us.
        print(f"ready child {child.pid}", flush=True)
    else:
        print("ready", flush=True)
    assert keep is not None or options.lock == "none"
    if listener is None:
        sys.stdin.read()  # hold the lock until the parent closes our stdin or kills us
        return 0
    while True:
        connection, _ = listener.accept()
        answer(connection)


if __name__ == "__main__":
    sys.exit(main())
