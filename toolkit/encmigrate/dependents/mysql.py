"""MariaDB/MySQL: what depends on a planned column, from ``information_schema``.

MariaDB and MySQL keep no dependency catalog for views and triggers; their
definitions are searched for the column's name (``VIEW_DEFINITION``,
``ACTION_STATEMENT``), as the server itself would only find out when the
view is read or the trigger fires. The server stores a view's definition
with every column qualified (```db`.`t`.`col```), so the search is reliable for
views; a trigger's body is stored as written. Generated columns
(``GENERATION_EXPRESSION``), CHECK constraints, indexes (``STATISTICS``) and
foreign keys in both directions (``KEY_COLUMN_USAGE``) are read exactly.

What ``ALTER TABLE ... DROP COLUMN`` does on these servers differs from
PostgreSQL: it *succeeds* under a view or a trigger that uses the column,
which then fail when read or fired (errors 1356 and 1054); it fails under a
generated column, a table CHECK or a foreign key (1054, 1828, 1829); and it
removes the column from a multi-column index rather than dropping the index.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

from encmigrate.dependents.model import OWN_PG_TRIGGER, PRIMARY_KEY, Dependent, Describe

if TYPE_CHECKING:
    from encmigrate.plan import ColumnPlan, TablePlan

__all__ = ["mysql_dependents"]

# The schema: the plan's, else the connection's database.
_SCHEMA = "COALESCE(:schema, DATABASE())"

_COLUMN = sa.text(
    "SELECT COLUMN_KEY FROM information_schema.COLUMNS "
    f"WHERE TABLE_SCHEMA = {_SCHEMA} AND TABLE_NAME = :table AND COLUMN_NAME = :column"
)
_GENERATED = sa.text(
    "SELECT COLUMN_NAME, GENERATION_EXPRESSION FROM information_schema.COLUMNS "
    f"WHERE TABLE_SCHEMA = {_SCHEMA} AND TABLE_NAME = :table AND COLUMN_NAME <> :column "
    "AND COALESCE(GENERATION_EXPRESSION, '') <> '' ORDER BY ORDINAL_POSITION"
)
_CHECKS = sa.text(
    "SELECT c.CONSTRAINT_NAME, c.CHECK_CLAUSE FROM information_schema.TABLE_CONSTRAINTS t "
    "JOIN information_schema.CHECK_CONSTRAINTS c ON c.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA "
    "AND c.CONSTRAINT_NAME = t.CONSTRAINT_NAME "
    f"WHERE t.TABLE_SCHEMA = {_SCHEMA} AND t.TABLE_NAME = :table "
    "AND t.CONSTRAINT_TYPE = 'CHECK' ORDER BY c.CONSTRAINT_NAME"
)
_INDEXES = sa.text(
    "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS "
    f"WHERE TABLE_SCHEMA = {_SCHEMA} AND TABLE_NAME = :table AND INDEX_NAME <> 'PRIMARY' "
    "ORDER BY INDEX_NAME, SEQ_IN_INDEX"
)
_FOREIGN_KEYS = sa.text(
    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, "
    "REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME, CONSTRAINT_NAME "
    "FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME IS NOT NULL AND ("
    f"(TABLE_SCHEMA = {_SCHEMA} AND TABLE_NAME = :table AND COLUMN_NAME = :column) OR "
    f"(REFERENCED_TABLE_SCHEMA = {_SCHEMA} AND REFERENCED_TABLE_NAME = :table "
    "AND REFERENCED_COLUMN_NAME = :column)) ORDER BY TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME"
)
_VIEWS = sa.text(
    "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
    "ORDER BY TABLE_SCHEMA, TABLE_NAME"
)
_TRIGGERS = sa.text(
    "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, "
    "ACTION_STATEMENT FROM information_schema.TRIGGERS ORDER BY TRIGGER_SCHEMA, TRIGGER_NAME"
)


def _mentions(sql: str, name: str) -> bool:
    """Whether ``sql`` names ``name`` (bare or back-quoted; case-insensitive, as column names)."""
    bare = rf"(?<![\w$]){re.escape(name)}(?![\w$])"
    quoted = re.escape("`" + name.replace("`", "``") + "`")
    return re.search(f"{bare}|{quoted}", sql, re.IGNORECASE) is not None


def mysql_dependents(
    connection: sa.Connection, table: TablePlan, column: ColumnPlan, describe: Describe
) -> list[Dependent]:
    """What uses ``column`` of ``table``: nothing when the column does not exist (any more)."""
    names = {"schema": table.schema_name, "table": table.table_name, "column": column.column}
    key = connection.execute(_COLUMN, names).first()
    if key is None:
        return []
    found: list[Dependent] = []
    if key[0] == "PRI":
        found.append(
            describe.make(
                PRIMARY_KEY,
                f"{table.table_name} PRIMARY KEY",
                f"part of the primary key of {table.table_name!r}: key columns cannot be encrypted",
                "remove the column from the plan",
            )
        )
    found += _generated(connection, names, describe)
    found += _checks(connection, names, describe)
    found += _indexes(connection, names, describe)
    found += _foreign_keys(connection, names, describe)
    found += _views(connection, table, names, describe)
    found += _triggers(connection, table, names, describe)
    return found


def _generated(
    connection: sa.Connection, names: dict[str, str | None], describe: Describe
) -> list[Dependent]:
    col = str(names["column"])
    return [
        describe.generated(f"{names['table']}.{name}")
        for name, expression in connection.execute(_GENERATED, names)
        if _mentions(str(expression), col)
    ]


def _checks(
    connection: sa.Connection, names: dict[str, str | None], describe: Describe
) -> list[Dependent]:
    col = str(names["column"])
    found: list[Dependent] = []
    for name, clause in connection.execute(_CHECKS, names):
        text = str(clause)
        if not _mentions(text, col):
            continue
        if str(name).lower() == col.lower() and not _other_columns(text, col):
            # MariaDB names a column-level CHECK after its column; it goes with the column.
            if re.fullmatch(rf"\s*json_valid\(\s*`?{re.escape(col)}`?\s*\)\s*", text, re.I):
                continue  # MariaDB's JSON type: the check is the type, not a rule
            found.append(describe.lost("check constraint", str(name), "its rule"))
        else:
            found.append(
                describe.fails("check constraint", str(name), f"the table's CHECK uses {col}")
            )
    return found


def _other_columns(clause: str, col: str) -> bool:
    """Whether a CHECK clause names a back-quoted column other than ``col``."""
    return any(name.lower() != col.lower() for name in re.findall(r"`((?:[^`]|``)+)`", clause))


def _indexes(
    connection: sa.Connection, names: dict[str, str | None], describe: Describe
) -> list[Dependent]:
    col = str(names["column"]).lower()
    indexes: dict[str, tuple[bool, list[str]]] = {}
    for name, non_unique, column in connection.execute(_INDEXES, names):
        unique, columns = indexes.setdefault(str(name), (not int(non_unique), []))
        columns.append(str(column or "").lower())
    found: list[Dependent] = []
    for name, (unique, columns) in indexes.items():
        if col not in columns:
            continue
        single = columns == [col]
        if unique and single:
            found.append(describe.unique("unique index", name, single=True))
        elif unique:
            found.append(
                describe.make(
                    "unique index",
                    name,
                    f"the column is removed from it: it then enforces uniqueness of "
                    f"({', '.join(c for c in columns if c != col)}) alone, and the DROP "
                    "fails if those repeat",
                    "drop it, or recreate it without the column, before step 5 (or pass "
                    "--allow-dropping-constraints after dropping it)",
                    droppable=True,
                )
            )
        else:
            found.append(describe.index(name, restored=single))
    return found


def _foreign_keys(
    connection: sa.Connection, names: dict[str, str | None], describe: Describe
) -> list[Dependent]:
    found: list[Dependent] = []
    table = str(names["table"])
    for schema, on, column, ref_schema, ref_table, ref_column, name in connection.execute(
        _FOREIGN_KEYS, names
    ):
        shown = (
            f"{name} on {schema}.{on}({column}) REFERENCES {ref_schema}.{ref_table}({ref_column})"
        )
        if str(on) == table and str(column).lower() == str(names["column"]).lower():
            found.append(
                describe.fails(
                    "foreign key",
                    shown,
                    "a column in a foreign key cannot be dropped (error 1828)",
                    "drop the foreign key before step 5: a ciphertext cannot reference "
                    f"{ref_table}",
                )
            )
        else:
            found.append(
                describe.fails(
                    "referencing foreign key",
                    shown,
                    f"{on}.{column} references it (error 1829)",
                    f"drop the foreign key of {on} (or make it reference the primary key) "
                    "before step 5",
                )
            )
    return found


def _views(
    connection: sa.Connection,
    table: TablePlan,
    names: dict[str, str | None],
    describe: Describe,
) -> list[Dependent]:
    col, on = str(names["column"]), str(names["table"])
    found: list[Dependent] = []
    for schema, view, definition in connection.execute(_VIEWS):
        text = str(definition or "")
        if view == table.view or not (_mentions(text, on) and _mentions(text, col)):
            continue
        found.append(
            describe.make(
                "view",
                f"{schema}.{view}",
                f"DROP COLUMN succeeds and the view breaks: reading it fails (error 1356), "
                f"it reads {col}",
                f"recreate it over the {table.view} view (which has {col} as ciphertext) "
                f"or without {col}, or drop it",
            )
        )
    return found


def _triggers(
    connection: sa.Connection,
    table: TablePlan,
    names: dict[str, str | None],
    describe: Describe,
) -> list[Dependent]:
    col, on = str(names["column"]), str(names["table"])
    found: list[Dependent] = []
    for _schema, name, _event_schema, event_table, statement in connection.execute(_TRIGGERS):
        if str(name).startswith(OWN_PG_TRIGGER):
            continue  # encmigrate's own trigger
        text = str(statement or "")
        if not _mentions(text, col) or (event_table != on and not _mentions(text, on)):
            continue
        found.append(
            describe.make(
                "trigger",
                f"{name} on {event_table}",
                f"DROP COLUMN succeeds and the trigger breaks: its next firing fails "
                f"(error 1054) and so does the write that fired it; its SQL uses {col}",
                f"drop it, or recreate it without {col}, before step 5",
            )
        )
    return found
