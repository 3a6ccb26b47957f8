"""The fuzz suite's report: how many inputs each target tried, by outcome."""

from __future__ import annotations

import pytest

from fuzz.harness import tallies


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not tallies:
        return
    terminalreporter.section("fuzz targets: inputs tried")
    for tally in tallies:
        outcomes = ", ".join(f"{name} {count}" for name, count in tally.outcomes.most_common())
        terminalreporter.write_line(
            f"{tally.target} [{tally.budget}]: {tally.tried} inputs ({outcomes})"
        )
