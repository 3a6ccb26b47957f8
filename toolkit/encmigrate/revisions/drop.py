"""Step 5: the revision that drops the plaintext columns, once verified.

Refused (RefusedError, exit 5) unless ``confirm`` and every planned column of
the selected tables is ``verified`` in ``encryption_migrations`` (only a full,
clean verify sets that). The revision re-checks at upgrade time, because rows
can change after verify: the trigger clears their ciphertext, and dropping the
plaintext would lose them. PostgreSQL aborts in a ``DO`` block; SQLite checks
in Python online and prints the query as a comment in ``--sql`` output.

SQLite (>= 3.35) drops with native ``ALTER TABLE ... DROP COLUMN``; the table's
other views and triggers are dropped and recreated around it, and indexes on
the plaintext are dropped first (both databases, so the downgrade can restore
them). The downgrade re-adds the columns empty: ``encmigrate decrypt-back``
refills them. Dropped values stay in the table's old pages until a rewrite:
``vacuum=True`` appends ``VACUUM FULL`` (PostgreSQL) or ``VACUUM`` (SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops

from encmigrate.errors import ConfigError, RefusedError
from encmigrate.plan import ColumnPhase, ColumnPlan, Plan
from encmigrate.revisions.generate import (
    RevisionResult,
    alembic_config,
    connect,
    emit,
    require_head,
)
from encmigrate.revisions.ops import (
    CheckEncryptedOp,
    DropShadowTriggerOp,
    InstallShadowTriggerOp,
    NoteOp,
)
from encmigrate.revisions.schema import LiveTable, read_table, require_checked, shadow_columns
from encmigrate.revisions.triggers import qualified
from encmigrate.tracking import MigrationStatus, migrations

__all__ = ["RewriteTableOp", "drop_unencrypted"]

PAGES_WARNING = (
    "dropped plaintext can remain in the table's old pages until the table is rewritten: "
    "VACUUM FULL or pg_repack on PostgreSQL, VACUUM on SQLite (--vacuum does it)"
)


@Operations.register_operation("rewrite_table")
class RewriteTableOp(MigrateOperation):
    """Rewrite a table so dropped values leave its pages (VACUUM FULL / VACUUM)."""

    def __init__(self, table: str, *, schema: str | None = None) -> None:
        self.table, self.schema = table, schema

    @classmethod
    def rewrite_table(cls, operations: Operations, table: str, *, schema: str | None = None) -> Any:
        """VACUUM FULL the table (PostgreSQL, ACCESS EXCLUSIVE lock) or the file (SQLite)."""
        return operations.invoke(cls(table, schema=schema))


@Operations.implementation_for(RewriteTableOp)
def _rewrite_table(operations: Operations, op: RewriteTableOp) -> None:
    context = operations.get_context()
    statement = (
        f"VACUUM FULL {qualified(context.dialect, op.table, op.schema)}"
        if context.dialect.name == "postgresql"
        else "VACUUM"
    )
    # VACUUM refuses to run inside a transaction on both databases.
    with context.autocommit_block():
        operations.execute(statement)


@renderers.dispatch_for(RewriteTableOp)
def _render_rewrite(autogen_context: AutogenContext, op: RewriteTableOp) -> str:
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"op.rewrite_table({op.table!r}{schema})"


def drop_unencrypted(
    plan: Plan,
    *,
    tables: Iterable[str] | None = None,
    confirm: bool = False,
    apply: bool = False,
    sql: bool = False,
    vacuum: bool = False,
) -> RevisionResult:
    """Write the drop-unencrypted revision for ``tables`` (all planned tables by default)."""
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
        _require_verified(connection, columns)
        live = [read_table(connection, table) for table in selected]
    upgrade: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    names: list[str] = []
    checks: list[MigrateOperation] = []
    for table in live:
        dropping = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
        if not dropping:
            continue
        names.append(table.plan.table)
        pairs = [(c.column, c.encrypted_column) for c in dropping]
        checks.append(CheckEncryptedOp(table.name, pairs, schema=table.schema))
        table_up, table_down = _table_ops(table, dropping, dialect)
        upgrade += table_up
        downgrade = table_down + downgrade
        if vacuum:
            upgrade.append(RewriteTableOp(table.name, schema=table.schema))
    notes = (PAGES_WARNING,) if not vacuum else ()
    if not names:
        return RevisionResult("drop-unencrypted", "encmigrate verify", notes=("nothing to drop",))
    # Every table is checked before anything is dropped: all or nothing.
    upgrade = checks + upgrade + [_status_update(columns, MigrationStatus.DROPPED)]
    downgrade = [
        NoteOp(
            [
                "The plaintext columns come back EMPTY (NULL). To refill them from the",
                "ciphertexts run `encmigrate decrypt-back` after this downgrade.",
            ]
        ),
        _status_update(columns, MigrationStatus.VERIFIED),
        *downgrade,
    ]
    return emit(
        config,
        step="drop-unencrypted",
        message=f"encmigrate drop-unencrypted: {', '.join(names)}",
        upgrade=upgrade,
        downgrade=downgrade,
        dialect=dialect,
        apply=apply,
        sql=sql,
        next_command="encmigrate verify",
        notes=notes,
    )


def _require_verified(connection: sa.Connection, columns: Sequence[ColumnPlan]) -> None:
    if not columns:
        return
    if not sa.inspect(connection).has_table(migrations.name):
        raise RefusedError(
            "no encryption_migrations table: run encmigrate add-columns, migrate-data "
            "and verify before dropping plaintext"
        )
    rows = connection.execute(
        sa.select(migrations.c.table_name, migrations.c.column_name, migrations.c.status)
    ).all()
    status = {(str(t), str(c)): str(s) for t, c, s in rows}
    unverified = [
        f"{c.table}.{c.column} ({status.get((c.table, c.column), 'not migrated')})"
        for c in columns
        if status.get((c.table, c.column)) != MigrationStatus.VERIFIED
    ]
    if unverified:
        raise RefusedError(
            "refusing to drop plaintext: not verified clean by a full verify: "
            + ", ".join(unverified)
            + "; run encmigrate verify (without --sample) and fix what it reports"
        )


def _status_update(columns: Sequence[ColumnPlan], status: MigrationStatus) -> MigrateOperation:
    pairs = " OR ".join(
        f"(table_name = '{_literal(c.table)}' AND column_name = '{_literal(c.column)}')"
        for c in columns
    )
    # Literals, not bind parameters: the statement must render in --sql output too.
    statement = f"UPDATE encryption_migrations SET status = '{status.value}' WHERE {pairs}"
    return alembic_ops.ExecuteSQLOp(statement)


def _literal(value: str) -> str:
    return value.replace("'", "''")


def _plaintext_indexes(table: LiveTable, dropping: Sequence[ColumnPlan]) -> list[dict[str, Any]]:
    names = {c.column for c in dropping}
    return [
        dict(index)
        for index in table.indexes
        if index.get("name") and names.intersection(index.get("column_names") or ())
    ]


def _table_ops(
    table: LiveTable, dropping: Sequence[ColumnPlan], dialect: str
) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    schema, name = table.schema, table.name
    shadowed = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
    upgrade: list[MigrateOperation] = [
        DropShadowTriggerOp(name, shadow_columns(shadowed), schema=schema)
    ]
    downgrade: list[MigrateOperation] = []
    for index in _plaintext_indexes(table, dropping):
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
    upgrade += [
        alembic_ops.ExecuteSQLOp(f"DROP {kind.upper()} {_quote(dep)}")
        for kind, dep, _ in dependents
    ]
    readd: list[MigrateOperation] = []
    for column in dropping:
        live = table.columns[column.column]
        original = sa.Column(column.column, live["type"], nullable=True)
        upgrade.append(alembic_ops.DropColumnOp(name, column.column, schema=schema))
        readd.append(alembic_ops.AddColumnOp(name, original, schema=schema))
    upgrade += [alembic_ops.ExecuteSQLOp(sql) for _, _, sql in dependents]
    restore: list[MigrateOperation] = [
        *readd,
        *downgrade,
        InstallShadowTriggerOp(
            name, shadow_columns(shadowed), schema=schema, view_writes=table.view_writes
        ),
    ]
    return upgrade, restore


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
