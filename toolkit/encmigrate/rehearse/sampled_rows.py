"""Real rows (``--sample-from``): a sample of each planned table and the rows it references.

The sample is read in one read-only, repeatable-read transaction on the
source (the server refuses any write in it; one snapshot, so the rows agree
with each other), with ``lock_timeout`` and ``statement_timeout`` so it never
queues behind a long lock. Each planned table gives up to ``rows`` rows
(``TABLESAMPLE SYSTEM`` pages spread over the table when its statistics say
it is large, topped up with its first rows; no sort, no full scan); then, like pg_sample,
the rows they reference through foreign keys are fetched by key from the
parent tables, and theirs in turn, until every reference is satisfied (at
most :data:`MAX_REFERENCED` of them). Nothing else of the source is read.

Values travel as PostgreSQL's own text (``COPY … TO STDOUT`` on the source,
``COPY … FROM STDIN`` on the rehearsal database), so every type, including
those the Python side does not know, arrives exactly as it was. The load is
one transaction with deferrable constraints deferred; rows of a table that
reference each other arrive in one ``COPY``, which PostgreSQL checks as a
whole.

These are real rows: they stay in the rehearsal database, which is dropped at
the end of the rehearsal, and no value of them is ever logged or reported
(errors name constraints and SQLSTATEs only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from psycopg import sql

from encmigrate import plan as plan_module
from encmigrate.errors import ConfigError, DatabaseError
from encmigrate.rehearse.database_errors import error_summary
from encmigrate.rehearse.postgres_url import PostgresUrl
from encmigrate.rehearse.table_graph import FillTable, ForeignKey, fill_order

__all__ = ["MAX_REFERENCED", "SampleResult", "copy_sample"]

logger = logging.getLogger(__name__)

MAX_REFERENCED: Final = 100_000  # referenced rows fetched from parents before giving up
KEYS_PER_QUERY: Final = 1000
LOCK_TIMEOUT: Final = "5s"
STATEMENT_TIMEOUT: Final = "120s"
_OVERSAMPLE: Final = 4  # TABLESAMPLE aims at this many times the rows wanted
_SPREAD_FROM: Final = 20  # tables this many times larger than the sample are sampled by page

Row = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class SampleResult:
    """Rows copied per table (sampled and referenced) and how many were fetched as references."""

    rows: dict[str, int]
    referenced: int

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass
class _TableRows:
    fill: FillTable
    columns: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    seen: set[Row] = field(default_factory=set)

    def add(self, rows: Iterable[Row]) -> int:
        added = 0
        for row in rows:
            if row not in self.seen:
                self.seen.add(row)
                self.rows.append(row)
                added += 1
        return added

    def keys(self, names: Sequence[str]) -> set[Row]:
        positions = [self.columns.index(n) for n in names]
        return {key for row in self.rows if None not in (key := tuple(row[p] for p in positions))}


def copy_sample(
    source: PostgresUrl,
    target: PostgresUrl,
    engine: sa.Engine,
    plan: plan_module.Plan,
    rows: int,
    seed: int = 0,
) -> SampleResult:
    """Copy up to ``rows`` real rows per planned table, and what they reference, into ``target``."""
    with engine.connect() as connection:
        order = fill_order(connection, plan)
        types = {fill.name: _type_names(connection, fill.table) for fill in order}
    tables = {fill.name: _TableRows(fill, fill.insertable) for fill in order}
    try:
        with source.connect(read_only=True) as reader:
            reader.execute(
                sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}").format(
                    sql.Literal(LOCK_TIMEOUT), sql.Literal(STATEMENT_TIMEOUT)
                )
            )
            for fill in order:
                if fill.planned:
                    tables[fill.name].add(_sample(reader, tables[fill.name], rows, seed))
            referenced = _referenced(reader, order, tables, types)
            reader.rollback()  # nothing to commit: the transaction only read
    except psycopg.Error as exc:
        raise _source_error(source, exc) from None
    _load(target, order, tables)
    counts = {name: len(t.rows) for name, t in tables.items() if t.rows}
    logger.info(
        "rehearse: copied %d sampled rows into %d tables", sum(counts.values()), len(counts)
    )
    return SampleResult(counts, referenced)


def _sample(reader: psycopg.Connection[Any], table: _TableRows, rows: int, seed: int) -> list[Row]:
    """Up to ``rows`` rows of a planned table: spread over a large one, else its first rows."""
    name = _qualified(table.fill.table)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    found: list[Row] = []
    estimate = _estimated_rows(reader, name)
    if estimate > _SPREAD_FROM * rows:
        percent = sql.Literal(100.0 * _OVERSAMPLE * rows / estimate)
        spread = sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM ({}) REPEATABLE ({}) LIMIT {}")
        found = _copy_out(
            reader,
            spread.format(columns, name, percent, sql.Literal(seed), sql.Literal(rows)),
        )
    if len(found) < rows:  # a small table, or pages the sample missed: the first rows
        first = sql.SQL("SELECT {} FROM {} LIMIT {}").format(columns, name, sql.Literal(rows))
        found = list(dict.fromkeys(found + _copy_out(reader, first)))[:rows]
    return found


def _estimated_rows(reader: psycopg.Connection[Any], name: sql.Identifier) -> float:
    """The planner's row estimate (a partitioned table's own is -1: its leaves' are summed)."""
    regclass = name.as_string(reader)
    row = reader.execute(
        "SELECT coalesce((SELECT sum(greatest(c.reltuples, 0)) "
        "FROM pg_partition_tree(%s::regclass) t "
        "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf), "
        "(SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = %s::regclass))",
        (regclass, regclass),
    ).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0


def _referenced(
    reader: psycopg.Connection[Any],
    order: list[FillTable],
    tables: dict[str, _TableRows],
    types: dict[str, dict[str, str]],
) -> int:
    """Fetch the parent rows the copied rows reference until none is missing; how many."""
    fetched = 0
    asked: dict[tuple[str, str], set[Row]] = {}
    pending = True
    while pending:
        pending = False
        for fill in reversed(order):  # children first: their parents then see every need
            for foreign_key in fill.foreign_keys:
                parent = tables[foreign_key.parent.fullname]
                done = asked.setdefault((fill.name, foreign_key.name), set())
                missing = (
                    tables[fill.name].keys(foreign_key.columns)
                    - parent.keys(foreign_key.parent_columns)
                    - done
                )
                if not missing:
                    continue
                done |= missing
                kinds = [types[parent.fill.name][c] for c in foreign_key.parent_columns]
                fetched += parent.add(_by_key(reader, parent, foreign_key, kinds, missing))
                pending = True
                if fetched > MAX_REFERENCED:
                    raise ConfigError(
                        f"--sample-from: the sampled rows reference more than {MAX_REFERENCED:,} "
                        "rows of other tables: lower --sample-rows"
                    )
    return fetched


def _by_key(
    reader: psycopg.Connection[Any],
    parent: _TableRows,
    foreign_key: ForeignKey,
    kinds: list[str],
    keys: set[Row],
) -> list[Row]:
    """The rows of ``parent`` whose referenced columns hold one of ``keys`` (given as text)."""
    ordered = sorted(keys, key=lambda k: tuple("" if v is None else v for v in k))
    found: list[Row] = []
    width = len(foreign_key.parent_columns)
    aliases = [sql.Identifier(f"k{n}") for n in range(width)]
    # Each key as the parent's own type (format_type spells it), so its index is used.
    casts: list[sql.Composable] = [
        sql.SQL("CAST({} AS {})").format(alias, sql.SQL(kind))
        for alias, kind in zip(aliases, kinds, strict=True)
    ]
    query = sql.SQL(
        "SELECT {columns} FROM {table} WHERE ({keys}) IN "
        "(SELECT {casts} FROM unnest({arrays}) AS wanted({aliases}))"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in parent.columns),
        table=_qualified(parent.fill.table),
        keys=sql.SQL(", ").join(sql.Identifier(c) for c in foreign_key.parent_columns),
        casts=sql.SQL(", ").join(casts),
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(width)),
        aliases=sql.SQL(", ").join(aliases),
    )
    for first in range(0, len(ordered), KEYS_PER_QUERY):
        chunk = ordered[first : first + KEYS_PER_QUERY]
        columns = [[key[n] for key in chunk] for n in range(width)]
        found += _copy_out(reader, query, columns)
    return found


def _copy_out(
    reader: psycopg.Connection[Any], query: sql.Composable, params: Sequence[Any] | None = None
) -> list[Row]:
    """The rows of ``query`` as PostgreSQL's text (None for NULL)."""
    cursor = reader.cursor()
    with cursor.copy(sql.SQL("COPY ({}) TO STDOUT").format(query), params) as copy:
        return [tuple(None if v is None else str(v) for v in row) for row in copy.rows()]


def _load(target: PostgresUrl, order: list[FillTable], tables: dict[str, _TableRows]) -> None:
    """Write every copied row into ``target`` in one transaction, parents first."""
    try:
        with target.connect(read_only=False) as writer:
            writer.execute("SET CONSTRAINTS ALL DEFERRED")
            cursor = writer.cursor()
            for fill in order:
                table = tables[fill.name]
                if not table.rows:
                    continue
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    _qualified(fill.table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in table.columns),
                )
                with cursor.copy(statement) as copy:
                    for row in table.rows:
                        copy.write_row(row)
    except psycopg.Error as exc:
        hint = ""
        if exc.sqlstate == "23503":
            hint = "; rows of tables that reference each other need DEFERRABLE foreign keys"
        raise ConfigError(
            f"--sample-from: the rehearsal database refused the copied rows ({error_summary(exc)})"
            + hint
        ) from None


def _source_error(source: PostgresUrl, exc: psycopg.Error) -> Exception:
    reason = error_summary(exc, source.password)
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "08").startswith("08"):
        return DatabaseError(f"{source.option}: cannot read {source.display} ({reason})")
    return ConfigError(f"{source.option}: reading from {source.display} failed ({reason})")


def _qualified(table: sa.Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


def _type_names(connection: sa.Connection, table: sa.Table) -> dict[str, str]:
    """Each column's SQL type as ``format_type`` spells it (quoted where it must be)."""
    rows = connection.execute(
        sa.text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND n.nspname = coalesce(:schema, current_schema()) "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"table": table.name, "schema": table.schema},
    )
    return {str(name): str(kind) for name, kind in rows}
