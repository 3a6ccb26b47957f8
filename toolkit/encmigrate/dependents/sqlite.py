"""SQLite: what depends on a planned column, from sqlite_master and the pragma functions.

SQLite keeps no dependency catalog: views and triggers are found by the names in
their SQL, as SQLite itself checks them when it drops a column.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from encmigrate.dependents.model import (
    OWN_PREFIX,
    PRIMARY_KEY,
    Dependent,
    Describe,
)

if TYPE_CHECKING:
    from encmigrate.plan import ColumnPlan, TablePlan

__all__ = ["sqlite_dependents"]


def _mentions(sql: str, name: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.IGNORECASE) is not None


def _sqlite_master(connection: sa.Connection, schema: str | None) -> str:
    if schema is None:
        return "sqlite_master"
    return f"{connection.dialect.identifier_preparer.quote_schema(schema)}.sqlite_master"


def _pragma(connection: sa.Connection, name: str, argument: str, schema: str | None) -> list[Any]:
    # Table-valued pragma functions take bound arguments (the schema is the hidden second one).
    args = ":argument, :schema" if schema is not None else ":argument"
    statement = sa.text(f"SELECT * FROM pragma_{name}({args})")
    return list(connection.execute(statement, {"argument": argument, "schema": schema}).mappings())


def sqlite_dependents(
    connection: sa.Connection, table: TablePlan, column: ColumnPlan, describe: Describe
) -> list[Dependent]:
    schema, name, col = table.schema_name, table.table_name, column.column
    info = _pragma(connection, "table_xinfo", name, schema)
    mine = [row for row in info if str(row["name"]).lower() == col.lower()]
    if not mine:
        return []
    master = _sqlite_master(connection, schema)
    found: list[Dependent] = []
    if mine[0]["pk"]:
        found.append(
            describe.make(
                PRIMARY_KEY,
                f"{name} PRIMARY KEY",
                f"part of the primary key of {name!r}: key columns cannot be encrypted",
                "remove the column from the plan",
            )
        )
    create = connection.execute(
        sa.text(f"SELECT sql FROM {master} WHERE type = 'table' AND name = :name"),
        {"name": name},
    ).scalar()
    items = _sqlite_items(str(create or ""))
    found += _sqlite_checks(items, name, col, describe)
    generated = {str(row["name"]).lower() for row in info if row["hidden"] in (2, 3)}
    found += _sqlite_generated(items, generated, name, col, describe)
    found += _sqlite_indexes(connection, master, table, column, describe)
    found += _sqlite_foreign_keys(connection, master, table, col, describe)
    rows = connection.execute(
        sa.text(
            f"SELECT type, name, tbl_name, sql FROM {master} "
            "WHERE type IN ('view', 'trigger') AND sql IS NOT NULL ORDER BY rowid"
        )
    ).all()
    for kind, dep, on, sql in rows:
        if str(dep).startswith(OWN_PREFIX) or dep == table.view:
            continue  # encmigrate's own triggers and view
        text = str(sql)
        if not _mentions(text, col) or (on != name and not _mentions(text, name)):
            continue
        if kind == "view":
            found.append(describe.view_like("view", str(dep)))
        else:
            found.append(describe.fails("trigger", str(dep), f"its SQL uses {col}"))
    return found


def _sqlite_items(create: str) -> list[str]:
    """The column definitions and table constraints of a CREATE TABLE, split at top-level commas."""
    start = create.find("(")
    if start < 0:
        return []
    items: list[str] = []
    current: list[str] = []
    depth = 0
    closing: str | None = None
    for char in create[start + 1 :]:
        if closing is not None:
            current.append(char)
            if char == closing:
                closing = None  # a doubled quote closes and reopens: same result
            continue
        if char in "'\"`":
            closing = char
        elif char == "[":
            closing = "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN")
_LEADING_NAME = re.compile(r'^\s*("(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[^\s(]+)')


def _item_column(item: str) -> str | None:
    """The column an item defines (None for a table constraint)."""
    match = _LEADING_NAME.match(item)
    if match is None:
        return None
    word = match.group(1)
    if word.upper() in _CONSTRAINT_WORDS:
        return None
    if word[0] in '"`[':
        return word[1:-1].replace('""', '"')
    return word


def _parenthesised(text: str, open_at: int) -> str:
    """The text inside the parenthesis that opens at ``open_at``."""
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    return text[open_at + 1 :]


def _sqlite_checks(items: list[str], table: str, col: str, describe: Describe) -> list[Dependent]:
    found: list[Dependent] = []
    for item in items:
        own = (_item_column(item) or "").lower() == col.lower()
        for match in re.finditer(r"(?:CONSTRAINT\s+(\S+)\s+)?CHECK\s*\(", item, re.IGNORECASE):
            expression = _parenthesised(item, match.end() - 1)
            if not _mentions(expression, col):
                continue
            name = match.group(1) or f"{table} CHECK ({' '.join(expression.split())[:60]})"
            if own:
                found.append(describe.lost("check constraint", name.strip('"`[]'), "its rule"))
            else:
                found.append(
                    describe.fails(
                        "check constraint", name.strip('"`[]'), f"the table's CHECK uses {col}"
                    )
                )
    return found


def _sqlite_generated(
    items: list[str], generated: set[str], table: str, col: str, describe: Describe
) -> list[Dependent]:
    found: list[Dependent] = []
    for item in items:
        name = _item_column(item)
        if name is None or name.lower() not in generated:
            continue
        match = re.search(r"\bAS\s*\(", item, re.IGNORECASE)
        if match and _mentions(_parenthesised(item, match.end() - 1), col):
            found.append(describe.generated(f"{table}.{name}"))
    return found


def _sqlite_indexes(
    connection: sa.Connection,
    master: str,
    table: TablePlan,
    column: ColumnPlan,
    describe: Describe,
) -> list[Dependent]:
    schema, col = table.schema_name, column.column
    found: list[Dependent] = []
    for index in _pragma(connection, "index_list", table.table_name, schema):
        name, origin = str(index["name"]), str(index["origin"])
        if origin == "pk":
            continue  # the primary key is reported as such
        keys = _pragma(connection, "index_xinfo", name, schema)
        names = [str(k["name"]).lower() for k in keys if k["key"] and k["cid"] >= 0]
        expression = any(k["key"] and k["cid"] == -2 for k in keys)
        sql = connection.execute(
            sa.text(f"SELECT sql FROM {master} WHERE type = 'index' AND name = :name"),
            {"name": name},
        ).scalar()
        in_keys = col.lower() in names
        if not (in_keys or ((expression or index["partial"]) and _mentions(str(sql or ""), col))):
            continue
        if origin == "u":
            found.append(
                describe.fails(
                    "unique constraint",
                    name,
                    "SQLite cannot drop a column that has a UNIQUE constraint",
                    "rebuild the table without the UNIQUE constraint (the SQLite table-rebuild "
                    "procedure) before step 5; unique_token = true keeps it on the search token",
                )
            )
        elif expression or index["partial"]:
            found.append(
                describe.fails(
                    "unique index" if index["unique"] else "index",
                    name,
                    "SQLite cannot drop a column that an expression or partial index uses",
                    f"drop the index before step 5; recreate it without {col} if queries need it",
                )
            )
        elif index["unique"]:
            found.append(describe.unique("unique index", name, single=names == [col.lower()]))
        else:
            found.append(describe.index(name, restored=True))
    return found


def _sqlite_foreign_keys(
    connection: sa.Connection, master: str, table: TablePlan, col: str, describe: Describe
) -> list[Dependent]:
    schema, name = table.schema_name, table.table_name
    found: list[Dependent] = []
    for key in _pragma(connection, "foreign_key_list", name, schema):
        if str(key["from"]).lower() == col.lower():
            other = str(key["table"])
            found.append(
                describe.fails(
                    "foreign key",
                    f"{name}({key['from']}) REFERENCES {other}({key['to'] or ''})",
                    "SQLite cannot drop a column that has a foreign key",
                    f"rebuild the table without the foreign key before step 5: a ciphertext "
                    f"cannot reference {other}",
                )
            )
    others = connection.execute(
        sa.text(
            f"SELECT name FROM {master} WHERE type = 'table' AND name <> :name "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        ),
        {"name": name},
    ).all()
    for (other,) in others:
        for key in _pragma(connection, "foreign_key_list", str(other), schema):
            if str(key["table"]).lower() == name.lower() and str(key["to"]).lower() == col.lower():
                found.append(
                    describe.fails(
                        "referencing foreign key",
                        f"{other}({key['from']}) REFERENCES {name}({key['to']})",
                        f"{other} references {col} (its writes fail with 'foreign key mismatch')",
                        f"rebuild {other} without the foreign key (or make it reference the "
                        "primary key) before step 5",
                    )
                )
    return found
