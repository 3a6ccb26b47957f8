"""`encmigrate init`: an Alembic environment and a starter plan, adding only what is missing."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate import plan as plan_module
from encmigrate.cli import app
from encmigrate.revisions import add_columns
from encmigrate.scaffold import ENV_PY, init
from support.cli import operator_env, run_cli
from support.revisions import execute

REPO = Path(__file__).resolve().parents[2]


def _alembic(directory: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = run_cli(*args, cwd=directory, env=operator_env(**(env or {})), module="alembic")
    done.check_returncode()
    return done.stdout


def test_init_creates_an_alembic_environment_and_a_starter_plan(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(sqlite_url, "CREATE TABLE customer (id INTEGER PRIMARY KEY, email TEXT)")
    result = init(tmp_path / "app", database_url=sqlite_url)
    app = tmp_path / "app"
    assert {p.name for p in result.created} == {"alembic.ini", "alembic", "encmigrate.toml"}
    assert result.kept == ()
    assert result.tables == ("customer",)
    assert (app / "alembic" / "env.py").read_text() == ENV_PY
    assert (app / "alembic" / "versions").is_dir()
    plan_text = (app / "encmigrate.toml").read_text()
    assert '#   table = "customer"' in plan_text
    assert tomllib.loads(plan_text)["database"]["url"] == sqlite_url
    assert "driver://" not in (app / "alembic.ini").read_text()


def test_reference_environment_uses_the_same_env_py() -> None:
    assert (REPO / "alembic" / "env.py").read_text() == ENV_PY
    assert (REPO / "alembic.ini").is_file()
    assert (REPO / "alembic" / "script.py.mako").is_file()


def test_alembic_upgrade_finds_the_database_through_the_plan(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(sqlite_url, "CREATE TABLE customer (id INTEGER PRIMARY KEY, email TEXT)")
    init(tmp_path, database_url=sqlite_url)
    with (tmp_path / "encmigrate.toml").open("a") as plan_file:
        plan_file.write('\n[[columns]]\ntable = "customer"\ncolumn = "email"\n')
    plan = plan_module.load(tmp_path / "encmigrate.toml", environ={})
    result = add_columns(plan)
    assert result.path is not None

    _alembic(tmp_path, "upgrade", "head")
    engine = sa.create_engine(sqlite_url)
    names = [c["name"] for c in sa.inspect(engine).get_columns("customer")]
    engine.dispose()
    assert names == ["id", "email", "email_encrypted"]
    assert "DROP COLUMN email_encrypted" in _alembic(tmp_path, "downgrade", "head:base", "--sql")


def test_environment_variable_wins_over_the_plan(tmp_path: Path, sqlite_url: str) -> None:
    init(tmp_path, database_url="sqlite:///elsewhere.db")
    other = tmp_path / "other.db"
    _alembic(tmp_path, "stamp", "base", env={"ENCMIGRATE_DATABASE_URL": f"sqlite:///{other}"})
    assert other.exists()
    assert not (tmp_path / "elsewhere.db").exists()


def test_init_again_only_adds_what_is_missing(tmp_path: Path) -> None:
    init(tmp_path)
    ini = tmp_path / "alembic.ini"
    ini.write_text(ini.read_text() + "\n# mine\n")
    (tmp_path / "alembic" / "env.py").unlink()
    (tmp_path / "encmigrate.toml").unlink()
    result = init(tmp_path)
    assert {p.name for p in result.created} == {"env.py", "encmigrate.toml"}
    assert {p.name for p in result.kept} >= {"alembic.ini", "alembic", "script.py.mako"}
    assert ini.read_text().endswith("# mine\n")


def test_init_beside_an_existing_alembic_keeps_its_env_py(tmp_path: Path) -> None:
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic" / "env.py").write_text("# theirs\n")
    result = init(tmp_path)
    assert (tmp_path / "alembic" / "env.py").read_text() == "# theirs\n"
    assert {p.name for p in result.created} == {"alembic.ini", "script.py.mako", "encmigrate.toml"}


@pytest.mark.postgres
def test_postgres_tables_outside_public_are_listed_schema_qualified(
    tmp_path: Path, pg_url: str
) -> None:
    execute(
        pg_url,
        "CREATE TABLE customer (id int PRIMARY KEY)",
        'CREATE SCHEMA "Sales"',
        'CREATE TABLE "Sales"."Order" (id int PRIMARY KEY)',
    )
    result = init(tmp_path, database_url=pg_url)
    assert result.tables == ("customer", "Sales.Order")


def test_a_hostile_table_name_is_only_a_toml_string_in_the_starter_plan(
    tmp_path: Path, sqlite_url: str
) -> None:
    hostile = 'nl\n[[columns]]\ntable = "victim'
    execute(sqlite_url, f'CREATE TABLE "{hostile.replace(chr(34), chr(34) * 2)}" (id INTEGER)')
    result = init(tmp_path, database_url=sqlite_url)
    assert result.tables == (hostile,)
    plan_text = (tmp_path / "encmigrate.toml").read_text()
    assert set(tomllib.loads(plan_text)) == {"database", "alembic", "keys", "migration"}
    assert '#   table = "nl\\n[[columns]]\\ntable = \\"victim"' in plan_text
    with pytest.raises(plan_module.PlanError, match="no columns planned"):
        plan_module.load(tmp_path / "encmigrate.toml", environ={}, check_database=False)


@pytest.mark.postgres
def test_init_does_not_write_the_database_password(tmp_path: Path, pg_url: str) -> None:
    # The local server trusts its users: any password connects, so a real one is not needed.
    with_password = sa.make_url(pg_url).set(password="s3cret-pw").render_as_string(False)
    result = CliRunner().invoke(
        app, ["--json", "init", str(tmp_path), "--database-url", with_password], env={}
    )
    assert result.exit_code == 0, result.output
    plan_text = (tmp_path / "encmigrate.toml").read_text()
    assert "s3cret-pw" not in plan_text
    stored = sa.make_url(tomllib.loads(plan_text)["database"]["url"])
    assert stored.password is None
    assert stored.render_as_string(False) == sa.make_url(pg_url).render_as_string(False)
    (note,) = json.loads(result.stdout)["notes"]
    assert "ENCMIGRATE_DATABASE_URL" in note and "s3cret" not in note
    # Without the environment variable the plan's URL is used: the password then comes
    # from ~/.pgpass or PGPASSWORD (the local server needs none).
    assert plan_module.resolve_database_url(environ={}, cwd=tmp_path) == str(
        tomllib.loads(plan_text)["database"]["url"]
    )


def test_init_prints_where_the_password_goes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["init", str(tmp_path), "--database-url", "sqlite:///app.db"], env={}
    )
    assert result.exit_code == 0
    assert "note:" not in result.stderr  # nothing was removed from a SQLite URL
    assert tomllib.loads((tmp_path / "encmigrate.toml").read_text())["database"] == {
        "url": "sqlite:///app.db"
    }
