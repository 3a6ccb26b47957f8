"""Step 5: the revision that drops the plaintext columns, once verified.

Refused (RefusedError, exit 5) unless ``confirm`` and every planned column of
the selected tables is ``verified`` in ``encryption_migrations`` (only a full,
clean verify sets that). The revision re-checks at upgrade time, because rows
can change after verify: the trigger clears their ciphertext, and dropping the
plaintext would lose them. PostgreSQL aborts in a ``DO`` block; SQLite checks
in Python online and prints the query as a comment in ``--sql`` output.

Before writing anything it reads what depends on the plaintext columns
(:mod:`encmigrate.dependents`) and refuses, naming each object and what to do,
while any of them would make ``DROP COLUMN`` fail halfway through a deployment
or vanish with the column unnoticed (a unique or check constraint). Unique
indexes and constraints go through with ``allow_dropping_constraints``; a
searchable column planned with ``unique_token = true`` keeps its uniqueness on
``<col>_search`` instead: the revision builds a unique index there first
(``CREATE UNIQUE INDEX CONCURRENTLY`` on PostgreSQL), dropped on downgrade.

MariaDB: the check runs in Python (as on SQLite), but MariaDB DDL is not
transactional, so it cannot share a transaction with the ``DROP COLUMN``: a
plaintext written between the two would be lost. So the plaintext columns are
fenced first (``op.fence_plaintext``: triggers that refuse a write of a planned
plaintext, whose creation waits for every open transaction on the table), then
checked, then the fence, the shadow trigger and the columns are dropped; a
check that refuses lifts every fence before it raises, and the application
writes again. The drop is ``DROP COLUMN IF EXISTS`` with ``LOCK=NONE`` (so a
failed revision can run again, and the server refuses rather than block
writes); docs/mariadb.md.

SQLite (>= 3.35) drops with native ``ALTER TABLE ... DROP COLUMN``; the table's
other views and triggers are dropped and recreated around it, and plain-column
indexes on the plaintext are dropped first (both databases, so the downgrade
can restore them). The downgrade re-adds the columns empty: ``encmigrate
decrypt-back`` refills them. Dropped values stay in the table's old pages until
a rewrite: ``vacuum=True`` appends ``VACUUM FULL`` (PostgreSQL) or ``VACUUM``
(SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.operations import MigrateOperation
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import mysql

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.dependents import find_dependents
from encmigrate.errors import ConfigError, RefusedError
from encmigrate.plan import ColumnPhase, ColumnPlan, Plan, TablePlan
from encmigrate.revisions.drop_checks import (
    dependent_notes,
    require_distinct_tokens,
    require_no_blockers,
    require_verified,
    rollback_limits,
)
from encmigrate.revisions.generate import (
    RevisionResult,
    alembic_config,
    connect,
    emit,
    require_head,
    revision_message,
)
from encmigrate.revisions.ops import (
    CheckEncryptedOp,
    CreateSearchIndexOp,
    DropShadowTriggerOp,
    ExecuteVerbatimOp,
    FencePlaintextOp,
    InstallShadowTriggerOp,
    LiftFenceOp,
    NoteOp,
    RewriteTableOp,
    SetMigrationStatusOp,
)
from encmigrate.revisions.schema import (
    LiveTable,
    index_name,
    read_table,
    require_checked,
    shadow_columns,
)
from encmigrate.revisions.sqltext import qualified, quote
from encmigrate.tracking import MigrationStatus

__all__ = ["drop_unencrypted"]

PAGES_WARNING = (
    "dropped plaintext can remain in the table's old pages until the table is rewritten: "
    "VACUUM FULL or pg_repack on PostgreSQL, VACUUM on SQLite, ALTER TABLE ... FORCE on "
    "MariaDB (--vacuum does it)"
)


def unique_token_index_name(table: str, column: str) -> str:
    """``ux_<table>_<col>_search``, shortened like the search index past 63 characters."""
    return "ux" + index_name(table, column)[2:]


def drop_unencrypted(
    plan: Plan,
    *,
    tables: Iterable[str] | None = None,
    confirm: bool = False,
    apply: bool = False,
    sql: bool = False,
    vacuum: bool = False,
    allow_dropping_constraints: bool = False,
) -> RevisionResult:
    """Write the drop-unencrypted revision for ``tables`` (all planned tables by default).

    Refused while an object depends on a plaintext column in a way the drop
    would break or silently lose; ``allow_dropping_constraints`` lets unique
    indexes and constraints be dropped with their column.
    """
    if not confirm:
        raise RefusedError(
            "drop-unencrypted deletes the plaintext columns: pass --confirm to go ahead"
        )
    require_checked(plan)
    selected = plan.select(tables)
    columns = [c for t in selected for c in t.columns if c.phase is ColumnPhase.SHADOWED]
    plain = [c for t in selected for c in t.columns if c.phase is ColumnPhase.PLAIN]
    if plain:
        raise RefusedError(
            f"{', '.join(f'{c.table}.{c.column}' for c in plain)} were never encrypted: "
            "run encmigrate add-columns, migrate-data and verify first"
        )
    config = alembic_config(plan)
    with connect(plan) as connection:
        require_head(config, connection)
        dialect = connection.dialect.name
        require_verified(connection, columns)
        dependents = find_dependents(connection, [_shadowed(table) for table in selected])
        allowed = require_no_blockers(dependents, allow_dropping_constraints)
        require_distinct_tokens(connection, columns)
        live = [read_table(connection, table) for table in selected]
        rollback = [note for table in live for note in rollback_limits(connection, table)]
    upgrade: list[MigrateOperation] = []
    rewrites: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    names: list[str] = []
    checks: list[CheckEncryptedOp] = []
    fences: list[FencePlaintextOp] = []
    tokens: list[CreateSearchIndexOp] = []
    for table in live:
        dropping = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
        if not dropping:
            continue
        names.append(table.plan.table)
        pairs = [(c.column, c.encrypted_column) for c in dropping]
        checks.append(CheckEncryptedOp(table.name, pairs, schema=table.schema))
        if dialect in MYSQL_DIALECTS:
            fences.append(_fence(table, pairs))
        tokens += [
            CreateSearchIndexOp(
                unique_token_index_name(table.name, c.search_column),
                table.name,
                c.search_column,
                schema=table.schema,
                unique=True,
            )
            for c in dropping
            if c.unique_token and c.search_column is not None
        ]
        table_up, table_down = _table_ops(table, dropping, dialect)
        upgrade += table_up
        downgrade = table_down + downgrade
        if vacuum:
            rewrites.append(RewriteTableOp(table.name, schema=table.schema))
    notes = (
        *dependent_notes(dependents, allowed),
        *rollback,
        *((PAGES_WARNING,) if not vacuum else ()),
    )
    if not names:
        return RevisionResult("drop-unencrypted", "encmigrate verify", notes=("nothing to drop",))
    # The unique token indexes are built first: CONCURRENTLY commits what precedes it, and
    # the check must share the drop's transaction, or a row written between the two would
    # lose its plaintext. Every table is checked before anything is dropped: all or nothing.
    # VACUUM runs in an autocommit block, which commits everything before it: the status
    # goes first, so a rewrite that fails (a lock timeout) leaves the drop recorded.
    # MariaDB: the fences go up first, on every table, and come down if a check refuses
    # (drop_checks.py and ops/fence.py say why: the check cannot share the drop's transaction).
    # A first check before any DDL refuses the usual case (rows left unencrypted) while
    # nothing was committed yet, so the revision file goes as on PostgreSQL; only the check
    # behind the fence is final.
    # (Online only: in --sql output it would be the same comment twice.)
    early = [
        CheckEncryptedOp(c.table, c.columns, schema=c.schema) for c in checks if fences and not sql
    ]
    for check in checks:
        check.lift = [(fence.table, fence.schema) for fence in fences]
    upgrade = [
        *early,
        *tokens,
        *fences,
        *checks,
        *upgrade,
        _status_update(columns, MigrationStatus.DROPPED),
        *rewrites,
    ]
    downgrade = [
        NoteOp(
            [
                "The plaintext columns come back EMPTY (NULL). To refill them from the",
                "ciphertexts run `encmigrate decrypt-back` after this downgrade.",
            ]
        ),
        _status_update(columns, MigrationStatus.VERIFIED),
        *downgrade,
        *(token.reverse() for token in tokens),
    ]
    return emit(
        config,
        step="drop-unencrypted",
        message=revision_message("drop-unencrypted", names),
        upgrade=upgrade,
        downgrade=downgrade,
        dialect=dialect,
        apply=apply,
        sql=sql,
        next_command="encmigrate verify",
        notes=notes,
    )


def _shadowed(table: TablePlan) -> TablePlan:
    columns = tuple(c for c in table.columns if c.phase is ColumnPhase.SHADOWED)
    return table.model_copy(update={"columns": columns})


def _status_update(columns: Sequence[ColumnPlan], status: MigrationStatus) -> MigrateOperation:
    return SetMigrationStatusOp([(c.table, c.column) for c in columns], status.value)


def _plaintext_indexes(table: LiveTable, dropping: Sequence[ColumnPlan]) -> list[dict[str, Any]]:
    """Indexes over plain columns that include a dropped column: dropped, then restored.

    An expression or partial index cannot be restored from its reflected columns
    (PostgreSQL drops it with the column; SQLite refuses it as a dependent first).
    """
    names = {c.column for c in dropping}
    return [
        dict(index)
        for index in table.indexes
        if index.get("name")
        and names.intersection(index.get("column_names") or ())
        and None not in (index.get("column_names") or ())
        and not any(key.endswith("_where") for key in index.get("dialect_options") or {})
    ]


def _table_ops(
    table: LiveTable, dropping: Sequence[ColumnPlan], dialect: str
) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    schema, name = table.schema, table.name
    shadowed = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
    upgrade: list[MigrateOperation] = [
        *([LiftFenceOp(name, schema=schema)] if dialect in MYSQL_DIALECTS else []),
        DropShadowTriggerOp(name, shadow_columns(shadowed), schema=schema),
    ]
    downgrade: list[MigrateOperation] = []
    for index in _plaintext_indexes(table, dropping):
        if index.get("duplicates_constraint"):
            # A unique constraint's index (PostgreSQL): only the constraint can be dropped.
            # Reached when --allow-dropping-constraints or unique_token let it go.
            upgrade.append(
                alembic_ops.DropConstraintOp(index["name"], name, type_="unique", schema=schema)
            )
            downgrade.append(
                alembic_ops.CreateUniqueConstraintOp(
                    index["name"], name, list(index["column_names"]), schema=schema
                )
            )
            continue
        upgrade.append(alembic_ops.DropIndexOp(index["name"], name, schema=schema))
        downgrade.append(
            alembic_ops.CreateIndexOp(
                index["name"],
                name,
                list(index["column_names"]),
                schema=schema,
                unique=bool(index.get("unique")),
            )
        )
    dependents = _sqlite_dependents(table, dropping) if dialect == "sqlite" else []
    # As written: op.execute() would take ":name" in a name or in their SQL for a parameter.
    upgrade += [
        ExecuteVerbatimOp(f"DROP {kind.upper()} {_quote(dep)}") for kind, dep, _ in dependents
    ]
    readd: list[MigrateOperation] = []
    if dialect in MYSQL_DIALECTS:
        drop_columns, add_columns = _mysql_columns(table, dropping)
        upgrade.append(drop_columns)
        readd.append(add_columns)
    else:
        for column in dropping:
            live = table.columns[column.column]
            original = sa.Column(column.column, live["type"], nullable=True)
            upgrade.append(alembic_ops.DropColumnOp(name, column.column, schema=schema))
            readd.append(alembic_ops.AddColumnOp(name, original, schema=schema))
    upgrade += [ExecuteVerbatimOp(sql) for _, _, sql in dependents]
    restore: list[MigrateOperation] = [
        *readd,
        *downgrade,
        InstallShadowTriggerOp(
            name, shadow_columns(shadowed), schema=schema, view_writes=table.view_writes
        ),
    ]
    return upgrade, restore


def _fence(table: LiveTable, pairs: Sequence[tuple[str, str]]) -> FencePlaintextOp:
    return FencePlaintextOp(
        table.name, pairs, shown=table.plan.table, view=table.plan.view, schema=table.schema
    )


def _mysql_columns(
    table: LiveTable, dropping: Sequence[ColumnPlan]
) -> tuple[MigrateOperation, MigrateOperation]:
    """One ``DROP COLUMN IF EXISTS`` per column in one ALTER, and its re-add.

    ``IF EXISTS``: MariaDB DDL is not transactional, so a revision that failed
    after the drop must be able to run again. ``LOCK=NONE`` lets the server pick
    INSTANT (10.4+) or an online rebuild, and refuse rather than block writes.
    The downgrade re-adds each column with its type and character set, nullable,
    without its default (existing rows must come back NULL: decrypt-back refills
    the rows whose plaintext is NULL), as the PostgreSQL downgrade does; with its
    column-level CHECK, which MariaDB dropped with it (a JSON column comes back
    as ``json``, its ``json_valid`` check with it: ``LiveTable.definitions``).
    """
    dialect = mysql.dialect()
    target = qualified(dialect, table.name, table.schema)
    names = [quote(dialect, c.column) for c in dropping]
    drops = ", ".join(f"DROP COLUMN IF EXISTS {n}" for n in names)
    adds = ", ".join(
        f"ADD COLUMN IF NOT EXISTS {n} {table.definitions[c.column].readded()}"
        for n, c in zip(names, dropping, strict=True)
    )
    return (
        ExecuteVerbatimOp(f"ALTER TABLE {target} {drops}, LOCK=NONE"),
        ExecuteVerbatimOp(f"ALTER TABLE {target} {adds}, ALGORITHM=INSTANT"),
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_dependents(
    table: LiveTable, dropping: Sequence[ColumnPlan]
) -> list[tuple[str, str, str]]:
    """Views and triggers on the table: dropped and recreated around DROP COLUMN.

    One that uses a dropped column could not be recreated: refuse up front,
    since SQLite DDL is not transactional under Alembic and would stop halfway.
    """
    for kind, name, sql in table.dependents:
        for column in dropping:
            if re.search(rf"(?<![\w$]){re.escape(column.column)}(?![\w$])", sql, re.IGNORECASE):
                raise ConfigError(
                    f"{kind} {name!r} uses {table.plan.table}.{column.column}: change it to "
                    f"use {column.encrypted_column} (or the {table.plan.view} view) first"
                )
    return list(table.dependents)
