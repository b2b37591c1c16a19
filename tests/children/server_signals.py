"""A daemon that leaves SIGTERM/SIGINT to ctrlsock's default handling, for the signal tests.

Usage: server_signals.py EMBEDDING SOCKET [SOCKET...] [--chain] [--signal-at-startup] [--stop-grace S]
EMBEDDING is ``thread`` (``with running_in_thread()`` around a daemon that waits for ever) or ``asyncio``
(``serve_forever()``), or ``daemon`` (run_daemon, what ``ctrlsock serve`` runs; one socket), or ``installed``
(servers in threads that each called ``install_signal_handlers()``: a signal only stops them, and the process
prints ``all stopped, going on`` and exits 0). One server per SOCKET. Prints ``ready`` once every server
serves. ``--chain``: the daemon installed its own SIGTERM handler first (it prints ``daemon handler`` and
exits 7). ``--signal-at-startup``: the process sends itself SIGTERM right after the lock is taken and the
socket bound, before serving begins. A ``KeyboardInterrupt`` is reported as ``keyboard interrupt`` and exit
130. Command ``hang`` blocks until the process ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ctrlsock.server.core as core_module
from ctrlsock.server import CommandContext, ControlServer, ServerConfig

FOREVER = threading.Event()


def build(socket_path: Path, grace: float) -> ControlServer:
    server = ControlServer(
        socket_path, program="server-signals", version="1.0", config=ServerConfig(stop_grace=grace)
    )

    @server.command("hang")
    def hang(arguments: Any, context: CommandContext) -> None:
        FOREVER.wait()

    return server


def signal_at_startup() -> None:
    """Send SIGTERM to ourselves between taking the lock (and binding) and serving: a real signal at a
    real point of start-up."""
    original = core_module.open_endpoint

    def open_then_signal(*args: Any, **kwargs: Any) -> Any:
        endpoint = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return endpoint

    core_module.open_endpoint = open_then_signal  # type: ignore[assignment]


def run_thread(servers: list[ControlServer]) -> int:
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server.running_in_thread())
        print("ready", flush=True)
        FOREVER.wait()
    return 0


async def run_asyncio(servers: list[ControlServer]) -> int:
    for server in servers:
        await server.start()
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))
    print("serve_forever returned", flush=True)
    return 0


def run_installed(servers: list[ControlServer]) -> int:
    for server in servers:
        server.start_in_thread()
    for server in servers:
        server.install_signal_handlers()
    print("ready", flush=True)
    for server in servers:
        if not server.wait(30.0):
            print("still serving", flush=True)
            return 1
    print("all stopped, going on", flush=True)
    return 0


def run_daemon_embedding(socket_path: Path) -> int:
    from ctrlsock.server.daemon import run_daemon  # noqa: PLC0415

    code = run_daemon(socket_path, log_level="warning")
    print(f"stopped {code}", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("embedding", choices=["thread", "asyncio", "daemon", "installed"])
    parser.add_argument("sockets", nargs="+")
    parser.add_argument("--chain", action="store_true")
    parser.add_argument("--signal-at-startup", action="store_true")
    parser.add_argument("--stop-grace", type=float, default=2.0)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if options.chain:

        def daemon_handler(number: int, frame: object) -> None:
            print("daemon handler", flush=True)
            sys.exit(7)

        signal.signal(signal.SIGTERM, daemon_handler)
    if options.signal_at_startup:
        signal_at_startup()
    try:
        if options.embedding == "daemon":
            return run_daemon_embedding(Path(options.sockets[0]))
        servers = [build(Path(path), options.stop_grace) for path in options.sockets]
        if options.embedding == "thread":
            return run_thread(servers)
        if options.embedding == "installed":
            return run_installed(servers)
        return asyncio.run(run_asyncio(servers))
    except KeyboardInterrupt:
        print("keyboard interrupt", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
