"""``ctrlsock status --format prometheus``: the text exposition format (0.0.4), checked by promtool.

The renderer is tested from hand-built probe reports (tables, and Hypothesis for label escaping) with a
strict reader of the format written here; the whole command is tested against real daemons (running,
stale after SIGKILL, stuck under SIGSTOP, a real kea-dhcp4) with ``promtool check metrics``, which
parses the output exactly as Prometheus does and lints its names.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.cli import ExitCode
from ctrlsock.cli.actions import gather_metrics
from ctrlsock.cli.prometheus import (
    Family,
    MetricType,
    SocketMetrics,
    escape_label_value,
    format_value,
    render_prometheus,
)
from ctrlsock.probe import Holder, HolderHow, ProbeReport, State
from tests.children.cli_support import run_cli, serving
from tests.kea import KeaDaemon, ask_kea
from tests.support import REPO_DIR, wait_for_state
from tests.test_cli_startup import assert_lean, loaded_by

# --- a strict reader of the text format --------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)\}})? (\S+)")
_VALUE = re.compile(r"[+-]?(?:Inf|NaN|[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?|\.[0-9]+(?:e[+-]?[0-9]+)?)")


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda match: "\n" if match[1] == "n" else match[1], text)


def read_exposition(text: str) -> tuple[dict[str, tuple[str, str]], list[Sample]]:
    """Families {name: (type, help)} and samples; fails on anything the format does not allow here."""
    assert text.endswith("\n") or text == ""
    families: dict[str, tuple[str, str]] = {}
    samples: list[Sample] = []
    current = None
    for line in text.split("\n")[:-1]:  # only a line feed ends a line (not \r, \x1e, U+2028)
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in families, f"family {name} written twice (interleaved?)"
            assert re.fullmatch(_NAME, name)
            current = name
            families[name] = ("", _unescape(help_text))
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name == current and families[name][0] == "", line
            assert kind in {"gauge", "counter", "histogram"}
            families[name] = (kind, families[name][1])
        else:
            match = _SAMPLE.fullmatch(line)
            assert match is not None, f"not a sample line: {line!r}"
            name = match[1]
            histogram = current is not None and families[current][0] == "histogram"
            suffixes = ("_bucket", "_sum", "_count") if histogram else ("",)
            assert any(name == f"{current}{suffix}" for suffix in suffixes), (
                f"sample of {name} outside its family"
            )
            assert _VALUE.fullmatch(match[match.lastindex or 0])
            labels = {key: _unescape(value) for key, value in re.findall(_LABEL, match[2] or "")}
            samples.append(Sample(name, labels, float(match[match.lastindex or 0])))
    return families, samples


def value_of(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = [s.value for s in samples if s.name == metric and labels.items() <= s.labels.items()]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


# --- the renderer, from hand-built reports ----------------------------------------------------------


def report(
    state: State,
    socket: str = "/run/d/ctrl.sock",
    *,
    holders: list[Holder] | None = None,
    answer_ms: float | None = None,
    problems: tuple[str, ...] = (),
) -> ProbeReport:
    path = Path(socket)
    return ProbeReport(
        socket_path=path,
        lock_path=path.with_name(path.name + ".lock"),
        state=state,
        holders=holders or [],
        answer_ms=answer_ms,
        problems=list(problems),
    )


def holder(pid: int, program: str | None, how: HolderHow = HolderHow.RECORDED_AND_LOCKER) -> Holder:
    return Holder(pid=pid, program=program, alive=True, status="running", how=how)


@pytest.mark.parametrize("state", list(State))
def test_the_state_is_one_series_per_state_with_one_set(state: State) -> None:
    _, samples = read_exposition(render_prometheus([SocketMetrics(report(state))]))
    series = {s.labels["state"]: s.value for s in samples if s.name == "ctrlsock_socket_state"}
    assert series == {each.value: float(each == state) for each in State}
    assert all(s.labels["socket"] == "/run/d/ctrl.sock" for s in samples)


# (report, expected samples {(name, extra label items): value}, names that must be absent)
RENDER_TABLE = [
    pytest.param(
        report(State.RUNNING, answer_ms=1.5, holders=[holder(42, "mydaemon")]),
        {
            ("ctrlsock_socket_answered", ()): 1,
            ("ctrlsock_socket_answer_seconds", ()): 0.0015,
            ("ctrlsock_socket_problems", ()): 0,
            (
                "ctrlsock_socket_holder_info",
                (("pid", "42"), ("program", "mydaemon"), ("how", "recorded owner, holds the lock")),
            ): 1,
        },
        {"ctrlsock_daemon_pid", "ctrlsock_kea_statistic", "ctrlsock_socket_command_success"},
        id="running, answered",
    ),
    pytest.param(
        report(
            State.STUCK,
            holders=[
                holder(7, None, HolderHow.LOCK_OWNER),
                holder(8, "kea-lfc", HolderHow.INHERITED_DESCRIPTOR),
            ],
            problems=("no answer within 1 s", "lock held by pid 8"),
        ),
        {
            ("ctrlsock_socket_answered", ()): 0,
            ("ctrlsock_socket_problems", ()): 2,
            ("ctrlsock_socket_holder_info", (("pid", "7"), ("program", ""), ("how", "lock owner"))): 1,
            ("ctrlsock_socket_holder_info", (("pid", "8"), ("how", "inherited descriptor"))): 1,
        },
        {"ctrlsock_socket_answer_seconds"},
        id="stuck, two holders, no answer",
    ),
    pytest.param(
        report(State.STALE, problems=("the recorded owner pid 9 is dead",)),
        {("ctrlsock_socket_answered", ()): 0, ("ctrlsock_socket_problems", ()): 1},
        {"ctrlsock_socket_answer_seconds", "ctrlsock_socket_holder_info"},
        id="stale, nobody",
    ),
]


@pytest.mark.parametrize(("probe_report", "expected", "absent"), RENDER_TABLE)
def test_the_renderer_writes_each_socket_fact(
    probe_report: ProbeReport,
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    absent: set[str],
) -> None:
    families, samples = read_exposition(render_prometheus([SocketMetrics(probe_report)]))
    for (name, labels), value in expected.items():
        assert value_of(samples, name, **dict(labels)) == pytest.approx(value)
    assert absent.isdisjoint(families)


STATUS_GET_CTRLSOCK = {
    "pid": 4242,
    "uptime": 3600,
    "reload": 60,
    "program": "mydaemon",
    "socket": "/run/d/ctrl.sock",
    "socket-activated": False,
    "connections-served": 17,
    "connections-open": 1,
    "replies-dropped": 2,
    "commands-running": 0,
    "commands-waiting": 3,
    "ctrlsock": {
        "connections": {
            "open": 1,
            "accepted": 20,
            "served": 17,
            "dropped": 2,
            "dropped-slow-reader": 1,
            "timed-out": 3,
            "refused-limit": 1,
            "later": 9,
        },
        "bytes": {"received": 1234, "sent": 5678},
        "handlers": {"running": 0, "waiting": 3},
        "commands": {
            "status-get": {
                "results": {"0": 5},
                "duration": {"buckets": {"0.001": 4, "0.01": 5, "+Inf": 5}, "sum": 0.004, "count": 5},
            },
            "(unknown)": {"results": {"2": 2}},
            "odd": "not a map",
        },
        "note": "text is skipped",
        "extra": 7,
    },
}
# Kea 2.2's status-get (measured shape) and statistic-get-all: {name: [[value, "timestamp"], ...]}.
STATUS_GET_KEA = {
    "pid": 812,
    "uptime": 12,
    "reload": 12,
    "multi-threading-enabled": False,
    "thread-pool-size": 0,
    "sockets": {"status": "ready"},
}
STATISTICS_KEA = {
    "pkt4-received": [[10, "2026-12-01 06:00:00.000001"], [9, "2026-12-01 05:59:00.000001"]],
    "subnet[1].total-addresses": [[340282366920938463463374607431768211456, "2026-12-01 06:00:00.0"]],
    "cumulative-ratio": [[0.5, "2026-12-01 06:00:00.0"]],
    "a-duration": [["00:00:01.000000", "2026-12-01 06:00:00.0"]],
    "empty": [],
}


def test_status_get_of_a_ctrlsock_daemon_becomes_named_metrics() -> None:
    item = SocketMetrics(
        report(State.RUNNING, answer_ms=0.4), status=STATUS_GET_CTRLSOCK, commands={"status-get": True}
    )
    families, samples = read_exposition(render_prometheus([item]))
    expected = {
        "ctrlsock_daemon_pid": 4242,
        "ctrlsock_daemon_uptime_seconds": 3600,
        "ctrlsock_daemon_since_reload_seconds": 60,
        "ctrlsock_daemon_connections_served_total": 17,
        "ctrlsock_daemon_replies_dropped_total": 2,
        "ctrlsock_daemon_connections_open": 1,
        "ctrlsock_daemon_commands_running": 0,
        "ctrlsock_daemon_commands_waiting": 3,
    }
    for name, value in expected.items():
        assert value_of(samples, name) == value
        assert families[name][0] == ("counter" if name.endswith("_total") else "gauge")
    assert value_of(samples, "ctrlsock_socket_command_success", command="status-get") == 1
    others = {s.labels["name"]: s.value for s in samples if s.name == "ctrlsock_daemon_status_value"}
    # The extension's own counters are families of their own; numbers it adds later are still exported.
    assert others == {"socket-activated": 0, "ctrlsock.extra": 7, "ctrlsock.connections.later": 9}
    extension = {
        "ctrlsock_daemon_connections_accepted_total": 20,
        "ctrlsock_daemon_connections_dropped_slow_reader_total": 1,
        "ctrlsock_daemon_connections_timed_out_total": 3,
        "ctrlsock_daemon_connections_refused_total": 1,
        "ctrlsock_daemon_bytes_received_total": 1234,
        "ctrlsock_daemon_bytes_sent_total": 5678,
    }
    for name, value in extension.items():
        assert value_of(samples, name) == value
        assert families[name][0] == "counter"
    assert value_of(samples, "ctrlsock_daemon_commands_total", command="status-get", result="0") == 5
    assert value_of(samples, "ctrlsock_daemon_commands_total", command="(unknown)", result="2") == 2
    assert families["ctrlsock_daemon_command_duration_seconds"][0] == "histogram"
    buckets = {
        s.labels["le"]: s.value
        for s in samples
        if s.name == "ctrlsock_daemon_command_duration_seconds_bucket"
    }
    assert buckets == {"0.001": 4, "0.01": 5, "+Inf": 5}
    assert value_of(samples, "ctrlsock_daemon_command_duration_seconds_sum", command="status-get") == 0.004
    assert value_of(samples, "ctrlsock_daemon_command_duration_seconds_count", command="status-get") == 5
    # A histogram without its buckets is left out rather than written half.
    assert not any(s.labels.get("command") == "(unknown)" for s in samples if "duration" in s.name)


def test_kea_statistics_become_one_gauge_family_by_name() -> None:
    item = SocketMetrics(
        report(State.RUNNING, answer_ms=0.4),
        status=STATUS_GET_KEA,
        statistics=STATISTICS_KEA,
        commands={"status-get": True, "statistic-get-all": True},
    )
    text = render_prometheus([item])
    families, samples = read_exposition(text)
    assert families["ctrlsock_kea_statistic"][0] == "gauge"
    statistics = {s.labels["name"]: s.value for s in samples if s.name == "ctrlsock_kea_statistic"}
    # The newest value of each numeric statistic; a duration string and an empty list have none.
    assert statistics == {"pkt4-received": 10, "subnet[1].total-addresses": 2.0**128, "cumulative-ratio": 0.5}
    assert 'name="subnet[1].total-addresses"} 340282366920938463463374607431768211456\n' in text
    assert value_of(samples, "ctrlsock_daemon_pid") == 812
    assert value_of(samples, "ctrlsock_daemon_status_value", name="thread-pool-size") == 0


def test_a_failed_command_is_a_zero_and_its_metrics_are_absent() -> None:
    item = SocketMetrics(report(State.RUNNING, answer_ms=0.4), commands={"status-get": False})
    families, samples = read_exposition(render_prometheus([item]))
    assert value_of(samples, "ctrlsock_socket_command_success", command="status-get") == 0
    assert not any(name.startswith("ctrlsock_daemon_") for name in families)


def test_families_are_written_whole_for_several_sockets() -> None:
    items = [
        SocketMetrics(report(State.RUNNING, "/run/a.sock", answer_ms=1.0), status=STATUS_GET_CTRLSOCK),
        SocketMetrics(report(State.STALE, "/run/b.sock")),
        SocketMetrics(report(State.RUNNING, "/run/c.sock", answer_ms=2.0), status=STATUS_GET_KEA),
    ]
    families, samples = read_exposition(render_prometheus(items))  # the reader refuses interleaving
    assert {s.labels["socket"] for s in samples if s.name == "ctrlsock_daemon_pid"} == {
        "/run/a.sock",
        "/run/c.sock",
    }
    assert len([s for s in samples if s.name == "ctrlsock_socket_state"]) == 3 * len(State)
    assert all(name.startswith("ctrlsock_") for name in families)


def test_a_label_set_is_written_once_whatever_the_input() -> None:
    twice = holder(5, "d", HolderHow.LOCK_OWNER)
    item = SocketMetrics(
        report(State.STUCK, holders=[twice, twice]),
        status={"a.b": 1, "a": {"b": 2}},
        statistics={"x": [[1, "t"]]},
    )
    both = render_prometheus([item, item])  # the same socket twice
    _, samples = read_exposition(both)
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples]
    assert len(keys) == len(set(keys))
    # Keys are taken in sorted order ("a" before "a.b") and the first wins.
    assert value_of(samples, "ctrlsock_daemon_status_value", name="a.b") == 2


def test_the_readme_names_every_metric_family_and_no_other() -> None:
    item = SocketMetrics(
        report(State.RUNNING, answer_ms=1.0, holders=[holder(1, "d")]),
        status={**STATUS_GET_CTRLSOCK, **STATUS_GET_KEA},
        statistics=STATISTICS_KEA,
        commands={"status-get": True},
    )
    families, _ = read_exposition(render_prometheus([item]))
    readme = (REPO_DIR / "README.md").read_text()
    # The metric table's rows (other names, such as the pytest fixture's, live elsewhere in the text).
    table = "\n".join(line for line in readme.splitlines() if line.lstrip().startswith("|"))
    assert set(re.findall(r"`(ctrlsock_[a-z_]+)", table)) == set(families)


def test_nothing_to_report_is_an_empty_exposition() -> None:
    assert render_prometheus([]) == ""


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ('\\"\n', '\\\\\\"\\n'),
        ("tab\tand é", "tab\tand é"),
    ],
)
def test_label_values_are_escaped_as_the_format_requires(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (True, "1"), (False, "0"), (0.25, "0.25"), (float("inf"), "+Inf"), (float("-inf"), "-Inf")],
)
def test_values_are_written_in_the_format_s_syntax(value: float, text: str) -> None:
    assert format_value(value) == text


def test_nan_is_written_as_nan() -> None:
    assert format_value(float("nan")) == "NaN"


@given(socket=st.text(min_size=1), program=st.text(), statistic=st.text())
def test_any_label_value_reads_back_unchanged(socket: str, program: str, statistic: str) -> None:
    item = SocketMetrics(
        report(State.RUNNING, "/run/" + socket, holders=[holder(1, program)], answer_ms=1.0),
        statistics={statistic: [[1, "t"]]},
    )
    _, samples = read_exposition(render_prometheus([item]))
    assert {s.labels["socket"] for s in samples} == {str(Path("/run/" + socket))}
    assert value_of(samples, "ctrlsock_socket_holder_info", program=program) == 1
    assert value_of(samples, "ctrlsock_kea_statistic", name=statistic) == 1


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        (os.fsdecode(b"/run/\xff\xfe.sock"), "/run/\\xff\\xfe.sock"),  # a file name that is not UTF-8
        ("/run/\ud800.sock", "/run/\\ud800.sock"),  # a lone surrogate from a JSON record
    ],
)
def test_text_that_is_not_utf_8_is_written_escaped(raw: str, written: str) -> None:
    text = render_prometheus([SocketMetrics(report(State.STOPPED, raw))])
    text.encode("utf-8")  # the output is always UTF-8
    _, samples = read_exposition(text)
    assert {s.labels["socket"] for s in samples} == {written}


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ctrlsock_x_total", MetricType.GAUGE), ("ctrlsock_x", MetricType.COUNTER), ("9bad", MetricType.GAUGE)],
)
def test_a_family_refuses_a_name_prometheus_would_not_take(name: str, kind: MetricType) -> None:
    with pytest.raises(ValueError, match="metric name"):
        Family(name, kind, "help")


# --- the command, on real daemons, checked by promtool ---------------------------------------------


@pytest.fixture
def promtool() -> str:
    """promtool's path; skipped without it, except in CI (``CTRLSOCK_REQUIRE_KEA=1``), where it fails."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    if os.environ.get("CTRLSOCK_REQUIRE_KEA"):
        pytest.fail("promtool (Debian's prometheus package) is not installed but CTRLSOCK_REQUIRE_KEA is set")
    pytest.skip("promtool (Debian's prometheus package) is not installed")


def check_metrics(promtool: str, text: str) -> None:
    """``promtool check metrics``: Prometheus's own parser, plus its naming lint."""
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{text}"


def status_prometheus(*args: object) -> tuple[int, str]:
    done = run_cli("status", "--format", "prometheus", *args)
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout


def test_a_running_daemon_passes_promtool(promtool: str, sock_path: Path) -> None:
    with serving(sock_path) as server:
        for command in ("version-get", "version-get", "no-such-command"):
            run_cli("send", sock_path, command)
        code, text = status_prometheus(sock_path)
        assert code == ExitCode.OK
        check_metrics(promtool, text)
        _, samples = read_exposition(text)
        assert value_of(samples, "ctrlsock_socket_state", state="running") == 1
        assert value_of(samples, "ctrlsock_socket_answered") == 1
        assert value_of(samples, "ctrlsock_socket_answer_seconds") > 0
        assert value_of(samples, "ctrlsock_daemon_pid") == server.pid
        assert value_of(samples, "ctrlsock_socket_holder_info", pid=str(server.pid), program="ctrlsock") == 1
        assert value_of(samples, "ctrlsock_daemon_connections_served_total") >= 1
        assert value_of(samples, "ctrlsock_socket_command_success", command="status-get") == 1
        assert value_of(samples, "ctrlsock_daemon_commands_total", command="version-get", result="0") == 2
        assert value_of(samples, "ctrlsock_daemon_commands_total", command="(unknown)", result="2") == 1
        count = value_of(samples, "ctrlsock_daemon_command_duration_seconds_count", command="version-get")
        assert count == 2
        inf = value_of(
            samples, "ctrlsock_daemon_command_duration_seconds_bucket", command="version-get", le="+Inf"
        )
        assert inf == 2
        assert value_of(samples, "ctrlsock_daemon_bytes_received_total") > 0
        assert value_of(samples, "ctrlsock_daemon_bytes_sent_total") > 0
        assert value_of(samples, "ctrlsock_daemon_connections_accepted_total") >= 4
        # A ctrlsock daemon (it writes a holder record) is not asked for Kea's statistics.
        assert not any(s.labels.get("command") == "statistic-get-all" for s in samples)


def test_a_stale_daemon_passes_promtool(promtool: str, sock_path: Path) -> None:
    with serving(sock_path) as server:
        server.kill()
        code, text = status_prometheus(sock_path)
    assert code == ExitCode.STALE
    check_metrics(promtool, text)
    _, samples = read_exposition(text)
    assert value_of(samples, "ctrlsock_socket_state", state="stale") == 1
    assert value_of(samples, "ctrlsock_socket_answered") == 0
    assert value_of(samples, "ctrlsock_socket_problems") >= 1
    assert not any(s.name.startswith("ctrlsock_daemon_") for s in samples)


@pytest.fixture
def stopped_server(sock_path: Path) -> Iterator[int]:
    with serving(sock_path) as server:
        os.kill(server.pid, signal.SIGSTOP)
        try:
            wait_for_state(server.pid, "Tt")
            yield server.pid
        finally:
            os.kill(server.pid, signal.SIGCONT)


def test_a_stuck_daemon_passes_promtool(promtool: str, sock_path: Path, stopped_server: int) -> None:
    code, text = status_prometheus("--timeout", "0.3", sock_path)
    assert code == ExitCode.STUCK
    check_metrics(promtool, text)
    _, samples = read_exposition(text)
    assert value_of(samples, "ctrlsock_socket_state", state="stuck") == 1
    assert value_of(samples, "ctrlsock_socket_answered") == 0
    assert value_of(samples, "ctrlsock_socket_holder_info", pid=str(stopped_server)) == 1
    # A stuck socket is not asked anything more: it would only time out again.
    assert not any(s.name == "ctrlsock_socket_command_success" for s in samples)


def test_a_socket_name_with_a_quote_and_a_newline_passes_promtool(promtool: str, sock_dir: Path) -> None:
    path = sock_dir / 'a"b\\c\nd.sock'
    with serving(path) as server:
        code, text = status_prometheus(sock_dir)
        assert code == ExitCode.OK
        server.kill()
        _, stale_text = status_prometheus(sock_dir)
    for each in (text, stale_text):
        check_metrics(promtool, each)
        _, samples = read_exposition(each)
        assert {s.labels["socket"] for s in samples} == {str(path)}


def test_several_sockets_of_a_directory_pass_promtool(promtool: str, sock_dir: Path) -> None:
    with serving(sock_dir / "a.sock"), serving(sock_dir / "b.sock") as dead:
        dead.kill()
        code, text = status_prometheus(sock_dir)
    assert code == ExitCode.STALE
    check_metrics(promtool, text)
    _, samples = read_exposition(text)
    states = {
        s.labels["socket"]: s.labels["state"]
        for s in samples
        if s.name == "ctrlsock_socket_state" and s.value
    }
    assert states == {str(sock_dir / "a.sock"): "running", str(sock_dir / "b.sock"): "stale"}


@pytest.mark.kea
def test_a_real_kea_passes_promtool_with_its_statistics(promtool: str, kea_daemon: KeaDaemon) -> None:
    code, text = status_prometheus(kea_daemon.socket_path)
    assert code == ExitCode.OK
    check_metrics(promtool, text)
    _, samples = read_exposition(text)
    assert value_of(samples, "ctrlsock_socket_state", state="running") == 1
    assert value_of(samples, "ctrlsock_daemon_pid") == kea_daemon.pid
    assert value_of(samples, "ctrlsock_socket_command_success", command="statistic-get-all") == 1
    # Every statistic Kea reports, read independently afterwards, is there under Kea's own name.
    kea = ask_kea(kea_daemon.socket_path, "statistic-get-all")["arguments"]
    exported = {s.labels["name"]: s.value for s in samples if s.name == "ctrlsock_kea_statistic"}
    assert exported == {name: float(values[0][0]) for name, values in kea.items()}
    assert "pkt4-received" in exported


# --- which commands are sent, to real servers --------------------------------------------------------


def test_a_running_server_without_our_record_is_asked_for_statistics_and_unsupported_is_no_failure(
    sock_path: Path,
) -> None:
    # As a probe sees a ctrlsock daemon whose lock file it may not read: no record, so perhaps a Kea.
    with serving(sock_path) as server:
        metrics = gather_metrics(report(State.RUNNING, str(sock_path), answer_ms=1.0), timeout=5.0)
    assert metrics.commands == {"status-get": True}  # statistic-get-all: unsupported, so not counted
    assert metrics.statistics is None
    assert metrics.status is not None and metrics.status["pid"] == server.pid


def test_a_command_that_cannot_be_sent_is_a_failure_not_an_error(sock_path: Path) -> None:
    metrics = gather_metrics(report(State.RUNNING, str(sock_path), answer_ms=1.0), timeout=0.5)
    assert metrics.commands == {"status-get": False, "statistic-get-all": False}
    assert metrics.status is None and metrics.statistics is None


def test_only_a_running_socket_is_asked_anything(sock_path: Path) -> None:
    with serving(sock_path):
        for state in State:
            if state != State.RUNNING:
                metrics = gather_metrics(report(state, str(sock_path)), timeout=5.0)
                assert (metrics.commands, metrics.status, metrics.statistics) == ({}, None, None), state


# --- the command line ------------------------------------------------------------------------------


def test_format_json_is_json_and_agrees_with_json(sock_path: Path) -> None:
    by_format = run_cli("status", "--format", "json", sock_path)
    by_flag = run_cli("status", "--json", sock_path)
    both = run_cli("status", "--json", "--format=json", sock_path)
    assert by_format.stdout == by_flag.stdout == both.stdout
    assert by_format.returncode == by_flag.returncode == both.returncode == ExitCode.STOPPED
    assert run_cli("status", "--format", "text", sock_path).stdout == run_cli("status", sock_path).stdout


@pytest.mark.parametrize(
    "options",
    [
        ("--json", "--format", "prometheus"),
        ("--format", "text", "--json"),
        ("--format", "yaml"),
        ("--format",),
    ],
)
def test_a_format_that_cannot_be_is_a_usage_error(sock_path: Path, options: tuple[str, ...]) -> None:
    for args in (("status", *options, sock_path), ("status", *options, "--", sock_path)):
        done = run_cli(*args)
        assert done.returncode == ExitCode.USAGE, (args, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("ctrlsock: ")


def test_a_url_with_format_prometheus_is_a_usage_error(sock_path: Path) -> None:
    # A remote endpoint has no lock file, record or holder to export: refused before anything is asked.
    for args in (
        ("--format", "prometheus", "http://127.0.0.1:9/"),
        ("--format", "prometheus", "--", sock_path, "https://h:1/"),
    ):
        done = run_cli("status", *args)
        assert done.returncode == ExitCode.USAGE, (args, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and "url" in done.stderr


def test_fast_path_and_typer_print_the_same_prometheus_text(sock_dir: Path) -> None:
    with serving(sock_dir / "a.sock") as server:
        server.kill()
        fast = run_cli("status", "--format=prometheus", sock_dir)
        slow = run_cli("status", "--format", "prometheus", "--", sock_dir)
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert fast.returncode == ExitCode.STALE


def test_prometheus_output_starts_lean_and_plain_status_does_not_load_it(sock_path: Path) -> None:
    with serving(sock_path):
        code, loaded = loaded_by("status", "--format", "prometheus", sock_path)
        assert code == 0
        assert_lean(loaded)
        assert "ctrlsock.cli.prometheus" in loaded
        code, loaded = loaded_by("status", sock_path)
        assert code == 0
        assert "ctrlsock.cli.prometheus" not in loaded
