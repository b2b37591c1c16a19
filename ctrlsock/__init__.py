"""ctrlsock: a daemon's Unix control socket, done right.

The lock and who holds it, recovery that removes only what is provably orphaned, and a JSON command
channel wire-compatible with ISC Kea's.

Names are imported on first use (PEP 562): ``ctrlsock status`` runs every few seconds from monitoring and
must not pay for the server, asyncio or filelock when it only probes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctrlsock.errors import (
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    CommandError,
    CtrlSockError,
    LocalProtocolError,
    LockError,
    LockHeldError,
    ProtocolError,
    RecoveryError,
    RemoteProtocolError,
    ServerError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TruncatedReplyError,
    UnsafePathError,
)

if TYPE_CHECKING:
    from ctrlsock.client import send_command, send_raw
    from ctrlsock.lock import HolderRecord, SocketLock, lock_path_for, read_record, take_lock, try_take_lock
    from ctrlsock.probe import Holder, ProbeReport, State, probe, probe_paths
    from ctrlsock.protocol import Reply, Request, Result
    from ctrlsock.recover import Action, CleanupResult, check_directory_safe, cleanup, remove_orphans
    from ctrlsock.server import (
        Access,
        CommandContext,
        ConfigProvider,
        ControlServer,
        JsonFileConfig,
        ServerConfig,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Access": "ctrlsock.server",
    "Action": "ctrlsock.recover",
    "CleanupResult": "ctrlsock.recover",
    "CommandContext": "ctrlsock.server",
    "ConfigProvider": "ctrlsock.server",
    "ControlServer": "ctrlsock.server",
    "Holder": "ctrlsock.probe",
    "HolderRecord": "ctrlsock.lock",
    "JsonFileConfig": "ctrlsock.server",
    "ProbeReport": "ctrlsock.probe",
    "Reply": "ctrlsock.protocol",
    "Request": "ctrlsock.protocol",
    "Result": "ctrlsock.protocol",
    "ServerConfig": "ctrlsock.server",
    "SocketLock": "ctrlsock.lock",
    "State": "ctrlsock.probe",
    "check_directory_safe": "ctrlsock.recover",
    "cleanup": "ctrlsock.recover",
    "lock_path_for": "ctrlsock.lock",
    "probe": "ctrlsock.probe",
    "probe_paths": "ctrlsock.probe",
    "read_record": "ctrlsock.lock",
    "remove_orphans": "ctrlsock.recover",
    "send_command": "ctrlsock.client",
    "send_raw": "ctrlsock.client",
    "take_lock": "ctrlsock.lock",
    "try_take_lock": "ctrlsock.lock",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctrlsock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Access",
    "Action",
    "BadReplyError",
    "CleanupResult",
    "ClientError",
    "ClientTimeoutError",
    "CommandContext",
    "CommandError",
    "ConfigProvider",
    "ControlServer",
    "CtrlSockError",
    "Holder",
    "HolderRecord",
    "JsonFileConfig",
    "LocalProtocolError",
    "LockError",
    "LockHeldError",
    "ProbeReport",
    "ProtocolError",
    "RecoveryError",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "Result",
    "ServerConfig",
    "ServerError",
    "ServerRefusedError",
    "SocketLock",
    "SocketNotFoundError",
    "SocketPathTooLongError",
    "SocketPermissionError",
    "State",
    "TruncatedReplyError",
    "UnsafePathError",
    "__version__",
    "check_directory_safe",
    "cleanup",
    "lock_path_for",
    "probe",
    "probe_paths",
    "read_record",
    "remove_orphans",
    "send_command",
    "send_raw",
    "take_lock",
    "try_take_lock",
]
