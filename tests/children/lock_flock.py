"""Hold a plain flock on a file the way Kea does: no record written. Print ``ready PID``, hold.

Usage: lock_flock.py LOCK_PATH

Kea 2.2 opens ``<socket>.lock`` and flocks it without writing anything; this reproduces that
without Kea. Holds until a line or EOF on stdin.
"""

from __future__ import annotations

import fcntl
import os
import sys


def main() -> int:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
