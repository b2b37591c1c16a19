"""The command channel a daemon embeds: a Kea-compatible control socket for asyncio and threaded daemons.

``core.py`` is the facade (:class:`ControlServer`); ``endpoint.py`` does start-up and stop of the socket
(lock, recovery, bind, clean stop); ``engine.py`` serves connections through a waiter (``epoll.py`` for the
thread embedding and ``ctrlsock serve``, ``aio.py`` for asyncio); ``session.py`` is the sans-IO protocol
state of one connection; ``commands.py`` the registry and access checks; ``builtin_commands.py`` Kea's
built-ins; ``signals.py`` SIGTERM/SIGINT for every server of the process; ``upkeep.py`` the defence
against /tmp cleaners. HTTP(S) listeners (``http_config.py``, ``http_listener.py``) feed the same engine,
with ``connection.py`` holding either kind of client and ``http_session.py`` the HTTP protocol state.
"""

from __future__ import annotations

import logging

from .arguments import ArgumentSpec, UnknownKeys, compile_arguments
from .commands import (
    ACCESS_DENIED_PREFIX,
    AfterHook,
    BeforeHook,
    CommandContext,
    Handler,
    HandlerResult,
    HttpPeer,
    PeerCredentials,
)
from .config import Access, ConfigProvider, JsonFileConfig, ServerConfig
from .core import ControlServer, ServerState
from .engine import SHUTTING_DOWN_TEXT
from .http_config import HttpListenerConfig, HttpUser, TlsConfig
from .stats import ServerStats

# A library never prints through Python's last-resort handler: the daemon decides where logs go.
logging.getLogger("ctrlsock").addHandler(logging.NullHandler())

__all__ = [
    "ACCESS_DENIED_PREFIX",
    "SHUTTING_DOWN_TEXT",
    "Access",
    "AfterHook",
    "ArgumentSpec",
    "BeforeHook",
    "CommandContext",
    "ConfigProvider",
    "ControlServer",
    "Handler",
    "HandlerResult",
    "HttpListenerConfig",
    "HttpPeer",
    "HttpUser",
    "JsonFileConfig",
    "PeerCredentials",
    "ServerConfig",
    "ServerState",
    "ServerStats",
    "TlsConfig",
    "UnknownKeys",
    "compile_arguments",
]
