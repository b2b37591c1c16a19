"""What a daemon configures: the socket's permissions, who may send what, limits and timeouts; and the
``ConfigProvider`` a daemon hands over to get Kea's ``config-*`` commands (with a JSON-file one for
``ctrlsock serve --config FILE``)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from ctrlsock.errors import CommandError
from ctrlsock.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_REQUEST_SIZE,
    DEFAULT_WRITE_DEADLINE,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MODE",
    "DEFAULT_RECHECK_INTERVAL",
    "DEFAULT_REQUEST_DEADLINE",
    "DEFAULT_STOP_GRACE",
    "DEFAULT_TOUCH_INTERVAL",
    "Access",
    "ConfigProvider",
    "JsonFileConfig",
    "ServerConfig",
]

DEFAULT_MODE: Final = 0o600
"""Only the owner by default; 0660 plus a group when asked."""

DEFAULT_BACKLOG: Final = 4096
"""Connection-per-command clients arrive in bursts; the kernel caps this at ``net.core.somaxconn``."""

DEFAULT_STOP_GRACE: Final = 5.0
"""Seconds in-flight replies get to drain after a stop is requested."""

DEFAULT_REQUEST_DEADLINE: Final = 60.0
"""Seconds a started request has to arrive whole, however steadily its bytes trickle in."""

DEFAULT_MAX_BUFFERED: Final = 256 * 1024 * 1024
"""Bytes held at once for unfinished requests plus unsent replies (a reply shared by clients counts once)."""

DEFAULT_TOUCH_INTERVAL: Final = 3600.0
"""Seconds between touches of the socket and lock file, so age-based /tmp cleaners pass them by
(PostgreSQL's TouchSocketFiles() does this hourly for the same reason)."""

DEFAULT_RECHECK_INTERVAL: Final = 60.0
"""Seconds between checks that the socket and lock paths still name our files (PostgreSQL: every minute)."""


@dataclass(frozen=True)
class Access:
    """Who may do something, by the peer's ``SO_PEERCRED`` uid/gid.

    ``None`` for both means anyone who can open the socket (its file mode is then the only gate). A peer
    passes when its uid is in ``uids``, or its primary gid or one of its supplementary groups (the kernel's
    ``SO_PEERGROUPS``, as at ``connect()``) is in ``gids``. The server's own effective uid
    always passes: it owns the socket and the daemon, so refusing it would protect nothing.
    """

    uids: frozenset[int] | None = None
    gids: frozenset[int] | None = None

    @classmethod
    def of(cls, uids: Collection[int] | None = None, gids: Collection[int] | None = None) -> Access | None:
        """An ``Access`` for the given lists, or ``None`` when neither restricts anything."""
        if uids is None and gids is None:
            return None
        return cls(
            None if uids is None else frozenset(uids),
            None if gids is None else frozenset(gids),
        )

    def allows(self, uid: int, gid: int, groups: Collection[int] = ()) -> bool:
        if self.uids is not None and uid in self.uids:
            return True
        gids = self.gids
        return gids is not None and (gid in gids or not gids.isdisjoint(groups))


@dataclass(frozen=True)
class ServerConfig:
    """Socket, access and limit settings for a :class:`~ctrlsock.server.ControlServer`.

    Attributes:
        mode: permission bits of the socket file, set before it is bound (0600 by default).
        group: group name or gid to give the socket file (use with ``mode=0o660``).
        allow_uids: when set (or ``allow_gids`` is), only peers with one of these uids (or gids) get
            any command answered; others get a result-1 refusal. The server's own uid always passes.
        allow_gids: see ``allow_uids``; matched against the peer's primary and supplementary groups.
        command_access: per-command restrictions on top of the global ones, e.g.
            ``{"shutdown": Access.of(uids=[0])}``; also accepted by :meth:`ControlServer.command`.
        idle_timeout: seconds a client may stay silent before its request is complete (Kea: 10 s). On
            expiry it gets Kea's ``Connection over control channel timed out`` reply.
        write_deadline: seconds a reply may make no progress (the client reads nothing) before the
            connection is dropped and logged. Separate from ``idle_timeout`` so that an honest slow reader
            gets the whole reply (Kea 2.2 truncates it).
        stop_grace: seconds in-flight replies get to finish after a stop.
        max_request_size: largest request accepted, in bytes.
        max_depth: deepest JSON nesting accepted in a request.
        backlog: ``listen()`` backlog.
        socket_activation: adopt a listening socket passed by systemd (``LISTEN_FDS``) for this path
            instead of binding one; such a socket is never unlinked.
        notify: send ``READY=1``/``STOPPING=1`` to ``$NOTIFY_SOCKET`` when it is set.
        raise_nofile_limit: raise ``RLIMIT_NOFILE``'s soft limit to the hard one when serving starts, so
            thousands of idle clients do not starve ``accept()``.
        max_concurrent_handlers: how many user handlers may run at once (1: one at a time, as Kea does,
            so handlers need no locking among themselves).
        handler_timeout: default per-command timeout in seconds (``None``: none). A client whose handler
            overruns it gets a result-1 reply; the handler's late result is logged and dropped.
        expose_handler_errors: send a failing handler's exception text to the client (Kea does); with
            ``False`` the client gets a generic text and only the log has the detail.
        request_deadline: seconds a request has, from its first byte, to arrive whole (on top of the
            per-read ``idle_timeout``), so a client trickling a byte now and then is still cut off.
        max_buffered: bytes held at once for unfinished requests and unsent replies, all clients
            together. A request that would pass it is answered with result 1 and closed; a reply that would
            pass it is replaced by a result-1 reply saying so. Both are logged.
        touch_interval: seconds between ``utime()`` touches of the socket and lock file (``None``: never).
        recheck_interval: seconds between checks that the socket and lock paths still name our files;
            a deleted socket is bound again (``None``: never check).
        metrics: count each command's result and latency for ``status-get`` (the connection and byte
            counters are always kept).
    """

    mode: int = DEFAULT_MODE
    group: str | int | None = None
    allow_uids: frozenset[int] | None = None
    allow_gids: frozenset[int] | None = None
    command_access: Mapping[str, Access] = field(default_factory=dict)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    write_deadline: float = DEFAULT_WRITE_DEADLINE
    stop_grace: float = DEFAULT_STOP_GRACE
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH
    backlog: int = DEFAULT_BACKLOG
    socket_activation: bool = True
    notify: bool = True
    raise_nofile_limit: bool = True
    max_concurrent_handlers: int = 1
    handler_timeout: float | None = None
    expose_handler_errors: bool = True
    request_deadline: float = DEFAULT_REQUEST_DEADLINE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    touch_interval: float | None = DEFAULT_TOUCH_INTERVAL
    recheck_interval: float | None = DEFAULT_RECHECK_INTERVAL
    metrics: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.mode <= 0o7777:
            raise ValueError(f"mode must be permission bits, not {self.mode:#o}")
        if self.max_concurrent_handlers < 1:
            raise ValueError(
                f"max_concurrent_handlers must be at least 1, not {self.max_concurrent_handlers}"
            )
        for name in ("handler_timeout", "touch_interval", "recheck_interval"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive or None, not {getattr(self, name)}")
        if self.max_buffered <= 0:
            raise ValueError(f"max_buffered must be positive, not {self.max_buffered}")
        for name in ("idle_timeout", "write_deadline", "request_deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.stop_grace < 0:
            raise ValueError(f"stop_grace must not be negative, not {self.stop_grace}")

    @property
    def access(self) -> Access | None:
        return Access.of(self.allow_uids, self.allow_gids)


@runtime_checkable
class ConfigProvider(Protocol):
    """A daemon's configuration, for Kea's ``config-get/-test/-set/-reload/-write`` commands.

    Methods raise :class:`~ctrlsock.errors.CommandError` (or ``ValueError``/``OSError``) to refuse; the
    server turns that into a result-1 reply with the message as its text.
    """

    @property
    def root_key(self) -> str | None:
        """The top-level key a config must have (Kea: ``"Dhcp4"``), or ``None`` for any map."""
        ...

    def get_config(self) -> Any:
        """The current configuration (``config-get``'s arguments)."""
        ...

    def test_config(self, config: Any) -> None:
        """Check ``config`` without applying it."""
        ...

    def set_config(self, config: Any) -> None:
        """Check and apply ``config`` (in memory; ``config-write`` persists it)."""
        ...

    def reload_config(self) -> None:
        """Re-read the configuration from its source and apply it."""
        ...

    def write_config(self, filename: str | None) -> tuple[str, int]:
        """Write the current configuration to ``filename`` (default: its source); returns (path, size)."""
        ...


class JsonFileConfig:
    """A JSON document kept in memory and backed by a file: ``ctrlsock serve --config FILE``.

    Any JSON map is a valid configuration (with ``root_key`` set, it must hold that key mapping to a map,
    as Kea's ``Dhcp4``). ``config-write`` writes atomically (temporary file, fsync, rename) and only into
    the directory of the configuration file: Kea's ``config-write`` wrote anywhere the daemon could, which
    was CVE-2025-32801.
    """

    def __init__(self, path: Path, *, root_key: str | None = None) -> None:
        self.path = Path(path)
        self._root_key = root_key
        self._lock = threading.Lock()
        self._config = self._load()

    @property
    def root_key(self) -> str | None:
        return self._root_key

    def _load(self) -> Any:
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise CommandError(f"cannot read {self.path}: {error.strerror or error}") from error
        try:
            config = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise CommandError(f"{self.path} is not valid JSON: {error}") from error
        self.test_config(config)
        return config

    def get_config(self) -> Any:
        with self._lock:
            return self._config

    def test_config(self, config: Any) -> None:
        if not isinstance(config, dict):
            raise CommandError(f"configuration must be a map, not {_json_type(config)}")
        key = self._root_key
        if key is not None:
            if key not in config:
                raise CommandError(f"Missing mandatory '{key}' parameter.")
            if not isinstance(config[key], dict):
                raise CommandError(f"'{key}' parameter expected to be a map.")

    def set_config(self, config: Any) -> None:
        self.test_config(config)
        with self._lock:
            self._config = config

    def reload_config(self) -> None:
        config = self._load()
        with self._lock:
            self._config = config

    def write_config(self, filename: str | None) -> tuple[str, int]:
        target = self.path if filename is None else Path(filename)
        if not target.is_absolute():
            target = self.path.parent / target
        if target.parent.resolve() != self.path.parent.resolve():
            raise CommandError(f"refusing to write outside {self.path.parent}: {target}")
        with self._lock:
            data = json.dumps(self._config, indent=2).encode() + b"\n"
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))  # keep the mode of the file replaced
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(target)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(temporary).unlink()
            raise
        return str(target), len(data)


def _json_type(value: Any) -> str:
    names = {dict: "map", list: "list", str: "string", bool: "boolean", int: "integer", float: "real"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
