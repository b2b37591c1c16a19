"""A Kea-style server that answers every request the same chosen way, for ``ctrlsock send``/``bench`` tests.

Usage: cli_reply_server.py SOCKET MODE
MODE is one of:
  ``result:N``  reply ``{"result": N, "text": "result N", "arguments": {"echo": <the request>}}``
  ``wrapped``   reply ``[{"result": 0, "text": "wrapped"}]`` as kea-ctrl-agent does
  ``truncate``  send the first half of a reply, then close
  ``garbage``   send ``hello, not json`` and close
  ``silent``    read the request and never answer (the client must time out)
Takes no lock: it only stands in for a server's replies. Prints ``ready`` once it listens.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path


def read_request(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
        try:
            json.loads(data)
        except ValueError:
            continue
        break
    return data


def reply_for(mode: str, request: bytes) -> bytes | None:
    if mode.startswith("result:"):
        result = int(mode.partition(":")[2])
        echo = json.loads(request) if request else None
        return json.dumps(
            {"result": result, "text": f"result {result}", "arguments": {"echo": echo}}
        ).encode()
    if mode == "wrapped":
        return b'[{"result": 0, "text": "wrapped"}]'
    if mode == "truncate":
        whole = json.dumps({"result": 0, "text": "x" * 100}).encode()
        return whole[: len(whole) // 2]
    if mode == "garbage":
        return b"hello, not json"
    return None  # silent


def serve_one(connection: socket.socket, mode: str) -> None:
    with connection:
        try:
            request = read_request(connection)
            reply = reply_for(mode, request)
            if reply is None:
                # Hold the connection open, whatever the client does (it may have shut down its side).
                threading.Event().wait()
                return
            connection.sendall(reply)
        except OSError:
            pass


def main() -> int:
    socket_path, mode = Path(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(128)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve_one, args=(connection, mode), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
