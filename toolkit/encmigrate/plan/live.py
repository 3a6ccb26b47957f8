"""The plan against the live schema: tables, columns, types, keys, dependents, leaks.

:func:`check_live_schema` inspects the database (SQLAlchemy inspection) for
every planned table: that it and its columns exist, that each declared type fits
the column's SQL type, that it has a primary key, what depends on each
plaintext column, and how much a searchable column's blind index would reveal.
It records each column's :class:`ColumnPhase` and the table's primary key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from encmigrate.boundary import mapped_errors
from encmigrate.config import ConfigFile
from encmigrate.database import connect, read_only
from encmigrate.dependents import find_dependents, warning_message
from encmigrate.errors import ConfigError
from encmigrate.plan.model import ColumnPhase, ColumnPlan, PlanWarning, TablePlan
from encmigrate.plan.validation import column_locations

# Blind-index leak check: rows sampled per searchable column, and what counts as "few".
LEAK_SAMPLE_ROWS = 10_000
LEAK_MAX_DISTINCT = 20
LEAK_MAX_RATIO = 0.1

_TEXTUAL = (sa.String,)
_FITS: dict[str, tuple[type[Any], ...]] = {
    "string": _TEXTUAL,
    "text": _TEXTUAL,
    "integer": (sa.Integer,),
    "bigint": (sa.Integer,),
    "float": (sa.Float,),
    "numeric": (sa.Numeric,),
    "boolean": (sa.Boolean,),
    "date": (sa.Date,),
    "datetime": (sa.DateTime,),
    "time": (sa.Time,),
    "binary": (sa.LargeBinary, sa.BINARY, sa.VARBINARY),
    "json": (sa.JSON,),
}


def type_fits(plan_type: str, column_type: sa.types.TypeEngine[Any]) -> bool:
    """Whether a live column of ``column_type`` can hold values of ``plan_type``.

    Its natural SQL type fits, and so does any text column (values parsed one
    by one; a value that does not parse goes to the failures table). A column
    without a declared type (SQLite) fits anything. On MariaDB/MySQL a boolean
    is ``TINYINT(1)`` (what ``BOOLEAN`` declares there) and a JSON column is
    ``LONGTEXT`` (MariaDB), which the text rule covers.
    """
    if isinstance(column_type, sa.types.NullType | sa.String):
        return True
    if plan_type == "boolean" and _is_tinyint_1(column_type):
        return True
    if plan_type == "numeric" and isinstance(column_type, sa.Float):
        return False  # a float column holds inexact values; numeric promises exact ones
    return isinstance(column_type, _FITS[plan_type])


def _is_tinyint_1(column_type: sa.types.TypeEngine[Any]) -> bool:
    """MariaDB/MySQL's boolean: an integer column of display width 1, as reflected."""
    return isinstance(column_type, sa.Integer) and getattr(column_type, "display_width", None) == 1


def check_live_schema(
    found: ConfigFile,
    url: str,
    tables: tuple[TablePlan, ...],
    problems: list[str],
    warnings: list[PlanWarning],
) -> tuple[TablePlan, ...]:
    """The tables checked against the database at ``url``, with phases and primary keys.

    Raises DatabaseError when the database cannot be reached (or fails otherwise: its
    errors are translated by :func:`~encmigrate.boundary.mapped_errors`). The checks only
    read, in one read-only transaction: on SQLite they take no write lock.
    """
    try:
        engine = connect(url)
    except ConfigError:
        # Not the driver's text: it can quote the URL, password included.
        problems.append(
            f"{found.where('database.url')}: not a usable database URL (it names a dialect or "
            "driver that is not installed)"
        )
        return tables
    locations = column_locations(found)
    try:
        with mapped_errors(), read_only(engine) as connection:
            inspector = sa.inspect(connection)
            checked = tuple(
                _check_table(connection, inspector, table, found, locations, problems, warnings)
                for table in tables
            )
    finally:
        engine.dispose()
    return checked


def _check_table(
    connection: sa.Connection,
    inspector: sa.Inspector,
    table: TablePlan,
    found: ConfigFile,
    locations: Mapping[tuple[str, str], str],
    problems: list[str],
    warnings: list[PlanWarning],
) -> TablePlan:
    first = locations.get((table.table, table.columns[0].column), "columns")
    if not inspector.has_table(table.table_name, schema=table.schema_name):
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} does not exist in the "
            "database; check the name (schema-qualified as 'schema.table', case kept)"
        )
        return table
    live = {c["name"]: c for c in inspector.get_columns(table.table_name, schema=table.schema_name)}
    primary_key = tuple(
        inspector.get_pk_constraint(table.table_name, schema=table.schema_name).get(
            "constrained_columns"
        )
        or ()
    )
    if not primary_key:
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} has no primary key; "
            "the backfill pages by key (composite keys are fine): add one first"
        )
    if connection.dialect.name == "sqlite" and _without_rowid(connection, table.table_name):
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} is a WITHOUT ROWID table; "
            "encmigrate's SQLite trigger updates rows by rowid: use a rowid table"
        )
    columns = []
    for column in table.columns:
        where = locations.get((column.table, column.column), "columns")
        phase = _phase(column, live)
        columns.append(column.model_copy(update={"phase": phase}))
        if phase is ColumnPhase.DROPPED:
            continue
        if column.column not in live:
            close = difflib.get_close_matches(column.column, list(live), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "check the name (case kept)"
            problems.append(
                f"{found.where(where + '.column')}: column {column.column!r} does not exist in "
                f"{table.table!r}; {hint}"
            )
            continue
        live_type = live[column.column]["type"]
        if not type_fits(column.type, live_type):
            problems.append(
                f"{found.where(where + '.type')}: type {column.type!r} does not fit the "
                f"column's SQL type {_type_name(connection, live_type)}; declare the matching "
                "type (see the README's plan reference) or store the values in a text column"
            )
        elif column.searchable:
            warning = _leak_warning(connection, column, found.where(where + ".searchable"))
            if warning is not None:
                warnings.append(warning)
    checked = table.model_copy(update={"columns": tuple(columns), "primary_key": primary_key})
    return _check_dependents(connection, checked, live, found, locations, problems, warnings)


def _check_dependents(
    connection: sa.Connection,
    table: TablePlan,
    live: Mapping[str, Any],
    found: ConfigFile,
    locations: Mapping[tuple[str, str], str],
    problems: list[str],
    warnings: list[PlanWarning],
) -> TablePlan:
    """Attach to each column what depends on its plaintext, found before anything is written.

    A primary key, partition key or inherited column cannot be encrypted: a
    problem. Everything else is a warning; a blocking one says that step 5 will
    refuse until the operator deals with it.
    """
    present = tuple(c for c in table.columns if c.phase is not ColumnPhase.DROPPED)
    present = tuple(c for c in present if c.column in live)
    if not present:
        return table
    dependents = find_dependents(connection, [table.model_copy(update={"columns": present})])
    for dependent in dependents:
        location = locations.get((dependent.table, dependent.column), "columns")
        where = found.where(location + ".column")
        if dependent.unencryptable:
            problems.append(
                f"{where}: {dependent.column!r} cannot be encrypted: {dependent.effect}; "
                f"{dependent.action}"
            )
        else:
            warnings.append(PlanWarning(where, warning_message(dependent)))
    columns = tuple(
        column.model_copy(
            update={"dependents": tuple(d for d in dependents if d.column == column.column)}
        )
        for column in table.columns
    )
    return table.model_copy(update={"columns": columns})


def _without_rowid(connection: sa.Connection, table: str) -> bool:
    sql = connection.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table},
    ).scalar()
    return bool(sql) and re.search(r"\)\s*WITHOUT\s+ROWID", str(sql), re.IGNORECASE) is not None


def _phase(column: ColumnPlan, live: Mapping[str, Any]) -> ColumnPhase:
    has_plain = column.column in live
    has_shadow = column.encrypted_column in live
    if has_plain and has_shadow:
        return ColumnPhase.SHADOWED
    if has_shadow:
        return ColumnPhase.DROPPED
    return ColumnPhase.PLAIN


def _type_name(connection: sa.Connection, type_: sa.types.TypeEngine[Any]) -> str:
    try:
        return type_.compile(dialect=connection.dialect)
    except sa.exc.CompileError:
        return type(type_).__name__


def _leak_warning(connection: sa.Connection, column: ColumnPlan, where: str) -> PlanWarning | None:
    """A warning when the blind index of ``column`` would reveal its values.

    A deterministic token maps equal values to equal tokens: with few distinct
    values, counting tokens is frequency analysis, and one known row reveals
    every row sharing its value. Sampled (LEAK_SAMPLE_ROWS) to stay cheap.
    """
    if column.type == "json":
        return None  # json has no equality on PostgreSQL; a JSON blind index is rare anyway
    if column.type == "boolean":
        return PlanWarning(
            where,
            "a boolean has at most 2 distinct values: its blind index reveals every row's "
            "value to anyone who knows one row; set searchable = false",
        )
    target = sa.table(column.table_name, sa.column(column.column), schema=column.schema_name)
    sample = (
        sa.select(target.c[column.column].label("value"))
        .where(target.c[column.column].is_not(None))
        .limit(LEAK_SAMPLE_ROWS)
        .subquery()
    )
    query = sa.select(sa.func.count(sa.distinct(sample.c.value)), sa.func.count(sample.c.value))
    distinct, rows = connection.execute(query).one()
    if rows < 2 * distinct or rows == 0:
        return None
    ratio = distinct / rows
    if distinct > LEAK_MAX_DISTINCT and ratio >= LEAK_MAX_RATIO:
        return None
    return PlanWarning(
        where,
        f"{distinct} distinct values in {rows} non-null rows sampled (ratio {ratio:.3f}): "
        "its blind index reveals which rows share a value (frequency analysis); "
        "set searchable = false unless lookups by value are needed",
    )
