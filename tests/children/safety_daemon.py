"""A daemon caught in a moment recovery must respect: prints ``ready`` once there, then stays.

Usage: safety_daemon.py busy|binding SOCKET [--legacy]

``busy``: takes the socket's lock (with a holder record), binds and listens, then keeps a CPU busy and never
accepts, as a daemon does while it computes a huge reply: nothing answers, yet it makes progress.
``binding``: takes the lock and binds the socket's temporary bind name (``--legacy``: an older release's
random ``.<name>.<8 hex>~``) without listening or linking it into place, as a daemon starting up does.
SIGKILL it there and the bind name is a crash's debris. It waits for stdin to close.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.lock import take_lock
from ctrlsock.names import bind_path_for


def main() -> int:
    mode, socket_path = sys.argv[1], Path(sys.argv[2])
    lock = take_lock(socket_path, program="safety_daemon")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if mode == "busy":
        listener.bind(str(socket_path))
        listener.listen(64)
        print("ready", flush=True)
        spins = 0
        while True:  # progress that answers nobody
            spins += 1
    bind_path = bind_path_for(socket_path)
    if "--legacy" in sys.argv:
        bind_path = socket_path.with_name(f".{socket_path.name}.0badc0de~")
    listener.bind(str(bind_path))
    print("ready", flush=True)
    sys.stdin.read()
    listener.close()
    lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
