"""Framing throughput of ``JsonFeed`` on a 50 MiB Kea-style ``config-set`` request (goal: >= 50 MB/s).

Run: ``python3 tests/bench/framer.py [--size-mib 50] [--chunk 65536] [--repeat 3]``. Prints MB/s for
framing alone (fed in recv-sized chunks and in one piece), and for ``decode_request`` for comparison.
Not a test: timings on a shared machine are figures to report, never assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctrlsock.protocol import JsonFeed, decode_request


def make_request(size: int, *, escapes: bool) -> bytes:
    """A config-set shaped like a big Kea config: subnets, pools, host reservations, option data."""
    subnets = []
    total = 0
    index = 0
    while total < size:
        a, b = index // 256 % 256, index % 256
        hostname = 'host\\"quoted\\"' if escapes else "host"
        subnet = {
            "id": index + 1,
            "subnet": f"10.{a}.{b}.0/24",
            "pools": [{"pool": f"10.{a}.{b}.10 - 10.{a}.{b}.200"}],
            "reservations": [
                {
                    "hw-address": f"aa:bb:cc:{a:02x}:{b:02x}:{j:02x}",
                    "ip-address": f"10.{a}.{b}.{j + 2}",
                    "hostname": f"{hostname}-{index}-{j}",
                }
                for j in range(3)
            ],
            "option-data": [{"name": "routers", "data": f"10.{a}.{b}.1"}],
            "user-context": {"comment": "generated [for] {the} benchmark # not a comment // either"},
        }
        text = json.dumps(subnet)
        subnets.append(text)
        total += len(text) + 2
        index += 1
    body = ", ".join(subnets)
    return ('{"command": "config-set", "arguments": {"Dhcp4": {"subnet4": [' + body + "]}}}").encode()


def frame(request: bytes, chunk: int) -> float:
    feed = JsonFeed(max_size=len(request) + 1)
    view = memoryview(request)
    start = time.perf_counter()
    document = None
    for offset in range(0, len(request), chunk):
        feed.receive_data(view[offset : offset + chunk])
        document = feed.next_document()
        if document is not None:
            break
    elapsed = time.perf_counter() - start
    assert document is not None and len(document) == len(request)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=float, default=50)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size_mib * 1024 * 1024)
    for escapes in (False, True):
        request = make_request(size, escapes=escapes)
        mb = len(request) / 1e6
        label = "with escapes" if escapes else "plain"
        for chunk in (args.chunk, len(request)):
            best = min(frame(request, chunk) for _ in range(args.repeat))
            mib = len(request) / 2**20
            print(f"frame {label:12} {mib:6.1f} MiB, chunks of {chunk:>9}: {mb / best:7.1f} MB/s")
        start = time.perf_counter()
        decode_request(request)
        elapsed = time.perf_counter() - start
        print(f"decode_request {label:12} {len(request) / 2**20:6.1f} MiB: {mb / elapsed:7.1f} MB/s")


if __name__ == "__main__":
    main()
