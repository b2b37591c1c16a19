"""The ``ctrlsock`` command line: serve, status, cleanup, send, bench.

Its interface is a contract scripts depend on: subcommand names, options and exit codes do not change.
One module per reason to change:

- ``entry``: the console script, and ``status`` parsed without typer (start-up time);
- ``exitcodes``: every exit code, what it means, and which one a state or an error ends in;
- ``paths``: the default socket and the SOCKET / PATH arguments;
- ``render``: human lines (escaped, coloured on a terminal) and JSON;
- ``prometheus``: ``status --format prometheus``, the text exposition format (loaded only for it);
- ``actions``: the commands as typer-free ``run_*`` functions;
- ``typer_app``: the typer app and its help texts.

Importing this package loads the standard library and ``ctrlsock.errors`` only; typer is loaded with
``app``, on first use.
"""

from __future__ import annotations

from typing import Any

from ctrlsock.cli.entry import main, run
from ctrlsock.cli.exitcodes import CliError, ExitCode, exit_code_for, status_exit_code
from ctrlsock.cli.paths import DEFAULT_SOCKET_NAME, default_socket_path

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "CliError",
    "ExitCode",
    "default_socket_path",
    "exit_code_for",
    "main",
    "run",
    "status_exit_code",
]


def __getattr__(name: str) -> Any:
    # ``ctrlsock.cli.app`` is the typer app, built only when asked for.
    if name == "app":
        from ctrlsock.cli.typer_app import build_app  # noqa: PLC0415

        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
