"""Take a socket's lock with ctrlsock.lock.take_lock, print ``ready PID [INHERITOR_PID]``, hold it.

Usage: lock_holder.py SOCKET_PATH [--program NAME] [--spawn-inheritor] [--keep-record]

Holds the lock until a line or EOF arrives on stdin, then releases it (clearing the record unless
``--keep-record``) and exits. With ``--spawn-inheritor`` it first starts lock_inheritor.py with the
lock descriptor passed on purpose (fork+exec with ``pass_fds``), as Kea passes its lock to kea-lfc.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.lock import take_lock


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket_path", type=Path)
    parser.add_argument("--program", default=None)
    parser.add_argument("--spawn-inheritor", action="store_true")
    parser.add_argument("--keep-record", action="store_true")
    options = parser.parse_args()

    lock = take_lock(options.socket_path, program=options.program)
    words = ["ready", str(os.getpid())]
    inheritor = None
    if options.spawn_inheritor:
        fd = lock.fileno()
        inheritor = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lock_inheritor.py")), str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert inheritor.stdout is not None
        line = inheritor.stdout.readline()
        if not line.startswith("ready"):
            print(f"inheritor failed: {line!r}", flush=True)
            return 1
        words.append(str(inheritor.pid))
    print(" ".join(words), flush=True)
    sys.stdin.readline()
    lock.release(clear_record=not options.keep_record)
    print("released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
