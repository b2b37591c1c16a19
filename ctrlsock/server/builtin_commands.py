"""The commands every Kea daemon answers (DESIGN.md section 4), with Kea's texts where Kea has them."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ctrlsock.errors import CommandError
from ctrlsock.protocol import Reply, Result

from .commands import CommandContext, CommandRegistry
from .config import ConfigProvider

if TYPE_CHECKING:
    from .core import ControlServer

__all__ = ["BUILTIN_COMMANDS", "CONFIG_COMMANDS", "register_builtins"]

BUILTIN_COMMANDS = ("build-report", "list-commands", "shutdown", "status-get", "version-get")
CONFIG_COMMANDS = ("config-get", "config-reload", "config-set", "config-test", "config-write")


def register_builtins(server: ControlServer, registry: CommandRegistry) -> None:
    def list_commands(arguments: Any, context: CommandContext) -> Reply:
        return Reply(Result.SUCCESS, "", registry.names())

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
            "connections-served": stats.served,
            "connections-open": stats.open,
            "replies-dropped": stats.dropped,
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
        server.shutdown_requested(exit_value, context.peer)
        return Reply(Result.SUCCESS, "Shutting down.")

    registry.add("list-commands", list_commands, cacheable=True)
    registry.add("version-get", version_get, cacheable=True)
    registry.add("build-report", build_report, cacheable=True)
    registry.add("status-get", status_get)
    registry.add("shutdown", shutdown)
    # list-commands' cached reply must follow registrations.
    registry.on_change(lambda: registry.invalidate("list-commands"))

    provider = server.config_provider
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


def _register_config_commands(
    server: ControlServer, registry: CommandRegistry, provider: ConfigProvider
) -> None:
    def config_get(arguments: Any, context: CommandContext) -> Reply:
        return Reply(Result.SUCCESS, "", provider.get_config())

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

    registry.add("config-get", config_get)
    registry.add("config-test", config_test)
    registry.add("config-set", config_set)
    registry.add("config-reload", config_reload)
    registry.add("config-write", config_write)
