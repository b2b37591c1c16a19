"""Run a probe or a recovery as ``nobody`` (started as root): prints one JSON document.

Usage: probe_as_user.py probe|paths|cleanup|remove SOCKET
``remove`` takes the lock itself and calls ``remove_orphans`` with it.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Imported while still root: the interpreter may live where nobody cannot read (e.g. /root/.pyenv).
# filelock too: ctrlsock.lock imports it only when a lock is taken, which here is after setuid.
import filelock  # noqa: E402, F401

from ctrlsock.lock import take_lock  # noqa: E402
from ctrlsock.probe import probe, probe_paths  # noqa: E402
from ctrlsock.recover import cleanup, remove_orphans  # noqa: E402


def main() -> int:
    mode, socket_path = sys.argv[1], Path(sys.argv[2])
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)

    document: object
    if mode == "probe":
        document = probe(socket_path, timeout=0.5).to_json()
    elif mode == "paths":
        document = [report.to_json() for report in probe_paths([socket_path], timeout=0.5)]
    elif mode == "cleanup":
        document = cleanup(socket_path, timeout=0.5).to_json()
    else:
        with take_lock(socket_path) as lock:
            document = [action.to_json() for action in remove_orphans(lock)]
    print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
