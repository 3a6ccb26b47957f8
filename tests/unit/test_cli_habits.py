"""CLI habits new users bring: global options after the command, output that pipes whole."""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.cli.app import GlobalOptionsGroup
from encmigrate.cli.state import CliState

runner = CliRunner()
ROOT = typer.main.get_command(app)
assert isinstance(ROOT, GlobalOptionsGroup)


def _paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, walked in the click command tree."""
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, TyperGroup):
            found += _paths(command, (*prefix, name))
    return found


PATHS = _paths(ROOT)
NOTE = "Global options (--config, --database-url, --debug, --json) may also follow the command."


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_") or name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCMIGRATE_ACTOR", "cli-test")
    return tmp_path


@pytest.fixture
def states(monkeypatch: pytest.MonkeyPatch) -> list[CliState]:
    """The global options each run's root callback received."""
    seen: list[CliState] = []

    def recording(**options: object) -> CliState:
        state = CliState(**options)  # type: ignore[arg-type]
        seen.append(state)
        return state

    # `encmigrate.cli.app` the attribute is the Typer app; the module is where root() looks.
    monkeypatch.setattr(importlib.import_module("encmigrate.cli.app"), "CliState", recording)
    return seen


# --- 1. global options after the command ----------------------------------------------------


def test_the_walk_finds_every_command_and_group() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"status", "verify", "keys", "keys status", "plan check", "init", "demo"} <= names
    assert len(PATHS) > 25


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_command_takes_every_global_option_after_it(
    path: tuple[str, ...], clean_env: Path, states: list[CliState]
) -> None:
    args = [*path, "--json", "--debug", "--config", "x.toml", "--database-url=sqlite://"]
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # `init` has a --database-url of its own (written into the new plan): it stays init's.
    url = None if path == ("init",) else "sqlite://"
    assert states == [CliState(config=Path("x.toml"), database_url=url, debug=True, json=True)]
    assert NOTE in " ".join(result.stdout.split())


def test_global_options_are_moved_in_front_of_the_command_and_nothing_else() -> None:
    first = ROOT.global_options_first
    assert first(["status", "--json"]) == ["--json", "status"]
    assert first(["keys", "status", "--config=x.toml"]) == ["--config=x.toml", "keys", "status"]
    assert first(["keys", "--json", "status"]) == ["--json", "keys", "status"]
    assert first(["verify", "--config", "x.toml", "-t", "t"]) == [
        "--config",
        "x.toml",
        "verify",
        "-t",
        "t",
    ]
    assert first(["migrate-data", "-tcustomers", "--debug"]) == [
        "--debug",
        "migrate-data",
        "-tcustomers",
    ]
    unchanged = [
        ["--json", "status"],
        ["keys", "rotate", "--reason", "--json"],  # the value of --reason
        ["migrate-data", "-t", "--json"],  # a table named --json
        ["find", "t.c", "--", "--json"],  # after --: the command's
        ["init", "--database-url", "sqlite://"],  # init's own option
        ["no-such-command", "--json"],
        ["status", "--version"],  # not a global option of a command
        ["status", "--jsn"],
    ]
    for args in unchanged:
        assert first(args) == args


@pytest.fixture
def keyring_project(clean_env: Path) -> Path:
    (clean_env / "encmigrate.toml").write_text('[keys]\nprovider = "file"\npath = "keyring.json"\n')
    assert runner.invoke(app, ["keys", "generate"]).exit_code == 0
    return clean_env


def test_json_after_keys_status_gives_json(keyring_project: Path) -> None:
    for args in (["keys", "status", "--json"], ["keys", "--json", "status"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["current"] == 1


def test_config_after_the_command_in_both_forms(keyring_project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)  # no plan here: only --config finds the keyring
    plan = str(keyring_project / "encmigrate.toml")
    for args in (["--config", plan], [f"--config={plan}"]):
        result = runner.invoke(app, ["keys", "status", *args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["current"] == 1
    result = runner.invoke(app, ["verify", "--config", "nope.toml"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --config: settings file nope.toml does not exist")


def test_debug_after_the_command_shows_the_traceback(clean_env: Path) -> None:
    result = runner.invoke(app, ["keys", "status", "--debug"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "no keyring configured" in result.stderr


def test_after_a_double_dash_global_options_belong_to_the_command(keyring_project: Path) -> None:
    result = runner.invoke(app, ["keys", "status", "--", "--json"])
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.output and "{" not in result.stdout


def test_an_option_value_that_looks_like_a_global_option_stays_a_value(
    keyring_project: Path,
) -> None:
    result = runner.invoke(app, ["keys", "rotate", "--reason", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Rotated: version 2")  # text, not JSON
    audit = runner.invoke(app, ["keys", "audit", "--json"])
    assert json.loads(audit.stdout)[-1]["reason"] == "--json"


# --- 2. output read by a pipe or a log is never cut -------------------------------------------

LONG_TABLE = "customer_accounts_of_the_northern_region_archive"
LONG_COLUMN = "email_address_of_the_primary_contact"


@pytest.mark.parametrize("columns", [None, "60"], ids=["COLUMNS unset", "COLUMNS=60"])
def test_piped_verify_table_keeps_every_header_and_name_whole(
    clean_env: Path, columns: str | None
) -> None:
    database = clean_env / "app.db"
    with sqlite3.connect(database) as conn:
        conn.execute(f"CREATE TABLE {LONG_TABLE} (id integer primary key, {LONG_COLUMN} text)")
        conn.execute(f"INSERT INTO {LONG_TABLE} VALUES (1, 'a@example.com')")
    conn.close()
    (clean_env / "encmigrate.toml").write_text(
        f'[database]\nurl = "sqlite:///{database}"\n[keys]\npath = "keyring.json"\n'
        f'[[columns]]\ntable = "{LONG_TABLE}"\ncolumn = "{LONG_COLUMN}"\n'
    )
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["keys", "generate"]).exit_code == 0
    added = runner.invoke(app, ["add-columns", "--apply"])
    assert added.exit_code == 0, added.output
    env = {} if columns is None else {"COLUMNS": columns}
    result = runner.invoke(app, ["verify"], env=env)
    assert result.exit_code == 1  # nothing encrypted yet: the value is missing
    assert "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if "undecryptable" in line)
    for word in ("table", "column", "checked", "missing", "mismatched", "undecodable", "result"):
        assert f" {word} " in header
    row = next(line for line in result.stdout.splitlines() if LONG_TABLE in line)
    assert LONG_COLUMN in row and "FAILED" in row


def test_piped_keys_tables_keep_long_paths_on_one_line(clean_env: Path) -> None:
    directory = clean_env / ("a_directory_with_a_long_name_for_the_keyring_of_" + "x" * 60)
    directory.mkdir()
    keyring = directory / "keyring.json"
    assert runner.invoke(app, ["keys", "generate", "--path", str(keyring)]).exit_code == 0
    env = {"ENCMIGRATE_KEYRING_FILE": str(keyring)}
    status = runner.invoke(app, ["keys", "status"], env=env)
    assert status.exit_code == 0
    assert f"Keyring (keyring file {keyring})" in status.stdout.splitlines()
    audit = runner.invoke(app, ["keys", "audit"], env=env)
    assert str(directory / "encmigrate-audit.jsonl") in audit.stdout.splitlines()
    generated = runner.invoke(app, ["keys", "generate", "--path", str(keyring), "--force"])
    assert f"ENCMIGRATE_KEYRING_FILE={keyring}" in generated.stdout
    assert "…" not in status.stdout + audit.stdout + generated.stdout
