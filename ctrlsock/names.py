"""The names of the files around a control socket: its lock file and its temporary bind name.

One place for the naming rule, so that the server that creates these files and the probe and recovery
code that judge them always agree on which names belong to which socket.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = [
    "BIND_SUFFIX",
    "LOCK_SUFFIX",
    "bind_path_for",
    "is_bind_name",
    "lock_path_for",
    "socket_name_for_bind",
    "socket_name_for_lock",
]

#: ``<socket>.lock``, as Kea names the lock file of its control socket.
LOCK_SUFFIX: Final = ".lock"
#: The server binds at ``.<socket>.bind~`` and then ``link()``s it into place, so the socket path never names
#: a half-ready socket. The name is derived from the socket's, so recovery can find the debris of a crash
#: between bind and link; only the holder of the socket's lock ever creates or removes it.
BIND_SUFFIX: Final = ".bind~"

# Releases up to 0.1.0 bound under ``.<socket>.<8 hex digits>~``; recognised so their debris is recoverable.
_LEGACY_BIND_NAME: Final = re.compile(r"\.(?P<socket>.+)\.[0-9a-f]{8}~")


def lock_path_for(socket_path: Path) -> Path:
    """The lock file that guards ``socket_path``: ``<socket>.lock``."""
    return socket_path.with_name(socket_path.name + LOCK_SUFFIX)


def bind_path_for(socket_path: Path) -> Path:
    """The temporary name the server binds ``socket_path`` under before linking it into place."""
    return socket_path.with_name(f".{socket_path.name}{BIND_SUFFIX}")


def socket_name_for_lock(name: str) -> str | None:
    """The socket name a lock file's name guards (``ctrl.sock.lock`` -> ``ctrl.sock``), or ``None``."""
    if name.endswith(LOCK_SUFFIX) and len(name) > len(LOCK_SUFFIX):
        return name[: -len(LOCK_SUFFIX)]
    return None


def socket_name_for_bind(name: str) -> str | None:
    """The socket name a temporary bind name is for (``.ctrl.sock.bind~`` -> ``ctrl.sock``), or ``None``."""
    if name.startswith(".") and name.endswith(BIND_SUFFIX) and len(name) > len(BIND_SUFFIX) + 1:
        return name[1 : -len(BIND_SUFFIX)]
    legacy = _LEGACY_BIND_NAME.fullmatch(name)
    return legacy.group("socket") if legacy else None


def is_bind_name(name: str) -> bool:
    """Whether ``name`` is a temporary bind name (ours, or an older release's)."""
    return socket_name_for_bind(name) is not None
