"""The command channel a daemon embeds: a Kea-compatible control socket for asyncio and threaded daemons.

One sans-IO session per connection (``session.py``) shared by two engines: an epoll loop for the thread
embedding and ``ctrlsock serve`` (``engine.py``), and the running asyncio loop's readiness callbacks
(``aio.py``). ``endpoint.py`` does start-up and stop (lock, recovery, bind, clean stop), ``commands.py`` the
registry and access checks, ``builtin_commands.py`` Kea's built-ins.
"""

from __future__ import annotations

from .commands import CommandContext, Handler, HandlerResult, PeerCredentials
from .config import Access, ConfigProvider, JsonFileConfig, ServerConfig
from .core import ControlServer
from .engine import ServerStats

__all__ = [
    "Access",
    "CommandContext",
    "ConfigProvider",
    "ControlServer",
    "Handler",
    "HandlerResult",
    "JsonFileConfig",
    "PeerCredentials",
    "ServerConfig",
    "ServerStats",
]
