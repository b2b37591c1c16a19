"""The commands against an HTTP(S) control endpoint: ``send``, ``status`` and ``bench`` with a URL.

Kea 3's DHCP servers and kea-ctrl-agent take commands over HTTP. The options are kea-shell's:
``--service`` (repeatable), ``--auth-user`` with ``--auth-password-file`` (a password never goes on a
command line, where ``ps`` shows it to every user), ``--ca``, ``--cert``, ``--key``. The HTTP client is
imported only here, so a unix socket's ``status`` never loads ``ssl`` or h11.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ctrlsock.cli.exitcodes import CliError, ExitCode
from ctrlsock.cli.render import Painter, escape, write_json
from ctrlsock.errors import (
    AuthenticationError,
    ClientError,
    ClientTimeoutError,
    CtrlSockError,
    HttpStatusError,
    LocalProtocolError,
    ServerRefusedError,
    TlsError,
)

__all__ = ["REMOTE_NOTE", "HttpOptions", "UrlReport", "render_url_report", "run_send_http", "status_url"]

#: What ``status`` cannot look at for a remote endpoint, said with every URL's report.
REMOTE_NOTE: Final = (
    "an HTTP endpoint: no lock file, holder record or process to inspect from here; "
    "the state is judged from its answer alone"
)


@dataclass(frozen=True)
class HttpOptions:
    """The options that only apply to a URL target."""

    services: tuple[str, ...] | None = None
    auth_user: str | None = None
    auth_password_file: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def given(self) -> list[str]:
        """The options set (``--service`` excepted: a unix socket takes it too), for a refusal."""
        names = {
            "--auth-user": self.auth_user,
            "--auth-password-file": self.auth_password_file,
            "--ca": self.ca,
            "--cert": self.cert,
            "--key": self.key,
        }
        return [name for name, value in names.items() if value is not None]

    def refuse_for_socket(self, target: object) -> None:
        """Raise a usage error when an HTTP-only option is given with a unix socket target."""
        given = self.given()
        if given:
            raise CliError(
                f"{', '.join(given)}: only for an http:// or https:// url, not for the socket {target}",
                exit_code=ExitCode.USAGE,
            )

    def client(self, url: str, *, timeout: float, keep_alive: bool = False) -> Any:
        """An ``HttpControlClient`` for ``url`` with these options.

        Raises:
            CliError: a bad URL or option combination (``USAGE``), an unreadable password file.
        """
        from ctrlsock.http_client import HttpControlClient  # noqa: PLC0415  (URL targets only)

        try:
            return HttpControlClient(
                url,
                auth=self.credentials(),
                ca=self.ca,
                cert=self.cert,
                key=self.key,
                timeout=timeout,
                keep_alive=keep_alive,
            )
        except LocalProtocolError as error:
            raise CliError(str(error), exit_code=ExitCode.USAGE) from None

    def credentials(self) -> Any:
        """``Credentials`` from ``--auth-user`` and the first line of ``--auth-password-file``, or None."""
        if self.auth_user is None and self.auth_password_file is None:
            return None
        if self.auth_user is None or self.auth_password_file is None:
            raise CliError("--auth-user and --auth-password-file go together", exit_code=ExitCode.USAGE)
        from ctrlsock.http_client import read_password_file  # noqa: PLC0415
        from ctrlsock.http_protocol import Credentials  # noqa: PLC0415

        try:
            password = read_password_file(self.auth_password_file)
        except ClientError as error:
            raise CliError(str(error), exit_code=ExitCode.BAD_ARGUMENTS) from None
        try:
            return Credentials(self.auth_user, password)
        except LocalProtocolError as error:
            raise CliError(str(error), exit_code=ExitCode.USAGE) from None


def run_send_http(
    url: str,
    *,
    command: str | None,
    arguments: Any,
    request: bytes | None,
    options: HttpOptions,
    timeout: float,
    raw: bool,
    as_json: bool,
) -> int:
    """Send one command (or the whole ``request`` read from stdin) to ``url`` and print the replies.

    Each reply is printed as an indented JSON document, one per service (a stream ``jq`` reads);
    ``--json`` prints them as one JSON list, as the endpoint sent them; ``--raw`` the response body's bytes.
    The exit code is the first non-zero result among the replies, else 0.
    """
    from ctrlsock.client import encode_command  # noqa: PLC0415
    from ctrlsock.http_protocol import replies_from  # noqa: PLC0415

    with options.client(url, timeout=timeout) as client:
        if request is None:
            assert command is not None
            try:
                request = encode_command(command, arguments, options.services)
            except LocalProtocolError as error:
                raise CliError(f"--arguments: {error}", exit_code=ExitCode.BAD_ARGUMENTS) from None
        response = client.exchange(request)
        if raw and response.status == 200:
            sys.stdout.buffer.write(response.body)
            sys.stdout.buffer.flush()
        replies = replies_from(response, client.url)
    if not raw:
        documents = [_reply_json(reply) for reply in replies]
        if as_json:
            write_json(documents)
        else:
            for document in documents:
                write_json(document)
    results = [reply.result for reply in replies]
    if not replies:
        raise CliError(f"{url} answered with no reply at all (an empty list)", exit_code=ExitCode.BAD_REPLY)
    bad = [result for result in results if not 0 <= result <= 5]
    if bad:
        raise CliError(f"reply result {bad[0]} is not a Kea result code (0-5)", exit_code=ExitCode.BAD_REPLY)
    return next((result for result in results if result != 0), 0)


def _reply_json(reply: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"result": reply.result}
    if reply.text:
        document["text"] = reply.text
    if reply.arguments is not None:
        document["arguments"] = reply.arguments
    return document


@dataclass
class UrlReport:
    """``status`` of an HTTP endpoint: what its answer to ``version-get`` says."""

    url: str
    state: str
    answer_ms: float | None = None
    version: str | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "answer_ms": self.answer_ms,
            "version": self.version,
            "problems": self.problems,
            "note": REMOTE_NOTE,
        }


def status_url(url: str, options: HttpOptions, *, timeout: float) -> UrlReport:
    """Ask ``url`` for ``version-get`` and judge: running (it answered), stopped (refused), or unknown.

    Nothing else can be judged from afar: no lock, no holder record, no ``/proc``. A timeout is
    ``unknown``, not ``stuck``: a slow network and a hung server look alike from here.
    """
    try:
        client = options.client(url, timeout=timeout)
    except CliError as error:
        if error.exit_code == ExitCode.USAGE:
            raise
        return UrlReport(url, "unknown", problems=[str(error)])
    except TlsError as error:
        return UrlReport(url, "unknown", problems=[str(error)])
    began = time.monotonic()
    try:
        with client:
            replies = client.send_command("version-get", service=options.services)
    except ServerRefusedError:
        return UrlReport(
            str(client.url), "stopped", problems=[f"nothing accepts connections on {client.url}"]
        )
    except (AuthenticationError, HttpStatusError, ClientTimeoutError, CtrlSockError) as error:
        return UrlReport(str(client.url), "unknown", problems=[str(error)])
    elapsed = (time.monotonic() - began) * 1000.0
    report = UrlReport(str(client.url), "running", answer_ms=round(elapsed, 3))
    if replies and replies[0].ok:
        report.version = replies[0].text or None
    for reply in replies:
        if not reply.ok:
            report.problems.append(f"version-get answered result {reply.result}: {reply.text}")
    return report


def render_url_report(report: UrlReport, paint: Painter) -> list[str]:
    head = f"{paint(escape(report.url), 'bold')}  {report.state}"
    if report.answer_ms is not None:
        head += f"  answered in {report.answer_ms:.1f} ms"
    lines = [head]
    if report.version:
        lines.append(f"    version     {escape(report.version)}")
    lines += [f"    problem     {escape(problem)}" for problem in report.problems]
    lines.append(f"    note        {REMOTE_NOTE}")
    return lines
