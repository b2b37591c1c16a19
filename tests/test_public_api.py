from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ctrlsock


def test_every_public_name_resolves() -> None:
    for name in ctrlsock.__all__:
        assert getattr(ctrlsock, name) is not None, name
    assert ctrlsock.__all__ == sorted(ctrlsock.__all__)


def test_importing_the_package_loads_no_server_or_filelock() -> None:
    # `ctrlsock status` is run every few seconds by monitoring: the package must stay lazy.
    heavy = "{'asyncio', 'filelock', 'typer', 'selectors'}"
    code = (
        "import sys, ctrlsock; print(sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {heavy} or m.startswith('ctrlsock.server')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plain_status_loads_neither_typer_nor_filelock_nor_the_server(sock_path: Path) -> None:
    # Monitoring runs `ctrlsock status` every few seconds: its start-up is measured, and kept lean here.
    code = (
        "import sys\n"
        "from ctrlsock.cli import main\n"
        f"sys.argv = ['ctrlsock', 'status', {str(sock_path)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "heavy = {'asyncio', 'filelock', 'typer', 'click'}\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.split('.')[0] in heavy or m.startswith('ctrlsock.server'))\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "3 []"  # stopped: nothing there, nothing heavy loaded
