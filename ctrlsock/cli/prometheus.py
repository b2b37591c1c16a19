"""``status --format prometheus``: the Prometheus text exposition format, version 0.0.4.

For scrapers and node_exporter's textfile collector. No I/O here: :func:`render_prometheus` turns probe
reports and the replies already fetched into text. The format is small enough to write by hand
(https://prometheus.io/docs/instrumenting/exposition_formats/), which keeps ``prometheus_client`` out of
the runtime dependencies and out of ``status``'s start-up.

Every family is written whole (HELP, TYPE, then all its samples) before the next one: the format allows
no interleaving. Each sample carries a ``socket`` label, the socket path as given to the probe.

``status-get`` keys with a known meaning (Kea's ``pid``, ``uptime``, ``reload``; ctrlsock's connection and
command counts, and the ``ctrlsock`` extension map's per-command results, latency histograms, byte and
connection counters) get metrics of their own; any other number in it, nested maps included, is a
``ctrlsock_daemon_status_value`` with its key path as ``name``, so numbers a daemon adds later are
exported without a change here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ctrlsock.probe import ProbeReport, State

__all__ = [
    "CONTENT_TYPE",
    "Family",
    "MetricType",
    "SocketMetrics",
    "escape_label_value",
    "format_value",
    "metric_families",
    "render_prometheus",
]

#: What an HTTP server would send this text as.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Labels = tuple[tuple[str, str], ...]
Number = int | float


class MetricType(StrEnum):
    """The TYPE words of the text format that this renderer writes."""

    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass
class Family:
    """One metric family: its name, type, help text and samples, written together."""

    name: str
    type: MetricType
    help: str
    samples: list[tuple[Labels, Number]] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)  # per sample: "" or a histogram's _bucket/_sum/_count
    _seen: set[tuple[str, Labels]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"metric name {self.name!r} does not match {_METRIC_NAME.pattern}")
        # promtool's lint: a counter's name ends in _total, anything else's does not.
        if (self.type == MetricType.COUNTER) != self.name.endswith("_total"):
            raise ValueError(f"metric name {self.name!r} does not suit a {self.type}")

    def add(self, labels: Labels, value: Number, suffix: str = "") -> None:
        for name, _ in labels:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} does not match {_LABEL_NAME.pattern}")
        # A second sample with the same labels would make Prometheus refuse the whole scrape; the
        # first wins (nested status-get keys {"a.b": 1, "a": {"b": 2}} both read "a.b", for one).
        if (suffix, labels) not in self._seen:
            self._seen.add((suffix, labels))
            self.samples.append((labels, value))
            self.suffixes.append(suffix)


@dataclass(frozen=True)
class SocketMetrics:
    """What is known about one socket: its probe report and the replies of the commands sent to it.

    Attributes:
        report: the probe's report.
        status: ``status-get``'s ``arguments``, when it was sent and succeeded.
        statistics: a Kea daemon's ``statistic-get-all`` ``arguments``, when sent and succeeded.
        commands: each command sent for metrics that the daemon supports, and whether it succeeded
            (result 0 with a map).
    """

    report: ProbeReport
    status: Mapping[str, object] | None = None
    statistics: Mapping[str, object] | None = None
    commands: Mapping[str, bool] = field(default_factory=dict)


# status-get keys with a meaning of their own, Kea's and ctrlsock's: (key, metric, type, help).
_STATUS_METRICS: Final[tuple[tuple[str, str, MetricType, str], ...]] = (
    ("pid", "ctrlsock_daemon_pid", MetricType.GAUGE, "Process id the daemon reports in status-get."),
    ("uptime", "ctrlsock_daemon_uptime_seconds", MetricType.GAUGE, "Seconds since the daemon started."),
    (
        "reload",
        "ctrlsock_daemon_since_reload_seconds",
        MetricType.GAUGE,
        "Seconds since the daemon last applied its configuration.",
    ),
    (
        "connections-served",
        "ctrlsock_daemon_connections_served_total",
        MetricType.COUNTER,
        "Control connections the daemon has answered since it started.",
    ),
    (
        "replies-dropped",
        "ctrlsock_daemon_replies_dropped_total",
        MetricType.COUNTER,
        "Replies the daemon dropped because the client read too slowly or not at all.",
    ),
    (
        "connections-open",
        "ctrlsock_daemon_connections_open",
        MetricType.GAUGE,
        "Control connections open at the daemon, this one included.",
    ),
    (
        "commands-running",
        "ctrlsock_daemon_commands_running",
        MetricType.GAUGE,
        "Commands whose handler is running.",
    ),
    (
        "commands-waiting",
        "ctrlsock_daemon_commands_waiting",
        MetricType.GAUGE,
        "Commands queued behind running handlers.",
    ),
)
_KNOWN_STATUS_KEYS: Final = frozenset(key for key, *_ in _STATUS_METRICS)

EXTENSION_KEY: Final = "ctrlsock"
"""The key of a ctrlsock daemon's own map in ``status-get`` (Kea's clients ignore keys they do not know)."""

# Counters of the extension map: (path, metric, help). Its open/served/dropped/handler numbers repeat the
# flat keys above and are not exported twice.
_EXTENSION_COUNTERS: Final[tuple[tuple[tuple[str, str], str, str], ...]] = (
    (
        ("connections", "accepted"),
        "ctrlsock_daemon_connections_accepted_total",
        "Control connections the daemon has accepted since it started.",
    ),
    (
        ("connections", "dropped-slow-reader"),
        "ctrlsock_daemon_connections_dropped_slow_reader_total",
        "Replies dropped because the client made no read progress within the write deadline.",
    ),
    (
        ("connections", "timed-out"),
        "ctrlsock_daemon_connections_timed_out_total",
        "Connections answered with a timeout: idle, or the request not whole within its deadline.",
    ),
    (
        ("connections", "refused-limit"),
        "ctrlsock_daemon_connections_refused_total",
        "Requests or replies refused because the server held too much data for clients.",
    ),
    (("bytes", "received"), "ctrlsock_daemon_bytes_received_total", "Bytes the daemon read from clients."),
    (("bytes", "sent"), "ctrlsock_daemon_bytes_sent_total", "Bytes the daemon wrote to clients."),
)
_EXTENSION_PATHS: Final = frozenset(path for path, *_ in _EXTENSION_COUNTERS) | {
    ("connections", "open"),
    ("connections", "served"),
    ("connections", "dropped"),
    ("handlers", "running"),
    ("handlers", "waiting"),
}


def escape_label_value(value: str) -> str:
    r"""A label value as the format requires: ``\`` → ``\\``, ``"`` → ``\"``, newline → ``\n``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Number) -> str:
    """A sample value as the format writes it: Go's float syntax, ``+Inf``, ``-Inf``, ``NaN``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _text(value: object) -> str:
    """A path or name as text UTF-8 can carry: a lone surrogate becomes a backslash escape.

    ``os.fsdecode`` turns each byte of a file name that is not UTF-8 into a surrogate U+DC80..U+DCFF,
    written back as that byte's ``\\xNN``; any other lone surrogate (JSON allows them) as ``\\uNNNN``.
    """
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_surrogate_escape(char) for char in text)
    return text


def _surrogate_escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def _number(value: object) -> Number | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def _kea_value(samples: object) -> Number | None:
    """The newest value of a Kea statistic, ``[[value, "timestamp"], ...]`` newest first; None if none."""
    if isinstance(samples, list) and samples and isinstance(samples[0], list) and samples[0]:
        value = samples[0][0]
        return None if isinstance(value, bool) else _number(value)
    return None


def _flatten(prefix: str, value: object) -> Iterable[tuple[str, Number]]:
    number = _number(value)
    if number is not None:
        yield prefix, number
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)


class _ExtensionFamilies:
    """The families read from the extension map, filled socket by socket."""

    def __init__(self) -> None:
        self.counters = {
            path: Family(name, MetricType.COUNTER, text) for path, name, text in _EXTENSION_COUNTERS
        }
        self.commands = Family(
            "ctrlsock_daemon_commands_total",
            MetricType.COUNTER,
            "Commands the daemon answered, by command and result code (unsupported names as (unknown)).",
        )
        self.duration = Family(
            "ctrlsock_daemon_command_duration_seconds",
            MetricType.HISTOGRAM,
            "Seconds from a command's dispatch to its result, by command.",
        )

    def families(self) -> list[Family]:
        return [self.commands, self.duration, *self.counters.values()]

    def add(self, socket: Labels, extension: Mapping[str, object], other: Family) -> None:
        """Add the extension's known numbers; any other number goes to ``other`` by its key path."""
        for key, value in sorted(extension.items()):
            if key == "commands" and isinstance(value, Mapping):
                self._add_commands(socket, value)
                continue
            if isinstance(value, Mapping):
                for inner_key, inner in sorted(value.items()):
                    path = (str(key), str(inner_key))
                    number = _number(inner)
                    if path in self.counters and number is not None:
                        self.counters[path].add(socket, number)
                    elif path not in _EXTENSION_PATHS:
                        for name, found in _flatten(f"{EXTENSION_KEY}.{key}.{inner_key}", inner):
                            other.add((*socket, ("name", _text(name))), found)
                continue
            for name, found in _flatten(f"{EXTENSION_KEY}.{key}", value):
                other.add((*socket, ("name", _text(name))), found)

    def _add_commands(self, socket: Labels, commands: Mapping[str, object]) -> None:
        for command, counts in sorted(commands.items()):
            if not isinstance(counts, Mapping):
                continue
            labels: Labels = (*socket, ("command", _text(command)))
            results = counts.get("results")
            if isinstance(results, Mapping):
                for result, n in sorted(results.items()):
                    number = _number(n)
                    if number is not None:
                        self.commands.add((*labels, ("result", _text(result))), number)
            duration = counts.get("duration")
            if isinstance(duration, Mapping):
                self._add_histogram(labels, duration)

    def _add_histogram(self, labels: Labels, duration: Mapping[str, object]) -> None:
        buckets = duration.get("buckets")
        total, count = _number(duration.get("sum")), _number(duration.get("count"))
        if not isinstance(buckets, Mapping) or total is None or count is None or "+Inf" not in buckets:
            return  # a histogram without its +Inf bucket, sum or count is not one Prometheus takes
        for bound, n in buckets.items():
            number = _number(n)
            if number is not None:
                self.duration.add((*labels, ("le", _text(bound))), number, "_bucket")
        self.duration.add(labels, total, "_sum")
        self.duration.add(labels, count, "_count")


def metric_families(items: Sequence[SocketMetrics]) -> list[Family]:
    """The families for ``items``, in the order they are written; families without samples left out."""
    state = Family(
        "ctrlsock_socket_state",
        MetricType.GAUGE,
        "The socket's state: 1 for the state the probe found, 0 for every other state.",
    )
    answered = Family(
        "ctrlsock_socket_answered", MetricType.GAUGE, "Whether the socket answered the probe's list-commands."
    )
    answer = Family(
        "ctrlsock_socket_answer_seconds",
        MetricType.GAUGE,
        "How long the socket took to answer the probe's list-commands.",
    )
    holders = Family(
        "ctrlsock_socket_holder_info",
        MetricType.GAUGE,
        "A process holding the socket's lock or listening socket, or named by its holder record.",
    )
    problems = Family(
        "ctrlsock_socket_problems", MetricType.GAUGE, "How many problems the probe found with the socket."
    )
    command_ok = Family(
        "ctrlsock_socket_command_success",
        MetricType.GAUGE,
        "Whether a command sent for these metrics succeeded (1) or failed (0); absent if unsupported.",
    )
    status_families = {key: Family(name, kind, text) for key, name, kind, text in _STATUS_METRICS}
    status_other = Family(
        "ctrlsock_daemon_status_value",
        MetricType.GAUGE,
        "Any other number in the daemon's status-get reply, by its key (nested keys joined with dots).",
    )
    extension = _ExtensionFamilies()
    kea = Family(
        "ctrlsock_kea_statistic",
        MetricType.GAUGE,
        "A Kea statistic's newest value, from statistic-get-all, by its Kea name.",
    )

    for item in items:
        report = item.report
        socket: Labels = (("socket", _text(report.socket_path)),)
        for each in State:
            state.add((*socket, ("state", each.value)), int(report.state == each))
        answered.add(socket, int(report.answer_ms is not None))
        if report.answer_ms is not None:
            answer.add(socket, report.answer_ms / 1000.0)
        for holder in report.holders:
            labels: Labels = (
                *socket,
                ("pid", str(holder.pid)),
                ("program", _text(holder.program or "")),
                ("how", str(holder.how)),
            )
            holders.add(labels, 1)
        problems.add(socket, len(report.problems))
        for command, ok in sorted(item.commands.items()):
            command_ok.add((*socket, ("command", command)), int(ok))
        if item.status is not None:
            for key, family in status_families.items():
                number = _number(item.status.get(key))
                if number is not None:
                    family.add(socket, number)
            for key, value in sorted(item.status.items()):
                if key in _KNOWN_STATUS_KEYS:
                    continue
                if key == EXTENSION_KEY and isinstance(value, Mapping):
                    extension.add(socket, value, status_other)
                    continue
                for name, number in _flatten(str(key), value):
                    status_other.add((*socket, ("name", _text(name))), number)
        if item.statistics is not None:
            for name, samples in sorted(item.statistics.items()):
                value = _kea_value(samples)
                if value is not None:
                    kea.add((*socket, ("name", _text(name))), value)

    families = [state, answered, answer, holders, problems, command_ok, *status_families.values()]
    families += [*extension.families(), status_other, kea]
    return [family for family in families if family.samples]


def render_family(family: Family) -> list[str]:
    lines = [f"# HELP {family.name} {_escape_help(family.help)}", f"# TYPE {family.name} {family.type}"]
    for (labels, value), suffix in zip(family.samples, family.suffixes, strict=True):
        inside = ",".join(f'{name}="{escape_label_value(text)}"' for name, text in labels)
        name = f"{family.name}{suffix}{{{inside}}}" if labels else f"{family.name}{suffix}"
        lines.append(f"{name} {format_value(value)}")
    return lines


def render_prometheus(items: Sequence[SocketMetrics]) -> str:
    """The text exposition format (0.0.4) for ``items``, ending in a newline (empty when no items)."""
    return "".join(f"{line}\n" for family in metric_families(items) for line in render_family(family))
