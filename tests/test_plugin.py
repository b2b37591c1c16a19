"""The pytest plugin for daemon authors and the public ``call()``: a test suite that uses the fixture,
run by a real pytest in a child process, in both embeddings; and the cost of the plugin to a suite that
does not use it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.errors import ServerError, SocketNotFoundError
from ctrlsock.protocol import Result
from ctrlsock.server import CommandContext, ControlServer
from ctrlsock.testing import ServerFactory
from tests.support import REPO_DIR

pytest_plugins = ["pytester"]

AUTHOR_TESTS = """
import pytest
from pathlib import Path

from ctrlsock.protocol import Result

@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_lease_get(ctrlsock_server_factory, embedding):
    server = ctrlsock_server_factory(embedding, idle_timeout=2.0)

    @server.command("lease-get")
    def lease_get(arguments, context):
        return {"ip-address": arguments["ip-address"], "state": 0}

    reply = server.call("lease-get", {"ip-address": "192.0.2.1"})
    assert reply.result == Result.SUCCESS
    assert reply.arguments == {"ip-address": "192.0.2.1", "state": 0}
    assert "lease-get" in server.call("list-commands").arguments
    Path("sockets.txt").open("a").write(f"{server.socket_path}\\n")
"""


def run_author_tests(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_author=source)
    return pytester.runpytest_subprocess("-p", "ctrlsock.pytest_plugin", "-p", "no:cacheprovider", "-v")


def test_a_suite_using_the_fixture_passes_in_both_embeddings_and_leaves_no_socket(
    pytester: pytest.Pytester,
) -> None:
    result = run_author_tests(pytester, AUTHOR_TESTS)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_lease_get?thread? PASSED*", "*test_lease_get?asyncio? PASSED*"])
    sockets = [Path(line) for line in (pytester.path / "sockets.txt").read_text().split()]
    assert len(sockets) == 2
    for socket_path in sockets:
        assert socket_path.name == "ctrl.sock"
        assert len(bytes(socket_path)) < 108
        assert not socket_path.exists()
        assert not socket_path.parent.exists()  # the temporary directory is removed too


def test_teardown_fails_a_test_whose_server_did_not_stop_cleanly(pytester: pytest.Pytester) -> None:
    # Someone else's socket at the path after the stop: the fixture must say so, not pass silently.
    source = """
import socket

def test_replaced(ctrlsock_server_factory):
    server = ctrlsock_server_factory("thread")
    server.stop()
    with socket.socket(socket.AF_UNIX) as intruder:
        intruder.bind(str(server.socket_path))
"""
    result = run_author_tests(pytester, source)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ServerError: the stopped server left a socket at *ctrl.sock*"])


def test_the_fixture_takes_a_ready_server(pytester: pytest.Pytester) -> None:
    source = """
from ctrlsock.server import ControlServer

def test_ready(ctrlsock_server_factory):
    server = ControlServer(ctrlsock_server_factory.socket_path(), program="ready", version="9.9")
    server.add_command("hello", lambda arguments, context: {"hello": arguments})
    assert ctrlsock_server_factory("asyncio", server=server) is server
    assert server.call("version-get").text == "9.9"
    assert server.call("hello", [1]).arguments == {"hello": [1]}
"""
    run_author_tests(pytester, source).assert_outcomes(passed=1)


def test_loading_the_plugin_imports_neither_the_server_nor_asyncio() -> None:
    # Every pytest run of every project with ctrlsock installed loads the plugin through its entry point.
    code = (
        "import sys, ctrlsock.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ctrlsock.server', 'ctrlsock.testing', "
        "'asyncio'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "[]"


def test_the_entry_point_is_declared_under_the_module_name() -> None:
    # The same name as the module: `-p ctrlsock.pytest_plugin` (or pytest_plugins) and the installed entry
    # point then register one plugin instead of failing with "already registered under a different name".
    project = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"ctrlsock.pytest_plugin": "ctrlsock.pytest_plugin"}


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_call_goes_through_the_socket(ctrlsock_server_factory: ServerFactory, embedding: str) -> None:
    server = ctrlsock_server_factory(embedding, program="call-test", version="1.0")
    peers: list[int] = []

    @server.command("whoami")
    def whoami(arguments: Any, context: CommandContext) -> dict[str, Any]:
        peer = context.peer
        assert peer is not None  # only a real connection has a peer
        peers.append(peer.pid)
        return {"arguments": arguments}

    reply = server.call("whoami", {"a": 1})
    assert reply.ok
    assert reply.arguments == {"arguments": {"a": 1}}
    assert len(peers) == 1
    assert server.call("no-such-command").result == Result.UNSUPPORTED


def test_call_async_from_the_serving_loop(ctrlsock_server_factory: ServerFactory) -> None:
    server = ctrlsock_server_factory("asyncio")
    server.add_command("ping", lambda arguments, context: {"pong": True})
    loop = ctrlsock_server_factory.loop_of(server)
    assert loop is not None

    async def from_the_loop() -> tuple[Any, str]:
        reply = await server.call_async("ping")
        try:
            server.call("ping")
        except ServerError as error:
            return reply.arguments, str(error)
        return reply.arguments, "no error"

    arguments, refusal = asyncio.run_coroutine_threadsafe(from_the_loop(), loop).result(10)
    assert arguments == {"pong": True}
    assert refusal == "call('ping') would block the thread that must answer it"


def test_call_on_a_server_that_is_not_serving_raises(sock_path: Path) -> None:
    server = ControlServer(sock_path)
    with pytest.raises(SocketNotFoundError):
        server.call("version-get", timeout=1.0)


def test_the_readme_example_passes(pytester: pytest.Pytester) -> None:
    readme = (REPO_DIR / "README.md").read_text()
    blocks = re.findall(r"```py\n(.*?)```", readme, flags=re.DOTALL)
    blocks = [block for block in blocks if "ctrlsock_server_factory" in block]
    assert len(blocks) == 1
    run_author_tests(pytester, blocks[0]).assert_outcomes(passed=2)


@pytest.mark.parametrize("how", ["option", "conftest"])
def test_the_installed_entry_point_and_an_explicit_load_register_one_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # What `pip install` writes, beside the checkout: the entry point as pyproject.toml declares it.
    project = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]
    lines = [f"{name} = {target}" for name, target in project["entry-points"]["pytest11"].items()]
    site = pytester.mkdir("site")
    dist_info = site / "ctrlsock-0.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ctrlsock\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{REPO_DIR}")
    pytester.makepyfile(test_author=AUTHOR_TESTS)
    if how == "conftest":
        pytester.makeconftest('pytest_plugins = ["ctrlsock.pytest_plugin"]\n')
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    else:
        result = pytester.runpytest_subprocess("-p", "ctrlsock.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_call_from_an_inline_handler_of_the_thread_embedding_refuses(
    ctrlsock_server_factory: ServerFactory,
) -> None:
    server = ctrlsock_server_factory("thread")

    @server.command("recurse", inline=True)
    def recurse(arguments: Any, context: CommandContext) -> None:
        server.call("version-get")  # on the I/O thread, which would have to answer it

    reply = server.call("recurse")
    assert (reply.result, reply.text) == (
        1,
        "Error during command processing: call('version-get') would block the thread that must answer it",
    )
