"""Benchmarks of the command channel: our server against a real Kea 2.2, measured in one run.

Closed loop, connection per command (connect, send, read to EOF, close), N client processes, the same load
generator for both servers. Also measures, beyond throughput: idle connections held, the
memory of replies to clients that do not read, and other clients' latency while one never reads.

    python3 tests/bench/server_bench.py throughput [--clients 1 8] [--duration 5] [--no-kea] [--engine thread]
    python3 tests/bench/server_bench.py idle [--connections 10000]
    python3 tests/bench/server_bench.py memory [--stuck 8] [--size-mib 16]
    python3 tests/bench/server_bench.py latency [--size-mib 64] [--duration 5]
    python3 tests/bench/server_bench.py slow [--engine thread asyncio] [--clients 2] [--duration 5]
    python3 tests/bench/server_bench.py stop [--grace 1.0]
    python3 tests/bench/server_bench.py nonreading [--stuck 40] [--size-mib 46] [--duration 5]
    python3 tests/bench/server_bench.py requests
    python3 tests/bench/server_bench.py overhead [--engine thread] [--clients 8] [--duration 5] [--rounds 3]
        [--command version-get]
        (metrics and hooks: a server without them against one with metrics and two audit hooks)
    python3 tests/bench/server_bench.py all [--clients 1 8] [--duration 5] [--rounds 3]
        (slow, stop, nonreading, requests, then throughput, in one run)

Run from the repository root (the package need not be installed). Prints plain lines; ``--json`` for one
JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ctrlsock.bench import run_bench  # noqa: E402 (after the sys.path line)

SERVER_CHILD = ROOT / "tests" / "children" / "server_daemon.py"


# --- the load generator ----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    clients: int
    duration: float
    commands: int
    errors: int
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def run_load(
    path: Path, *, clients: int, duration: float, label: str, command: str = "version-get"
) -> LoadResult:
    """``ctrlsock bench``'s load generator, so these figures and the CLI's are measured the same way."""
    result = run_bench(path, clients=clients, duration=duration, command=command)
    latency = result.latency_ms()

    def ms(key: str) -> float:
        value = latency[key]
        return float("nan") if value is None else value

    return LoadResult(
        label=label,
        clients=clients,
        duration=result.duration,
        commands=result.commands,
        errors=result.error_count + sum(n for code, n in result.results.items() if code != 0),
        per_second=result.commands_per_s,
        p50_ms=ms("p50"),
        p90_ms=ms("p90"),
        p99_ms=ms("p99"),
        max_ms=ms("max"),
    )


# --- servers under test ----------------------------------------------------------------------------------


@contextlib.contextmanager
def our_server(directory: Path, engine: str = "daemon", extra: tuple[str, ...] = ()) -> Iterator[Path]:
    """``ctrlsock serve`` (``daemon``: run_daemon on the main thread), or the thread/asyncio embeddings."""
    path = directory / "ours.sock"
    process = subprocess.Popen(
        [sys.executable, str(SERVER_CHILD), engine, str(path), *extra],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"our server did not start: {line!r}")
        yield path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def kea_server(directory: Path) -> Iterator[Path | None]:
    from tests.kea import kea_available, start_kea  # noqa: PLC0415

    if not kea_available():
        yield None
        return
    kea_dir = directory / "kea"
    kea_dir.mkdir()
    kea = start_kea(kea_dir)
    try:
        yield kea.socket_path
    finally:
        kea.terminate()


def _print(result: LoadResult) -> None:
    print(
        f"{result.label:<28} clients={result.clients:<3} {result.per_second:9.0f} cmd/s"
        f"  p50={result.p50_ms:6.2f}ms p90={result.p90_ms:6.2f}ms p99={result.p99_ms:6.2f}ms"
        f" max={result.max_ms:7.2f}ms errors={result.errors}",
        flush=True,
    )


def throughput(options: argparse.Namespace) -> dict[str, Any]:
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp:
        directory = Path(temp)
        with contextlib.ExitStack() as stack:
            targets: list[tuple[str, Path]] = []
            for engine in options.engine:
                engine_dir = directory / engine
                engine_dir.mkdir()
                targets.append((f"ctrlsock ({engine})", stack.enter_context(our_server(engine_dir, engine))))
            if not options.no_kea:
                kea_path = stack.enter_context(kea_server(directory))
                if kea_path is not None:
                    targets.append(("kea-dhcp4 2.2", kea_path))
                else:
                    print("kea-dhcp4 not installed: measuring ctrlsock only", flush=True)
            for round_number in range(options.rounds):
                for clients in options.clients:
                    for label, path in targets:
                        result = run_load(path, clients=clients, duration=options.duration, label=label)
                        result.label = f"{label} r{round_number + 1}"
                        results.append(result)
                        _print(result)
    summary: dict[str, Any] = {"results": [asdict(r) for r in results]}
    # Compare within a round: the machine's load drifts between rounds more than servers differ.
    kea = {(r.label.rsplit(" ", 1)[1], r.clients): r.per_second for r in results if r.label.startswith("kea")}
    ratios: dict[str, list[float]] = {}
    for result in results:
        key = (result.label.rsplit(" ", 1)[1], result.clients)
        if result.label.startswith("ctrlsock") and key in kea:
            ratio = result.per_second / kea[key]
            name = f"{result.label.rsplit(' ', 1)[0]} / kea, {result.clients} clients"
            ratios.setdefault(name, []).append(ratio)
    for name, values in ratios.items():
        shown = ", ".join(f"{v:.2f}x" for v in values)
        print(f"{name}: {shown} (median {sorted(values)[len(values) // 2]:.2f}x)", flush=True)
    summary["ratios"] = ratios
    return summary


# --- idle connections --------------------------------------------------------------------------------


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def idle(options: argparse.Namespace) -> dict[str, Any]:
    """Hold N idle connections open (accepted by the server) and time other clients meanwhile."""
    _raise_nofile()
    with (
        tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp,
        # A long idle timeout, so the idle clients stay connected for the whole measurement.
        our_server(Path(temp), "thread", ("--idle-timeout", "300")) as path,
    ):
        baseline = run_load(path, clients=2, duration=options.duration, label="baseline")
        _print(baseline)
        held: list[socket.socket] = []
        try:
            for _ in range(options.connections):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(path))
                held.append(sock)
            status = _ask(path, "status-get")["arguments"]
            print(f"idle connections held: {len(held)}; server reports {status['connections-open']} open")
            loaded = run_load(path, clients=2, duration=options.duration, label="with idle connections")
            _print(loaded)
            status = _ask(path, "status-get")["arguments"]
            print(f"after the load: server reports {status['connections-open']} open", flush=True)
        finally:
            for sock in held:
                sock.close()
    return {
        "held": len(held),
        "open_reported": status["connections-open"],
        "baseline": asdict(baseline),
        "loaded": asdict(loaded),
    }


def _ask(path: Path, command: str, arguments: Any = None, timeout: float = 30.0) -> dict[str, Any]:
    from tests.children.server_client import ask  # noqa: PLC0415

    return ask(path, command, arguments, timeout=timeout)


# --- memory with stuck readers -------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _server_pid(path: Path) -> int:
    return int(_ask(path, "status-get")["arguments"]["pid"])


def memory(options: argparse.Namespace) -> dict[str, Any]:
    size = options.size_mib * 1024 * 1024
    with (
        tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp,
        our_server(Path(temp), "thread", ("--idle-timeout", "300")) as path,
    ):
        pid = _server_pid(path)
        _ask(path, "blob", {"size": 1024})
        before = _rss_kib(pid)
        stuck: list[socket.socket] = []
        request = json.dumps({"command": "blob", "arguments": {"size": size}}).encode()
        try:
            for _ in range(options.stuck):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(str(path))
                sock.sendall(request)
                sock.recv(1)  # the reply has started: it is in flight now
                stuck.append(sock)
            _ask(path, "version-get")
            during = _rss_kib(pid)
        finally:
            for sock in stuck:
                sock.close()
    grown = (during - before) / 1024
    budget = 1.25 * options.stuck * options.size_mib
    print(
        f"{options.stuck} stuck readers of {options.size_mib} MiB replies: RSS grew {grown:.1f} MiB"
        f" (budget 1.25 x {options.stuck} x {options.size_mib} = {budget:.0f} MiB)",
        flush=True,
    )
    return {"stuck": options.stuck, "size_mib": options.size_mib, "grown_mib": grown, "budget_mib": budget}


# --- latency with a client that never reads a huge reply ------------------------------------------------


def latency(options: argparse.Namespace) -> dict[str, Any]:
    size = options.size_mib * 1024 * 1024
    with (
        tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp,
        our_server(Path(temp), "thread", ("--idle-timeout", "300")) as path,
    ):
        baseline = run_load(path, clients=options.clients[0], duration=options.duration, label="baseline")
        _print(baseline)
        request = json.dumps({"command": "blob", "arguments": {"size": size}}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(str(path))
            stuck.sendall(request)
            stuck.recv(1)
            loaded = run_load(
                path, clients=options.clients[0], duration=options.duration, label="one stuck 64 MiB reader"
            )
            _print(loaded)
    ratio = loaded.p99_ms / baseline.p99_ms
    print(f"p99 with a stuck reader / idle baseline: {ratio:.2f}x", flush=True)
    return {"baseline": asdict(baseline), "loaded": asdict(loaded), "p99_ratio": ratio}


# --- a slow handler -----------------------------------------------------------------------------------


def slow(options: argparse.Namespace) -> dict[str, Any]:
    """version-get's p99 while a 2 s blocking handler runs all the time, against its idle p99."""
    summary: dict[str, Any] = {}
    engines = [engine for engine in options.engine if engine != "daemon"] or ["thread", "asyncio"]
    for engine in engines:
        summary[engine] = _slow_one(engine, options)
    return summary


def _slow_one(engine: str, options: argparse.Namespace) -> dict[str, Any]:
    import threading  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp,
        our_server(Path(temp), engine, ("--idle-timeout", "300")) as path,
    ):
        idle_result = run_load(
            path, clients=options.clients[0], duration=options.duration, label=f"{engine} idle"
        )
        _print(idle_result)
        stopping = threading.Event()

        def keep_one_running() -> None:
            while not stopping.is_set():
                _ask(path, "sleep", {"seconds": 2.0}, timeout=60)

        sleeper = threading.Thread(target=keep_one_running, daemon=True)
        sleeper.start()
        while _ask(path, "status-get")["arguments"]["commands-running"] != 1:
            pass
        loaded = run_load(
            path, clients=options.clients[0], duration=options.duration, label=f"{engine} 2 s handler"
        )
        _print(loaded)
        stopping.set()
        sleeper.join()
    ratio = loaded.p99_ms / idle_result.p99_ms
    print(f"{engine}: version-get p99 with a 2 s handler running / idle: {ratio:.2f}x", flush=True)
    return {"idle": asdict(idle_result), "loaded": asdict(loaded), "p99_ratio": ratio}


# --- a bounded stop ------------------------------------------------------------------------------------


def bounded_stop(options: argparse.Namespace) -> dict[str, Any]:
    """How long stop() takes with a handler hung for 60 s, in both embeddings."""
    summary: dict[str, Any] = {}
    for kind in ("thread", "asyncio"):
        took = _stop_one(kind, options.grace)
        print(
            f"{kind}: stop() with a handler hung for 60 s took {took:.3f} s (grace {options.grace} s,"
            f" bound {options.grace + 0.5} s)",
            flush=True,
        )
        summary[kind] = {"seconds": took, "grace": options.grace}
    return summary


def _stop_one(kind: str, grace: float) -> float:
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from ctrlsock.server import ControlServer, ServerConfig  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp:
        path = Path(temp) / "stop.sock"
        server = ControlServer(path, config=ServerConfig(stop_grace=grace))
        release = threading.Event()

        @server.command("hang")
        def hang(arguments: Any, context: Any) -> None:
            release.wait(60)

        loop = None
        if kind == "thread":
            server.start_in_thread()
        else:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()
            asyncio.run_coroutine_threadsafe(server.start(handle_signals=False), loop).result(10)
        client = threading.Thread(target=_ask, args=(path, "hang"), kwargs={"timeout": 120}, daemon=True)
        client.start()
        while _ask(path, "status-get")["arguments"]["commands-running"] != 1:
            pass
        started = time.monotonic()
        if loop is None:
            server.stop()
        else:

            async def close() -> None:
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), loop).result(120)
        took = time.monotonic() - started
        client.join(10)
        release.set()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
    return took


# --- clients that never read a huge config-get -------------------------------------------------------


def nonreading(options: argparse.Namespace) -> dict[str, Any]:
    """N clients never read a config-get of ~SIZE MiB: peak RSS above idle, and version-get meanwhile."""
    import threading  # noqa: PLC0415

    target = options.size_mib * 1024 * 1024
    # A Kea-like shape: many subnets, each a small map, until the encoding reaches the size asked for.
    subnet = {
        "id": 0,
        "subnet": "10.0.0.0/24",
        "pools": [{"pool": "10.0.0.10 - 10.0.0.200"}],
        "comment": "x" * 900,
    }
    one = len(json.dumps(subnet, separators=(",", ":")))
    config = {"Dhcp4": {"subnet4": [dict(subnet, id=index) for index in range(target // one)]}}
    encoded = len(json.dumps({"result": 0, "arguments": config}, separators=(",", ":")).encode())
    with tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp:
        config_file = Path(temp) / "config.json"
        config_file.write_text(json.dumps(config))
        del config
        with our_server(
            Path(temp), "thread", ("--idle-timeout", "300", "--config", str(config_file))
        ) as path:
            pid = _server_pid(path)
            _ask(path, "version-get")
            idle_rss = _rss_kib(pid)
            peak = [idle_rss]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.005):
                    peak[0] = max(peak[0], _rss_kib(pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stuck: list[socket.socket] = []
            try:
                for _ in range(options.stuck):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    sock.connect(str(path))
                    sock.sendall(b'{"command": "config-get"}')
                    sock.recv(1)  # the reply has started: it is in flight now
                    stuck.append(sock)
                loaded = run_load(
                    path, clients=options.clients[0], duration=options.duration, label="40 non-readers"
                )
                _print(loaded)
            finally:
                sampling.set()
                sampler.join()
                for sock in stuck:
                    sock.close()
    above = (peak[0] - idle_rss) / 1024
    ratio = above * 1024 * 1024 / encoded
    print(
        f"{options.stuck} clients not reading a {encoded / 2**20:.1f} MiB config-get:"
        f" peak RSS {above:.1f} MiB above idle ({ratio:.2f}x the encoded config);"
        f" version-get p99 {loaded.p99_ms:.2f} ms",
        flush=True,
    )
    return {
        "encoded_mib": encoded / 2**20,
        "peak_above_idle_mib": above,
        "ratio": ratio,
        "loaded": asdict(loaded),
    }


# --- memory after large requests -----------------------------------------------------------------------


def large_requests(options: argparse.Namespace) -> dict[str, Any]:
    """RSS after one large config-set (the daemon then holds that config) and after twenty more."""
    subnets = [{"id": index, "subnet": f"10.{index // 256}.{index % 256}.0/24"} for index in range(30_000)]
    config = {"Dhcp4": {"subnet4": subnets}}
    with tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp:
        config_file = Path(temp) / "config.json"
        config_file.write_text(json.dumps({"Dhcp4": {}}))
        with our_server(Path(temp), "thread", ("--config", str(config_file))) as path:
            pid = _server_pid(path)
            size = len(json.dumps({"command": "config-set", "arguments": config}))
            assert _ask(path, "config-set", config)["result"] == 0
            _ask(path, "version-get")
            before = _rss_kib(pid)
            for index in range(20):
                config["Dhcp4"]["subnet4"][0]["id"] = index  # a new document each time, as a daemon gets
                assert _ask(path, "config-set", config)["result"] == 0
            _ask(path, "version-get")
            after = _rss_kib(pid)
    print(
        f"config-set requests of {size / 1e6:.1f} MB: RSS {before / 1024:.1f} MiB after the first,"
        f" {after / 1024:.1f} MiB after twenty more (idle again)",
        flush=True,
    )
    return {"request_mb": size / 1e6, "before_mib": before / 1024, "after_mib": after / 1024}


# --- the cost of metrics and hooks ---------------------------------------------------------------------


def overhead(options: argparse.Namespace) -> dict[str, Any]:
    """Throughput without metrics or hooks, and with metrics plus a before- and an after-hook, in one run.

    The servers run at once and each round measures each (in a rotating order, so none always runs last
    on a machine that warms up or cools down); the ratios are taken within a round.
    """
    engine = options.engine[0] if options.engine != ["daemon"] else "thread"
    variants = {"plain": ("--no-metrics",), "metrics": (), "metrics+hooks": ("--audit-hooks",)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    ratios: list[float] = []
    metrics_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="csb-", dir="/tmp") as temp, contextlib.ExitStack() as stack:
        paths: dict[str, Path] = {}
        for index, (name, extra) in enumerate(variants.items()):
            variant_dir = Path(temp) / str(index)
            variant_dir.mkdir()
            paths[name] = stack.enter_context(our_server(variant_dir, engine, extra))
        clients = options.clients[0]
        for round_number in range(options.rounds):
            order = list(variants)[round_number % 3 :] + list(variants)[: round_number % 3]
            measured: dict[str, float] = {}
            for name in order:
                result = run_load(
                    paths[name],
                    clients=clients,
                    duration=options.duration,
                    label=f"{name} r{round_number + 1}",
                    command=options.command,
                )
                _print(result)
                measured[name] = result.per_second
                rates[name].append(result.per_second)
            ratios.append(measured["metrics+hooks"] / measured["plain"])
            metrics_ratios.append(measured["metrics"] / measured["plain"])

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    medians = {name: median(values) for name, values in rates.items()}
    print(
        f"{options.command}, {engine}, {clients} clients, {options.rounds} rounds of {options.duration:g} s:"
        f" medians: plain {medians['plain']:.0f}/s, metrics {medians['metrics']:.0f}/s,"
        f" metrics+hooks {medians['metrics+hooks']:.0f}/s; per-round ratios to plain: metrics"
        f" {', '.join(f'{r:.3f}' for r in metrics_ratios)} (median {median(metrics_ratios):.3f}),"
        f" metrics+hooks {', '.join(f'{r:.3f}' for r in ratios)} (median {median(ratios):.3f})",
        flush=True,
    )
    return {
        "engine": engine,
        "clients": clients,
        "rates": rates,
        "medians": medians,
        "ratios": {"metrics": metrics_ratios, "metrics+hooks": ratios},
    }


# --- everything issue-level, in one run ---------------------------------------------------------------


def everything(options: argparse.Namespace) -> dict[str, Any]:
    """The slow-handler, bounded-stop, non-reading and throughput figures, measured one after another."""
    summary: dict[str, Any] = {}
    slow_options = argparse.Namespace(**{**vars(options), "clients": [2], "engine": ["thread", "asyncio"]})
    summary["slow"] = slow(slow_options)
    summary["stop"] = bounded_stop(options)
    nonreading_options = argparse.Namespace(**{**vars(options), "clients": [2], "stuck": 40, "size_mib": 46})
    summary["nonreading"] = nonreading(nonreading_options)
    summary["requests"] = large_requests(options)
    summary["throughput"] = throughput(options)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        choices=[
            "throughput",
            "idle",
            "memory",
            "latency",
            "slow",
            "stop",
            "nonreading",
            "requests",
            "overhead",
            "all",
        ],
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--engine", nargs="+", default=["daemon"], choices=["daemon", "thread", "asyncio"])
    parser.add_argument("--no-kea", action="store_true")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--stuck", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--command", default="version-get")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    runner = {
        "throughput": throughput,
        "idle": idle,
        "memory": memory,
        "latency": latency,
        "slow": slow,
        "stop": bounded_stop,
        "nonreading": nonreading,
        "requests": large_requests,
        "overhead": overhead,
        "all": everything,
    }[options.what]
    summary = runner(options)
    if options.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
