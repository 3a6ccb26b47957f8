"""Alembic operations the generated revisions call: ``op.install_shadow_trigger`` and friends.

Each operation is a small reversible object registered with
``Operations.register_operation``, executed by an ``implementation_for``
function (which only emits SQL, so ``alembic upgrade --sql`` renders it) and
written into revision files by a ``renderers.dispatch_for`` function. A
revision imports this module for the side effect of registering them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.errors import RefusedError
from encmigrate.revisions.triggers import (
    ShadowColumn,
    check_statement,
    drop_trigger_statements,
    install_trigger_statements,
    missing_rows_query,
    qualified,
)

__all__ = [
    "CheckEncryptedOp",
    "CreateSearchIndexOp",
    "CreateSecureViewOp",
    "DropSearchIndexOp",
    "DropSecureViewOp",
    "DropShadowTriggerOp",
    "InstallShadowTriggerOp",
    "NoteOp",
]

logger = logging.getLogger(__name__)


def _shadow_columns(columns: Sequence[Sequence[str | None]]) -> list[ShadowColumn]:
    result = []
    for entry in columns:
        plaintext, ciphertext = str(entry[0]), str(entry[1])
        search = entry[2] if len(entry) > 2 else None
        result.append(ShadowColumn(plaintext, ciphertext, search))
    return result


def _render_columns(columns: Sequence[ShadowColumn]) -> str:
    return "[" + ", ".join(repr(tuple(c)) for c in columns) + "]"


def _schema_kw(schema: str | None) -> str:
    return f", schema={schema!r}" if schema else ""


# --- comments ------------------------------------------------------------------------------


class NoteOp(MigrateOperation):
    """A comment in the revision file (and in ``--sql`` output); runs nothing."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)


@Operations.implementation_for(NoteOp)
def _note(operations: Operations, op: NoteOp) -> None:
    context = operations.get_context()
    if context.as_sql:
        context.impl.static_output("\n".join(f"-- {line}" for line in op.lines))


@renderers.dispatch_for(NoteOp)
def _render_note(autogen_context: AutogenContext, op: NoteOp) -> list[str]:
    return [f"# {line}" for line in op.lines]


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
        operations.execute(statement)


@Operations.implementation_for(DropShadowTriggerOp)
def _drop_shadow_trigger(operations: Operations, op: DropShadowTriggerOp) -> None:
    dialect = operations.get_context().dialect
    for statement in drop_trigger_statements(dialect, op.table, op.columns, schema=op.schema):
        operations.execute(statement)


@renderers.dispatch_for(InstallShadowTriggerOp)
def _render_install(autogen_context: AutogenContext, op: InstallShadowTriggerOp) -> str:
    view = ", view_writes=True" if op.view_writes else ""
    return (
        f"op.install_shadow_trigger({op.table!r}, {_render_columns(op.columns)}"
        f"{_schema_kw(op.schema)}{view})"
    )


@renderers.dispatch_for(DropShadowTriggerOp)
def _render_drop(autogen_context: AutogenContext, op: DropShadowTriggerOp) -> str:
    return (
        f"op.drop_shadow_trigger({op.table!r}, {_render_columns(op.columns)}"
        f"{_schema_kw(op.schema)})"
    )


# --- search-token indexes ---------------------------------------------------------------------


class _SearchIndexOp(MigrateOperation):
    """The arguments both index operations carry, so each can ``reverse()`` into the other."""

    def __init__(self, index: str, table: str, column: str, *, schema: str | None = None) -> None:
        self.index, self.table, self.column, self.schema = index, table, column, schema


@Operations.register_operation("create_search_index")
class CreateSearchIndexOp(_SearchIndexOp):
    """Index a search-token column; ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""

    @classmethod
    def create_search_index(
        cls,
        operations: Operations,
        index: str,
        table: str,
        column: str,
        *,
        schema: str | None = None,
    ) -> Any:
        """Create the index; on PostgreSQL concurrently, outside the transaction."""
        return operations.invoke(cls(index, table, column, schema=schema))

    def reverse(self) -> DropSearchIndexOp:
        return DropSearchIndexOp(self.index, self.table, self.column, schema=self.schema)


@Operations.register_operation("drop_search_index")
class DropSearchIndexOp(_SearchIndexOp):
    """Drop a search-token index; ``DROP INDEX CONCURRENTLY`` on PostgreSQL."""

    @classmethod
    def drop_search_index(
        cls,
        operations: Operations,
        index: str,
        table: str,
        column: str,
        *,
        schema: str | None = None,
    ) -> Any:
        """Drop the index; on PostgreSQL concurrently, outside the transaction."""
        return operations.invoke(cls(index, table, column, schema=schema))

    def reverse(self) -> CreateSearchIndexOp:
        return CreateSearchIndexOp(self.index, self.table, self.column, schema=self.schema)


@Operations.implementation_for(CreateSearchIndexOp)
def _create_search_index(operations: Operations, op: CreateSearchIndexOp) -> None:
    context = operations.get_context()
    if context.dialect.name == "postgresql":
        # A plain CREATE INDEX holds a SHARE lock that blocks every write for the
        # whole build; CONCURRENTLY does not, but refuses to run in a transaction.
        with context.autocommit_block():
            operations.create_index(
                op.index, op.table, [op.column], schema=op.schema, postgresql_concurrently=True
            )
    else:
        operations.create_index(op.index, op.table, [op.column], schema=op.schema)


@Operations.implementation_for(DropSearchIndexOp)
def _drop_search_index(operations: Operations, op: DropSearchIndexOp) -> None:
    context = operations.get_context()
    if context.dialect.name == "postgresql":
        with context.autocommit_block():
            operations.drop_index(
                op.index, op.table, schema=op.schema, postgresql_concurrently=True
            )
    else:
        operations.drop_index(op.index, op.table, schema=op.schema)


@renderers.dispatch_for(CreateSearchIndexOp)
def _render_create_index(autogen_context: AutogenContext, op: CreateSearchIndexOp) -> str:
    return (
        f"op.create_search_index({op.index!r}, {op.table!r}, {op.column!r}{_schema_kw(op.schema)})"
    )


@renderers.dispatch_for(DropSearchIndexOp)
def _render_drop_index(autogen_context: AutogenContext, op: DropSearchIndexOp) -> str:
    return f"op.drop_search_index({op.index!r}, {op.table!r}, {op.column!r}{_schema_kw(op.schema)})"


# --- secure views -----------------------------------------------------------------------------


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
    q = dialect.identifier_preparer.quote
    selected = ",\n    ".join(
        q(source) if source == name else f"{q(source)} AS {q(name)}" for name, source in op.columns
    )
    operations.execute(
        f"CREATE VIEW {qualified(dialect, op.view, op.schema)} AS\nSELECT\n    {selected}\n"
        f"FROM {qualified(dialect, op.table, op.schema)}"
    )


@Operations.implementation_for(DropSecureViewOp)
def _drop_secure_view(operations: Operations, op: DropSecureViewOp) -> None:
    dialect = operations.get_context().dialect
    operations.execute(f"DROP VIEW IF EXISTS {qualified(dialect, op.view, op.schema)}")


@renderers.dispatch_for(CreateSecureViewOp)
def _render_create_view(autogen_context: AutogenContext, op: CreateSecureViewOp) -> str:
    return (
        f"op.create_secure_view({op.view!r}, {op.table!r}, {op.columns!r}{_schema_kw(op.schema)})"
    )


@renderers.dispatch_for(DropSecureViewOp)
def _render_drop_view(autogen_context: AutogenContext, op: DropSecureViewOp) -> str:
    return f"op.drop_secure_view({op.view!r}, {op.table!r}, {op.columns!r}{_schema_kw(op.schema)})"


# --- the check before the drop ----------------------------------------------------------------


@Operations.register_operation("check_encrypted")
class CheckEncryptedOp(MigrateOperation):
    """Abort the revision if a row has its plaintext set and its ciphertext NULL.

    Verify ran earlier; rows inserted or changed since then (the trigger
    clears their ciphertext) would lose their value in the drop that follows.
    """

    def __init__(
        self, table: str, columns: Sequence[Sequence[str]], *, schema: str | None = None
    ) -> None:
        self.table, self.schema = table, schema
        self.columns = [(str(p), str(c)) for p, c in columns]

    @classmethod
    def check_encrypted(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[Sequence[str]],
        *,
        schema: str | None = None,
    ) -> Any:
        """Refuse to go on while ``columns`` (plaintext, ciphertext) have unencrypted rows."""
        return operations.invoke(cls(table, columns, schema=schema))

    def reverse(self) -> MigrateOperation:
        return self  # a check has nothing to undo; downgrades do not call it


@Operations.implementation_for(CheckEncryptedOp)
def _check_encrypted(operations: Operations, op: CheckEncryptedOp) -> None:
    context = operations.get_context()
    dialect = context.dialect
    if dialect.name == "postgresql":
        operations.execute(check_statement(dialect, op.table, op.columns, op.schema))
        return
    query = missing_rows_query(dialect, op.table, op.columns, op.schema)
    if context.as_sql:
        # SQLite has no RAISE outside triggers: offline, the reviewer runs the check.
        context.impl.static_output(
            "-- encmigrate: SQLite cannot abort a script by itself. Before running the\n"
            "-- statements below, this query must return no row:\n"
            f"-- {query};"
        )
        return
    found = operations.get_bind().execute(sa.text(query + " LIMIT 1")).first()
    if found is not None:
        shown = f"{op.schema}.{op.table}" if op.schema else op.table
        raise RefusedError(
            f"{shown} has rows with plaintext and no ciphertext; run encmigrate migrate-data "
            "and encmigrate verify, then upgrade again"
        )


@renderers.dispatch_for(CheckEncryptedOp)
def _render_check(autogen_context: AutogenContext, op: CheckEncryptedOp) -> str:
    return f"op.check_encrypted({op.table!r}, {op.columns!r}{_schema_kw(op.schema)})"
