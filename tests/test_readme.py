"""The README's daemon quickstart is real code: run it against a real socket."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ctrlsock import Reply, send_command

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "the README has one Python quickstart"
    return str(blocks[0])


def test_readme_quickstart_serves_its_command(sock_path: Path) -> None:
    code = quickstart_code().replace("/run/mydaemon/ctrl.sock", str(sock_path))
    replies: list[Reply] = []

    def run_the_rest_of_my_daemon() -> None:
        replies.append(send_command(sock_path, "lease-get", {"ip-address": "192.0.2.1"}, timeout=5))
        replies.append(send_command(sock_path, "lease-get", {}, timeout=5))
        replies.append(send_command(sock_path, "version-get", timeout=5))

    namespace: dict[str, Any] = {"run_the_rest_of_my_daemon": run_the_rest_of_my_daemon}
    exec(compile(code, str(README), "exec"), namespace)  # our own README, run as documentation

    assert replies[0] == Reply(0, "", {"ip-address": "192.0.2.1", "state": 0})
    assert replies[1] == Reply(1, "missing 'ip-address'", None)
    assert replies[2].result == 0
    assert replies[2].text == "1.2.3"
    assert not sock_path.exists()  # a clean stop removes the socket it bound
