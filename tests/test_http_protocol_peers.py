"""The sans-IO server side of the HTTP layer against real clients: kea-shell 2.2, curl and our own client.

A small blocking loop in a thread drives :class:`ServerConnection` over a real TCP socket on 127.0.0.1,
answering each command with its own name and service. It is not the server (that one runs on the
engine); it shows that the protocol pieces the server will use speak HTTP the way these clients expect.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from ctrlsock.errors import AuthenticationError
from ctrlsock.http_client import HttpControlClient, send_command_http
from ctrlsock.http_protocol import (
    NEED_DATA,
    PEER_CLOSED,
    ControlRequest,
    Credentials,
    Rejection,
    ServerConnection,
    User,
)
from ctrlsock.protocol import Reply
from tests.support import require_tool

PASSWORD = "peer-password"


class LoopServer:
    """Serves one connection at a time with ServerConnection; counts connections and requests."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[ControlRequest] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5.0)
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        session = ServerConnection(users=[User("admin", PASSWORD)], realm="peers", max_body=1024 * 1024)
        while True:
            event = session.next_request()
            if event is NEED_DATA:
                session.receive_data(conn.recv(65536))
            elif event is PEER_CLOSED:
                return
            elif isinstance(event, Rejection):
                conn.sendall(session.reject(event))
                return
            else:
                assert isinstance(event, ControlRequest)
                self.requests.append(event)
                service = list(event.request.service or [])
                replies = [
                    Reply(0, "", {"command": event.request.command, "service": name}) for name in service
                ]
                conn.sendall(session.reply(replies or [Reply(0, "", {"command": event.request.command})]))
                if not session.reusable:
                    return
                session.start_next_cycle()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[LoopServer]:
    loop = LoopServer()
    try:
        yield loop
    finally:
        loop.close()


def test_kea_shell_gets_the_list_wrapped_reply(server: LoopServer) -> None:
    done = subprocess.run(
        [require_tool("kea-shell"), "--host", "127.0.0.1", "--port", str(server.port), "--auth-user", "admin",
         "--auth-password", PASSWORD, "--service", "dhcp4", "--timeout", "5", "version-get"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"result": 0, "arguments": {"command": "version-get", "service": "dhcp4"}}
    ]


def test_kea_shell_with_a_wrong_password_gets_401(server: LoopServer) -> None:
    done = subprocess.run(
        [require_tool("kea-shell"), "--host", "127.0.0.1", "--port", str(server.port), "--auth-user", "admin",
         "--auth-password", "wrong", "--timeout", "5", "version-get"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "HTTP Error 401: Unauthorized" in done.stdout + done.stderr
    assert server.requests == []


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["-X", "GET"], 405),
        (["-H", "Transfer-Encoding: chunked", "--data-binary", '{"command": "x"}'], 411),
        (["-H", "Content-Type: text/plain", "--data-binary", '{"command": "x"}'], 415),
        (["--data-binary", "not json"], 400),
        (["--data-binary", '{"command": "x", "bogus": 1}'], 400),
    ],
)
def test_curl_with_bad_input_gets_the_right_status_and_a_kea_body(
    server: LoopServer, args: list[str], status: int
) -> None:
    done = subprocess.run(
        [require_tool("curl"), "-s", "-u", f"admin:{PASSWORD}", "-H", "Content-Type: application/json", *args,
         "-w", "\n%{http_code}", f"http://127.0.0.1:{server.port}/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    body, _, code = done.stdout.rpartition("\n")
    assert int(code) == status, done.stdout
    assert json.loads(body)["result"] == status
    assert server.requests == []


def test_curl_with_bad_credentials_gets_401_and_the_realm(server: LoopServer) -> None:
    done = subprocess.run(
        [require_tool("curl"), "-s", "-i", "-u", "admin:nope", "-H", "Content-Type: application/json",
         "--data-binary", '{"command": "x"}', f"http://127.0.0.1:{server.port}/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("HTTP/1.1 401 Unauthorized\n")  # text mode reads \r\n as \n
    assert 'WWW-Authenticate: Basic realm="peers"' in done.stdout
    assert done.stdout.endswith('{"result": 401, "text": "Unauthorized"}')


def test_a_100_mib_content_length_is_refused_without_reading_the_body(server: LoopServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        credentials = Credentials("admin", PASSWORD).authorization()
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
            + credentials
            + b"\r\nContent-Length: 104857600\r\n\r\n{"
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 413 ")
    assert response.endswith(b'{"result": 413, "text": "Request Entity Too Large"}')


def test_our_client_gets_one_reply_per_service_on_one_kept_alive_connection(server: LoopServer) -> None:
    url = f"http://127.0.0.1:{server.port}"
    credentials = Credentials("admin", PASSWORD)
    with HttpControlClient(url, auth=credentials, timeout=5.0) as client:
        for _ in range(3):
            replies = client.send_command("status-get", service=["dhcp4", "dhcp6"])
            assert [reply.arguments for reply in replies] == [
                {"command": "status-get", "service": "dhcp4"},
                {"command": "status-get", "service": "dhcp6"},
            ]
    assert server.connections == 1
    assert [request.user for request in server.requests] == ["admin"] * 3
    with pytest.raises(AuthenticationError, match="realm 'peers'"):
        send_command_http(url, "version-get", auth=Credentials("admin", "x"), timeout=5.0)
