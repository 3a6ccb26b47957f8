"""Step 5 on MariaDB: fence the plaintext columns before the check, lift the fence after.

MariaDB DDL is not transactional, so the drop's check and its ``DROP COLUMN``
cannot share a transaction: a plaintext written between them would be lost.
``op.fence_plaintext`` adds triggers that refuse such writes (their creation
waits for every transaction that touched the table), so the check that follows
sees every plaintext there will ever be; ``op.lift_plaintext_fence`` drops them
again: before the shadow trigger and the columns, or when the check refuses.
The SQL is built in :mod:`encmigrate.revisions.mysql_trigger`. Both do nothing
on other databases, where the check shares the drop's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.revisions import mysql_trigger
from encmigrate.revisions.ops.text import schema_kw
from encmigrate.revisions.sqltext import verbatim

__all__ = ["FencePlaintextOp", "LiftFenceOp", "lift_fences", "still_there"]


@Operations.register_operation("fence_plaintext")
class FencePlaintextOp(MigrateOperation):
    """Refuse writes of the planned plaintext columns of ``table`` until the drop (MariaDB).

    ``columns`` are (plaintext, ciphertext) pairs; ``shown`` and ``view`` are
    the table and view names the refusal tells the application to use.
    """

    def __init__(
        self,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        shown: str,
        view: str,
        schema: str | None = None,
    ) -> None:
        self.table, self.schema, self.shown, self.view = table, schema, shown, view
        self.columns = [(str(p), str(c)) for p, c in columns]

    @classmethod
    def fence_plaintext(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        shown: str,
        view: str,
        schema: str | None = None,
    ) -> Any:
        """Install the fence triggers (waiting for the table's open transactions to end)."""
        return operations.invoke(cls(table, columns, shown=shown, view=view, schema=schema))

    def reverse(self) -> LiftFenceOp:
        return LiftFenceOp(self.table, schema=self.schema)


@Operations.register_operation("lift_plaintext_fence")
class LiftFenceOp(MigrateOperation):
    """Drop the fence triggers of ``table`` (if there are any)."""

    def __init__(self, table: str, *, schema: str | None = None) -> None:
        self.table, self.schema = table, schema

    @classmethod
    def lift_plaintext_fence(
        cls, operations: Operations, table: str, *, schema: str | None = None
    ) -> Any:
        """Drop the fence triggers: writes of the plaintext are accepted again."""
        return operations.invoke(cls(table, schema=schema))

    def reverse(self) -> MigrateOperation:
        return self  # the fence is only ever put up by the upgrade that drops the columns


@Operations.implementation_for(FencePlaintextOp)
def _fence_plaintext(operations: Operations, op: FencePlaintextOp) -> None:
    context = operations.get_context()
    dialect = context.dialect
    if dialect.name not in MYSQL_DIALECTS:
        return
    columns = op.columns if context.as_sql else still_there(operations, op)
    if not columns:
        return  # a run that stopped after the drop: nothing left to fence
    statements = mysql_trigger.fence_statements(
        dialect, op.table, columns, schema=op.schema, shown=op.shown, view=op.view
    )
    for statement in statements:
        if context.as_sql and statement.startswith("CREATE"):
            # A compound statement: the mysql client would split it at its first ";".
            context.impl.static_output(f"DELIMITER //\n{statement}\n//\nDELIMITER ;")
        else:
            operations.execute(verbatim(statement))


@Operations.implementation_for(LiftFenceOp)
def _lift_fence(operations: Operations, op: LiftFenceOp) -> None:
    lift_fences(operations, [(op.table, op.schema)])


class _Columns(Protocol):
    table: str
    schema: str | None
    columns: list[tuple[str, str]]


def still_there(operations: Operations, op: _Columns) -> list[tuple[str, str]]:
    """The (plaintext, ciphertext) pairs of ``op`` whose plaintext column still exists.

    The drop's revision runs again after failing at any statement (MariaDB DDL is
    not transactional): once ``DROP COLUMN`` went through, there is nothing left to
    fence or check, and a query naming the column would fail.
    """
    inspector = sa.inspect(operations.get_bind())
    names = {c["name"] for c in inspector.get_columns(op.table, schema=op.schema)}
    return [(p, c) for p, c in op.columns if p in names]


def lift_fences(operations: Operations, tables: Sequence[Sequence[str | None]]) -> None:
    """Drop the fence triggers of each (table, schema) (MariaDB; nothing elsewhere)."""
    dialect = operations.get_context().dialect
    if dialect.name not in MYSQL_DIALECTS:
        return
    for table, schema in tables:
        for statement in mysql_trigger.lift_fence_statements(dialect, str(table), schema=schema):
            operations.execute(verbatim(statement))


@renderers.dispatch_for(FencePlaintextOp)
def _render_fence(autogen_context: AutogenContext, op: FencePlaintextOp) -> str:
    return (
        f"op.fence_plaintext({op.table!r}, {op.columns!r}, shown={op.shown!r}, "
        f"view={op.view!r}{schema_kw(op.schema)})"
    )


@renderers.dispatch_for(LiftFenceOp)
def _render_lift(autogen_context: AutogenContext, op: LiftFenceOp) -> str:
    return f"op.lift_plaintext_fence({op.table!r}{schema_kw(op.schema)})"
