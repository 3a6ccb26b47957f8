"""Secure views: ``op.create_secure_view`` and ``op.drop_secure_view``.

The step-4 revision (:mod:`encmigrate.revisions.views`) decides the columns;
these operations only spell ``CREATE VIEW ... AS SELECT source AS name`` with
every name quoted, and its reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.revisions.ops.text import schema_kw
from encmigrate.revisions.sqltext import qualified, quote, verbatim

__all__ = ["CreateSecureViewOp", "DropSecureViewOp"]


def _view_pairs(columns: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    return [(str(name), str(source)) for name, source in columns]


class _SecureViewOp(MigrateOperation):
    """The arguments both view operations carry, so each can ``reverse()`` into the other."""

    def __init__(
        self,
        view: str,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
    ) -> None:
        self.view, self.table, self.schema = view, table, schema
        self.columns = _view_pairs(columns)


@Operations.register_operation("create_secure_view")
class CreateSecureViewOp(_SecureViewOp):
    """``CREATE VIEW view AS SELECT source AS name, ... FROM table``."""

    @classmethod
    def create_secure_view(
        cls,
        operations: Operations,
        view: str,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
    ) -> Any:
        """Create the view; ``columns`` are (view column, table column) pairs in order."""
        return operations.invoke(cls(view, table, columns, schema=schema))

    def reverse(self) -> DropSecureViewOp:
        return DropSecureViewOp(self.view, self.table, self.columns, schema=self.schema)


@Operations.register_operation("drop_secure_view")
class DropSecureViewOp(_SecureViewOp):
    """``DROP VIEW view``."""

    @classmethod
    def drop_secure_view(
        cls,
        operations: Operations,
        view: str,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
    ) -> Any:
        """Drop the view (the arguments let ``reverse()`` recreate it)."""
        return operations.invoke(cls(view, table, columns, schema=schema))

    def reverse(self) -> CreateSecureViewOp:
        return CreateSecureViewOp(self.view, self.table, self.columns, schema=self.schema)


@Operations.implementation_for(CreateSecureViewOp)
def _create_secure_view(operations: Operations, op: CreateSecureViewOp) -> None:
    dialect = operations.get_context().dialect

    def q(name: str) -> str:
        return quote(dialect, name)

    selected = ",\n    ".join(
        q(source) if source == name else f"{q(source)} AS {q(name)}" for name, source in op.columns
    )
    # MariaDB: OR REPLACE, so a revision that failed after this statement can run again.
    create = "CREATE OR REPLACE VIEW" if dialect.name in MYSQL_DIALECTS else "CREATE VIEW"
    operations.execute(
        verbatim(
            f"{create} {qualified(dialect, op.view, op.schema)} AS\nSELECT\n    {selected}\n"
            f"FROM {qualified(dialect, op.table, op.schema)}"
        )
    )


@Operations.implementation_for(DropSecureViewOp)
def _drop_secure_view(operations: Operations, op: DropSecureViewOp) -> None:
    dialect = operations.get_context().dialect
    operations.execute(verbatim(f"DROP VIEW IF EXISTS {qualified(dialect, op.view, op.schema)}"))


@renderers.dispatch_for(CreateSecureViewOp)
def _render_create_view(autogen_context: AutogenContext, op: CreateSecureViewOp) -> str:
    return f"op.create_secure_view({op.view!r}, {op.table!r}, {op.columns!r}{schema_kw(op.schema)})"


@renderers.dispatch_for(DropSecureViewOp)
def _render_drop_view(autogen_context: AutogenContext, op: DropSecureViewOp) -> str:
    return f"op.drop_secure_view({op.view!r}, {op.table!r}, {op.columns!r}{schema_kw(op.schema)})"
