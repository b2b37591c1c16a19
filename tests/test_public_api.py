"""The package's public names: sorted, resolvable, visible to type checkers, and cheap to import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import ctrlsock
from ctrlsock import async_client, protocol


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


def type_checking_imports() -> dict[str, str]:
    """Name -> module of every import under ``if TYPE_CHECKING:`` in ctrlsock/__init__.py."""
    tree = ast.parse(Path(ctrlsock.__file__).read_text())
    imports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.dump(statement)
                assert statement.module is not None
                for alias in statement.names:
                    imports[alias.asname or alias.name] = statement.module
    return imports


def test_type_checkers_see_every_lazily_imported_name_from_its_module() -> None:
    # Type checkers read the TYPE_CHECKING imports (the module __getattr__ is hidden from them): a lazy
    # name missing there would be an error for a daemon author, and a wrong module a different object.
    lazy: dict[str, str] = vars(ctrlsock)["_LAZY"]
    assert type_checking_imports() == lazy
    assert set(lazy) <= set(ctrlsock.__all__)
    for name, module in lazy.items():
        assert getattr(importlib.import_module(module), name) is getattr(ctrlsock, name), name


def test_every_name_in_all_is_imported_eagerly_or_lazily() -> None:
    code = "import ctrlsock; print(sorted(vars(ctrlsock)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    eager = set(ast.literal_eval(done.stdout))
    lazy: dict[str, str] = vars(ctrlsock)["_LAZY"]
    assert set(ctrlsock.__all__) == (eager & set(ctrlsock.__all__)) | set(lazy)
    assert not eager & set(lazy)  # a lazy name is only bound on first use


def test_unknown_names_raise_attribute_error_at_run_time() -> None:
    with pytest.raises(AttributeError, match="module 'ctrlsock' has no attribute 'does_not_exist'"):
        ctrlsock.does_not_exist  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from ctrlsock import ControlServr")


def test_the_blocking_client_does_not_import_asyncio() -> None:
    # `ctrlsock status` imports the blocking client on its fast path; the asyncio one lives apart.
    code = "import sys, ctrlsock.client; print('asyncio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_json_value_and_reply_helpers_are_public() -> None:
    assert ctrlsock.Reply(0).ok
    with pytest.raises(ctrlsock.ReplyError):
        ctrlsock.Reply(ctrlsock.Result.ERROR, "no").raise_for_result()
    assert ctrlsock.JsonValue is protocol.JsonValue
    assert ctrlsock.send_command_async is async_client.send_command_async


def test_the_function_probe_stays_the_function_after_its_module_is_imported() -> None:
    # Importing the submodule ctrlsock.probe (as the CLI does) binds the package attribute "probe":
    # the exported function must still be what `from ctrlsock import probe` gives.
    code = (
        "import ctrlsock.probe, ctrlsock\n"
        "from ctrlsock import probe\n"
        "from ctrlsock.probe import State\n"
        "print(callable(probe), probe is ctrlsock.probe, State.RUNNING.value)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "running"]


def test_dir_lists_the_lazy_names_before_their_first_use() -> None:
    code = (
        "import ctrlsock\n"
        "print(sorted(set(ctrlsock.__all__) - set(dir(ctrlsock))), 'ControlServer' in vars(ctrlsock))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "False"]
