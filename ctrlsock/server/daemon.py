"""``ctrlsock serve``: a ready-to-run daemon that owns a socket and serves the built-in commands.

Runs the epoll engine on the main thread (no thread hand-off on the hot path), stops cleanly on SIGTERM,
SIGINT or the ``shutdown`` command, logs one line when ready and sends ``READY=1`` under systemd.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ctrlsock import __version__
from ctrlsock.errors import CommandError, ServerError

from .config import JsonFileConfig, ServerConfig
from .core import ControlServer
from .http_config import HttpListenerConfig
from .kea_config import listeners_from_document

__all__ = ["run_daemon"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _configure_logging(log_level: str) -> None:
    level = _LEVELS.get(log_level.lower())
    if level is None:
        raise ServerError(f"log level must be one of {', '.join(_LEVELS)}, not {log_level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ctrlsock serve[%(process)d]: %(levelname)s %(message)s"))
    root = logging.getLogger("ctrlsock")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run_daemon(
    socket_path: Path,
    *,
    config_file: Path | None = None,
    mode: int = 0o600,
    group: str | None = None,
    allow_uids: Sequence[int] = (),
    allow_gids: Sequence[int] = (),
    log_level: str = "info",
    http: Sequence[HttpListenerConfig] = (),
    http_defaults: HttpListenerConfig | None = None,
) -> int:
    """Own ``socket_path`` in the foreground until SIGTERM, SIGINT or ``shutdown``; returns the exit code.

    Args:
        socket_path: the socket to serve on (its lock is ``<socket_path>.lock``).
        config_file: a JSON document served through ``config-get/-test/-set/-reload/-write``.
        mode: the socket's permission bits.
        group: group name or number for the socket file.
        allow_uids: when non-empty (or ``allow_gids`` is), only these peer uids/gids get answers.
        allow_gids: see ``allow_uids``.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        http: HTTP(S) listeners serving the same commands (``--http``).
        http_defaults: for the listeners of ``config_file``'s Kea 3 style ``control-sockets``, what such
            an entry cannot say: ``allow_insecure`` and the timeouts.

    Returns:
        The ``exit-value`` a ``shutdown`` command asked for, else 0.

    Raises:
        LockHeldError: another process holds the socket's lock (the message names it).
        ServerError: the configuration cannot be loaded, a listener is not valid or would expose the
            commands, or the socket cannot be set up. Nothing is bound then.
    """
    _configure_logging(log_level)
    provider = None
    listeners = list(http)
    if config_file is not None:
        try:
            provider = JsonFileConfig(config_file)
        except CommandError as error:
            raise ServerError(f"cannot load the configuration: {error.text}") from error
        # Read once: config-set and config-reload change the document, not the listeners (Kea reopens
        # them; here a restart does).
        try:
            listeners += listeners_from_document(
                provider.get_config(), base_dir=config_file.parent, defaults=http_defaults
            )
        except ServerError as error:
            raise ServerError(f"{config_file}: {error}") from None
    access_given = bool(allow_uids) or bool(allow_gids)
    config = ServerConfig(
        mode=mode,
        group=group,
        allow_uids=frozenset(allow_uids) if access_given else None,
        allow_gids=frozenset(allow_gids) if access_given else None,
    )
    server = ControlServer(
        socket_path,
        program="ctrlsock",
        version=__version__,
        extended_version=f"{__version__}\nctrlsock serve (python {sys.version.split()[0]})",
        config=config,
        config_provider=provider,
        http=listeners,
    )

    def stop(number: int, frame: object) -> None:
        logging.getLogger("ctrlsock.server").info("%s received; stopping", signal.Signals(number).name)
        server.request_stop()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return server.exit_value
