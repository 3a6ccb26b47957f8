"""The SQL the migrator builds, compiled for PostgreSQL and SQLite: no server, no batch run.

Each test reflects a small table in an in-memory SQLite database (a schema is an
attached database there), then compiles the statements the migrator would send
(the keyset batch SELECT, the batch UPDATE, the chunk claim and checkpoint) with
each dialect, or records them on a stand-in connection that never runs them. The
integration suites run the same statements against real servers; these tests pin
their shape: key order and row-value cursors for composite keys, the row locks,
the (tableoid, ctid) address that partitions need, the re-proved lease, and the
quoting of names a plan may use (quotes, ``%``, ``;``, ``--``, spaces).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg

from encmigrate.crypto.cipher import has_none
from encmigrate.keys import Keyring
from encmigrate.migrate import chunks as chunking
from encmigrate.migrate import pgarrays
from encmigrate.migrate.batch import PreparedBatch, RowAddresses, read_encrypt, write_rows
from encmigrate.migrate.keyset import after, at_most
from encmigrate.migrate.table import TableWork
from encmigrate.plan import ColumnPlan, TablePlan

PG = postgresql_psycopg.dialect()  # what the migrator's engines use (binds carry casts)
LITE = sqlite.dialect()

HOSTILE_SCHEMA = 'we"ird%'
HOSTILE_TABLE = 'or"der; --'
HOSTILE_COLUMN = 'e-mail\'s "x"'


def _sql(statement: Any, dialect: sa.Dialect, *, casts: bool = False) -> str:
    """The statement's text on one line; without the casts psycopg's dialect adds to binds."""
    text = " ".join(str(statement.compile(dialect=dialect)).split())
    return text if casts else _BIND_CAST.sub(r"\1", text)


_BIND_CAST = re.compile(r"(%\(\w+\)s)::[A-Z]+(?: WITH(?:OUT)? TIME ZONE)?(?:\(\d+\))?")


def _params(statement: Any, dialect: sa.Dialect) -> dict[str, Any]:
    return dict(statement.compile(dialect=dialect).params)


def _ident(name: str) -> str:
    """A name quoted as SQL writes it (quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _work(
    *,
    table: str = "customer",
    schema: str | None = None,
    key: tuple[str, ...] = ("tenant", "id"),
    column: str = "email",
    dialect: str = "sqlite",
) -> TableWork:
    """A TableWork reflected from SQLite; ``dialect`` is the database its SQL is built for.

    The key is (text, integer) columns; the planned column is text with a BLOB shadow.
    """
    engine = sa.create_engine("sqlite://")
    if schema is not None:

        def attach(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"ATTACH DATABASE ':memory:' AS {_ident(schema)}")

        sa.event.listen(engine, "connect", attach)
    key_types = ["TEXT", *["INTEGER"] * (len(key) - 1)]
    columns = [f"{_ident(k)} {t} NOT NULL" for k, t in zip(key, key_types, strict=True)]
    columns += [f"{_ident(column)} TEXT", f"{_ident(column + '_encrypted')} BLOB"]
    qualified = _ident(table) if schema is None else f"{_ident(schema)}.{_ident(table)}"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {qualified} ({', '.join(columns)}, "
            f"PRIMARY KEY ({', '.join(_ident(k) for k in key)}))"
        )
    name = table if schema is None else f"{schema}.{table}"
    plan = TablePlan(
        table=name,
        view=f"{table}_v",
        columns=(ColumnPlan(table=name, column=column, type="string", context="test.email"),),
        primary_key=key,
    )
    try:
        work = TableWork(engine, plan, Keyring.generate())
    finally:
        engine.dispose()
    if dialect == "postgresql":  # as PostgreSQL reflects the shadow column
        work.shadows[0].ciphertext.type = postgresql.BYTEA()
    work.dialect = dialect  # the SQL is built per dialect; reflection came from SQLite
    return work


# -- a stand-in connection that records statements ---------------------------------


class _Result:
    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount

    def mappings(self) -> _Result:
        return self

    def first(self) -> None:
        return None

    def all(self) -> list[Any]:
        return []

    def one(self) -> tuple[int, dt.datetime]:
        return (4242, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))  # pid, backend_start


class _RawCursor:
    def __init__(self, log: list[tuple[str, list[Any], bool]]) -> None:
        self.log = log

    def __enter__(self) -> _RawCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    description = None  # nothing is run: no result columns

    def execute(self, sql: str, params: Any, *, binary: bool = False) -> None:
        self.log.append((sql, params, binary))

    def fetchall(self) -> list[tuple[Any, ...]]:
        return []


class _RawConnection:
    """The psycopg connection the PostgreSQL batch UPDATE writes to directly."""

    def __init__(self) -> None:
        self.adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
        self.log: list[tuple[str, list[Any], bool]] = []

    def cursor(self) -> _RawCursor:
        return _RawCursor(self.log)


class _Rows:
    def all(self) -> list[Any]:
        return []


class _Recorder:
    """Enough of ``sa.Connection`` for the migrator's builders; nothing is ever run."""

    def __init__(self, dialect: sa.Dialect, *, rowcount: int = 1) -> None:
        self.dialect = dialect
        self.info: dict[str, Any] = {}
        self.statements: list[tuple[Any, Any]] = []
        self.rowcount = rowcount
        self.raw = _RawConnection()
        self.connection = SimpleNamespace(dbapi_connection=self.raw)

    def execute(self, statement: Any, parameters: Any = None) -> _Result:
        self.statements.append((statement, parameters))
        return _Result(self.rowcount)

    def exec_driver_sql(self, sql: str, parameters: Any = None) -> _Result:
        self.statements.append((sql, parameters))
        return _Result(self.rowcount)

    def as_connection(self) -> sa.Connection:
        return cast(sa.Connection, self)


# -- keyset cursors ------------------------------------------------------------------


def test_a_composite_key_cursor_is_one_row_value_comparison_in_key_order() -> None:
    work = _work()
    lower = after(work.primary_key, ("acme", 7))
    upper = at_most(work.primary_key, ("zeta", 1))
    assert _sql(lower, PG).startswith("(customer.tenant, customer.id) > (")
    assert _sql(upper, PG).startswith("(customer.tenant, customer.id) <= (")
    assert _sql(lower, LITE) == "(customer.tenant, customer.id) > (?, ?)"
    # Values bound in key-column order, with the key columns' types.
    assert list(_params(lower, PG).values()) == ["acme", 7]
    assert re.search(r"> \(%\(\w+\)s::VARCHAR, %\(\w+\)s::INTEGER\)", _sql(lower, PG, casts=True))


def test_a_single_column_key_compares_the_column_itself() -> None:
    work = _work(key=("tenant",))
    assert _sql(after(work.primary_key, ("acme",)), LITE) == "customer.tenant > ?"
    assert _sql(at_most(work.primary_key, ("acme",)), LITE) == "customer.tenant <= ?"


# -- the batch SELECT ----------------------------------------------------------------


def test_postgresql_batch_select_locks_rows_in_key_order_without_offset() -> None:
    work = _work(dialect="postgresql")
    query = work.select_pending(("acme", 7), ("zeta", 1), 500, lock=True)
    sql = _sql(query, PG)
    assert sql.endswith("ORDER BY customer.tenant, customer.id LIMIT %(param_5)s FOR NO KEY UPDATE")
    assert "OFFSET" not in sql  # backfill rule 2
    assert "(customer.tenant, customer.id) > (" in sql
    assert "(customer.tenant, customer.id) <= (" in sql
    assert "customer.email IS NOT NULL AND customer.email_encrypted IS NULL" in sql
    assert list(_params(query, PG).values()) == ["acme", 7, "zeta", 1, 500]


def test_postgresql_batch_select_reads_each_rows_partition_and_ctid_last() -> None:
    """A ctid repeats across partitions: the address is (tableoid, ctid), the last two columns."""
    work = _work(dialect="postgresql")
    query = work.select_pending(None, None, 100, lock=True)
    names = [column.name for column in query.selected_columns]
    assert names[:2] == ["tenant", "id"]
    assert names[-2:] == ["_tableoid", "_ctid"]
    sql = _sql(query, PG)
    assert "tableoid::text AS _tableoid, ctid AS _ctid" in sql
    rows = [("acme", 1, "a", True, "16384", "(0,1)"), ("acme", 2, "b", True, "16390", "(0,1)")]
    assert RowAddresses.of(rows) == RowAddresses(["16384", "16390"], ["(0,1)", "(0,1)"])


def test_the_first_batch_has_no_cursor_and_an_unlocked_select_takes_no_lock() -> None:
    work = _work(dialect="postgresql")
    sql = _sql(work.select_pending(None, None, 100, lock=False), PG)
    assert "FOR " not in sql
    assert ") > (" not in sql
    assert ") <= (" not in sql
    assert "WHERE customer.email IS NOT NULL AND customer.email_encrypted IS NULL" in sql


def test_sqlite_batch_select_takes_no_row_lock_and_reads_text_as_bytes() -> None:
    work = _work()
    query = work.select_pending(("acme", 7), None, 100, lock=True)
    sql = _sql(query, LITE)
    assert "FOR " not in sql
    assert "ctid" not in sql
    assert "tableoid" not in sql
    # One undecodable value must not fail the whole fetch (table.read_expression).
    assert (
        "CASE WHEN typeof(customer.email) = 'text' THEN CAST(customer.email AS BLOB) "
        "ELSE customer.email END" in sql
    )
    assert sql.endswith("ORDER BY customer.tenant, customer.id LIMIT ? OFFSET ?")
    # The cursor, the batch size, and an OFFSET of 0 (SQLite's grammar pairs it with LIMIT).
    assert list(_params(query, LITE).values()) == ["acme", 7, 100, 0]


def test_read_encrypt_sends_the_locking_select_on_the_driver_cursor_with_named_keys() -> None:
    work = _work(dialect="postgresql")
    conn = _Recorder(PG)
    assert read_encrypt(conn.as_connection(), work, ("acme", 7), None, 10) == []
    assert read_encrypt(conn.as_connection(), work, ("acme", 9), ("b", 1), 5) == []
    assert conn.statements == []  # not through SQLAlchemy: compiled once per shape
    (first, _, _), (second, params, _) = conn.raw.log
    assert first.endswith("FOR NO KEY UPDATE")
    assert "(customer.tenant, customer.id) > (%(lo0)s::VARCHAR, %(lo1)s::INTEGER)" in first
    assert "LIMIT %(lim)s::INTEGER" in first
    assert "(customer.tenant, customer.id) <= (%(hi0)s::VARCHAR, %(hi1)s::INTEGER)" in second
    assert params == {"lim": 5, "lo0": "acme", "lo1": 9, "hi0": "b", "hi1": 1}


def test_read_encrypt_on_sqlite_goes_through_sqlalchemy() -> None:
    work = _work(dialect="sqlite")
    conn = _Recorder(LITE)
    conn.execute = lambda statement, parameters=None: (  # type: ignore[method-assign]
        conn.statements.append((statement, parameters)) or _Rows()
    )
    assert read_encrypt(conn.as_connection(), work, ("acme", 7), None, 10) == []
    ((statement, _),) = conn.statements
    assert "FOR" not in _sql(statement, LITE)


def test_a_schema_qualified_table_is_qualified_everywhere() -> None:
    work = _work(schema="sales", dialect="postgresql")
    sql = _sql(work.select_pending(("acme", 7), None, 10, lock=True), PG)
    assert "FROM sales.customer " in sql
    assert "ORDER BY sales.customer.tenant, sales.customer.id " in sql
    assert _sql(work.count_pending(), PG).startswith(
        "SELECT count(*) AS count_1 FROM sales.customer"
    )


def test_hostile_names_are_quoted_in_the_batch_select() -> None:
    work = _work(
        schema=HOSTILE_SCHEMA, table=HOSTILE_TABLE, key=("Tenant", "select"), column=HOSTILE_COLUMN
    )
    for dialect in (PG, LITE):
        work.dialect = dialect.name
        sql = _sql(work.select_pending(("acme", 7), ("b", 1), 10, lock=True), dialect)
        schema = _ident(HOSTILE_SCHEMA)
        if dialect is PG:
            schema = schema.replace("%", "%%")  # psycopg formats the text: % is doubled
        table = f"{schema}.{_ident(HOSTILE_TABLE)}"
        assert f"FROM {table} " in sql
        assert f'ORDER BY {table}."Tenant", {table}."select" ' in sql
        assert f"{table}.{_ident(HOSTILE_COLUMN)} IS NOT NULL" in sql
        assert f"{table}.{_ident(HOSTILE_COLUMN + '_encrypted')} IS NULL" in sql
        # Nothing of a name is left outside its quotes.
        unquoted = re.sub(r'"(?:[^"]|"")*"', "", sql)
        assert "--" not in unquoted
        assert ";" not in unquoted
        assert "'s" not in unquoted.replace("'text'", "")


# -- the batch UPDATE ----------------------------------------------------------------


def _pg_write(
    work: TableWork, values: list[bytes | None], *, tids: RowAddresses | None
) -> tuple[str, list[Any], bool]:
    conn = _Recorder(PG)
    keys = [("acme", i) for i in range(len(values))]
    write_rows(conn.as_connection(), work, keys, [values], [work.shadows[0].ciphertext], tids=tids)
    ((sql, params, binary),) = conn.raw.log
    return sql, params, binary


def test_postgresql_update_finds_rows_by_partition_and_ctid_in_one_statement() -> None:
    work = _work(dialect="postgresql")
    tids = RowAddresses(["16384", "16390"], ["(0,1)", "(0,1)"])
    sql, params, binary = _pg_write(work, [b"c1", b"c2"], tids=tids)
    assert sql == (
        "UPDATE customer AS t SET email_encrypted = u.v0 "
        "FROM unnest(%b::text[]::oid[], %b::text[]::tid[], %b::BYTEA[]) AS u(r0, k0, v0) "
        "WHERE t.tableoid = u.r0 AND t.ctid = u.k0"
    )
    assert binary
    assert [type(p) for p in params] == [
        pgarrays.TextArray,
        pgarrays.TextArray,
        pgarrays.ByteaArray,
    ]
    assert params == [["16384", "16390"], ["(0,1)", "(0,1)"], [b"c1", b"c2"]]


def test_a_batch_counts_a_row_written_when_any_of_its_columns_got_a_ciphertext() -> None:
    rows = [("acme", 1, "x"), ("acme", 2, "y"), ("b", 3, "z")]
    batch = PreparedBatch(_work(dialect="postgresql"), rows)
    assert batch.keys == [("acme", 1), ("acme", 2), ("b", 3)]  # the key columns, in order
    assert batch.result.last_key == ("b", 3)
    assert batch.rows_sealed() == 0  # nothing sealed yet
    batch.sealed = [[b"c", None, None], [None, None, b"c"]]
    assert batch.rows_sealed() == 2  # the middle row kept both stored values
    batch.sealed.append([b"c", b"c", b"c"])
    assert batch.rows_sealed() == 3
    assert PreparedBatch(_work(dialect="postgresql"), []).keys == []


def test_has_none_looks_for_none_itself_not_for_values_equal_or_falsy() -> None:
    assert not has_none([])
    assert not has_none([0, "", b"", Decimal(0), False, float("nan")])
    assert has_none([Decimal("1.5"), None])
    assert has_none(iter(["a", None]))

    class EqualsEverything:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    assert not has_none([EqualsEverything()])  # `None in values` says True here


def test_postgresql_update_keeps_stored_values_only_where_a_row_has_none() -> None:
    work = _work(dialect="postgresql")
    tids = RowAddresses(["1", "1"], ["(0,1)", "(0,2)"])
    sql, _, _ = _pg_write(work, [b"c1", None], tids=tids)
    assert "SET email_encrypted = COALESCE(u.v0, t.email_encrypted) " in sql


def test_postgresql_update_without_addresses_matches_every_key_column() -> None:
    work = _work(dialect="postgresql")
    sql, params, _ = _pg_write(work, [b"c1", b"c2"], tids=None)
    assert "FROM unnest(%b::TEXT[], %b::INTEGER[], %b::BYTEA[]) AS u(k0, k1, v0) " in sql
    assert sql.endswith("WHERE t.tenant = u.k0 AND t.id = u.k1")
    assert params[:2] == [["acme", "acme"], [0, 1]]


def test_hostile_names_are_quoted_in_the_postgresql_update() -> None:
    work = _work(
        schema=HOSTILE_SCHEMA, table=HOSTILE_TABLE, key=("Tenant", "select"), column=HOSTILE_COLUMN
    )
    work.dialect = "postgresql"
    sql, _, _ = _pg_write(work, [b"c1"], tids=None)
    # psycopg formats this text itself (%b placeholders): a % in a name must be doubled.
    table = f"{_ident(HOSTILE_SCHEMA).replace('%', '%%')}.{_ident(HOSTILE_TABLE)}"
    shadow = _ident(HOSTILE_COLUMN + "_encrypted")
    assert sql.startswith(f"UPDATE {table} AS t SET {shadow} = u.v0 FROM unnest(")
    assert sql.endswith('WHERE t."Tenant" = u.k0 AND t."select" = u.k1')
    assert sql.count("%b") == 3  # every value a parameter, nothing formatted in


def test_sqlite_update_is_one_executemany_by_primary_key() -> None:
    work = _work()
    conn = _Recorder(LITE)
    targets = [work.shadows[0].ciphertext]
    write_rows(conn.as_connection(), work, [("acme", 1), ("acme", 2)], [[b"c1", None]], targets)
    ((statement, rows),) = [(s, p) for s, p in conn.statements if not isinstance(s, str)]
    assert _sql(statement, LITE) == (
        "UPDATE customer SET email_encrypted=coalesce(?, customer.email_encrypted) "
        "WHERE customer.tenant = ? AND customer.id = ?"
    )
    assert rows == [
        {"_k0": "acme", "_k1": 1, "_v0": b"c1"},
        {"_k0": "acme", "_k1": 2, "_v0": None},
    ]


# -- chunks: claim, checkpoint, boundaries -------------------------------------------


def test_postgresql_chunk_claim_skips_locked_chunks_and_reclaims_dead_owners() -> None:
    work = _work(dialect="postgresql")
    conn = _Recorder(PG)
    assert chunking.claim_chunk(conn.as_connection(), work, "encrypt", "w/0", 60) is None
    ((statement, _),) = conn.statements
    sql = _sql(statement, PG)
    assert sql.endswith(
        "ORDER BY encryption_migration_chunks.chunk_id LIMIT %(param_2)s FOR UPDATE SKIP LOCKED"
    )
    assert "FROM pg_stat_activity" in sql  # a running chunk whose session is gone
    assert "encryption_migration_chunks.lease_expires_at < %(lease_expires_at_1)s" in sql


def test_sqlite_chunk_claim_has_no_skip_locked_and_no_session_check() -> None:
    work = _work()
    conn = _Recorder(LITE)
    chunking.claim_chunk(conn.as_connection(), work, "encrypt", "w/0", 60)
    ((statement, _),) = conn.statements
    sql = _sql(statement, LITE)
    assert "SKIP LOCKED" not in sql
    assert "pg_stat_activity" not in sql


def _checkpoint(
    conn: _Recorder, work: TableWork, *, cursor: Any, finished: bool
) -> tuple[str, dict[str, Any]]:
    chunk = chunking.Chunk(chunk_id=3, lower=None, upper=None, cursor=None)
    chunking.save_progress(
        conn.as_connection(),
        work,
        "encrypt",
        chunk,
        "w/0",
        cursor=cursor,
        rows_done=10,
        rows_failed=1,
        finished=finished,
        lease_seconds=60,
    )
    statement, params = conn.statements[-1]
    return _sql(statement, PG), params


def test_the_checkpoint_reproves_the_lease_and_stores_the_cursor_as_json() -> None:
    work = _work(dialect="postgresql")
    sql, params = _checkpoint(_Recorder(PG), work, cursor=("acme", 7), finished=False)
    assert sql.startswith("UPDATE encryption_migration_chunks SET ")
    assert "cursor=%(p_cursor)s" in sql
    assert "status=" not in sql
    assert "rows_done=(encryption_migration_chunks.rows_done + %(p_done)s)" in sql
    assert "encryption_migration_chunks.lease_owner = %(p_worker)s" in sql
    assert "encryption_migration_chunks.status = %(status_1)s" in sql
    assert params["p_cursor"] == ["acme", 7]
    assert (params["p_worker"], params["p_chunk"], params["p_pid"]) == ("w/0", 3, 4242)


def test_the_last_checkpoint_completes_the_chunk_and_an_empty_one_keeps_the_cursor() -> None:
    work = _work(dialect="postgresql")
    sql, params = _checkpoint(_Recorder(PG), work, cursor=None, finished=True)
    assert "status=%(status)s" in sql
    assert "cursor=" not in sql
    assert "p_cursor" not in params


def test_a_checkpoint_that_updates_no_row_means_the_lease_was_lost() -> None:
    work = _work(dialect="postgresql")
    with pytest.raises(chunking.LostLeaseError, match="chunk 3 of customer"):
        _checkpoint(_Recorder(PG, rowcount=0), work, cursor=("acme", 7), finished=False)


def test_chunk_boundaries_sample_the_key_index_with_one_offset_step() -> None:
    work = _work(dialect="postgresql")
    conn = _Recorder(PG)
    assert chunking.plan_boundaries(conn.as_connection(), work, 50_000) == []
    ((statement, _),) = conn.statements
    sql = _sql(statement, PG)
    assert sql.startswith("SELECT customer.tenant, customer.id FROM customer ORDER BY")
    assert sql.endswith("LIMIT %(param_1)s OFFSET %(param_2)s")
    assert list(_params(statement, PG).values()) == [1, 49_999]
