"""packaging/: every artifact an admin deploys, checked by the tool that will read it.

systemd units by systemd-analyze, tmpfiles.d and sysusers.d by systemd-tmpfiles / systemd-sysusers into a
scratch root, completions by the shells themselves, the man page by groff, the zipapp by a bare python3,
the wheel by pip in a fresh virtual environment. A tool that is missing skips its test, except under CI
(``CI`` set), where it fails: .ci/run installs them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import require_tool

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
SCRIPTS = REPO / "packaging" / "scripts"
TIMEOUT = 60.0
CLEAN_PATH = "/usr/bin:/bin"


def _run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", TIMEOUT)
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )


# --- systemd units ----------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (keys may repeat; an empty value resets, as systemd does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, is {values}"
    return values[0]


def test_service_unit_states_the_deployment_contract() -> None:
    unit = _unit(PACKAGING / "systemd" / "ctrlsock@.service")
    expected = {
        "Type": "notify",
        "ExecStart": "ctrlsock serve /run/ctrlsock/%i.sock --config /etc/ctrlsock/%i.json",
        "User": "ctrlsock",
        "Group": "ctrlsock",
        "RuntimeDirectory": "ctrlsock",
        "RuntimeDirectoryMode": "0750",
        # Without it, stopping one instance removes /run/ctrlsock with its neighbours' sockets and the
        # socket systemd owns for a socket-activated instance.
        "RuntimeDirectoryPreserve": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/run/ctrlsock",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "KillMode": "control-group",
    }
    assert {key: _one(unit, "Service", key) for key in expected} == expected
    # A dynamic user's uid is recycled after stop, but its lock and socket files stay in the preserved
    # directory.
    assert unit["Service"].get("DynamicUser", ["no"]) == ["no"]


def test_socket_unit_listens_where_the_service_serves() -> None:
    unit = _unit(PACKAGING / "systemd" / "ctrlsock@.socket")
    service = _unit(PACKAGING / "systemd" / "ctrlsock@.service")
    assert _one(unit, "Socket", "ListenStream") == "/run/ctrlsock/%i.sock"
    assert _one(service, "Service", "ExecStart").split()[2] == "/run/ctrlsock/%i.sock"
    assert _one(unit, "Socket", "SocketMode") == "0600"
    assert _one(unit, "Socket", "DirectoryMode") == "0750"
    assert _one(unit, "Socket", "SocketUser") == _one(service, "Service", "User")
    assert unit["Socket"].get("Accept", ["no"]) == ["no"]  # one daemon, passed the listener
    assert _one(unit, "Install", "WantedBy") == "sockets.target"


def test_units_pass_systemd_analyze_verify_and_security_review() -> None:
    require_tool("systemd-analyze")
    result = _run("sh", SCRIPTS / "verify-units.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stderr


def test_verify_units_fails_on_a_typo_systemd_only_warns_about(tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    broken = tmp_path / "packaging"
    shutil.copytree(PACKAGING, broken)
    service = broken / "systemd" / "ctrlsock@.service"
    service.write_text(service.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = _run("sh", SCRIPTS / "verify-units.sh", broken)
    assert result.returncode == 1
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


# --- tmpfiles.d and sysusers.d ----------------------------------------------------------------------


def test_tmpfiles_creates_socket_directory_0750_for_the_daemon_user(tmp_path: Path) -> None:
    require_tool("systemd-sysusers")
    require_tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    users = _run("systemd-sysusers", f"--root={root}", PACKAGING / "sysusers.d" / "ctrlsock.conf")
    assert users.returncode == 0, users.stderr
    created = _run(
        "systemd-tmpfiles", "--create", f"--root={root}", PACKAGING / "tmpfiles.d" / "ctrlsock.conf"
    )
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""
    passwd = {
        line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
    }
    uid, gid = int(passwd["ctrlsock"][2]), int(passwd["ctrlsock"][3])
    info = (root / "run" / "ctrlsock").lstat()
    assert stat.S_ISDIR(info.st_mode)
    # Kea refuses a socket directory looser than 0750 since CVE-2025-32801/32802/32803.
    assert stat.S_IMODE(info.st_mode) == 0o750
    assert (info.st_uid, info.st_gid) == (uid, gid)
    assert passwd["ctrlsock"][6] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


def test_tmpfiles_directory_matches_the_units() -> None:
    (line,) = [
        line.split()
        for line in (PACKAGING / "tmpfiles.d" / "ctrlsock.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kind, path, mode, user, group = line[:5]
    service = _unit(PACKAGING / "systemd" / "ctrlsock@.service")
    assert (kind, path) == ("d", "/run/" + _one(service, "Service", "RuntimeDirectory"))
    assert mode == _one(service, "Service", "RuntimeDirectoryMode")
    assert (user, group) == (_one(service, "Service", "User"), _one(service, "Service", "Group"))
    # No age field: tmpfiles must never clean a lock file a process may be waiting on.
    assert line[5:] in ([], ["-"])


# --- completions and the man page ---------------------------------------------------------------------


def _load_gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPTS / "gen-docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_completions_and_man_page_are_up_to_date_with_the_cli() -> None:
    result = _run(sys.executable, SCRIPTS / "gen-docs.py", "--check")
    assert result.returncode == 0, f"{result.stderr}\n{result.stdout}"


def test_gen_docs_check_fails_and_shows_the_difference_when_stale(tmp_path: Path) -> None:
    for relative in ("completions", "man"):
        shutil.copytree(PACKAGING / relative, tmp_path / "packaging" / relative)
    man = tmp_path / "packaging" / "man" / "ctrlsock.1"
    man.write_text(man.read_text().replace("Print the version and exit.", "Print the versoin."))
    result = _run(sys.executable, SCRIPTS / "gen-docs.py", "--check", "--root", tmp_path)
    assert result.returncode == 1
    assert "out of date with the CLI: packaging/man/ctrlsock.1" in result.stderr
    assert "+Print the version and exit." in result.stdout


def test_every_option_of_every_command_is_documented_and_completed() -> None:
    gen_docs = _load_gen_docs()
    root, _ = gen_docs.load_cli()
    files = {path.name: path.read_text() for path in (PACKAGING / "completions").iterdir()}
    man = (PACKAGING / "man" / "ctrlsock.1").read_text()
    assert {command.name for command in root.subcommands} >= {"serve", "status", "cleanup", "send", "bench"}
    for command in (root, *root.subcommands):
        for param in command.options:
            for opt in param.opts:
                assert opt.replace("-", "\\-") in man, opt
                for name, text in files.items():
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text) or (
                        name.endswith(".fish")
                        and f"-{'l' if opt.startswith('--') else 's'} {opt.lstrip('-')}" in text
                    ), f"{opt} missing from {name}"
        if command.name:
            assert f".SS {command.name}" in man


def test_man_page_renders_without_warnings() -> None:
    require_tool("groff")
    result = _run("groff", "-man", "-ww", "-z", PACKAGING / "man" / "ctrlsock.1")
    assert (result.returncode, result.stderr) == (0, "")
    text = _run("groff", "-man", "-Tutf8", "-P-c", PACKAGING / "man" / "ctrlsock.1").stdout
    text = re.sub(r".\x08", "", text)
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.MULTILINE), heading
    assert "ctrlsock send [SOCKET|URL] [COMMAND]" in text


@pytest.fixture
def completion_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "conf.json").touch()
    (tmp_path / "ctrl.sock").touch()
    yield tmp_path


def _bash_complete(directory: Path, *words: str) -> list[str]:
    script = (
        f"source {PACKAGING / 'completions' / 'ctrlsock.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n'
        "_ctrlsock\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = _run(require_tool("bash"), "-c", script, "bash", *words, cwd=directory)
    assert result.returncode == 0, result.stderr
    return sorted(line for line in result.stdout.splitlines() if line)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("ctrlsock", ""), ["bench", "cleanup", "send", "serve", "status"]),
        (("ctrlsock", "s"), ["send", "serve", "status"]),
        (("ctrlsock", "--v"), ["--version"]),
        (
            ("ctrlsock", "status", "--"),
            [
                "--auth-password-file",
                "--auth-user",
                "--ca",
                "--cert",
                "--format",
                "--help",
                "--json",
                "--key",
                "--timeout",
            ],
        ),
        (("ctrlsock", "status", "--format", "p"), ["prometheus"]),
        (("ctrlsock", "status", "a.sock", ""), ["conf.json", "ctrl.sock"]),  # any number of PATHs
        (("ctrlsock", "send", ""), ["conf.json", "ctrl.sock"]),  # SOCKET: a path
        (("ctrlsock", "send", "ctrl.sock", ""), []),  # COMMAND: not a file
        (("ctrlsock", "send", "--timeout", "5", "ctrl.sock", ""), []),  # the option's value is not SOCKET
        (("ctrlsock", "send", "--timeout", ""), []),
        (("ctrlsock", "serve", "--config", "co"), ["conf.json"]),
        (("ctrlsock", "serve", "--config", "=", "co"), ["conf.json"]),  # --config=co, split by readline
        (("ctrlsock", "serve", "--group", "roo"), ["root"]),
        (("ctrlsock", "serve", "--log-level", "w"), ["warning"]),
        (("ctrlsock", "cleanup", "--t"), ["--terminate-holders"]),
    ],
)
def test_bash_completion(completion_dir: Path, words: tuple[str, ...], expected: list[str]) -> None:
    assert _bash_complete(completion_dir, *words) == expected


def test_fish_completion(completion_dir: Path) -> None:
    fish = require_tool("fish")
    script = (
        f"source {PACKAGING / 'completions' / 'ctrlsock.fish'}\n"
        "for line in $argv; complete -C$line; echo '@@@'; end\n"
    )
    lines = [
        "ctrlsock se",
        "ctrlsock send --ti",
        "ctrlsock serve --config co",
        "ctrlsock status ",
        "ctrlsock send -",
    ]
    result = _run(fish, "--no-config", "-c", script, *lines, cwd=completion_dir)
    assert result.returncode == 0, result.stderr
    answers = [
        [line.split("\t")[0] for line in block.strip().splitlines()] for block in result.stdout.split("@@@\n")
    ]
    assert answers[0] == ["send", "serve"]
    assert answers[1] == ["--timeout"]
    assert answers[2] == ["conf.json"]
    assert answers[3] == ["conf.json", "ctrl.sock"]
    assert {"-a", "--arguments", "--service", "--raw", "--timeout"} <= set(answers[4])


# Drives an interactive zsh through a pseudo-terminal (zsh/zpty), types the line and TAB, and prints
# every candidate the completion system is offered (compadd wrapped to echo them). The terminal echoes
# what is typed, possibly before zsh runs it, so no marker appears literally in the typed text: each is
# spelt with a quote in the middle ('<REA''DY>' prints <READY>). And nothing is typed before the line
# editor shows its prompt (<PS>): until then the terminal is in canonical mode, where the kernel itself
# would take the ^U that ends the test as "erase the line".
ZSH_CAPTURE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='<P''S>' RPROMPT=''"
zpty -w z "fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { builtin compadd -O h "$@"; print -rl -- "<HI""T>"${^h}; builtin compadd "$@" }'
zpty -w z "bindkey '^I' complete-word; print -r -- '<REA''DY>'"
zpty -r z line '*<READY>*'
zpty -r z line '*<PS>*'
zpty -w -n z "$2"$'\t'
zpty -w z $'\C-u print -r -- \'<DO\'\'NE>\''
while zpty -r z line; do
  [[ $line == *'<DONE>'* ]] && break
  [[ $line == *'<HIT>'* ]] && print -r -- "${${line##*<HIT>}%%$'\r'}"
done
zpty -d z
"""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ctrlsock se", ["send", "serve"]),
        ("ctrlsock --vers", ["--version"]),
        ("ctrlsock send --ti", ["--timeout"]),
        ("ctrlsock status ", ["conf.json", "ctrl.sock"]),
        ("ctrlsock serve --config co", ["conf.json"]),
        ("ctrlsock serve --log-level w", ["warning"]),
        ("ctrlsock serve --group roo", ["root"]),
    ],
)
def test_zsh_completion(completion_dir: Path, line: str, expected: list[str]) -> None:
    zsh = require_tool("zsh")
    result = _run(zsh, "-f", "-c", ZSH_CAPTURE, "zsh", PACKAGING / "completions", line, cwd=completion_dir)
    assert result.returncode == 0, result.stderr
    assert sorted({hit.strip() for hit in result.stdout.splitlines() if hit.strip()}) == expected


def test_zsh_completion_parses() -> None:
    zsh = require_tool("zsh")
    result = _run(zsh, "--no-rcs", "-n", PACKAGING / "completions" / "_ctrlsock")
    assert (result.returncode, result.stderr) == (0, "")
    assert (PACKAGING / "completions" / "_ctrlsock").read_text().startswith("#compdef ctrlsock\n")


# --- the zipapp, the wheel, the sdist: slow, they build and install for real ------------------------------


def _clean_python() -> str:
    """A python3 from the system PATH only: what a host without pip has."""
    return shutil.which("python3", path=CLEAN_PATH) or sys.executable


def _notify_receiver(directory: Path) -> socket.socket:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(directory / "notify"))
    receiver.settimeout(TIMEOUT)
    return receiver


def _serve_until_ready(command: list[str], socket_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``command serve SOCKET`` and wait for its READY=1 (NOTIFY_SOCKET), never by sleeping."""
    with _notify_receiver(socket_path.parent) as receiver:
        env = {**env, "NOTIFY_SOCKET": str(socket_path.parent / "notify")}
        process = subprocess.Popen(
            [*command, "serve", str(socket_path)], env=env, text=True, stderr=subprocess.PIPE
        )
        try:
            while b"READY=1" not in receiver.recv(4096).split(b"\n"):
                pass
        except BaseException:
            _end(process)
            raise
    return process


def _end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=TIMEOUT)


def _round_trip(command: list[str], socket_path: Path, env: dict[str, str]) -> None:
    """serve, then status says running, send answers, shutdown stops it: all through ``command``."""
    server = _serve_until_ready(command, socket_path, env)
    try:
        status = _run(*command, "status", "--json", socket_path, env=env)
        assert status.returncode == 0, status.stderr
        (report,) = json.loads(status.stdout)
        assert report["state"] == "running"
        assert [holder["pid"] for holder in report["holders"]] == [server.pid]
        sent = _run(*command, "send", socket_path, "list-commands", env=env)
        assert sent.returncode == 0, sent.stderr
        assert "status-get" in json.loads(sent.stdout)["arguments"]
        stop = _run(*command, "send", socket_path, "shutdown", env=env)
        assert stop.returncode == 0, stop.stderr
        assert server.wait(TIMEOUT) == 0
    finally:
        _end(server)
    stopped = _run(*command, "status", socket_path, env=env)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("zipapp") / "ctrlsock.pyz"
    result = _run(sys.executable, SCRIPTS / "build-zipapp.py", "--output", output, timeout=300)
    assert result.returncode == 0, result.stderr
    return output


@pytest.mark.slow
def test_zipapp_holds_pure_python_only(zipapp: Path) -> None:
    with zipfile.ZipFile(zipapp) as archive:
        names = archive.namelist()
    assert "__main__.py" in names
    assert "ctrlsock/cli/entry.py" in names
    assert not [name for name in names if name.endswith(".so")]
    assert zipapp.read_bytes().startswith(b"#!/usr/bin/env python3\n")


@pytest.mark.slow
def test_zipapp_runs_status_and_send_with_nothing_but_python(zipapp: Path, sock_dir: Path) -> None:
    # -I: no environment variables, no user site, no script directory; -S: no site-packages at all, so
    # whatever this machine has installed cannot stand in for what the archive should carry.
    # The environment is PATH alone, as after `env -i PATH=/usr/bin:/bin`.
    command = [_clean_python(), "-I", "-S", str(zipapp)]
    env = {"PATH": CLEAN_PATH}
    version = _run(*command, "--version", env=env)
    assert (version.returncode, version.stdout.strip()) == (0, f"ctrlsock {_version()}")
    _round_trip(command, sock_dir / "ctrl.sock", env=env)


def test_zipapp_carries_the_http_client(zipapp: Path) -> None:
    # h11 must be in the archive: without it a URL target would end in an internal error (70), not in
    # the refusal the client reports for a port nobody listens on.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        command = [_clean_python(), "-I", "-S", str(zipapp), "send", url, "version-get"]
        done = _run(*command, env={"PATH": CLEAN_PATH})
    assert done.returncode == 69, done.stderr
    assert done.stderr == f"ctrlsock: connection refused: nothing accepts connections on {url}/\n"


def _version() -> str:
    text = (REPO / "ctrlsock" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    assert match is not None
    return match.group(1)


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it (``python -m build``'s default), from a copy of the tree."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "*.pyz", ".venv*"
        ),
    )
    result = _run(sys.executable, "-m", "build", "--outdir", work / "dist", source, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "dist"


@pytest.mark.slow
def test_wheel_and_sdist_pass_twine_check(distributions: Path) -> None:
    files = sorted(distributions.iterdir())
    assert [path.suffix for path in files] == [".whl", ".gz"]
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_sdist_carries_what_distributions_package(distributions: Path) -> None:
    (sdist,) = distributions.glob("*.tar.gz")
    import tarfile  # noqa: PLC0415

    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "packaging/systemd/ctrlsock@.service",
        "packaging/systemd/ctrlsock@.socket",
        "packaging/tmpfiles.d/ctrlsock.conf",
        "packaging/sysusers.d/ctrlsock.conf",
        "packaging/completions/ctrlsock.bash",
        "packaging/completions/_ctrlsock",
        "packaging/completions/ctrlsock.fish",
        "packaging/man/ctrlsock.1",
        "ctrlsock/py.typed",
    } <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.mark.slow
def test_wheel_registers_the_pytest_plugin_under_its_module_name(distributions: Path) -> None:
    (wheel,) = distributions.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (name,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        text = archive.read(name).decode()
    assert "[pytest11]\nctrlsock.pytest_plugin = ctrlsock.pytest_plugin\n" in text
    assert "ctrlsock/pytest_plugin.py" in names


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_serves(
    distributions: Path, tmp_path: Path, sock_dir: Path
) -> None:
    (wheel,) = distributions.glob("*.whl")
    venv = tmp_path / "venv"
    # No --system-site-packages: the venv sees only what pip installs into it. --without-pip and this
    # pip's --python save installing pip itself (ensurepip), and --no-compile the byte code of every
    # dependency: half of this test's time on a loaded machine.
    created = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert created.returncode == 0, created.stderr
    installed = _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "--quiet",
        "--no-compile",
        "--disable-pip-version-check",
        wheel,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    ctrlsock = str(venv / "bin" / "ctrlsock")
    env = {"PATH": f"{venv / 'bin'}:{CLEAN_PATH}"}
    version = _run(ctrlsock, "--version", env=env)
    assert (version.returncode, version.stdout.strip()) == (0, f"ctrlsock {_version()}")
    # The installed program, not this checkout: run from elsewhere, with nothing on PYTHONPATH.
    where = _run(
        venv / "bin" / "python", "-c", "import ctrlsock; print(ctrlsock.__file__)", env=env, cwd=tmp_path
    )
    assert where.stdout.startswith(str(venv)), where.stdout
    _round_trip([ctrlsock], sock_dir / "ctrl.sock", env=env)
