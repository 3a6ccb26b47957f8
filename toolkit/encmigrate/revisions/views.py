"""Step 4: the revision that creates one ``<table>_secure`` view per table.

The view has every column of the table in order, except that each planned
column shows its ciphertext under its original name and the plaintext is
absent; search-token columns stay visible for lookups.

PostgreSQL: the view is auto-updatable. So that inserts through it work, the
revision drops NOT NULL on the planned plaintext columns, and it reinstalls the
shadow trigger with ``view_writes``: a write that changes the ciphertext but
not the plaintext sets the plaintext to NULL. Its downgrade restores both.

MariaDB: the view is a simple (MERGE) view, so it is updatable: an INSERT or
UPDATE through it is an INSERT or UPDATE of the table, and fires the table's
triggers, the shadow trigger included. As on PostgreSQL the revision drops NOT
NULL on the planned plaintext columns (an INSERT through the view cannot name
them; a strict ``sql_mode`` refuses a NOT NULL column without a default) and
reinstalls the trigger with ``view_writes``. Dropping NOT NULL rebuilds the
table online (``ALGORITHM=INPLACE, LOCK=NONE``); the view is created with
``CREATE OR REPLACE VIEW``, so the revision can run again after failing
halfway (MariaDB DDL is not transactional).

SQLite: views are read-only (no INSTEAD OF triggers are generated), so SQLite
applications keep writing the table. Dropping NOT NULL there would mean
rebuilding the table, so the trigger gains ``view_writes`` only when every
planned plaintext column is nullable already; the result's notes say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from alembic.operations import MigrateOperation
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import mysql

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import RefusedError
from encmigrate.plan import ColumnPhase, Plan
from encmigrate.revisions.generate import (
    RevisionResult,
    alembic_config,
    connect,
    emit,
    require_head,
    revision_message,
)
from encmigrate.revisions.ops import (
    CreateSecureViewOp,
    ExecuteVerbatimOp,
    InstallShadowTriggerOp,
    NoteOp,
)
from encmigrate.revisions.schema import LiveTable, read_table, require_checked, shadow_columns
from encmigrate.revisions.sqltext import qualified, quote

__all__ = ["create_views", "view_columns"]


def create_views(
    plan: Plan,
    *,
    tables: Iterable[str] | None = None,
    apply: bool = False,
    sql: bool = False,
) -> RevisionResult:
    """Write the create-views revision for ``tables`` (all planned tables by default)."""
    require_checked(plan)
    selected = plan.select(tables)
    unshadowed = [c for t in selected for c in t.columns if c.phase is ColumnPhase.PLAIN]
    if unshadowed:
        names = ", ".join(f"{c.table}.{c.column}" for c in unshadowed)
        raise RefusedError(f"{names} have no encrypted column yet: run encmigrate add-columns")
    config = alembic_config(plan)
    with connect(plan) as connection:
        require_head(config, connection)
        dialect = connection.dialect.name
        live = [read_table(connection, table) for table in selected]
    upgrade: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    notes: list[str] = []
    for table in live:
        if table.view_exists:
            notes.append(f"{table.plan.view} exists already: left as it is")
            continue
        table_up, table_down, table_notes = _table_ops(table, dialect)
        upgrade += table_up
        downgrade = table_down + downgrade
        notes += table_notes
    if not upgrade:
        return RevisionResult(
            "create-views", "encmigrate drop-unencrypted --confirm", notes=tuple(notes)
        )
    return emit(
        config,
        step="create-views",
        message=revision_message("create-views", [t.plan.view for t in live if not t.view_exists]),
        upgrade=upgrade,
        downgrade=downgrade,
        dialect=dialect,
        apply=apply,
        sql=sql,
        next_command="move readers to the views, then encmigrate drop-unencrypted --confirm",
        notes=notes,
    )


def view_columns(table: LiveTable) -> list[tuple[str, str]]:
    """(view column, table column) pairs: the ciphertext takes the plaintext's place.

    A generated column computed from a planned plaintext (``split_part(email, '@',
    2)``) is left out: it would show part of the plaintext through the view that
    exists to hide it.
    """
    planned = {c.column: c for c in table.plan.columns}
    ciphertexts = {c.encrypted_column: c for c in table.plan.columns}
    pairs: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name in table.columns:
        if _derived_from_plaintext(table.columns[name], planned):
            continue
        if name in planned:
            column = planned[name]
            pairs.append((name, column.encrypted_column))
            placed.add(column.column)
        elif name in ciphertexts:
            column = ciphertexts[name]
            if column.column not in placed and column.column not in table.columns:
                pairs.append((column.column, name))  # plaintext dropped already
                placed.add(column.column)
        else:
            pairs.append((name, name))
    return pairs


def _derived_from_plaintext(column: Mapping[str, Any], planned: Mapping[str, Any]) -> bool:
    computed = column.get("computed")
    if not computed:
        return False
    expression = str(computed.get("sqltext", ""))
    return any(
        re.search(rf'(?<![\w$"]){re.escape(name)}(?![\w$"])|"{re.escape(name)}"', expression)
        for name in planned
    )


def _table_ops(
    table: LiveTable, dialect: str
) -> tuple[list[MigrateOperation], list[MigrateOperation], list[str]]:
    schema, name = table.schema, table.name
    shadowed = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
    not_null = [c for c in shadowed if not table.columns[c.column]["nullable"]]
    upgrade: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    notes: list[str] = []
    view_writes = bool(shadowed)
    if dialect == "postgresql":
        for column in not_null:
            existing = table.columns[column.column]["type"]
            upgrade.append(
                alembic_ops.AlterColumnOp(
                    name,
                    column.column,
                    schema=schema,
                    modify_nullable=True,
                    existing_type=existing,
                    existing_nullable=False,
                )
            )
            downgrade.insert(
                0,
                alembic_ops.AlterColumnOp(
                    name,
                    column.column,
                    schema=schema,
                    modify_nullable=False,
                    existing_type=existing,
                    existing_nullable=True,
                ),
            )
    elif dialect in MYSQL_DIALECTS:
        if not_null:
            up, down = _mysql_nullable(table, [c.column for c in not_null])
            upgrade.append(up)
            downgrade.insert(0, down)
    elif not_null:
        view_writes = False
        notes.append(
            f"SQLite: {table.plan.view} is read-only and "
            f"{_stay_not_null([c.column for c in not_null])}: "
            f"keep writing {table.plan.table}"
        )
    else:
        notes.append(f"SQLite: {table.plan.view} is read-only: keep writing {table.plan.table}")
    if dialect in ("postgresql", *MYSQL_DIALECTS) and not_null:
        downgrade.insert(
            0,
            NoteOp(
                [
                    "Restoring NOT NULL fails while rows written through the view have a NULL",
                    "plaintext: refill them first with `encmigrate decrypt-back`.",
                ]
            ),
        )
    if view_writes:
        upgrade.append(
            InstallShadowTriggerOp(name, shadow_columns(shadowed), schema=schema, view_writes=True)
        )
        downgrade.insert(0, InstallShadowTriggerOp(name, shadow_columns(shadowed), schema=schema))
    view = CreateSecureViewOp(table.plan.view, name, view_columns(table), schema=schema)
    upgrade.append(view)
    downgrade.insert(0, view.reverse())
    return upgrade, downgrade, notes


def _mysql_nullable(
    table: LiveTable, columns: list[str]
) -> tuple[MigrateOperation, MigrateOperation]:
    """``ALTER TABLE ... MODIFY <col> <its definition> NULL``, online; and back to NOT NULL.

    MODIFY restates the whole column (its type, character set, default, comment:
    ``LiveTable.definitions``). Dropping NOT NULL is not an instant change on
    MariaDB 10.11: ``ALGORITHM=INPLACE, LOCK=NONE`` rebuilds the table while
    reads and writes go on, with the exclusive metadata lock held only at the
    start and the end. Running it again does nothing new.
    """
    dialect = mysql.dialect()
    target = qualified(dialect, table.name, table.schema)

    def modify(null: str) -> str:
        changes = ", ".join(
            f"MODIFY COLUMN {quote(dialect, c)} {table.definitions[c].modified(null)}"
            for c in columns
        )
        return f"ALTER TABLE {target} {changes}, ALGORITHM=INPLACE, LOCK=NONE"

    return ExecuteVerbatimOp(modify("NULL")), ExecuteVerbatimOp(modify("NOT NULL"))


def _stay_not_null(columns: list[str]) -> str:
    if len(columns) == 1:
        return f"column {columns[0]} stays NOT NULL"
    return f"columns {', '.join(columns)} stay NOT NULL"
