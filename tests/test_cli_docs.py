"""The exit codes the README and the man page document are the ones the code uses, read back from the text."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from ctrlsock.cli import ExitCode
from ctrlsock.cli.exitcodes import FAILURE_MEANINGS, STATE_EXIT, STATE_SEVERITY, status_exit_code
from ctrlsock.probe import State
from tests.support import REPO_DIR

README = REPO_DIR / "README.md"
MAN = REPO_DIR / "packaging" / "man" / "ctrlsock.1"


def readme_tables() -> list[list[list[str]]]:
    """Every Markdown table in the README's exit code section, as rows of cells (header rows dropped)."""
    text = README.read_text()
    section = text[text.index("### Exit codes") : text.index("## Guarantees")]
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if cells[0] not in {"code", "---:"}:
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_readme_exit_code_tables_match_the_code() -> None:
    answers, failures = readme_tables()
    documented_states = {}
    for code, status, *_ in answers:
        if status:
            state = status.split(":")[0]
            documented_states[state] = int(code)
    assert documented_states == {state: int(code) for state, code in STATE_EXIT.items()}
    assert {int(code): meaning for code, meaning in failures} == {
        int(code): meaning for code, meaning in FAILURE_MEANINGS.items()
    }
    documented = set(documented_states.values()) | {int(code) for code, _ in failures}
    assert documented == {int(code) for code in ExitCode}


def test_readme_worst_order_is_the_code_order() -> None:
    match = re.search(r'"Worst" runs in this order: ([^.]+)\.', README.read_text())
    assert match is not None
    order = match.group(1).split(" < ")
    assert tuple(order) == STATE_SEVERITY
    for less, more in itertools.pairwise(order):
        assert status_exit_code([less, more]) == STATE_EXIT[more]


def test_every_probe_state_has_an_exit_code_and_a_readme_line() -> None:
    readme = README.read_text()
    for state in State:
        assert state.value in STATE_EXIT, state
        assert state.value in STATE_SEVERITY, state
        assert f"  - `{state.value}`: " in readme, state


def test_man_page_lists_every_exit_code() -> None:
    man = MAN.read_text()
    section = man[man.index(".SH EXIT STATUS") : man.index(".SH ENVIRONMENT")]
    listed = {int(code) for code in re.findall(r"\\fB(\d+)\\fR", section)}
    assert listed == {int(code) for code in ExitCode}


def test_help_texts_give_the_state_codes() -> None:
    from tests.children.cli_support import run_cli  # noqa: PLC0415

    text = " ".join(run_cli("status", "--help").stdout.split())
    for state, code in STATE_EXIT.items():
        assert f"{int(code)} {state}" in text, state
    assert Path(README).exists()
