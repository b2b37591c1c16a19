"""What the registry and the built-in commands may know about the server: a small read-only view."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ctrlsock.lock import SocketLock

from .stats import ServerStats

__all__ = ["ServerInfo"]


class ServerInfo(Protocol):
    """The server as the built-ins and handlers see it (``context.server``); ``ControlServer`` is one."""

    @property
    def program(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def extended_version(self) -> str: ...

    @property
    def build_report(self) -> str: ...

    @property
    def socket_path(self) -> Path: ...

    @property
    def stats(self) -> ServerStats: ...

    @property
    def lock(self) -> SocketLock | None: ...

    @property
    def socket_activated(self) -> bool: ...

    @property
    def http_urls(self) -> list[str]: ...

    @property
    def started_monotonic(self) -> float: ...

    @property
    def reloaded_monotonic(self) -> float: ...

    def mark_reloaded(self) -> None: ...
