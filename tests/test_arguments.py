"""Declared command arguments: the checker from tables and Hypothesis, then through a real server."""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NotRequired, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.errors import CommandError
from ctrlsock.protocol import JsonValue, Result
from ctrlsock.server import CommandContext, compile_arguments
from ctrlsock.testing import ServerFactory
from tests.support import REPO_DIR

PREFIX = "Error during command processing: "


class Subnet(TypedDict):
    id: int
    prefix: NotRequired[str]


LeaseQuery = TypedDict(
    "LeaseQuery",
    {
        "ip-address": str,
        "subnet-id": NotRequired[int],
        "valid-lft": NotRequired[float],
        "fqdn-fwd": NotRequired[bool],
        "hostname": NotRequired[str | None],
        "type": NotRequired[Literal["V4", "V6"]],
        "hw-addresses": NotRequired[list[str]],
        "user-context": NotRequired[dict[str, Any]],
        "options": NotRequired[dict[str, int]],
        "subnet": NotRequired[Subnet],
        "extra": NotRequired[JsonValue],
    },
)


class Flag(TypedDict):
    enabled: bool


def refusal(arguments: object, declaration: Any = LeaseQuery, **options: Any) -> str | None:
    spec = compile_arguments(declaration, **options)
    try:
        spec.check(arguments)
    except CommandError as error:
        assert error.result == Result.ERROR
        assert error.text.startswith(PREFIX)
        return error.text.removeprefix(PREFIX)
    return None


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"ip-address": "192.0.2.1"}, None),
        ({"ip-address": "192.0.2.1", "subnet-id": 1, "valid-lft": 3600}, None),  # an integer is a number
        ({"ip-address": "a", "valid-lft": 1.5, "fqdn-fwd": False, "hostname": None, "type": "V6"}, None),
        ({"ip-address": "a", "hw-addresses": ["x", "y"], "user-context": {"a": [1, {"b": None}]}}, None),
        ({"ip-address": "a", "subnet": {"id": 3, "prefix": "10/8"}, "extra": [{"any": "thing"}]}, None),
        ({}, "missing parameter 'ip-address'"),
        (None, "missing parameter 'ip-address'"),
        ([], "'arguments' must be a map, not list"),
        ("192.0.2.1", "'arguments' must be a map, not string"),
        ({"ip-address": 1}, "'ip-address' must be a string, not integer"),
        ({"ip-address": None}, "'ip-address' must be a string, not null"),
        ({"ip-address": "a", "subnet-id": "1"}, "'subnet-id' must be an integer, not string"),
        ({"ip-address": "a", "subnet-id": True}, "'subnet-id' must be an integer, not boolean"),
        ({"ip-address": "a", "subnet-id": 1.0}, "'subnet-id' must be an integer, not number"),
        ({"ip-address": "a", "valid-lft": False}, "'valid-lft' must be a number, not boolean"),
        ({"ip-address": "a", "fqdn-fwd": 1}, "'fqdn-fwd' must be a boolean, not integer"),
        ({"ip-address": "a", "hostname": 5}, "'hostname' must be a string or null, not integer"),
        ({"ip-address": "a", "type": "v4"}, "'type' must be one of 'V4', 'V6'"),
        ({"ip-address": "a", "hw-addresses": "x"}, "'hw-addresses' must be a list, not string"),
        ({"ip-address": "a", "hw-addresses": ["x", 2]}, "'hw-addresses[1]' must be a string, not integer"),
        ({"ip-address": "a", "options": {"o": "1"}}, "'options.o' must be an integer, not string"),
        ({"ip-address": "a", "subnet": {}}, "missing parameter 'subnet.id'"),
        ({"ip-address": "a", "subnet": {"id": 1, "x": 2}}, "unknown parameter 'subnet.x'"),
        # Subnet's NotRequired is a string annotation here, which Python 3.11's TypedDict misses.
        ({"ip-address": "a", "subnet": {"id": 1}}, None),
        ({"ip-address": "a", "subnet": [1]}, "'subnet' must be a map, not list"),
        ({"ip-address": "a", "ip_address": "a"}, "unknown parameter 'ip_address'"),
    ],
)
def test_arguments_are_checked_with_kea_texts(arguments: object, expected: str | None) -> None:
    assert refusal(arguments) == expected


def test_unknown_keys_can_be_ignored_at_the_top_level() -> None:
    spec = compile_arguments(Flag, unknown="ignore")
    assert spec.check({"enabled": True, "later": 1}) == {"enabled": True, "later": 1}
    assert refusal({"enabled": True, "later": 1}, Flag) == "unknown parameter 'later'"


def test_literal_true_is_not_the_integer_one() -> None:
    class Level(TypedDict):
        level: Literal[1, 2]

    declaration = Level
    assert refusal({"level": True}, declaration) == "'level' must be one of 1, 2"
    assert refusal({"level": 2}, declaration) is None


def test_absent_arguments_reach_the_handler_as_an_empty_map() -> None:
    class Verbose(TypedDict):
        verbose: NotRequired[bool]

    declaration = Verbose
    assert compile_arguments(declaration).check(None) == {}


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (dict, "arguments must be declared by a TypedDict, not <class 'dict'>"),
        (TypedDict("T1", {"when": bytes}), "T1: cannot check arguments of type <class 'bytes'>"),
        (TypedDict("T2", {"ids": set[int]}), "T2: cannot check arguments of type set[int]"),
        (TypedDict("T3", {"map": dict[int, int]}), "T3: cannot check arguments of type dict[int, int]"),
    ],
)
def test_a_declaration_that_cannot_be_checked_fails_at_once(declaration: Any, message: str) -> None:
    with pytest.raises(TypeError) as raised:
        compile_arguments(declaration)
    assert str(raised.value) == message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
)


@given(
    JSON | st.dictionaries(st.sampled_from(sorted(LeaseQuery.__annotations__)) | st.text(), JSON),
)
def test_any_json_is_accepted_or_refused_never_crashes(arguments: JsonValue) -> None:
    text = refusal(arguments)
    if text is None:
        assert isinstance(arguments, dict | None)
    else:
        assert text.startswith(("missing parameter '", "unknown parameter '", "'"))


# --- through a real server -------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["thread", "asyncio"])
def test_a_server_refuses_bad_arguments_before_the_handler_runs(
    ctrlsock_server_factory: ServerFactory, embedding: str
) -> None:
    server = ctrlsock_server_factory(embedding)
    seen: list[LeaseQuery] = []

    @server.command("lease-get", arguments=LeaseQuery)
    def lease_get(arguments: LeaseQuery, context: CommandContext) -> dict[str, Any]:
        seen.append(arguments)
        return {"ip-address": arguments["ip-address"]}

    @server.command("ping", arguments=compile_arguments(Flag, unknown="ignore"), inline=True)
    def ping(arguments: Flag, context: CommandContext) -> dict[str, Any]:
        return {"enabled": arguments["enabled"]}

    missing = server.call("lease-get", {"subnet-id": 1})
    assert (missing.result, missing.text) == (1, PREFIX + "missing parameter 'ip-address'")
    wrong = server.call("lease-get", {"ip-address": 7})
    assert (wrong.result, wrong.text) == (1, PREFIX + "'ip-address' must be a string, not integer")
    assert seen == []
    good = server.call("lease-get", {"ip-address": "192.0.2.1"})
    assert good.ok
    assert good.arguments == {"ip-address": "192.0.2.1"}
    assert seen == [{"ip-address": "192.0.2.1"}]
    assert server.call("ping", {"enabled": True, "x": 1}).arguments == {"enabled": True}
    refused = server.call("ping", {"enabled": "yes"})
    assert json.dumps([refused.result, refused.text]) == json.dumps(
        [1, PREFIX + "'enabled' must be a boolean, not string"]
    )


def test_registering_an_uncheckable_declaration_fails(ctrlsock_server_factory: ServerFactory) -> None:
    server = ctrlsock_server_factory()
    with pytest.raises(TypeError, match="cannot check arguments of type"):
        server.add_command("bad", lambda arguments, context: None, arguments=TypedDict("B", {"x": bytes}))
    assert "bad" not in server.commands


def test_the_readme_example_refuses_as_it_says(ctrlsock_server_factory: ServerFactory) -> None:
    readme = (REPO_DIR / "README.md").read_text()
    blocks = [
        block for block in re.findall(r"```py\n(.*?)```", readme, flags=re.DOTALL) if "arguments=" in block
    ]
    assert len(blocks) == 1
    server = ctrlsock_server_factory()
    exec(compile(blocks[0], "README.md", "exec"), {"server": server})  # our own README, run as documentation
    assert server.call("lease-get", {"subnet-id": 1}).text == PREFIX + "missing parameter 'ip-address'"
    wrong = server.call("lease-get", {"ip-address": 7}).text
    assert wrong == PREFIX + "'ip-address' must be a string, not integer"
    assert server.call("lease-get", {"ip-address": "a", "x": 1}).text == PREFIX + "unknown parameter 'x'"
    assert server.call("lease-get", {"ip-address": "a"}).arguments == {"ip-address": "a"}
