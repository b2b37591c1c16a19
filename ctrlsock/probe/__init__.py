"""Read-only diagnosis of a control socket path: who holds its lock, and does anything answer.

A probe never takes the lock and never writes a byte to any file: taking the lock even briefly can make a
starting daemon fail (its own non-blocking ``flock`` would meet ours), and a status check that changed what
it looks at would destroy the evidence an admin needs.

It gathers evidence (:mod:`.evidence`, all the I/O), then judges it (:mod:`.judge`, pure) into a
:class:`State` with holders and problems (:mod:`.model`). The states: ``running`` the lock is held and the
socket answers (a busy owner that uses CPU time but answers late is running too, with a problem saying so);
``stopped`` nothing held and nothing left behind (or a cleared record, or a missing directory, said in a
problem); ``stale`` nobody holds the lock but a socket file or a dead owner's record is left (a crash: always
recoverable by taking the lock, though cleanup may refuse a directory others can write); ``stuck`` the lock
or the listening socket is held by processes that make no progress (stopped, or no CPU time used while a
connection waits); ``foreign`` only a server that does not hold the lock answers on the socket;
``stopping`` the recorded owner holds the lock and drains its connections after a clean stop began;
``unlinked`` a live daemon holds the lock but its socket or lock file was deleted under it;
``not-a-socket`` the socket path names a regular file, a directory or a symlink; ``unknown`` we cannot tell
(no permission, with the reason).
"""

from __future__ import annotations

from typing import Final

from ctrlsock.probe.model import PROBE_COMMAND, Holder, HolderHow, ProbeReport, State
from ctrlsock.probe.paths import probe, probe_paths

__all__ = [
    "HOW_INHERITED_DESCRIPTOR",
    "HOW_LOCK_OWNER",
    "HOW_RECORDED",
    "HOW_RECORDED_AND_LOCKER",
    "PROBE_COMMAND",
    "Holder",
    "HolderHow",
    "ProbeReport",
    "State",
    "probe",
    "probe_paths",
]

# The older names of HolderHow members, kept for callers written against them.
HOW_RECORDED: Final = HolderHow.RECORDED
HOW_RECORDED_AND_LOCKER: Final = HolderHow.RECORDED_AND_LOCKER
HOW_LOCK_OWNER: Final = HolderHow.LOCK_OWNER
HOW_INHERITED_DESCRIPTOR: Final = HolderHow.INHERITED_DESCRIPTOR
