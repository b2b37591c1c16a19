"""A ControlServer with one HTTP(S) listener on 127.0.0.1, for the HTTP peer tests and the HTTP benchmark.

Usage: http_serve.py SOCKET [--port N] [--config FILE] [--user NAME --password-file FILE]
       [--cert FILE --key FILE [--ca FILE]] [--request-timeout SECONDS] [--idle-timeout SECONDS]
       [--max-header-size BYTES] [--quiet]
Logs to stderr at INFO (``--quiet``: WARNING, for the benchmark); the server's own ``serving
http://HOST:PORT/ for SOCKET`` line is the readiness signal and tells the port (``--port 0``, the default,
takes any free one). Stops on SIGTERM or SIGINT. ``--config FILE`` serves a JSON file through ``config-*``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.errors import CtrlSockError
from ctrlsock.server import ControlServer, JsonFileConfig
from ctrlsock.server.http_config import HttpListenerConfig, TlsConfig, User


def listener(options: argparse.Namespace) -> HttpListenerConfig:
    users: tuple[User, ...] = ()
    if options.user is not None:
        users = (User(options.user, Path(options.password_file).read_text().strip()),)
    tls = None
    if options.cert is not None:
        anchor = Path(options.ca) if options.ca is not None else None
        tls = TlsConfig(Path(options.cert), Path(options.key), trust_anchor=anchor)
    return HttpListenerConfig(
        port=options.port,
        users=users,
        tls=tls,
        request_timeout=options.request_timeout,
        idle_timeout=options.idle_timeout,
        max_header_size=options.max_header_size,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default=None)
    parser.add_argument("--user", default=None)
    parser.add_argument("--password-file", default=None)
    parser.add_argument("--cert", default=None)
    parser.add_argument("--key", default=None)
    parser.add_argument("--ca", default=None)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--max-header-size", type=int, default=16384)
    parser.add_argument("--quiet", action="store_true")
    options = parser.parse_args()
    level = logging.WARNING if options.quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    provider = JsonFileConfig(Path(options.config)) if options.config else None
    try:
        server = ControlServer(
            options.socket,
            program="http-serve",
            version="1.2.3",
            config_provider=provider,
            http=listener(options),
        )
        server.start_in_thread()
        server.install_signal_handlers()
        if options.quiet:
            # The benchmark logs nothing at INFO; it learns the port from this line instead.
            for url in server.http_urls:
                print(f"serving {url} for {options.socket}", file=sys.stderr, flush=True)
        server.wait()
        server.stop()
    except CtrlSockError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return server.exit_value


if __name__ == "__main__":
    sys.exit(main())
