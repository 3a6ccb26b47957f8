"""The drop's bookkeeping on a table: ``op.rewrite_table`` and ``op.set_migration_status``.

``op.rewrite_table`` rewrites a table after the drop, so that the dropped
plaintext leaves its old pages; ``op.set_migration_status`` records in
``encryption_migrations`` that the columns were dropped (or, on downgrade,
are verified again), in the same revision as the drop itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.revisions.ops.text import schema_kw
from encmigrate.revisions.sqltext import qualified, verbatim
from encmigrate.tracking import MigrationStatus, migrations

__all__ = ["RewriteTableOp", "SetMigrationStatusOp"]


@Operations.register_operation("rewrite_table")
class RewriteTableOp(MigrateOperation):
    """Rewrite a table so dropped values leave its pages (VACUUM FULL / VACUUM / FORCE)."""

    def __init__(self, table: str, *, schema: str | None = None) -> None:
        self.table, self.schema = table, schema

    @classmethod
    def rewrite_table(cls, operations: Operations, table: str, *, schema: str | None = None) -> Any:
        """VACUUM FULL the table (PostgreSQL, ACCESS EXCLUSIVE lock), the file (SQLite), or
        rebuild it online (MariaDB: ``ALTER TABLE ... FORCE``)."""
        return operations.invoke(cls(table, schema=schema))


@Operations.implementation_for(RewriteTableOp)
def _rewrite_table(operations: Operations, op: RewriteTableOp) -> None:
    context = operations.get_context()
    target = qualified(context.dialect, op.table, op.schema)
    if context.dialect.name in MYSQL_DIALECTS:
        # An online rebuild (reads and writes go on), which OPTIMIZE TABLE is not always.
        operations.execute(verbatim(f"ALTER TABLE {target} FORCE, ALGORITHM=INPLACE, LOCK=NONE"))
        return
    statement = f"VACUUM FULL {target}" if context.dialect.name == "postgresql" else "VACUUM"
    # VACUUM refuses to run inside a transaction on both databases.
    with context.autocommit_block():
        operations.execute(verbatim(statement))


@renderers.dispatch_for(RewriteTableOp)
def _render_rewrite(autogen_context: AutogenContext, op: RewriteTableOp) -> str:
    return f"op.rewrite_table({op.table!r}{schema_kw(op.schema)})"


@Operations.register_operation("set_migration_status")
class SetMigrationStatusOp(MigrateOperation):
    """Set the status of (table, column) pairs in ``encryption_migrations``.

    The names are values: bound parameters online, and literals rendered by
    SQLAlchemy in ``--sql`` output (``literal_binds``), never spliced into SQL.
    """

    def __init__(self, columns: Sequence[Sequence[str]], status: str) -> None:
        self.columns = [(str(t), str(c)) for t, c in columns]
        self.status = MigrationStatus(status).value

    @classmethod
    def set_migration_status(
        cls, operations: Operations, columns: Sequence[Sequence[str]], status: str
    ) -> Any:
        """Record ``status`` for each (table as planned, column) pair."""
        return operations.invoke(cls(columns, status))


@Operations.implementation_for(SetMigrationStatusOp)
def _set_migration_status(operations: Operations, op: SetMigrationStatusOp) -> None:
    pairs = [
        sa.and_(migrations.c.table_name == table, migrations.c.column_name == column)
        for table, column in op.columns
    ]
    operations.execute(migrations.update().where(sa.or_(*pairs)).values(status=op.status))


@renderers.dispatch_for(SetMigrationStatusOp)
def _render_status(autogen_context: AutogenContext, op: SetMigrationStatusOp) -> str:
    return f"op.set_migration_status({op.columns!r}, {op.status!r})"
