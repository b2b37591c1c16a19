"""Our server answers like a real Kea 2.2 ``kea-dhcp4`` for the wire cases: framing, errors, timeouts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrlsock.server import ControlServer, JsonFileConfig, ServerConfig
from tests.children.server_client import ask_raw
from tests.kea import KeaDaemon

pytestmark = pytest.mark.kea


@pytest.fixture
def ours(sock_dir: Path) -> Iterator[ControlServer]:
    config_path = sock_dir / "config.json"
    config_path.write_text(json.dumps({"Dhcp4": {}}))
    server = ControlServer(
        sock_dir / "ours.sock",
        version="2.2.0",
        config=ServerConfig(idle_timeout=1.0),
        config_provider=JsonFileConfig(config_path, root_key="Dhcp4"),
    )
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()


def both(kea: KeaDaemon, ours: ControlServer, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    theirs = json.loads(ask_raw(kea.socket_path, raw))
    mine = json.loads(ask_raw(ours.socket_path, raw))
    return theirs, mine


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b'"a string"',
        b"[]",
        b'[{"command": "version-get"}]',
        b'{"arguments": {}}',
        b'{"command": 1}',
        b'{"command": "version-get", "bogus": 1}',
        b'{"command": "no-such-command"}',
        b'{"command": "shutdown", "arguments": {"exit-value": "x"}}',
        b'{"command": "config-test"}',
        b'{"command": "config-test", "arguments": {"Dhcp6": {}}}',
        b'{"command": "config-set", "arguments": {"Dhcp4": 1}}',
    ],
)
def test_error_answers_match_kea(kea_daemon: KeaDaemon, ours: ControlServer, raw: bytes) -> None:
    theirs, mine = both(kea_daemon, ours, raw)
    assert (mine["result"], mine.get("text")) == (theirs["result"], theirs.get("text"))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"command": "version-get"}',
        b'# comment\n// another\n/* and a block */ {"command": "version-get"}',
        b'{"command": "version-get"} trailing garbage',
        b'{"command": "version-get", "arguments": 5, "service": ["dhcp4"], "remote-address": "::1"}',
    ],
)
def test_version_get_framing_matches_kea(kea_daemon: KeaDaemon, ours: ControlServer, raw: bytes) -> None:
    theirs, mine = both(kea_daemon, ours, raw)
    assert mine["result"] == theirs["result"] == 0
    assert mine["text"] == theirs["text"] == "2.2.0"
    assert "extended" in mine["arguments"]
    assert "extended" in theirs["arguments"]


@pytest.mark.parametrize("command", ["list-commands", "status-get", "config-get", "build-report"])
def test_builtin_answers_have_keas_shape(kea_daemon: KeaDaemon, ours: ControlServer, command: str) -> None:
    theirs, mine = both(kea_daemon, ours, json.dumps({"command": command}).encode())
    assert mine["result"] == theirs["result"] == 0
    assert ("text" in mine) == ("text" in theirs)
    assert type(mine.get("arguments")) is type(theirs.get("arguments"))
    if command == "list-commands":
        assert mine["arguments"] == sorted(mine["arguments"])
        assert set(mine["arguments"]) <= set(theirs["arguments"])
    if command == "status-get":
        assert {"pid", "uptime", "reload"} <= set(mine["arguments"]) & set(theirs["arguments"])
