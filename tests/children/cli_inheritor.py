"""A daemon whose child inherited its lock: after the test SIGKILLs us, the socket is ``stuck``.

Usage: cli_inheritor.py SOCKET

Takes the lock with ``ctrlsock.lock.take_lock`` (writing a holder record), binds and listens on SOCKET,
then starts ``sleep`` with the lock descriptor and the listening socket passed on purpose, as Kea passes
them to ``kea-lfc``. Prints ``child PID`` then ``ready``, and waits to be killed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.lock import take_lock


def main() -> int:
    socket_path = Path(sys.argv[1])
    lock = take_lock(socket_path, program="cli-inheritor")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(8)
    child = subprocess.Popen(
        ["sleep", "300"],
        pass_fds=(lock.fileno(), listener.fileno()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"child {child.pid}", flush=True)
    print("ready", flush=True)
    # Wait for SIGKILL; reading our stdin (a pipe the test never writes) blocks without a sleep loop.
    os.read(sys.stdin.fileno(), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
