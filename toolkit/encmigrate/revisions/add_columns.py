"""Step 1: the revision that adds the shadow columns, the tracking tables and the trigger.

Per planned column it adds ``<col>_encrypted`` (binary, or text with
``storage = "text"``) and, for searchable columns, ``<col>_search`` with an
index built concurrently on PostgreSQL, last, so that the ``ALTER TABLE``
locks are released before the build starts (the build retries by itself
after a lock timeout: ``op.create_search_index``). It creates the tracking tables when
they are absent and (re)installs each table's shadow trigger over all of the
table's planned columns. Columns that already have their shadow are skipped,
so planning more columns later and running ``add-columns`` again works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic.operations import MigrateOperation
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import mysql

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.plan import ColumnPhase, ColumnPlan, Plan
from encmigrate.revisions.generate import (
    RevisionResult,
    alembic_config,
    connect,
    emit,
    require_head,
    revision_message,
)
from encmigrate.revisions.ops import (
    CreateSearchIndexOp,
    DropShadowTriggerOp,
    ExecuteVerbatimOp,
    InstallShadowTriggerOp,
)
from encmigrate.revisions.schema import (
    LiveTable,
    index_name,
    read_table,
    require_checked,
    shadow_columns,
)
from encmigrate.revisions.sqltext import qualified, quote
from encmigrate.tracking import TRACKING_TABLES

__all__ = ["add_columns"]

# base64 of a 32-byte HMAC token with padding is 44 characters.
_TEXT_TOKEN_LENGTH = 44
# (ciphertext, token) by text storage: the column types' own MariaDB storage (fields/):
# LONGBLOB (no 64 KiB BLOB limit) and BINARY(32), or ASCII text with a binary collation.
_MYSQL_TYPES = {
    False: ("LONGBLOB", "BINARY(32)"),
    True: (
        "LONGTEXT CHARACTER SET ascii COLLATE ascii_bin",
        f"VARCHAR({_TEXT_TOKEN_LENGTH}) CHARACTER SET ascii COLLATE ascii_bin",
    ),
}


def add_columns(
    plan: Plan,
    *,
    tables: Iterable[str] | None = None,
    apply: bool = False,
    sql: bool = False,
) -> RevisionResult:
    """Write the add-columns revision for ``tables`` (all planned tables by default)."""
    require_checked(plan)
    selected = plan.select(tables)
    config = alembic_config(plan)
    with connect(plan) as connection:
        require_head(config, connection)
        dialect = connection.dialect.name
        live = [read_table(connection, table) for table in selected]
        existing = set(sa.inspect(connection).get_table_names())
    upgrade: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    created_tracking = [t for t in TRACKING_TABLES if t.name not in existing]
    # Every statement can run again (IF NOT EXISTS; the trigger is dropped and recreated;
    # the index build is idempotent): when the revision's concurrent index build gives up
    # after the earlier statements were committed, `alembic upgrade head` finishes it.
    for tracking in created_tracking:
        create = alembic_ops.CreateTableOp.from_table(tracking)
        create.if_not_exists = True
        upgrade.append(create)
        for index in tracking.indexes:
            create_index = alembic_ops.CreateIndexOp.from_index(index)
            create_index.if_not_exists = True
            upgrade.append(create_index)
    indexes: list[CreateSearchIndexOp] = []
    names: list[str] = []
    for table in live:
        new = [c for c in table.plan.columns if c.phase is ColumnPhase.PLAIN]
        if not new:
            continue
        names.append(table.plan.table)
        table_up, table_down, table_indexes = _table_ops(table, new, dialect)
        upgrade += table_up
        downgrade = table_down + downgrade
        indexes += table_indexes
    if not names:
        return RevisionResult(
            step="add-columns",
            next_command="encmigrate migrate-data",
            notes=("nothing to add: every selected column already has its encrypted column",),
        )
    # Index builds go last: CONCURRENTLY commits what precedes it (autocommit block).
    upgrade += indexes
    downgrade = [index.reverse() for index in indexes] + downgrade
    downgrade += [alembic_ops.DropTableOp.from_table(t) for t in reversed(created_tracking)]
    return emit(
        config,
        step="add-columns",
        message=revision_message("add-columns", names),
        upgrade=upgrade,
        downgrade=downgrade,
        dialect=dialect,
        apply=apply,
        sql=sql,
        next_command="encmigrate migrate-data",
    )


def _shadow_types(column: ColumnPlan) -> tuple[sa.types.TypeEngine[Any], sa.types.TypeEngine[Any]]:
    if column.storage == "text":
        return sa.Text(), sa.String(_TEXT_TOKEN_LENGTH)
    return sa.LargeBinary(), sa.LargeBinary()


def _mysql_columns(
    table: LiveTable, new: list[ColumnPlan]
) -> tuple[list[MigrateOperation], list[MigrateOperation], list[CreateSearchIndexOp]]:
    """One ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS ..., ALGORITHM=INSTANT`` per table.

    One statement: one metadata lock for all of the table's new columns. INSTANT
    makes the server refuse rather than rebuild the table when it cannot add them
    in place (ROW_FORMAT=COMPRESSED, say). The downgrade drops them ``IF EXISTS``.
    """
    schema, name = table.schema, table.name
    dialect = mysql.dialect()
    target = qualified(dialect, name, schema)
    added: list[tuple[str, str]] = []  # (quoted name, type)
    indexes: list[CreateSearchIndexOp] = []
    for column in new:
        cipher_type, token_type = _MYSQL_TYPES[column.storage == "text"]
        added.append((quote(dialect, column.encrypted_column), cipher_type))
        if column.search_column is not None:
            added.append((quote(dialect, column.search_column), token_type))
            indexes.append(
                CreateSearchIndexOp(
                    index_name(name, column.search_column),
                    name,
                    column.search_column,
                    schema=schema,
                )
            )
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {column} {kind} NULL" for column, kind in added)
    drops = ", ".join(f"DROP COLUMN IF EXISTS {column}" for column, _ in added)
    upgrade: list[MigrateOperation] = [
        ExecuteVerbatimOp(f"ALTER TABLE {target} {adds}, ALGORITHM=INSTANT")
    ]
    downgrade: list[MigrateOperation] = [ExecuteVerbatimOp(f"ALTER TABLE {target} {drops}")]
    return upgrade, downgrade, indexes


def _generic_columns(
    table: LiveTable, new: list[ColumnPlan], dialect: str
) -> tuple[list[MigrateOperation], list[MigrateOperation], list[CreateSearchIndexOp]]:
    """One Alembic ADD COLUMN per shadow column (PostgreSQL: IF NOT EXISTS)."""
    schema, name = table.schema, table.name
    upgrade: list[MigrateOperation] = []
    downgrade: list[MigrateOperation] = []
    indexes: list[CreateSearchIndexOp] = []
    for column in new:
        cipher_type, token_type = _shadow_types(column)
        added = [sa.Column(column.encrypted_column, cipher_type, nullable=True)]
        if column.search_column is not None:
            added.append(sa.Column(column.search_column, token_type, nullable=True))
            indexes.append(
                CreateSearchIndexOp(
                    index_name(name, column.search_column),
                    name,
                    column.search_column,
                    schema=schema,
                )
            )
        for shadow in added:
            # SQLite has no ADD COLUMN IF NOT EXISTS (and no concurrent index build to fail).
            again = True if dialect == "postgresql" else None
            upgrade.append(
                alembic_ops.AddColumnOp(name, shadow, schema=schema, if_not_exists=again)
            )
            downgrade.insert(
                0, alembic_ops.DropColumnOp.from_column_and_tablename(schema, name, shadow)
            )
    return upgrade, downgrade, indexes


def _table_ops(
    table: LiveTable, new: list[ColumnPlan], dialect: str
) -> tuple[list[MigrateOperation], list[MigrateOperation], list[CreateSearchIndexOp]]:
    schema, name = table.schema, table.name
    if dialect in MYSQL_DIALECTS:
        upgrade, downgrade, indexes = _mysql_columns(table, new)
    else:
        upgrade, downgrade, indexes = _generic_columns(table, new, dialect)
    before = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
    after = before + new
    upgrade.append(
        InstallShadowTriggerOp(
            name, shadow_columns(after), schema=schema, view_writes=table.view_writes
        )
    )
    # Downgrade: back to the trigger over the columns shadowed before, or none.
    restore: list[MigrateOperation] = [
        DropShadowTriggerOp(name, shadow_columns(after), schema=schema)
    ]
    if before:
        restore.append(
            InstallShadowTriggerOp(
                name, shadow_columns(before), schema=schema, view_writes=table.view_writes
            )
        )
    downgrade[:0] = restore
    return upgrade, downgrade, indexes
