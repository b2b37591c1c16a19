"""What the command line tells an admin and a script is the truth, and only text: run as real processes.

Human output escapes what a terminal would act on, every PATH gets an entry, "no permission" is the
state ``unknown`` with its reason, a refusal is an exit code, and ``send`` reads a whole request from
standard input as socat does.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ctrlsock import HolderRecord
from ctrlsock.cli import ExitCode
from tests.children.cli_support import cli_env, run_cli, serving
from tests.kea import KeaDaemon
from tests.support import REPO_DIR

# What a hostile program name or file name would do to a terminal: clear it, move the cursor, then
# print a line that looks like a healthy holder.
EVIL = "\x1b[2J\x1b[H\nfake.sock  running\r\x9b31m\u202e"


def assert_one_error_line(stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ctrlsock: "), stderr
    assert "Traceback" not in stderr


def assert_inert(text: str) -> None:
    """No character a terminal acts on: no ESC, no C1 control, no carriage return, no bidi override."""
    for char in text:
        assert char == "\n" or (char.isprintable()), f"raw {char!r} in {text!r}"


def bind_orphan(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as orphan:
        orphan.bind(os.fsencode(path))


def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(child.stdout)


# --- escaping: nothing from a record or a file name reaches the terminal raw ------------------------------


def test_status_escapes_a_hostile_program_name_and_json_keeps_it_exact(sock_dir: Path) -> None:
    sock_path = sock_dir / "d.sock"
    bind_orphan(sock_path)
    record = HolderRecord(version=1, pid=dead_pid(), start_time=1, program=EVIL, socket_path=str(sock_path))
    Path(f"{sock_path}.lock").write_bytes(record.encode())

    done = run_cli("status", sock_path)
    assert done.returncode == ExitCode.STALE, done.stdout + done.stderr
    assert_inert(done.stdout)
    assert "\\x1b[2J" in done.stdout
    assert "fake.sock  running" not in done.stdout.splitlines()[1:]  # not a line of its own
    assert all(
        line.startswith(str(sock_path)) or line.startswith("    ") for line in done.stdout.splitlines()
    )

    done = run_cli("status", "--json", sock_path)
    (report,) = json.loads(done.stdout)
    assert report["record"]["program"] == EVIL
    assert EVIL in {holder["program"] for holder in report["holders"]}


def test_status_cleanup_and_send_escape_a_hostile_file_name(sock_dir: Path) -> None:
    name = "x\x1b[31m\nfake.sock  running\r.sock"
    sock_path = sock_dir / name
    bind_orphan(sock_path)

    for args in (("status", sock_dir), ("cleanup", "--dry-run", sock_dir), ("cleanup", sock_dir)):
        done = run_cli(*args)
        assert "Traceback" not in done.stderr
        assert_inert(done.stdout)
        assert_inert(done.stderr)
        assert "x\\x1b[31m\\nfake.sock  running\\r.sock" in done.stdout, (args, done.stdout)

    bind_orphan(sock_path)
    done = run_cli("send", sock_path, "list-commands")
    assert done.returncode == ExitCode.REFUSED
    assert_one_error_line(done.stderr)
    assert_inert(done.stderr)
    assert "x\\x1b[31m\\nfake.sock" in done.stderr

    done = run_cli("status", "--json", sock_dir)
    assert [report["socket"] for report in json.loads(done.stdout)] == [str(sock_path)]


def test_a_file_name_that_is_not_utf8_is_shown_byte_by_byte(sock_dir: Path) -> None:
    sock_path = Path(os.fsdecode(os.fsencode(sock_dir) + b"/\xff\xfe.sock"))
    bind_orphan(sock_path)
    done = run_cli("status", sock_dir)
    assert done.returncode == ExitCode.STALE, done.stderr
    assert "\\xff\\xfe.sock" in done.stdout


# --- every PATH gets an entry -----------------------------------------------------------------------


def test_status_of_a_socket_and_an_empty_directory_reports_both(sock_dir: Path) -> None:
    empty = sock_dir / "kea-stopped"
    empty.mkdir()
    with serving(sock_dir / "a.sock"):
        done = run_cli("status", sock_dir / "a.sock", empty)
        assert done.returncode == ExitCode.STOPPED, done.stderr  # the worse of running and stopped
        assert done.stderr == ""
        assert f"{sock_dir / 'a.sock'}  running" in done.stdout
        assert f"{empty}  stopped" in done.stdout
        assert done.stdout.splitlines()[-1].startswith("    ! ")  # a note says why it is stopped

        done = run_cli("status", "--json", sock_dir / "a.sock", empty)
        assert done.returncode == ExitCode.STOPPED
        reports = json.loads(done.stdout)
    assert [(report["socket"], report["state"]) for report in reports] == [
        (str(sock_dir / "a.sock"), "running"),
        (str(empty), "stopped"),
    ]
    assert reports[1]["problems"]


def test_status_of_a_missing_directory_says_so(sock_dir: Path) -> None:
    done = run_cli("status", sock_dir / "nonexistent" / "nope.sock")
    assert done.returncode == ExitCode.STOPPED
    head, *notes = done.stdout.splitlines()
    assert head.endswith("stopped")
    assert any("does not exist" in note and "nonexistent" in note for note in notes), done.stdout


# --- foreign, not-a-socket -----------------------------------------------------------------------------


def test_send_to_a_regular_file_says_not_a_socket(sock_dir: Path) -> None:
    path = sock_dir / "file.sock"
    path.write_text("not a socket")
    done = run_cli("send", path, "list-commands")
    assert done.returncode == ExitCode.NOT_A_SOCKET, done.stderr
    assert_one_error_line(done.stderr)
    assert "not a socket" in done.stderr
    assert "refused" not in done.stderr
    assert path.read_text() == "not a socket"


def test_foreign_means_the_same_in_help_and_readme() -> None:
    words = "a server that does not hold the lock answers"
    help_text = " ".join(run_cli("status", "--help").stdout.split())
    assert words in help_text
    readme = " ".join((REPO_DIR / "README.md").read_text().split())
    assert f"foreign: {words}" in readme
    assert "not-a-socket" in readme


# --- flags take no value, help has no type placeholders ---------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "status", "cleanup", "send", "bench"])
def test_help_shows_no_type_placeholders(command: str) -> None:
    done = run_cli(command, "--help", env=cli_env(COLUMNS="200"))
    assert done.returncode == 0
    assert "<bool>" not in done.stdout
    assert "<list" not in done.stdout
    assert "<" not in done.stdout.split("Examples")[0].replace("<>", ""), done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--json", "true"),
        ("status", "--json", "false"),
        ("cleanup", "--dry-run", "yes"),
        ("send", "--raw", "1"),
        ("bench", "--json", "on"),
    ],
)
def test_a_flag_given_a_value_is_a_usage_error(sock_dir: Path, args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ctrlsock", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=sock_dir,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert_one_error_line(done.stderr)
    assert "takes no value" in done.stderr
    assert done.stdout == ""


def test_a_path_named_like_a_boolean_is_reachable(sock_dir: Path) -> None:
    bind_orphan(sock_dir / "true")
    for args in (("status", "--json", "./true"), ("status", "--json", "--", "true")):
        done = subprocess.run(
            [sys.executable, "-m", "ctrlsock", *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=sock_dir,
            timeout=60,
            check=False,
        )
        assert done.returncode == ExitCode.STALE, done.stderr
        assert json.loads(done.stdout)[0]["state"] == "stale"


def test_the_fast_path_knows_every_flag_of_the_app() -> None:
    import typer  # noqa: PLC0415

    from ctrlsock.cli import app  # noqa: PLC0415
    from ctrlsock.cli.entry import FLAGS  # noqa: PLC0415

    root = typer.main.get_command(app)
    commands = getattr(root, "commands", {})
    assert set(commands) == set(FLAGS)
    for name, command in commands.items():
        context = command.make_context(name, [], resilient_parsing=True)
        flags = {
            opt
            for param in command.get_params(context)
            if getattr(param, "is_flag", False) and "--help" not in param.opts
            for opt in [*param.opts, *param.secondary_opts]
        }
        assert flags == FLAGS[name], name


# --- no permission is unknown, with the reason -------------------------------------------------------


@functools.cache
def nobody_python() -> str | None:
    """An interpreter (3.11+) that the user nobody may run, or None."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate is None:
            continue
        done = subprocess.run(
            [*as_nobody(), candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return candidate
    return None


def as_nobody() -> list[str]:
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def run_cli_as_nobody(*args: object) -> subprocess.CompletedProcess[str]:
    python = nobody_python()
    if python is None:
        pytest.skip("needs root, setpriv and a Python 3.11 that nobody may run")
    return subprocess.run(
        [*as_nobody(), python, "-m", "ctrlsock", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        env=cli_env(PYTHONDONTWRITEBYTECODE="1"),
        cwd="/",
        timeout=60,
        check=False,
    )


def test_status_without_permission_is_unknown_with_the_reason(nobody_dir: Path) -> None:
    # The fast path runs on the standard library alone, so a system Python nobody may run will do.
    nobody_dir.chmod(0o755)
    private = nobody_dir / "private"
    private.mkdir(mode=0o750)
    bind_orphan(private / "ctrl.sock")
    for target in (private / "ctrl.sock", private):
        done = run_cli_as_nobody("status", target)
        assert done.returncode == ExitCode.UNKNOWN, done.stdout + done.stderr
        assert done.stderr == ""
        assert f"{target}  unknown" in done.stdout
        assert "permission" in done.stdout

        done = run_cli_as_nobody("status", "--json", target)
        assert done.returncode == ExitCode.UNKNOWN, done.stderr
        (report,) = json.loads(done.stdout)
        assert report["state"] == "unknown"
        assert any("permission" in problem for problem in report["problems"])
    assert (private / "ctrl.sock").is_socket()


# --- cleanup: a refusal is an exit code ------------------------------------------------------------------


def test_cleanup_that_refuses_exits_non_zero_and_says_why(sock_dir: Path) -> None:
    shared = sock_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by anyone, no sticky bit: nothing in it may be removed
    bind_orphan(shared / "ctrl.sock")
    done = run_cli("cleanup", shared / "ctrl.sock")
    assert done.returncode == ExitCode.CLEANUP_REFUSED, done.stdout + done.stderr
    assert "refused" in done.stdout
    assert "writable by others" in done.stdout
    assert (shared / "ctrl.sock").is_socket()

    done = run_cli("cleanup", "--json", shared / "ctrl.sock")
    assert done.returncode == ExitCode.CLEANUP_REFUSED
    (document,) = json.loads(done.stdout)
    assert [action["what"] for action in document["actions"]] == ["refused"]


def test_cleanup_json_names_the_pid_an_action_is_about(sock_dir: Path) -> None:
    sock_path = sock_dir / "ctrl.sock"
    with serving(sock_path) as server:
        server.kill()
        pid = server.pid
    done = run_cli("cleanup", "--json", sock_path)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (document,) = json.loads(done.stdout)
    about_pid = [action for action in document["actions"] if f"pid {pid}" in action["reason"]]
    assert about_pid, document
    assert all(action["pid"] == pid for action in about_pid)


# --- send: a drop-in for socat ---------------------------------------------------------------------------


def test_send_reads_a_whole_request_from_stdin(sock_path: Path) -> None:
    request = '{"command": "version-get"}\n'
    with serving(sock_path):
        for args in (("send", sock_path), ("send", sock_path, "-")):
            done = run_cli(*args, input=request)
            assert done.returncode == 0, (args, done.stderr)
            reply = json.loads(done.stdout)
            assert reply["result"] == 0
            assert reply["text"]
        done = run_cli("send", "--raw", sock_path, "-", input='# a comment\n{"command": "nope"}')
        assert done.returncode == 2, done.stderr
        assert json.loads(done.stdout)["result"] == 2


def test_send_sends_the_stdin_request_byte_for_byte(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("result:0")
    request = '{"command":"lease4-get",  "arguments": {"ip-address": "192.0.2.1"}, "service": ["dhcp4"]}'
    done = run_cli("send", path, input=request)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["arguments"]["echo"] == json.loads(request)


@pytest.mark.parametrize(
    ("request_text", "words"),
    [
        ("", "empty"),
        ('{"command": "version-get"', "incomplete"),
        ("version-get", "not valid"),
        ('{"command": "x", "bogus": 1}', "not valid"),
        ('["command"]', "not valid"),
    ],
)
def test_send_refuses_a_bad_stdin_request_before_connecting(
    sock_path: Path, request_text: str, words: str
) -> None:
    done = run_cli("send", sock_path, "-", input=request_text)
    assert done.returncode == ExitCode.BAD_ARGUMENTS, done.stderr
    assert_one_error_line(done.stderr)
    assert words in done.stderr


def test_send_reads_stdin_from_kea(kea_daemon: KeaDaemon) -> None:
    socket_path = kea_daemon.socket_path
    for args in (("send", socket_path), ("send", socket_path, "-")):
        done = run_cli(*args, input='{"command": "version-get"}')
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["text"].startswith("2.")


# --- bench: an unexpected result is an error -------------------------------------------------------------


def test_bench_counts_an_unexpected_result_as_an_error(reply_server: Callable[[str], Path]) -> None:
    path = reply_server("result:2")
    done = run_cli("bench", path, "--clients", "1", "--duration", "0.3", "--json")
    assert done.returncode == ExitCode.BENCH_ERRORS, done.stderr
    figures = json.loads(done.stdout)
    assert figures["commands"] > 0
    assert figures["error_count"] == figures["unexpected_results"] == figures["results"]["2"]
    assert_one_error_line(done.stderr)
    assert "result 2" in done.stderr

    done = run_cli("bench", path, "--clients", "1", "--duration", "0.3", "--expect-result", "2")
    assert done.returncode == 0, done.stderr


# --- serve: a lock file it may not use is a failure to start ---------------------------------------------


def test_serve_refused_by_the_lock_file_owner_exits_server_failed(sock_dir: Path) -> None:
    # Root passes every permission check; without CAP_DAC_OVERRIDE it is refused like anyone else.
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to be refused by the kernel")
    sock_path = sock_dir / "ctrl.sock"
    lock_path = Path(f"{sock_path}.lock")
    lock_path.write_bytes(b"")
    os.chown(lock_path, pwd.getpwnam("nobody").pw_uid, -1)
    lock_path.chmod(0o600)
    without_override = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    done = subprocess.run(
        [*without_override, sys.executable, "-m", "ctrlsock", "serve", str(sock_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        cwd=REPO_DIR,
        check=False,
    )
    assert done.returncode == ExitCode.SERVER_FAILED, done.stderr
    assert "Traceback" not in done.stderr
    assert str(lock_path) in done.stderr
    assert not sock_path.exists()
