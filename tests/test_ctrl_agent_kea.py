"""A real kea-ctrl-agent 2.2 in front of our server: what Kea's HTTP front end sends, we answer.

The agent forwards each command with ``service`` (and Kea ≥ 2.x adds ``remote-address``) over a new unix
connection and wraps the reply in a list, one entry per service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.server import CommandContext, ControlServer, ServerConfig
from tests.kea import CtrlAgent, start_ctrl_agent

pytestmark = pytest.mark.kea


@pytest.fixture
def served(sock_path: Path) -> Iterator[tuple[ControlServer, list[CommandContext]]]:
    seen: list[CommandContext] = []
    server = ControlServer(sock_path, program="agent-test", version="9.9.9", config=ServerConfig())

    @server.command("lease4-get")
    def lease4_get(arguments: Any, context: CommandContext) -> dict[str, Any]:
        seen.append(context)
        return {"ip-address": arguments["ip-address"]}

    with server.running_in_thread():
        yield server, seen


@pytest.fixture
def agent(sock_dir: Path, sock_path: Path) -> Iterator[CtrlAgent]:
    agent = start_ctrl_agent(sock_dir, sock_path)
    try:
        yield agent
    finally:
        agent.stop()


def test_ctrl_agent_forwards_commands_and_we_answer(
    served: tuple[ControlServer, list[CommandContext]], agent: CtrlAgent
) -> None:
    _, seen = served
    [listed] = agent.post({"command": "list-commands", "service": ["dhcp4"]})
    assert listed["result"] == 0
    assert "lease4-get" in listed["arguments"]

    [version] = agent.post({"command": "version-get", "service": ["dhcp4"]})
    assert (version["result"], version["text"]) == (0, "9.9.9")

    [lease] = agent.post(
        {"command": "lease4-get", "service": ["dhcp4"], "arguments": {"ip-address": "192.0.2.7"}}
    )
    assert lease == {"result": 0, "arguments": {"ip-address": "192.0.2.7"}}
    assert seen[0].service == ("dhcp4",)


def test_ctrl_agent_relays_our_unsupported_reply(
    served: tuple[ControlServer, list[CommandContext]], agent: CtrlAgent
) -> None:
    [reply] = agent.post({"command": "no-such-command", "service": ["dhcp4"]})
    assert reply == {"result": 2, "text": "'no-such-command' command not supported."}
