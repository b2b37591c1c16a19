"""Send one command with one of ctrlsock's clients and print the outcome on one line, e.g. as another user.

Usage: client_call.py blocking|asyncio SOCKET COMMAND [TIMEOUT]
Prints ``reply RESULT TEXT`` or ``error CLASS MESSAGE`` and exits 0; anything else is a bug in the client.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.async_client import send_command_async
from ctrlsock.client import send_command
from ctrlsock.errors import CtrlSockError


def main() -> int:
    client, socket_path, command = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    try:
        if client == "asyncio":
            reply = asyncio.run(send_command_async(socket_path, command, timeout=timeout))
        else:
            reply = send_command(socket_path, command, timeout=timeout)
    except CtrlSockError as error:
        print(f"error {type(error).__name__} {error}", flush=True)
        return 0
    print(f"reply {reply.result} {reply.text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
