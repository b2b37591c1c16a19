"""A socket-activated child: adopts passed descriptors with ctrlsock.server.systemd and reports them.

Prints one JSON line describing what it adopted (or ``error: MESSAGE`` and exits 2), then ``ready``, then
answers every connection on the first adopted socket with ``echo:`` + the bytes it read, until killed.

Usage: systemd_listener.py [--keep-env]
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.errors import ServerError
from ctrlsock.server.systemd import is_unix_stream_listener, listen_fds_with_names


def main() -> int:
    keep_env = "--keep-env" in sys.argv[1:]
    try:
        adopted = listen_fds_with_names(unset_environment=not keep_env)
    except ServerError as error:
        print(f"error: {error}", flush=True)
        return 2
    report = {
        "pid": os.getpid(),
        "sockets": [
            {
                "name": name,
                "fd": sock.fileno(),
                "family": sock.family.name,
                "type": sock.type.name,
                "unix_stream_listener": is_unix_stream_listener(sock),
                "inheritable": os.get_inheritable(sock.fileno()),
                "sockname": sock.getsockname() if sock.family == socket.AF_UNIX else None,
            }
            for name, sock in adopted
        ],
        "fd3_inheritable": _fd_inheritable(3),
        "environment": {key: os.environ.get(key) for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")},
    }
    print(json.dumps(report), flush=True)
    print("ready", flush=True)
    if not adopted:
        sys.stdin.read()  # wait for the parent to close our stdin
        return 0
    listener = adopted[0][1]
    while True:
        connection, _ = listener.accept()
        with connection:
            data = connection.recv(65536)
            connection.sendall(b"echo:" + data)


def _fd_inheritable(fd: int) -> bool | None:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
