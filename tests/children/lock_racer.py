"""Race for a socket's lock: print ``ready``, wait for the barrier, try once, report, hold.

Usage: lock_racer.py SOCKET_PATH BARRIER_FD

The parent passes the read end of a pipe as BARRIER_FD and closes the write end once every racer
printed ``ready``: every read() returns EOF at once and all racers call take_lock together. Prints
``won PID`` or ``lost PID MESSAGE`` (the LockHeldError text), then holds until stdin closes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.errors import LockHeldError
from ctrlsock.lock import take_lock


def main() -> int:
    socket_path = Path(sys.argv[1])
    barrier = int(sys.argv[2])
    print("ready", flush=True)
    os.read(barrier, 1)
    try:
        lock = take_lock(socket_path, program="racer")
    except LockHeldError as error:
        print(f"lost {os.getpid()} {' '.join(str(error).split())}", flush=True)
        sys.stdin.read()
        return 0
    print(f"won {os.getpid()}", flush=True)
    sys.stdin.read()
    lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
