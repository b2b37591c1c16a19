"""The README's Python examples are real code: run them against a real socket and a real HTTPS port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctrlsock import AuthenticationError, Reply, send_command
from ctrlsock.http_client import Credentials, send_command_http
from tests.support import readme_python_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return readme_python_blocks()


def quickstart_code() -> str:
    return python_blocks()[0]


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


def test_readme_http_example_serves_https_with_its_user(
    sock_path: Path, work_dir: Path, pki: dict[str, Path]
) -> None:
    keys = work_dir / "keys"
    keys.mkdir()
    (keys / "admin-password").write_text("s3cret\n")
    for name, source in (("cert.pem", "server-cert"), ("key.pem", "server-key"), ("ca.pem", "ca")):
        (keys / name).write_bytes(pki[source].read_bytes())
    code = (
        python_blocks()[1]
        .replace("/run/mydaemon/ctrl.sock", str(sock_path))
        .replace('Path("/etc/mydaemon")', f"Path({str(keys)!r})")
        .replace('host="192.0.2.1"', 'host="127.0.0.1"')
        .replace("port=8004", "port=0")
    )
    namespace: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), namespace)  # our own README, run as documentation
    server = namespace["server"]
    with server.running_in_thread(handle_signals=False):
        [url] = server.http_urls
        assert url.startswith("https://127.0.0.1:")
        tls = {"ca": pki["ca"], "cert": pki["client-cert"], "key": pki["client-key"]}
        replies = send_command_http(url, "version-get", auth=Credentials("admin", "s3cret"), timeout=5, **tls)
        assert [reply.result for reply in replies] == [0]
        with pytest.raises(AuthenticationError):
            send_command_http(url, "version-get", auth=Credentials("admin", "wrong"), timeout=5, **tls)
