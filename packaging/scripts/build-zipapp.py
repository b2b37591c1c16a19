#!/usr/bin/env python3
"""Build ``ctrlsock.pyz``: the whole command line in one file, for hosts without pip.

    python3 packaging/scripts/build-zipapp.py                      # -> dist/ctrlsock.pyz
    python3 packaging/scripts/build-zipapp.py -o /tmp/ctrlsock.pyz \
        --pip-arg=--no-index --pip-arg=--find-links=wheels/

The archive holds ctrlsock and its dependencies (``pip install --target``, wheels only), and runs with
nothing but ``python3`` >= 3.11: ``python3 ctrlsock.pyz status``, or ``./ctrlsock.pyz status``.

A zip can hold pure Python only: ``zipimport`` cannot load a compiled extension from inside an archive.
typer 0.29 made pydantic (with its compiled ``pydantic_core``) a hard dependency, so the archive pins
typer to the last releases before it (``ZIPAPP_CONSTRAINTS``); typer >= 0.26 is needed by ctrlsock.cli
(``typer.TyperException``). The build fails if any compiled module lands in the archive, rather than
producing one that breaks at run time on the first command.

Start-up matters (monitoring runs ``ctrlsock status`` every few seconds), so the archive also carries
byte code compiled by the building interpreter, beside each source file where ``zipimport`` looks for
it; another Python version ignores it (wrong magic number) and compiles from source.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.machinery
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Why each pin: see the module docstring.
ZIPAPP_CONSTRAINTS = ["typer>=0.26,<0.29"]

MAIN = '''\
"""ctrlsock as a zipapp: python3 ctrlsock.pyz COMMAND ..."""
import sys

if sys.version_info < (3, 11):
    sys.exit("ctrlsock: needs Python 3.11 or newer, this is " + sys.version.split()[0])

from ctrlsock.cli import main

main()
'''

# Every file gets this time stamp: the archive's bytes then depend on its content only.
FIXED_MTIME = 315532800  # 1980-01-01, the earliest a zip entry can carry


def project_dependencies() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return dependencies


def install_dependencies(target: Path, requirements: list[str], pip_args: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(ZIPAPP_CONSTRAINTS) + "\n")
    try:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",  # never run a build backend; a pure wheel or nothing
            "--target",
            str(target),
            "--constraint",
            constraints.name,
            *pip_args,
            *requirements,
        ]
        subprocess.run(command, check=True)
    finally:
        Path(constraints.name).unlink()
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts pip wrote for the target dir


def copy_package(target: Path) -> None:
    shutil.copytree(
        ROOT / "ctrlsock",
        target / "ctrlsock",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def compiled_modules(tree: Path) -> list[Path]:
    suffixes = (*importlib.machinery.EXTENSION_SUFFIXES, ".so")
    return sorted(path for path in tree.rglob("*") if path.is_file() and path.name.endswith(suffixes))


def build(output: Path, *, pip_args: list[str], interpreter: str, compile_bytecode: bool) -> Path:
    with tempfile.TemporaryDirectory(prefix="ctrlsock-zipapp-") as scratch:
        staging = Path(scratch) / "app"
        staging.mkdir()
        install_dependencies(staging, project_dependencies(), pip_args)
        copy_package(staging)
        native = compiled_modules(staging)
        if native:
            names = ", ".join(str(path.relative_to(staging)) for path in native)
            raise SystemExit(
                f"build-zipapp: compiled modules cannot be imported from a zip: {names}; "
                "pin the dependency that brought them (ZIPAPP_CONSTRAINTS)"
            )
        (staging / "__main__.py").write_text(MAIN, encoding="utf-8")
        for path in staging.rglob("*"):
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        if compile_bytecode:
            # legacy=True puts module.pyc beside module.py, the only place zipimport looks; unchecked
            # hash-based byte code does not depend on zip time stamps (2-second resolution).
            ok = compileall.compile_dir(
                staging,
                quiet=2,
                legacy=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            if not ok:
                raise SystemExit("build-zipapp: compiling byte code failed")
            for path in staging.rglob("*.pyc"):
                os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".part")
        zipapp.create_archive(staging, partial, interpreter=interpreter, compressed=True)
        partial.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "ctrlsock.pyz")
    parser.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to pip install (repeatable), e.g. --pip-arg=--no-index",
    )
    parser.add_argument("--interpreter", default="/usr/bin/env python3", help="the archive's #! line")
    parser.add_argument("--no-bytecode", action="store_true", help="ship sources only (a smaller archive)")
    args = parser.parse_args(argv)
    output = build(
        args.output,
        pip_args=args.pip_arg,
        interpreter=args.interpreter,
        compile_bytecode=not args.no_bytecode,
    )
    print(f"built {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
