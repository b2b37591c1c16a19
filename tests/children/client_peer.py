"""A misbehaving Kea-style server for the client tests: each connection gets the same scripted answer.

Usage: client_peer.py SOCKET MODE
MODE is one of:
  ``truncate``  read the request, send the first 40 bytes of a longer reply, close
  ``garbage``   read the request, send ``hello, not json``, close
  ``not-reply`` read the request, send ``{"x":1}`` (JSON, but no ``result``), close
  ``linger``    read the request, send a complete reply and keep the connection open
  ``partial``   read the request, send ``{"result":0,`` and keep the connection open
  ``early``     read 1 KiB of the request, answer ``{"result":1,"text":"command too large"}`` and close, as
                a server refusing an oversized request does while its client is still sending
  ``hold``      read the request, print ``request``, wait until the client closes the connection, print
                ``closed`` (the client shut its sending side after the request, so EOF alone does not
                tell; a full close does: the connection then polls as hung up)
Takes no lock: it stands in for a server's replies only. Prints ``ready`` once it listens.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading

REPLY = json.dumps({"result": 0, "text": "x" * 200}).encode()


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


def serve_one(connection: socket.socket, mode: str) -> None:
    with connection:
        try:
            if mode == "early":
                connection.recv(1024)
                connection.sendall(b'{"result":1,"text":"command too large"}')
                return
            read_request(connection)
            if mode == "truncate":
                connection.sendall(REPLY[:40])
            elif mode == "garbage":
                connection.sendall(b"hello, not json")
            elif mode == "not-reply":
                connection.sendall(b'{"x":1}')
            elif mode == "linger":
                connection.sendall(b'{"result":0,"text":"lingering"}')
                threading.Event().wait()
            elif mode == "partial":
                connection.sendall(b'{"result":0,')
                threading.Event().wait()
            elif mode == "hold":
                print("request", flush=True)
                hung_up = select.poll()
                hung_up.register(connection, 0)  # no events asked: only POLLHUP/POLLERR are reported
                hung_up.poll()
                print("closed", flush=True)
        except OSError:
            pass


def main() -> int:
    socket_path, mode = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(128)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve_one, args=(connection, mode), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
