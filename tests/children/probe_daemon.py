"""A daemon in the situations the probe must tell apart; prints ``ready [child PID]`` once it is in place.

Usage: probe_daemon.py SOCKET MODE [--bind-name]

Every mode takes the lock with ``ctrlsock.lock.take_lock`` (program ``probe_daemon``) and listens on SOCKET
(with ``--bind-name``, bound under the temporary bind name and then linked into place, as the server does).

- ``serve``: answers every request, one at a time, until killed. A line ``restore`` on stdin makes it put
  a deleted lock file back (``SocketLock.restore``) and print ``restored True`` or ``restored False``.
- ``busy``: never accepts; burns CPU as a handler that computes a huge reply would.
- ``idle``: never accepts and does nothing (a hung daemon).
- ``fork``: forks a child that keeps the listening socket (and, as filelock arranges, not the lock) and
  does nothing; prints ``ready child PID``. Kill this process and the child stays.
- ``stop``: serves until a line arrives on stdin, then begins a clean stop as the server does: marks the
  record ``stopping``, closes the listener and removes the socket, prints ``stopping`` and holds the lock
  while it "drains" until stdin closes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.lock import take_lock
from ctrlsock.names import bind_path_for


def answer(connection: socket.socket) -> None:
    with connection:
        connection.settimeout(5.0)
        data = b""
        try:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
                try:
                    json.loads(data)
                except ValueError:
                    continue
                break
            connection.sendall(json.dumps({"result": 0, "arguments": ["list-commands"]}).encode())
        except OSError:
            pass


def serve(listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # closed by a stop
        answer(connection)


def listen(socket_path: Path, bind_name: bool) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if bind_name:
        temporary = bind_path_for(socket_path)
        listener.bind(str(temporary))
        os.link(temporary, socket_path)
        temporary.unlink()
    else:
        listener.bind(str(socket_path))
    listener.listen(64)
    return listener


def main() -> int:
    socket_path, mode = Path(sys.argv[1]), sys.argv[2]
    lock = take_lock(socket_path, program="probe_daemon")
    listener = listen(socket_path, "--bind-name" in sys.argv[3:])
    if mode == "serve":

        def commands() -> None:
            for line in sys.stdin:
                if line.strip() == "restore":
                    print(f"restored {lock.restore()}", flush=True)

        threading.Thread(target=commands, daemon=True).start()
        print("ready", flush=True)
        serve(listener)
    elif mode == "busy":
        print("ready", flush=True)
        count = 0
        while True:
            count += 1
    elif mode == "idle":
        print("ready", flush=True)
        sys.stdin.read()
    elif mode == "fork":
        if os.fork() == 0:
            # The child speaks: by now the at-fork handlers have run here (filelock's closed the lock).
            print(f"ready child {os.getpid()}", flush=True)
            signal.pause()  # keep the inherited listener, never accept
            os._exit(0)
        sys.stdin.read()
    elif mode == "stop":
        server = threading.Thread(target=serve, args=(listener,), daemon=True)
        server.start()
        print("ready", flush=True)
        sys.stdin.readline()
        lock.mark_stopping()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        socket_path.unlink()
        print("stopping", flush=True)
        sys.stdin.read()
    lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
