from __future__ import annotations

import subprocess
import sys

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
