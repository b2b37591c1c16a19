"""A daemon author's view of the types: ``mypy --strict`` on small sample programs that use ctrlsock.

The package imports its names lazily at run time; these samples prove type checkers still see every
public name, so a typo is an error rather than a silent ``Any``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support import REPO_DIR

GOOD_DAEMON = '''
    """A small daemon and its monitoring, written the way the README shows."""

    import asyncio
    from pathlib import Path
    from typing import Any

    import ctrlsock
    from ctrlsock import (
        CommandContext,
        ControlServer,
        JsonValue,
        Reply,
        ReplyError,
        Result,
        send_command,
        send_command_async,
    )

    jobs: dict[str, JsonValue] = {"queued": 3, "names": ["a", "b"]}


    def jobs_get(arguments: Any, context: CommandContext) -> dict[str, JsonValue]:
        return jobs


    def build(path: Path) -> ControlServer:
        server = ControlServer(path, program="jobs", version="1.0")
        server.command("jobs-get")(jobs_get)

        @server.command("jobs-clear", allow_uids=[0], timeout=5.0)
        async def jobs_clear(arguments: Any, context: CommandContext) -> Reply:
            jobs.clear()
            return Reply(Result.SUCCESS, "cleared")

        @server.command("jobs-pause")
        def jobs_pause(arguments: Any, context: CommandContext) -> None:
            print(context.peer)

        return server


    def queued(path: Path) -> int:
        reply: Reply = send_command(path, "jobs-get", timeout=2.0).raise_for_result()
        arguments = reply.arguments
        if isinstance(arguments, dict):
            count = arguments.get("queued")
            if isinstance(count, int):
                return count
        return 0


    async def pid_of(path: Path) -> int | None:
        try:
            reply = (await send_command_async(path, "status-get")).raise_for_result()
        except ReplyError as error:
            print(error.reply.result == Result.UNSUPPORTED, error.text)
            return None
        except ctrlsock.ClientError as error:
            print(error.path)
            return None
        if isinstance(reply.arguments, dict) and isinstance(reply.arguments.get("pid"), int):
            pid = reply.arguments["pid"]
            assert isinstance(pid, int)
            return pid
        return None


    print(queued(Path("/run/jobs/ctrl.sock")), asyncio.run(pid_of(Path("/run/jobs/ctrl.sock"))))
    print(ctrlsock.Reply(0).ok, ctrlsock.__version__)
'''

SAMPLES = {
    "good_daemon.py": GOOD_DAEMON,
    "typo_import.py": """
        from ctrlsock import ControlServr

        print(ControlServr)
    """,
    "typo_attribute.py": """
        import ctrlsock

        print(ctrlsock.does_not_exist)
    """,
    "handler_without_context.py": """
        from typing import Any

        from ctrlsock import ControlServer

        server = ControlServer("/run/jobs/ctrl.sock", program="jobs", version="1.0")


        @server.command("jobs-get")
        def jobs_get(arguments: Any) -> dict[str, Any]:
            return {}
    """,
    "handler_returning_a_number.py": """
        from typing import Any

        from ctrlsock import CommandContext, ControlServer

        server = ControlServer("/run/jobs/ctrl.sock", program="jobs", version="1.0")


        @server.command("jobs-count")
        def jobs_count(arguments: Any, context: CommandContext) -> int:
            return 3
    """,
    "unchecked_arguments.py": """
        from ctrlsock import send_command

        print(send_command("/run/jobs/ctrl.sock", "status-get").arguments["pid"])
    """,
}


def run_mypy(samples: dict[str, str], *options: str) -> dict[str, list[str]]:
    """``mypy --strict`` over ``samples`` (name -> text); the error lines of each, keyed by file name.

    Files of the package itself appear only if mypy reported errors in them.
    """
    directory = Path(tempfile.mkdtemp(prefix="cs-mypy-", dir="/tmp"))
    try:
        for name, text in samples.items():
            (directory / name).write_text(textwrap.dedent(text).lstrip())
        # The worktree's package, not an installed copy; no project configuration from the current directory.
        env = dict(os.environ, MYPYPATH=str(REPO_DIR), PYTHONPATH=str(REPO_DIR))
        done = subprocess.run(
            [
                *(sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", "--no-color-output"),
                *("--cache-dir", str(directory / ".mypy_cache"), *options, *sorted(samples)),
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    errors: dict[str, list[str]] = {name: [] for name in samples}
    for line in done.stdout.splitlines():
        match = re.match(r"([\w./-]+\.py):(\d+): error: (.*)", line)
        if match:
            errors.setdefault(match[1], []).append(f"{match[2]}: {match[3]}")
    return errors


@pytest.fixture(scope="module")
def mypy_errors() -> dict[str, list[str]]:
    """Every sample above, checked in one run of ``mypy --strict``."""
    return run_mypy(SAMPLES)


def test_a_correct_daemon_passes_mypy_strict(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["good_daemon.py"] == []
    # Nothing inside the package itself is reported either.
    assert [name for name in mypy_errors if name not in SAMPLES] == []


def test_a_mistyped_import_is_an_error_that_names_the_right_one(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["typo_import.py"] == [
        '1: Module "ctrlsock" has no attribute "ControlServr"; maybe "ControlServer"?  [attr-defined]'
    ]


def test_an_unknown_attribute_of_the_package_is_an_error(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["typo_attribute.py"] == ['3: Module has no attribute "does_not_exist"  [attr-defined]']


def test_reply_arguments_must_be_checked_before_use(mypy_errors: dict[str, list[str]]) -> None:
    # mypy names each member of the JSON union that a string cannot index: None, a number, a list, a str.
    errors = mypy_errors["unchecked_arguments.py"]
    assert errors
    assert all(error.startswith("3: ") for error in errors), errors
    assert any(re.search(r'Value of type ".*\| None" is not indexable', error) for error in errors), errors


def test_a_handler_with_the_wrong_parameters_gets_the_expected_signature(
    mypy_errors: dict[str, list[str]],
) -> None:
    assert mypy_errors["handler_without_context.py"] == [
        '8: Argument 1 has incompatible type "Callable[[Any], dict[str, Any]]"; expected'
        ' "Callable[[Any, CommandContext], dict[str, Any]]"  [arg-type]'
    ]


def test_a_handler_returning_what_no_reply_can_hold_names_the_return_type(
    mypy_errors: dict[str, list[str]],
) -> None:
    assert mypy_errors["handler_returning_a_number.py"] == [
        '8: Value of type variable "HandlerReturn" of function cannot be "int"  [type-var]'
    ]


MONITOR = """
    import asyncio
    from pathlib import Path

    from ctrlsock import ClientError, Reply, ReplyError, send_command, send_command_async


    def pid(path: Path) -> int | None:
        try:
            reply = send_command(path, "status-get", {"verbose": [1, "two"]}).raise_for_result()
        except ReplyError as error:
            print(error.reply.result, error.reply.text, error.reply.arguments)
            return None
        except ClientError as error:
            print(error.path, error)
            return None
        if isinstance(reply.arguments, dict):
            value = reply.arguments.get("pid")
            if isinstance(value, int):
                return value
        return None


    async def versions(paths: list[Path]) -> list[str]:
        replies: list[Reply] = await asyncio.gather(*(send_command_async(p, "version-get") for p in paths))
        return [reply.text for reply in replies if reply.ok]
"""


def test_a_monitoring_client_has_no_any_expressions() -> None:
    # --disallow-any-expr reports every expression typed Any: replies, arguments and errors have real types.
    errors = run_mypy({"monitor.py": MONITOR}, "--disallow-any-expr")
    assert errors["monitor.py"] == []
