"""What ``datetime`` values migrate-data encrypts, and how the model types read them back.

The plan has no time zone setting: ``migrate-data`` encrypts what the driver
gives for the column, and the ``datetime`` codec keeps an offset as it is
(never converting it) and a naive value naive. docs/fields.md ("Dates and
times") states the outcome per column kind; these tests pin it:

* PostgreSQL ``timestamptz`` holds an instant, no offset: the value comes out
  aware, in the migrating session's ``TimeZone`` (here the database's setting);
* PostgreSQL ``timestamp`` comes out naive;
* SQLite stores text: a text with an offset (``+02:00``, ``Z``) comes out
  aware with that offset, one without comes out naive, a date alone is midnight;
* ``EncryptedDateTime(timezone=True)`` reads those aware values as they are,
  and ``EncryptedDateTime()`` the naive ones: the ``timezone`` flag checks
  writes only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Integer, MetaData, Table, select

from encmigrate import Keyring
from encmigrate import plan as plan_module
from encmigrate.fields import EncryptedDateTime
from encmigrate.migrate import connect, migrate_data, verify
from encmigrate.tracking import metadata as tracking_metadata

UTC = dt.UTC
PLUS_2 = dt.timezone(dt.timedelta(hours=2))
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def _migrate(
    url: str,
    tmp_path: Path,
    engines: list[sa.Engine],
    sql_types: Sequence[str],
    rows: Sequence[str],
) -> tuple[sa.Engine, Keyring]:
    """Table ``t`` with columns c0.. of ``sql_types`` (one row per SQL VALUES tuple), migrated."""
    engine = connect(url)
    engines.append(engine)
    blob = "bytea" if engine.dialect.name == "postgresql" else "BLOB"
    names = [f"c{i}" for i in range(len(sql_types))]
    with engine.begin() as conn:
        columns = ", ".join(
            f"{n} {t}, {n}_encrypted {blob}" for n, t in zip(names, sql_types, strict=True)
        )
        conn.exec_driver_sql(f"CREATE TABLE t (id integer PRIMARY KEY, {columns})")
        for key, row in enumerate(rows, start=1):
            conn.exec_driver_sql(f"INSERT INTO t (id, {', '.join(names)}) VALUES ({key}, {row})")
    tracking_metadata.create_all(engine)
    entries = "".join(
        f'\n[[columns]]\ntable = "t"\ncolumn = "{n}"\ntype = "datetime"\n' for n in names
    )
    path = tmp_path / "encmigrate.toml"
    path.write_text(f'[database]\nurl = "{url}"\n{entries}')
    plan = plan_module.load(path, environ={})
    keyring = Keyring.generate()
    [report] = migrate_data(plan, engine, keyring)
    assert report.rows_failed == 0
    assert all(v.ok for v in verify(plan, engine, keyring))
    return engine, keyring


def _read(engine: sa.Engine, *types: EncryptedDateTime) -> list[tuple[Any, ...]]:
    """The shadow columns read through model columns of ``types`` (context t.c<i>)."""
    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        *(Column(f"c{i}_encrypted", type_) for i, type_ in enumerate(types)),
    )
    with engine.connect() as conn:
        found = conn.execute(select(*list(table.c)[1:]).order_by(table.c.id)).all()
    return [tuple(row) for row in found]


def _offsets(values: Sequence[Any]) -> list[Any]:
    return [v.utcoffset() if isinstance(v, dt.datetime) else v for v in values]


def test_postgresql_timestamptz_is_aware_in_the_session_zone_and_timestamp_naive(
    pg_url: str, tmp_path: Path, engines: list[sa.Engine]
) -> None:
    database = sa.make_url(pg_url).database
    admin = sa.create_engine(pg_url)
    engines.append(admin)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO 'Asia/Kolkata'")
    engine, keyring = _migrate(
        pg_url,
        tmp_path,
        engines,
        ["timestamptz", "timestamp"],
        ["'2024-03-01 12:00:00+02', '2024-03-01 12:00:00'"],
    )
    [(aware, naive)] = _read(
        engine,
        EncryptedDateTime(timezone=True, keyring=keyring),
        EncryptedDateTime(keyring=keyring),
    )
    # The instant written with +02 comes back in the session's zone (+05:30), not as +02.
    assert aware == dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert aware.utcoffset() == PLUS_0530.utcoffset(None)
    assert naive == dt.datetime(2024, 3, 1, 12, 0) and naive.tzinfo is None


def test_sqlite_text_keeps_the_offset_it_is_written_with(
    sqlite_url: str, tmp_path: Path, engines: list[sa.Engine]
) -> None:
    engine, keyring = _migrate(
        sqlite_url,
        tmp_path,
        engines,
        ["DATETIME", "TEXT"],
        [
            "'2024-03-01 12:00:00', '2024-03-01 12:00:00+02:00'",
            "'2024-03-01T12:00:00Z', '2024-03-01'",
            "'2024-03-01 12:00:00.5', '2024-03-01T12:00:00+00:00'",
        ],
    )
    naive_type = EncryptedDateTime(keyring=keyring)
    values = _read(engine, naive_type, EncryptedDateTime(keyring=keyring))
    assert [value for row in values for value in row] == [
        dt.datetime(2024, 3, 1, 12, 0),
        dt.datetime(2024, 3, 1, 12, 0, tzinfo=PLUS_2),
        dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 1, 0, 0),
        dt.datetime(2024, 3, 1, 12, 0, 0, 500000),
        dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
    ]
    # Not converted: +02:00 stays +02:00 (an aware value equal to 10:00 UTC).
    assert _offsets([values[0][1]]) == [dt.timedelta(hours=2)]
    # The naive model type read aware values as they are: timezone= checks writes only.
    assert _offsets([values[0][0], values[1][0]]) == [None, dt.timedelta(0)]


def test_sqlite_number_in_a_datetime_column_fails_its_row_not_the_run(
    sqlite_url: str, tmp_path: Path, engines: list[sa.Engine]
) -> None:
    # SQLite keeps whatever was written into a DATETIME column; SQLAlchemy's date parser
    # raised TypeError on a number and stopped migrate-data at that batch.
    engine = connect(sqlite_url)
    engines.append(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE t (id integer PRIMARY KEY, c0 DATETIME, c0_encrypted BLOB)"
        )
        conn.exec_driver_sql(
            "INSERT INTO t (id, c0) VALUES (1, '2024-03-01 12:00:00'), (2, 1709294400), "
            "(3, '2024-03-01T12:00:00Z'), (4, NULL)"
        )
    tracking_metadata.create_all(engine)
    path = tmp_path / "encmigrate.toml"
    path.write_text(
        f'[database]\nurl = "{sqlite_url}"\n[[columns]]\ntable = "t"\ncolumn = "c0"\n'
        'type = "datetime"\n'
    )
    plan = plan_module.load(path, environ={})
    keyring = Keyring.generate()
    [report] = migrate_data(plan, engine, keyring)
    assert (report.rows_done, report.rows_failed) == (2, 1)
    with engine.connect() as conn:
        failed = conn.execute(
            sa.text("SELECT primary_key, reason FROM encryption_migration_failures")
        ).all()
    assert [(key, reason) for key, reason in failed] == [
        ("[2]", "datetime field expects datetime.datetime, got int")
    ]
    values = _read(engine, EncryptedDateTime(keyring=keyring))
    assert values == [
        (dt.datetime(2024, 3, 1, 12, 0),),
        (None,),
        (dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC),),
        (None,),
    ]
