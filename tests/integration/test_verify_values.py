"""verify compares exactly what migrate-data encrypted; text Python cannot decode fails its row.

Both steps read a plaintext the same way (json as its text, SQLite text as
bytes decoded per value) and compare through one method,
``ColumnWork.same_value``. These tests pin the values a naive comparison gets
wrong (JSON strings, NaN, signed zero, numeric scale, key order, offsets)
and text SQLite stores but Python cannot decode.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate import plan as plan_module
from encmigrate.errors import DatabaseError
from encmigrate.keys import FileProvider
from encmigrate.migrate import connect, migrate_data, verify
from encmigrate.migrate.columns import ColumnWork
from encmigrate.migrate.table import TableWork, read_expression
from encmigrate.tracking import failures, migrations
from encmigrate.tracking import metadata as tracking_metadata
from support.cli import cli_command, operator_env

_ENGINES: list[sa.Engine] = []
_BLOB = {"postgresql": "bytea", "sqlite": "BLOB"}
_NOT_UTF8 = "plaintext is not valid UTF-8"


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    while _ENGINES:
        _ENGINES.pop().dispose()


Columns = Sequence[tuple[str, str, str]]  # (name, SQL type, plan type)


def _setup(
    url: str, tmp_path: Path, columns: Columns, rows: Sequence[Sequence[str]]
) -> tuple[sa.Engine, plan_module.Plan, Keyring]:
    """Table ``t`` with the columns and their shadows; ``rows`` are SQL expressions (ids 1..n)."""
    engine = connect(url)
    _ENGINES.append(engine)
    blob = _BLOB[engine.dialect.name]
    names = ", ".join(name for name, _, _ in columns)
    with engine.begin() as conn:
        definitions = ", ".join(f"{n} {sql}, {n}_encrypted {blob}" for n, sql, _ in columns)
        conn.exec_driver_sql(f"CREATE TABLE t (id integer PRIMARY KEY, {definitions})")
        for key, row in enumerate(rows, start=1):
            assert len(row) == len(columns)
            conn.exec_driver_sql(f"INSERT INTO t (id, {names}) VALUES ({key}, {', '.join(row)})")
    tracking_metadata.create_all(engine)
    path = tmp_path / "encmigrate.toml"
    path.write_text(_plan_text(url, columns))
    return engine, plan_module.load(path, environ={}), Keyring.generate()


def _plan_text(url: str, columns: Columns) -> str:
    entries = "".join(
        f'\n[[columns]]\ntable = "t"\ncolumn = "{name}"\ntype = "{kind}"\n'
        for name, _, kind in columns
    )
    return f'[database]\nurl = "{url}"\n{entries}'


def _sql(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def _migrate_and_verify(
    engine: sa.Engine, plan: plan_module.Plan, keyring: Keyring
) -> dict[str, Any]:
    reports = migrate_data(plan, engine, keyring)
    assert [r.rows_failed for r in reports] == [0]
    return {v.column: v for v in verify(plan, engine, keyring)}


def _swap_ciphertexts(engine: sa.Engine, column: str, first: int, second: int) -> None:
    shadow = f"{column}_encrypted"
    with engine.begin() as conn:
        blobs: dict[int, Any] = dict(
            conn.execute(
                sa.text(f"SELECT id, {shadow} FROM t WHERE id IN (:a, :b)"),
                {"a": first, "b": second},
            ).all()
        )
        for key, other in ((first, second), (second, first)):
            conn.execute(
                sa.text(f"UPDATE t SET {shadow} = :blob WHERE id = :id"),
                {"blob": blobs[other], "id": key},
            )


def _work(plan: plan_module.Plan, keyring: Keyring, column: str) -> ColumnWork:
    return ColumnWork(next(c for c in plan.columns if c.column == column), keyring)


# --- defect 9: verify compares what the backfill encrypted ------------------------------------

JSON_TEXTS = [
    '"hello"',
    '""',
    '"123"',
    '"zoë \\u00e9 \\"quoted\\""',
    '{"a": "b"}',
    '[1, "two", null, true, 2.50]',
    "42",
    "-1.5e3",
    "0.1",
    "12345678901234567890123",
    "true",
    "false",
    "null",  # a JSON null: a value, unlike the SQL NULL row below
    '{"b": 1, "a": {"d": [], "c": "zoë"}}',
    '  { "z" :  1 ,"y":[ ] }  ',
    '{"a": "b", "a": "c"}',
]


def test_json_strings_objects_arrays_numbers_booleans_and_nulls_verify_clean(
    db_url: str, tmp_path: Path
) -> None:
    if db_url.startswith("postgresql"):
        columns: Columns = [("jb", "jsonb", "json"), ("js", "json", "json"), ("jt", "text", "json")]
    else:
        columns = [("jb", "JSON", "json"), ("jt", "TEXT", "json")]
    rows = [[_sql(text)] * len(columns) for text in JSON_TEXTS] + [["NULL"] * len(columns)]
    engine, plan, keyring = _setup(db_url, tmp_path, columns, rows)

    verdicts = _migrate_and_verify(engine, plan, keyring)

    for name, _, _ in columns:
        found = verdicts[name]
        assert found.ok, (name, found.summary(), found.problem_keys)
        assert (found.matches, found.both_null) == (len(JSON_TEXTS), 1), name


def test_nan_infinite_signed_zero_and_numeric_scales_verify_clean(
    db_url: str, tmp_path: Path
) -> None:
    if db_url.startswith("postgresql"):
        columns: Columns = [
            ("f", "float8", "float"),
            ("r", "real", "float"),
            ("n", "numeric", "numeric"),
            ("n2", "numeric(10, 2)", "numeric"),
            ("ft", "text", "float"),
            ("nt", "text", "numeric"),
        ]
        texts: list[list[str | None]] = [
            ["NaN", "NaN", "NaN", "NaN", "NaN", "NaN"],
            ["Infinity", "Infinity", "Infinity", "1.10", "Infinity", "Infinity"],
            ["-Infinity", "-Infinity", "-Infinity", "1.1", "-inf", "-Infinity"],
            ["-0", "-0", "-0.00", "-3", "-0.0", "-0.00"],
            ["0", "0", "1.10", "0.10", "0.0", "1.10"],
            ["0.1", "0.1", "1.1", "99999999.99", "1e-300", "1.1"],
            ["1e-300", "3.4e38", "123456789012345678901234567890.123456789", "0", "nan", "1E+3"],
            [None] * 6,
        ]
    else:  # SQLite stores a NaN REAL as NULL and -0.0 as 0.0: text columns keep them
        columns = [
            ("f", "REAL", "float"),
            ("ft", "TEXT", "float"),
            ("nt", "TEXT", "numeric"),
            ("n", "NUMERIC(10, 2)", "numeric"),
        ]
        texts = [
            ["9e999", "NaN", "NaN", "1.10"],
            ["-9e999", "Infinity", "Infinity", "1.1"],
            ["-0.0", "-0.0", "-Infinity", "-3"],
            ["0.1", "-inf", "1.10", "99999999.99"],
            ["1e-300", "nan", "-0.00", "0.10"],
            [None] * 4,
        ]
    rows = [[_sql(text) for text in row] for row in texts]
    if db_url.startswith("sqlite"):  # f takes REAL literals: 9e999 is +Infinity
        rows = [[row[0] or "NULL", *(_sql(t) for t in row[1:])] for row in texts]
    engine, plan, keyring = _setup(db_url, tmp_path, columns, rows)

    verdicts = _migrate_and_verify(engine, plan, keyring)

    for index, (name, _, _) in enumerate(columns):
        found = verdicts[name]
        present = sum(row[index] is not None for row in texts)
        assert found.ok, (name, found.summary(), found.problem_keys)
        assert found.matches == present, name


def test_a_ciphertext_of_another_value_is_a_mismatch_however_close_the_values(
    db_url: str, tmp_path: Path
) -> None:
    """1.10 is not 1.1, -0.0 is not 0.0, NaN is not 1, true is not 1, "1" is not 1."""
    if db_url.startswith("postgresql"):
        columns: Columns = [
            ("n", "numeric", "numeric"),
            ("z", "float8", "float"),
            ("q", "float8", "float"),
            ("j", "jsonb", "json"),
            ("k", "jsonb", "json"),
            ("s", "text", "string"),
        ]
    else:
        columns = [
            ("n", "TEXT", "numeric"),
            ("z", "TEXT", "float"),
            ("q", "TEXT", "float"),
            ("j", "JSON", "json"),
            ("k", "TEXT", "json"),
            ("s", "TEXT", "string"),
        ]
    rows = [
        [_sql(v) for v in ("1.10", "-0.0", "NaN", '{"a": 1}', '"1"', "alpha")],
        [_sql(v) for v in ("1.1", "0.0", "1", '{"a": true}', "1", "beta")],
    ]
    engine, plan, keyring = _setup(db_url, tmp_path, columns, rows)
    assert all(v.ok for v in _migrate_and_verify(engine, plan, keyring).values())

    for name, _, _ in columns:
        _swap_ciphertexts(engine, name, 1, 2)
    verdicts = {v.column: v for v in verify(plan, engine, keyring)}

    for name, _, _ in columns:
        found = verdicts[name]
        assert not found.ok, name
        assert (found.mismatches, found.matches) == (2, 0), name
        assert found.problem_keys == [("mismatch", [1]), ("mismatch", [2])], name


def test_json_object_key_order_is_not_a_mismatch_but_a_changed_value_is(
    db_url: str, tmp_path: Path
) -> None:
    """A ciphertext the application wrote with its own key order holds the same object."""
    sql = "jsonb" if db_url.startswith("postgresql") else "JSON"
    engine, plan, keyring = _setup(
        db_url,
        tmp_path,
        [("j", sql, "json")],
        [[_sql('{"a": 1, "b": [2, {"d": 3, "c": 4}]}')], [_sql('{"a": 1, "b": 2}')]],
    )
    assert _migrate_and_verify(engine, plan, keyring)["j"].ok
    work = _work(plan, keyring, "j")
    with engine.begin() as conn:
        for key, value in (
            (1, {"b": [2, {"c": 4, "d": 3}], "a": 1}),  # same object, other key order
            (2, {"b": 2, "a": 1.5}),  # another value
        ):
            conn.execute(
                sa.text("UPDATE t SET j_encrypted = :blob WHERE id = :id"),
                {"blob": work.cipher.encrypt(value), "id": key},
            )

    (found,) = verify(plan, engine, keyring)

    assert (found.matches, found.mismatches) == (1, 1)
    assert found.problem_keys == [("mismatch", [2])]


def test_an_aware_datetime_compares_as_an_instant_whatever_its_offset(
    pg_url: str, tmp_path: Path
) -> None:
    """timestamptz keeps no offset: the session's time zone picks the one a read shows."""
    engine, plan, keyring = _setup(
        pg_url,
        tmp_path,
        [("at", "timestamptz", "datetime")],
        [[_sql("2024-03-01 12:00:00+00")], [_sql("2024-03-01 12:00:00+00")]],
    )
    assert _migrate_and_verify(engine, plan, keyring)["at"].ok
    work = _work(plan, keyring, "at")
    plus_five = dt.timezone(dt.timedelta(hours=5))
    with engine.begin() as conn:
        for key, value in (
            (1, dt.datetime(2024, 3, 1, 17, 0, tzinfo=plus_five)),  # the same instant
            (2, dt.datetime(2024, 3, 1, 12, 0, tzinfo=plus_five)),  # five hours earlier
        ):
            conn.execute(
                sa.text("UPDATE t SET at_encrypted = :blob WHERE id = :id"),
                {"blob": work.cipher.encrypt(value), "id": key},
            )

    (found,) = verify(plan, engine, keyring)

    assert (found.matches, found.mismatches) == (1, 1)
    assert found.problem_keys == [("mismatch", [2])]


def test_same_value_is_the_comparison_verify_makes(db_url: str, tmp_path: Path) -> None:
    """The method a repair pass reuses agrees with verify on every row, both ways."""
    sql = "jsonb" if db_url.startswith("postgresql") else "JSON"
    engine, plan, keyring = _setup(
        db_url, tmp_path, [("j", sql, "json")], [[_sql(t)] for t in JSON_TEXTS]
    )
    migrate_data(plan, engine, keyring)
    _swap_ciphertexts(engine, "j", 1, 5)  # "hello" and {"a": "b"}
    table = TableWork(engine, plan.tables[0], keyring)
    (shadow,) = table.shadows
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*table.primary_key, read_expression(shadow), shadow.ciphertext)
        ).all()

    differing = sorted(
        row[0]
        for row in rows
        if not shadow.work.same_value(row[1], shadow.work.cipher.decrypt(row[2]))
    )

    (found,) = verify(plan, engine, keyring)
    assert differing == [1, 5]
    assert [key for _, key in found.problem_keys] == [[1], [5]]


# --- defect 10: text that is not UTF-8 ---------------------------------------------------------

# \xff\xfe then "SECRET-BAD": neither the bytes nor the readable tail may reach any output.
_BAD = "CAST(X'fffe5345435245542d424144' AS TEXT)"
_BAD_JSON = "CAST(X'7b2261223a22c3' AS TEXT)"  # {"a":" then a truncated UTF-8 sequence


def test_sqlite_text_that_is_not_utf8_fails_its_row_and_the_batch_goes_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    columns: Columns = [("s", "TEXT", "string"), ("d", "TEXT", "date"), ("j", "JSON", "json")]
    rows = [
        ["'alpha'", "'2020-01-01'", "'{\"a\": 1}'"],
        [_BAD, "'2020-01-02'", "'[1]'"],
        ["'gamma'", "'2020-01-03'", _BAD_JSON],
        ["'delta'", "'2020-01-04'", "'null'"],
        ["NULL", _BAD, "'\"x\"'"],
        ["'zeta'", "'2020-01-06'", "NULL"],
    ]
    engine, plan, keyring = _setup(sqlite_url, tmp_path, columns, rows)
    with engine.begin() as conn:  # a bytes parameter bound to a TEXT column is stored as is
        conn.execute(sa.text("UPDATE t SET s = :s WHERE id = 6"), {"s": b"\xff\xfeSECRET-BAD"})

    (report,) = migrate_data(plan, engine, keyring)

    assert report.rows_failed == 4
    with engine.connect() as conn:
        failed = conn.execute(
            sa.select(failures.c.column_name, failures.c.primary_key, failures.c.reason).order_by(
                failures.c.id
            )
        ).all()
        encrypted = conn.execute(
            sa.text(
                "SELECT id, s_encrypted IS NOT NULL, d_encrypted IS NOT NULL, "
                "j_encrypted IS NOT NULL FROM t ORDER BY id"
            )
        ).all()
    assert sorted((c, k, r) for c, k, r in failed) == [
        ("d", [5], _NOT_UTF8),
        ("j", [3], _NOT_UTF8),
        ("s", [2], _NOT_UTF8),
        ("s", [6], _NOT_UTF8),
    ]
    assert [tuple(row) for row in encrypted] == [
        (1, 1, 1, 1),
        (2, 0, 1, 1),
        (3, 1, 1, 0),
        (4, 1, 1, 1),
        (5, 0, 0, 1),
        (6, 0, 1, 0),
    ]

    verdicts = {v.column: v for v in verify(plan, engine, keyring)}

    assert (verdicts["s"].undecodable, verdicts["s"].matches, verdicts["s"].both_null) == (2, 3, 1)
    assert verdicts["s"].problem_keys == [("undecodable", [2]), ("undecodable", [6])]
    assert (verdicts["d"].undecodable, verdicts["d"].matches) == (1, 5)
    assert verdicts["j"].problem_keys == [("undecodable", [3])]
    assert not any(v.ok for v in verdicts.values())
    assert all(v.missing == 0 and v.mismatches == 0 for v in verdicts.values())
    assert "1 undecodable" in verdicts["j"].summary()


def test_cli_non_utf8_text_exits_1_names_the_row_and_never_shows_a_value(
    sqlite_url: str, tmp_path: Path
) -> None:
    columns: Columns = [("s", "TEXT", "string"), ("note", "TEXT", "string")]
    secrets = [f"secret-alpha-{i}" for i in range(1, 7)]
    rows = [[_sql(s), _sql(s.replace("alpha", "note"))] for s in secrets]
    rows[2][0] = _BAD
    engine, _, keyring = _setup(sqlite_url, tmp_path, columns, rows)
    FileProvider(tmp_path / "keyring.json").save(keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:  # bytes: the output is checked raw
        return subprocess.run(
            [*cli_command(), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=False,
        )

    migrated = run("migrate-data", "--batch-size", "4")
    checked = run("verify")
    checked_json = run("--json", "verify")

    assert migrated.returncode == 1, migrated.stderr
    assert checked.returncode == 1 and checked_json.returncode == 1, checked.stderr
    assert b"encryption_migration_failures" in migrated.stdout
    assert b"undecodable at key [3]" in checked.stdout
    for done in (migrated, checked, checked_json):
        shown = done.stdout + done.stderr
        assert b"Traceback" not in shown
        for leak in (b"\xff", b"SECRET", b"secret", b"alpha", b"note-", b"xff", b"fffe", b"udcff"):
            assert leak not in shown, (leak, shown)
    (s_verdict, note_verdict) = json.loads(checked_json.stdout)
    assert s_verdict["problem_keys"] == [{"problem": "undecodable", "key": [3]}]
    assert (s_verdict["ok"], s_verdict["matches"], note_verdict["ok"]) == (False, 5, True)
    with engine.connect() as conn:
        failed = conn.execute(sa.select(failures.c.primary_key, failures.c.reason)).all()
        done_rows = conn.execute(
            sa.text("SELECT id FROM t WHERE s_encrypted IS NOT NULL ORDER BY id")
        ).scalars()
        last_error = conn.execute(
            sa.select(migrations.c.last_error).where(migrations.c.column_name == "s")
        ).scalar_one()
        assert list(done_rows) == [1, 2, 4, 5, 6]
    assert [tuple(f) for f in failed] == [([3], _NOT_UTF8)]
    assert last_error is not None and "1 undecodable" in last_error and "SECRET" not in last_error


@pytest.fixture
def sql_ascii_url(pg_url: str) -> Iterator[str]:
    """A SQL_ASCII database beside ``pg_url``, read with client_encoding=utf8.

    Without that setting SQLAlchemy's psycopg dialect cannot even connect:
    psycopg returns every text, the server version too, as bytes.
    """
    url = sa.make_url(pg_url)
    name = f"{url.database}_ascii"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    try:
        yield url.set(database=name, query={"client_encoding": "utf8"}).render_as_string(
            hide_password=False
        )
    finally:
        while _ENGINES:
            _ENGINES.pop().dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_sql_ascii_text_that_is_not_utf8_stops_the_run_and_verify_without_showing_it(
    sql_ascii_url: str, tmp_path: Path
) -> None:
    """A UTF8 database cannot hold such text; a SQL_ASCII one can, and the server refuses to
    send it to a UTF-8 client. The row cannot be named then, but no value is shown either."""
    bad = "convert_from('\\xfffe5345435245542d424144'::bytea, 'SQL_ASCII')"
    engine, plan, keyring = _setup(
        sql_ascii_url, tmp_path, [("s", "text", "string")], [["'secret-alpha'"], [bad]]
    )

    with pytest.raises(DatabaseError) as migrating:
        migrate_data(plan, engine, keyring)
    with pytest.raises(DatabaseError) as verifying:
        verify(plan, engine, keyring)

    for error in (migrating.value, verifying.value):
        text = str(error)
        assert "SQLSTATE 22021" in text
        assert not any(leak in text for leak in ("SECRET", "secret", "xff", "0xff", "fffe"))
    assert "SQL_ASCII" in str(verifying.value)
    assert verifying.value.__cause__ is None and verifying.value.__suppress_context__
