"""``ctrlsock bench`` over HTTP via kea-ctrl-agent 2.2 in front of kea-dhcp4 2.2, and over the unix socket.

Run: ``python3 tests/bench/http_bench.py [--clients 8] [--duration 5] [--command version-get] [--auth]``.
Starts a kea-dhcp4 and a kea-ctrl-agent on 127.0.0.1 in a temporary directory, then runs, one after the
other in the same run, ``ctrlsock bench SOCKET`` (kea-dhcp4 directly) and ``ctrlsock bench URL --service
dhcp4`` (through the agent, one persistent connection per client), and prints both commands and their
figures. Not a test: no wall-clock assertion anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kea import start_ctrl_agent, start_kea  # noqa: E402  (after the sys.path line)


def bench(target: str, extra: list[str], args: argparse.Namespace) -> dict[str, object]:
    command = [sys.executable, "-m", "ctrlsock", "bench", target, "--clients", str(args.clients)]
    command += ["--duration", str(args.duration), "--command", args.command, "--json", *extra]
    print("$", " ".join(command[2:]).replace(sys.executable, "python3"), flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench failed ({done.returncode}): {done.stderr.strip()}")
    figures: dict[str, object] = json.loads(done.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--command", default="version-get")
    parser.add_argument("--auth", action="store_true", help="configure basic authentication in the agent")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="cs-b", dir="/tmp"))
    kea = start_kea(directory)
    extra: dict[str, object] = {}
    auth_args: list[str] = []
    if args.auth:
        password_file = directory / "password"
        password_file.write_text("bench-password\n")
        extra["authentication"] = {
            "type": "basic",
            "realm": "bench",
            "clients": [{"user": "admin", "password": "bench-password"}],
        }
        auth_args = ["--auth-user", "admin", "--auth-password-file", str(password_file)]
    agent = start_ctrl_agent(directory, kea.socket_path, extra=extra)
    try:
        rows = [
            ("kea-dhcp4 2.2, unix socket", bench(str(kea.socket_path), [], args)),
            (
                "kea-ctrl-agent 2.2 -> kea-dhcp4 2.2, HTTP keep-alive",
                bench(f"http://127.0.0.1:{agent.port}", ["--service", "dhcp4", *auth_args], args),
            ),
        ]
    finally:
        agent.stop()
        kea.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"{'target':<52} {'commands/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, figures in rows:
        latency = figures["latency_ms"]
        assert isinstance(latency, dict)
        print(
            f"{name:<52} {figures['commands_per_s']:>11} {latency['p50']:>8} {latency['p99']:>8} "
            f"{figures['error_count']:>7}"
        )


if __name__ == "__main__":
    main()
