"""MariaDB/MySQL: what depends on a planned column, from ``information_schema``.

MariaDB and MySQL keep no dependency catalog for views, triggers and stored
routines; their definitions are searched for the table's and the column's names
(``VIEW_DEFINITION``, ``ACTION_STATEMENT``, ``ROUTINE_DEFINITION``), as the
server itself would only find out when the view is read, the trigger fires or
the routine runs. The search is scoped to the plan's schema: an object in
another database counts only when it names the planned table qualified by the
plan's schema (```db`.`t```), as it must to reach it. The server stores a
view's definition with every table qualified, so the search is reliable for
views; trigger and routine bodies are stored as written, and a routine found
that way is a best-effort warning (as PostgreSQL's function search is).
Generated columns (``GENERATION_EXPRESSION``), CHECK constraints, indexes
(``STATISTICS``) and foreign keys in both directions (``KEY_COLUMN_USAGE``) are
read exactly.

What ``ALTER TABLE ... DROP COLUMN`` does on these servers differs from
PostgreSQL: it *succeeds* under a view, a trigger or a routine that uses the
column, which then fail when read, fired or called (errors 1356 and 1054); it
fails under a generated column or a foreign key (1054, 1828, 1829); it removes
a CHECK that uses no column but the dropped ones (and a column's own CHECK with
its column) and fails under one that also uses a column that stays (1054); and
it removes the column from a multi-column index rather than dropping the index.
"""

from __future__ import annotations

import re
from dataclasses import replace
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
# ``c.*``: MariaDB 10.5.10+ adds LEVEL ('Column' for a column's own CHECK), MySQL has none.
_CHECKS = sa.text(
    "SELECT c.* FROM information_schema.TABLE_CONSTRAINTS t "
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
_SCHEMA_NAME = sa.text(f"SELECT {_SCHEMA}")
_VIEWS = sa.text(
    "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
    "ORDER BY TABLE_SCHEMA, TABLE_NAME"
)
_TRIGGERS = sa.text(
    "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, "
    "ACTION_STATEMENT FROM information_schema.TRIGGERS ORDER BY TRIGGER_SCHEMA, TRIGGER_NAME"
)
_ROUTINES = sa.text(
    "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION "
    "FROM information_schema.ROUTINES ORDER BY ROUTINE_SCHEMA, ROUTINE_NAME"
)


def _name(name: str) -> str:
    """A pattern for ``name`` as an identifier: bare (a whole word) or back-quoted."""
    bare = rf"(?<![\w$]){re.escape(name)}(?![\w$])"
    quoted = re.escape("`" + name.replace("`", "``") + "`")
    return f"(?:{bare}|{quoted})"


def _mentions(sql: str, name: str) -> bool:
    """Whether ``sql`` names ``name`` (bare or back-quoted; case-insensitive, as column names)."""
    return re.search(_name(name), sql, re.IGNORECASE) is not None


def _uses_table(sql: str, schema: str, table: str, *, unqualified: bool) -> bool:
    """Whether ``sql`` names ``schema.table``; ``unqualified``: or ``table`` with no schema.

    Unqualified names are the SQL's own schema's: they count only for an object in
    the plan's schema. A name qualified by another schema never counts.
    """
    owner = re.compile(rf"{_name(schema)}\s*\.\s*$", re.IGNORECASE)
    for found in re.finditer(_name(table), sql, re.IGNORECASE):
        before = sql[: found.start()].rstrip()
        if not before.endswith("."):
            if unqualified:
                return True
        elif owner.search(before):
            return True
    return False


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
    schema = str(connection.execute(_SCHEMA_NAME, names).scalar())
    found += _views(connection, table, schema, describe)
    found += _triggers(connection, table, schema, describe)
    found += _routines(connection, table, schema, describe)
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
    col = describe.col.lower()
    dropped = {c.column.lower() for c in describe.table.columns}
    found: list[Dependent] = []
    for row in connection.execute(_CHECKS, names):
        fields = row._mapping
        name, text = str(fields["CONSTRAINT_NAME"]), str(fields["CHECK_CLAUSE"])
        # A column's own CHECK is named after it; LEVEL says which it is where there is one.
        level = fields.get("LEVEL")
        own = level == "Column" if level is not None else name.lower() == col
        if own and name.lower() == col:
            if re.fullmatch(rf"\s*json_valid\(\s*`?{re.escape(col)}`?\s*\)\s*", text, re.I):
                continue  # MariaDB's JSON type: the check is the type, not a rule
            found.append(_column_check(describe, name, lost=True))
        elif not _mentions(text, col):
            continue
        elif own:
            found.append(_column_check(describe, name, lost=name.lower() in dropped))
        else:
            others = [c for c in _columns(text) if c.lower() != col]
            found.append(_table_check(describe, name, others, dropped))
    return found


def _column_check(describe: Describe, owner: str, *, lost: bool) -> Dependent:
    """The own CHECK of column ``owner`` (its name): it goes with ``owner``, and only so.

    ``DROP CONSTRAINT`` cannot name a column's own CHECK (error 1091): the column
    is redefined without it.
    """
    remove = (
        f"redefine {owner} without the CHECK (ALTER TABLE ... MODIFY {owner} ...: "
        "DROP CONSTRAINT cannot name a column's own CHECK)"
    )
    if not lost:
        return describe.fails(
            "check constraint",
            owner,
            f"the CHECK of column {owner} uses {describe.col} (error 1054)",
            f"{remove}, or give it one without {describe.col}, before step 5",
        )
    effect = "dropped with the column: its rule is no longer enforced"
    if owner.lower() != describe.col.lower():
        effect = f"dropped with {owner} (step 5 drops it too): its rule is no longer enforced"
    return describe.make(
        "check constraint",
        owner,
        effect,
        f"{remove} and enforce the rule in the application, before step 5",
    )


def _table_check(describe: Describe, name: str, others: list[str], dropped: set[str]) -> Dependent:
    """A table CHECK: removed when every column it uses is dropped, else it fails the drop."""
    staying = [c for c in others if c.lower() not in dropped]
    if staying:
        verb = "stays" if len(staying) == 1 else "stay"
        return describe.fails(
            "check constraint",
            name,
            f"the CHECK also uses {', '.join(staying)}, which {verb} (error 1054)",
            f"drop it (ALTER TABLE ... DROP CONSTRAINT {name}), or recreate it without "
            f"{describe.col}, before step 5",
        )
    lost = describe.lost("check constraint", name, "its rule")
    if not others:
        return lost
    together = ", ".join(sorted([describe.col, *others], key=str.lower))
    return replace(
        lost,
        effect=f"dropped with the columns {together} (step 5 drops them together): "
        "its rule is no longer enforced",
    )


def _columns(clause: str) -> list[str]:
    """The columns a CHECK clause names, once each: the server back-quotes every one."""
    names = (name.replace("``", "`") for name in re.findall(r"`((?:[^`]|``)+)`", clause))
    return list(dict.fromkeys(names))


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
    connection: sa.Connection, table: TablePlan, schema: str, describe: Describe
) -> list[Dependent]:
    col, on = describe.col, table.table_name
    found: list[Dependent] = []
    for view_schema, view, definition in connection.execute(_VIEWS):
        text = str(definition or "")
        if view_schema == schema and view == table.view:
            continue  # encmigrate's own view
        # The server qualifies every table of a stored view definition with its schema.
        if not (_uses_table(text, schema, on, unqualified=False) and _mentions(text, col)):
            continue
        found.append(
            describe.make(
                "view",
                f"{view_schema}.{view}",
                f"DROP COLUMN succeeds and the view breaks: reading it fails (error 1356), "
                f"it reads {col}",
                f"recreate it over the {table.view} view (which has {col} as ciphertext) "
                f"or without {col}, or drop it",
            )
        )
    return found


def _triggers(
    connection: sa.Connection, table: TablePlan, schema: str, describe: Describe
) -> list[Dependent]:
    col, on = describe.col, table.table_name
    found: list[Dependent] = []
    for _schema, name, event_schema, event_table, statement in connection.execute(_TRIGGERS):
        if str(name).startswith(OWN_PG_TRIGGER):
            continue  # encmigrate's own trigger
        text = str(statement or "")
        # A trigger lives in its table's schema, where unqualified names in its body resolve.
        local = event_schema == schema
        if not _mentions(text, col):
            continue
        if not (local and event_table == on) and not _uses_table(
            text, schema, on, unqualified=local
        ):
            continue
        found.append(
            describe.make(
                "trigger",
                f"{name} on {event_table}" if local else f"{name} on {event_schema}.{event_table}",
                f"DROP COLUMN succeeds and the trigger breaks: its next firing fails "
                f"(error 1054) and so does the write that fired it; its SQL uses {col}",
                f"drop it, or recreate it without {col}, before step 5",
            )
        )
    return found


def _routines(
    connection: sa.Connection, table: TablePlan, schema: str, describe: Describe
) -> list[Dependent]:
    col, on = describe.col, table.table_name
    return [
        describe.make(
            str(kind).lower(),
            f"{routine_schema}.{name}",
            f"its body mentions {col}; if it reads the plaintext it fails at run time (error 1054)",
            f"read it; make it use {describe.column.encrypted_column} (or the {table.view} "
            f"view) if it reads {col}",
            blocking=False,
            best_effort=True,
        )
        for routine_schema, name, kind, definition in connection.execute(_ROUTINES)
        if _mentions(str(definition or ""), col)
        and _uses_table(str(definition), schema, on, unqualified=routine_schema == schema)
    ]
