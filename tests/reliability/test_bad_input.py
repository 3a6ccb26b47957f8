"""Bad input of every kind: tampered envelopes, wrong keys, bad plans and keyrings, odd names.

Every problem is refused with the documented error and nothing is written:
envelopes always raise ``DecryptionError``; a bad plan or keyring lists every
problem and leaves the database and the project files as they were; values
that do not fit their type go to the failures table; table and column names
shaped like SQL injection are quoted (or refused by plan validation) and never
executed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from encmigrate import Keyring, get_cipher
from encmigrate.boundary import mapped_errors
from encmigrate.cli.state import reports_errors
from encmigrate.crypto.codecs import TYPE_NAMES, codec_for
from encmigrate.errors import DatabaseError, DecryptionError, KeyConfigError
from encmigrate.keys.keyring import KeyState
from encmigrate.migrate import MigrateOptions, migrate_data, verify
from encmigrate.plan import PlanError
from encmigrate.plan import load as load_plan
from encmigrate.revisions import add_columns
from reliability.conftest import Prepare
from support.cli import operator_env, run_cli
from support.revisions import make_project, schema_of

SAMPLES: dict[str, Any] = {
    "string": "zoë@example.com",
    "text": "a longer text ✓",
    "integer": 42,
    "bigint": 2**40 + 3,
    "float": 1.5,
    "numeric": Decimal("12.34"),
    "boolean": True,
    "date": dt.date(2024, 2, 29),
    "datetime": dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC),
    "time": dt.time(23, 59, 1),
    "binary": b"\x00\x01\xff",
    "json": {"a": [1, "b"]},
}


def test_samples_cover_every_type() -> None:
    assert set(SAMPLES) == set(TYPE_NAMES)


def test_every_flipped_bit_and_every_truncation_of_every_type_is_rejected() -> None:
    keyring = Keyring.generate()
    attempts = rejected = 0
    expected = 0
    messages: set[str] = set()
    for type_name, value in SAMPLES.items():
        cipher = get_cipher(f"sweep.{type_name}", type=type_name, keyring=keyring)
        blob = cipher.encrypt(value)
        assert blob is not None and cipher.decrypt(blob) == value
        # header 5 + nonce 12 + encoded value + tag 16; 8 flips and 1 truncation per byte
        size = 33 + len(codec_for(type_name).encode(value))
        assert len(blob) == size
        expected += 9 * size
        tampered = []
        for bit in range(len(blob) * 8):
            changed = bytearray(blob)
            changed[bit // 8] ^= 1 << (bit % 8)
            tampered.append(bytes(changed))
        tampered += [blob[:cut] for cut in range(len(blob))]
        for bad in tampered:
            attempts += 1
            try:
                cipher.decrypt(bad)
            except DecryptionError as exc:
                rejected += 1
                messages.add(str(exc))
        with pytest.raises(DecryptionError):
            cipher.batch_decrypt([blob, tampered[len(tampered) // 2]])
    assert attempts == rejected == expected == 4581  # 509 envelope bytes x 9
    assert not [m for m in messages if "zoë" in m or "longer text" in m]


def test_wrong_context_wrong_key_disabled_and_destroyed_versions_are_refused() -> None:
    keyring = Keyring.generate()
    blob = get_cipher("customers.email", keyring=keyring).encrypt("secret@x.io")
    with pytest.raises(DecryptionError, match=r"customers\.name"):
        get_cipher("customers.name", keyring=keyring).decrypt(blob)
    with pytest.raises(DecryptionError, match="key version 1"):
        get_cipher("customers.email", keyring=Keyring.generate()).decrypt(blob)
    rotated = keyring.rotated()
    assert get_cipher("customers.email", keyring=rotated).decrypt(blob) == "secret@x.io"
    disabled = rotated.with_state(1, KeyState.DISABLED)
    with pytest.raises(DecryptionError, match="key version 1"):
        get_cipher("customers.email", keyring=disabled).decrypt(blob)
    with pytest.raises(DecryptionError, match="key version 1"):
        get_cipher("customers.email", keyring=rotated.destroyed(1)).decrypt(blob)


BAD_KEYRINGS = {
    "not json": "{not json",
    "empty object": "{}",
    "no active version": json.dumps(
        {"format": "encmigrate-keyring/1", "kdf": "hkdf-sha256", "current": 1, "versions": []}
    ),
    "short key": json.dumps(
        {
            "format": "encmigrate-keyring/1",
            "kdf": "hkdf-sha256",
            "current": 1,
            "versions": [
                {"version": 1, "key": "c2hvcnQ=", "state": "active", "created": "2026-01-01"}
            ],
        }
    ),
    "unknown kdf and state": json.dumps(
        {
            "format": "encmigrate-keyring/1",
            "kdf": "md5",
            "current": 1,
            "versions": [{"version": 1, "key": None, "state": "lost", "created": "2026-01-01"}],
        }
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_KEYRINGS))
def test_malformed_keyrings_are_refused(name: str) -> None:
    with pytest.raises(KeyConfigError) as raised:
        Keyring.from_json(BAD_KEYRINGS[name])
    assert "c2hvcnQ=" not in str(raised.value)


def _shadow_state(url: str) -> tuple[int, int, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return (
                conn.execute(
                    sa.text("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL")
                ).scalar_one(),
                conn.execute(sa.text("SELECT count(*) FROM encryption_migrations")).scalar_one(),
                conn.execute(
                    sa.text("SELECT count(*) FROM encryption_migration_chunks")
                ).scalar_one(),
            )
    finally:
        engine.dispose()


def test_a_malformed_keyring_stops_migrate_data_before_anything_is_written(
    pg_url: str, prepare: Prepare, tmp_path: Path
) -> None:
    prepare(pg_url, 200)
    env = operator_env()
    for name in sorted(BAD_KEYRINGS):
        env["ENCMIGRATE_KEYRING"] = BAD_KEYRINGS[name]
        done = run_cli("migrate-data", cwd=tmp_path, env=env)
        assert done.returncode == 3, (name, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.startswith("error:")
        assert _shadow_state(pg_url) == (0, 0, 0)


BAD_PLAN = """
[databse]
url = "x"

[[columns]]
table = "customers"
column = "email"
type = "strng"

[[columns]]
table = "customers"
column = "email"

[[columns]]
table = "customers"
column = "emial"

[[columns]]
table = "customers"
column = "name"
normalize = "lower"

[[columns]]
table = "no_such_table"
column = "x"

[[columns]]
table = "a.b.c"
column = "y"
"""


def test_a_malformed_plan_lists_every_problem_and_writes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, email text, name text)"))
    engine.dispose()
    project = make_project(tmp_path, pg_url, "")
    project.plan_file.write_text(f'[database]\nurl = "{pg_url}"\n' + BAD_PLAN.replace("x", "x", 1))
    schema = schema_of(pg_url)
    files = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(PlanError) as raised:
        load_plan(project.plan_file, environ={})
    problems = raised.value.problems
    for expected in (
        "databse",
        "strng",
        "duplicate",
        "emial",
        "normalize",
        "no_such_table",
        "columns[5].table",  # "a.b.c": named by its place, the text is not echoed
    ):
        assert sum(expected in p for p in problems) == 1, (expected, problems)
    env = operator_env(ENCMIGRATE_KEYRING=Keyring.generate().to_json())
    for command in (["plan", "check"], ["add-columns", "--apply"], ["migrate-data"]):
        done = run_cli(*command, cwd=tmp_path, env=env)
        assert done.returncode == 2, (command, done.stderr)
        assert f"the plan has {len(problems)} problems" in done.stderr
    assert schema_of(pg_url) == schema
    assert sorted(str(p) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts) == [
        f for f in files if "__pycache__" not in f
    ]


def test_values_that_do_not_fit_their_type_go_to_the_failures_table(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, 300)
    migration.execute(
        "DROP TRIGGER encmigrate_shadow ON customers",
        "ALTER TABLE customers ALTER COLUMN born TYPE text",
        "ALTER TABLE customers ALTER COLUMN balance TYPE text",
    )
    with migration.engine.begin() as conn:
        from support.shadow_schema import install_trigger

        install_trigger(conn)
    migration.execute(
        "UPDATE customers SET born = 'not a date' WHERE id = 10",
        "UPDATE customers SET born = '2021-02-30' WHERE id = 11",
        "UPDATE customers SET born = '' WHERE id = 12",
        "UPDATE customers SET balance = 'twelve' WHERE id = 13",
        "UPDATE customers SET balance = 'NaNx' WHERE id = 14",
    )
    migration.plan = load_plan(migration.plan_path, environ={})
    reports = migrate_data(migration.plan, migration.engine, migration.keyring)
    assert reports[0].rows_failed == 5
    with migration.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT column_name, primary_key::text, reason FROM encryption_migration_failures "
                "ORDER BY 2"
            )
        ).all()
    assert [(c, k) for c, k, _ in rows] == [
        ("born", "[10]"),
        ("born", "[11]"),
        ("born", "[12]"),
        ("balance", "[13]"),
        ("balance", "[14]"),
    ]
    for _, _, reason in rows:
        assert not any(bad in reason for bad in ("not a date", "2021-02-30", "twelve", "NaNx"))
    verdicts = {v.column: v for v in verify(migration.plan, migration.engine, migration.keyring)}
    assert verdicts["born"].missing == 3 and verdicts["balance"].missing == 2
    assert verdicts["email"].ok and verdicts["profile"].ok


EVIL_TABLE = 'we"ird; DROP TABLE victim; --'
EVIL_COLUMN = "no\"te'; DROP TABLE victim; --"


def test_injection_shaped_names_are_quoted_never_executed(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    metadata = sa.MetaData()
    evil = sa.Table(
        EVIL_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(EVIL_COLUMN, sa.Text),
    )
    victim = sa.Table("victim", metadata, sa.Column("id", sa.Integer, primary_key=True))
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(evil.insert(), [{"id": i, EVIL_COLUMN: f"value {i}"} for i in range(1, 301)])
        conn.execute(victim.insert(), [{"id": 1}])
    columns = (
        f"[[columns]]\ntable = {json.dumps(EVIL_TABLE)}\ncolumn = {json.dumps(EVIL_COLUMN)}\n"
        "searchable = true\n"
    )
    project = make_project(tmp_path, pg_url, columns)
    plan = project.plan()
    add_columns(plan, apply=True)
    plan = project.plan()
    keyring = Keyring.generate()
    reports = migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=70))
    assert reports[0].rows_done == 300
    verdicts = verify(plan, engine, keyring)
    assert verdicts[0].ok and verdicts[0].matches == 300
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM victim")).scalar_one() == 1
    engine.dispose()


def test_a_plan_naming_a_statement_as_a_table_is_refused(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, email text)"))
        conn.execute(sa.text("CREATE TABLE x (id int PRIMARY KEY)"))
    project = make_project(
        tmp_path, pg_url, '[[columns]]\ntable = "customers; DROP TABLE x"\ncolumn = "email"\n'
    )
    with pytest.raises(PlanError, match="does not exist in the database"):
        project.plan()
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("x")
    engine.dispose()


def test_json_null_plaintext_does_not_block_the_drop(pg_url: str, prepare: Prepare) -> None:
    migration = prepare(pg_url, 100)
    migration.execute("UPDATE customers SET profile = 'null'::json WHERE id IN (5, 6, 7)")
    migrate_data(migration.plan, migration.engine, migration.keyring)
    migration.check()
    stuck = migration.scalar(
        "SELECT count(*) FROM customers WHERE profile IS NOT NULL AND profile_encrypted IS NULL"
    )
    assert stuck == 0  # what drop-unencrypted's check (and the catch-up pass) look for


# --- database errors: one line through the boundary, never a bound value ----------------------

SECRET_VALUE = "plaintext-never-shown@example.com"


def _insert_twice(url: str) -> None:
    """A statement that fails with a plaintext parameter (a unique violation)."""
    # No hide_parameters: SQLAlchemy's own message would show the bound values.
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE people (id integer PRIMARY KEY, email text UNIQUE)"))
        insert = sa.text("INSERT INTO people (id, email) VALUES (:id, :email)")
        with engine.begin() as conn:
            conn.execute(insert, {"id": 1, "email": SECRET_VALUE})
            conn.execute(insert, {"id": 2, "email": SECRET_VALUE})
    finally:
        engine.dispose()


def test_a_failing_statement_is_a_database_error_without_its_values(db_url: str) -> None:
    with pytest.raises(DatabaseError) as raised, mapped_errors():
        _insert_twice(db_url)
    text = str(raised.value)
    assert SECRET_VALUE in str(raised.value.__context__)  # what SQLAlchemy would have printed
    assert SECRET_VALUE not in text and SECRET_VALUE not in repr(raised.value)
    assert raised.value.exit_code == 4 and "\n" not in text
    if db_url.startswith("postgresql"):
        assert raised.value.sqlstate == "23505"
        assert text == (
            "database error (SQLSTATE 23505 UniqueViolation): "
            'duplicate key value violates unique constraint "people_email_key"'
        )
    else:
        assert text == "database error (IntegrityError): UNIQUE constraint failed: people.email"


def test_a_value_postgresql_quotes_in_its_message_is_not_shown(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with pytest.raises(DatabaseError) as raised, mapped_errors(), engine.connect() as conn:
            conn.execute(sa.text("SELECT CAST(:v AS integer)"), {"v": SECRET_VALUE})
    finally:
        engine.dispose()
    assert SECRET_VALUE in str(raised.value.__context__)
    assert str(raised.value) == "database error (SQLSTATE 22P02 InvalidTextRepresentation)"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_cli_shows_a_failing_statement_in_one_line_without_its_values(
    pg_url: str, debug: bool, caplog: pytest.LogCaptureFixture
) -> None:
    alone = typer.Typer()

    @alone.command()
    @reports_errors
    def write() -> None:
        _insert_twice(pg_url)

    if debug:
        caplog.set_level(logging.DEBUG, logger="encmigrate")
    result = CliRunner().invoke(alone, [])
    assert result.exit_code == 4
    assert SECRET_VALUE not in result.output
    assert "error: database error (SQLSTATE 23505 UniqueViolation)" in result.stderr
    if debug:  # the traceback shows where it failed, with the same safe message
        assert "Traceback" in result.stderr and "_insert_twice" in result.stderr
    else:
        assert result.stderr.count("\n") == 1
