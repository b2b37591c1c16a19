"""The commands every Kea daemon answers, with Kea's texts where Kea has them.

``list-commands``, ``version-get``, ``build-report``, ``status-get`` and ``shutdown`` run inline on the I/O
thread (they are quick and touch only the server's own state). The ``config-*`` commands call the daemon's
``ConfigProvider``, which is daemon code, so they run as user handlers do (a worker thread, one at a time
by default).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final, cast

from ctrlsock.errors import CommandError, LocalProtocolError
from ctrlsock.protocol import Reply, Result, encode_reply

from .commands import CommandContext, CommandRegistry, Handler, PeerCredentials
from .config import ConfigProvider
from .info import ServerInfo

__all__ = ["BUILTIN_COMMANDS", "CONFIG_COMMANDS", "register_builtins"]

BUILTIN_COMMANDS = ("build-report", "list-commands", "shutdown", "status-get", "version-get")
CONFIG_COMMANDS = ("config-get", "config-reload", "config-set", "config-test", "config-write")


ShutdownAction = Callable[[int, PeerCredentials | None], None]


def register_builtins(
    server: ServerInfo,
    registry: CommandRegistry,
    *,
    provider: ConfigProvider | None,
    shutdown_requested: ShutdownAction,
) -> None:
    def list_commands(arguments: Any, context: CommandContext) -> Reply:
        # A fresh list typed as JSON: a list[str] is not a list[JsonValue] (lists are invariant).
        return Reply(Result.SUCCESS, "", [*registry.names()])

    def version_get(arguments: Any, context: CommandContext) -> Reply:
        return Reply(Result.SUCCESS, server.version, {"extended": server.extended_version})

    def build_report(arguments: Any, context: CommandContext) -> Reply:
        return Reply(Result.SUCCESS, server.build_report)

    def status_get(arguments: Any, context: CommandContext) -> Reply:
        now = time.monotonic()
        stats = server.stats
        lock = server.lock
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime": int(now - server.started_monotonic),
            "reload": int(now - server.reloaded_monotonic),
            "program": server.program,
            "socket": str(server.socket_path),
            "lock": str(lock.lock_path) if lock is not None else None,
            "socket-activated": server.socket_activated,
            "http": server.http_urls,
            "connections-served": stats.served,
            "connections-open": stats.open,
            "replies-dropped": stats.dropped,
            "commands-running": stats.running,
            "commands-waiting": stats.waiting,
            # An extension key: Kea's clients ignore keys they do not know.
            "ctrlsock": stats.extension(),
        }
        return Reply(Result.SUCCESS, "", status)

    def shutdown(arguments: Any, context: CommandContext) -> Reply:
        exit_value = 0
        if isinstance(arguments, dict) and "exit-value" in arguments:
            value = arguments["exit-value"]
            if not isinstance(value, int) or isinstance(value, bool):
                # Kea 2.2's text for a non-integer exit-value.
                return Reply(Result.ERROR, "parameter 'exit-value' is not an integer")
            exit_value = value
        shutdown_requested(exit_value, context.peer)
        return Reply(Result.SUCCESS, "Shutting down.")

    registry.add("list-commands", list_commands, cacheable=True, inline=True)
    registry.add("version-get", version_get, cacheable=True, inline=True)
    registry.add("build-report", build_report, cacheable=True, inline=True)
    registry.add("status-get", status_get, inline=True)
    registry.add("shutdown", shutdown, inline=True)
    # list-commands' cached reply must follow registrations.
    registry.on_change(lambda: registry.invalidate("list-commands"))

    if provider is not None:
        _register_config_commands(server, registry, provider)


def _config_argument(provider: ConfigProvider, arguments: Any) -> Any:
    """Kea's DControllerBase::configTestHandler checks, with its texts."""
    if arguments is None:
        raise CommandError("Missing mandatory 'arguments' parameter.")
    key = provider.root_key
    if key is None:
        if not isinstance(arguments, dict):
            raise CommandError("'arguments' parameter expected to be a map.")
        return arguments
    if not isinstance(arguments, dict) or key not in arguments:
        raise CommandError(f"Missing mandatory '{key}' parameter.")
    if not isinstance(arguments[key], dict):
        raise CommandError(f"'{key}' parameter expected to be a map.")
    return arguments


_BIG: Final = 64
"""Containers with at least this many entries are written entry by entry when a config is encoded."""
_BATCH: Final = 256
"""Entries of a big container encoded by one ``json.dumps`` call."""


def _dumps(value: Any) -> bytes:
    """Compact JSON as the protocol module writes it (raw bytes kept through surrogateescape)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


_OPEN_LEVELS: Final = 3
"""The outer levels of a config (``{"Dhcp4": {"subnet4": [...]}}``) are opened whatever their size."""


def _is_big(value: Any, depth: int) -> bool:
    if isinstance(value, dict):
        return (depth < _OPEN_LEVELS or len(value) >= _BIG) and all(isinstance(key, str) for key in value)
    return isinstance(value, list) and (depth < _OPEN_LEVELS or len(value) >= _BIG)


def _write_json(out: bytearray, value: Any, depth: int = 0) -> None:
    """Append ``value``'s compact JSON to ``out``, big containers a batch of entries at a time.

    ``json.dumps`` of a whole config holds its list of chunks, then the joined text, then its bytes: about
    three times the encoding at once. Written in batches into one growing buffer (which glibc grows in
    place with ``mremap``), the peak stays near the encoding itself.
    """
    if not _is_big(value, depth):
        out += _dumps(value)
        return
    is_map = isinstance(value, dict)
    out += b"{" if is_map else b"["
    first = True
    batch: Any = {} if is_map else []

    def flush() -> None:
        nonlocal first, batch
        if batch:
            if not first:
                out.extend(b",")
            out.extend(_dumps(batch)[1:-1])
            first = False
            batch = {} if is_map else []

    for entry in value.items() if is_map else value:
        item = entry[1] if is_map else entry
        if _is_big(item, depth + 1):
            flush()
            if not first:
                out += b","
            if is_map:
                out += _dumps(entry[0]) + b":"
            _write_json(out, item, depth + 1)
            first = False
            continue
        if is_map:
            batch[entry[0]] = item
        else:
            batch.append(item)
        if len(batch) >= _BATCH:
            flush()
    flush()
    out += b"}" if is_map else b"]"


def encode_config_reply(config: Any) -> bytes | bytearray:
    """``config-get``'s reply, byte for byte what ``encode_reply(Reply(0, "", config))`` gives."""
    if not isinstance(config, dict | list):
        return encode_reply(Reply(Result.SUCCESS, "", config))
    out = bytearray(b'{"result":0,"arguments":')
    try:
        _write_json(out, config)
    except (TypeError, ValueError, RecursionError) as error:
        raise LocalProtocolError(f"cannot encode as JSON: {error}") from None
    out += b"}"
    return out


class _EncodedConfig:
    """config-get's encoded reply, kept while the provider returns the very same config object.

    Clients asking for an unchanged config share one buffer: forty clients that do not read a 46 MiB
    reply then hold 46 MiB, not forty encodings of it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: object = None
        self._encoded: bytes | bytearray | None = None

    def reply(self, config: object) -> bytes | bytearray:
        with self._lock:
            if self._encoded is None or self._config is not config:
                self._encoded = None  # drop the old one before encoding the new
                self._encoded = encode_config_reply(config)
                self._config = config
            return self._encoded


def _register_config_commands(
    server: ServerInfo, registry: CommandRegistry, provider: ConfigProvider
) -> None:
    encoded = _EncodedConfig()

    def config_get(arguments: Any, context: CommandContext) -> bytes | bytearray:
        return encoded.reply(provider.get_config())

    def config_test(arguments: Any, context: CommandContext) -> Reply:
        config = _config_argument(provider, arguments)
        try:
            provider.test_config(config)
        except (ValueError, OSError) as error:
            raise CommandError(str(error)) from error
        return Reply(Result.SUCCESS, "Configuration seems sane.")

    def config_set(arguments: Any, context: CommandContext) -> Reply:
        config = _config_argument(provider, arguments)
        try:
            provider.set_config(config)
        except (ValueError, OSError) as error:
            raise CommandError(str(error)) from error
        server.mark_reloaded()
        return Reply(Result.SUCCESS, "Configuration successful.")

    def config_reload(arguments: Any, context: CommandContext) -> Reply:
        try:
            provider.reload_config()
        except (CommandError, ValueError, OSError) as error:
            # Kea: "Config reload failed: " + what().
            text = error.text if isinstance(error, CommandError) else str(error)
            return Reply(Result.ERROR, f"Config reload failed: {text}")
        server.mark_reloaded()
        return Reply(Result.SUCCESS, "Configuration successful.")

    def config_write(arguments: Any, context: CommandContext) -> Reply:
        filename: str | None = None
        if arguments is not None:
            if not isinstance(arguments, dict):
                raise CommandError("'arguments' parameter expected to be a map.")
            if "filename" in arguments:
                if not isinstance(arguments["filename"], str):
                    raise CommandError("passed parameter 'filename' is not a string")
                filename = arguments["filename"]
        try:
            path, size = provider.write_config(filename)
        except (CommandError, ValueError, OSError) as error:
            text = error.text if isinstance(error, CommandError) else str(error)
            return Reply(Result.ERROR, f"Error during config-write: {text}")
        return Reply(
            Result.SUCCESS, f"Configuration written to {path} successful", {"filename": path, "size": size}
        )

    registry.add("config-get", cast(Handler, config_get))  # returns its encoded reply
    registry.add("config-test", config_test)
    registry.add("config-set", config_set)
    registry.add("config-reload", config_reload)
    registry.add("config-write", config_write)
