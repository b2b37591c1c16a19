"""The blocking HTTP client and the CLI's URL handling against small real TCP servers on 127.0.0.1.

Each server is a thread on a real listening socket that answers with canned bytes: a response cut
short, none at all, a body that is not JSON, an error status, a connection closed after each answer.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctrlsock.bench import HttpTarget, parse_result, run_bench
from ctrlsock.cli import ExitCode
from ctrlsock.errors import (
    BadReplyError,
    ClientError,
    ClientTimeoutError,
    HttpStatusError,
    ServerRefusedError,
    TruncatedReplyError,
)
from ctrlsock.http_client import HttpControlClient, read_password_file, send_command_http
from ctrlsock.protocol import Reply
from tests.children.cli_support import cli_env, run_cli

OK_BODY = b'[{"result":0,"text":"2.2.0"}]'
OK_LIST = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(OK_BODY),
    OK_BODY,
)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return data


class Server:
    """Accepts connections and runs ``handle(conn)`` on each, in one thread, until closed."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.handle = handle
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)
            with contextlib.suppress(OSError):
                self.handle(conn)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], Server]]:
    servers: list[Server] = []

    def start(handle: Callable[[socket.socket], None]) -> Server:
        servers.append(Server(handle))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.close()


def _answer(response: bytes, *, close: bool = True) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(response)
        if close:
            conn.close()

    return handle


def test_a_response_cut_short_is_truncated(serve: Callable[..., Server]) -> None:
    server = serve(_answer(OK_LIST[:-5]))
    with pytest.raises(TruncatedReplyError) as caught:
        send_command_http(server.url, "version-get", timeout=2.0)
    assert caught.value.received == len(OK_LIST) - 5
    assert caught.value.url == f"{server.url}/"
    done = run_cli("send", server.url, "version-get", "--timeout", "2")
    assert done.returncode == ExitCode.TRUNCATED_REPLY


def test_a_server_that_never_answers_times_out(serve: Callable[..., Server]) -> None:
    server = serve(_read_request)  # reads the request, keeps the connection, says nothing
    with pytest.raises(
        ClientTimeoutError, match=r"timed out reading the reply from http://127\.0\.0\.1:\d+/"
    ):
        send_command_http(server.url, "version-get", timeout=0.3)
    done = run_cli("send", server.url, "version-get", "--timeout", "0.3")
    assert done.returncode == ExitCode.TIMEOUT


def test_a_200_that_is_not_json_is_a_bad_reply(serve: Callable[..., Server]) -> None:
    server = serve(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    with pytest.raises(BadReplyError):
        send_command_http(server.url, "version-get", timeout=2.0)
    done = run_cli("send", server.url, "version-get", "--timeout", "2")
    assert done.returncode == ExitCode.BAD_REPLY


def test_an_error_status_is_an_http_status_error(serve: Callable[..., Server]) -> None:
    body = b'{ "result": 500, "text": "Internal Server Error" }'
    server = serve(
        _answer(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    )
    with pytest.raises(HttpStatusError) as caught:
        send_command_http(server.url, "version-get", timeout=2.0)
    assert (caught.value.status, caught.value.reply) == (500, Reply(500, "Internal Server Error"))
    done = run_cli("send", server.url, "version-get", "--timeout", "2")
    assert done.returncode == ExitCode.HTTP_STATUS
    assert done.stderr == f"ctrlsock: {server.url}/: http 500 Internal Server Error\n"


def test_a_closed_port_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connect() is refused
        with pytest.raises(ServerRefusedError, match="connection refused"):
            send_command_http(f"http://127.0.0.1:{port}", "version-get", timeout=2.0)
        done = run_cli("send", f"http://127.0.0.1:{port}", "version-get")
        status = run_cli("status", f"http://127.0.0.1:{port}")
    assert done.returncode == ExitCode.REFUSED
    assert status.returncode == ExitCode.STOPPED
    assert "no lock file, holder record or process to inspect" in status.stdout


def test_a_kept_alive_connection_closed_by_the_server_is_reopened_once(serve: Callable[..., Server]) -> None:
    # The server answers one request per connection and then closes without saying so, as a server
    # whose idle timeout expired between two commands does.
    server = serve(_answer(OK_LIST))
    with HttpControlClient(server.url, timeout=2.0) as client:
        for _ in range(3):
            assert client.send_command("version-get") == (Reply(0, "2.2.0"),)
    assert server.accepted == 3


def test_a_kept_alive_connection_carries_every_command(serve: Callable[..., Server]) -> None:
    def handle(conn: socket.socket) -> None:
        while _read_request(conn):
            conn.sendall(OK_LIST)

    server = serve(handle)
    with HttpControlClient(server.url, timeout=2.0) as client:
        for _ in range(5):
            client.send_command("version-get")
    assert server.accepted == 1


def test_the_password_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret  \nsecond line\n")
    assert read_password_file(path) == "s3cret  "
    path.write_text("\n")
    with pytest.raises(ClientError, match="empty first line"):
        read_password_file(path)
    with pytest.raises(ClientError, match="cannot read password file"):
        read_password_file(tmp_path / "missing")


def test_a_missing_password_file_is_bad_arguments(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(_answer(OK_LIST))
    done = run_cli(
        "send", server.url, "version-get", "--auth-user", "a", "--auth-password-file", tmp_path / "no"
    )
    assert done.returncode == ExitCode.BAD_ARGUMENTS
    assert server.accepted == 0


def test_auth_user_without_a_password_file_is_a_usage_error(serve: Callable[..., Server]) -> None:
    server = serve(_answer(OK_LIST))
    done = run_cli("send", server.url, "version-get", "--auth-user", "admin")
    assert done.returncode == ExitCode.USAGE
    assert "go together" in done.stderr


def test_http_options_with_a_unix_socket_are_a_usage_error(sock_path: Path) -> None:
    for command in ("send", "status", "bench"):
        done = run_cli(command, sock_path, *(["version-get"] if command == "send" else []), "--ca", "x.pem")
        assert done.returncode == ExitCode.USAGE, (command, done.stderr)
        assert "only for an http:// or https:// url" in done.stderr


@pytest.mark.parametrize("url", ["http://", "http://host:99999", "http://user:pw@host:1/", "http://h:1/?x=1"])
def test_a_bad_url_is_a_usage_error(url: str) -> None:
    done = run_cli("send", url, "version-get")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith("ctrlsock: bad url") and done.stderr.count("\n") == 1


def test_status_of_a_unix_socket_loads_neither_ssl_nor_h11(sock_path: Path) -> None:
    code = (
        "import sys\n"
        "from ctrlsock.cli import main\n"
        f"sys.argv = ['ctrlsock', 'status', {str(sock_path)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'ssl', 'h11'}\n"
        "             or m.startswith('ctrlsock.http')), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_bench_counts_the_first_result_that_is_not_0_in_a_reply_list() -> None:
    assert parse_result(b'[{"result":0},{"result":1,"text":"no socket for dhcp6"}]') == 1
    assert parse_result(b'[{"result":0},{"result":0}]') == 0
    assert parse_result(b'{"result":3}') == 3
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_result(b'[{"result":0}, 1]')


def test_bench_over_http_reuses_one_connection_per_client(serve: Callable[..., Server]) -> None:
    def handle(conn: socket.socket) -> None:
        while _read_request(conn):
            conn.sendall(OK_LIST)

    server = serve(handle)
    result = run_bench(HttpTarget(server.url), clients=1, duration=0.3, timeout=2.0)
    assert result.commands > 1 and result.errors == {}
    assert server.accepted == 1


def test_status_of_a_url_has_no_prometheus_format() -> None:
    done = run_cli("status", "http://127.0.0.1:1", "--format", "prometheus")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr == "ctrlsock: --format prometheus reads sockets and their lock files, not urls\n"


def test_a_key_without_its_certificate_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("send", "https://127.0.0.1:1", "version-get", "--key", tmp_path / "client.key")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr == "ctrlsock: a client key needs its certificate too (--cert)\n"


def test_a_ca_file_that_cannot_be_loaded_is_a_tls_failure(tmp_path: Path) -> None:
    done = run_cli("send", "https://127.0.0.1:1", "version-get", "--ca", tmp_path / "missing.pem")
    assert done.returncode == ExitCode.TLS_FAILED
    assert done.stderr.startswith(f"ctrlsock: cannot load CA file {tmp_path / 'missing.pem'}: ")


def test_send_raw_prints_the_body_and_a_stdin_request_goes_as_it_is(serve: Callable[..., Server]) -> None:
    seen: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        seen.append(_read_request(conn))
        conn.sendall(OK_LIST)
        conn.close()

    server = serve(handle)
    raw = run_cli("send", server.url, "version-get", "--raw")
    assert (raw.returncode, raw.stdout) == (0, OK_BODY.decode())
    request = '{"command": "config-get", "service": ["dhcp4"]}'
    piped = run_cli("send", server.url, input=request)
    assert piped.returncode == 0, piped.stderr
    assert seen[-1].endswith(request.encode())
    refused = run_cli("send", server.url, "-", "--service", "dhcp4", input=request)
    assert refused.returncode == ExitCode.USAGE
