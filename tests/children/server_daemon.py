"""A daemon embedding ctrlsock's server, for tests that need a real separate process.

Usage: server_daemon.py EMBEDDING SOCKET [--umask OCTAL] [--mode OCTAL] [--stop-grace SECONDS]
       [--idle-timeout SECONDS] [--config FILE] [--no-metrics] [--audit-hooks]
EMBEDDING is ``thread`` (start_in_thread + signal handlers + wait), ``asyncio`` (async with + serve_forever)
or ``daemon`` (run_daemon, what ``ctrlsock serve`` runs). Prints ``ready`` once serving (``daemon``: once the
socket answers), ``stopped N`` when done (N: the exit value), or ``error: MESSAGE`` and exits 2.
Extra command ``blob`` ({"size": N}) answers with N bytes of payload, ``whoami`` with the peer credentials,
``sleep`` ({"seconds": S}) blocks its worker thread for S seconds. ``--config FILE`` serves a JSON file
through the ``config-*`` commands. ``--no-metrics`` turns the per-command metrics off; ``--audit-hooks``
registers a before-hook that lets everything through and an after-hook that logs at INFO to a logger that
drops it (the cost of the hook machinery itself, for the overhead benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.errors import CtrlSockError
from ctrlsock.server import CommandContext, ControlServer, JsonFileConfig, ServerConfig


def build(socket_path: Path, options: argparse.Namespace) -> ControlServer:
    config = ServerConfig(
        mode=int(options.mode, 8),
        stop_grace=options.stop_grace,
        idle_timeout=options.idle_timeout,
        metrics=not options.no_metrics,
    )
    provider = JsonFileConfig(Path(options.config)) if options.config else None
    server = ControlServer(
        socket_path, program="server-daemon", version="9.8.7", config=config, config_provider=provider
    )

    if options.audit_hooks:
        audit = logging.getLogger("server-daemon.audit")

        @server.before_command
        def allow(context: CommandContext) -> None:
            return None

        @server.after_command
        def log_it(context: CommandContext, result: int, seconds: float) -> None:
            audit.info("#%d %s: result %d in %.6f s", context.request_id, context.command, result, seconds)

    @server.command("sleep")
    def sleep(arguments: Any, context: CommandContext) -> None:
        time.sleep(float(arguments["seconds"]))  # a handler that blocks: what the benchmarks need

    payloads: dict[int, str] = {}

    @server.command("blob")
    def blob(arguments: Any, context: CommandContext) -> dict[str, Any]:
        # Built once per size, as a daemon's data exists before it is asked for.
        size = int(arguments["size"])
        if size not in payloads:
            payloads[size] = "x" * size
        return {"blob": payloads[size]}

    @server.command("whoami")
    def whoami(arguments: Any, context: CommandContext) -> dict[str, Any]:
        peer = context.peer
        assert peer is not None
        return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid, "server-pid": os.getpid()}

    return server


def run_thread(server: ControlServer) -> int:
    server.start_in_thread()
    server.install_signal_handlers()
    print("ready", flush=True)
    server.wait()
    server.stop()
    return server.exit_value


async def run_asyncio(server: ControlServer) -> int:
    async with server:
        server.install_signal_handlers()
        print("ready", flush=True)
        await server.serve_forever()
    return server.exit_value


def run_daemon_embedding(socket_path: Path) -> int:
    from ctrlsock.server.daemon import run_daemon  # noqa: PLC0415
    from tests.children.server_client import ask  # noqa: PLC0415

    def announce() -> None:
        # run_daemon blocks this thread; say "ready" from another once the socket answers.
        for _ in range(500):
            try:
                # Our own pid: a server already running on this path must not make us say "ready".
                if ask(socket_path, "status-get", timeout=1.0)["arguments"]["pid"] == os.getpid():
                    print("ready", flush=True)
                    return
            except (OSError, ValueError, KeyError):
                pass
            threading.Event().wait(0.01)  # polling readiness of a server that has no other signal

    threading.Thread(target=announce, daemon=True).start()
    return run_daemon(socket_path, log_level="warning")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("embedding", choices=["thread", "asyncio", "daemon"])
    parser.add_argument("socket")
    parser.add_argument("--umask", default=None)
    parser.add_argument("--mode", default="600")
    parser.add_argument("--stop-grace", type=float, default=2.0)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--config", default=None)
    parser.add_argument("--no-metrics", action="store_true")
    parser.add_argument("--audit-hooks", action="store_true")
    options = parser.parse_args()
    # The library logs through a NullHandler only: a daemon chooses where its logs go, as this one does.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if options.umask is not None:
        os.umask(int(options.umask, 8))
    socket_path = Path(options.socket)
    try:
        if options.embedding == "daemon":
            code = run_daemon_embedding(socket_path)
        else:
            server = build(socket_path, options)
            code = run_thread(server) if options.embedding == "thread" else asyncio.run(run_asyncio(server))
    except CtrlSockError as error:
        print(f"error: {error}", flush=True)
        return 2
    print(f"stopped {code}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
