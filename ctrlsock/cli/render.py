"""What the command line prints: human lines (escaped, coloured on a terminal) and JSON (exact).

Human output escapes every character a terminal would act on, the way ``ls`` quotes file names: a file
name or a holder record is written by whoever created it, and an escape sequence or a line break in it
must not rewrite, recolour or forge a line on an admin's terminal. JSON output is never escaped beyond
JSON's own rules: scripts get the exact values.
"""

from __future__ import annotations

import os
import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TextIO

from ctrlsock.cli.paths import PROG

if TYPE_CHECKING:
    from ctrlsock.bench import BenchResult
    from ctrlsock.probe import ProbeReport
    from ctrlsock.recover import Action

__all__ = [
    "Painter",
    "StatusFormat",
    "error_line",
    "escape",
    "format_time",
    "render_action",
    "render_bench",
    "render_report",
    "write_json",
]


class StatusFormat(StrEnum):
    """``status --format`` choices: lines for people, JSON for scripts, Prometheus for scrapers."""

    TEXT = "text"
    JSON = "json"
    PROMETHEUS = "prometheus"


_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# os.fsdecode() turns each byte of a file name that is not UTF-8 into one of these lone surrogates.
_SURROGATE_ESCAPE_FIRST: Final = 0xDC80
_SURROGATE_ESCAPE_LAST: Final = 0xDCFF


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if _SURROGATE_ESCAPE_FIRST <= code <= _SURROGATE_ESCAPE_LAST:
        return f"\\x{code - 0xDC00:02x}"  # the original byte
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: object) -> str:
    """``text`` with control and other unprintable characters as backslash escapes (``\\x1b``, ``\\n``).

    A backslash itself becomes ``\\\\``, so the escaped text reads back unambiguously. Printable
    characters of any script are kept; format characters such as the bidirectional overrides are not.
    """
    value = str(text)
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(char if char.isprintable() and char != "\\" else _escape_char(char) for char in value)


class Painter:
    """ANSI colour on a terminal only (never when piped, never with ``NO_COLOR`` or ``TERM=dumb``)."""

    _CODES: Final = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "magenta": "35",
        "cyan": "36",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> Painter:
        isatty = getattr(stream, "isatty", None)
        enabled = bool(
            isatty is not None
            and isatty()
            and "NO_COLOR" not in os.environ
            and os.environ.get("TERM", "") != "dumb"
        )
        return cls(enabled)

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(self._CODES[style] for style in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


_STATE_STYLE: Final = {
    "running": ("bold", "green"),
    "stopped": ("bold",),
    "stopping": ("bold", "cyan"),
    "stale": ("bold", "yellow"),
    "stuck": ("bold", "red"),
    "foreign": ("bold", "magenta"),
    "unlinked": ("bold", "red"),
    "not-a-socket": ("bold", "magenta"),
    "unknown": ("bold", "red"),
}
_HOLDER_STATUS_STYLE: Final = {
    "running": ("green",),
    "stopped": ("yellow",),
    "zombie": ("red",),
    "dead": ("red",),
}
_ACTION_STYLE: Final = {
    "removed": ("bold", "green"),
    "cleared": ("green",),
    "terminated": ("bold", "yellow"),
    "killed": ("bold", "yellow"),
    "refused": ("bold", "red"),
    "kept": ("yellow",),
}


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def value_of(obj: Any, name: str) -> str:
    """An attribute that is an enum member or a plain value, as text."""
    value = getattr(obj, name)
    return str(getattr(value, "value", value))


def render_report(report: ProbeReport, paint: Painter) -> list[str]:
    """A probe report as a few lines an admin reads at a glance: the state, the holders, the problems."""
    state = value_of(report, "state")
    head = f"{paint(escape(report.socket_path), 'bold')}  {paint(state, *_STATE_STYLE.get(state, ()))}"
    if report.answer_ms is not None:
        head += f"  answered in {report.answer_ms:.1f} ms"
    lines = [head]
    for holder in report.holders:
        status = escape(value_of(holder, "status"))
        since = f"since {format_time(holder.since)}" if holder.since is not None else ""
        fields = [
            f"pid {holder.pid:<7}",
            f"{escape(holder.program or '?'):<15}",
            paint(f"{status:<7}", *_HOLDER_STATUS_STYLE.get(status, ())),
            f"{since:<25}" if since else " " * 25,
            escape(value_of(holder, "how")),
        ]
        lines.append("    " + "  ".join(fields).rstrip())
    lines.extend(f"    {paint('!', 'yellow')} {escape(problem)}" for problem in report.problems)
    return lines


def render_action(action: Action, paint: Painter) -> str:
    """``PATH: what: why``, one line per path touched, refused or left."""
    what_text = value_of(action, "what")
    what = paint(escape(what_text), *_ACTION_STYLE.get(what_text, ("cyan",)))
    path = escape(action.path)
    return f"{path}: {what}: {escape(action.reason)}" if action.reason else f"{path}: {what}"


def render_bench(result: BenchResult, paint: Painter) -> list[str]:
    latency = result.latency_ms()

    def ms(key: str) -> str:
        value = latency[key]
        return "-" if value is None else f"{value:.3f}"

    results = "  ".join(f"{code}: {count}" for code, count in sorted(result.results.items())) or "-"
    kinds = [f"{kind} {count}" for kind, count in sorted(result.errors.items())]
    if result.unexpected_results:
        kinds.append(f"not result {result.expect_result}: {result.unexpected_results}")
    errors = ", ".join(kinds)
    return [
        f"{paint(escape(result.socket_path), 'bold')}  {escape(result.command)}, {result.clients} clients, "
        f"{result.duration:.2f} s",
        f"    commands    {result.commands} ({paint(f'{result.commands_per_s:.1f}/s', 'bold')})",
        f"    latency ms  p50 {ms('p50')}  p90 {ms('p90')}  p99 {ms('p99')}  max {ms('max')}",
        f"    errors      {paint(str(result.error_count), 'red') if result.error_count else '0'}"
        + (f" ({escape(errors)})" if errors else ""),
        f"    results     {results}",
    ]


def write_json(document: Any) -> None:
    import json  # noqa: PLC0415  (only --json pays for it)

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def write_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def error_line(message: str) -> None:
    """``ctrlsock: MESSAGE`` on stderr, escaped: a message may quote a file name or a peer's words."""
    sys.stderr.write(f"{PROG}: {escape(message)}\n")
    sys.stderr.flush()
