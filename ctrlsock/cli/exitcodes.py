"""Every exit code of the command line, what each means, and which one a state or an error ends in.

The numbers are an interface scripts and monitoring rely on: never renumber one. The help texts, the
man page and the README's tables are all formatted from the tables below, so they cannot drift apart.

``status`` follows the LSB init-script convention (0 running, 1 dead with files left behind, 3 not
running, 4 unknown) and gives the states LSB has no word for their own codes in the range LSB leaves to
applications (150-199). ``send`` exits with the reply's ``result`` (0-5). Failures that are not an
answer use codes from 64 up, one per cause, the ``sysexits.h`` value where one fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Final

from ctrlsock.errors import (
    AuthenticationError,
    BadReplyError,
    ClientTimeoutError,
    CtrlSockError,
    HttpStatusError,
    LockHeldError,
    ProtocolError,
    RecoveryError,
    ServerError,
    ServerRefusedError,
    SocketNotFoundError,
    SocketPathTooLongError,
    SocketPermissionError,
    TlsError,
    TruncatedReplyError,
    UnsafePathError,
)

__all__ = [
    "CLEANUP_MEANINGS",
    "FAILURE_MEANINGS",
    "SEND_MEANINGS",
    "STATE_EXIT",
    "STATE_MEANINGS",
    "STATE_SEVERITY",
    "CliError",
    "ExitCode",
    "cleanup_exit_code",
    "describe",
    "exit_code_for",
    "markdown_tables",
    "state_codes_text",
    "status_exit_code",
    "worst_state",
]


class ExitCode(IntEnum):
    """Every exit code ``ctrlsock`` uses; :data:`FAILURE_MEANINGS` and friends say what each means."""

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
    # Failures, each its own code.
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
    HTTP_STATUS = 84
    AUTH_FAILED = 85
    TLS_FAILED = 86
    INTERRUPTED = 130


#: A state's exit code, for ``status`` and for what ``cleanup`` leaves. Keys are the values of
#: ``ctrlsock.probe.State`` (a StrEnum, so its members look up the same entries).
STATE_EXIT: Final[dict[str, ExitCode]] = {
    "running": ExitCode.OK,
    "stale": ExitCode.STALE,
    "stopped": ExitCode.STOPPED,
    "unknown": ExitCode.UNKNOWN,
    "stuck": ExitCode.STUCK,
    "foreign": ExitCode.FOREIGN,
    "stopping": ExitCode.STOPPING,
    "unlinked": ExitCode.UNLINKED,
    "not-a-socket": ExitCode.NOT_A_SOCKET,
}

#: "Worst of several", least severe first: a state that needs a human beats one that merely is not fine,
#: and a state known to be broken beats one that could not be judged.
STATE_SEVERITY: Final = (
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

#: What each state means, in the words ``status --help``, the man page and the README use.
STATE_MEANINGS: Final[dict[str, str]] = {
    "running": "a daemon holds the lock and answers",
    "stale": "the daemon is dead and left files behind (nobody holds the lock)",
    "stopped": "nothing holds the lock and nothing is left behind",
    "unknown": "the state cannot be judged from here, e.g. no permission (the reason is printed)",
    "stuck": "the lock is held but nothing answers",
    "foreign": "a server that does not hold the lock answers on the socket",
    "stopping": "the daemon that holds the lock has begun a clean stop and drains its connections",
    "unlinked": "a live daemon holds the lock, but its socket or lock file was deleted under it",
    "not-a-socket": "the socket path names a regular file, a directory or a symlink",
}

#: ``cleanup``'s column of the state codes.
CLEANUP_MEANINGS: Final[dict[ExitCode, str]] = {
    ExitCode.OK: "every path ends stopped and nothing was refused",
    ExitCode.STALE: "a path is still stale",
    ExitCode.UNKNOWN: "a path's state is unknown",
    ExitCode.STUCK: "refused: stuck",
    ExitCode.FOREIGN: "refused: foreign",
    ExitCode.STOPPING: "a daemon is stopping there",
    ExitCode.UNLINKED: "refused: unlinked",
    ExitCode.NOT_A_SOCKET: "refused: not a socket",
}

#: ``send``'s exit codes 0-5 are the reply's Kea result.
SEND_MEANINGS: Final[dict[int, str]] = {
    0: "result 0, success",
    1: "result 1, error",
    2: "result 2, unsupported command",
    3: "result 3, empty",
    4: "result 4, conflict",
    5: "result 5, fatal",
    int(ExitCode.NOT_A_SOCKET): "the path names something that is not a socket",
}

#: Failures any command can end in, each printed as one ``ctrlsock: ...`` line on stderr.
FAILURE_MEANINGS: Final[dict[ExitCode, str]] = {
    ExitCode.USAGE: "usage error: an unknown option, a bad option value, or a value given to a flag",
    ExitCode.BAD_ARGUMENTS: (
        "`--arguments` or a request read by `send` is not valid, or its @FILE cannot be read"
    ),
    ExitCode.NO_SUCH_SOCKET: "no such socket",
    ExitCode.PATH_TOO_LONG: "the socket path is too long for a unix socket (107 bytes)",
    ExitCode.NO_SOCKETS_IN_DIRECTORY: "a directory PATH holds no socket and no `*.lock` file (`cleanup`)",
    ExitCode.REFUSED: "connection refused: nobody is listening on the socket",
    ExitCode.INTERNAL: "internal error (a bug: set `CTRLSOCK_DEBUG=1` to see the traceback)",
    ExitCode.OS_ERROR: "another operating-system error",
    ExitCode.LOCK_HELD: "`serve`: another process holds the socket's lock (the message names its pid)",
    ExitCode.UNSAFE_PATH: (
        "unsafe path: a symlink, another user's directory, or a directory others can write to"
    ),
    ExitCode.SERVER_FAILED: (
        "`serve`: the server could not start (bad `--config`, cannot bind, a lock file it may not use...)"
    ),
    ExitCode.TIMEOUT: "timeout",
    ExitCode.TRUNCATED_REPLY: (
        "truncated reply: the server closed the connection before a complete JSON value"
    ),
    ExitCode.PERMISSION_DENIED: "permission denied (`send`, `serve`; `status` says unknown instead)",
    ExitCode.BAD_REPLY: "unparsable reply, or a `result` outside 0-5",
    ExitCode.CLEANUP_RUNNING: "`cleanup` refused because a daemon is running there",
    ExitCode.CLEANUP_REFUSED: "`cleanup` refused to remove or clear something (the line says why)",
    ExitCode.BENCH_ERRORS: "`bench`: some commands failed, got unparsable replies or an unexpected result",
    ExitCode.NOT_CONFIRMED: (
        "`cleanup --terminate-holders` was not confirmed (stdin is not a terminal and `--yes` is missing)"
    ),
    ExitCode.ERROR: "any other ctrlsock error",
    ExitCode.HTTP_STATUS: "an HTTP(S) endpoint answered with an HTTP error status (400, 404, 500...)",
    ExitCode.AUTH_FAILED: "an HTTP(S) endpoint refused the credentials, or wanted some (HTTP 401 or 403)",
    ExitCode.TLS_FAILED: (
        "TLS failed: an untrusted or mismatched certificate, a refused client certificate, or a `--ca`, "
        "`--cert` or `--key` file that cannot be loaded"
    ),
    ExitCode.INTERRUPTED: "interrupted",
}


class CliError(CtrlSockError):
    """A problem with what the admin asked for (bad input, refused confirmation), with its exit code."""

    def __init__(self, message: str, *, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _state_rank(state: str) -> int:
    return STATE_SEVERITY.index(state) if state in STATE_SEVERITY else STATE_SEVERITY.index("unknown")


def worst_state(states: Sequence[str]) -> str:
    """The most severe of ``states`` in :data:`STATE_SEVERITY` order (``unknown`` when there are none)."""
    return max(states, key=_state_rank, default="unknown")


def status_exit_code(states: Sequence[str]) -> ExitCode:
    """The ``status`` exit code for several paths: the worst state's."""
    return STATE_EXIT.get(worst_state(states), ExitCode.UNKNOWN)


def cleanup_exit_code(final_states: Sequence[str], *, refused: bool = False) -> ExitCode:
    """``cleanup``'s exit code from the state each path was left in and whether anything was refused.

    0 only when every path ends ``stopped`` and nothing was refused. A path left in a state that needs a
    human (unknown, stuck, foreign, stopping, unlinked, not-a-socket) gives that state's code; otherwise a
    running daemon gives ``CLEANUP_RUNNING`` (``running`` is 0 for ``status`` but a refusal here), any
    other refusal ``CLEANUP_REFUSED``, and a path still stale ``STALE``.
    """
    remaining = [state for state in final_states if state != "stopped"]
    serious = [state for state in remaining if state not in {"running", "stale"}]
    if serious:
        return status_exit_code(serious)
    if "running" in remaining:
        return ExitCode.CLEANUP_RUNNING
    if refused:
        return ExitCode.CLEANUP_REFUSED
    if remaining:
        return ExitCode.STALE
    return ExitCode.OK


def state_codes_text(states: Sequence[str] = STATE_SEVERITY) -> str:
    """``0 running, 3 stopped, ...``: the state codes in severity order, for help texts."""
    return ", ".join(f"{int(STATE_EXIT[state])} {state}" for state in states)


def describe(code: ExitCode) -> str:
    """One line on what ``code`` means, for the man page."""
    if code in FAILURE_MEANINGS:
        return FAILURE_MEANINGS[code]
    parts = [f"{state}: {STATE_MEANINGS[state]}" for state, value in STATE_EXIT.items() if value == code]
    if code in CLEANUP_MEANINGS:
        parts.append(f"cleanup: {CLEANUP_MEANINGS[code]}")
    if int(code) in SEND_MEANINGS:
        parts.append(f"send: {SEND_MEANINGS[int(code)]}")
    return "; ".join(parts)


def markdown_tables() -> str:
    """The README's exit code section: the answers table, the severity order and the failures table."""
    answers = sorted({*(int(code) for code in STATE_EXIT.values()), *SEND_MEANINGS})
    lines = [
        "| code | `status` (worst of several paths) | `cleanup` | `send` |",
        "|---:|---|---|---|",
    ]
    for number in answers:
        states = [f"{state}: {STATE_MEANINGS[state]}" for state, code in STATE_EXIT.items() if code == number]
        cleanup = CLEANUP_MEANINGS.get(ExitCode(number), "") if number in set(ExitCode) else ""
        lines.append(f"| {number} | {'; '.join(states)} | {cleanup} | {SEND_MEANINGS.get(number, '')} |")
    lines += [
        "",
        '"Worst" runs in this order: ' + " < ".join(STATE_SEVERITY) + ".",
        "",
        "Any command can also end in one of these failures. Each prints one line, "
        "`ctrlsock: <what went wrong>`, on stderr:",
        "",
        "| code | meaning |",
        "|---:|---|",
    ]
    lines += [f"| {int(code)} | {meaning} |" for code, meaning in sorted(FAILURE_MEANINGS.items())]
    return "\n".join(lines) + "\n"


def exit_code_for(error: BaseException) -> ExitCode:
    """The documented exit code for an error that ends a command."""
    if isinstance(error, CliError):
        return error.exit_code
    # Most specific first: several of these share builtin bases (ConnectionError, PermissionError).
    table: tuple[tuple[type[BaseException], ExitCode], ...] = (
        (SocketPathTooLongError, ExitCode.PATH_TOO_LONG),
        (AuthenticationError, ExitCode.AUTH_FAILED),
        (HttpStatusError, ExitCode.HTTP_STATUS),
        (TlsError, ExitCode.TLS_FAILED),
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
