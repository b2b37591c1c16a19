"""The engine's guarantees over HTTP(S), with real TCP sockets, in both embeddings: kept-alive and
pipelined requests, slow readers dropped, request and idle timeouts, the buffer cap, a clean stop, TLS
failures counted, uid/gid rules refused over HTTP, Basic authentication seen by handlers, forks, and a
refused exposure."""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import AuthenticationError, ServerError
from ctrlsock.http_client import HttpControlClient
from ctrlsock.http_protocol import Credentials, User
from ctrlsock.protocol import Reply
from ctrlsock.server import CommandContext, ControlServer, ServerConfig
from ctrlsock.server.http_config import HttpListenerConfig, TlsConfig
from ctrlsock.testing import ServerFactory
from tests.children.server_client import ask
from tests.support import LogWatch

WAIT = 10.0
MIB = 1024 * 1024

Serve = Callable[..., ControlServer]


@pytest.fixture(params=["thread", "asyncio"])
def serve(request: pytest.FixtureRequest, sock_path: Path, ctrlsock_server_factory: ServerFactory) -> Serve:
    """Start a server with one HTTP listener on a free loopback port, in either embedding."""

    def start(
        config: ServerConfig | None = None, http: HttpListenerConfig | None = None, **kwargs: Any
    ) -> ControlServer:
        server = ControlServer(
            sock_path,
            program="http-test",
            version="7.7.7",
            config=config or ServerConfig(stop_grace=2.0),
            http=http or HttpListenerConfig(port=0),
            **kwargs,
        )

        @server.command("echo", inline=True)
        def echo(arguments: Any, context: CommandContext) -> Any:
            return {"echo": arguments}

        @server.command("blob")
        def blob(arguments: Any, context: CommandContext) -> dict[str, Any]:
            return {"blob": "x" * int(arguments["size"])}

        return ctrlsock_server_factory(request.param, server=server)

    return start


def address(server: ControlServer) -> tuple[str, int]:
    url = server.http_urls[0]
    host, _, port = url.split("//")[1].rstrip("/").rpartition(":")
    return ("127.0.0.1" if host == "0.0.0.0" else host), int(port)


def post(command: str, arguments: Any = None, *, extra: bytes = b"") -> bytes:
    document: dict[str, Any] = {"command": command}
    if arguments is not None:
        document["arguments"] = arguments
    body = json.dumps(document).encode()
    return (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def tcp(server: ControlServer, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    sock.connect(address(server))
    return sock


class Responses:
    """Reads HTTP responses (Content-Length framed, as the server writes them) off one socket."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"closed with {self.buffer!r} unread")
        self.buffer += data

    def at_eof(self) -> bool:
        """Whether the server closes the connection (without sending anything more) within WAIT."""
        try:
            return not self.buffer and self.sock.recv(65536) == b""
        except ConnectionResetError:
            return not self.buffer


def reply_of(body: bytes) -> dict[str, Any]:
    replies = json.loads(body)
    assert isinstance(replies, list) and len(replies) == 1, replies
    reply: dict[str, Any] = replies[0]
    return reply


def connections(server: ControlServer) -> dict[str, int]:
    counters: dict[str, int] = ask(server.socket_path, "status-get")["arguments"]["ctrlsock"]["connections"]
    return counters


def client(server: ControlServer, **kwargs: Any) -> HttpControlClient:
    return HttpControlClient(server.http_urls[0].replace("0.0.0.0", "127.0.0.1"), timeout=WAIT, **kwargs)


def one(server: ControlServer, command: str, arguments: Any = None) -> Reply:
    """One command on a connection of its own."""
    with client(server) as http:
        (reply,) = http.send_command(command, arguments)
        return reply


# --- keep-alive and pipelining ----------------------------------------------------------------------------


def test_a_hundred_commands_go_over_one_kept_alive_connection(serve: Serve) -> None:
    server = serve()
    with client(server) as http:
        for number in range(100):
            (reply,) = http.send_command("echo", {"n": number})
            assert reply.arguments == {"echo": {"n": number}}
    assert server.stats.accepted == 1  # one TCP connection carried them all


def test_two_thousand_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    server = serve()
    count = 2000
    burst = b"".join(post("echo", {"n": number}) for number in range(count))
    with tcp(server) as sock:
        # Written from another thread: the replies fill our receive buffer while the burst goes out.
        writer = threading.Thread(target=sock.sendall, args=(burst,))
        writer.start()
        responses = Responses(sock)
        try:
            for number in range(count):
                status, _headers, body = responses.next()
                assert status == 200
                assert reply_of(body)["arguments"] == {"echo": {"n": number}}
        finally:
            writer.join(WAIT)
    assert one(server, "version-get").text == "7.7.7"


# --- slow readers, timeouts and the buffer cap -------------------------------------------------------------


def test_a_client_that_never_reads_a_large_reply_is_dropped_while_others_are_served(
    serve: Serve, log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(write_deadline=0.5, stop_grace=1.0))
    with tcp(server, rcvbuf=4096) as stuck:
        stuck.sendall(post("blob", {"size": 8 * MIB}))
        # Served meanwhile, over HTTP and over the unix socket.
        with client(server) as http:
            assert http.send_command("version-get")[0].text == "7.7.7"
        assert ask(server.socket_path, "version-get")["text"] == "7.7.7"
        log_watch.wait_for("dropped reply to 127.0.0.1", timeout=WAIT)
        assert connections(server)["dropped-slow-reader"] == 1
        with client(server) as http:
            assert http.send_command("echo", 1)[0].arguments == {"echo": 1}


def test_a_reply_over_max_buffered_is_replaced_by_a_framed_refusal(serve: Serve) -> None:
    """The limit is decided before the response is framed: the client gets a well-formed 200 whose one
    reply says why, and its connection carries the next command."""
    server = serve(ServerConfig(max_buffered=1 * MIB, stop_grace=1.0))
    with client(server) as http:
        (refused,) = http.send_command("blob", {"size": 2 * MIB})
        assert refused.result == 1
        assert "max_buffered" in refused.text
        (small,) = http.send_command("blob", {"size": 100})
        assert small.arguments == {"blob": "x" * 100}
    assert server.stats.refused == 1


def test_a_client_trickling_its_headers_gets_408_and_is_closed(serve: Serve) -> None:
    server = serve(http=HttpListenerConfig(port=0, request_timeout=0.5))
    with tcp(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # A byte every 50 ms, each within any idle limit, until the server answers.
        for _ in range(int(WAIT / 0.05)):
            if select.select([sock], [], [], 0.05)[0]:
                break
            sock.sendall(b"X")
        responses = Responses(sock)
        status, _headers, body = responses.next()
        assert status == 408
        assert json.loads(body) == {"result": 408, "text": "Request Timeout"}
        assert responses.at_eof()
    assert connections(server)["timed-out"] == 1
    assert one(server, "version-get").result == 0


def test_an_idle_kept_alive_connection_is_closed_silently(serve: Serve) -> None:
    server = serve(http=HttpListenerConfig(port=0, idle_timeout=0.5))
    with tcp(server) as sock:
        sock.sendall(post("version-get"))
        responses = Responses(sock)
        assert responses.next()[0] == 200
        assert responses.at_eof()  # nothing sent: no 408 for a client that asked for nothing
    assert one(server, "version-get").result == 0


def test_unfinished_bodies_over_max_buffered_are_refused_and_the_server_survives(
    serve: Serve, log_watch: LogWatch
) -> None:
    server = serve(
        ServerConfig(max_buffered=2 * MIB, max_request_size=8 * MIB, stop_grace=1.0),
        http=HttpListenerConfig(port=0, request_timeout=1.0),
    )
    part = b"x" * (512 * 1024)
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000000\r\n\r\n"
    )
    socks = [tcp(server) for _ in range(8)]
    try:
        refused = 0
        for sock in socks:
            sock.sendall(head + part)
        for sock in socks:
            responses = Responses(sock)
            try:
                status, _headers, body = responses.next()
            except (EOFError, ConnectionResetError):
                continue  # refused before its headers were whole: HTTP has nothing to say to it
            if status == 408:
                continue  # held within the limit, then timed out as the incomplete request it is
            assert status == 200
            reply = reply_of(body)
            assert reply["result"] == 1 and "max_buffered" in reply["text"]
            refused += 1
        # 8 half-MiB bodies in 2 MiB: at least four refused (the others time out or wait).
        assert refused >= 4
        log_watch.wait_for("refused a request at")
    finally:
        for sock in socks:
            sock.close()
    assert one(server, "version-get").result == 0
    assert ask(server.socket_path, "version-get")["result"] == 0


# --- stopping ---------------------------------------------------------------------------------------------


def test_stop_answers_the_waiting_client_closes_idle_ones_and_the_port(serve: Serve) -> None:
    started, release = threading.Event(), threading.Event()
    server = serve(ServerConfig(stop_grace=WAIT))

    @server.command("slow")
    def slow(arguments: Any, context: CommandContext) -> dict[str, Any]:
        started.set()
        release.wait(WAIT)
        return {"slow": True}

    port_address = address(server)
    with tcp(server) as waiting, tcp(server) as idle:
        idle.sendall(post("version-get"))
        idle_responses = Responses(idle)
        assert idle_responses.next()[0] == 200
        waiting.sendall(post("slow"))
        assert started.wait(WAIT)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        try:
            assert idle_responses.at_eof()  # kept alive and idle: closed by the stop
            release.set()
            responses = Responses(waiting)
            status, headers, body = responses.next()
            assert status == 200
            reply = reply_of(body)
            assert reply == {"result": 0, "arguments": {"slow": True}} or reply["text"] == (
                "Server is shutting down"
            )
            assert headers.get("connection") == "close"
            assert responses.at_eof()
        finally:
            release.set()
            stopper.join(WAIT)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(port_address, timeout=WAIT):
        pass


# --- TLS --------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(serve: Serve, pki: dict[str, Path]) -> ControlServer:
    tls = TlsConfig(pki["server-cert"], pki["server-key"], trust_anchor=pki["ca"], cert_required=True)
    return serve(http=HttpListenerConfig(port=0, tls=tls, request_timeout=0.5))


def test_tls_refusals_are_counted_and_the_server_keeps_serving(
    tls_server: ControlServer, pki: dict[str, Path], log_watch: LogWatch
) -> None:
    # Plain HTTP on the TLS port.
    with tcp(tls_server) as plain:
        plain.sendall(post("version-get"))
        assert Responses(plain).at_eof()
    # TLS without a client certificate (TLS 1.3 says so after the client's handshake is done).
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)),
        context.wrap_socket(tcp(tls_server), server_hostname="127.0.0.1") as anonymous,
    ):
        anonymous.sendall(post("version-get"))
        Responses(anonymous).next()
    log_watch.wait_for("tls handshake with 127.0.0.1 failed")
    assert connections(tls_server)["tls-failed"] == 2
    with HttpControlClient(
        tls_server.http_urls[0],
        ca=pki["ca"],
        cert=pki["client-cert"],
        key=pki["client-key"],
        timeout=WAIT,
    ) as https:
        assert https.send_command("version-get")[0].text == "7.7.7"
        assert https.send_command("echo", 2)[0].arguments == {"echo": 2}


def test_a_tls_handshake_that_never_completes_is_closed_after_the_request_timeout(
    tls_server: ControlServer, log_watch: LogWatch
) -> None:
    with tcp(tls_server) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a TLS record, and no more
        assert Responses(sock).at_eof()
    log_watch.wait_for("tls handshake not done")
    assert connections(tls_server)["timed-out"] == 1


# --- who may run what -------------------------------------------------------------------------------------


def test_uid_rules_refuse_over_http_while_the_unix_socket_serves(sock_path: Path) -> None:
    other_uid = os.getuid() + 4242
    server = ControlServer(
        sock_path, config=ServerConfig(allow_uids=frozenset({other_uid})), http=HttpListenerConfig(port=0)
    )
    with server.running_in_thread(handle_signals=False):
        reply = one(server, "version-get")
        assert reply.result == 1
        assert reply.text.startswith("access denied: ")
        assert ask(sock_path, "version-get")["result"] == 0  # our own uid always passes


def test_a_per_command_uid_rule_refuses_that_command_over_http(serve: Serve) -> None:
    server = serve()

    @server.command("secret", allow_uids=[os.getuid() + 4242])
    def secret(arguments: Any, context: CommandContext) -> dict[str, Any]:
        return {"secret": 42}

    with client(server) as http:
        (refused,) = http.send_command("secret")
        assert refused.result == 1 and refused.text.startswith("access denied: ")
        assert http.send_command("version-get")[0].result == 0
    assert ask(server.socket_path, "secret") == {"result": 0, "arguments": {"secret": 42}}


def test_a_handler_sees_the_basic_auth_user_and_the_clients_address(serve: Serve) -> None:
    server = serve(http=HttpListenerConfig(port=0, users=[User("admin", "s3cret"), User("ops", "pw")]))
    seen: list[tuple[str | None, str | None, bool | None]] = []

    @server.command("whoami")
    def whoami(arguments: Any, context: CommandContext) -> None:
        http = context.http
        seen.append((http.user if http else None, context.remote_address, http.tls if http else None))

    with client(server, auth=Credentials("admin", "s3cret")) as http:
        assert http.send_command("whoami")[0].result == 0
    with client(server, auth=Credentials("ops", "pw")) as http:
        assert http.send_command("whoami")[0].result == 0
    with client(server, auth=Credentials("admin", "wrong")) as http, pytest.raises(AuthenticationError):
        http.send_command("whoami")
    assert seen == [("admin", "127.0.0.1", False), ("ops", "127.0.0.1", False)]


# --- forks and exposure -----------------------------------------------------------------------------------


def test_a_forked_child_does_not_keep_the_http_listener(sock_path: Path) -> None:
    server = ControlServer(sock_path, http=HttpListenerConfig(port=0))
    server.start_in_thread()
    child = 0
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    try:
        port_address = address(server)
        with client(server) as http:
            assert http.send_command("version-get")[0].result == 0
        child = os.fork()
        if child == 0:  # pragma: no cover  (the child: say ready, wait, leave without cleanup)
            os.write(ready_write, b"r")
            os.read(go_read, 1)
            os._exit(0)
        assert os.read(ready_read, 1) == b"r"
        server.stop()
        # Were the listener still open in the child, the kernel would accept into its backlog.
        with pytest.raises(ConnectionRefusedError), socket.create_connection(port_address, timeout=WAIT):
            pass
    finally:
        server.stop()
        os.write(go_write, b"g")
        if child:
            os.waitpid(child, 0)
        for fd in (ready_read, ready_write, go_read, go_write):
            os.close(fd)


def test_an_exposed_listener_is_refused_before_anything_is_bound(sock_path: Path) -> None:
    with pytest.raises(ServerError, match=r"refusing to serve http on 0\.0\.0\.0"):
        ControlServer(sock_path, http=HttpListenerConfig(host="0.0.0.0", port=0))
    assert not sock_path.exists()
    assert not sock_path.with_name(sock_path.name + ".lock").exists()


def test_an_exposed_listener_allowed_explicitly_serves(sock_path: Path) -> None:
    server = ControlServer(sock_path, http=HttpListenerConfig(host="0.0.0.0", port=0, allow_insecure=True))
    with server.running_in_thread(handle_signals=False):
        assert server.http_urls[0].startswith("http://0.0.0.0:")
        assert one(server, "version-get").result == 0
