"""Keep an inherited lock descriptor open: print ``ready PID``, then wait until killed.

Usage: lock_inheritor.py FD

Stands in for kea-lfc or a hook script that inherited a daemon's lock. It reads from a pipe nobody
writes to, so it lives on after its parent was killed, until the test kills it.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    fd = int(sys.argv[1])
    os.fstat(fd)  # fails loudly if the descriptor was not passed
    read_end, _write_end = os.pipe()
    print(f"ready {os.getpid()}", flush=True)
    # Our stdout pipe's reader dies with the parent; nothing is written after "ready".
    os.read(read_end, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
