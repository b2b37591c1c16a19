"""Raw AF_UNIX client helpers for the server tests (independent of ctrlsock.client, so they can judge it).

Also runnable as a child process: ``server_client.py SOCKET REQUEST_JSON`` prints the raw reply to stdout,
used to send a command as another user (``subprocess.run(..., user="nobody")``).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any


def connect(socket_path: Path | str, *, timeout: float = 5.0, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
    except BaseException:
        sock.close()
        raise
    return sock


def read_to_eof(sock: socket.socket, *, chunk: int = 65536) -> bytes:
    parts = []
    while data := sock.recv(chunk):
        parts.append(data)
    return b"".join(parts)


def ask_raw(socket_path: Path | str, request: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read the reply to EOF."""
    with connect(socket_path, timeout=timeout) as sock:
        sock.sendall(request)
        return read_to_eof(sock)


def ask(
    socket_path: Path | str, command: str, arguments: Any = None, *, timeout: float = 5.0
) -> dict[str, Any]:
    request: dict[str, Any] = {"command": command}
    if arguments is not None:
        request["arguments"] = arguments
    reply: dict[str, Any] = json.loads(ask_raw(socket_path, json.dumps(request).encode(), timeout=timeout))
    return reply


def slow_read(sock: socket.socket, *, chunk: int = 4096, pause: float = 0.0, every: int = 64) -> bytes:
    """Read to EOF in small chunks, pausing every ``every`` chunks (an honest slow reader)."""
    parts = []
    count = 0
    while data := sock.recv(chunk):
        parts.append(data)
        count += 1
        if pause and count % every == 0:
            time.sleep(pause)  # being slow is the point of this reader
    return b"".join(parts)


if __name__ == "__main__":
    sys.stdout.buffer.write(ask_raw(sys.argv[1], sys.argv[2].encode()))
    sys.stdout.flush()
