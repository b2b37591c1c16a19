"""Rename this process (``comm``) to argv[1], print ``ready PID``, wait for stdin to close.

Usage: lock_named.py NAME

Lets tests check that /proc/PID/stat is parsed after the last ``)`` even when the name holds
``)``, ``(`` and spaces.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    Path("/proc/self/comm").write_text(sys.argv[1])
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
