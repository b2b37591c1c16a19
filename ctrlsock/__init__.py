"""ctrlsock: a daemon's Unix control socket, done right.

The lock and who holds it, recovery that removes only what is provably orphaned, and a JSON command
channel wire-compatible with ISC Kea's.

Names are imported on first use (PEP 562): ``ctrlsock status`` runs every few seconds from monitoring and
must not pay for the server, asyncio or filelock when it only probes. Type checkers see plain imports
instead, so a mistyped name is an error for them rather than ``Any``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ctrlsock.errors import (
    AuthenticationError,
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    CommandError,
    CtrlSockError,
    HttpStatusError,
    LocalProtocolError,
    LockError,
    LockHeldError,
    ProtocolError,
    RecoveryError,
    RemoteProtocolError,
    ReplyError,
    ServerError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TlsError,
    TruncatedReplyError,
    UnsafePathError,
)

if TYPE_CHECKING:
    from ctrlsock.async_client import send_command_async, send_raw_async
    from ctrlsock.client import send_command, send_raw
    from ctrlsock.lock import HolderRecord, SocketLock, lock_path_for, read_record, take_lock, try_take_lock
    from ctrlsock.probe import Holder, ProbeReport, State, probe, probe_paths
    from ctrlsock.protocol import JsonValue, Reply, Request, Result
    from ctrlsock.recover import Action, CleanupResult, check_directory_safe, cleanup, remove_orphans
    from ctrlsock.server import (
        Access,
        CommandContext,
        ConfigProvider,
        ControlServer,
        HttpListenerConfig,
        HttpUser,
        JsonFileConfig,
        ServerConfig,
        TlsConfig,
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
    "HttpListenerConfig": "ctrlsock.server",
    "HttpUser": "ctrlsock.server",
    "JsonFileConfig": "ctrlsock.server",
    "JsonValue": "ctrlsock.protocol",
    "ProbeReport": "ctrlsock.probe",
    "Reply": "ctrlsock.protocol",
    "Request": "ctrlsock.protocol",
    "Result": "ctrlsock.protocol",
    "ServerConfig": "ctrlsock.server",
    "SocketLock": "ctrlsock.lock",
    "State": "ctrlsock.probe",
    "TlsConfig": "ctrlsock.server",
    "check_directory_safe": "ctrlsock.recover",
    "cleanup": "ctrlsock.recover",
    "lock_path_for": "ctrlsock.lock",
    "probe": "ctrlsock.probe",
    "probe_paths": "ctrlsock.probe",
    "read_record": "ctrlsock.lock",
    "remove_orphans": "ctrlsock.recover",
    "send_command": "ctrlsock.client",
    "send_command_async": "ctrlsock.async_client",
    "send_raw": "ctrlsock.client",
    "send_raw_async": "ctrlsock.async_client",
    "take_lock": "ctrlsock.lock",
    "try_take_lock": "ctrlsock.lock",
}


if not TYPE_CHECKING:
    # Hidden from type checkers: a module __getattr__ makes every unknown name Any to them, so
    # `from ctrlsock import ControlServr` would pass unnoticed; they read the imports above instead.

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'ctrlsock' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        # Interactive completion and help() list the lazy names too, before their first use.
        return sorted(set(globals()) | set(__all__))

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: object) -> None:
            # Loading the submodule ctrlsock.probe binds it as this package's attribute "probe", which
            # would hide the function ctrlsock.probe() for good (its module __getattr__ is then never
            # asked): keep the exported function instead. `from ctrlsock.probe import X` and
            # `from ctrlsock.probe import evidence` still work; `import ctrlsock.probe.evidence as e` cannot,
            # as it reads the package attribute.
            if (
                isinstance(value, types.ModuleType)
                and value.__name__ == f"{__name__}.{name}"
                and name in _LAZY
            ):
                value = getattr(value, name)
            super().__setattr__(name, value)

    sys.modules[__name__].__class__ = _Package


__all__ = [
    "Access",
    "Action",
    "AuthenticationError",
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
    "HttpListenerConfig",
    "HttpStatusError",
    "HttpUser",
    "JsonFileConfig",
    "JsonValue",
    "LocalProtocolError",
    "LockError",
    "LockHeldError",
    "ProbeReport",
    "ProtocolError",
    "RecoveryError",
    "RemoteProtocolError",
    "Reply",
    "ReplyError",
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
    "TlsConfig",
    "TlsError",
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
    "send_command_async",
    "send_raw",
    "send_raw_async",
    "take_lock",
    "try_take_lock",
]
