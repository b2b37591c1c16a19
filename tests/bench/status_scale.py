"""How ``ctrlsock status`` of a healthy daemon scales with the number of processes on the host.

Run: ``python3 tests/bench/status_scale.py [--extra 2000] [--runs 40]``. Needs ``hyperfine``. Starts a real
``ctrlsock serve`` on a temporary socket, then times ``python3 -c pass`` and ``ctrlsock status SOCK`` with
hyperfine, first with no extra processes and then with ``--extra`` idle ``sleep`` processes, and prints the
medians and the two ratios that matter: status with the extra processes against status without them, and
status against a bare interpreter. Not a test: timings on a shared machine are figures to report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_server(socket_path: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "ctrlsock", "serve", str(socket_path)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [sys.executable, "-m", "ctrlsock", "status", str(socket_path)], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return server
        time.sleep(0.1)
    server.kill()
    raise SystemExit("ctrlsock serve did not come up")


def medians(commands: list[str], runs: int, export: Path) -> list[tuple[float, float]]:
    """Each command's median wall time and mean CPU time (user + system), in ms."""
    subprocess.run(
        ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", str(export), *commands],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    results = json.loads(export.read_text())["results"]
    return [(float(r["median"]) * 1000, (float(r["user"]) + float(r["system"])) * 1000) for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", type=int, default=2000, help="idle processes to add (default 2000)")
    parser.add_argument("--runs", type=int, default=40)
    options = parser.parse_args()
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine is needed: apt-get install hyperfine")
    directory = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    socket_path = directory / "bench.sock"
    server = start_server(socket_path)
    ctrlsock = shutil.which("ctrlsock") or f"{sys.executable} -m ctrlsock"
    commands = [f"{sys.executable} -c pass", f"{ctrlsock} status {socket_path}"]
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        bare, alone = medians(commands, options.runs, directory / "none.json")
        sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(options.extra)]
        bare_crowded, crowded = medians(commands, options.runs, directory / "crowded.json")
    finally:
        for sleeper in sleepers:
            sleeper.send_signal(signal.SIGKILL)
        for sleeper in sleepers:
            sleeper.wait()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"processes on the host now: {len(os.listdir('/proc'))} entries in /proc")
    print(f"{'':34}{'no extra':>18}{f'+{options.extra} idle':>18}")
    for name, (wall, cpu), (wall_crowded, cpu_crowded) in (
        ("python3 -c pass", bare, bare_crowded),
        ("ctrlsock status SOCK", alone, crowded),
    ):
        print(
            f"{name + ' (wall / cpu ms)':34}"
            f"{wall:10.1f} / {cpu:5.1f}{wall_crowded:10.1f} / {cpu_crowded:5.1f}"
        )
    print(
        f"status with +{options.extra} / without: {crowded[0] / alone[0]:.2f}x wall, "
        f"{crowded[1] / alone[1]:.2f}x cpu; python3 -c pass alone: {bare_crowded[0] / bare[0]:.2f}x wall"
    )
    print(
        f"status / python3 -c pass: {alone[0] / bare[0]:.2f}x wall (no extra), "
        f"{crowded[0] / bare_crowded[0]:.2f}x wall (crowded)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
