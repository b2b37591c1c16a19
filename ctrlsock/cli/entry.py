"""The entry point: parse the plain ``status`` forms without typer, hand the rest to the typer app.

Monitoring runs ``ctrlsock status`` every few seconds, so its start-up is kept to the standard library
and the probe: a plain ``status [PATH...] [--json] [--format F] [--timeout S]`` is parsed here
(``fast_status``); anything else, including any doubt about the arguments, goes through typer, which
parses the same command line to the same call.

Every error reaches the admin as one line ``ctrlsock: <message>`` on stderr and a distinct exit code; a
traceback is a bug (``CTRLSOCK_DEBUG=1`` shows it anyway, for bug reports).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from ctrlsock.cli.actions import DEFAULT_STATUS_TIMEOUT, run_status
from ctrlsock.cli.exitcodes import CliError, ExitCode, exit_code_for
from ctrlsock.cli.paths import PROG, is_url
from ctrlsock.cli.render import StatusFormat, error_line
from ctrlsock.errors import CtrlSockError

if TYPE_CHECKING:
    import typer

__all__ = ["FLAGS", "check_flag_values", "fast_status", "main", "run"]

#: Each subcommand's flags: options that take no value (tests keep this equal to the typer app's).
FLAGS: Final[dict[str, frozenset[str]]] = {
    "serve": frozenset({"--http-allow-insecure", "--http-cert-required", "--no-http-cert-required"}),
    "status": frozenset({"--json"}),
    "cleanup": frozenset({"--dry-run", "--json", "--terminate-holders", "--yes", "-y"}),
    "send": frozenset({"--raw", "--json"}),
    "bench": frozenset({"--json"}),
}
# The words click would read as a boolean: after a flag, almost surely meant as its value.
_BOOLEAN_WORDS: Final = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def check_flag_values(args: Sequence[str]) -> None:
    """Refuse a flag followed by a boolean word, as in ``status --json true``.

    A flag takes no value, so the word would silently become a PATH (a relative path named ``true``,
    which is stopped, exit 3). A path of that name is still reachable as ``./true`` or after ``--``.

    Raises:
        CliError: ``USAGE``.
    """
    command_at = next((index for index, arg in enumerate(args) if not arg.startswith("-")), None)
    if command_at is None:
        return
    flags = FLAGS.get(args[command_at], frozenset())
    for flag, following in zip(args[command_at + 1 :], args[command_at + 2 :], strict=False):
        if flag == "--":
            return
        if flag in flags and following.lower() in _BOOLEAN_WORDS:
            raise CliError(
                f"{flag} takes no value, and {following!r} would be read as an argument; "
                f"leave it out, or write ./{following} for a path of that name",
                exit_code=ExitCode.USAGE,
            )


def fast_status(args: Sequence[str]) -> int | None:
    """``status`` without typer, for the plain forms monitoring runs; None means "let typer parse".

    Accepted: ``status`` then paths not starting with ``-``, ``--json``, ``--format F`` or
    ``--format=F`` with F one of :class:`StatusFormat`, ``--timeout S`` or ``--timeout=S`` with S a
    positive finite number. Anything else (help, completion, ``--``, an
    unknown option, a bad value) returns None so typer gives its usual answer.
    """
    if not args or args[0] != "status" or f"_{PROG.upper()}_COMPLETE" in os.environ:
        return None
    paths: list[Path | str] = []
    as_json = False
    output: StatusFormat | None = None
    timeout = DEFAULT_STATUS_TIMEOUT
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--json":
            as_json = True
        elif arg == "--format" or arg.startswith("--format="):
            text = arg.partition("=")[2] if "=" in arg else next(rest, None)
            if text not in set(StatusFormat):
                return None
            output = StatusFormat(text)
        elif arg == "--timeout" or arg.startswith("--timeout="):
            text = arg.partition("=")[2] if "=" in arg else next(rest, None)
            try:
                timeout = float(text) if text is not None and not text.startswith("-") else math.nan
            except ValueError:
                return None
            if not (math.isfinite(timeout) and timeout > 0):
                return None
        elif arg.startswith("-") or not arg:
            return None
        else:
            # A URL stays text: Path() would fold its "//".
            paths.append(arg if is_url(arg) else Path(arg))
    return run_status(paths, as_json=as_json, timeout=timeout, output=output)


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line on ``args`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        check_flag_values(argv)
        fast = fast_status(argv)
        if fast is not None:
            return fast
        return _run_typer(argv)
    except CtrlSockError as error:
        error_line(str(error))
        return exit_code_for(error)
    except KeyboardInterrupt:
        error_line("interrupted")
        return ExitCode.INTERRUPTED
    except OSError as error:
        name = f": {error.filename}" if error.filename else ""
        error_line(f"{error.strerror or error}{name}")
        return exit_code_for(error)
    except Exception as error:
        if os.environ.get("CTRLSOCK_DEBUG"):
            raise
        error_line(
            f"internal error: {type(error).__name__}: {error} "
            "(a bug: please report it; CTRLSOCK_DEBUG=1 shows the traceback)"
        )
        return ExitCode.INTERNAL


def _run_typer(argv: list[str]) -> int:
    import typer  # noqa: PLC0415  (most of the start-up time: only when the fast path declines)

    from ctrlsock.cli.typer_app import build_app  # noqa: PLC0415

    command = typer.main.get_command(build_app())
    try:
        result: Any = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except typer.TyperException as error:  # click's ClickException: a usage error
        return _usage_error(error)
    except typer.Abort:
        error_line("aborted")
        return ExitCode.INTERRUPTED
    return int(result) if isinstance(result, int) else ExitCode.OK


def _usage_error(error: typer.TyperException) -> int:
    message = error.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    where = getattr(context, "command_path", PROG) if context is not None else PROG
    # ``ctrlsock`` alone prints the help and raises a usage error without a message.
    if message:
        error_line(f"{message}; see '{where} --help'")
    code = getattr(error, "exit_code", 2)
    # click uses 2 for usage errors, which send uses for result 2 (unsupported): ours is 64.
    return ExitCode.USAGE if code == 2 else int(code)


def main() -> NoReturn:
    """The ``ctrlsock`` console script."""
    code = run()
    # Flush here so a closed pipe (``ctrlsock status | head -1``) is an exit code, not a traceback.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)
