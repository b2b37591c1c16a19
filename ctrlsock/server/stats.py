"""The server's counters, for ``status-get``: connections, bytes, and per command results and latency.

Kept cheap: plain integers. The connection and byte counters are written only by the engine's I/O thread;
the per-command counters are written by whichever thread ran the command (the I/O thread for inline
built-ins, a worker for handlers), so they take one uncontended lock per command.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Final

__all__ = ["LATENCY_BUCKETS", "UNKNOWN_COMMAND", "CommandStats", "ServerStats", "result_of"]

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency histogram; Prometheus client libraries' defaults, extended down
to 0.5 ms because a built-in answers in tens of microseconds."""

UNKNOWN_COMMAND: Final = "(unknown)"
"""The name unsupported commands are counted under: a client chooses the name, so counting each one apart
would let any client grow the server's memory (and a scraper's series) without bound."""

_RESULT_PREFIX: Final = b'{"result":'
_DIGIT_AT: Final = len(_RESULT_PREFIX)
_ENDS: Final = b",}"
_ZERO: Final = ord("0")


def result_of(reply: bytes) -> int:
    """The result code of an encoded reply (``{"result":N,...}`` as the protocol module writes it)."""
    if not reply.startswith(_RESULT_PREFIX):
        return -1
    if len(reply) > _DIGIT_AT + 1 and reply[_DIGIT_AT + 1] in _ENDS:
        digit = reply[_DIGIT_AT] - _ZERO  # a one-digit code: every Kea result code
        if 0 <= digit <= 9:
            return digit
    end = _DIGIT_AT
    while end < len(reply) and reply[end] not in _ENDS:
        end += 1
    try:
        return int(reply[_DIGIT_AT:end])
    except ValueError:
        return -1


_KNOWN_RESULTS: Final = 8
"""Result codes 0..7 are counted in a list (Kea's are 0..5); others in a dict."""


class _Command:
    __slots__ = ("buckets", "count", "other_results", "results", "sum")

    def __init__(self) -> None:
        self.results = [0] * _KNOWN_RESULTS
        self.other_results: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.sum = 0.0
        self.count = 0

    def add(self, other: _Command) -> None:
        self.results = [a + b for a, b in zip(self.results, other.results, strict=True)]
        for code, n in other.other_results.items():
            self.other_results[code] = self.other_results.get(code, 0) + n
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.sum += other.sum
        self.count += other.count

    def by_result(self) -> dict[int, int]:
        counts = {code: n for code, n in enumerate(self.results) if n}
        counts.update(self.other_results)
        return counts


def _count(by_name: dict[str, _Command], name: str, result: int, seconds: float) -> None:
    command = by_name.get(name)
    if command is None:
        command = by_name[name] = _Command()
    if 0 <= result < _KNOWN_RESULTS:
        command.results[result] += 1
    else:
        command.other_results[result] = command.other_results.get(result, 0) + 1
    command.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    command.sum += seconds
    command.count += 1


class CommandStats:
    """Per command: replies by result code and a latency histogram (seconds from dispatch to result)."""

    __slots__ = ("_by_name", "_io_by_name", "_lock")

    def __init__(self) -> None:
        self._by_name: dict[str, _Command] = {}  # commands run in workers: under the lock
        self._io_by_name: dict[str, _Command] = {}  # commands run on the I/O thread: only it writes
        self._lock = threading.Lock()

    def record(self, name: str, result: int, seconds: float) -> None:
        """Count one command's result and latency; callable from any thread."""
        with self._lock:
            _count(self._by_name, name, result, seconds)

    def record_on_io_thread(self, name: str, result: int, seconds: float) -> None:
        """:meth:`record` for the I/O thread (the only writer of its own map: no lock on the hot path)."""
        _count(self._io_by_name, name, result, seconds)

    def _merged(self) -> dict[str, _Command]:
        merged: dict[str, _Command] = {}
        with self._lock:
            sources = [dict(self._io_by_name), dict(self._by_name)]
        for source in sources:
            for name, command in source.items():
                into = merged.get(name)
                if into is None:
                    into = merged[name] = _Command()
                into.add(command)
        return merged

    def as_dict(self) -> dict[str, dict[str, object]]:
        """Per command name: ``results`` (count by result code) and ``duration`` (``buckets`` by upper
        bound, cumulative as Prometheus has them, then ``sum`` and ``count``)."""
        out: dict[str, dict[str, object]] = {}
        for name, command in sorted(self._merged().items()):
            cumulative = 0
            buckets: dict[str, int] = {}
            for bound, n in zip((*map(repr, LATENCY_BUCKETS), "+Inf"), command.buckets, strict=True):
                cumulative += n
                buckets[bound] = cumulative
            out[name] = {
                "results": {str(code): n for code, n in sorted(command.by_result().items())},
                "duration": {"buckets": buckets, "sum": command.sum, "count": command.count},
            }
        return out


class ServerStats:
    """Counters for ``status-get``. Written by the engine's thread (commands: see :class:`CommandStats`);
    read from anywhere."""

    __slots__ = (
        "accepted",
        "bytes_received",
        "bytes_sent",
        "commands",
        "dropped",
        "dropped_slow",
        "http_refused",
        "open",
        "refused",
        "running",
        "served",
        "timed_out",
        "tls_failed",
        "waiting",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.served = 0
        self.dropped = 0  # every reply given up on, whatever the reason
        self.dropped_slow = 0  # of which: no write progress within the write deadline
        self.timed_out = 0  # answered with a timeout: idle, or the request deadline passed
        self.refused = 0  # refused for a limit (max_buffered)
        self.http_refused = 0  # HTTP requests answered with an error status (400, 401, 405, 408, 413, ...)
        self.tls_failed = 0  # TLS handshakes that failed (no client certificate, a bad one, not TLS)
        self.open = 0
        self.running = 0  # user handlers running (a hung one counts until it returns)
        self.waiting = 0  # commands queued behind them
        self.bytes_received = 0
        self.bytes_sent = 0
        self.commands = CommandStats()

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "served": self.served,
            "dropped": self.dropped,
            "open": self.open,
            "running": self.running,
            "waiting": self.waiting,
        }

    def extension(self) -> dict[str, object]:
        """The ``ctrlsock`` extension map of ``status-get``."""
        return {
            "connections": {
                "open": self.open,
                "accepted": self.accepted,
                "served": self.served,
                "dropped": self.dropped,
                "dropped-slow-reader": self.dropped_slow,
                "timed-out": self.timed_out,
                "refused-limit": self.refused,
                "http-refused": self.http_refused,
                "tls-failed": self.tls_failed,
            },
            "bytes": {"received": self.bytes_received, "sent": self.bytes_sent},
            "handlers": {"running": self.running, "waiting": self.waiting},
            "commands": self.commands.as_dict(),
        }
