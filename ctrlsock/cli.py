"""The ``ctrlsock`` command line: serve, status, cleanup, send, bench.

Its interface is a contract scripts depend on (issue 4): subcommand names, options and exit codes below
do not change. Parsing is typer's; this module then calls the library, renders, and picks the exit code.

Start-up matters: monitoring runs ``ctrlsock status`` every few seconds. So this module imports only
the standard library at import time; the library modules are imported inside the command that needs
them, and typer itself only when the command line needs it. A plain ``ctrlsock status [PATH...]
[--json] [--timeout S]`` is dispatched without building the typer app (``_fast_status``); anything
else, including any doubt about the arguments, goes through typer, which then parses the same
command line to the same call.

Every error reaches the admin as one line ``ctrlsock: <message>`` on stderr and a distinct exit code
(``ExitCode``); a traceback is a bug (``CTRLSOCK_DEBUG=1`` shows it anyway, for bug reports).
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeAlias

from ctrlsock import __version__
from ctrlsock.errors import (
    BadReplyError,
    ClientTimeoutError,
    CtrlSockError,
    LockHeldError,
    ProtocolError,
    RecoveryError,
    ServerError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TruncatedReplyError,
    UnsafePathError,
)

if TYPE_CHECKING:
    import typer

    # The PATH... argument of status and cleanup, bound for real by build_app (it needs typer).
    _PathArguments: TypeAlias = list[Path] | None

    from ctrlsock.bench import BenchResult
    from ctrlsock.probe import ProbeReport
    from ctrlsock.recover import Action

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "ExitCode",
    "default_socket_path",
    "exit_code_for",
    "main",
    "status_exit_code",
]

PROG: Final = "ctrlsock"
DEFAULT_SOCKET_NAME: Final = "ctrlsock.sock"
DEFAULT_STATUS_TIMEOUT: Final = 1.0
DEFAULT_SEND_TIMEOUT: Final = 10.0
# How long --terminate-holders waits after SIGTERM before SIGKILL.
TERMINATE_GRACE: Final = 5.0


class ExitCode(IntEnum):
    """Every exit code the command line uses; the README's table is generated from the same facts.

    ``status`` follows LSB (0 running, 1 stale, 3 stopped, 4 unknown) and gives the two states LSB has
    no word for their own codes in the range LSB leaves to applications (150-199). ``send`` exits with
    the reply's ``result`` (0-5). Failures that are not an answer use codes above 63, one per cause.
    """

    OK = 0
    # status (and cleanup, for what is left): LSB values, then ours.
    STALE = 1
    STOPPED = 3
    UNKNOWN = 4
    STUCK = 150
    FOREIGN = 151
    STOPPING = 152
    UNLINKED = 153
    NOT_A_SOCKET = 154
    # Failures, each its own code (sysexits.h values where one fits).
    USAGE = 64
    BAD_ARGUMENTS = 65
    NO_SUCH_SOCKET = 66
    PATH_TOO_LONG = 67
    NO_SOCKETS_IN_DIRECTORY = 68
    REFUSED = 69
    INTERNAL = 70
    OS_ERROR = 71
    LOCK_HELD = 72
    UNSAFE_PATH = 73
    SERVER_FAILED = 74
    TIMEOUT = 75
    TRUNCATED_REPLY = 76
    PERMISSION_DENIED = 77
    BAD_REPLY = 78
    CLEANUP_RUNNING = 79
    CLEANUP_REFUSED = 80
    BENCH_ERRORS = 81
    NOT_CONFIRMED = 82
    ERROR = 83
    INTERRUPTED = 130


# "Worst of several": a state that needs a human beats one that merely is not fine, and a state we know
# to be broken beats one we could not judge.
_STATE_SEVERITY: Final = (
    "running",
    "stopped",
    "stopping",
    "stale",
    "unknown",
    "not-a-socket",
    "foreign",
    "unlinked",
    "stuck",
)
_STATE_EXIT: Final = {
    "running": ExitCode.OK,
    "stopped": ExitCode.STOPPED,
    "stale": ExitCode.STALE,
    "unknown": ExitCode.UNKNOWN,
    "foreign": ExitCode.FOREIGN,
    "stuck": ExitCode.STUCK,
    "stopping": ExitCode.STOPPING,
    "unlinked": ExitCode.UNLINKED,
    "not-a-socket": ExitCode.NOT_A_SOCKET,
}


class LogLevel(StrEnum):
    """``serve --log-level`` choices."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class CliError(CtrlSockError):
    """A problem with what the admin asked for (bad input, refused confirmation), with its exit code."""

    def __init__(self, message: str, *, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def worst_state(states: Sequence[str]) -> str:
    """The most severe of ``states``: running < stopped < stale < unknown < foreign < stuck."""
    return max(states, key=_state_rank, default="unknown")


def _state_rank(state: str) -> int:
    return _STATE_SEVERITY.index(state) if state in _STATE_SEVERITY else _STATE_SEVERITY.index("unknown")


def status_exit_code(states: Sequence[str]) -> ExitCode:
    """The ``status`` exit code for several paths: the worst state's."""
    return _STATE_EXIT.get(worst_state(states), ExitCode.UNKNOWN)


def exit_code_for(error: BaseException) -> ExitCode:
    """The documented exit code for an error that ends a command."""
    if isinstance(error, CliError):
        return error.exit_code
    # Most specific first: several of these share builtin bases (ConnectionError, PermissionError).
    table: tuple[tuple[type[BaseException], ExitCode], ...] = (
        (SocketPathTooLongError, ExitCode.PATH_TOO_LONG),
        (SocketNotFoundError, ExitCode.NO_SUCH_SOCKET),
        (ServerRefusedError, ExitCode.REFUSED),
        (SocketPermissionError, ExitCode.PERMISSION_DENIED),
        (ClientTimeoutError, ExitCode.TIMEOUT),
        (TruncatedReplyError, ExitCode.TRUNCATED_REPLY),
        (BadReplyError, ExitCode.BAD_REPLY),
        (ProtocolError, ExitCode.BAD_REPLY),
        (LockHeldError, ExitCode.LOCK_HELD),
        (UnsafePathError, ExitCode.UNSAFE_PATH),
        (RecoveryError, ExitCode.CLEANUP_REFUSED),
        (ServerError, ExitCode.SERVER_FAILED),
        (CtrlSockError, ExitCode.ERROR),
        (PermissionError, ExitCode.PERMISSION_DENIED),
        (OSError, ExitCode.OS_ERROR),
    )
    for kind, code in table:
        if isinstance(error, kind):
            return code
    return ExitCode.INTERNAL


# --- the default socket ---------------------------------------------------------------------------


def default_socket_path(*, create: bool = False) -> Path:
    """The socket a left-out SOCKET/PATH argument means.

    ``$XDG_RUNTIME_DIR/ctrlsock/ctrlsock.sock``, else ``/run/ctrlsock/ctrlsock.sock`` for root, else
    ``/tmp/ctrlsock-$UID/ctrlsock.sock``. With ``create`` (``serve``) the directory is made 0700 if
    missing. Either way an existing directory is checked: ours, not a symlink, not writable by others,
    and under the shared ``/tmp`` not accessible by others at all (anyone may create
    ``/tmp/ctrlsock-$UID`` first and wait for us to talk to their socket).

    Raises:
        UnsafePathError: the directory fails a check.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    private_only = False
    # The XDG base directory spec says a relative value is invalid and must be ignored.
    if runtime and os.path.isabs(runtime):
        directory = Path(runtime) / PROG
    elif os.geteuid() == 0:
        directory = Path("/run") / PROG
    else:
        directory = Path(f"/tmp/{PROG}-{os.getuid()}")
        private_only = True
    if create:
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise UnsafePathError(
                directory, f"cannot create the socket directory: {error.strerror}"
            ) from None
    _check_socket_directory(directory, private_only=private_only)
    return directory / DEFAULT_SOCKET_NAME


def _check_socket_directory(directory: Path, *, private_only: bool) -> None:
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise UnsafePathError(directory, f"cannot check the socket directory: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            directory, "the socket directory is a symlink; remove it or set XDG_RUNTIME_DIR"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(directory, "is not a directory; remove it or set XDG_RUNTIME_DIR")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(
            directory,
            f"the socket directory belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
            "remove it or set XDG_RUNTIME_DIR",
        )
    mode = stat.S_IMODE(info.st_mode)
    forbidden = 0o077 if private_only else 0o022
    if mode & forbidden:
        expected = "0700" if private_only else "not writable by group or others"
        raise UnsafePathError(
            directory, f"the socket directory has mode {mode:04o}, expected {expected}; chmod it"
        )


def _socket_argument(path: Path | None, *, create: bool = False) -> Path:
    """A SOCKET argument resolved (the default when left out) and checked to fit ``sun_path``."""
    resolved = default_socket_path(create=create) if path is None else path
    SocketPathTooLongError.check(resolved)
    return resolved


def _path_arguments(paths: Sequence[Path] | None) -> list[Path]:
    """PATH... arguments: the default socket when none; a socket path must fit ``sun_path``."""
    if not paths:
        return [default_socket_path()]
    for path in paths:
        if path.is_dir():
            continue
        # A ``NAME.lock`` that is not itself a socket stands for the socket NAME (the probe's rule).
        is_lock_name = path.name.endswith(".lock") and not path.is_socket()
        SocketPathTooLongError.check(
            path.with_name(path.name.removesuffix(".lock")) if is_lock_name else path
        )
    return list(paths)


def _probe_all(paths: Sequence[Path], timeout: float) -> list[ProbeReport]:
    """Probe every PATH (directories expanded, each socket once); refuses a directory with no sockets."""
    from ctrlsock.probe import probe_paths  # noqa: PLC0415  (lazy: status start-up)

    reports: dict[Path, ProbeReport] = {}
    for path in paths:
        found = probe_paths([path], timeout=timeout)
        if not found and path.is_dir():
            raise CliError(
                f"no sockets or *.lock files in directory {path}; give a socket path instead",
                exit_code=ExitCode.NO_SOCKETS_IN_DIRECTORY,
            )
        for report in found:
            reports.setdefault(report.socket_path, report)
    return list(reports.values())


# --- output ---------------------------------------------------------------------------------------


class Painter:
    """ANSI colour on a terminal only (never when piped, never with ``NO_COLOR`` or ``TERM=dumb``)."""

    _CODES: Final = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "magenta": "35",
        "cyan": "36",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: Any) -> Painter:
        isatty = getattr(stream, "isatty", None)
        enabled = bool(
            isatty is not None
            and isatty()
            and "NO_COLOR" not in os.environ
            and os.environ.get("TERM", "") != "dumb"
        )
        return cls(enabled)

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(self._CODES[style] for style in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


_STATE_STYLE: Final = {
    "running": ("bold", "green"),
    "stopped": ("bold",),
    "stale": ("bold", "yellow"),
    "stuck": ("bold", "red"),
    "foreign": ("bold", "magenta"),
    "unknown": ("bold", "red"),
}
_HOLDER_STATUS_STYLE: Final = {
    "running": ("green",),
    "stopped": ("yellow",),
    "zombie": ("red",),
    "dead": ("red",),
}


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _value(obj: Any, name: str) -> str:
    """An enum member's value or a plain value, as text (State is a StrEnum, but be liberal)."""
    value = getattr(obj, name)
    return str(getattr(value, "value", value))


def render_report(report: ProbeReport, paint: Painter) -> list[str]:
    """A probe report as a few lines an admin reads at a glance."""
    state = _value(report, "state")
    head = f"{paint(str(report.socket_path), 'bold')}  {paint(state, *_STATE_STYLE.get(state, ()))}"
    if report.answer_ms is not None:
        head += f"  answered in {report.answer_ms:.1f} ms"
    lines = [head]
    for holder in report.holders:
        status = str(holder.status)
        since = f"since {format_time(holder.since)}" if holder.since is not None else ""
        fields = [
            f"pid {holder.pid:<7}",
            f"{holder.program or '?':<15}",
            paint(f"{status:<7}", *_HOLDER_STATUS_STYLE.get(status, ())),
            f"{since:<25}" if since else " " * 25,
            holder.how,
        ]
        lines.append("    " + "  ".join(fields).rstrip())
    lines.extend(f"    {paint('!', 'yellow')} {problem}" for problem in report.problems)
    return lines


def _write_json(document: Any) -> None:
    import json  # noqa: PLC0415  (only --json pays for it)

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _error_line(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


# --- commands, typer-free: parse results in, exit code out ----------------------------------------
# Each takes what typer parsed and returns the exit code; errors are raised and reported once in main().


def run_status(paths: Sequence[Path] | None, *, as_json: bool, timeout: float) -> int:
    reports = _probe_all(_path_arguments(paths), timeout)
    if as_json:
        _write_json([report.to_json() for report in reports])
    else:
        paint = Painter.for_stream(sys.stdout)
        sys.stdout.write("".join(f"{line}\n" for report in reports for line in render_report(report, paint)))
    return status_exit_code([_value(report, "state") for report in reports])


def run_send(
    socket_path: Path | None,
    command: str | None,
    *,
    arguments_text: str | None,
    services: Sequence[str] | None,
    timeout: float,
    raw: bool,
) -> int:
    import json  # noqa: PLC0415

    from ctrlsock.client import send_raw  # noqa: PLC0415
    from ctrlsock.protocol import JsonFeed, Request, decode_reply, encode_request  # noqa: PLC0415

    if command is None:
        # ``ctrlsock send COMMAND``: the one positional given is the command, on the default socket. A
        # lone argument with a slash is a socket whose command was forgotten (no Kea command has one).
        if socket_path is None or "/" in str(socket_path):
            raise CliError("missing COMMAND; see 'ctrlsock send --help'", exit_code=ExitCode.USAGE)
        command, socket_path = str(socket_path), None
    target = _socket_argument(socket_path)
    arguments = parse_arguments(arguments_text)
    request = encode_request(
        Request(command=command, arguments=arguments, service=tuple(services) if services else None)
    )
    data = send_raw(target, request, timeout=timeout)
    # A reply may be as large and deep as the server likes: the limits guard servers, not clients.
    feed = JsonFeed(max_size=None, max_depth=None)
    feed.receive_data(data)
    feed.receive_data(b"")
    try:
        document = feed.next_document()
        if document is None:
            raise TruncatedReplyError(
                f"reply from {target} ended before a complete JSON value ({len(data)} bytes)",
                path=target,
                received=len(data),
            )
        reply = decode_reply(document)
    except ProtocolError as error:
        if raw:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        raise BadReplyError(f"unparsable reply from {target}: {error}", path=target) from None
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_json(json.loads(document))
    if not 0 <= reply.result <= 5:
        raise CliError(
            f"reply result {reply.result} is not a Kea result code (0-5)", exit_code=ExitCode.BAD_REPLY
        )
    return int(reply.result)


def parse_arguments(text: str | None) -> Any:
    """``--arguments``: JSON text, ``@FILE`` to read it from a file, or ``-`` for standard input."""
    import json  # noqa: PLC0415

    if text is None:
        return None
    source = "--arguments"
    if text == "-":
        source = "--arguments from standard input"
        text = sys.stdin.read()
    elif text.startswith("@"):
        file_path = Path(text[1:])
        source = f"--arguments file {file_path}"
        try:
            text = file_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise CliError(f"cannot read {source}: {reason}", exit_code=ExitCode.BAD_ARGUMENTS) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            exit_code=ExitCode.BAD_ARGUMENTS,
        ) from None
    except RecursionError:
        raise CliError(f"{source} is nested too deeply", exit_code=ExitCode.BAD_ARGUMENTS) from None


def run_serve(
    socket_path: Path | None,
    *,
    config_file: Path | None,
    mode: int,
    group: str | None,
    allow_uids: Sequence[int],
    allow_gids: Sequence[int],
    log_level: str,
) -> int:
    from ctrlsock.server.daemon import run_daemon  # noqa: PLC0415

    target = _socket_argument(socket_path, create=socket_path is None)
    return run_daemon(
        target,
        config_file=config_file,
        mode=mode,
        group=group,
        allow_uids=list(allow_uids),
        allow_gids=list(allow_gids),
        log_level=log_level,
    )


def run_cleanup(
    paths: Sequence[Path] | None,
    *,
    dry_run: bool,
    as_json: bool,
    terminate: bool,
    yes: bool,
    timeout: float = DEFAULT_STATUS_TIMEOUT,
    confirm: Callable[[str], bool] | None = None,
) -> int:
    from ctrlsock.probe import State, probe  # noqa: PLC0415
    from ctrlsock.recover import cleanup, terminate_holders  # noqa: PLC0415

    sockets = [report.socket_path for report in _probe_all(_path_arguments(paths), timeout)]
    paint = Painter.for_stream(sys.stdout)
    documents: list[dict[str, Any]] = []
    finals: list[str] = []
    for socket_path in sockets:
        terminated: list[Action] = []
        if terminate:
            report = probe(socket_path, timeout=timeout)
            if report.state == State.STUCK:
                if not dry_run:
                    _confirm_termination(report, yes=yes, confirm=confirm)
                terminated = terminate_holders(
                    report, grace=TERMINATE_GRACE, timeout=timeout, dry_run=dry_run
                )
        result = cleanup(socket_path, dry_run=dry_run, timeout=timeout)
        actions = [*terminated, *result.actions]
        after = _value(result, "state_after")
        refused = any(action.what == "refused" for action in actions)
        if dry_run and not refused and after in {"stale", "stuck"} and (after == "stale" or terminated):
            after = "stopped"  # what a real run would leave: judged by the checks the dry run made
        if not as_json:
            for action in actions:
                sys.stdout.write(render_action(action, paint) + "\n")
            if not actions:
                word = "nothing to do" if after == "stopped" else "kept"
                sys.stdout.write(f"{socket_path}: {paint(word, 'bold')}: {after}\n")
        finals.append(after)
        documents.append(
            {
                "socket": str(socket_path),
                "dry_run": dry_run,
                "state_before": _value(result, "state_before"),
                "state_after": after,
                "actions": [_action_json(action) for action in actions],
            }
        )
    if as_json:
        _write_json(documents)
    return cleanup_exit_code(finals)


def cleanup_exit_code(final_states: Sequence[str]) -> ExitCode:
    """0 only when every path ends ``stopped``; otherwise the worst remaining state's ``status`` code.

    ``running`` has exit code 0 for ``status`` but is a refusal here: ``CLEANUP_RUNNING`` (79), used when
    nothing worse is left.
    """
    remaining = [state for state in final_states if state != "stopped"]
    if not remaining:
        return ExitCode.OK
    others = [state for state in remaining if state != "running"]
    return status_exit_code(others) if others else ExitCode.CLEANUP_RUNNING


def _confirm_termination(report: ProbeReport, *, yes: bool, confirm: Callable[[str], bool] | None) -> None:
    if yes:
        return
    victims = ", ".join(f"pid {holder.pid} ({holder.program or '?'})" for holder in report.lock_holders)
    question = f"Terminate {victims}, which keep the lock of {report.socket_path}?"
    if confirm is None or not sys.stdin.isatty():
        raise CliError(
            f"not terminating {victims} without confirmation: standard input is not a terminal; add --yes",
            exit_code=ExitCode.NOT_CONFIRMED,
        )
    if not confirm(question):
        raise CliError("not confirmed: nothing terminated, nothing removed", exit_code=ExitCode.NOT_CONFIRMED)


def _action_json(action: Action) -> dict[str, Any]:
    return {
        "path": str(action.path),
        "what": action.what,
        "done": action.done,
        "reason": action.reason,
        "pid": action.pid,
    }


_ACTION_STYLE: Final = {
    "removed": ("bold", "green"),
    "cleared": ("green",),
    "terminated": ("bold", "yellow"),
    "killed": ("bold", "yellow"),
    "refused": ("bold", "red"),
    "kept": ("yellow",),
}


def render_action(action: Action, paint: Painter) -> str:
    """``PATH: what: why``, one line per path touched, refused or left."""
    what = paint(action.what, *_ACTION_STYLE.get(action.what, ("cyan",)))
    return f"{action.path}: {what}: {action.reason}" if action.reason else f"{action.path}: {what}"


def run_bench(
    socket_path: Path | None,
    *,
    clients: int,
    duration: float,
    command: str,
    arguments_text: str | None,
    as_json: bool,
) -> int:
    from ctrlsock import bench  # noqa: PLC0415
    from ctrlsock.client import send_raw  # noqa: PLC0415

    target = _socket_argument(socket_path)
    arguments = parse_arguments(arguments_text)
    request = bench.encode_bench_request(command, arguments)
    # One command first, through the client: a missing socket or a refusal gets its own clear error and
    # exit code instead of a run that counts nothing but errors.
    with contextlib.suppress(TruncatedReplyError, BadReplyError, ProtocolError):
        send_raw(target, request, timeout=bench.DEFAULT_TIMEOUT)  # a bad reply is the run's to count
    result = bench.run_bench(target, clients=clients, duration=duration, command=command, arguments=arguments)
    if as_json:
        _write_json(result.to_json())
    else:
        sys.stdout.write("\n".join(render_bench(result, Painter.for_stream(sys.stdout))) + "\n")
    if result.error_count or not result.commands:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result.errors.items()))
        raise CliError(
            f"bench: {result.error_count} of {result.error_count + result.commands} commands failed"
            + (f" ({kinds})" if kinds else ""),
            exit_code=ExitCode.BENCH_ERRORS,
        )
    return ExitCode.OK


def render_bench(result: BenchResult, paint: Painter) -> list[str]:
    latency = result.latency_ms()

    def ms(key: str) -> str:
        value = latency[key]
        return "-" if value is None else f"{value:.3f}"

    results = "  ".join(f"{code}: {count}" for code, count in sorted(result.results.items())) or "-"
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(result.errors.items()))
    return [
        f"{paint(str(result.socket_path), 'bold')}  {result.command}, {result.clients} clients, "
        f"{result.duration:.2f} s",
        f"    commands    {result.commands} ({paint(f'{result.commands_per_s:.1f}/s', 'bold')})",
        f"    latency ms  p50 {ms('p50')}  p90 {ms('p90')}  p99 {ms('p99')}  max {ms('max')}",
        f"    errors      {paint(str(result.error_count), 'red') if result.error_count else '0'}"
        + (f" ({errors})" if errors else ""),
        f"    results     {results}",
    ]


# --- the typer app, built on first use ------------------------------------------------------------

_HELP: Final = (
    "A daemon's Unix control socket: serve it, see who holds it, clean up after a crash, talk to it.\n\n"
    "Works with ctrlsock daemons and with ISC Kea daemons alike. A left-out SOCKET or PATH means the "
    "default socket: $XDG_RUNTIME_DIR/ctrlsock/ctrlsock.sock, else /run/ctrlsock/ctrlsock.sock for "
    "root, else /tmp/ctrlsock-$UID/ctrlsock.sock."
)

_STATUS_HELP: Final = (
    "Say what state each socket is in, who holds its lock, and what is wrong.\n\n"
    "Never takes the lock, never changes anything: safe from monitoring. A directory PATH means every "
    "socket and *.lock file in it.\n\n"
    "Exit code (LSB status; the worst of several paths): 0 running, 1 stale (dead daemon's files left "
    "behind), 3 stopped, 4 unknown (e.g. no permission), 150 stuck (lock held but nobody answers, "
    "e.g. a child inherited it), 151 foreign (a server that does not hold the lock answers)."
)

_STATUS_EPILOG: Final = """Examples:

  ctrlsock status                        # the default socket

  ctrlsock status /run/kea/kea4-ctrl-socket

  ctrlsock status /run/mydaemon --json   # every socket in a directory, as JSON
"""

_CLEANUP_HELP: Final = (
    "Remove what a dead daemon left behind, and nothing else.\n\n"
    "Removes a stale socket and lock file only after proving no daemon serves them: never a running "
    "daemon's files, never a regular file, directory, symlink or another user's file. A stuck lock "
    "(held by a process that does not serve, typically a child that inherited the descriptor) is "
    "refused and its holders named, unless --terminate-holders is given: then, after confirmation or "
    "--yes, they get SIGTERM, then SIGKILL if still alive after 5 s, and the path is cleaned.\n\n"
    "Exit code: 0 when every path ends stopped; otherwise that of the worst state left (1 stale, 4 "
    "unknown, 150 stuck, 151 foreign), 79 when a daemon is running there."
)

_CLEANUP_EPILOG: Final = """Examples:

  ctrlsock cleanup --dry-run /run/kea/kea4-ctrl-socket

  ctrlsock cleanup /run/kea/kea4-ctrl-socket

  ctrlsock cleanup --terminate-holders --yes /run/kea/kea4-ctrl-socket
"""

_SEND_HELP: Final = (
    "Send one command and print the reply as indented JSON.\n\n"
    "A drop-in for `socat UNIX:PATH -,ignoreeof` and kea-shell on a unix socket. With one positional "
    "argument it is the COMMAND, sent to the default socket.\n\n"
    "Exit code: the reply's result (0 success, 1 error, 2 unsupported, 3 empty, 4 conflict, 5 fatal), "
    "or: 66 no such socket, 69 connection refused, 77 permission denied, 75 timeout, 76 truncated "
    "reply, 78 unparsable reply, 65 bad --arguments, 67 socket path too long."
)

_SEND_EPILOG: Final = """Examples:

  ctrlsock send /run/kea/kea4-ctrl-socket list-commands

  ctrlsock send /run/kea/kea4-ctrl-socket config-get | jq .arguments

  ctrlsock send SOCKET config-set --arguments @new-config.json

  echo '{"remove": true}' | ctrlsock send SOCKET lease4-del --arguments -

  ctrlsock send --raw SOCKET version-get   # the exact bytes the server sent
"""

_SERVE_HELP: Final = (
    "Run a daemon that owns SOCKET, in the foreground, until SIGTERM, SIGINT or `shutdown`.\n\n"
    "Takes the socket's lock, recovers what a crashed predecessor left, binds with the final mode and "
    "serves the built-in commands (list-commands, version-get, build-report, status-get, shutdown). "
    "With --config FILE it keeps that JSON document as its configuration and also serves config-get, "
    "config-test, config-set, config-reload (re-reads FILE) and config-write, as Kea does. Logs one "
    "line when ready and sends READY=1 under systemd. If another process holds the lock it exits at "
    "once (code 72) naming it."
)

_SERVE_EPILOG: Final = """Examples:

  ctrlsock serve                                   # the default socket

  ctrlsock serve /run/mydaemon/ctrl.sock --config /etc/mydaemon.json

  ctrlsock serve /run/mydaemon/ctrl.sock --mode 0660 --group monitoring
"""

_BENCH_HELP: Final = (
    "Measure a control socket: N client processes in a closed loop, each doing connect, send, read to "
    "EOF, close.\n\n"
    "Prints commands per second, latency p50/p90/p99/max and errors; every reply is parsed. Works "
    "against ctrlsock and Kea sockets alike. Exit code 0, or 81 when any command failed."
)

_BENCH_EPILOG: Final = """Examples:

  ctrlsock bench /run/mydaemon/ctrl.sock --clients 8 --duration 10

  ctrlsock bench /run/kea/kea4-ctrl-socket --command status-get --json
"""


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit()


def _check_mode(text: str) -> str:
    try:
        mode = int(text, 8)
    except ValueError:
        raise typer.BadParameter(f"must be an octal mode such as 0600, not {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise typer.BadParameter(f"must be a permission mode between 0000 and 0777, not {text}")
    return text


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive number of seconds, not {value}")
    return value


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _status_command(
    paths: _PathArguments = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per path.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", callback=_positive, help="How long to wait for an answer."
        ),
    ] = DEFAULT_STATUS_TIMEOUT,
) -> int:
    return run_status(paths, as_json=as_json, timeout=timeout)


def _cleanup_command(
    paths: _PathArguments = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done and why; change nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array, one object per socket.")
    ] = False,
    terminate: Annotated[
        bool,
        typer.Option("--terminate-holders", help="End the processes that keep a stuck lock (asks first)."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before terminating holders.")] = False,
) -> int:
    return run_cleanup(paths, dry_run=dry_run, as_json=as_json, terminate=terminate, yes=yes, confirm=_ask)


def _ask(question: str) -> bool:
    return bool(typer.confirm(question, default=False))


def _send_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    socket_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="SOCKET", readable=False, help="The control socket (default: the default socket)."
        ),
    ] = None,
    command: Annotated[
        str | None, typer.Argument(metavar="COMMAND", help="The command, e.g. list-commands.")
    ] = None,
    arguments: Annotated[
        str | None,
        typer.Option(
            "--arguments",
            "-a",
            metavar="JSON|@FILE|-",
            help="The command's arguments: JSON, @FILE or - (stdin).",
        ),
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service", metavar="NAME", help="Add NAME to the request's service list (repeatable)."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", callback=_positive, help="Give up after this long."),
    ] = DEFAULT_SEND_TIMEOUT,
    raw: Annotated[bool, typer.Option("--raw", help="Print the reply's exact bytes.")] = False,
) -> int:
    return run_send(
        socket_path, command, arguments_text=arguments, services=service, timeout=timeout, raw=raw
    )


def _serve_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    socket_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="SOCKET", readable=False, help="The socket to own (default: the default socket)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            readable=False,
            help="A JSON configuration to serve with config-* commands.",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option("--mode", metavar="MODE", callback=_check_mode, help="The socket's permissions, octal."),
    ] = "0600",
    group: Annotated[
        str | None, typer.Option("--group", metavar="GROUP", help="Give the socket to this group.")
    ] = None,
    allow_uid: Annotated[
        list[int] | None,
        typer.Option("--allow-uid", metavar="UID", help="Accept only these peer uids (repeatable)."),
    ] = None,
    allow_gid: Annotated[
        list[int] | None,
        typer.Option("--allow-gid", metavar="GID", help="Accept only these peer gids (repeatable)."),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="How much to log on stderr.")
    ] = LogLevel.INFO,
) -> int:
    return run_serve(
        socket_path,
        config_file=config,
        mode=int(mode, 8),
        group=group,
        allow_uids=allow_uid or [],
        allow_gids=allow_gid or [],
        log_level=log_level.value,
    )


def _bench_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    socket_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="SOCKET", readable=False, help="The control socket (default: the default socket)."
        ),
    ] = None,
    clients: Annotated[
        int, typer.Option("--clients", "-n", metavar="N", min=1, help="Client processes.")
    ] = 4,
    duration: Annotated[
        float,
        typer.Option("--duration", metavar="SECONDS", callback=_positive, help="How long to run."),
    ] = 5.0,
    command: Annotated[
        str, typer.Option("--command", metavar="NAME", help="The command to send.")
    ] = "version-get",
    arguments: Annotated[
        str | None, typer.Option("--arguments", "-a", metavar="JSON|@FILE|-", help="The command's arguments.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> int:
    return run_bench(
        socket_path,
        clients=clients,
        duration=duration,
        command=command,
        arguments_text=arguments,
        as_json=as_json,
    )


_app: typer.Typer | None = None


def build_app() -> typer.Typer:
    """The typer app (built once; importing typer is most of ``ctrlsock``'s start-up time)."""
    global _app, typer, _PathArguments  # noqa: PLW0603  (bound lazily; the command signatures name them)
    if _app is not None:
        return _app
    import typer  # noqa: PLC0415

    # Path parameters say readable=False: typer would otherwise refuse an existing path it cannot read
    # (a socket, or another user's), which the library must see and report with its own exit code.
    _PathArguments = Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="PATH...",
            readable=False,
            help="Socket paths or directories (default: the default socket).",
        ),
    ]

    app = typer.Typer(
        name=PROG,
        help=_HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["--help", "-h"]},
    )
    app.callback()(_root)
    app.command("serve", help=_SERVE_HELP, epilog=_SERVE_EPILOG)(_serve_command)
    app.command("status", help=_STATUS_HELP, epilog=_STATUS_EPILOG)(_status_command)
    app.command("cleanup", help=_CLEANUP_HELP, epilog=_CLEANUP_EPILOG)(_cleanup_command)
    app.command("send", help=_SEND_HELP, epilog=_SEND_EPILOG)(_send_command)
    app.command("bench", help=_BENCH_HELP, epilog=_BENCH_EPILOG)(_bench_command)
    _app = app
    return app


def __getattr__(name: str) -> Any:
    # ``ctrlsock.cli.app`` is the typer app, built only when asked for.
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- entry point ----------------------------------------------------------------------------------


def _fast_status(args: Sequence[str]) -> int | None:
    """``status`` without typer, for the plain forms monitoring runs; None means "let typer parse".

    Accepted: ``status`` then paths not starting with ``-``, ``--json``, ``--timeout S`` or
    ``--timeout=S`` with S a positive finite number. Anything else (help, completion, ``--``, an
    unknown or repeated option, a bad value) returns None so typer gives its usual answer.
    """
    if not args or args[0] != "status" or f"_{PROG.upper()}_COMPLETE" in os.environ:
        return None
    paths: list[Path] = []
    as_json = False
    timeout = DEFAULT_STATUS_TIMEOUT
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--json":
            as_json = True
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
            paths.append(Path(arg))
    return run_status(paths, as_json=as_json, timeout=timeout)


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line on ``args`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        fast = _fast_status(argv)
        if fast is not None:
            return fast
        app = build_app()
        command = typer.main.get_command(app)
        try:
            result = command.main(args=argv, prog_name=PROG, standalone_mode=False)
        except typer.TyperException as error:  # click's ClickException: a usage error
            return _usage_error(error)
        except typer.Abort:
            _error_line("aborted")
            return ExitCode.INTERRUPTED
        return int(result) if isinstance(result, int) else ExitCode.OK
    except CtrlSockError as error:
        _error_line(str(error))
        return exit_code_for(error)
    except KeyboardInterrupt:
        _error_line("interrupted")
        return ExitCode.INTERRUPTED
    except OSError as error:
        name = f": {error.filename}" if error.filename else ""
        _error_line(f"{error.strerror or error}{name}")
        return exit_code_for(error)
    except Exception as error:
        if os.environ.get("CTRLSOCK_DEBUG"):
            raise
        _error_line(
            f"internal error: {type(error).__name__}: {error} "
            "(a bug: please report it; CTRLSOCK_DEBUG=1 shows the traceback)"
        )
        return ExitCode.INTERNAL


def _usage_error(error: typer.TyperException) -> int:
    message = error.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    where = getattr(context, "command_path", PROG) if context is not None else PROG
    # ``ctrlsock`` alone prints the help and raises a usage error without a message.
    if message:
        _error_line(f"{message}; see '{where} --help'")
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
