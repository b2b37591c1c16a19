"""``ctrlsock send|status|bench URL`` against a real kea-ctrl-agent 2.2 in front of a real kea-dhcp4 2.2.

The agent is configured with Basic authentication (Kea 2.2's clients carry ``user`` and ``password``;
``password-file`` came later) and, for the TLS tests, with certificates made here by the ``openssl``
command line: a CA, a server certificate for IP 127.0.0.1, and a client certificate the agent requires.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrlsock.cli import ExitCode
from ctrlsock.errors import AuthenticationError, TlsError
from ctrlsock.http_client import HttpControlClient, send_command_http
from ctrlsock.http_protocol import Credentials
from tests.children.cli_support import run_cli
from tests.kea import CtrlAgent, KeaDaemon, start_ctrl_agent
from tests.support import HTTP_PASSWORD as PASSWORD

pytestmark = pytest.mark.kea

REALM = "ctrlsock-test"
AUTH = {"type": "basic", "realm": REALM, "clients": [{"user": "admin", "password": PASSWORD}]}
TIMEOUT = "5"


@pytest.fixture
def agent(kea_daemon: KeaDaemon, work_dir: Path) -> Iterator[CtrlAgent]:
    agent = start_ctrl_agent(work_dir, kea_daemon.socket_path, extra={"authentication": AUTH})
    try:
        yield agent
    finally:
        agent.stop()


def _url(agent: CtrlAgent, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{agent.port}"


def _auth_args(password_file: Path) -> list[object]:
    return ["--auth-user", "admin", "--auth-password-file", password_file]


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ctrlsock: ") and "Traceback" not in stderr
    return lines[0]


# --- send -------------------------------------------------------------------------------------------


def test_send_with_service_reaches_kea_dhcp4_through_the_agent(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli(
        "send", _url(agent), "list-commands", "--service", "dhcp4", *_auth_args(password_files[0]),
        "--timeout", TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)  # unwrapped: one document, not the agent's list
    assert reply["result"] == 0
    # statistic-get is kea-dhcp4's, not the agent's: the command went through to the DHCP server.
    assert "statistic-get" in reply["arguments"]


def test_send_without_service_gets_the_agents_own_reply(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli("send", _url(agent), "list-commands", *_auth_args(password_files[0]), "--timeout", TIMEOUT)
    assert done.returncode == 0, done.stderr
    commands = json.loads(done.stdout)["arguments"]
    assert "list-commands" in commands
    assert "statistic-get" not in commands


def test_send_with_two_services_prints_one_reply_each_and_exits_with_the_failure(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    args = ["send", _url(agent), "version-get", "--service", "dhcp4", "--service", "dhcp6"]
    args += [*_auth_args(password_files[0]), "--timeout", TIMEOUT]
    done = run_cli(*args, "--json")
    assert done.returncode == 1, done.stderr  # dhcp6 has no socket configured in the agent
    first, second = json.loads(done.stdout)
    assert (first["result"], first["text"]) == (0, "2.2.0")
    assert second["result"] == 1 and "dhcp6" in second["text"]
    human = run_cli(*args)
    assert human.returncode == 1
    decoder = json.JSONDecoder()
    document, end = decoder.raw_decode(human.stdout)
    assert document == first
    assert decoder.raw_decode(human.stdout[end:].lstrip())[0] == second


def test_a_wrong_password_gets_the_auth_exit_code_and_one_line(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli(
        "send", _url(agent), "list-commands", "--service", "dhcp4", *_auth_args(password_files[1]),
        "--timeout", TIMEOUT,
    )  # fmt: skip
    assert done.returncode == ExitCode.AUTH_FAILED == 85
    line = _one_error_line(done.stderr)
    assert line == (
        f"ctrlsock: http://127.0.0.1:{agent.port}/: authentication failed: http 401 Unauthorized "
        f"(realm '{REALM}')"
    )
    assert done.stdout == ""


def test_no_credentials_get_the_auth_exit_code(agent: CtrlAgent) -> None:
    done = run_cli("send", _url(agent), "list-commands", "--timeout", TIMEOUT)
    assert done.returncode == ExitCode.AUTH_FAILED
    assert "401 Unauthorized" in _one_error_line(done.stderr)


def test_a_body_kea_cannot_parse_gets_the_http_status_exit_code(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    # The agent answers a request it cannot take with a bare 400 map; ctrlsock's own check of a request
    # from stdin is the server's framer, which takes comments Kea's HTTP parser does not.
    done = run_cli(
        "send", _url(agent), *_auth_args(password_files[0]), "--timeout", TIMEOUT,
        input='# a comment\n{"command": "list-commands"}',
    )  # fmt: skip
    assert done.returncode == ExitCode.HTTP_STATUS == 84
    assert _one_error_line(done.stderr) == f"ctrlsock: http://127.0.0.1:{agent.port}/: http 400 Bad Request"


def test_the_library_returns_one_reply_per_service_and_keeps_the_connection(agent: CtrlAgent) -> None:
    credentials = Credentials("admin", PASSWORD)
    replies = send_command_http(_url(agent), "version-get", service=["dhcp4"], auth=credentials, timeout=5.0)
    assert [(reply.result, reply.text) for reply in replies] == [(0, "2.2.0")]
    with HttpControlClient(_url(agent), auth=credentials, timeout=5.0) as client:
        ports = set()
        for _ in range(3):
            assert client.send_command("status-get", service=["dhcp4"])[0].ok
            assert client._sock is not None
            ports.add(client._sock.getsockname()[1])
    assert len(ports) == 1  # kea-ctrl-agent 2.2 keeps HTTP/1.1 connections alive
    with pytest.raises(AuthenticationError) as caught:
        send_command_http(_url(agent), "version-get", auth=Credentials("admin", "x"), timeout=5.0)
    assert caught.value.status == 401


# --- status and bench -------------------------------------------------------------------------------


def test_status_of_a_url_is_running_and_says_what_it_cannot_see(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli("status", _url(agent), *_auth_args(password_files[0]), "--json")
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    assert (report["url"], report["state"], report["version"]) == (f"{_url(agent)}/", "running", "2.2.0")
    assert "no lock file" in report["note"]
    human = run_cli("status", _url(agent), *_auth_args(password_files[0]))
    assert human.returncode == 0
    assert human.stdout.splitlines()[0].startswith(f"{_url(agent)}/  running  answered in ")


def test_status_of_a_url_that_refuses_the_login_is_unknown(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli("status", _url(agent), *_auth_args(password_files[1]), "--json")
    assert done.returncode == ExitCode.UNKNOWN
    [report] = json.loads(done.stdout)
    assert report["state"] == "unknown"
    assert "authentication failed" in report["problems"][0]


def test_status_of_a_url_and_a_socket_together_reports_both(
    agent: CtrlAgent, kea_daemon: KeaDaemon, password_files: tuple[Path, Path]
) -> None:
    done = run_cli("status", kea_daemon.socket_path, _url(agent), *_auth_args(password_files[0]), "--json")
    assert done.returncode == 0, done.stderr
    assert [report["state"] for report in json.loads(done.stdout)] == ["running", "running"]


def test_bench_over_http_counts_kea_replies_on_kept_alive_connections(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli(
        "bench", _url(agent), "--service", "dhcp4", *_auth_args(password_files[0]),
        "--clients", "2", "--duration", "0.5", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["commands"] > 0
    assert figures["errors"] == {}
    assert figures["results"] == {"0": figures["commands"]}


def test_bench_with_a_wrong_password_stops_before_the_run(
    agent: CtrlAgent, password_files: tuple[Path, Path]
) -> None:
    done = run_cli("bench", _url(agent), *_auth_args(password_files[1]), "--duration", "0.2")
    assert done.returncode == ExitCode.AUTH_FAILED
    _one_error_line(done.stderr)


# --- TLS --------------------------------------------------------------------------------------------


@pytest.fixture
def tls_agent(kea_daemon: KeaDaemon, work_dir: Path, pki: dict[str, Path]) -> Iterator[CtrlAgent]:
    extra = {
        "authentication": AUTH,
        "trust-anchor": str(pki["ca"]),
        "cert-file": str(pki["server-cert"]),
        "key-file": str(pki["server-key"]),
        "cert-required": True,
    }
    agent = start_ctrl_agent(work_dir, kea_daemon.socket_path, extra=extra)
    try:
        yield agent
    finally:
        agent.stop()


def test_tls_with_ca_cert_and_key_reaches_kea_dhcp4(
    tls_agent: CtrlAgent, pki: dict[str, Path], password_files: tuple[Path, Path]
) -> None:
    done = run_cli(
        "send", _url(tls_agent, "https"), "version-get", "--service", "dhcp4",
        *_auth_args(password_files[0]), "--ca", pki["ca"], "--cert", pki["client-cert"],
        "--key", pki["client-key"], "--timeout", TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "2.2.0"
    status = run_cli(
        "status", _url(tls_agent, "https"), *_auth_args(password_files[0]), "--ca", pki["ca"],
        "--cert", pki["client-cert"], "--key", pki["client-key"], "--json",
    )  # fmt: skip
    assert json.loads(status.stdout)[0]["state"] == "running", status.stderr


def test_tls_without_a_client_certificate_is_a_tls_failure(
    tls_agent: CtrlAgent, pki: dict[str, Path], password_files: tuple[Path, Path]
) -> None:
    done = run_cli(
        "send", _url(tls_agent, "https"), "version-get", *_auth_args(password_files[0]),
        "--ca", pki["ca"], "--timeout", TIMEOUT,
    )  # fmt: skip
    assert done.returncode == ExitCode.TLS_FAILED == 86, done.stderr
    assert _one_error_line(done.stderr).startswith(f"ctrlsock: tls with {_url(tls_agent, 'https')}/ failed: ")


def test_tls_with_a_server_certificate_from_another_ca_is_refused(
    tls_agent: CtrlAgent, pki: dict[str, Path]
) -> None:
    with pytest.raises(TlsError, match=r"failed: certificate verify failed: self-signed certificate in"):
        send_command_http(
            _url(tls_agent, "https"),
            "version-get",
            ca=pki["other-ca"],
            cert=pki["client-cert"],
            key=pki["client-key"],
            timeout=5.0,
        )


def test_tls_options_on_a_plain_http_url_are_a_usage_error(agent: CtrlAgent, pki: dict[str, Path]) -> None:
    done = run_cli("send", _url(agent), "version-get", "--ca", pki["ca"])
    assert done.returncode == ExitCode.USAGE
    assert "need an https url" in _one_error_line(done.stderr)
