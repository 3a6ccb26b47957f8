"""One batch: lock rows in key order, read, encrypt, write, checkpoint, commit.

The caller owns the transaction; everything here runs inside it, so the
shadow values and the checkpoint commit together or not at all (backfill rules
3 and 4 in docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.cipher import has_none
from encmigrate.migrate import mysql, pgarrays
from encmigrate.migrate.database import driver_cursor
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.table import ShadowColumns, TableWork
from encmigrate.roundtrip import sqlite_temporal
from encmigrate.tracking import MIGRATOR_SETTING, SQLITE_WRITER_TABLE, failures

__all__ = [
    "BatchResult",
    "PreparedBatch",
    "RowAddresses",
    "compute_encrypt",
    "read_encrypt",
    "record_failures",
    "set_timeouts",
    "write_rows",
]


@dataclass(slots=True)
class BatchResult:
    """What one batch did. ``last_key`` is the new cursor (None when nothing was read)."""

    rows_read: int = 0
    rows_written: int = 0
    rows_failed: int = 0
    last_key: Cursor | None = None
    failed_keys: list[tuple[str, Cursor, str]] = field(default_factory=list)


def set_timeouts(conn: sa.Connection, lock_timeout_ms: int, statement_timeout_ms: int) -> None:
    """Per-transaction limits, so a batch never queues behind a long lock (rule 6).

    Also ``synchronous_commit = off`` for the batch alone: its COMMIT does not wait
    for the WAL flush (a third of a one-worker batch's time on this machine's disk,
    bench/bench_migrate.py). A server crash can then lose the last few batches, but
    never half of one: rows and checkpoint go together and the WAL keeps its order,
    so the lost rows still match the operation's pending filter and the catch-up
    pass or the next run does them. One round trip: psycopg sends the four as one
    query (no parameters, so the simple protocol).

    The last one marks the transaction as the migrator's: the shadow trigger
    installed by ``create-views`` must not take our ciphertext-only writes for
    writes through the view (which set the plaintext to NULL).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}; "
            f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}; "
            "SET LOCAL synchronous_commit = off; "
            f"SET LOCAL {MIGRATOR_SETTING} = 'migrator'"
        )


@dataclass(frozen=True, slots=True)
class RowAddresses:
    """Where each locked row of a PostgreSQL batch lives: its table's oid and its ctid.

    Read with the rows (``_tableoid``, ``_ctid``, the last two columns of the
    batch's SELECT) while the batch's transaction holds their locks, so the
    address cannot change before the batch's UPDATE uses it.
    """

    tables: list[str]
    ctids: list[str]

    @classmethod
    def of(cls, rows: Sequence[Any]) -> RowAddresses:
        return cls(list(map(itemgetter(-2), rows)), list(map(itemgetter(-1), rows)))


class PreparedBatch:
    """One batch read (its rows locked by the open transaction) and computed, not yet written.

    The migrator's pipeline writes batch N on one connection while it reads and
    encrypts batch N + 1 on another: everything a batch needs between those two
    moments lives here.
    """

    def __init__(self, work: TableWork, rows: Sequence[Any], *, tids: RowAddresses | None = None):
        self.work = work
        self.width = len(work.primary_key)
        # Column by column: map and zip run in C. With the same change in compute_encrypt and
        # rows_sealed this took a 1,000-row, 3-column batch's own Python work from 0.47 ms to
        # 0.19 ms (of about 6 ms of client CPU per batch, AES-GCM included).
        self.keys: list[Cursor] = list(
            zip(*(map(itemgetter(i), rows) for i in range(self.width)), strict=True)
        )
        self.tids = tids
        self.result = BatchResult(rows_read=len(rows), last_key=self.keys[-1] if rows else None)
        self.targets: list[sa.Column[Any]] = []
        self.updates: list[list[Any]] = []
        self.sealed: list[list[bytes | None]] = []  # the ciphertexts of each sealed column

    def fail(self, column: str, row_index: int, reason: str) -> None:
        self.result.failed_keys.append((column, self.keys[row_index], reason))

    def set(self, column: sa.Column[Any], values: list[Any]) -> None:
        """Write ``values`` to ``column``; a None keeps the stored value."""
        self.targets.append(column)
        self.updates.append(values)

    def seal(self, shadow: ShadowColumns, values: list[Any], *, decrypted: bool = False) -> None:
        """A fresh ciphertext (and token) of each value; None keeps the stored one.

        A value that does not fit the column's type is recorded as failed;
        ``decrypted`` values come from the column's own cipher (see ColumnWork.seal).
        """
        sealed = shadow.work.seal(values, decrypted=decrypted)
        for row_index, reason in sealed.failures.items():
            self.fail(shadow.work.plan.column, row_index, reason)
        self.set(shadow.ciphertext, sealed.ciphertexts)
        if shadow.search is not None:
            self.set(shadow.search, sealed.tokens or [None] * len(values))
        self.sealed.append(sealed.ciphertexts)

    def rows_sealed(self) -> int:
        """How many rows got at least one fresh ciphertext."""
        if any(not has_none(blobs) for blobs in self.sealed):
            return len(self.keys)  # the usual case: one column sealed every row
        return sum(any(b is not None for b in row) for row in zip(*self.sealed, strict=True))

    def write(self, conn: sa.Connection) -> BatchResult:
        """One statement for every target column, then the failures; in the caller's transaction."""
        if self.keys:
            write_rows(conn, self.work, self.keys, self.updates, self.targets, tids=self.tids)
        self.result.rows_written = self.rows_sealed()
        self.result.rows_failed = len({key for _, key, _ in self.result.failed_keys})
        if self.result.failed_keys:
            record_failures(conn, self.work, self.result.failed_keys)
        return self.result


def read_encrypt(
    conn: sa.Connection,
    work: TableWork,
    lower: Cursor | None,
    upper: Cursor | None,
    limit: int,
) -> list[Any]:
    """Lock and read the next ``limit`` rows after ``lower`` (up to ``upper``) that need it.

    On PostgreSQL through the driver's cursor where that is exact (pending_read.py).
    """
    rows = work.pending_read.rows(conn, lower, upper, limit)
    if rows is not None:
        return rows
    return list(conn.execute(work.select_pending(lower, upper, limit, lock=True)).all())


def compute_encrypt(work: TableWork, rows: Sequence[Any]) -> PreparedBatch:
    """The shadow values of rows read by :func:`read_encrypt`."""
    tids = RowAddresses.of(rows) if work.dialect == "postgresql" else None
    batch = PreparedBatch(work, rows, tids=tids)
    width = batch.width
    for index, shadow in enumerate(work.shadows):
        plain = list(map(itemgetter(width + 2 * index), rows))
        needed = list(map(itemgetter(width + 2 * index + 1), rows))
        if not all(needed):
            # A column that already has its ciphertext (written by the application) is left
            # as it is: None here keeps the stored value (COALESCE in the UPDATE).
            plain = [p if need else None for p, need in zip(plain, needed, strict=True)]
        batch.seal(shadow, plain)
    return batch


def write_rows(
    conn: sa.Connection,
    work: TableWork,
    keys: list[Cursor],
    updates: list[list[Any]],
    targets: Sequence[sa.Column[Any]],
    *,
    tids: RowAddresses | None = None,
) -> None:
    """Set ``targets`` of the rows ``keys``, one statement.

    ``updates`` holds one list per target; a None keeps the stored value. On
    PostgreSQL, ``tids`` (addresses of rows this transaction has locked) replaces
    the primary-key match with a TID scan.
    """
    if conn.dialect.name == "postgresql" and not any(_needs_adapter(c) for c in targets):
        _write_postgresql(conn, work, keys, updates, targets, tids)
    elif mysql.is_mysql(conn) and mysql.one_statement_write(conn, targets, updates):
        with _marked_as_migrator(conn):
            mysql.write_rows(conn, work.table, work.primary_key, keys, updates, targets)
    else:
        _write_generic(conn, work, keys, updates, targets)


def _needs_adapter(column: sa.Column[Any]) -> bool:
    """JSON values need SQLAlchemy's bind processing; the unnest path sends raw arrays."""
    return isinstance(column.type, sa.JSON)


def _write_postgresql(
    conn: sa.Connection,
    work: TableWork,
    keys: list[Cursor],
    updates: list[list[Any]],
    targets: Sequence[sa.Column[Any]],
    tids: RowAddresses | None = None,
) -> None:
    """``UPDATE … FROM unnest(…)`` with binary parameters: one statement per batch.

    Binary bytea[] parameters matter: psycopg's text format for them makes the
    server-side UPDATE about three times slower (measured, issue 6).
    """
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    table = dialect.identifier_preparer.format_table(work.table)
    # %b, not %s: the placeholder picks the parameter format (``binary=True`` only asks for
    # binary results); with %s psycopg sent every array as escaped text, and one worker
    # did 21.6k rows/s instead of 34.7k (bench/bench_migrate.py, 1,000,000 rows).
    arrays: list[str] = []
    aliases: list[str] = []
    if tids is not None:
        arrays += ["%b::text[]::oid[]", "%b::text[]::tid[]"]
        aliases += ["r0", "k0"]
        # Both halves of the address: ctids repeat across partitions and inheritance children.
        match = "t.tableoid = u.r0 AND t.ctid = u.k0"
        params: list[list[Any]] = [pgarrays.TextArray(tids.tables), pgarrays.TextArray(tids.ctids)]
    else:
        for i, column in enumerate(work.primary_key):
            arrays.append(f"%b::{column.type.compile(dialect=dialect)}[]")
            aliases.append(f"k{i}")
        match = " AND ".join(
            f"t.{quote(column.name)} = u.k{i}" for i, column in enumerate(work.primary_key)
        )
        params = [[key[i] for key in keys] for i in range(len(work.primary_key))]
    sets: list[str] = []
    for i, (column, values) in enumerate(zip(targets, updates, strict=True)):
        arrays.append(f"%b::{column.type.compile(dialect=dialect)}[]")
        aliases.append(f"v{i}")
        name = quote(column.name)
        # COALESCE only where some row keeps its stored value: it costs the server a sixth
        # of the UPDATE's time (1,000-row batches, three bytea columns).
        keep = has_none(values)
        sets.append(f"{name} = COALESCE(u.v{i}, t.{name})" if keep else f"{name} = u.v{i}")
        params.append(_array(column, values))
    # Every identifier comes from reflection and is quoted by the dialect; values are parameters.
    sql = (
        f"UPDATE {table} AS t SET {', '.join(sets)} "
        f"FROM unnest({', '.join(arrays)}) AS u({', '.join(aliases)}) WHERE {match}"
    )
    raw: Any = conn.connection.dbapi_connection  # psycopg.Connection: binary parameters
    if not conn.info.get(_ARRAYS):
        pgarrays.register(raw.adapters)
        conn.info[_ARRAYS] = True
    with driver_cursor(conn) as cursor:
        cursor.execute(sql, params, binary=True)


_ARRAYS = "encmigrate.pgarrays"


def _array(column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """Bytes and text arrays take the fast binary framing; anything else psycopg's own."""
    if isinstance(column.type, sa.LargeBinary) and all(
        v is None or type(v) is bytes for v in values
    ):
        return pgarrays.ByteaArray(values)
    text = isinstance(column.type, sa.String) and not isinstance(column.type, sa.Enum)
    if text and all(v is None or type(v) is str for v in values):
        return pgarrays.TextArray(values)
    return values


def _write_generic(
    conn: sa.Connection,
    work: TableWork,
    keys: list[Cursor],
    updates: list[list[Any]],
    targets: Sequence[sa.Column[Any]],
) -> None:
    statement = (
        sa.update(work.table)
        .where(
            *(
                column == sa.bindparam(f"_k{i}", type_=column.type)
                for i, column in enumerate(work.primary_key)
            )
        )
        .values(
            {
                column.name: sa.func.coalesce(
                    sa.bindparam(f"_v{i}", type_=_bind_type(column, conn.dialect.name)), column
                )
                for i, column in enumerate(targets)
            }
        )
    )
    rows = []
    for row_index, key in enumerate(keys):
        params = {f"_k{i}": value for i, value in enumerate(key)}
        params.update({f"_v{i}": values[row_index] for i, values in enumerate(updates)})
        rows.append(params)
    with _marked_as_migrator(conn):
        conn.execute(statement, rows)


@contextlib.contextmanager
def _marked_as_migrator(conn: sa.Connection) -> Iterator[None]:
    """SQLite: a row in the writer table while our UPDATE runs, so the shadow trigger
    of step 4 does not take our ciphertext-only writes for writes through the view.

    Inserted and deleted inside the batch's transaction: SQLite has one writer at a
    time and nobody else sees the uncommitted row. (PostgreSQL marks the whole
    transaction in :func:`set_timeouts`.)
    """
    if mysql.is_mysql(conn):
        with mysql.marked_as_migrator(conn):
            yield
        return
    if conn.dialect.name != "sqlite" or not _has_writer_table(conn):
        yield
        return
    marks = sa.table(SQLITE_WRITER_TABLE, sa.column("pid"))
    conn.execute(marks.insert().values(pid=os.getpid()))
    try:
        yield
    finally:
        conn.execute(marks.delete())


def _has_writer_table(conn: sa.Connection) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SQLITE_WRITER_TABLE,)
    )
    return found.first() is not None


def record_failures(
    conn: sa.Connection, work: TableWork, failed: Sequence[tuple[str, Cursor, str]]
) -> None:
    """Add rows that could not be encrypted to the failures table, once per (column, key)."""
    for column, key, reason in failed:
        document = work.keys.to_json(key)
        already = conn.execute(
            sa.select(sa.func.count())
            .select_from(failures)
            .where(
                failures.c.table_name == work.name,
                failures.c.column_name == column,
                sa.cast(failures.c.primary_key, sa.Text) == json.dumps(document),
            )
        ).scalar_one()
        if not already:
            conn.execute(
                failures.insert().values(
                    table_name=work.name, column_name=column, primary_key=document, reason=reason
                )
            )


def _bind_type(column: sa.Column[Any], dialect: str) -> Any:
    """The column's type for binding; None must stay SQL NULL ("keep the stored value").

    SQLAlchemy's JSON type writes Python None as a JSON ``null`` unless told
    otherwise; a JSON null to store is passed as ``sa.JSON.NULL``. SQLite date and
    time columns get decrypt-back's text as it is (``roundtrip.written_form``):
    SQLAlchemy's own processors would add ``.000000`` to every datetime.
    """
    if sqlite_temporal(column.type, dialect):
        return sa.String()
    if isinstance(column.type, sa.JSON):
        # The column's own JSON class: a json parameter COALESCEd with a jsonb column is an
        # error on PostgreSQL (42846), and the reverse too.
        return type(column.type)(none_as_null=True)
    return column.type
