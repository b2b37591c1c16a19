"""Metrics in ``status-get`` and the before/after command hooks, for real traffic in both embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import CommandError
from ctrlsock.protocol import Reply, Result
from ctrlsock.server import CommandContext, ControlServer, ServerConfig
from ctrlsock.server.stats import LATENCY_BUCKETS, UNKNOWN_COMMAND, CommandStats, result_of
from tests import test_server_model
from tests.children.server_client import ask, connect, read_to_eof
from tests.support import LogWatch
from tests.test_server import wait_peer_closed
from tests.test_server_model import CONFIG, Embedded

# The model tests' fixture: a server in each embedding (the server's log comes from conftest).
embed = test_server_model.embed

NOBODY = 65534
ROOT = Path(__file__).resolve().parents[1]

Embed = Callable[..., Embedded]


def extension(server: ControlServer) -> dict[str, Any]:
    reply = ask(server.socket_path, "status-get")
    assert reply["result"] == 0
    value: dict[str, Any] = reply["arguments"]["ctrlsock"]
    return value


def add_commands(server: ControlServer) -> None:
    @server.command("echo")
    def echo(arguments: Any, context: CommandContext) -> Any:
        return {"echo": arguments}

    @server.command("fail")
    def fail(arguments: Any, context: CommandContext) -> Any:
        raise CommandError("no such lease", result=Result.EMPTY)

    @server.command("blob")
    def blob(arguments: Any, context: CommandContext) -> Any:
        return {"blob": "x" * arguments["size"]}


def test_result_of_reads_the_code_of_an_encoded_reply() -> None:
    assert result_of(b'{"result":0}') == 0
    assert result_of(b'{"result":3,"text":"empty"}') == 3
    assert result_of(b'{"result":12,"arguments":{}}') == 12
    assert result_of(b'{"result":-1}') == -1
    assert result_of(b"garbage") == -1


def test_command_counts_by_result_and_histogram_match(embed: Embed) -> None:
    server = embed(CONFIG, add_commands).server
    for _ in range(3):
        assert ask(server.socket_path, "echo", {"a": 1})["result"] == 0
    assert ask(server.socket_path, "fail")["result"] == Result.EMPTY
    assert ask(server.socket_path, "version-get")["result"] == 0
    assert ask(server.socket_path, "no-such-command")["result"] == Result.UNSUPPORTED
    assert ask(server.socket_path, "other-unknown")["result"] == Result.UNSUPPORTED
    commands = extension(server)["commands"]
    assert commands["echo"]["results"] == {"0": 3}
    assert commands["fail"]["results"] == {"3": 1}
    assert commands["version-get"]["results"] == {"0": 1}
    # Client-chosen names are counted under one name.
    assert commands[UNKNOWN_COMMAND]["results"] == {"2": 2}
    assert "no-such-command" not in commands
    for name, counts in commands.items():
        duration = counts["duration"]
        assert duration["count"] == sum(counts["results"].values()), name
        buckets = list(duration["buckets"].values())
        assert list(duration["buckets"]) == [*map(repr, LATENCY_BUCKETS), "+Inf"]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets[-1] == duration["count"]
        assert duration["sum"] >= 0.0


def test_flat_status_keys_are_kept_beside_the_extension(embed: Embed) -> None:
    server = embed(CONFIG, add_commands).server
    arguments = ask(server.socket_path, "status-get")["arguments"]
    for key in ("pid", "uptime", "reload", "connections-served", "connections-open", "replies-dropped"):
        assert key in arguments
    assert set(arguments["ctrlsock"]) == {"connections", "bytes", "handlers", "commands"}


def test_connection_and_byte_counters_follow_traffic(embed: Embed) -> None:
    server = embed(CONFIG, add_commands).server
    request = json.dumps({"command": "echo", "arguments": {"k": "v"}}).encode()
    with connect(server.socket_path) as sock:
        sock.sendall(request)
        reply = read_to_eof(sock)
    before = extension(server)
    assert before["connections"]["accepted"] == 1 + 1  # echo, then this status-get
    assert before["connections"]["open"] == 1  # the status-get asking
    assert before["bytes"]["received"] >= len(request)
    assert before["bytes"]["sent"] >= len(reply)
    after = extension(server)
    status_request = len(json.dumps({"command": "status-get"}).encode())
    assert after["bytes"]["received"] - before["bytes"]["received"] == status_request
    assert after["bytes"]["sent"] > before["bytes"]["sent"]
    assert after["connections"]["served"] == before["connections"]["served"] + 1
    assert after["handlers"] == {"running": 0, "waiting": 0}


def test_a_client_that_never_reads_counts_as_dropped_slow_reader(embed: Embed, log_watch: LogWatch) -> None:
    config = ServerConfig(idle_timeout=5.0, write_deadline=0.3, stop_grace=5.0)
    server = embed(config, add_commands).server
    with connect(server.socket_path, rcvbuf=4096) as stuck:
        stuck.sendall(json.dumps({"command": "blob", "arguments": {"size": 8 << 20}}).encode())
        wait_peer_closed(stuck)
        log_watch.wait_for("dropped reply")
    connections = extension(server)["connections"]
    assert connections["dropped-slow-reader"] == 1
    assert connections["dropped"] == 1
    assert connections["timed-out"] == 0


def test_an_idle_client_counts_as_timed_out(embed: Embed) -> None:
    config = ServerConfig(idle_timeout=0.2, write_deadline=5.0, stop_grace=5.0)
    server = embed(config, add_commands).server
    with connect(server.socket_path) as idle:
        idle.sendall(b'{"command": "ec')
        reply = json.loads(read_to_eof(idle))  # the server answers with a timeout, then closes
    assert reply["result"] == Result.ERROR
    assert "timed out" in reply["text"]
    connections = extension(server)["connections"]
    assert connections["timed-out"] == 1
    assert connections["dropped-slow-reader"] == 0


def test_a_reply_over_max_buffered_counts_as_refused(embed: Embed) -> None:
    config = ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=5.0, max_buffered=256 * 1024)
    server = embed(config, add_commands).server
    refused = ask(server.socket_path, "blob", {"size": 1 << 20})
    assert refused["result"] == 1
    assert "max_buffered" in refused["text"]
    connections = extension(server)["connections"]
    assert connections["refused-limit"] == 1
    assert connections["dropped-slow-reader"] == 0
    # The handler itself succeeded: its count says so; the refusal is the connection's.
    assert extension(server)["commands"]["blob"]["results"] == {"0": 1}


def test_counts_from_the_io_thread_and_from_workers_add_up() -> None:
    stats = CommandStats()
    stats.record_on_io_thread("status-get", 0, 0.0001)
    stats.record("status-get", 1, 0.2)
    stats.record("status-get", 0, 30.0)
    counts = stats.as_dict()["status-get"]
    assert counts["results"] == {"0": 2, "1": 1}
    duration = counts["duration"]
    assert duration["count"] == 3
    assert duration["buckets"]["0.0005"] == 1
    assert duration["buckets"]["0.25"] == 2
    assert duration["buckets"]["10.0"] == 2
    assert duration["buckets"]["+Inf"] == 3
    assert duration["sum"] == pytest.approx(30.2001)


def test_metrics_off_counts_no_commands(embed: Embed) -> None:
    server = embed(ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=5.0, metrics=False)).server
    assert ask(server.socket_path, "version-get")["result"] == 0
    ext = extension(server)
    assert ext["commands"] == {}
    assert ext["connections"]["accepted"] == 2


# --- hooks ---------------------------------------------------------------------------------------------


class Audit:
    def __init__(self) -> None:
        self.before: list[CommandContext] = []
        self.after: list[tuple[CommandContext, int, float, tuple[int, int, int] | None]] = []
        self.done = threading.Event()

    def add_to(self, server: ControlServer) -> None:
        server.before_command(self.on_before)
        server.after_command(self.on_after)

    def on_before(self, context: CommandContext) -> None:
        self.before.append(context)

    def on_after(self, context: CommandContext, result: int, seconds: float) -> None:
        peer = context.peer
        self.after.append((context, result, seconds, (peer.pid, peer.uid, peer.gid) if peer else None))
        self.done.set()


def test_hooks_see_request_context_result_and_duration(embed: Embed) -> None:
    audit = Audit()

    def setup(server: ControlServer) -> None:
        add_commands(server)
        audit.add_to(server)

    server = embed(CONFIG, setup).server
    assert ask(server.socket_path, "echo", {"x": 1})["result"] == 0
    assert ask(server.socket_path, "fail")["result"] == Result.EMPTY
    assert ask(server.socket_path, "version-get")["result"] == 0
    assert [c.command for c in audit.before] == ["echo", "fail", "version-get"]
    assert audit.before[0].arguments == {"x": 1}
    assert [(c.command, r) for c, r, _, _ in audit.after] == [("echo", 0), ("fail", 3), ("version-get", 0)]
    ids = [c.request_id for c, *_ in audit.after]
    assert ids == sorted(ids) and len(set(ids)) == 3 and ids[0] >= 1
    for context, _, seconds, peer in audit.after:
        assert seconds >= 0.0
        assert context.started_at > 0.0
        assert peer == (os.getpid(), os.getuid(), os.getgid())


def test_hooks_run_around_a_coroutine_handler(embed: Embed) -> None:
    audit = Audit()
    ran: list[int] = []

    def setup(server: ControlServer) -> None:
        @server.command("later")
        async def later(arguments: Any, context: CommandContext) -> Any:
            ran.append(context.request_id)
            return {"id": context.request_id}

        @server.before_command
        def refuse_odd(context: CommandContext) -> Reply | None:
            audit.before.append(context)
            return Reply(Result.ERROR, "odd") if context.arguments == {"odd": True} else None

        server.after_command(audit.on_after)

    server = embed(CONFIG, setup).server
    reply = ask(server.socket_path, "later")
    assert reply["result"] == 0
    assert ask(server.socket_path, "later", {"odd": True}) == {"result": 1, "text": "odd"}
    assert ran == [reply["arguments"]["id"]]
    assert [(c.command, r) for c, r, _, _ in audit.after] == [("later", 0), ("later", 1)]
    assert all(peer == (os.getpid(), os.getuid(), os.getgid()) for *_, peer in audit.after)
    assert extension(server)["commands"]["later"]["results"] == {"0": 1, "1": 1}


def test_before_hook_refusal_is_the_reply_and_the_handler_never_runs(embed: Embed) -> None:
    ran: list[str] = []
    audit = Audit()

    def setup(server: ControlServer) -> None:
        @server.command("guarded")
        def guarded(arguments: Any, context: CommandContext) -> Any:
            ran.append(context.command)
            return None

        @server.before_command
        def authorize(context: CommandContext) -> Reply | None:
            if context.command == "guarded" and context.arguments != {"token": "yes"}:
                raise CommandError("not authorized", result=Result.ERROR)
            if context.command == "version-get":
                return Reply(Result.CONFLICT, "not now")
            return None

        server.after_command(audit.on_after)

    server = embed(CONFIG, setup).server
    assert ask(server.socket_path, "guarded") == {"result": 1, "text": "not authorized"}
    assert ask(server.socket_path, "version-get") == {"result": 4, "text": "not now"}
    assert ran == []
    assert ask(server.socket_path, "guarded", {"token": "yes"})["result"] == 0
    assert ran == ["guarded"]
    assert [(c.command, r) for c, r, _, _ in audit.after] == [
        ("guarded", 1),
        ("version-get", 4),
        ("guarded", 0),
    ]
    assert extension(server)["commands"]["guarded"]["results"] == {"0": 1, "1": 1}


def test_raising_hooks_are_logged_and_the_server_goes_on(embed: Embed, log_watch: LogWatch) -> None:
    ran: list[str] = []

    def setup(server: ControlServer) -> None:
        @server.command("work")
        def work(arguments: Any, context: CommandContext) -> Any:
            ran.append("work")
            return {"done": True}

        @server.before_command
        def broken_check(context: CommandContext) -> None:
            if context.arguments == {"break": "before"}:
                raise RuntimeError("check exploded")

        @server.after_command
        def broken_audit(context: CommandContext, result: int, seconds: float) -> None:
            raise ValueError("audit sink gone")

    server = embed(CONFIG, setup).server
    # A failing after-hook never changes the reply.
    assert ask(server.socket_path, "work") == {"result": 0, "arguments": {"done": True}}
    log_watch.wait_for("after-command hook")
    # A before-hook that breaks refuses (it may be an authorization check): logged, result 1.
    refused = ask(server.socket_path, "work", {"break": "before"})
    assert refused["result"] == 1
    assert "check exploded" in refused["text"]
    log_watch.wait_for("command 'work' failed")
    assert ran == ["work"]
    assert ask(server.socket_path, "version-get")["result"] == 0


def test_hooks_see_another_users_pid_and_uid(embed: Embed, sock_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    os.chmod(sock_dir, 0o755)
    audit = Audit()
    config = ServerConfig(idle_timeout=5.0, write_deadline=5.0, stop_grace=5.0, mode=0o666)
    server = embed(config, audit.add_to).server
    client = (
        "import sys; from tests.children.server_client import ask; "
        "print(ask(sys.argv[1], 'version-get')['result'], flush=True)"
    )
    process = subprocess.Popen(
        [
            "setpriv",
            "--reuid",
            str(NOBODY),
            "--regid",
            str(NOBODY),
            "--clear-groups",
            sys.executable,
            "-c",
            client,
            str(server.socket_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "0"
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert audit.done.wait(5.0)
    (context, result, _, peer) = audit.after[0]
    assert context.command == "version-get"
    assert result == 0
    assert peer == (process.pid, NOBODY, NOBODY)
