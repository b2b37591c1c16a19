"""``ctrlsock bench`` over HTTP: kea-ctrl-agent 2.2 -> kea-dhcp4 2.2, ctrlsock's own HTTP listener, and unix.

Run: ``python3 tests/bench/http_bench.py [--clients 8] [--duration 5] [--rounds 3] [--command version-get]
[--auth]``. Starts in a temporary directory a kea-dhcp4, a kea-ctrl-agent on 127.0.0.1 in front of it, and a
ctrlsock server with an HTTP listener on 127.0.0.1 (``ctrlsock serve SOCKET --http 127.0.0.1:PORT`` when this
checkout's CLI has ``--http``, else a ``ControlServer`` with an ``HttpListenerConfig`` in a child process).
Then, round after round, runs one after the other ``ctrlsock bench SOCKET`` (kea-dhcp4 directly),
``ctrlsock bench URL --service dhcp4`` (through the agent) and ``ctrlsock bench URL`` (ctrlsock's listener),
each client on one persistent connection, and prints every command, the median of the rounds per target, and
the ratio ctrlsock/agent. Not a test: no wall-clock assertion anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kea import start_ctrl_agent, start_kea  # noqa: E402  (after the sys.path line)

SERVING = re.compile(r"serving (http://127\.0\.0\.1:\d+/) for ")
PASSWORD = "bench-password"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def bench(target: str, extra: list[str], args: argparse.Namespace) -> dict[str, object]:
    command = [sys.executable, "-m", "ctrlsock", "bench", target, "--clients", str(args.clients)]
    command += ["--duration", str(args.duration), "--command", args.command, "--json", *extra]
    print("$", " ".join(command[2:]).replace(sys.executable, "python3"), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench failed ({done.returncode}): {done.stderr.strip()}")
    figures: dict[str, object] = json.loads(done.stdout)
    return figures


class OurServer:
    """ctrlsock serving SOCKET and one HTTP listener on 127.0.0.1; the URL comes from its log line."""

    def __init__(self, directory: Path, password_file: Path | None) -> None:
        socket_path = directory / "ours.sock"
        command = [sys.executable, "-m", "ctrlsock", "serve", str(socket_path), "--http", "127.0.0.1:0"]
        if password_file is not None:
            command += ["--http-auth-user", "admin", "--http-auth-password-file", str(password_file)]
        print("$", " ".join(command).replace(sys.executable, "python3"), flush=True)
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env()
        )
        assert self.process.stderr is not None
        self.url = ""
        for raw in self.process.stderr:
            if match := SERVING.search(raw.decode(errors="replace")):
                self.url = match[1]
                break
        if not self.url:
            self.stop()
            raise SystemExit(f"ctrlsock's HTTP listener did not start (exit {self.process.returncode})")
        # Its later log lines are drained, never left to fill the pipe and stall the server.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--command", default="version-get")
    parser.add_argument(
        "--auth", action="store_true", help="configure basic authentication on both listeners"
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="cs-b", dir="/tmp"))
    kea = start_kea(directory)
    extra: dict[str, object] = {}
    auth_args: list[str] = []
    password_file: Path | None = None
    if args.auth:
        password_file = directory / "password"
        password_file.write_text(PASSWORD + "\n")
        extra["authentication"] = {
            "type": "basic",
            "realm": "bench",
            "clients": [{"user": "admin", "password": PASSWORD}],
        }
        auth_args = ["--auth-user", "admin", "--auth-password-file", str(password_file)]
    agent = start_ctrl_agent(directory, kea.socket_path, extra=extra)
    ours: OurServer | None = None
    rounds: dict[str, list[dict[str, object]]] = {}
    try:
        ours = OurServer(directory, password_file)
        names = (
            "kea-dhcp4 2.2, unix socket",
            "kea-ctrl-agent 2.2 -> kea-dhcp4 2.2, HTTP keep-alive",
            "ctrlsock HTTP listener, keep-alive (ctrlsock serve --http)",
        )
        rounds = {name: [] for name in names}
        for number in range(args.rounds):
            print(f"# round {number + 1} of {args.rounds}", flush=True)
            rounds[names[0]].append(bench(str(kea.socket_path), [], args))
            rounds[names[1]].append(
                bench(f"http://127.0.0.1:{agent.port}", ["--service", "dhcp4", *auth_args], args)
            )
            rounds[names[2]].append(bench(ours.url, auth_args, args))
    finally:
        if ours is not None:
            ours.stop()
        agent.stop()
        kea.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"median of {args.rounds} rounds, {args.clients} clients, {args.duration} s each, {args.command}")
    print(f"{'target':<62} {'commands/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  (per round)")
    medians: dict[str, float] = {}
    for name, results in rounds.items():
        rates = [float(str(figures["commands_per_s"])) for figures in results]
        medians[name] = statistics.median(rates)
        p50 = statistics.median(float(_latency(figures)["p50"]) for figures in results)
        p99 = statistics.median(float(_latency(figures)["p99"]) for figures in results)
        errors = sum(int(str(figures["error_count"])) for figures in results)
        per_round = ", ".join(f"{rate:.0f}" for rate in rates)
        print(f"{name:<62} {medians[name]:>11.0f} {p50:>8.3f} {p99:>8.3f} {errors:>7}  ({per_round})")
    ratio = medians[names[2]] / medians[names[1]]
    print(f"\nctrlsock HTTP / kea-ctrl-agent: {ratio:.2f}x at {args.clients} clients")


def _latency(figures: dict[str, object]) -> dict[str, object]:
    latency = figures["latency_ms"]
    assert isinstance(latency, dict)
    return latency


if __name__ == "__main__":
    main()
