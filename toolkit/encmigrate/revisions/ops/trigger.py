"""The shadow trigger's operations, and the check before the plaintext is dropped.

``op.install_shadow_trigger`` / ``op.drop_shadow_trigger`` keep the ciphertext
columns honest while the application still writes plaintext: the trigger clears
a row's ciphertext when its plaintext changes. ``op.check_encrypted`` is the
last look, in the drop's own transaction, for rows that trigger left without a
ciphertext. The SQL itself is built in :mod:`encmigrate.revisions.triggers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import RefusedError
from encmigrate.revisions.mysql_trigger import lift_fence_statements
from encmigrate.revisions.ops.fence import lift_fences, still_there
from encmigrate.revisions.ops.text import schema_kw
from encmigrate.revisions.sqltext import sql_comment, verbatim
from encmigrate.revisions.triggers import (
    ShadowColumn,
    check_statement,
    drop_trigger_statements,
    install_trigger_statements,
    missing_rows_query,
)

__all__ = ["CheckEncryptedOp", "DropShadowTriggerOp", "InstallShadowTriggerOp"]


def _shadow_columns(columns: Sequence[Sequence[str | None]]) -> list[ShadowColumn]:
    result = []
    for entry in columns:
        plaintext, ciphertext = str(entry[0]), str(entry[1])
        search = entry[2] if len(entry) > 2 else None
        result.append(ShadowColumn(plaintext, ciphertext, search))
    return result


def _render_columns(columns: Sequence[ShadowColumn]) -> str:
    return "[" + ", ".join(repr(tuple(c)) for c in columns) + "]"


# --- the shadow trigger -----------------------------------------------------------------------


@Operations.register_operation("install_shadow_trigger")
class InstallShadowTriggerOp(MigrateOperation):
    """Install (or replace) the trigger that clears stale ciphertexts on ``table``."""

    def __init__(
        self,
        table: str,
        columns: Sequence[Sequence[str | None]],
        *,
        schema: str | None = None,
        view_writes: bool = False,
    ) -> None:
        self.table = table
        self.columns = _shadow_columns(columns)
        self.schema = schema
        self.view_writes = view_writes

    @classmethod
    def install_shadow_trigger(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[Sequence[str | None]],
        *,
        schema: str | None = None,
        view_writes: bool = False,
    ) -> Any:
        """Install the shadow trigger; ``columns`` are (plaintext, ciphertext, search)."""
        op = cls(table, columns, schema=schema, view_writes=view_writes)
        return operations.invoke(op)

    def reverse(self) -> DropShadowTriggerOp:
        return DropShadowTriggerOp(self.table, self.columns, schema=self.schema)


@Operations.register_operation("drop_shadow_trigger")
class DropShadowTriggerOp(MigrateOperation):
    """Remove the shadow trigger of ``table``."""

    def __init__(
        self,
        table: str,
        columns: Sequence[Sequence[str | None]],
        *,
        schema: str | None = None,
    ) -> None:
        self.table = table
        self.columns = _shadow_columns(columns)
        self.schema = schema

    @classmethod
    def drop_shadow_trigger(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[Sequence[str | None]],
        *,
        schema: str | None = None,
    ) -> Any:
        """Remove the shadow trigger (and its PostgreSQL function)."""
        return operations.invoke(cls(table, columns, schema=schema))

    def reverse(self) -> InstallShadowTriggerOp:
        return InstallShadowTriggerOp(self.table, self.columns, schema=self.schema)


@Operations.implementation_for(InstallShadowTriggerOp)
def _install_shadow_trigger(operations: Operations, op: InstallShadowTriggerOp) -> None:
    dialect = operations.get_context().dialect
    for statement in install_trigger_statements(
        dialect, op.table, op.columns, schema=op.schema, view_writes=op.view_writes
    ):
        operations.execute(verbatim(statement))


@Operations.implementation_for(DropShadowTriggerOp)
def _drop_shadow_trigger(operations: Operations, op: DropShadowTriggerOp) -> None:
    dialect = operations.get_context().dialect
    for statement in drop_trigger_statements(dialect, op.table, op.columns, schema=op.schema):
        operations.execute(verbatim(statement))


@renderers.dispatch_for(InstallShadowTriggerOp)
def _render_install(autogen_context: AutogenContext, op: InstallShadowTriggerOp) -> str:
    view = ", view_writes=True" if op.view_writes else ""
    return (
        f"op.install_shadow_trigger({op.table!r}, {_render_columns(op.columns)}"
        f"{schema_kw(op.schema)}{view})"
    )


@renderers.dispatch_for(DropShadowTriggerOp)
def _render_drop(autogen_context: AutogenContext, op: DropShadowTriggerOp) -> str:
    return (
        f"op.drop_shadow_trigger({op.table!r}, {_render_columns(op.columns)}{schema_kw(op.schema)})"
    )


# --- the check before the drop ----------------------------------------------------------------


@Operations.register_operation("check_encrypted")
class CheckEncryptedOp(MigrateOperation):
    """Abort the revision if a row has its plaintext set and its ciphertext NULL.

    Verify ran earlier; rows inserted or changed since then (the trigger
    clears their ciphertext) would lose their value in the drop that follows.
    """

    def __init__(
        self,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
        lift: Sequence[Sequence[str | None]] = (),
    ) -> None:
        self.table, self.schema = table, schema
        self.columns = [(str(p), str(c)) for p, c in columns]
        self.lift = [(str(t), s) for t, s in lift]

    @classmethod
    def check_encrypted(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
        lift: Sequence[Sequence[str | None]] = (),
    ) -> Any:
        """Refuse to go on while ``columns`` (plaintext, ciphertext) have unencrypted rows.

        ``lift``: the (table, schema) pairs whose step-5 fence (MariaDB) comes down
        when the check refuses, so that the application can write again.
        """
        return operations.invoke(cls(table, columns, schema=schema, lift=lift))

    def reverse(self) -> MigrateOperation:
        return self  # a check has nothing to undo; downgrades do not call it


@Operations.implementation_for(CheckEncryptedOp)
def _check_encrypted(operations: Operations, op: CheckEncryptedOp) -> None:
    context = operations.get_context()
    dialect = context.dialect
    if dialect.name == "postgresql":
        operations.execute(verbatim(check_statement(dialect, op.table, op.columns, op.schema)))
        return
    columns = op.columns
    if dialect.name in MYSQL_DIALECTS and not context.as_sql:
        columns = still_there(operations, op)
        if not columns:
            return  # a run that stopped after the drop: no plaintext left to check
    query = missing_rows_query(dialect, op.table, columns, op.schema)
    if context.as_sql:
        # SQLite has no RAISE outside triggers (and MariaDB's needs a compound statement,
        # which the mysql client splits without DELIMITER): offline, the reviewer runs the
        # check. sql_comment: a name holding a line break must not turn the rest into SQL.
        engine = "SQLite" if dialect.name == "sqlite" else "This script"
        lifting = [
            statement
            for table, schema in op.lift
            for statement in lift_fence_statements(dialect, table, schema=schema)
        ]
        otherwise = (
            "\nIf it returns a row, stop here and lift the fence:\n" + ";\n".join(lifting) + ";"
            if lifting
            else ""
        )
        context.impl.static_output(
            sql_comment(
                f"encmigrate: {engine} cannot abort a script by itself. Before running the\n"
                "statements below, this query must return no row:\n"
                f"{query};{otherwise}"
            )
        )
        return
    # exec_driver_sql: text() would parse ":name". SQLite's driver takes no % formatting;
    # PyMySQL formats every statement, so a "%" in a name is doubled for it.
    if dialect.paramstyle in ("format", "pyformat"):
        query = query.replace("%", "%%")
    found = operations.get_bind().exec_driver_sql(query + " LIMIT 1").first()
    if found is not None:
        lift_fences(operations, op.lift)  # the revision stops here: the application writes again
        shown = f"{op.schema}.{op.table}" if op.schema else op.table
        raise RefusedError(
            f"{shown} has rows with plaintext and no ciphertext; run encmigrate migrate-data "
            "and encmigrate verify, then upgrade again"
        )


@renderers.dispatch_for(CheckEncryptedOp)
def _render_check(autogen_context: AutogenContext, op: CheckEncryptedOp) -> str:
    lift = f", lift={op.lift!r}" if op.lift else ""
    return f"op.check_encrypted({op.table!r}, {op.columns!r}{schema_kw(op.schema)}{lift})"
