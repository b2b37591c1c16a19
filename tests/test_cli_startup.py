"""``ctrlsock status`` starts lean: monitoring runs it every few seconds.

What a plain status imports is pinned here; the time it takes is measured with hyperfine, not tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.children.cli_support import cli_env, serving
from tests.support import REPO_DIR

# Whole packages a plain status must never load: the typer stack, the server and its asyncio, the lock
# taking (filelock), recovery, the benchmark's process pool, and logging.
FORBIDDEN = (
    "typer",
    "click",
    "rich",
    "shellingham",
    "filelock",
    "asyncio",
    "logging",
    "multiprocessing",
    "concurrent",
    "ctrlsock.server",
    "ctrlsock.recover",
    "ctrlsock.bench",
    "ctrlsock.cli.typer_app",
)

PROGRAM = """
import json, sys
before = set(sys.modules)
from ctrlsock.cli import main
sys.argv = ["ctrlsock", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
loaded = sorted(set(sys.modules) - before)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def loaded_by(*args: object) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO_DIR,
        timeout=60,
        check=True,
    )
    document = json.loads(done.stderr.strip().splitlines()[-1])
    return document["code"], document["loaded"]


def assert_lean(loaded: list[str]) -> None:
    outside = [name for name in loaded if name.split(".")[0] not in {*sys.stdlib_module_names, "ctrlsock"}]
    assert outside == [], "a plain status needs the standard library and ctrlsock only"
    heavy = [name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert heavy == []


def test_status_of_a_running_daemon_loads_only_the_standard_library_and_the_probe(sock_path: Path) -> None:
    with serving(sock_path):
        code, loaded = loaded_by("status", sock_path)
        assert code == 0
        assert_lean(loaded)
        assert "ctrlsock.probe" in loaded or any(name.startswith("ctrlsock.probe.") for name in loaded)
        code, loaded = loaded_by("status", "--json", "--timeout", "2", sock_path)
        assert code == 0
        assert_lean(loaded)


def test_status_of_a_stale_directory_loads_nothing_heavy(sock_dir: Path) -> None:
    with serving(sock_dir / "a.sock") as server:
        server.kill()
    code, loaded = loaded_by("status", sock_dir, sock_dir / "missing.sock")
    assert code == 1
    assert_lean(loaded)
