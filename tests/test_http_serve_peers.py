"""The server's own HTTP(S) control listener against real peers: kea-shell 2.2, curl, raw sockets, ctrlsock.

No kea-ctrl-agent anywhere: kea-shell talks straight to the server, as it talks to a Kea 3 DHCP server's
``"socket-type": "http"`` control socket. The server runs in a child process
(``tests/children/http_serve.py``, a ``ControlServer`` with one ``HttpListenerConfig`` on 127.0.0.1 port 0);
its ``serving http://HOST:PORT/ for SOCKET`` log line on stderr is the readiness signal and tells the port.
The tests marked ``BOTH_BACKENDS`` also run against ``ctrlsock serve SOCKET --http 127.0.0.1:0``, the same
way.

Every refusal is checked three ways: the status code, Kea's bare ``{"result": N, "text": "..."}`` body, and a
good request answered afterwards by the same server.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import pytest

import ctrlsock
from ctrlsock.client import send_command
from ctrlsock.http_client import HttpControlClient
from ctrlsock.http_protocol import Credentials
from tests.children.cli_support import cli_env, run_cli
from tests.support import CHILDREN_DIR, HTTP_PASSWORD, REPO_DIR, require_tool, stop_child

USER: Final = "admin"
MiB: Final = 1024 * 1024
SERVING = re.compile(r"serving (https?)://127\.0\.0\.1:(\d+)/ for (\S+)")
CONFIG: Final = {"Dhcp4": {"valid-lifetime": 4000, "subnet4": [{"id": 1, "subnet": "192.0.2.0/24"}]}}


class Backend(StrEnum):
    """What runs the server: the library in a child script, or the ``ctrlsock serve --http`` command line."""

    LIBRARY = "library"
    CLI = "cli"


@dataclass(frozen=True)
class Listener:
    """One listener's settings, spelled by :func:`_command` for either backend."""

    password_file: Path | None = None
    config: Path | None = None
    pki: dict[str, Path] | None = None
    request_timeout: float | None = None


def _command(backend: Backend, socket_path: Path, listener: Listener) -> list[str]:
    library = backend is Backend.LIBRARY
    if library:
        command = [sys.executable, str(CHILDREN_DIR / "http_serve.py"), str(socket_path)]
    else:
        command = [sys.executable, "-m", "ctrlsock", "serve", str(socket_path), "--http", "127.0.0.1:0"]
    if listener.password_file is not None:
        command += ["--user" if library else "--http-auth-user", USER]
        command += [
            "--password-file" if library else "--http-auth-password-file",
            str(listener.password_file),
        ]
    if listener.config is not None:
        command += ["--config", str(listener.config)]
    if listener.pki is not None:
        for option, key in (("cert", "server-cert"), ("key", "server-key"), ("ca", "ca")):
            command += [f"--{option}" if library else f"--http-{option}", str(listener.pki[key])]
    if listener.request_timeout is not None:
        timeout = str(listener.request_timeout)
        command += ["--request-timeout" if library else "--http-request-timeout", timeout]
    return command


class HttpServer:
    """A server with one HTTP(S) listener in a child; its stderr lines are collected as they come."""

    def __init__(self, backend: Backend, socket_path: Path, listener: Listener) -> None:
        self.socket_path = socket_path
        # What version-get answers: the child script's own version, or ctrlsock's for ctrlsock serve.
        self.version = "1.2.3" if backend is Backend.LIBRARY else ctrlsock.__version__
        self.process = subprocess.Popen(
            _command(backend, socket_path, listener),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(),
            cwd=REPO_DIR,
        )
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        # Drained all along: a refusal logged per request must never fill the pipe and block the server.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            match = SERVING.search(self.wait_for("serving http"))
        except BaseException:
            self.close()
            raise
        assert match is not None and match[3] == str(socket_path), self.log()
        self.scheme, self.port = match[1], int(match[2])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first stderr line holding ``text``, once it came; fails if the child ends without one."""

        def find() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._changed:
            self._changed.wait_for(lambda: find() is not None or self._eof, timeout)
            found = find()
        assert found is not None, f"no stderr line with {text!r}: {self.log()}"
        return found

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def close(self) -> None:
        stop_child(self.process)
        self._reader.join(timeout=10)


@pytest.fixture
def backend() -> Backend:
    """The library by default; tests parametrized over ``backend`` also run ``ctrlsock serve --http``."""
    return Backend.LIBRARY


@pytest.fixture
def http_server(sock_dir: Path, backend: Backend) -> Iterator[Callable[..., HttpServer]]:
    """Start a server with a listener on demand; all are killed and reaped at the end."""
    servers: list[HttpServer] = []

    def start(listener: Listener) -> HttpServer:
        server = HttpServer(backend, sock_dir / f"h{len(servers)}.sock", listener)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def config_file(work_dir: Path) -> Path:
    path = work_dir / "config.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture
def auth_server(
    http_server: Callable[..., HttpServer], password_files: tuple[Path, Path], config_file: Path
) -> HttpServer:
    return http_server(Listener(password_file=password_files[0], config=config_file))


#: Runs a test against the library child and against ``ctrlsock serve SOCKET --http 127.0.0.1:0``.
BOTH_BACKENDS: Final = pytest.mark.parametrize("backend", list(Backend))


def _kea_shell(server: HttpServer, *args: object, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("kea-shell"), "--host", "127.0.0.1", "--port", str(server.port), "--timeout", "5",
         *map(str, args)],
        input=stdin, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _curl(*args: object, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("curl"), "-s", "--max-time", "20", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _assert_still_serving(server: HttpServer) -> None:
    """A good request, over a new connection, gets its list-wrapped reply from the same server."""
    done = _curl(
        "-u", f"{USER}:{HTTP_PASSWORD}", "-H", "Content-Type: application/json",
        "--data-binary", '{"command": "version-get"}', server.url,
    )  # fmt: skip
    assert done.returncode == 0, (done.stderr, server.log())
    [reply] = json.loads(done.stdout)
    assert (reply["result"], reply["text"]) == (0, server.version)
    assert server.process.poll() is None


def _kea_body(status: int, phrase: str) -> dict[str, Any]:
    return {"result": status, "text": phrase}


# --- kea-shell 2.2, no control agent ---------------------------------------------------------------


@BOTH_BACKENDS
def test_kea_shell_list_commands_gets_the_list_wrapped_reply(auth_server: HttpServer) -> None:
    done = _kea_shell(auth_server, "--auth-user", USER, "--auth-password", HTTP_PASSWORD, "list-commands")
    assert done.returncode == 0, (done.stdout, done.stderr)
    [reply] = json.loads(done.stdout)
    assert reply["result"] == 0
    assert {"config-get", "list-commands", "status-get", "version-get"} <= set(reply["arguments"])


@BOTH_BACKENDS
def test_kea_shell_config_get_gets_the_config_file(auth_server: HttpServer) -> None:
    done = _kea_shell(auth_server, "--auth-user", USER, "--auth-password", HTTP_PASSWORD, "config-get")
    assert done.returncode == 0, (done.stdout, done.stderr)
    [reply] = json.loads(done.stdout)
    assert (reply["result"], reply["arguments"]) == (0, CONFIG)


def test_kea_shell_with_arguments_on_stdin_and_a_service(auth_server: HttpServer) -> None:
    # kea-shell reads the command's arguments from stdin and names the service as the agent wants it.
    done = _kea_shell(
        auth_server, "--auth-user", USER, "--auth-password", HTTP_PASSWORD, "--service", "dhcp4",
        "config-test", stdin=json.dumps(CONFIG)[1:-1],
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    [reply] = json.loads(done.stdout)
    assert reply["result"] == 0, reply


@BOTH_BACKENDS
def test_kea_shell_with_a_wrong_password_gets_401_and_says_so(auth_server: HttpServer) -> None:
    done = _kea_shell(
        auth_server, "--auth-user", USER, "--auth-password", "not-the-password", "list-commands"
    )
    assert done.returncode == 1
    assert done.stdout == "Failed to run: HTTP Error 401: Unauthorized\n"
    _assert_still_serving(auth_server)


def test_kea_shell_without_credentials_gets_401(auth_server: HttpServer) -> None:
    done = _kea_shell(auth_server, "list-commands")
    assert (done.returncode, done.stdout) == (1, "Failed to run: HTTP Error 401: Unauthorized\n")


@pytest.fixture
def tls_server(http_server: Callable[..., HttpServer], pki: dict[str, Path], config_file: Path) -> HttpServer:
    return http_server(Listener(config=config_file, pki=pki))


@BOTH_BACKENDS
def test_kea_shell_over_tls_with_ca_cert_and_key(tls_server: HttpServer, pki: dict[str, Path]) -> None:
    assert tls_server.scheme == "https"
    done = _kea_shell(
        tls_server, "--ca", pki["ca"], "--cert", pki["client-cert"], "--key", pki["client-key"], "config-get"
    )
    assert done.returncode == 0, (done.stdout, done.stderr, tls_server.log())
    assert json.loads(done.stdout) == [{"result": 0, "arguments": CONFIG}]


@BOTH_BACKENDS
def test_a_tls_client_without_a_certificate_is_refused_and_the_server_keeps_serving(
    tls_server: HttpServer, pki: dict[str, Path]
) -> None:
    refused = _kea_shell(tls_server, "--ca", pki["ca"], "list-commands")
    assert refused.returncode == 1
    assert refused.stdout.startswith("Failed to run: "), refused.stdout
    # Which words follow depends on whether the alert or the close reaches kea-shell first after its request
    # went out (TLS 1.3 finishes the client's handshake before the server checks its certificate):
    # "tlsv13 alert certificate required" or "EOF occurred in violation of protocol".
    plain = _curl("-H", "Content-Type: application/json", "--data-binary", '{"command": "version-get"}',
                  f"http://127.0.0.1:{tls_server.port}/")  # fmt: skip
    assert plain.returncode != 0 and plain.stdout == ""  # plain HTTP on a TLS port gets no reply
    again = _kea_shell(
        tls_server, "--ca", pki["ca"], "--cert", pki["client-cert"], "--key", pki["client-key"], "version-get"
    )
    assert again.returncode == 0, (again.stdout, tls_server.log())
    assert json.loads(again.stdout)[0]["text"] == tls_server.version


def test_a_tls_client_with_a_certificate_from_another_ca_is_refused(
    tls_server: HttpServer, pki: dict[str, Path], work_dir: Path
) -> None:
    # A self-signed client certificate: the server's trust anchor does not vouch for it.
    key, cert = work_dir / "rogue.key", work_dir / "rogue.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=rogue"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    done = _kea_shell(tls_server, "--ca", pki["ca"], "--cert", cert, "--key", key, "list-commands")
    assert done.returncode == 1 and done.stdout.startswith("Failed to run: "), done.stdout
    assert tls_server.process.poll() is None


# --- curl with bad input ------------------------------------------------------------------------------

JSON_HEADER: Final = ("-H", "Content-Type: application/json")
GOOD_BODY: Final = ("--data-binary", '{"command": "version-get"}')


@pytest.mark.parametrize(
    ("args", "status", "phrase"),
    [
        pytest.param(["-X", "GET", *JSON_HEADER], 405, "Method Not Allowed", id="get"),
        pytest.param(["-X", "POST", *JSON_HEADER], 411, "Length Required", id="no-body"),
        pytest.param(
            [*JSON_HEADER, "-H", "Transfer-Encoding: chunked", *GOOD_BODY],
            411,
            "Length Required",
            id="chunked",
        ),
        pytest.param(
            ["-H", "Content-Type: text/plain", *GOOD_BODY], 415, "Unsupported Media Type", id="text"
        ),
        pytest.param([*JSON_HEADER, "--data-binary", "{not json"], 400, "Bad Request", id="bad-json"),
        pytest.param(
            [*JSON_HEADER, "--data-binary", '{"arguments": {}}'], 400, "Bad Request", id="no-command"
        ),
        # Over the 16 KiB max_header_size yet arriving whole in one read: a parser that bounds only an
        # incomplete head (h11's max_incomplete_event_size) lets it through.
        pytest.param(
            [*JSON_HEADER, "-H", "X-Padding: " + "x" * 20000, *GOOD_BODY],
            431,
            "Request Header Fields Too Large",
            id="big-headers",
        ),
        pytest.param(
            [*JSON_HEADER, "-H", "X-Padding: " + "x" * 100000, *GOOD_BODY],
            431,
            "Request Header Fields Too Large",
            id="huge-headers",
        ),
    ],
)
def test_curl_with_bad_input_gets_the_status_and_a_kea_body(
    auth_server: HttpServer, args: list[str], status: int, phrase: str
) -> None:
    done = _curl("-u", f"{USER}:{HTTP_PASSWORD}", *args, "-w", "\n%{http_code}", auth_server.url)
    body, _, code = done.stdout.rpartition("\n")
    assert int(code) == status, (done.stdout, done.stderr, auth_server.log())
    assert json.loads(body) == _kea_body(status, phrase)
    _assert_still_serving(auth_server)


def test_curl_with_bad_credentials_gets_401_with_the_realm(auth_server: HttpServer) -> None:
    done = _curl("-i", "-u", f"{USER}:nope", *JSON_HEADER, *GOOD_BODY, auth_server.url)
    head, _, body = done.stdout.partition("\n\n")  # text mode reads \r\n as \n
    assert head.startswith("HTTP/1.1 401 Unauthorized\n"), done.stdout
    assert 'WWW-Authenticate: Basic realm="ctrlsock"' in head.splitlines()
    assert json.loads(body) == _kea_body(401, "Unauthorized")
    _assert_still_serving(auth_server)


@pytest.mark.parametrize("expect", ["100-continue", "none"])
def test_a_100_mib_body_gets_413_before_it_is_uploaded(
    auth_server: HttpServer, work_dir: Path, expect: str
) -> None:
    big = work_dir / "big.json"
    with big.open("wb") as file:
        file.truncate(100 * MiB)  # sparse: reads as 100 MiB of zero bytes
    # curl asks "Expect: 100-continue" for a big body by default; without it, it starts sending at once
    # and the server must still answer 413 (and close) instead of reading 100 MiB or resetting the reply.
    no_expect = ["-H", "Expect:"] if expect == "none" else []
    done = _curl(
        "-u", f"{USER}:{HTTP_PASSWORD}", *JSON_HEADER, *no_expect, "--data-binary", f"@{big}",
        "-w", "\n%{http_code} %{size_upload}", auth_server.url,
    )  # fmt: skip
    body, _, figures = done.stdout.rpartition("\n")
    code, uploaded = figures.split()
    assert int(code) == 413, (done.returncode, done.stdout, auth_server.log())
    assert json.loads(body) == _kea_body(413, "Request Entity Too Large")
    assert int(uploaded) < 8 * MiB  # socket buffers at most: the server refused from the headers
    _assert_still_serving(auth_server)


def test_a_refused_upload_is_drained_so_the_client_reads_its_413(auth_server: HttpServer) -> None:
    # A client that sends its body without waiting for "100 Continue" still has bytes in flight when the
    # 413 goes out. Closing a socket with unread input makes the kernel send a reset, which can destroy the
    # 413 before the client reads it (curl then says "Failed sending data to the peer", no status at all).
    # RFC 9112 section 9.6: half-close and keep reading until the client closes, then close.
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: "
        + Credentials(USER, HTTP_PASSWORD).authorization()
        + b"\r\nContent-Length: %d\r\n\r\n" % (100 * MiB)
    )
    expected = b'{"result": 413, "text": "Request Entity Too Large"}'
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # a server that resets the connection stops the upload here
            sock.sendall(head + bytes(MiB))
        response = b""
        try:
            while not response.endswith(expected) and (chunk := sock.recv(65536)):
                response += chunk
            sock.shutdown(socket.SHUT_WR)  # done: the server may close now
            end = sock.recv(65536)
        except ConnectionResetError:
            pytest.fail(f"the server reset the connection; read before the reset: {response!r}")
    assert response.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), response
    assert response.endswith(b"\r\n\r\n" + expected)
    assert end == b""
    _assert_still_serving(auth_server)


@BOTH_BACKENDS
def test_slowloris_headers_get_408_and_close_while_others_are_served(
    http_server: Callable[..., HttpServer], password_files: tuple[Path, Path]
) -> None:
    server = http_server(Listener(password_file=password_files[0], request_timeout=1.0))
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # connected, silent, on the unix socket
    idle.connect(str(server.socket_path))
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 200
    answered_meanwhile = False
    response = b""
    with idle, socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        with selectors.DefaultSelector() as selector:
            selector.register(slow, selectors.EVENT_READ)
            for index, byte in enumerate(head):
                if selector.select(0.05):  # a byte every 50 ms until the server speaks
                    break
                slow.sendall(bytes([byte]))
                if index == 4:
                    # Mid-trickle: the unix socket and another HTTP client are answered at once.
                    assert send_command(server.socket_path, "version-get", timeout=5.0).text == server.version
                    with HttpControlClient(server.url, auth=Credentials(USER, HTTP_PASSWORD), timeout=5) as c:
                        assert c.send_command("version-get")[0].text == server.version
                    answered_meanwhile = not selector.select(0)
            else:
                pytest.fail(f"no answer after the whole head was trickled: {server.log()}")
        while chunk := slow.recv(65536):
            response += chunk
        # The other clients took milliseconds of the request's second: the slow one was still pending.
        assert answered_meanwhile
    head_part, _, body = response.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response
    assert json.loads(body) == _kea_body(408, "Request Timeout")
    _assert_still_serving(server)
    assert send_command(server.socket_path, "version-get", timeout=5.0).ok


# --- keep-alive and ctrlsock's own client ---------------------------------------------------------


@BOTH_BACKENDS
def test_curl_sends_two_requests_on_one_connection(auth_server: HttpServer) -> None:
    done = _curl(
        "-u", f"{USER}:{HTTP_PASSWORD}", *JSON_HEADER, "--data-binary", '{"command": "list-commands"}',
        "-w", "\n%{http_code} %{num_connects}\n", auth_server.url, auth_server.url,
    )  # fmt: skip
    assert done.returncode == 0, (done.stderr, auth_server.log())
    first, first_figures, second, second_figures = done.stdout.splitlines()
    assert json.loads(first) == json.loads(second)
    assert json.loads(first)[0]["result"] == 0
    # num_connects: 1 for the transfer that opened the connection, 0 for the one that reused it.
    assert (first_figures, second_figures) == ("200 1", "200 0")


def test_our_client_keeps_one_connection_for_several_commands(auth_server: HttpServer) -> None:
    with HttpControlClient(auth_server.url, auth=Credentials(USER, HTTP_PASSWORD), timeout=5.0) as client:
        ports = set()
        for command in ("version-get", "list-commands", "config-get", "status-get"):
            [reply] = client.send_command(command)
            assert reply.ok, reply
            assert client._sock is not None
            ports.add(client._sock.getsockname()[1])
    assert len(ports) == 1


@BOTH_BACKENDS
def test_ctrlsock_send_to_the_url(auth_server: HttpServer, password_files: tuple[Path, Path]) -> None:
    done = run_cli(
        "send", auth_server.url, "list-commands", "--auth-user", USER, "--auth-password-file",
        password_files[0], "--timeout", "5",
    )  # fmt: skip
    assert done.returncode == 0, (done.stderr, auth_server.log())
    reply = json.loads(done.stdout)  # unwrapped by ctrlsock send, as from the agent
    assert reply["result"] == 0 and "config-get" in reply["arguments"]
    wrong = run_cli(
        "send", auth_server.url, "list-commands", "--auth-user", USER, "--auth-password-file",
        password_files[1], "--timeout", "5",
    )  # fmt: skip
    assert wrong.returncode == 85, wrong.stderr
    assert wrong.stderr == (
        f"ctrlsock: {auth_server.url}: authentication failed: http 401 Unauthorized (realm 'ctrlsock')\n"
    )


def test_ctrlsock_send_without_auth_to_a_server_without_users(http_server: Callable[..., HttpServer]) -> None:
    server = http_server(Listener())
    done = run_cli("send", server.url, "version-get", "--timeout", "5")
    assert done.returncode == 0, (done.stderr, server.log())
    assert json.loads(done.stdout)["text"] == server.version
