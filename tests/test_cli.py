"""The ``ctrlsock`` command line, run as a real subprocess against real daemons, sockets and files.

Exit codes and option names are a contract scripts depend on; these tests pin them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ctrlsock import __version__
from ctrlsock.cli import ExitCode
from tests.children.cli_support import (
    cli_env,
    holder_pids,
    run_cli,
    run_cli_bytes,
    serving,
    start_child_until_ready,
    status_json,
)
from tests.support import REPO_DIR, kill_foreign, stop_child

ANSI = re.compile(r"\x1b\[")


def assert_one_error_line(stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ctrlsock: "), stderr
    assert "Traceback" not in stderr


# --- everywhere -------------------------------------------------------------------------------------


def test_exit_code_table_is_the_documented_contract() -> None:
    # Scripts and monitoring depend on these numbers: changing one is a breaking change.
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "STALE": 1,
        "STOPPED": 3,
        "UNKNOWN": 4,
        "STUCK": 150,
        "FOREIGN": 151,
        "STOPPING": 152,
        "UNLINKED": 153,
        "NOT_A_SOCKET": 154,
        "USAGE": 64,
        "BAD_ARGUMENTS": 65,
        "NO_SUCH_SOCKET": 66,
        "PATH_TOO_LONG": 67,
        "NO_SOCKETS_IN_DIRECTORY": 68,
        "REFUSED": 69,
        "INTERNAL": 70,
        "OS_ERROR": 71,
        "LOCK_HELD": 72,
        "UNSAFE_PATH": 73,
        "SERVER_FAILED": 74,
        "TIMEOUT": 75,
        "TRUNCATED_REPLY": 76,
        "PERMISSION_DENIED": 77,
        "BAD_REPLY": 78,
        "CLEANUP_RUNNING": 79,
        "CLEANUP_REFUSED": 80,
        "BENCH_ERRORS": 81,
        "NOT_CONFIRMED": 82,
        "ERROR": 83,
        "HTTP_STATUS": 84,
        "AUTH_FAILED": 85,
        "TLS_FAILED": 86,
        "INTERRUPTED": 130,
    }


def test_version_prints_the_package_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"ctrlsock {__version__}"


@pytest.mark.parametrize("command", ["serve", "status", "cleanup", "send", "bench"])
def test_every_subcommand_has_help_with_examples(command: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Examples" in done.stdout
    assert f"ctrlsock {command}" in done.stdout


def test_shell_completion_is_offered() -> None:
    # Typer otherwise finds the shell by walking the parent processes (shellingham), which under a loaded
    # test runner now and then finds none; with detection off, --show-completion takes the shell named.
    env = cli_env(SHELL="/bin/bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    done = run_cli("--show-completion", "bash", env=env)
    assert done.returncode == 0, done.stderr
    assert "_CTRLSOCK_COMPLETE" in done.stdout


def test_usage_error_is_one_line_with_its_own_exit_code(sock_path: Path) -> None:
    done = run_cli("status", "--no-such-option", sock_path)
    assert done.returncode == ExitCode.USAGE
    assert_one_error_line(done.stderr)
    assert "--no-such-option" in done.stderr


def test_socket_path_too_long_is_refused_plainly(sock_dir: Path) -> None:
    long_path = sock_dir / ("x" * 120)
    for args in (("status", long_path), ("send", long_path, "list-commands"), ("serve", long_path)):
        done = run_cli(*args)
        assert done.returncode == ExitCode.PATH_TOO_LONG, (args, done.stderr)
        assert_one_error_line(done.stderr)


def test_directory_without_sockets_reads_as_stopped(sock_dir: Path) -> None:
    (sock_dir / "notes.txt").write_text("nothing here")
    done = run_cli("status", sock_dir)
    assert done.returncode == ExitCode.STOPPED
    assert f"no control sockets in {sock_dir}" in done.stdout


def test_cleanup_of_a_directory_without_sockets_is_refused(sock_dir: Path) -> None:
    (sock_dir / "notes.txt").write_text("nothing here")
    done = run_cli("cleanup", sock_dir)
    assert done.returncode == ExitCode.NO_SOCKETS_IN_DIRECTORY
    assert_one_error_line(done.stderr)
    assert str(sock_dir) in done.stderr


def test_status_fast_path_answers_exactly_as_typer_does(sock_dir: Path) -> None:
    # ``status PATH...`` is dispatched without building the typer app (start-up time); ``--`` makes the
    # same command line go through typer. Both must print the same and exit the same.
    with serving(sock_dir / "a.sock") as server:
        server.kill()
        for options in ([], ["--json"], ["--timeout", "0.5"], ["--timeout=0.5", "--json"]):
            fast = run_cli("status", *options, sock_dir / "a.sock", sock_dir / "b.sock")
            typer_path = run_cli("status", *options, "--", sock_dir / "a.sock", sock_dir / "b.sock")
            assert (fast.returncode, fast.stderr) == (typer_path.returncode, typer_path.stderr) == (1, "")
            if "--json" in options:
                strip = [{**report, "answer_ms": None} for report in json.loads(fast.stdout)]
                assert strip == [{**report, "answer_ms": None} for report in json.loads(typer_path.stdout)]
            else:
                assert fast.stdout == typer_path.stdout
    for bad in (["--timeout", "0"], ["--timeout", "x"], ["--timeout"], ["--jsn"]):
        done = run_cli("status", *bad, sock_dir / "a.sock")
        assert done.returncode == ExitCode.USAGE, (bad, done.stderr)
        assert_one_error_line(done.stderr)


def test_output_is_coloured_on_a_terminal_only(sock_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ctrlsock", "status", str(sock_path)],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={key: value for key, value in cli_env(TERM="xterm").items() if key != "NO_COLOR"},
            cwd=REPO_DIR,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        output = b""
        with contextlib.suppress(OSError):  # EIO once the child's side is closed and drained
            while chunk := os.read(leader, 65536):
                output += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert done.returncode == ExitCode.STOPPED
    assert ANSI.search(output.decode())


def test_output_has_no_colour_when_piped(sock_path: Path) -> None:
    done = run_cli("status", sock_path)
    assert done.returncode == ExitCode.STOPPED
    assert not ANSI.search(done.stdout)
    assert "stopped" in done.stdout


# --- serve, status, send, cleanup: the life cycle -----------------------------------------------------


def test_full_life_cycle(sock_path: Path) -> None:
    with serving(sock_path) as first:
        done = run_cli("status", sock_path)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
        assert "running" in done.stdout
        assert str(first.pid) in done.stdout

        done = run_cli("send", sock_path, "list-commands")
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["result"] == 0
        assert {"list-commands", "version-get", "status-get", "shutdown"} <= set(reply["arguments"])

        first.kill()
        code, reports = status_json(sock_path)
        assert code == ExitCode.STALE
        assert reports[0]["state"] == "stale"

    done = run_cli("cleanup", sock_path)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert "removed" in done.stdout
    assert not sock_path.exists()

    done = run_cli("status", sock_path)
    assert done.returncode == ExitCode.STOPPED, done.stdout + done.stderr

    with serving(sock_path) as second:
        code, reports = status_json(sock_path)
        assert code == ExitCode.OK
        assert second.pid in holder_pids(reports[0])
        done = run_cli("send", sock_path, "shutdown")
        assert done.returncode == 0, done.stderr
        assert second.process.wait(timeout=20) == 0
    done = run_cli("status", sock_path)
    assert done.returncode == ExitCode.STOPPED, done.stdout


def test_second_serve_on_one_socket_names_the_first_pid(sock_path: Path) -> None:
    with serving(sock_path) as first:
        done = run_cli("serve", sock_path, timeout=30)
        assert done.returncode == ExitCode.LOCK_HELD
        assert str(first.pid) in done.stderr
        assert "ctrlsock: " in done.stderr
        assert "Traceback" not in done.stderr
        # The first daemon is untouched.
        assert run_cli("status", sock_path).returncode == ExitCode.OK


def test_serve_and_status_use_the_default_socket(sock_dir: Path) -> None:
    runtime = sock_dir / "run"
    runtime.mkdir(mode=0o700)
    env = cli_env(XDG_RUNTIME_DIR=str(runtime))
    with serving(None, env=env) as server:
        directory = runtime / "ctrlsock"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert (directory / "ctrlsock.sock").is_socket()
        code, reports = status_json(env=env)
        assert code == ExitCode.OK
        assert reports[0]["socket"] == str(directory / "ctrlsock.sock")
        assert server.pid in holder_pids(reports[0])
        done = run_cli("send", "version-get", env=env)
        assert done.returncode == 0, done.stderr


def test_default_socket_directory_open_to_others_is_refused(sock_dir: Path) -> None:
    runtime = sock_dir / "run"
    (runtime / "ctrlsock").mkdir(parents=True)
    (runtime / "ctrlsock").chmod(0o777)
    done = run_cli("status", env=cli_env(XDG_RUNTIME_DIR=str(runtime)))
    assert done.returncode == ExitCode.UNSAFE_PATH
    assert_one_error_line(done.stderr)


def test_serve_mode_is_applied_and_validated(sock_path: Path) -> None:
    with serving(sock_path, "--mode", "0660"):
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    done = run_cli("serve", sock_path, "--mode", "9x")
    assert done.returncode == ExitCode.USAGE
    assert_one_error_line(done.stderr)


# --- status ---------------------------------------------------------------------------------------


def test_status_json_schema(sock_dir: Path) -> None:
    with serving(sock_dir / "a.sock") as server:
        code, reports = status_json(sock_dir / "a.sock", sock_dir / "b.sock")
    assert code == ExitCode.STOPPED  # the worse of running and stopped
    assert [report["state"] for report in reports] == ["running", "stopped"]
    for report in reports:
        assert {"socket", "lock", "state", "holders", "record", "answer_ms", "problems"} <= set(report)
        assert isinstance(report["problems"], list)
        assert all(isinstance(problem, str) for problem in report["problems"])
    running = reports[0]
    assert running["lock"] == str(sock_dir / "a.sock.lock")
    assert isinstance(running["answer_ms"], float)
    holder = next(holder for holder in running["holders"] if holder["pid"] == server.pid)
    assert {"pid", "program", "alive", "how"} <= set(holder)
    assert holder["alive"] is True
    assert running["record"]["pid"] == server.pid


def test_status_of_several_paths_exits_with_the_worst(sock_dir: Path) -> None:
    with serving(sock_dir / "a.sock"), serving(sock_dir / "b.sock") as doomed:
        doomed.kill()
        done = run_cli("status", sock_dir / "a.sock", sock_dir / "b.sock", sock_dir / "c.sock")
        assert done.returncode == ExitCode.STALE, done.stdout
        done = run_cli("status", sock_dir)  # a directory: every socket in it
        assert done.returncode == ExitCode.STALE, done.stdout
        assert "a.sock" in done.stdout
        assert "b.sock" in done.stdout


def test_status_never_changes_anything(sock_path: Path) -> None:
    with serving(sock_path) as server:
        server.kill()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in sock_path.parent.iterdir())
    assert run_cli("status", sock_path).returncode == ExitCode.STALE
    after = sorted((p.name, p.stat().st_mtime_ns) for p in sock_path.parent.iterdir())
    assert before == after


# --- stuck: an inherited descriptor ---------------------------------------------------------------


def test_stuck_through_inherited_descriptor_then_terminate_holders(sock_path: Path) -> None:
    daemon, early_lines = start_child_until_ready("cli_inheritor.py", sock_path)
    child_pid = int(early_lines[0].split()[1])
    try:
        stop_child(daemon)  # SIGKILL: the child keeps the lock and the listening socket
        done = run_cli("status", "--timeout", "0.3", sock_path)
        assert done.returncode == ExitCode.STUCK, done.stdout
        assert str(child_pid) in done.stdout

        done = run_cli("cleanup", sock_path)
        assert done.returncode == ExitCode.STUCK, done.stdout + done.stderr
        assert "refused" in done.stdout
        assert sock_path.is_socket()

        done = run_cli("cleanup", "--dry-run", "--terminate-holders", sock_path)
        assert str(child_pid) in done.stdout
        assert os.path.exists(f"/proc/{child_pid}")

        done = run_cli("cleanup", "--terminate-holders", sock_path)  # no TTY, no --yes: refused
        assert done.returncode == ExitCode.NOT_CONFIRMED
        assert_one_error_line(done.stderr)

        done = run_cli("cleanup", "--terminate-holders", "--yes", sock_path)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
        assert str(child_pid) in done.stdout
        assert not sock_path.exists()
        assert run_cli("status", sock_path).returncode == ExitCode.STOPPED
    finally:
        kill_foreign(child_pid)


# --- cleanup refuses what is not provably ours ------------------------------------------------------


def test_cleanup_refuses_a_regular_file(sock_path: Path) -> None:
    sock_path.write_text("precious")
    done = run_cli("cleanup", sock_path)
    assert done.returncode == ExitCode.NOT_A_SOCKET, done.stdout + done.stderr
    assert "refused" in done.stdout
    assert sock_path.read_text() == "precious"
    assert "Traceback" not in done.stderr


def test_cleanup_refuses_a_symlink_and_leaves_its_target(sock_dir: Path) -> None:
    target = sock_dir / "target.txt"
    target.write_text("precious")
    link = sock_dir / "ctrl.sock"
    link.symlink_to(target)
    done = run_cli("cleanup", link)
    assert done.returncode == ExitCode.NOT_A_SOCKET, done.stdout + done.stderr
    assert "refused" in done.stdout
    assert link.is_symlink()
    assert target.read_text() == "precious"
    assert "Traceback" not in done.stderr


def test_cleanup_leaves_a_running_daemon_alone(sock_path: Path) -> None:
    with serving(sock_path):
        done = run_cli("cleanup", sock_path)
        assert done.returncode == ExitCode.CLEANUP_RUNNING
        assert "refused" in done.stdout
        assert sock_path.is_socket()
        assert run_cli("status", sock_path).returncode == ExitCode.OK


def test_cleanup_dry_run_changes_nothing_and_json(sock_path: Path) -> None:
    with serving(sock_path) as server:
        server.kill()
    done = run_cli("cleanup", "--dry-run", "--json", sock_path)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document[0]["socket"] == str(sock_path)
    assert document[0]["state_before"] == "stale"
    assert any(action["what"] == "would remove" for action in document[0]["actions"])
    assert sock_path.is_socket()
    assert run_cli("status", sock_path).returncode == ExitCode.STALE


# --- send -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("result", [0, 1, 2, 3, 4, 5])
def test_send_exits_with_the_reply_result(reply_server: Callable[[str], Path], result: int) -> None:
    path = reply_server(f"result:{result}")
    done = run_cli("send", path, "anything", "--arguments", '{"a": [1, 2]}', "--service", "dhcp4")
    assert done.returncode == result, done.stderr
    reply = json.loads(done.stdout)
    assert reply["result"] == result
    assert reply["arguments"]["echo"] == {
        "command": "anything",
        "arguments": {"a": [1, 2]},
        "service": ["dhcp4"],
    }
    assert done.stdout.startswith("{\n  ")  # indented


def test_send_arguments_from_file_and_stdin(reply_server: Callable[[str], Path], sock_dir: Path) -> None:
    path = reply_server("result:0")
    argument_file = sock_dir / "args.json"
    argument_file.write_text('{"from": "file"}')
    done = run_cli("send", path, "x", "--arguments", f"@{argument_file}")
    assert json.loads(done.stdout)["arguments"]["echo"]["arguments"] == {"from": "file"}
    done = run_cli("send", path, "x", "--arguments", "-", input='{"from": "stdin"}')
    assert json.loads(done.stdout)["arguments"]["echo"]["arguments"] == {"from": "stdin"}


def test_send_raw_prints_the_exact_bytes(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("wrapped")
    done = run_cli_bytes("send", "--raw", path, "x")
    assert done.returncode == 0
    assert done.stdout == b'[{"result": 0, "text": "wrapped"}]'


@pytest.mark.parametrize(
    ("mode", "code"),
    [("truncate", ExitCode.TRUNCATED_REPLY), ("garbage", ExitCode.BAD_REPLY), ("silent", ExitCode.TIMEOUT)],
)
def test_send_reply_failures_have_their_own_exit_codes(
    reply_server: Callable[[str], Path], mode: str, code: int
) -> None:
    path = reply_server(mode)
    done = run_cli("send", "--timeout", "0.5", path, "x")
    assert done.returncode == code, done.stderr
    assert_one_error_line(done.stderr)


def test_send_to_no_socket(sock_path: Path) -> None:
    done = run_cli("send", sock_path, "list-commands")
    assert done.returncode == ExitCode.NO_SUCH_SOCKET
    assert_one_error_line(done.stderr)
    assert str(sock_path) in done.stderr


def test_send_to_a_socket_nobody_listens_on(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as orphan:
        orphan.bind(str(sock_path))
    done = run_cli("send", sock_path, "list-commands")
    assert done.returncode == ExitCode.REFUSED
    assert_one_error_line(done.stderr)


def test_send_permission_denied(reply_server: Callable[[str], Path]) -> None:
    # Root passes every permission check, so the client runs as root *without* CAP_DAC_OVERRIDE (setpriv
    # drops it from the bounding set before exec), against a socket that belongs to nobody, mode 0600.
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to be refused by the kernel")
    path = reply_server("result:0")
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    path.chmod(0o600)
    without_override = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    done = subprocess.run(
        [*without_override, sys.executable, "-m", "ctrlsock", "send", str(path), "list-commands"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        cwd=REPO_DIR,
        check=False,
    )
    assert done.returncode == ExitCode.PERMISSION_DENIED, done.stderr
    assert_one_error_line(done.stderr)


def test_send_bad_arguments_are_refused_before_connecting(sock_path: Path, sock_dir: Path) -> None:
    for bad in ("{not json", "@" + str(sock_dir / "missing.json")):
        done = run_cli("send", sock_path, "x", "--arguments", bad)
        assert done.returncode == ExitCode.BAD_ARGUMENTS, done.stderr
        assert_one_error_line(done.stderr)


# --- bench ----------------------------------------------------------------------------------------


def test_bench_reports_figures_as_json(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("result:0")
    done = run_cli("bench", path, "--clients", "2", "--duration", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["commands"] > 0
    assert figures["error_count"] == 0
    assert set(figures["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert figures["latency_ms"]["p50"] <= figures["latency_ms"]["max"]
    assert figures["commands_per_s"] > 0
    assert figures["results"] == {"0": figures["commands"]}


def test_bench_human_output(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("result:0")
    done = run_cli("bench", path, "--clients", "1", "--duration", "0.3")
    assert done.returncode == 0, done.stderr
    assert "p99" in done.stdout
    assert "/s" in done.stdout


def test_bench_counts_unparsable_replies_as_errors(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("garbage")
    done = run_cli("bench", path, "--clients", "1", "--duration", "0.3")
    assert done.returncode == ExitCode.BENCH_ERRORS, done.stderr
    assert "bad-reply" in done.stderr
    assert_one_error_line(done.stderr)


def test_bench_tells_truncated_replies_from_unparsable_ones(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("truncate")
    done = run_cli("bench", path, "--clients", "1", "--duration", "0.3")
    assert done.returncode == ExitCode.BENCH_ERRORS, done.stderr
    assert "truncated" in done.stderr
    assert "bad-reply" not in done.stderr


def test_bench_without_a_socket(sock_path: Path) -> None:
    done = run_cli("bench", sock_path, "--duration", "0.2")
    assert done.returncode == ExitCode.NO_SUCH_SOCKET
    assert_one_error_line(done.stderr)
