"""A pytest plugin for daemon authors: a control server on a temporary socket, in either embedding.

Installed with ctrlsock (the ``pytest11`` entry point ``ctrlsock.pytest_plugin``) and opt-in: it only
defines fixtures, which do nothing unless a test asks for them. Loading it imports nothing but pytest,
so test suites that never use it pay nothing; ``-p no:ctrlsock.pytest_plugin`` disables it. Without
the entry point (a source checkout), load it with ``-p ctrlsock.pytest_plugin`` or
``pytest_plugins = ["ctrlsock.pytest_plugin"]`` in a ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ctrlsock.testing import ServerFactory

__all__ = ["ctrlsock_server_factory"]


@pytest.fixture
def ctrlsock_server_factory() -> Iterator[ServerFactory]:
    """Start control servers on temporary sockets; each is stopped at teardown, which fails unless it
    stopped cleanly (socket removed, holder record cleared).

    Example::

        def test_lease_get(ctrlsock_server_factory):
            server = ctrlsock_server_factory("asyncio", idle_timeout=1.0)  # or "thread" (the default)
            server.add_command("lease-get", lease_get)
            assert server.call("lease-get", {"ip-address": "192.0.2.1"}).ok

    See :class:`ctrlsock.testing.ServerFactory` for the arguments (a ready ``server=`` among them).
    """
    # Imported here, not at plugin load: every pytest run with ctrlsock installed loads this module.
    from ctrlsock.testing import ServerFactory  # noqa: PLC0415

    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.close()
