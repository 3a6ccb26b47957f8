"""`encmigrate rehearse`: every step and downgrade on a throwaway database, as CI runs it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from encmigrate.errors import ConfigError
from encmigrate.rehearse import RehearseOptions, rehearse
from encmigrate.scaffold import init
from encmigrate.testdb import MariaDBServer, PostgresServer
from support.cli import operator_env, run_cli

HISTORY = '''"""customers"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("balance", sa.Numeric(12, 2)),
        sa.Column("born", sa.Text),
        sa.Column("profile", sa.JSON),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("signed_up", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table("tags", sa.Column("code", sa.String(10), primary_key=True),
                    sa.Column("label", sa.Text))


def downgrade() -> None:
    op.drop_table("tags")
    op.drop_table("customers")
'''

TAGS_SEARCH = '''"""tags.search"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tags", sa.Column("search", postgresql.TSVECTOR, nullable=False))


def downgrade() -> None:
    op.drop_column("tags", "search")
'''

COLUMNS = """
[[columns]]
table = "customers"
column = "email"
searchable = true
normalize = "lower"

[[columns]]
table = "customers"
column = "balance"
type = "numeric"

[[columns]]
table = "customers"
column = "born"
type = "date"

[[columns]]
table = "customers"
column = "profile"
type = "json"
"""

STEPS = [
    "alembic upgrade head (your history)",
    "plan check",
    "add-columns --apply",
    "migrate-data --dry-run",
    "migrate-data",
    "verify",
    "create-views --apply",
    "drop-unencrypted --confirm --apply",
    "verify (plaintext dropped)",
    "downgrade drop-unencrypted, decrypt-back",
    "verify (plaintext restored)",
    "downgrade create-views",
    "downgrade add-columns",
    "round trip (schema and values as before)",
]


def _project(directory: Path, columns: str = COLUMNS) -> Path:
    init(directory)
    (directory / "alembic" / "versions" / "0001_customers.py").write_text(HISTORY)
    plan = directory / "encmigrate.toml"
    plan.write_text(plan.read_text() + columns)
    return plan


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_rehearsal_runs_every_step_and_downgrade_and_round_trips_exactly(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = _project(tmp_path)
    before = _tree(tmp_path)
    seen: list[str] = []
    report = rehearse(
        plan,
        options=RehearseOptions(rows=1500, production_rows=3_000_000, batch_size=200, workers=2),
        server=postgres_server,
        environ={},
        on_step=lambda step: seen.append(step.name),
    )
    assert report.problems == [] and report.exit_code == 0 and report.ok
    names = [s.name for s in report.steps]
    assert names == [STEPS[0], "generate 1,500 rows per table", *STEPS[1:]] == seen
    assert report.rows == 1500 and report.rows_migrated == 1500
    assert report.rate > 0 and report.dry_run_rate > 0
    assert report.eta_seconds == pytest.approx(3_000_000 / report.rate)
    assert _tree(tmp_path) == before  # no revision or anything else written into the project


def test_a_sql_file_is_loaded_and_its_bad_values_fail_the_rehearsal(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = _project(tmp_path)
    data = tmp_path / "sample.sql"
    data.write_text(
        "INSERT INTO customers (id, email, born, country, signed_up) VALUES "
        "(1, 'a@x.io', '1990-01-02', 'FR', now()), (2, 'b@x.io', 'not a date', 'FR', now());\n"
        "INSERT INTO customers (id, email, born, country, signed_up) VALUES "
        "(3, 'c@x.io', NULL, 'DE', now());\n"
    )
    report = rehearse(plan, options=RehearseOptions(load=data), server=postgres_server, environ={})
    assert report.exit_code == 1
    assert report.problems == [
        "migrate-data: 1 values do not fit their planned type (see encryption_migration_failures)"
    ]
    assert "not a date" not in json.dumps(report.problems)
    assert report.steps[-1].name == "migrate-data" and not report.steps[-1].ok


def test_a_leaky_blind_index_is_reported_as_a_warning(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    columns = (
        COLUMNS + '\n[[columns]]\ntable = "customers"\ncolumn = "country"\nsearchable = true\n'
    )
    plan = _project(tmp_path, columns)
    data = tmp_path / "sample.sql"
    rows = ", ".join(f"({i}, 'u{i}@x.io', '{['FR', 'DE'][i % 2]}', now())" for i in range(1, 401))
    data.write_text(f"INSERT INTO customers (id, email, country, signed_up) VALUES {rows};")
    report = rehearse(plan, options=RehearseOptions(load=data), server=postgres_server, environ={})
    assert report.ok, report.problems
    assert any("columns[4].searchable" in w and "frequency analysis" in w for w in report.warnings)


def test_generated_rows_refuse_a_not_null_type_they_cannot_make(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = _project(tmp_path, '[[columns]]\ntable = "tags"\ncolumn = "label"\n')
    (tmp_path / "alembic" / "versions" / "0002_tags_search.py").write_text(TAGS_SEARCH)
    report = rehearse(plan, options=RehearseOptions(rows=10), server=postgres_server, environ={})
    assert report.exit_code == ConfigError.exit_code
    assert report.problems == [
        "generate 10 rows per table: --rows: tags.search: NOT NULL column of type TSVECTOR is "
        "not generated; copy real rows with --sample-from, or load rows with --load"
    ]


def test_a_pg_dump_sample_is_loaded_and_a_failing_file_never_quotes_its_values(
    postgres_server: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    # What docs/ci-example.md tells users to do: pg_dump --data-only --inserts of a sample.
    # Its script empties search_path for its session and, since PostgreSQL 15.14, wraps
    # itself in psql's \restrict: neither may break the steps that follow the load.
    source = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE customers (id integer PRIMARY KEY, email varchar(200) NOT NULL, "
            "balance numeric(12, 2), born text, profile json, country varchar(2) NOT NULL, "
            "signed_up timestamptz NOT NULL)"
        )
        connection.execute(
            "INSERT INTO customers (id, email, born, country, signed_up) SELECT i, "
            "'u' || i || '@x.io', '1990-01-02', 'FR', now() FROM generate_series(1, 30) AS i"
        )
    sample = tmp_path / "sample.sql"
    subprocess.run(
        ["pg_dump", "--data-only", "--inserts", "--table=customers", f"--file={sample}", source],
        check=True,
    )
    plan = _project(tmp_path)
    report = rehearse(
        plan, options=RehearseOptions(load=sample), server=postgres_server, environ={}
    )
    assert report.ok, report.problems
    assert report.rows == 30 and report.steps[1].name == "load sample.sql"
    bad = tmp_path / "bad.sql"
    bad.write_text(
        "INSERT INTO customers (id, email, country, signed_up) "
        "VALUES (1, 'a@x.io', 'FR', 'canary-not-a-timestamp');"
    )
    report = rehearse(plan, options=RehearseOptions(load=bad), server=postgres_server, environ={})
    assert report.exit_code == ConfigError.exit_code
    assert report.problems == [
        "load bad.sql: --load: the SQL failed (SQLSTATE 22007 InvalidDatetimeFormat)"
    ]


def test_cli_rehearse_uses_throwaway_keys_and_exits_zero(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    _project(tmp_path)
    env = operator_env(
        ENCMIGRATE_TEST_DATABASE_URL=postgres_server.admin_url,
        ENCMIGRATE_KEYRING="not a keyring: rehearse must never read the user's keys",
        ENCMIGRATE_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/production",
    )
    done = run_cli(
        "--json", "rehearse", "--rows", "300", "--production-rows", "1000000", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] and document["rows_migrated"] == 300
    assert document["eta_seconds"] > 0
    assert document["server"] == "ENCMIGRATE_TEST_DATABASE_URL"
    failed = run_cli("rehearse", "--load", "missing.sql", cwd=tmp_path, env=env)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr


def test_rehearsal_on_mariadb_runs_every_step_and_downgrade_and_round_trips_exactly(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    plan = _project(tmp_path)
    seen: list[str] = []
    report = rehearse(
        plan,
        options=RehearseOptions(rows=500, production_rows=1_000_000, batch_size=100),
        server=mariadb_server,
        environ={},
        on_step=lambda step: seen.append(step.name),
    )
    assert report.problems == [] and report.ok, report.problems
    assert [s.name for s in report.steps] == [STEPS[0], "generate 500 rows per table", *STEPS[1:]]
    assert seen == [s.name for s in report.steps]
    assert report.rows == 500 and report.rows_migrated == 500
    assert report.database == "MariaDB"


def test_cli_rehearse_follows_the_plans_database_to_mariadb(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    _project(tmp_path)
    env = operator_env(
        ENCMIGRATE_TEST_MARIADB_URL=mariadb_server.admin_url,
        ENCMIGRATE_KEYRING="not a keyring: rehearse must never read the user's keys",
        ENCMIGRATE_DATABASE_URL="mysql+pymysql://nobody@127.0.0.1:1/production",
    )
    done = run_cli("--json", "rehearse", "--rows", "200", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] and document["rows_migrated"] == 200
    assert document["database"] == "MariaDB"
    assert document["server"] == "ENCMIGRATE_TEST_MARIADB_URL"


def test_mariadb_rehearsals_refuse_the_postgresql_only_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL only"):
        RehearseOptions(backend="mariadb", schema_file=tmp_path / "schema.sql")
    with pytest.raises(ConfigError, match="--backend must be one of"):
        RehearseOptions(backend="oracle")
