"""What the generators read from the live schema, in one place.

Everything here is read at generation time, with the database at the Alembic
head, and written into the revision as literal arguments: the revision then
runs the same way online and offline (``--sql``), without reflecting again.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import ConfigError
from encmigrate.identifiers import index_name
from encmigrate.plan import ColumnPhase, ColumnPlan, Plan, TablePlan
from encmigrate.revisions import mysql_trigger
from encmigrate.revisions.sqltext import qualified, quote, string_literal
from encmigrate.revisions.triggers import PG_TRIGGER, ShadowColumn, sqlite_trigger_name

__all__ = [
    "LiveTable",
    "MySQLColumn",
    "index_name",
    "read_table",
    "require_checked",
    "shadow_columns",
]


class MySQLColumn(NamedTuple):
    """A MariaDB column's definition as SQL, in parts, without NULL / NOT NULL.

    ``kind``: its type and character set (``json`` for a JSON column: see
    :func:`_mysql_definitions`); ``extras``: its default, ON UPDATE and comment;
    ``check``: its column-level ``CHECK``, which MariaDB drops with the column
    and with a MODIFY that does not restate it.
    """

    kind: str
    extras: str
    check: str = ""

    def modified(self, null: str) -> str:
        """The whole definition with ``null`` (``NULL``/``NOT NULL``), as a MODIFY restates
        it (the grammar wants the check last)."""
        return " ".join(part for part in (self.kind, null, self.extras, self.check) if part)

    def readded(self) -> str:
        """The definition a column re-added empty takes: nullable, without its default."""
        return " ".join(part for part in (self.kind, "NULL", self.check) if part)


@dataclass(frozen=True, slots=True)
class LiveTable:
    """The parts of one table's live schema the generators need."""

    plan: TablePlan
    columns: Mapping[str, Mapping[str, Any]]  # name -> inspector column dict, table order
    indexes: Sequence[Mapping[str, Any]]
    view_exists: bool
    view_writes: bool  # the installed trigger also nulls the plaintext on ciphertext writes
    # SQLite: views and triggers on the table, other than ours: (type, name, sql)
    dependents: Sequence[tuple[str, str, str]]
    # MariaDB: each column's definition without its NULL / NOT NULL (MODIFY restates it all)
    definitions: Mapping[str, MySQLColumn] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.plan.table_name

    @property
    def schema(self) -> str | None:
        return self.plan.schema_name


def require_checked(plan: Plan) -> None:
    """The generators need the phases that only a database-checked plan has."""
    if any(column.phase is ColumnPhase.UNCHECKED for column in plan.columns):
        raise ConfigError("the plan was loaded without database checks; load it with a database")


def read_table(connection: sa.Connection, table: TablePlan) -> LiveTable:
    inspector = sa.inspect(connection)
    schema, name = table.schema_name, table.table_name
    columns = {c["name"]: c for c in inspector.get_columns(name, schema=schema)}
    with warnings.catch_warnings():
        # SQLAlchemy skips expression indexes on SQLite with a warning; the drop revision
        # handles only plain column indexes, and plan check names the others.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        indexes = inspector.get_indexes(name, schema=schema)
    view_exists = table.view in inspector.get_view_names(schema=schema)
    dependents: list[tuple[str, str, str]] = []
    if connection.dialect.name == "sqlite":
        rows = connection.execute(
            sa.text(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE type IN ('view', 'trigger') AND sql IS NOT NULL "
                "AND name NOT LIKE 'encmigrate_shadow_%' ORDER BY rowid"
            )
        ).all()
        pattern = re.compile(rf"(?<![\w$]){re.escape(name)}(?![\w$])", re.IGNORECASE)
        dependents = [
            (str(kind), str(dep), str(sql))
            for kind, dep, sql in rows
            if dep != table.view and pattern.search(str(sql))
        ]
    return LiveTable(
        table,
        columns,
        indexes,
        view_exists,
        _trigger_has_view_writes(connection, table),
        dependents,
        _mysql_definitions(connection, table) if connection.dialect.name in MYSQL_DIALECTS else {},
    )


# What MariaDB makes of a column declared JSON (an alias): reflected as LONGTEXT.
_MARIADB_JSON = ("longtext", "utf8mb4", "utf8mb4_bin")


def _mysql_definitions(connection: sa.Connection, table: TablePlan) -> dict[str, MySQLColumn]:
    """Each column's type, character set, default, ON UPDATE, comment and CHECK, as SQL.

    ``ALTER TABLE ... MODIFY`` replaces the whole definition: whatever it does not
    restate (a default, a comment, a character set, a column-level check) is lost.
    MariaDB's ``COLUMN_DEFAULT`` is already an SQL expression (``'x''y'``,
    ``current_timestamp()``), and so is a check's ``CHECK_CLAUSE``.

    A column declared ``JSON`` on MariaDB is a ``longtext`` in utf8mb4_bin with
    the column-level check ``json_valid(`<col>`)``: that column is spelled
    ``json`` (MariaDB adds the check itself, and ``JSON`` takes no character
    set), so it comes back as JSON, and a MODIFY of it stays online (MariaDB
    refuses an in-place MODIFY of such a column to a ``longtext``).
    """
    bind = {"schema": table.schema_name, "name": table.table_name}
    rows = connection.execute(
        sa.text(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, "
            "COLUMN_DEFAULT, EXTRA, COLUMN_COMMENT FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
        ),
        bind,
    ).all()
    checks = _mariadb_column_checks(connection, bind)
    found: dict[str, MySQLColumn] = {}
    for name, kind, charset, collation, default, extra, comment in rows:
        parts = [str(kind)]
        if charset:
            parts.append(f"CHARACTER SET {charset} COLLATE {collation}")
        clause = checks.get(str(name))
        check = "" if clause is None else f"CHECK ({clause})"
        json_valid = "json_valid(`" + str(name).replace("`", "``") + "`)"  # as MariaDB spells it
        if (str(kind).lower(), charset, collation) == _MARIADB_JSON and clause == json_valid:
            parts, check = ["json"], ""
        extras: list[str] = []
        if default is not None and str(default) != "NULL":
            extras.append(f"DEFAULT {default}")
        if extra and str(extra).lower().startswith("on update"):
            extras.append(str(extra))
        if comment:
            extras.append("COMMENT " + string_literal(connection.dialect, str(comment)))
        found[str(name)] = MySQLColumn(" ".join(parts), " ".join(extras), check)
    return found


def _mariadb_column_checks(connection: sa.Connection, bind: Mapping[str, Any]) -> dict[str, str]:
    """Column name -> its column-level CHECK clause (MariaDB names it after the column).

    MySQL has a native JSON type, and its catalog does not tell a column's check
    from the table's: nothing is read there.
    """
    if not getattr(connection.dialect, "is_mariadb", False):
        return {}
    rows = connection.execute(
        sa.text(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name "
            "AND LEVEL = 'Column'"
        ),
        bind,
    ).all()
    return {str(name): str(clause) for name, clause in rows}


def _trigger_has_view_writes(connection: sa.Connection, table: TablePlan) -> bool:
    """Whether the installed shadow trigger fires on ciphertext writes too (create-views).

    Read from the catalog by name, never by matching names in the trigger's text:
    a name may hold anything a pattern would trip over.
    """
    dialect = connection.dialect
    if dialect.name == "postgresql":
        watched = connection.execute(
            sa.text(
                "SELECT a.attname FROM pg_trigger t JOIN pg_attribute a "
                "ON a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[]) "
                "WHERE t.tgrelid = to_regclass(:target) AND t.tgname = :name"
            ),
            {"target": qualified(dialect, table.table_name, table.schema_name), "name": PG_TRIGGER},
        ).scalars()
        names = set(watched)
        return any(c.encrypted_column in names for c in table.columns)
    if dialect.name in MYSQL_DIALECTS:
        # The catalog has no column list (no UPDATE OF): the view_writes body starts with a
        # fixed comment, before any name (mysql_trigger.VIEW_WRITES_MARK).
        body = connection.execute(
            sa.text(
                "SELECT ACTION_STATEMENT FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = COALESCE(:schema, DATABASE()) AND TRIGGER_NAME = :name"
            ),
            {"schema": table.schema_name, "name": mysql_trigger.trigger_name(table.table_name)},
        ).scalar()
        return body is not None and str(body).startswith(mysql_trigger.VIEW_WRITES_MARK)
    found = connection.execute(
        sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :name"),
        {"name": table.table_name},
    ).all()
    triggers = {str(name): str(sql) for name, sql in found}
    return any(
        f"UPDATE OF {quote(dialect, c.column)}, {quote(dialect, c.encrypted_column)} ON"
        in triggers.get(sqlite_trigger_name(table.table_name, c.column), "")
        for c in table.columns
    )


def shadow_columns(columns: Sequence[ColumnPlan]) -> list[ShadowColumn]:
    return [ShadowColumn(c.column, c.encrypted_column, c.search_column) for c in columns]
