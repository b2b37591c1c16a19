"""A closed-loop load generator for any Kea-style control socket (ours or Kea's own), or HTTP endpoint.

Each of N client *processes* repeats, as fast as replies come back: connect, send one command, read the
reply to EOF, close, parse the reply. Against an HTTP(S) endpoint each process keeps one persistent
connection instead (reopened when the server closes it), as HTTP/1.1 clients do.
Processes rather than threads, because one Python process cannot drive a fast server hard enough (the
GIL would measure us, not the server). A reply that does not parse, or a connection that fails, counts
as an error by kind and never stops the run.

The module only needs a raw ``AF_UNIX`` socket and ``json``: it measures a server, so it must not share
the client code paths it may be used to judge. Over HTTP it shares only the sans-IO HTTP layer (h11's
parser) and the TLS context settings, not the blocking client.
"""

from __future__ import annotations

import array
import json
import math
import multiprocessing
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from ctrlsock.errors import BadReplyError, RemoteProtocolError, TruncatedReplyError
from ctrlsock.protocol import JsonFeed

if TYPE_CHECKING:
    from multiprocessing.context import SpawnContext
    from ssl import SSLContext

    from ctrlsock.http_protocol import ClientConnection, ControlUrl

DEFAULT_CLIENTS: Final = 4
DEFAULT_DURATION: Final = 5.0
DEFAULT_COMMAND: Final = "version-get"
DEFAULT_TIMEOUT: Final = 10.0
# Workers must all be running before the clock starts, or process start-up is measured too.
START_TIMEOUT: Final = 30.0
_READ_SIZE: Final = 65536

# Error kinds, the keys of BenchResult.errors.
NOT_FOUND: Final = "no-such-socket"
REFUSED: Final = "refused"
PERMISSION: Final = "permission-denied"
TIMEOUT: Final = "timeout"
TRUNCATED: Final = "truncated"
BAD_REPLY: Final = "bad-reply"
OS_ERROR: Final = "os-error"
TLS: Final = "tls"
#: An HTTP status other than 200 counts as ``http-<status>``, e.g. ``http-401``.
HTTP_STATUS_PREFIX: Final = "http-"


@dataclass(frozen=True)
class HttpTarget:
    """An HTTP(S) control endpoint to measure, with what it takes to be let in."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        return self.url


class _HttpStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _HttpSession:
    """One worker's persistent connection: sends the request, returns the body of a 200 response."""

    def __init__(self, target: HttpTarget, request: bytes, timeout: float) -> None:
        from ctrlsock.http_protocol import Credentials, Scheme, parse_control_url  # noqa: PLC0415

        self.url: ControlUrl = parse_control_url(target.url)
        self.credentials = (
            Credentials(target.user, target.password or "") if target.user is not None else None
        )
        self.request = request
        self.timeout = timeout
        self.tls: SSLContext | None = None
        if self.url.scheme is Scheme.HTTPS:
            from ctrlsock.http_client import tls_context  # noqa: PLC0415

            self.tls = tls_context(ca=target.ca, cert=target.cert, key=target.key)
        self.sock: socket.socket | None = None
        self.conn: ClientConnection | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.conn = None

    def exchange(self) -> bytes:
        from ctrlsock.http_protocol import NEED_DATA, ClientConnection  # noqa: PLC0415

        try:
            if self.sock is None or self.conn is None:
                sock = socket.create_connection((self.url.host, self.url.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.url.host)
                self.sock, self.conn = sock, ClientConnection(self.url, credentials=self.credentials)
            sock, conn = self.sock, self.conn
            sock.sendall(conn.send_body(self.request))
            while (reply := conn.next_reply()) is NEED_DATA:
                conn.receive_data(sock.recv(_READ_SIZE))
        except BaseException:
            self.close()
            raise
        assert not isinstance(reply, type(NEED_DATA))
        if reply.keep_alive:
            conn.start_next_cycle()
        else:
            self.close()
        if reply.status != 200:
            raise _HttpStatusError(reply.status)
        return reply.body


@dataclass(frozen=True)
class BenchResult:
    """What one run measured. Latencies are in seconds, sorted ascending.

    ``commands`` counts every reply that parsed; a reply whose ``result`` is not ``expect_result`` is
    also an error (an unsupported command answers fast, and a benchmark of it measures nothing).
    """

    socket_path: Path | HttpTarget
    command: str
    clients: int
    duration: float
    commands: int
    errors: dict[str, int] = field(default_factory=dict)
    results: dict[int, int] = field(default_factory=dict)
    latencies: tuple[float, ...] = ()
    expect_result: int = 0

    @property
    def unexpected_results(self) -> int:
        """Replies that parsed but whose ``result`` is not ``expect_result``."""
        return sum(count for result, count in self.results.items() if result != self.expect_result)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.unexpected_results

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.duration if self.duration > 0 else 0.0

    def percentile(self, percent: float) -> float | None:
        """Nearest-rank percentile of the latencies in seconds (None when nothing completed)."""
        if not self.latencies:
            return None
        rank = max(1, math.ceil(percent / 100.0 * len(self.latencies)))
        return self.latencies[min(rank, len(self.latencies)) - 1]

    def latency_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 3)

        return {
            "p50": ms(self.percentile(50)),
            "p90": ms(self.percentile(90)),
            "p99": ms(self.percentile(99)),
            "max": ms(self.latencies[-1] if self.latencies else None),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "socket": str(self.socket_path),
            "command": self.command,
            "clients": self.clients,
            "duration_s": round(self.duration, 3),
            "commands": self.commands,
            "commands_per_s": round(self.commands_per_s, 1),
            "latency_ms": self.latency_ms(),
            "errors": dict(sorted(self.errors.items())),
            "error_count": self.error_count,
            "expect_result": self.expect_result,
            "unexpected_results": self.unexpected_results,
            "results": {str(result): count for result, count in sorted(self.results.items())},
        }


def encode_bench_request(
    command: str, arguments: Any = None, service: tuple[str, ...] | None = None
) -> bytes:
    """The request every client sends, compact JSON as Kea's own clients send it."""
    request: dict[str, Any] = {"command": command}
    if arguments is not None:
        request["arguments"] = arguments
    if service is not None:
        request["service"] = list(service)
    return json.dumps(request, separators=(",", ":")).encode()


def parse_result(reply: bytes) -> int:
    """The ``result`` of one complete reply; ValueError when it is not a Kea-style reply.

    ``kea-ctrl-agent`` wraps replies in a list, one per service: each must be a reply, and the first
    result that is not 0 counts (0 when all are).
    """
    document = json.loads(reply)
    entries = document if isinstance(document, list) and document else [document]
    results = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("reply is not a JSON object")
        result = entry.get("result")
        if not isinstance(result, int) or isinstance(result, bool):
            raise ValueError("reply has no integer 'result'")
        results.append(result)
    return next((result for result in results if result != 0), 0)


def _one_command(path: str, request: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(_READ_SIZE):
            chunks.append(chunk)
    return b"".join(chunks)


def _classify(error: OSError) -> str:
    if type(error).__module__ == "ssl":  # ssl.SSLError and its kinds, without importing ssl here
        return TLS
    if isinstance(error, FileNotFoundError):
        return NOT_FOUND
    if isinstance(error, ConnectionRefusedError):
        return REFUSED
    if isinstance(error, PermissionError):
        return PERMISSION
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return OS_ERROR


def _client_loop(
    *,
    path: str | HttpTarget,
    request: bytes,
    timeout: float,
    start: Any,  # multiprocessing.Event: the clock starts when it is set
    deadline: Any,  # multiprocessing.Value("d"): time.monotonic() at which to stop starting commands
    conn: Connection,
) -> None:
    """One client process: runs until the shared deadline, then sends its tallies to the parent."""
    latencies = array.array("d")
    errors: Counter[str] = Counter()
    results: Counter[int] = Counter()
    session = _HttpSession(path, request, timeout) if isinstance(path, HttpTarget) else None
    conn.send("ready")
    start.wait()
    stop_at = deadline.value
    clock = time.monotonic
    while clock() < stop_at:
        began = clock()
        try:
            if session is not None:
                reply = session.exchange()
            else:
                assert isinstance(path, str)
                reply = _one_command(path, request, timeout)
        except OSError as error:
            errors[_classify(error)] += 1
            continue
        except _HttpStatusError as error:
            errors[f"{HTTP_STATUS_PREFIX}{error.status}"] += 1
            continue
        except TruncatedReplyError:
            errors[TRUNCATED] += 1
            continue
        except BadReplyError:
            errors[BAD_REPLY] += 1
            continue
        elapsed = clock() - began
        if not reply:
            errors[TRUNCATED] += 1
            continue
        try:
            result = parse_result(reply)
        except (ValueError, RecursionError):
            # json.loads raises ValueError for a cut-off document and RecursionError for deep nesting.
            errors[TRUNCATED if _looks_truncated(reply) else BAD_REPLY] += 1
            continue
        results[result] += 1
        latencies.append(elapsed)
    if session is not None:
        session.close()
    conn.send((latencies.tobytes(), dict(errors), dict(results), clock()))
    conn.close()


def _looks_truncated(reply: bytes) -> bool:
    """A JSON value that began and never closed: cut off, not malformed (the client's own framer decides)."""
    feed = JsonFeed(max_size=None, max_depth=None)
    feed.receive_data(reply)
    try:
        document = feed.next_document()
    except RemoteProtocolError:
        return False
    return document is None and feed.started


def run_bench(
    socket_path: Path | HttpTarget,
    *,
    clients: int = DEFAULT_CLIENTS,
    duration: float = DEFAULT_DURATION,
    command: str = DEFAULT_COMMAND,
    arguments: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
    start_method: Literal["fork", "forkserver", "spawn"] = "fork",
    expect_result: int = 0,
    service: tuple[str, ...] | None = None,
) -> BenchResult:
    """Run ``clients`` closed-loop client processes against ``socket_path`` for ``duration`` seconds.

    Args:
        socket_path: the control socket (any Kea-compatible server), or an HTTP(S) endpoint.
        clients: how many client processes, each with at most one command in flight.
        duration: seconds during which clients start new commands; commands in flight then finish.
        command: the command every client sends.
        arguments: its ``arguments`` (any JSON value), omitted when None.
        timeout: per-command socket timeout in seconds; a command that exceeds it counts as an error.
        start_method: the multiprocessing start method; ``fork`` starts fastest, use ``forkserver`` or
            ``spawn`` from a process that runs threads.
        expect_result: the ``result`` a reply must have not to count as an error.
        service: the request's ``service`` list (kea-ctrl-agent forwards to these), omitted when None.

    Returns:
        The tallies; ``commands`` counts only replies that parsed.

    Raises:
        ValueError: ``clients`` < 1 or ``duration`` <= 0.
        RuntimeError: a client process did not start or report.
    """
    if clients < 1:
        raise ValueError(f"clients must be at least 1, not {clients}")
    if duration <= 0:
        raise ValueError(f"duration must be positive, not {duration}")
    request = encode_bench_request(command, arguments, service)
    # typeshed types get_context(str) as BaseContext, which lacks Process; every real context has it.
    context = cast("SpawnContext", multiprocessing.get_context(start_method))
    start = context.Event()
    deadline = context.Value("d", 0.0, lock=False)
    workers = []
    pipes: list[Connection] = []
    try:
        for _ in range(clients):
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(
                target=_client_loop,
                kwargs={
                    "path": socket_path if isinstance(socket_path, HttpTarget) else str(socket_path),
                    "request": request,
                    "timeout": timeout,
                    "start": start,
                    "deadline": deadline,
                    "conn": sender,
                },
                daemon=True,
            )
            worker.start()
            sender.close()
            workers.append(worker)
            pipes.append(receiver)
        for receiver in pipes:
            if not receiver.poll(START_TIMEOUT):
                raise RuntimeError(f"a bench client did not start within {START_TIMEOUT:g} s")
            try:
                receiver.recv()
            except EOFError:
                raise RuntimeError("a bench client died while starting") from None
        began = time.monotonic()
        deadline.value = began + duration
        start.set()
        latencies = array.array("d")
        errors: Counter[str] = Counter()
        results: Counter[int] = Counter()
        finished = began
        for receiver in pipes:
            # A command started just before the deadline may take up to ``timeout`` to end.
            if not receiver.poll(duration + timeout + START_TIMEOUT):
                raise RuntimeError("a bench client did not report its results")
            try:
                raw, worker_errors, worker_results, ended = receiver.recv()
            except EOFError:
                raise RuntimeError("a bench client died before reporting its results") from None
            latencies.frombytes(raw)
            errors.update(worker_errors)
            results.update(worker_results)
            finished = max(finished, ended)
    finally:
        for receiver in pipes:
            receiver.close()
        for worker in workers:
            worker.join(timeout=5.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return BenchResult(
        socket_path=socket_path,
        command=command,
        clients=clients,
        duration=max(finished - began, 1e-9),
        commands=sum(results.values()),
        errors=dict(errors),
        results=dict(results),
        latencies=tuple(sorted(latencies)),
        expect_result=expect_result,
    )
