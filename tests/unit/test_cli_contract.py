"""What every command promises: help with an example, one-line errors, documented exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from encmigrate.cli import app

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


def test_no_color_turns_colours_off_even_on_a_forced_terminal(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    colour = re.compile(r"\x1b\[(?:3[0-7]|9[0-7]|38;)")  # foreground colours, not bold/italic
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMIGRATE_")}
    env.update({"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "120"})
    run = [sys.executable, "-m", "encmigrate"]
    generated = subprocess.run(
        [*run, "keys", "generate", "--path", "k.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
    )
    assert generated.returncode == 0
    env["ENCMIGRATE_KEYRING_FILE"] = "k.json"
    coloured = subprocess.run(
        [*run, "keys", "health"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert colour.search(coloured.stdout)  # the check is able to see colours
    plain = subprocess.run(
        [*run, "keys", "health"],
        cwd=tmp_path,
        env={**env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 0
    assert not colour.search(plain.stdout + plain.stderr)


def test_cli_start_up_leaves_alembic_and_the_driver_to_the_commands_that_use_them() -> None:
    # Every CLI call pays for what `encmigrate.cli.app` imports: Alembic and psycopg are
    # imported by the commands that need them (about a third of the start-up time).
    code = (
        "import sys, encmigrate.cli.app\n"
        "print(sorted(m for m in ('alembic', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
