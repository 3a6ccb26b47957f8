"""What every command promises: help with an example, one-line errors, documented exit codes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.cli.state import reports_errors
from encmigrate.errors import UNEXPECTED_EXIT_CODE

runner = CliRunner()


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for info in group.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        found.append((*prefix, name))
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name is not None
        found += _commands(sub.typer_instance, (*prefix, sub.name))
    return found


COMMANDS = _commands(app)


def test_every_documented_command_exists() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in (
        "init",
        "plan check",
        "add-columns",
        "migrate-data",
        "verify",
        "create-views",
        "drop-unencrypted",
        "status",
        "rewrap",
        "decrypt-back",
        "demo",
        "keys generate",
        "keys rotate",
        "keys status",
        "keys destroy",
        "keys audit",
        "keys health",
    ):
        assert expected in names


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_of_every_command_shows_an_example(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "Example" in result.stdout or "example" in result.stdout


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCMIGRATE_MASTER_KEY", "A" * 43 + "=")
    return tmp_path


def test_missing_plan_is_exit_2_in_one_line(bare: Path) -> None:
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no plan found")
    assert "Traceback" not in result.stderr


def test_bad_plan_lists_every_problem_and_exits_2(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text(
        '[database]\nurl = "sqlite://"\n[[columns]]\ntable = "t"\ncolumn = "c"\ntype = "money"\n'
        '[[columns]]\ntable = "t"\ncolumn = "c"\nsurprise = 1\n'
    )
    result = runner.invoke(app, ["plan", "check", "--offline"])
    assert result.exit_code == 2
    assert "money" in result.stderr and "surprise" in result.stderr


def test_unreachable_database_is_exit_4(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text(
        '[database]\nurl = "postgresql+psycopg://postgres@127.0.0.1:1/none"\n'
        '[[columns]]\ntable = "t"\ncolumn = "c"\n'
    )
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 4
    assert result.stderr.startswith("error: cannot reach the database")
    assert result.stderr.count("\n") == 1


def test_unknown_table_in_the_plan_is_exit_2(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text(
        f'[database]\nurl = "sqlite:///{bare / "app.db"}"\n'
        '[[columns]]\ntable = "nosuch"\ncolumn = "c"\n'
    )
    import sqlite3

    sqlite3.connect(bare / "app.db").execute("CREATE TABLE other (id integer primary key)")
    result = runner.invoke(app, ["migrate-data"])
    assert result.exit_code == 2
    assert "nosuch" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2(bare: Path) -> None:
    assert runner.invoke(app, ["migrate-data", "--batch-size", "0"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("encmigrate ")


# --- one error boundary: foreign errors become one line and a documented exit code ----------

PASSWORD = "hunter2-not-shown"
UNREACHABLE = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/none"
BAD_PORT = f"postgresql+psycopg://u:{PASSWORD}@db.example:abc/app"
PLAN_COLUMNS = '[[columns]]\ntable = "t"\ncolumn = "c"\n'


def _one_line(result: Result) -> str:
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert PASSWORD not in result.output
    return result.stderr


def test_every_command_goes_through_the_error_boundary() -> None:
    wrapped = reports_errors(lambda: None).__code__

    def callback(command: tuple[str, ...]) -> object:
        group: typer.Typer = app
        for name in command[:-1]:
            group = next(g.typer_instance for g in group.registered_groups if g.name == name)
        found = next(
            c.callback
            for c in group.registered_commands
            if (c.name or (c.callback.__name__.replace("_", "-") if c.callback else ""))
            == command[-1]
        )
        return found

    unwrapped = [c for c in COMMANDS if getattr(callback(c), "__code__", None) is not wrapped]
    assert unwrapped == []


def test_status_on_an_unreachable_database_is_exit_4_in_one_line(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text(f'[database]\nurl = "{UNREACHABLE}"\n' + PLAN_COLUMNS)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 4
    assert _one_line(result).startswith("error: cannot reach the database")


BAD_PORT_COMMANDS = [
    ["status"],
    ["verify"],
    ["plan", "check"],
    ["migrate-data"],
    ["add-columns"],
    ["rewrap"],
    ["find", "t.c", "x"],
]


@pytest.mark.parametrize("origin", ["plan", "ENCMIGRATE_DATABASE_URL", "--database-url"])
@pytest.mark.parametrize("command", BAD_PORT_COMMANDS, ids=[c[0] for c in BAD_PORT_COMMANDS])
def test_a_port_that_is_not_a_number_is_a_one_line_config_error(
    bare: Path, origin: str, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = list(command)
    plan_url = "sqlite://"
    if origin == "plan":
        plan_url = BAD_PORT
    elif origin == "ENCMIGRATE_DATABASE_URL":
        monkeypatch.setenv("ENCMIGRATE_DATABASE_URL", BAD_PORT)
    else:
        args = ["--database-url", BAD_PORT, *args]
    (bare / "encmigrate.toml").write_text(f'[database]\nurl = "{plan_url}"\n' + PLAN_COLUMNS)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert "the database URL is not valid: its port is not a number" in line
    assert "abc" not in line
    if origin == "plan":
        assert "[database] url" in line or "database.url" in line
    else:
        assert origin in line


def test_a_url_that_does_not_parse_is_a_one_line_config_error(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text('[database]\nurl = "sqlite://"\n' + PLAN_COLUMNS)
    result = runner.invoke(app, ["--database-url", f"not a url:{PASSWORD}@x", "status"])
    assert result.exit_code == 2
    assert "--database-url: the database URL is not valid" in _one_line(result)


def test_rotation_days_beyond_a_century_is_a_plan_error_at_its_location(bare: Path) -> None:
    (bare / "encmigrate.toml").write_text(
        '[database]\nurl = "sqlite://"\n[keys]\nrotation_days = 1000000000\ncache_ttl = nan\n'
        + PLAN_COLUMNS
    )
    result = runner.invoke(app, ["plan", "check", "--offline"])
    assert result.exit_code == 2
    assert "keys.rotation_days: Input should be less than or equal to 36500" in result.stderr
    assert "keys.cache_ttl: Input should be a finite number" in result.stderr
    assert "Traceback" not in result.output


def _failing(exc: Exception) -> typer.Typer:
    alone = typer.Typer()

    @alone.command()
    @reports_errors
    def fails() -> None:
        raise exc

    return alone


def test_an_unexpected_exception_is_one_line_with_a_hint_and_exit_70(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = runner.invoke(_failing(ValueError(f"value {PASSWORD}")), [])
    assert result.exit_code == UNEXPECTED_EXIT_CODE == 70
    line = _one_line(result)
    assert "unexpected ValueError at " in line and "test_cli_contract.py" in line
    assert "re-run with --debug" in line
    caplog.set_level(logging.DEBUG, logger="encmigrate")
    debug = runner.invoke(_failing(ValueError("shown with --debug")), [])
    assert debug.exit_code == 70
    assert "Traceback" in debug.stderr and "shown with --debug" in debug.stderr


def test_typer_exits_pass_through_the_boundary() -> None:
    assert runner.invoke(_failing(typer.Exit(3)), []).exit_code == 3
    assert runner.invoke(_failing(typer.BadParameter("nope")), []).exit_code == 2
