"""Memory and latency limits, and the rough edges: shared config-get encodings, a cap on the bytes held for
clients, a whole-request deadline, large requests decoded off the I/O thread, supplementary groups,
generic handler-failure texts, refusals that say so, and a silent library logger."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrlsock.protocol import Reply, encode_reply
from ctrlsock.server import CommandContext, ControlServer, JsonFileConfig, ServerConfig
from ctrlsock.server.builtin_commands import encode_config_reply
from ctrlsock.testing import ServerFactory
from tests.children.server_client import ask, ask_raw, connect, read_to_eof
from tests.support import ASK_SCRIPT, REPO_DIR, LogWatch

WAIT = 10.0
MIB = 1024 * 1024


@pytest.fixture(params=["thread", "asyncio"])
def serve(
    request: pytest.FixtureRequest, sock_path: Path, ctrlsock_server_factory: ServerFactory
) -> Callable[..., ControlServer]:
    """Start a server in the thread embedding, or on an asyncio loop running in another thread."""

    def start(config: ServerConfig, **kwargs: Any) -> ControlServer:
        server = ControlServer(sock_path, program="limits-test", version="3.3.3", config=config, **kwargs)

        @server.command("blob")
        def blob(arguments: Any, context: CommandContext) -> dict[str, Any]:
            return {"blob": "x" * int(arguments["size"])}

        @server.command("echo")
        def echo(arguments: Any, context: CommandContext) -> dict[str, Any]:
            return {"size": len(json.dumps(arguments)), "thread": threading.current_thread().name}

        @server.command("boom")
        def boom(arguments: Any, context: CommandContext) -> None:
            raise RuntimeError("db password=hunter2 invalid")

        return ctrlsock_server_factory(request.param, server=server)

    return start


def read_reply(sock: Any) -> bytes:
    """Read to EOF, or to the reset that a close with our request bytes unread causes (after the data)."""
    parts = []
    try:
        while data := sock.recv(65536):
            parts.append(data)
    except ConnectionResetError:
        pass
    return b"".join(parts)


def stuck_reader(path: Path, request: dict[str, Any]) -> Any:
    """A client with a tiny receive buffer that sends a request and reads only the first bytes."""
    sock = connect(path, rcvbuf=4096, timeout=WAIT)
    sock.sendall(json.dumps(request).encode())
    first = sock.recv(16)
    assert first
    return sock, first


def test_clients_share_the_encoding_of_an_unchanged_config(
    serve: Callable[..., ControlServer], sock_dir: Path
) -> None:
    config_file = sock_dir / "config.json"
    config_file.write_text(json.dumps({"big": "y" * (2 * MIB)}))
    # Room for one encoding of the config, not for three: three stuck readers all get it only if shared.
    server = serve(
        ServerConfig(max_buffered=3 * MIB, stop_grace=1.0), config_provider=JsonFileConfig(config_file)
    )
    readers = [stuck_reader(server.socket_path, {"command": "config-get"}) for _ in range(3)]
    try:
        for sock, first in readers:
            reply = json.loads(first + read_to_eof(sock))
            assert reply["result"] == 0
            assert len(reply["arguments"]["big"]) == 2 * MIB
    finally:
        for sock, _ in readers:
            sock.close()


def test_distinct_big_replies_over_max_buffered_are_refused_with_a_reply(
    serve: Callable[..., ControlServer], log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(max_buffered=3 * MIB, stop_grace=1.0))
    first_sock, first = stuck_reader(server.socket_path, {"command": "blob", "arguments": {"size": 2 * MIB}})
    try:
        refused = ask(server.socket_path, "blob", {"size": 2 * MIB + 1}, timeout=WAIT)
        assert refused["result"] == 1
        assert "max_buffered" in refused["text"]
        log_watch.wait_for("refused to hold")
        assert ask(server.socket_path, "version-get")["text"] == "3.3.3"
        whole = json.loads(first + read_to_eof(first_sock))
        assert len(whole["arguments"]["blob"]) == 2 * MIB
    finally:
        first_sock.close()


def test_unfinished_requests_over_max_buffered_are_refused(
    serve: Callable[..., ControlServer], log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(max_buffered=MIB, stop_grace=1.0))
    with connect(server.socket_path, timeout=WAIT) as sock:
        sock.sendall(b'{"command": "echo", "arguments": "' + b"z" * (MIB // 2))
        with connect(server.socket_path, timeout=WAIT) as other:
            # The server answers and closes while we are still sending: the point.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                other.sendall(b'{"command": "echo", "arguments": "' + b"z" * MIB)
            reply = json.loads(read_reply(other))
        assert reply["result"] == 1
        assert reply["text"].startswith("request refused")
        log_watch.wait_for("refused a request")
        sock.sendall(b'"}')
        assert json.loads(read_to_eof(sock))["result"] == 0  # the first one, within the limit, goes on


def test_a_trickled_request_is_cut_off_at_the_whole_request_deadline(
    serve: Callable[..., ControlServer], log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(idle_timeout=5.0, request_deadline=0.5, stop_grace=1.0))
    with connect(server.socket_path, timeout=WAIT) as sock:
        sent = 0
        try:
            for byte in b'{"command": "echo", "arguments": "' + b"z" * 1000:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)  # a byte now and then, each well within the idle timeout: the point
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = json.loads(read_reply(sock))
    assert reply["result"] == 1
    assert reply["text"].startswith("Connection over control channel timed out, discarded partial command")
    assert sent < 1000
    log_watch.wait_for("incomplete after")


def test_a_large_request_is_decoded_off_the_io_thread(serve: Callable[..., ControlServer]) -> None:
    server = serve(ServerConfig(stop_grace=1.0))
    arguments = {f"key{index}": index for index in range(50_000)}
    raw = json.dumps({"command": "echo", "arguments": arguments}).encode()
    reply = json.loads(ask_raw(server.socket_path, raw, timeout=WAIT))
    assert reply["result"] == 0
    assert reply["arguments"]["size"] == len(json.dumps(arguments))
    assert any("decoder" in thread.name for thread in threading.enumerate())


def test_handler_failure_text_can_be_generic(
    serve: Callable[..., ControlServer], log_watch: LogWatch
) -> None:
    server = serve(ServerConfig(expose_handler_errors=False, stop_grace=1.0))
    reply = ask(server.socket_path, "boom")
    assert reply == {
        "result": 1,
        "text": "Error during command processing: internal error (see the server's log)",
    }
    assert "hunter2" not in json.dumps(reply)
    record = log_watch.wait_for("command 'boom' failed")
    assert record.exc_info is not None
    assert "hunter2" in str(record.exc_info[1])


def test_the_library_logger_has_a_null_handler_and_prints_nothing_unconfigured(sock_dir: Path) -> None:
    code = f"""
import ctrlsock
from ctrlsock.server import ControlServer
from tests.children.server_client import ask
server = ControlServer({str(sock_dir / "ctrl.sock")!r})
@server.command("boom")
def boom(arguments, context):
    raise RuntimeError("boom")
server.start_in_thread()
assert ask(server.socket_path, "boom")["result"] == 1
server.stop()
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO_DIR, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("ctrlsock").handlers)


def ask_with_groups(path: Path, command: str, groups: str) -> dict[str, Any]:
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    done = subprocess.run(
        [
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            f"--groups={groups}",
            python,
            "-c",
            ASK_SCRIPT,
            str(path),
            command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_allow_gids_honours_supplementary_groups_and_refusals_say_access_denied(
    serve: Callable[..., ControlServer], sock_dir: Path
) -> None:
    os.chmod(sock_dir, 0o711)
    server = serve(ServerConfig(mode=0o666, allow_gids=frozenset({4242}), stop_grace=1.0))
    assert ask_with_groups(server.socket_path, "version-get", "4242")["result"] == 0  # an ops group
    refused = ask_with_groups(server.socket_path, "version-get", "4343")
    assert refused["result"] == 1
    assert refused["text"].startswith("access denied: 'version-get' command not allowed for uid 65534")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=80) | st.dictionaries(st.text(max_size=4), children, max_size=80)
    ),
    max_leaves=400,
)


@settings(max_examples=60)
@given(json_values)
def test_config_get_encoding_in_batches_is_byte_for_byte_the_protocols(config: Any) -> None:
    assert bytes(encode_config_reply(config)) == encode_reply(Reply(0, "", config))


def test_a_big_config_is_encoded_in_batches_to_the_same_bytes() -> None:
    config = {
        "Dhcp4": {"subnet4": [{"id": index, "pools": list(range(70))} for index in range(1000)], "x": 1}
    }
    encoded = encode_config_reply(config)
    assert isinstance(encoded, bytearray)  # the batched path, not one json.dumps
    assert bytes(encoded) == encode_reply(Reply(0, "", config))
