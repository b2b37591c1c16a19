"""A daemon that forks a worker while its control server serves (as multiprocessing's fork method does).

Usage: server_fork.py SOCKET. Serves in a thread, opens one client connection to itself (so an accepted
connection exists too), forks a worker that sleeps for ever, and prints ``ready WORKER_PID`` once the
worker runs (its at-fork hooks have run by then).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.server import ControlServer, ServerConfig
from tests.children.server_client import ask


def polls(seconds: float = 10.0) -> Iterator[None]:
    """Iterations until a deadline, for asking the server (it answers at once) until a state shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


def main() -> int:
    socket_path = Path(sys.argv[1])
    server = ControlServer(socket_path, program="server-fork", config=ServerConfig(stop_grace=1.0))
    server.start_in_thread()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(socket_path))  # accepted by the server, which then waits for its request
    client.sendall(b'{"command": ')
    for _ in polls():  # until the server holds the accepted connection (it answers status-get at once)
        if ask(socket_path, "status-get")["arguments"]["connections-open"] == 2:
            break
    started_read, started_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        # fork() has returned here, so the at-fork hooks have run: say so, then outlive the parent.
        os.write(started_write, b"x")
        threading.Event().wait()
        os._exit(0)
    os.read(started_read, 1)
    print(f"ready {pid}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
