"""Shared fixtures: short socket directories, child processes that are always reaped."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.children.cli_support import start_child_until_ready
from tests.kea import KeaDaemon, require_kea, start_kea
from tests.support import HTTP_PASSWORD, LogWatch, make_pki, stop_child

# The project's own fixture for daemon authors (ctrlsock_server_factory), loaded by module name so that it
# works from a checkout as well as with the installed entry point of the same name.
pytest_plugins = ["ctrlsock.pytest_plugin"]

# Tests never assert wall-clock bounds (speed is measured by benchmarks): Hypothesis's per-example
# deadline would turn a busy 2-core CI machine into flaky failures.
settings.register_profile("ctrlsock", deadline=None, print_blob=True)
settings.load_profile("ctrlsock")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private directory short enough for ``sun_path`` (pytest's ``tmp_path`` can exceed 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: Path) -> Path:
    return sock_dir / "ctrl.sock"


@pytest.fixture
def nobody_dir(sock_dir: Path) -> Path:
    """A socket directory for tests that act as, or on behalf of, the user ``nobody`` (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    return sock_dir


@pytest.fixture
def kea_daemon() -> Iterator[KeaDaemon]:
    """A started real ``kea-dhcp4``; skipped without Kea unless ``CTRLSOCK_REQUIRE_KEA`` is set."""
    require_kea()
    directory = Path(tempfile.mkdtemp(prefix="cs-k", dir="/tmp"))
    daemon = start_kea(directory)
    try:
        yield daemon
    finally:
        daemon.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    """Collects the ``ctrlsock.server`` log records of one test, at DEBUG."""
    watch = LogWatch()
    logger = logging.getLogger("ctrlsock.server")
    old_level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)


@pytest.fixture
def reply_server(sock_dir: Path) -> Iterator[Callable[[str], Path]]:
    """Start ``cli_reply_server.py`` in a mode on demand: ``reply_server("result:2")`` -> socket path."""
    children: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> Path:
        path = sock_dir / f"r{len(children)}.sock"
        children.append(start_child_until_ready("cli_reply_server.py", path, mode)[0])
        return path

    try:
        yield start
    finally:
        for child in children:
            stop_child(child)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A private temporary directory for configurations, keys and password files."""
    path = Path(tempfile.mkdtemp(prefix="cs-h", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def password_files(work_dir: Path) -> tuple[Path, Path]:
    """A file holding ``HTTP_PASSWORD`` and one holding a wrong password, each with a trailing newline."""
    good = work_dir / "password"
    good.write_text(HTTP_PASSWORD + "\n")
    bad = work_dir / "wrong-password"
    bad.write_text("not-the-password\n")
    return good, bad


@pytest.fixture
def pki(work_dir: Path) -> dict[str, Path]:
    """Certificates made by the ``openssl`` command line (see ``make_pki``)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing (.ci/run installs it)")
    return make_pki(work_dir / "pki")
