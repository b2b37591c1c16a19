"""The commands without typer: what was parsed goes in, the exit code comes out.

Each ``run_*`` calls the library, renders, and returns an exit code; errors are raised and reported
once, by the entry point. The library modules are imported inside the command that needs them, so
that ``status`` pays neither for the server nor for recovery.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ctrlsock.cli.exitcodes import CliError, ExitCode, cleanup_exit_code, status_exit_code
from ctrlsock.cli.paths import is_url, path_arguments, socket_argument
from ctrlsock.cli.render import (
    Painter,
    StatusFormat,
    escape,
    render_action,
    render_bench,
    render_report,
    value_of,
    write_json,
    write_lines,
)
from ctrlsock.errors import BadReplyError, ProtocolError, TruncatedReplyError

if TYPE_CHECKING:
    from ctrlsock.cli.http_actions import HttpOptions
    from ctrlsock.cli.prometheus import SocketMetrics
    from ctrlsock.probe import ProbeReport
    from ctrlsock.recover import Action
    from ctrlsock.server.http_config import HttpListenerConfig

__all__ = [
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_STATUS_TIMEOUT",
    "TERMINATE_GRACE",
    "ServeHttpOptions",
    "gather_metrics",
    "parse_arguments",
    "read_request",
    "run_bench",
    "run_cleanup",
    "run_send",
    "run_serve",
    "run_status",
    "status_format",
]

DEFAULT_STATUS_TIMEOUT: Final = 1.0
DEFAULT_SEND_TIMEOUT: Final = 10.0
# How long --terminate-holders waits after SIGTERM before SIGKILL.
TERMINATE_GRACE: Final = 5.0


def _probe_all(paths: Sequence[Path], timeout: float, *, empty_directory_ok: bool) -> list[ProbeReport]:
    """Probe every PATH (directories expanded, each socket once), one report per PATH at least.

    A directory with no socket and no lock file (a cleanly stopped Kea leaves exactly that) reads as
    ``stopped`` with a note for ``status``; ``cleanup`` refuses it, since a mistyped directory there is
    more likely than one with nothing to clean.
    """
    from ctrlsock.names import lock_path_for  # noqa: PLC0415
    from ctrlsock.probe import ProbeReport, State, probe_paths  # noqa: PLC0415  (lazy: status start-up)

    reports: dict[Path, ProbeReport] = {}
    for path in paths:
        found = probe_paths([path], timeout=timeout)
        # The probe reports an empty directory as the directory itself (or not at all).
        if _is_directory(path) and all(
            report.socket_path == path and report.state == State.STOPPED for report in found
        ):
            if not empty_directory_ok:
                raise CliError(
                    f"no sockets or *.lock files in directory {path}; give a socket path instead",
                    exit_code=ExitCode.NO_SOCKETS_IN_DIRECTORY,
                )
            found = found or [
                ProbeReport(
                    socket_path=path,
                    lock_path=lock_path_for(path),
                    state=State.STOPPED,
                    problems=[f"the directory {path} holds no socket and no *.lock file"],
                )
            ]
        for report in found:
            reports.setdefault(report.socket_path, report)
    return list(reports.values())


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def status_format(as_json: bool, chosen: StatusFormat | None) -> StatusFormat:
    """The output ``status`` writes: ``--json`` is ``--format json``; the two must not disagree.

    Raises:
        CliError: ``USAGE`` for ``--json`` with another ``--format``.
    """
    if as_json and chosen not in {None, StatusFormat.JSON}:
        raise CliError(f"--json and --format {chosen} disagree; give one of them", exit_code=ExitCode.USAGE)
    return StatusFormat.JSON if as_json else chosen or StatusFormat.TEXT


def run_status(
    paths: Sequence[Path | str] | None,
    *,
    as_json: bool,
    timeout: float,
    output: StatusFormat | None = None,
    http: HttpOptions | None = None,
) -> int:
    """Probe socket paths and ask URLs; a URL's report says what cannot be judged from afar."""
    chosen = status_format(as_json, output)
    urls = [str(path) for path in paths or () if is_url(path)]
    files = [Path(path) for path in paths or () if not is_url(path)]
    if http is not None and not urls:
        http.refuse_for_socket(", ".join(map(str, files)) or "by default")
    if urls and chosen == StatusFormat.PROMETHEUS:
        raise CliError(
            "--format prometheus reads sockets and their lock files, not urls", exit_code=ExitCode.USAGE
        )
    reports = _probe_all(path_arguments(files), timeout, empty_directory_ok=True) if files or not urls else []
    url_reports = []
    if urls:
        from ctrlsock.cli.http_actions import HttpOptions, status_url  # noqa: PLC0415  (URLs only)

        url_reports = [status_url(url, http or HttpOptions(), timeout=timeout) for url in urls]
    if chosen == StatusFormat.JSON:
        write_json([report.to_json() for report in reports] + [report.to_json() for report in url_reports])
    elif chosen == StatusFormat.PROMETHEUS:
        from ctrlsock.cli.prometheus import render_prometheus  # noqa: PLC0415  (only this format pays)

        sys.stdout.write(render_prometheus([gather_metrics(report, timeout) for report in reports]))
    else:
        paint = Painter.for_stream(sys.stdout)
        write_lines([line for report in reports for line in render_report(report, paint)])
        if url_reports:
            from ctrlsock.cli.http_actions import render_url_report  # noqa: PLC0415

            write_lines([line for report in url_reports for line in render_url_report(report, paint)])
    states = [value_of(report, "state") for report in reports] + [report.state for report in url_reports]
    return status_exit_code(states)


#: Asked of every running socket for ``--format prometheus``: Kea's and ctrlsock's daemons both have it.
STATUS_COMMAND: Final = "status-get"
#: Asked of a running Kea daemon (a lock file without our holder record) for its statistics.
KEA_STATISTICS_COMMAND: Final = "statistic-get-all"


def gather_metrics(report: ProbeReport, timeout: float) -> SocketMetrics:
    """The probe's report plus the replies of the commands sent for metrics, each within ``timeout``.

    Commands go only to a socket the probe found running: a stale or stuck one would only time out, and a
    foreign server is not ours to question. A command that fails is reported as such, not raised: one
    daemon's trouble must not hide the other sockets' metrics.
    """
    from ctrlsock.cli.prometheus import SocketMetrics  # noqa: PLC0415
    from ctrlsock.probe import State  # noqa: PLC0415

    if report.state != State.RUNNING:
        return SocketMetrics(report)
    commands: dict[str, bool] = {}
    status = _ask_map(report.socket_path, STATUS_COMMAND, timeout, commands)
    # Kea writes no holder record; a ctrlsock daemon always does, and has no statistics command.
    statistics = None
    if report.record is None:
        statistics = _ask_map(report.socket_path, KEA_STATISTICS_COMMAND, timeout, commands)
    return SocketMetrics(report, status=status, statistics=statistics, commands=commands)


def _ask_map(path: Path, command: str, timeout: float, outcomes: dict[str, bool]) -> dict[str, Any] | None:
    """``command``'s ``arguments`` if it succeeds with a map, else None; ``outcomes`` records which."""
    from ctrlsock.client import send_command  # noqa: PLC0415
    from ctrlsock.errors import CtrlSockError  # noqa: PLC0415
    from ctrlsock.protocol import Result  # noqa: PLC0415

    try:
        reply = send_command(path, command, timeout=timeout)
    except (CtrlSockError, OSError):
        outcomes[command] = False
        return None
    if reply.result == Result.UNSUPPORTED:
        return None  # not that kind of daemon (a ctrlsock daemon whose record we could not read): no failure
    arguments = reply.arguments if reply.ok and isinstance(reply.arguments, dict) else None
    outcomes[command] = arguments is not None
    return arguments


#: The COMMAND that means "read the whole request from standard input", as socat reads it.
STDIN_REQUEST: Final = "-"


def run_send(
    target_argument: Path | str | None,
    command: str | None,
    *,
    arguments_text: str | None,
    services: Sequence[str] | None,
    timeout: float,
    raw: bool,
    as_json: bool = False,
    http: HttpOptions | None = None,
) -> int:
    """Send one command, or a whole request read from standard input, and print the reply.

    ``send SOCKET -``, or ``send SOCKET`` with standard input not a terminal, reads a request document
    from standard input, checks it with the server's own framer and rules, and sends it byte for byte,
    as ``socat UNIX:SOCKET -`` would. A URL target sends it over HTTP(S) instead.
    """
    import json  # noqa: PLC0415

    from ctrlsock.protocol import JsonFeed, Request, decode_reply, encode_request  # noqa: PLC0415

    if target_argument is not None and is_url(target_argument):
        return _send_http(
            str(target_argument),
            command,
            arguments_text=arguments_text,
            services=services,
            timeout=timeout,
            raw=raw,
            as_json=as_json,
            http=http,
        )
    if http is not None:
        http.refuse_for_socket(target_argument or "by default")
    socket_path = None if target_argument is None else Path(target_argument)
    if command is None and socket_path is not None and not _names_a_socket(socket_path):
        # ``ctrlsock send COMMAND``: the one positional given is the command, on the default socket.
        command, socket_path = str(socket_path), None
    if command is None:
        if socket_path is None or sys.stdin.isatty():
            raise CliError(
                "missing COMMAND (or a request on standard input); see 'ctrlsock send --help'",
                exit_code=ExitCode.USAGE,
            )
        command = STDIN_REQUEST
    target = socket_argument(socket_path)
    if command == STDIN_REQUEST:
        if arguments_text is not None or services:
            raise CliError(
                "--arguments and --service cannot be combined with a request read from standard input",
                exit_code=ExitCode.USAGE,
            )
        request = read_request(sys.stdin.buffer.read())
    else:
        arguments = parse_arguments(arguments_text)
        request = encode_request(
            Request(command=command, arguments=arguments, service=tuple(services) if services else None)
        )
    data = send_checked(target, request, timeout=timeout)
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
    elif as_json:
        write_json([json.loads(document)])
    else:
        write_json(json.loads(document))
    if not 0 <= reply.result <= 5:
        raise CliError(
            f"reply result {reply.result} is not a Kea result code (0-5)", exit_code=ExitCode.BAD_REPLY
        )
    return int(reply.result)


def _send_http(
    url: str,
    command: str | None,
    *,
    arguments_text: str | None,
    services: Sequence[str] | None,
    timeout: float,
    raw: bool,
    as_json: bool,
    http: HttpOptions | None,
) -> int:
    from ctrlsock.cli.http_actions import HttpOptions, run_send_http  # noqa: PLC0415  (URLs only)

    options = http or HttpOptions()
    options = HttpOptions(
        tuple(services) if services else None,
        options.auth_user,
        options.auth_password_file,
        options.ca,
        options.cert,
        options.key,
    )
    if command is None:
        if sys.stdin.isatty():
            raise CliError(
                "missing COMMAND (or a request on standard input); see 'ctrlsock send --help'",
                exit_code=ExitCode.USAGE,
            )
        command = STDIN_REQUEST
    request = None
    arguments = None
    if command == STDIN_REQUEST:
        if arguments_text is not None or services:
            raise CliError(
                "--arguments and --service cannot be combined with a request read from standard input",
                exit_code=ExitCode.USAGE,
            )
        request = read_request(sys.stdin.buffer.read())
    else:
        arguments = parse_arguments(arguments_text)
    return run_send_http(
        url,
        command=command,
        arguments=arguments,
        request=request,
        options=options,
        timeout=timeout,
        raw=raw,
        as_json=as_json,
    )


def _names_a_socket(path: Path) -> bool:
    """Whether a lone SOCKET-or-COMMAND argument is the socket: it has a slash or names a socket.

    No Kea command has a slash in its name; ``send kea4-ctrl-socket`` run beside the socket is the socket.
    """
    if "/" in str(path):
        return True
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def read_request(data: bytes) -> bytes:
    """A request read from standard input, checked as the server will check it; returned unchanged.

    Raises:
        CliError: no request, an incomplete one, or one the server would refuse (``BAD_ARGUMENTS``).
    """
    from ctrlsock.errors import RemoteProtocolError  # noqa: PLC0415
    from ctrlsock.protocol import JsonFeed, decode_request  # noqa: PLC0415

    source = "the request on standard input"
    if not data.strip():
        raise CliError(f"{source} is missing: standard input was empty", exit_code=ExitCode.BAD_ARGUMENTS)
    feed = JsonFeed()  # the server's own limits: what it would refuse is refused here
    try:
        feed.receive_data(data)
        document = feed.next_document()
        if document is None:
            raise CliError(f"{source} is incomplete", exit_code=ExitCode.BAD_ARGUMENTS)
        decode_request(document)
    except RemoteProtocolError as error:
        raise CliError(f"{source} is not valid: {error}", exit_code=ExitCode.BAD_ARGUMENTS) from None
    return data


def send_checked(target: Path, request: bytes, *, timeout: float) -> bytes:
    """``send_raw``, except that a refusal from a path that is not a socket says so.

    ``connect()`` on a regular file or a directory fails with ``ECONNREFUSED``, the same as on a socket
    nobody listens on; only the file's type tells the two apart.
    """
    from ctrlsock.client import send_raw  # noqa: PLC0415
    from ctrlsock.errors import ServerRefusedError  # noqa: PLC0415

    try:
        return send_raw(target, request, timeout=timeout)
    except ServerRefusedError:
        kind = _kind_if_not_socket(target)
        if kind is None:
            raise
        raise CliError(f"{target} is {kind}, not a socket", exit_code=ExitCode.NOT_A_SOCKET) from None


def _kind_if_not_socket(path: Path) -> str | None:
    try:
        mode = os.stat(path).st_mode  # connect() follows symlinks: so does this
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


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


@dataclass(frozen=True)
class ServeHttpOptions:
    """``serve``'s ``--http*`` options: the addresses to listen on and what every such listener shares.

    ``allow_insecure`` and the timeouts also apply to the listeners of ``--config``'s ``control-sockets``.
    """

    addresses: tuple[str, ...] = ()
    auth_user: str | None = None
    auth_password_file: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    cert_required: bool | None = None
    allow_insecure: bool = False
    # Kea's, as http_config's defaults (not imported here: status must not load the server).
    request_timeout: float = 10.0
    idle_timeout: float = 30.0

    def check(self) -> None:
        """Refuse options that do not go together, before any file is read.

        Raises:
            CliError: ``USAGE``, naming the options.
        """
        listener_only = {
            "--http-auth-user": self.auth_user,
            "--http-auth-password-file": self.auth_password_file,
            "--http-cert": self.cert,
            "--http-key": self.key,
            "--http-ca": self.ca,
            "--http-cert-required": self.cert_required,
        }
        given = [name for name, value in listener_only.items() if value is not None]
        if given and not self.addresses:
            raise _usage(f"{', '.join(given)}: only with --http ADDR")
        if (self.auth_user is None) != (self.auth_password_file is None):
            raise _usage("--http-auth-user and --http-auth-password-file go together")
        if (self.cert is None) != (self.key is None):
            raise _usage("--http-cert and --http-key go together")
        if self.ca is not None and self.cert is None:
            raise _usage("--http-ca needs --http-cert and --http-key: client certificates come with TLS")
        if self.cert_required is not None and self.ca is None:
            raise _usage("--http-cert-required and --no-http-cert-required need --http-ca")

    def defaults(self) -> HttpListenerConfig:
        """What every listener shares, ``--config``'s included."""
        from ctrlsock.server.http_config import HttpListenerConfig  # noqa: PLC0415  (serve only)

        return HttpListenerConfig(
            allow_insecure=self.allow_insecure,
            request_timeout=self.request_timeout,
            idle_timeout=self.idle_timeout,
        )

    def listeners(self) -> list[HttpListenerConfig]:
        """One listener per ``--http ADDR``, the password read from its file.

        Raises:
            CliError: ``USAGE`` for a bad address or option.
            ServerError: the password file cannot be read.
        """
        import dataclasses  # noqa: PLC0415

        from ctrlsock.errors import ClientError, ServerError  # noqa: PLC0415
        from ctrlsock.http_client import read_password_file  # noqa: PLC0415  (serve only)
        from ctrlsock.server.http_config import TlsConfig, User  # noqa: PLC0415
        from ctrlsock.server.kea_config import parse_http_address  # noqa: PLC0415

        self.check()
        addresses: list[tuple[str, int]] = []
        for text in self.addresses:
            try:
                address = parse_http_address(text)
            except ValueError as error:
                raise _usage(f"--http {text}: {error}") from None
            if address in addresses and address[1] != 0:
                raise _usage(f"--http {text}: given twice")
            addresses.append(address)
        if not addresses:
            return []
        users: tuple[User, ...] = ()
        if self.auth_user is not None and self.auth_password_file is not None:
            try:
                password = read_password_file(self.auth_password_file)
            except ClientError as error:
                raise ServerError(f"--http-auth-password-file: {error}") from None
            users = (User(self.auth_user, password),)
        tls = None
        if self.cert is not None and self.key is not None:
            required = True if self.cert_required is None else self.cert_required
            tls = TlsConfig(self.cert, self.key, trust_anchor=self.ca, cert_required=required)
        try:
            return [
                dataclasses.replace(self.defaults(), host=host, port=port, users=users, tls=tls)
                for host, port in addresses
            ]
        except ValueError as error:
            raise _usage(f"--http: {error}") from None


def _usage(message: str) -> CliError:
    return CliError(message, exit_code=ExitCode.USAGE)


def run_serve(
    socket_path: Path | None,
    *,
    config_file: Path | None,
    mode: int,
    group: str | None,
    allow_uids: Sequence[int],
    allow_gids: Sequence[int],
    log_level: str,
    http: ServeHttpOptions | None = None,
) -> int:
    from ctrlsock.errors import LockError, LockHeldError, ServerError  # noqa: PLC0415
    from ctrlsock.server.daemon import run_daemon  # noqa: PLC0415

    http = http or ServeHttpOptions()
    listeners = http.listeners()  # usage errors before the default socket's directory is made
    target = socket_argument(socket_path, create=socket_path is None)
    try:
        return run_daemon(
            target,
            config_file=config_file,
            mode=mode,
            group=group,
            allow_uids=list(allow_uids),
            allow_gids=list(allow_gids),
            log_level=log_level,
            http=listeners,
            http_defaults=http.defaults(),
        )
    except LockError as error:
        if isinstance(error, LockHeldError):
            raise
        # A lock file that may not be opened or locked (another user's, a missing directory) stops the
        # server from starting, like a socket it cannot bind: not the "someone holds it" of LOCK_HELD.
        raise ServerError(str(error)) from error


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
    from ctrlsock.recover import cleanup  # noqa: PLC0415
    from ctrlsock.terminate import terminate_holders  # noqa: PLC0415

    sockets = [
        report.socket_path for report in _probe_all(path_arguments(paths), timeout, empty_directory_ok=False)
    ]
    paint = Painter.for_stream(sys.stdout)
    documents: list[dict[str, Any]] = []
    finals: list[str] = []
    any_refused = False
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
        after = value_of(result, "state_after")
        refused = any(value_of(action, "what") == "refused" for action in actions)
        any_refused = any_refused or refused
        if dry_run and not refused and after in {"stale", "stuck"} and (after == "stale" or terminated):
            after = "stopped"  # what a real run would leave: judged by the checks the dry run made
        if not as_json:
            write_lines([render_action(action, paint) for action in actions])
            if not actions:
                word = "nothing to do" if after == "stopped" else "kept"
                write_lines([f"{escape(socket_path)}: {paint(word, 'bold')}: {after}"])
        finals.append(after)
        documents.append(
            {
                "socket": str(socket_path),
                "dry_run": dry_run,
                "state_before": value_of(result, "state_before"),
                "state_after": after,
                "actions": [_action_json(action) for action in actions],
            }
        )
    if as_json:
        write_json(documents)
    return cleanup_exit_code(finals, refused=any_refused)


def _confirm_termination(report: ProbeReport, *, yes: bool, confirm: Callable[[str], bool] | None) -> None:
    if yes:
        return
    victims = ", ".join(f"pid {holder.pid} ({holder.program or '?'})" for holder in report.lock_holders)
    # The question goes to the terminal as it is: escape what a record or a file name may carry.
    question = escape(f"Terminate {victims}, which keep the lock of {report.socket_path}?")
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
        "what": value_of(action, "what"),
        "done": action.done,
        "reason": action.reason,
        "pid": action.pid,
    }


def run_bench(
    target_argument: Path | str | None,
    *,
    clients: int,
    duration: float,
    command: str,
    arguments_text: str | None,
    as_json: bool,
    expect_result: int = 0,
    services: Sequence[str] | None = None,
    http: HttpOptions | None = None,
) -> int:
    from ctrlsock import bench  # noqa: PLC0415

    arguments = parse_arguments(arguments_text)
    service = tuple(services) if services else None
    request = bench.encode_bench_request(command, arguments, service)
    target: Path | bench.HttpTarget
    if target_argument is not None and is_url(target_argument):
        target = _http_bench_target(str(target_argument), http, request)
    else:
        if http is not None:
            http.refuse_for_socket(target_argument or "by default")
        target = socket_argument(None if target_argument is None else Path(target_argument))
        # One command first, through the client: a missing socket or a refusal gets its own clear error
        # and exit code instead of a run that counts nothing but errors.
        with contextlib.suppress(TruncatedReplyError, BadReplyError, ProtocolError):
            send_checked(target, request, timeout=bench.DEFAULT_TIMEOUT)  # a bad reply is the run's to count
    result = bench.run_bench(
        target,
        clients=clients,
        duration=duration,
        command=command,
        arguments=arguments,
        expect_result=expect_result,
        service=service,
    )
    if as_json:
        write_json(result.to_json())
    else:
        write_lines(render_bench(result, Painter.for_stream(sys.stdout)))
    if result.error_count or not result.commands:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result.errors.items()))
        if result.unexpected_results:
            unexpected = ", ".join(
                f"result {code} {count}"
                for code, count in sorted(result.results.items())
                if code != result.expect_result
            )
            kinds = ", ".join(filter(None, [kinds, f"expected result {result.expect_result}: {unexpected}"]))
        raise CliError(
            f"bench: {result.error_count} of {result.error_count + result.commands} commands failed"
            + (f" ({kinds})" if kinds else ""),
            exit_code=ExitCode.BENCH_ERRORS,
        )
    return ExitCode.OK


def _http_bench_target(url: str, http: HttpOptions | None, request: bytes) -> Any:
    """The endpoint to measure, after one command through the client (its errors get their codes)."""
    from ctrlsock import bench  # noqa: PLC0415
    from ctrlsock.cli.http_actions import HttpOptions  # noqa: PLC0415
    from ctrlsock.http_protocol import replies_from  # noqa: PLC0415

    options = http or HttpOptions()
    credentials = options.credentials()
    with (
        options.client(url, timeout=bench.DEFAULT_TIMEOUT) as client,
        contextlib.suppress(TruncatedReplyError, BadReplyError, ProtocolError),
    ):
        # A refusal, a 401 or a TLS failure raises here with its own exit code; a bad reply is the run's.
        replies_from(client.exchange(request), client.url)
    return bench.HttpTarget(
        str(client.url),
        user=None if credentials is None else credentials.user,
        password=None if credentials is None else credentials.password,
        ca=None if options.ca is None else str(options.ca),
        cert=None if options.cert is None else str(options.cert),
        key=None if options.key is None else str(options.key),
    )
