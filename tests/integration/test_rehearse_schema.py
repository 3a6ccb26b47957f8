"""`encmigrate rehearse` on a schema Alembic never managed: --schema-from, --schema-file,
generated rows that the schema accepts, and --sample-from real rows.

The source is a legacy PostgreSQL database with no Alembic history: a
range-partitioned table, a view over a planned column, unique constraints, a
planned table that references another and is referenced in turn, CHECKs, a
self-reference, an identity key and NOT NULL planned columns. Every test
checks that the source is left exactly as it was (its catalogue and a digest
of every table's rows), and that the rehearsal says what the real run would
hit (the view blocks step 5).
"""

from __future__ import annotations

import datetime
import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.errors import ConfigError, DatabaseError, RefusedError
from encmigrate.plan import load
from encmigrate.rehearse import RehearseOptions, rehearse
from encmigrate.rehearse.allowed_values import Allowed
from encmigrate.rehearse.check_bounds import allowed_by_checks
from encmigrate.rehearse.generated_rows import generate_rows
from encmigrate.rehearse.postgres_url import PostgresUrl
from encmigrate.rehearse.sampled_rows import copy_sample
from encmigrate.rehearse.schema_source import PG_DUMP_OPTIONS
from encmigrate.testdb import PostgresServer, create_database, drop_database

LEGACY_SCHEMA = """
CREATE TABLE region (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customer (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    phone text,
    region_code text NOT NULL REFERENCES region (code),
    account_no varchar(12) NOT NULL CONSTRAINT customer_account_no_key UNIQUE,
    score integer NOT NULL CONSTRAINT customer_score_check CHECK (score BETWEEN 0 AND 100),
    status text NOT NULL CHECK (status IN ('active', 'closed')),
    created timestamptz NOT NULL DEFAULT now(),
    referrer_id bigint REFERENCES customer (id)
);
CREATE TABLE invoice (
    id integer NOT NULL,
    customer_id bigint NOT NULL REFERENCES customer (id),
    issued date NOT NULL,
    iban text,
    amount numeric(10, 2) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (id, issued)
) PARTITION BY RANGE (issued);
CREATE TABLE invoice_2024 PARTITION OF invoice FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE invoice_2025 PARTITION OF invoice FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE VIEW customer_contacts AS SELECT id, email FROM customer;
CREATE FUNCTION customer_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM customer';
"""

LEGACY_ROWS = """
INSERT INTO region VALUES ('eu', 'Europe'), ('us', 'Americas'), ('ap', 'Asia');
INSERT INTO customer (email, phone, region_code, account_no, score, status)
SELECT 'real' || i || '@legacy.example', '+33 6 ' || i, (ARRAY['eu', 'us', 'ap'])[1 + i % 3],
       'ACC' || i, i % 101, CASE WHEN i % 7 = 0 THEN 'closed' ELSE 'active' END
FROM generate_series(1, 400) AS i;
UPDATE customer SET referrer_id = id + 1 WHERE id % 3 = 0 AND id < 400;
INSERT INTO invoice
SELECT i, 1 + (i * 7) % 400, date '2024-01-01' + (i % 700), 'FR76' || i, 10 + i % 90
FROM generate_series(1, 600) AS i;
ANALYZE;
"""

# The view over customer.email blocks step 5; invoice.iban sits on a partitioned table.
PLAN_WITH_THE_VIEW = """
[[columns]]
table = "customer"
column = "email"
searchable = true

[[columns]]
table = "customer"
column = "phone"

[[columns]]
table = "invoice"
column = "iban"
"""

PLAN_WITHOUT_BLOCKERS = """
[[columns]]
table = "customer"
column = "phone"

[[columns]]
table = "invoice"
column = "iban"
"""

STEPS_AFTER_ROWS = [
    "plan check",
    "add-columns --apply",
    "migrate-data --dry-run",
    "migrate-data",
    "verify",
    "create-views --apply",
    "drop-unencrypted --confirm --apply",
]
DOWNGRADES = [
    "downgrade create-views",
    "downgrade add-columns",
    "round trip (schema and values as before)",
]
DROPPED = [
    "verify (plaintext dropped)",
    "downgrade drop-unencrypted, decrypt-back",
    "verify (plaintext restored)",
]
PASSWORD = "not-a-real-password-7f3a"  # trust authentication ignores it; it must never show


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_password(url: str) -> str:
    return _libpq(url).replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture(scope="module")
def source(pg_module_url: str) -> str:
    """A legacy database, with rows, that no rehearsal may change (libpq URL)."""
    url = _libpq(pg_module_url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(LEGACY_SCHEMA)
        connection.execute(LEGACY_ROWS)
    return url


def catalogue(url: str) -> dict[str, Any]:
    """Tables, columns, constraints, indexes, views, functions, triggers and every row's digest."""
    queries = {
        "relations": "SELECT c.relname, c.relkind::text FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1",
        "columns": "SELECT a.attrelid::regclass::text, a.attname, "
        "format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, a.attnum",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY 1",
        "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
        "functions": "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
        "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
        "WHERE NOT tgisinternal ORDER BY 1, 2",
    }
    with psycopg.connect(url) as connection:
        found: dict[str, Any] = {k: connection.execute(q).fetchall() for k, q in queries.items()}
        for name, kind in found["relations"]:
            if kind in ("r", "p"):
                digest = "md5(string_agg(t::text, '|' ORDER BY t::text))"
                found[f"rows of {name}"] = connection.execute(
                    f'SELECT count(*), {digest} FROM "{name}" t'
                ).fetchone()
    return found


def test_legacy_schema_fixture_has_what_the_rehearsal_must_handle(source: str) -> None:
    found = catalogue(source)
    kinds = dict(found["relations"])
    assert kinds["invoice"] == "p" and kinds["invoice_2024"] == "r"
    assert kinds["customer_contacts"] == "v" and "alembic_version" not in kinds
    assert found["rows of customer"][0] == 400 and found["rows of invoice"][0] == 600


def test_schema_from_a_legacy_database_runs_the_steps_and_reports_the_blocking_view(
    source: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(PLAN_WITH_THE_VIEW)
    before = catalogue(source)
    result = CliRunner().invoke(
        app,
        ["--json", "--config", str(plan), "rehearse", "--rows", "80", "--production-rows", "10000"],
        env={
            "ENCMIGRATE_TEST_DATABASE_URL": postgres_server.admin_url,
            # The source URL, password included, from the environment: not on a command line.
            "ENCMIGRATE_SCHEMA_FROM": _with_password(source),
            "ENCMIGRATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/production",
        },
    )
    assert result.exit_code == RefusedError.exit_code, result.output
    assert PASSWORD not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    names = [step["name"] for step in document["steps"]]
    assert names[0].startswith("schema from postgresql://postgres:***@")
    assert names[1:] == ["generate 80 rows per table", *STEPS_AFTER_ROWS, *DOWNGRADES]
    failed = [step["name"] for step in document["steps"] if not step["ok"]]
    assert failed == ["drop-unencrypted --confirm --apply"]  # the downgrades still ran, cleanly
    assert document["alembic"] == "a temporary empty Alembic project"
    # What the real run would hit: the refusal and the plan check both name the view.
    (problem,) = document["problems"]
    assert "view 'public.customer_contacts' uses customer.email" in problem
    assert any("view public.customer_contacts depends on" in w for w in document["warnings"])
    # 80 generated customers and invoices were all accepted: keys, CHECKs, partitions read.
    assert document["rows"] == 160 and document["rows_migrated"] > 0
    assert not any("left out" in w for w in document["warnings"]), document["warnings"]
    assert catalogue(source) == before


def test_schema_file_and_a_sample_of_real_rows_round_trip_exactly(
    source: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    dump = tmp_path / "legacy-schema.sql"
    subprocess.run(
        ["pg_dump", *PG_DUMP_OPTIONS, f"--file={dump}", f"--dbname={source}"], check=True
    )
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(PLAN_WITHOUT_BLOCKERS)
    before = catalogue(source)
    report = rehearse(
        plan,
        options=RehearseOptions(
            schema_file=dump, sample_from=_with_password(source), sample_rows=40
        ),
        server=postgres_server,
        environ={},
    )
    assert report.ok, report.problems
    shown = PostgresUrl.parse(source, "--sample-from").display
    assert "***" not in shown  # the fixture's URL has no password: only _with_password's has
    names = [step.name for step in report.steps]
    assert names == [
        "schema from legacy-schema.sql",
        f"sample 40 rows per planned table from {shown.replace('postgres@', 'postgres:***@')}",
        *STEPS_AFTER_ROWS,
        *DROPPED,
        *DOWNGRADES,
    ]
    sampled = report.steps[1].detail
    assert sampled.endswith("of them referenced by others") and not sampled.startswith("0 ")
    assert report.rows >= 80  # 40 customers, 40 invoices, and the customers they reference
    assert PASSWORD not in repr(report)
    assert catalogue(source) == before


def _target(postgres_server: PostgresServer, source: str) -> Iterator[tuple[str, sa.Engine]]:
    url = create_database(postgres_server)
    dump = subprocess.run(
        ["pg_dump", *PG_DUMP_OPTIONS, f"--dbname={source}"], check=True, capture_output=True
    ).stdout.decode()
    dump = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(_libpq(url)) as connection:
        connection.execute(dump.encode())
    engine = sa.create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_database(postgres_server, url)


@pytest.fixture
def target(postgres_server: PostgresServer, source: str) -> Iterator[tuple[str, sa.Engine]]:
    """A database with the legacy schema and no rows."""
    yield from _target(postgres_server, source)


def _plan(tmp_path: Path, columns: str) -> Any:
    path = tmp_path / "encmigrate.toml"
    path.write_text(columns)
    return load(path, environ={}, check_database=False)


def test_generated_rows_keep_to_keys_checks_partitions_and_foreign_keys(
    target: tuple[str, sa.Engine], tmp_path: Path
) -> None:
    _, engine = target
    warnings = generate_rows(engine, _plan(tmp_path, PLAN_WITH_THE_VIEW), 120, random.Random(7))
    assert warnings == []
    with engine.connect() as connection:
        counts = dict(
            connection.exec_driver_sql(
                "SELECT 'region', count(*) FROM region UNION ALL "
                "SELECT 'customer', count(*) FROM customer UNION ALL "
                "SELECT 'invoice_2024', count(*) FROM invoice_2024 UNION ALL "
                "SELECT 'invoice_2025', count(*) FROM invoice_2025"
            ).all()
        )
        # The referenced table was empty, so it got rows too; both partitions got some.
        assert counts["region"] == 120 and counts["customer"] == 120
        assert counts["invoice_2024"] + counts["invoice_2025"] == 120
        assert counts["invoice_2024"] > 0 and counts["invoice_2025"] > 0
        spread = connection.exec_driver_sql(
            "SELECT count(DISTINCT status), min(score), max(score), count(email), count(phone), "
            "count(referrer_id), count(DISTINCT region_code) FROM customer"
        ).one()
        statuses, low, high, emails, phones, referrers, regions = spread
        assert statuses == 2 and low >= 0 and high <= 100  # the CHECKs were read, not hit
        assert emails == 120 and phones == 108  # NOT NULL planned column; nullable: NULL 1 in 10
        assert referrers == 0 and regions > 1  # self-reference left NULL; parents vary


def test_a_sample_copies_real_rows_exactly_with_the_rows_they_reference(
    target: tuple[str, sa.Engine], source: str, tmp_path: Path
) -> None:
    url, engine = target
    before = catalogue(source)
    result = copy_sample(
        PostgresUrl.parse(source, "--sample-from"),
        PostgresUrl.parse(url, "rehearsal"),
        engine,
        _plan(tmp_path, PLAN_WITH_THE_VIEW),
        25,
    )
    assert result.rows["invoice"] == 25 and result.referenced > 0
    with psycopg.connect(_libpq(url)) as mine, psycopg.connect(source) as theirs:
        for table in ("region", "customer", "invoice"):
            rows = {r[0] for r in mine.execute(f"SELECT t::text FROM {table} t")}
            real = {r[0] for r in theirs.execute(f"SELECT t::text FROM {table} t")}
            assert rows and rows <= real, table  # real rows, byte for byte, none invented
        # Every referrer of a copied customer was fetched too (a self-reference).
        assert mine.execute(
            "SELECT count(*) FROM customer c WHERE c.referrer_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM customer r WHERE r.id = c.referrer_id)"
        ).fetchone() == (0,)
    assert result.rows["customer"] >= 25
    assert catalogue(source) == before


def test_sources_that_fail_or_conflict_are_reported_without_their_password(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(PLAN_WITHOUT_BLOCKERS)
    unreachable = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/legacy"
    report = rehearse(
        plan,
        options=RehearseOptions(schema_from=unreachable),
        server=postgres_server,
        environ={"PATH": "/usr/bin:/bin"},
    )
    assert report.exit_code == DatabaseError.exit_code
    assert [s.name for s in report.steps] == [
        "schema from postgresql://postgres:***@127.0.0.1:1/legacy (pg_dump --schema-only)"
    ]
    assert "pg_dump of postgresql://postgres:***@127.0.0.1:1/legacy failed" in report.problems[0]
    assert PASSWORD not in repr(report)
    runner = CliRunner()
    for args, expected in (
        (["--rows", "10", "--sample-from", unreachable], "--rows and --sample-from"),
        (["--schema-from", unreachable, "--schema-file", str(plan)], "pass one"),
        (["--schema-from", f"mysql://root:{PASSWORD}@h/db"], "--schema-from must name"),
    ):
        result = runner.invoke(app, ["--config", str(plan), "rehearse", *args])
        assert result.exit_code == ConfigError.exit_code, result.output
        assert expected in result.stderr and PASSWORD not in result.output


def test_check_constraints_of_simple_shapes_are_read_and_others_left_to_the_database() -> None:
    table = sa.Table(
        "t",
        sa.MetaData(),
        *(sa.Column(n, sa.Integer) for n in ("score", "qty", "Odd", "rank")),
        sa.Column("code", sa.String(5)),
        sa.Column("kind", sa.Text),
        sa.Column("yn", sa.String(3)),
        sa.Column("born", sa.Date),
    )
    definitions = [  # as pg_get_constraintdef writes them
        (None, "CHECK (((score >= 0) AND (score <= 100)))"),
        (None, "CHECK ((0 < score))"),
        (None, "CHECK ((qty > (0)::numeric))"),
        (None, "CHECK ((length((code)::text) = 2))"),
        (None, "CHECK ((kind = ANY (ARRAY['retail'::text, 'it''s'::text])))"),
        (None, "CHECK ((born >= '1900-01-01'::date))"),
        (None, 'CHECK ((("Odd" < 10) OR ("Odd" > 20)))'),
        (None, "CHECK ((rank + qty < 10))"),
        ("yn", "CHECK (((VALUE)::text = ANY ((ARRAY['YES'::character varying])::text[])))"),
    ]
    found = allowed_by_checks(definitions, table)
    assert found == {
        "score": Allowed(low=0, low_open=True, high=100),
        "qty": Allowed(low=0, low_open=True),
        "code": Allowed(min_length=2, max_length=2),
        "kind": Allowed(choices=("retail", "it's")),
        "born": Allowed(low=datetime.date(1900, 1, 1)),
        "yn": Allowed(choices=("YES",)),
    }  # "Odd" (an OR) and rank (two columns) are left to the database


@pytest.mark.slow
def test_bigger_generated_and_sampled_rehearsals(
    source: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(PLAN_WITHOUT_BLOCKERS)
    before = catalogue(source)
    for options in (
        RehearseOptions(schema_from=source, rows=5000, batch_size=500, workers=2),
        RehearseOptions(schema_from=source, sample_from=source, sample_rows=350, seed=3),
    ):
        report = rehearse(plan, options=options, server=postgres_server, environ={})
        assert report.ok, report.problems
    assert catalogue(source) == before
