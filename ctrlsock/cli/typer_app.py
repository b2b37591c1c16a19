"""The typer app: subcommands, options and help texts, each command handing over to its ``run_*``.

Importing typer is most of ``ctrlsock``'s start-up time, so only the entry point imports this module,
and only when the command line is not one the fast path handles.
"""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ctrlsock import __version__
from ctrlsock.cli.actions import (
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_STATUS_TIMEOUT,
    TERMINATE_GRACE,
    ServeHttpOptions,
    run_bench,
    run_cleanup,
    run_send,
    run_serve,
    run_status,
)
from ctrlsock.cli.exitcodes import STATE_MEANINGS, ExitCode, state_codes_text
from ctrlsock.cli.paths import PROG
from ctrlsock.cli.render import StatusFormat

if TYPE_CHECKING:
    from ctrlsock.cli.http_actions import HttpOptions

__all__ = ["build_app"]


class LogLevel(StrEnum):
    """``serve --log-level`` choices."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# --- help texts, formatted from the exit code tables ------------------------------------------------

_HELP: Final = (
    "A daemon's Unix control socket: serve it, see who holds it, clean up after a crash, talk to it.\n\n"
    "Works with ctrlsock daemons and with ISC Kea daemons alike. A left-out SOCKET or PATH means the "
    "default socket: $XDG_RUNTIME_DIR/ctrlsock/ctrlsock.sock, else /run/ctrlsock/ctrlsock.sock for "
    "root, else /tmp/ctrlsock-$UID/ctrlsock.sock. Flags such as --json take no value."
)

_STATUS_HELP: Final = (
    "Say what state each socket is in, who holds its lock, and what is wrong.\n\n"
    "Never takes the lock, never changes anything: safe from monitoring. A directory PATH means every "
    "socket and *.lock file in it. A URL (http:// or https://) is asked for version-get: running when "
    "it answers, stopped when the connection is refused, unknown otherwise; a remote endpoint has no "
    "lock or process to inspect, and the report says so.\n\n"
    "States: " + "; ".join(f"{state}: {meaning}" for state, meaning in STATE_MEANINGS.items()) + ".\n\n"
    "Exit code (LSB status; the worst of several paths, in this order): " + state_codes_text() + "."
)

_STATUS_EPILOG: Final = """Examples:

  ctrlsock status                        # the default socket

  ctrlsock status /run/kea/kea4-ctrl-socket

  ctrlsock status /run/mydaemon --json   # every socket in a directory, as JSON

  ctrlsock status /run/kea --format prometheus   # for a scraper or a textfile collector

  ctrlsock status https://kea.example:8004 --ca /etc/kea/ca.pem
"""

_CLEANUP_HELP: Final = (
    "Remove what a dead daemon left behind, and nothing else.\n\n"
    "Removes a stale socket and lock file only after proving no daemon serves them: never a running "
    "daemon's files, never a regular file, directory, symlink or another user's file. A stuck lock "
    "(held by a process that does not serve, typically a child that inherited the descriptor) is "
    "refused and its holders named, unless --terminate-holders is given: then, after confirmation or "
    f"--yes, they get SIGTERM, then SIGKILL if still alive after {TERMINATE_GRACE:g} s, and the path is "
    "cleaned.\n\n"
    "Whatever it refuses, it says why.\n\n"
    "Exit code: 0 when every path ends stopped and nothing was refused; otherwise that of the worst "
    "state left that needs a human "
    f"({state_codes_text(('unknown', 'stopping', 'not-a-socket', 'foreign', 'unlinked', 'stuck'))}), "
    f"else {int(ExitCode.CLEANUP_RUNNING)} when a daemon is running there, "
    f"{int(ExitCode.CLEANUP_REFUSED)} when something else was refused, {int(ExitCode.STALE)} when a path "
    "is still stale."
)

_CLEANUP_EPILOG: Final = """Examples:

  ctrlsock cleanup --dry-run /run/kea/kea4-ctrl-socket

  ctrlsock cleanup /run/kea/kea4-ctrl-socket

  ctrlsock cleanup --terminate-holders --yes /run/kea/kea4-ctrl-socket
"""

_SEND_HELP: Final = (
    "Send one command and print the reply as indented JSON.\n\n"
    "SOCKET is a unix socket, spoken to as `socat UNIX:PATH -,ignoreeof` does: with COMMAND `-`, or "
    "with no COMMAND while standard input is not a terminal, a whole request is read from standard "
    "input, checked as the server will check it, and sent as it is. With one positional argument that "
    "has no slash and names no socket, that argument is the COMMAND, sent to the default socket.\n\n"
    "A URL (http://HOST:PORT or https://HOST:PORT, a path optional) is an HTTP control endpoint, "
    "a Kea 3 server's or kea-ctrl-agent's, with kea-shell's options: --service (one reply each, "
    "printed one after another; --json prints them as one list), --auth-user with "
    "--auth-password-file, --ca, --cert, --key.\n\n"
    "Exit code: the reply's result (0 success, 1 error, 2 unsupported, 3 empty, 4 conflict, 5 fatal; "
    "with several services the first that is not 0), "
    f"or: {int(ExitCode.NO_SUCH_SOCKET)} no such socket, {int(ExitCode.REFUSED)} connection refused, "
    f"{int(ExitCode.NOT_A_SOCKET)} not a socket, "
    f"{int(ExitCode.PERMISSION_DENIED)} permission denied, {int(ExitCode.TIMEOUT)} timeout, "
    f"{int(ExitCode.TRUNCATED_REPLY)} truncated reply, {int(ExitCode.BAD_REPLY)} unparsable reply, "
    f"{int(ExitCode.BAD_ARGUMENTS)} bad --arguments or request, "
    f"{int(ExitCode.PATH_TOO_LONG)} socket path too long, "
    f"{int(ExitCode.HTTP_STATUS)} HTTP error status, {int(ExitCode.AUTH_FAILED)} authentication failed, "
    f"{int(ExitCode.TLS_FAILED)} TLS failed."
)

_SEND_EPILOG: Final = """Examples:

  ctrlsock send /run/kea/kea4-ctrl-socket list-commands

  ctrlsock send /run/kea/kea4-ctrl-socket config-get | jq .arguments

  ctrlsock send SOCKET config-set --arguments @new-config.json

  echo '{"remove": true}' | ctrlsock send SOCKET lease4-del --arguments -

  echo '{"command": "version-get"}' | ctrlsock send SOCKET   # a whole request, as socat sends it

  ctrlsock send --raw SOCKET version-get   # the exact bytes the server sent

  ctrlsock send http://127.0.0.1:8000 list-commands --service dhcp4 \\
      --auth-user admin --auth-password-file /etc/kea/admin-password
"""

_SERVE_HELP: Final = (
    "Run a daemon that owns SOCKET, in the foreground, until SIGTERM, SIGINT or `shutdown`.\n\n"
    "Takes the socket's lock, recovers what a crashed predecessor left, binds with the final mode and "
    "serves the built-in commands (list-commands, version-get, build-report, status-get, shutdown). "
    "With --config FILE it keeps that JSON document as its configuration and also serves config-get, "
    "config-test, config-set, config-reload (re-reads FILE) and config-write, as Kea does. Logs one "
    "line when ready and sends READY=1 under systemd. If another process holds the lock it exits at "
    f"once (code {int(ExitCode.LOCK_HELD)}) naming it.\n\n"
    "--http ADDR also serves the commands over HTTP, as Kea 3's servers do (kea-shell and `ctrlsock send "
    "URL` talk to it), and so do the http and https entries of FILE's Kea-style control-sockets. A bare "
    "PORT binds 127.0.0.1. An address other hosts can reach needs TLS (--http-cert, --http-key) and a "
    "user (--http-auth-user, --http-auth-password-file), or --http-allow-insecure; without them serve "
    f"refuses to start (code {int(ExitCode.SERVER_FAILED)}) and binds nothing."
)

_SERVE_EPILOG: Final = """Examples:

  ctrlsock serve                                   # the default socket

  ctrlsock serve /run/mydaemon/ctrl.sock --config /etc/mydaemon.json

  ctrlsock serve /run/mydaemon/ctrl.sock --mode 0660 --group monitoring

  ctrlsock serve /run/mydaemon/ctrl.sock --http 8000   # http://127.0.0.1:8000/

  ctrlsock serve SOCKET --http 192.0.2.1:8004 --http-cert cert.pem --http-key key.pem \\
      --http-auth-user admin --http-auth-password-file /etc/mydaemon/admin-password
"""

_BENCH_HELP: Final = (
    "Measure a control socket: N client processes in a closed loop, each doing connect, send, read to "
    "EOF, close; against an http(s):// URL each client keeps one persistent connection.\n\n"
    "Prints commands per second, latency p50/p90/p99/max and errors; every reply is parsed. Works "
    "against ctrlsock and Kea sockets alike. "
    "A reply whose result is not the expected one (0 unless --expect-result N) counts as an error. "
    f"Exit code 0, or {int(ExitCode.BENCH_ERRORS)} when any command failed."
)

_BENCH_EPILOG: Final = """Examples:

  ctrlsock bench /run/mydaemon/ctrl.sock --clients 8 --duration 10

  ctrlsock bench /run/kea/kea4-ctrl-socket --command status-get --json

  ctrlsock bench http://127.0.0.1:8000 --service dhcp4 --clients 8
"""


# --- help without type placeholders ---------------------------------------------------------------
# typer's help shows a type column (``<bool>`` for a flag, ``<list[Path]>`` for PATH...) next to the
# metavar; every value here has a metavar that says more, and a flag takes no value at all.


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar if self.metavar is not None else super().display_type_rich(ctx)


def _plain(param: Any) -> Any:
    # The parameters are built by typer from the signatures; only how they describe themselves changes.
    if isinstance(param, TyperArgument) and not isinstance(param, _PlainArgument):
        param.__class__ = _PlainArgument
    elif isinstance(param, TyperOption) and not isinstance(param, _PlainOption):
        param.__class__ = _PlainOption
    return param


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(param) for param in super().get_params(ctx)]


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(param) for param in super().get_params(ctx)]


# --- the commands ----------------------------------------------------------------------------------


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


# The options kea-shell has for an HTTP(S) endpoint; with a unix socket they are a usage error.
_AuthUser = Annotated[
    str | None,
    typer.Option("--auth-user", metavar="USER", help="Basic authentication user (URL targets)."),
]
_AuthPasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--auth-password-file",
        metavar="FILE",
        readable=False,
        help="A file whose first line is the --auth-user password (never a password on the command line).",
    ),
]
_Ca = Annotated[
    Path | None,
    typer.Option("--ca", metavar="FILE", readable=False, help="Trust this CA (PEM) for an https URL."),
]
_Cert = Annotated[
    Path | None,
    typer.Option("--cert", metavar="FILE", readable=False, help="Client certificate (PEM) for an https URL."),
]
_Key = Annotated[
    Path | None,
    typer.Option("--key", metavar="FILE", readable=False, help="The client certificate's key (PEM)."),
]


def _http_options(
    services: list[str] | None,
    *,
    auth_user: str | None,
    auth_password_file: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> HttpOptions | None:
    from ctrlsock.cli.http_actions import HttpOptions  # noqa: PLC0415  (URL targets only)

    if not any(value is not None for value in (auth_user, auth_password_file, ca, cert, key)):
        return None
    return HttpOptions(tuple(services) if services else None, auth_user, auth_password_file, ca, cert, key)


# Path parameters say readable=False: typer would otherwise refuse an existing path it cannot read (a
# socket, or another user's), which the library must see and report with its own exit code.
# SOCKET and PATH arguments are text, not Path: a URL must keep its "//", which Path() folds.
_PathArguments = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="PATH|URL",
        help="Socket paths, lock files, directories, or http(s):// URLs (default: the default socket).",
    ),
]


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _status_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    paths: _PathArguments = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array, one object per path (--format json).")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", callback=_positive, help="How long to wait for an answer."
        ),
    ] = DEFAULT_STATUS_TIMEOUT,
    output: Annotated[
        StatusFormat | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="text (the default), json (as --json), or prometheus: the text exposition format, "
            "with status-get of each running daemon and statistic-get-all of each running Kea.",
        ),
    ] = None,
    auth_user: _AuthUser = None,
    auth_password_file: _AuthPasswordFile = None,
    ca: _Ca = None,
    cert: _Cert = None,
    key: _Key = None,
) -> int:
    http = _http_options(
        None, auth_user=auth_user, auth_password_file=auth_password_file, ca=ca, cert=cert, key=key
    )
    return run_status(paths, as_json=as_json, timeout=timeout, output=output, http=http)


def _cleanup_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="PATH",
            readable=False,
            help="Socket paths, lock files or directories (default: the default socket).",
        ),
    ] = None,
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
        str | None,
        typer.Argument(
            metavar="SOCKET|URL",
            help="The control socket, or an http(s)://HOST:PORT URL (default: the default socket).",
        ),
    ] = None,
    command: Annotated[
        str | None,
        typer.Argument(
            metavar="COMMAND", help="The command, e.g. list-commands; - reads a whole request from stdin."
        ),
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
            "--service",
            metavar="NAME",
            help="Add NAME to the request's service list (repeatable): over HTTP, one reply per service.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", callback=_positive, help="Give up after this long."),
    ] = DEFAULT_SEND_TIMEOUT,
    raw: Annotated[bool, typer.Option("--raw", help="Print the reply's exact bytes.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the replies as one JSON list, one entry per service.")
    ] = False,
    auth_user: _AuthUser = None,
    auth_password_file: _AuthPasswordFile = None,
    ca: _Ca = None,
    cert: _Cert = None,
    key: _Key = None,
) -> int:
    return run_send(
        socket_path,
        command,
        arguments_text=arguments,
        services=service,
        timeout=timeout,
        raw=raw,
        as_json=as_json,
        http=_http_options(
            service, auth_user=auth_user, auth_password_file=auth_password_file, ca=ca, cert=cert, key=key
        ),
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
        LogLevel,
        typer.Option("--log-level", metavar="LEVEL", case_sensitive=False, help="How much to log on stderr."),
    ] = LogLevel.INFO,
    http: Annotated[
        list[str] | None,
        typer.Option(
            "--http",
            metavar="ADDR",
            help="Also serve HTTP on PORT (127.0.0.1), HOST:PORT or [IPV6]:PORT (repeatable).",
        ),
    ] = None,
    http_auth_user: Annotated[
        str | None,
        typer.Option("--http-auth-user", metavar="USER", help="Require Basic authentication as USER."),
    ] = None,
    http_auth_password_file: Annotated[
        Path | None,
        typer.Option(
            "--http-auth-password-file",
            metavar="FILE",
            readable=False,
            help="A file whose first line is --http-auth-user's password (never a password on the command "
            "line).",
        ),
    ] = None,
    http_cert: Annotated[
        Path | None,
        typer.Option(
            "--http-cert", metavar="FILE", readable=False, help="Serve HTTPS with this certificate (PEM)."
        ),
    ] = None,
    http_key: Annotated[
        Path | None,
        typer.Option(
            "--http-key", metavar="FILE", readable=False, help="The certificate's private key (PEM)."
        ),
    ] = None,
    http_ca: Annotated[
        Path | None,
        typer.Option(
            "--http-ca",
            metavar="FILE",
            readable=False,
            help="Check client certificates against this CA (PEM file or directory).",
        ),
    ] = None,
    http_cert_required: Annotated[
        bool | None,
        typer.Option(
            "--http-cert-required/--no-http-cert-required",
            help="With --http-ca, refuse clients without a certificate (the default).",
        ),
    ] = None,
    http_allow_insecure: Annotated[
        bool,
        typer.Option(
            "--http-allow-insecure",
            help="Listen where other hosts can reach, without TLS or without a user.",
        ),
    ] = False,
    http_request_timeout: Annotated[
        float,
        typer.Option(
            "--http-request-timeout",
            metavar="SECONDS",
            callback=_positive,
            help="How long an HTTP request may take to arrive whole.",
        ),
    ] = 10.0,
    http_idle_timeout: Annotated[
        float,
        typer.Option(
            "--http-idle-timeout",
            metavar="SECONDS",
            callback=_positive,
            help="How long a kept-alive HTTP connection may wait for its next request.",
        ),
    ] = 30.0,
) -> int:
    return run_serve(
        socket_path,
        config_file=config,
        mode=int(mode, 8),
        group=group,
        allow_uids=allow_uid or [],
        allow_gids=allow_gid or [],
        log_level=log_level.value,
        http=ServeHttpOptions(
            addresses=tuple(http or ()),
            auth_user=http_auth_user,
            auth_password_file=http_auth_password_file,
            cert=http_cert,
            key=http_key,
            ca=http_ca,
            cert_required=http_cert_required,
            allow_insecure=http_allow_insecure,
            request_timeout=http_request_timeout,
            idle_timeout=http_idle_timeout,
        ),
    )


def _bench_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    socket_path: Annotated[
        str | None,
        typer.Argument(
            metavar="SOCKET|URL",
            help="The control socket, or an http(s):// URL (default: the default socket).",
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
    expect_result: Annotated[
        int,
        typer.Option(
            "--expect-result",
            metavar="N",
            help="The result a reply must have; any other counts as an error.",
        ),
    ] = 0,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service", metavar="NAME", help="Add NAME to the request's service list (repeatable)."
        ),
    ] = None,
    auth_user: _AuthUser = None,
    auth_password_file: _AuthPasswordFile = None,
    ca: _Ca = None,
    cert: _Cert = None,
    key: _Key = None,
) -> int:
    return run_bench(
        socket_path,
        clients=clients,
        duration=duration,
        command=command,
        arguments_text=arguments,
        as_json=as_json,
        expect_result=expect_result,
        services=service,
        http=_http_options(
            service, auth_user=auth_user, auth_password_file=auth_password_file, ca=ca, cert=cert, key=key
        ),
    )


_app: typer.Typer | None = None


def build_app() -> typer.Typer:
    """The typer app, built once."""
    global _app  # noqa: PLW0603  (built on first use, then shared)
    if _app is not None:
        return _app
    app = typer.Typer(
        name=PROG,
        cls=_Group,
        help=_HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["--help", "-h"]},
    )
    app.callback()(_root)
    for name, function, help_text, epilog in (
        ("serve", _serve_command, _SERVE_HELP, _SERVE_EPILOG),
        ("status", _status_command, _STATUS_HELP, _STATUS_EPILOG),
        ("cleanup", _cleanup_command, _CLEANUP_HELP, _CLEANUP_EPILOG),
        ("send", _send_command, _SEND_HELP, _SEND_EPILOG),
        ("bench", _bench_command, _BENCH_HELP, _BENCH_EPILOG),
    ):
        app.command(name, cls=_Command, help=help_text, epilog=epilog)(function)
    _app = app
    return app
