"""The GIL switch interval is process-wide: a run changes it only when its caller asks.

A web application that calls ``migrate_data`` must find its interpreter as it
left it; the CLI asks for the short interval (``MigrateOptions.gil_interval``)
because it owns its process. Observed from inside the run by wrapping
``TableRun.run``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encmigrate import Keyring
from encmigrate.cli import app
from encmigrate.keys import FileProvider
from encmigrate.migrate import MigrateOptions, migrate_data
from encmigrate.migrate import connect as connect_engine
from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL
from encmigrate.migrate.tablerun import TableRun
from support import shadow_schema

# Not the interpreter's default, and above the CLI's short interval, so both changes show.
CALLER_INTERVAL = 0.004


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The switch interval each table run saw while it ran."""
    intervals: list[float] = []
    original = TableRun.run

    def observed(self: TableRun) -> object:
        intervals.append(sys.getswitchinterval())
        return original(self)

    monkeypatch.setattr(TableRun, "run", observed)
    before = sys.getswitchinterval()
    sys.setswitchinterval(CALLER_INTERVAL)
    try:
        yield intervals
    finally:
        sys.setswitchinterval(before)


def test_a_python_run_leaves_the_switch_interval_alone(
    sqlite_url: str, tmp_path: Path, seen: list[float]
) -> None:
    engine, plan_path = shadow_schema.build(sqlite_url, 50, tmp_path)
    engine.dispose()
    engine = connect_engine(sqlite_url)
    try:
        reports = migrate_data(
            shadow_schema.load_plan(plan_path),
            engine,
            Keyring.generate(),
            options=MigrateOptions(batch_size=20),
        )
    finally:
        engine.dispose()
    assert reports[0].rows_done == 50
    assert seen == [pytest.approx(CALLER_INTERVAL)]
    assert sys.getswitchinterval() == pytest.approx(CALLER_INTERVAL)


def test_a_run_given_gil_interval_has_it_while_it_lasts_then_restores(
    sqlite_url: str, tmp_path: Path, seen: list[float]
) -> None:
    engine, plan_path = shadow_schema.build(sqlite_url, 50, tmp_path)
    engine.dispose()
    engine = connect_engine(sqlite_url)
    try:
        migrate_data(
            shadow_schema.load_plan(plan_path),
            engine,
            Keyring.generate(),
            options=MigrateOptions(batch_size=20, gil_interval=QUICK_SWITCH_INTERVAL),
        )
    finally:
        engine.dispose()
    assert seen == [pytest.approx(QUICK_SWITCH_INTERVAL)]  # kept in whole microseconds
    assert sys.getswitchinterval() == pytest.approx(CALLER_INTERVAL)


def test_the_cli_asks_for_the_short_interval(
    sqlite_url: str, tmp_path: Path, seen: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = shadow_schema.build(sqlite_url, 50, tmp_path)
    engine.dispose()
    FileProvider(tmp_path / "keyring.json").save(Keyring.generate())
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    env = {"ENCMIGRATE_KEYRING_FILE": str(tmp_path / "keyring.json")}
    result = CliRunner().invoke(app, ["--json", "migrate-data", "--batch-size", "20"], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert seen == [pytest.approx(QUICK_SWITCH_INTERVAL)]  # kept in whole microseconds
    assert sys.getswitchinterval() == pytest.approx(CALLER_INTERVAL)
