"""Alembic operations the generated revisions call: ``op.install_shadow_trigger`` and friends.

Each operation is a small reversible object registered with
``Operations.register_operation``, executed by an ``implementation_for``
function (which only emits SQL, so ``alembic upgrade --sql`` renders it) and
written into revision files by a ``renderers.dispatch_for`` function. A
revision imports this module for the side effect of registering them.

Names reach the revision file only as Python string literals (``repr``) and
comments only through :func:`~encmigrate.revisions.sqltext.printable`; SQL
built from names runs through :func:`~encmigrate.revisions.sqltext.verbatim`.

It also holds what a revision needs to take its locks without blocking the
application: ``op.set_ddl_timeouts`` (a session ``lock_timeout``, so that DDL
queued behind a long transaction gives up instead of making every later query
on the table queue behind it) and the retry policy for lock timeouts and
deadlocks that both ``--apply`` and the concurrent index build use.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from encmigrate.errors import RefusedError
from encmigrate.identifiers import truncate_utf8
from encmigrate.plan import MigrationSettings
from encmigrate.revisions.sqltext import printable, qualified, quote, sql_comment, verbatim
from encmigrate.revisions.triggers import (
    ShadowColumn,
    check_statement,
    drop_trigger_statements,
    install_trigger_statements,
    missing_rows_query,
)

__all__ = [
    "DDL_RETRIES_ATTRIBUTE",
    "LOCK_FAILURES",
    "CheckEncryptedOp",
    "CreateSearchIndexOp",
    "CreateSecureViewOp",
    "DropSearchIndexOp",
    "DropSecureViewOp",
    "DropShadowTriggerOp",
    "ExecuteVerbatimOp",
    "InstallShadowTriggerOp",
    "NoteOp",
    "ResetDDLTimeoutsOp",
    "SetDDLTimeoutsOp",
    "ddl_retrying",
    "lock_failure",
]

logger = logging.getLogger(__name__)

# The Alembic Config attribute encmigrate sets to the plan's [migration] ddl_retries;
# a plain `alembic upgrade` has no plan and gets the default.
DDL_RETRIES_ATTRIBUTE = "encmigrate.ddl_retries"
# SQLSTATEs after which the same DDL can succeed later: the lock was not granted in time,
# or PostgreSQL broke a deadlock by cancelling us. Either way our transaction rolled back.
LOCK_FAILURES = {"55P03": "lock timeout", "40P01": "deadlock"}
# Backoff between attempts: 0.25 s doubling to 10 s, plus up to 0.25 s of jitter so that
# two waiting migrators (or a migrator and the blocking job's own retries) fall out of step.
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 10.0


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
    """A comment in the revision file (and in ``--sql`` output); runs nothing.

    Whatever a line holds, it stays a comment: a line break starts a new comment
    line and other characters that are not printable become ``?``.
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)


@Operations.implementation_for(NoteOp)
def _note(operations: Operations, op: NoteOp) -> None:
    context = operations.get_context()
    if context.as_sql:
        context.impl.static_output(sql_comment("\n".join(op.lines)))


@renderers.dispatch_for(NoteOp)
def _render_note(autogen_context: AutogenContext, op: NoteOp) -> list[str]:
    return [f"# {printable(part)}" for line in op.lines for part in line.splitlines() or [""]]


# --- SQL run as written -----------------------------------------------------------------------


@Operations.register_operation("execute_verbatim")
class ExecuteVerbatimOp(MigrateOperation):
    """Run a SQL statement exactly as written: no bind parameters, ``%`` as it is.

    ``op.execute("...")`` parses ``:name`` as a bind parameter, even inside a
    quoted identifier or a string (``"a :b"``, ``'12 :30'``); this does not.
    """

    def __init__(self, sql: str) -> None:
        self.sql = sql

    @classmethod
    def execute_verbatim(cls, operations: Operations, sql: str) -> Any:
        """Run ``sql`` as written (online), or print it (``--sql``)."""
        return operations.invoke(cls(sql))


@Operations.implementation_for(ExecuteVerbatimOp)
def _execute_verbatim(operations: Operations, op: ExecuteVerbatimOp) -> None:
    operations.execute(verbatim(op.sql))


@renderers.dispatch_for(ExecuteVerbatimOp)
def _render_verbatim(autogen_context: AutogenContext, op: ExecuteVerbatimOp) -> str:
    return f"op.execute_verbatim({op.sql!r})"


# --- lock timeouts and their retries ---------------------------------------------------------


def lock_failure(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` is a lock timeout or a deadlock, else None."""
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if state in LOCK_FAILURES else None


def ddl_retrying(
    retries: int,
    *,
    log: logging.Logger,
    what: str,
    retryable: Callable[[BaseException], bool] = lambda exc: lock_failure(exc) is not None,
) -> Retrying:
    """Up to ``retries`` more attempts after a lock failure, with capped backoff and jitter.

    Each retry is logged at INFO on ``log``; the last error is re-raised as it is.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        code = lock_failure(error) if error is not None else None
        log.info(
            "%s: %s (SQLSTATE %s) on attempt %d of %d; trying again in %.1f s",
            what,
            LOCK_FAILURES.get(code or "", "error"),
            code,
            state.attempt_number,
            retries + 1,
            state.next_action.sleep if state.next_action is not None else 0.0,
        )

    return Retrying(
        retry=retry_if_exception(retryable),
        wait=wait_exponential(multiplier=_BACKOFF_FIRST, max=_BACKOFF_MAX)
        + wait_random(0, _BACKOFF_FIRST),
        stop=stop_after_attempt(retries + 1),
        before_sleep=before_sleep,
        reraise=True,
    )


@Operations.register_operation("set_ddl_timeouts")
class SetDDLTimeoutsOp(MigrateOperation):
    """``SET lock_timeout`` for the rest of the session (PostgreSQL; nothing on SQLite).

    A session-level ``SET``, not ``SET LOCAL``: the statements Alembic runs in an
    ``autocommit_block()`` (``CREATE INDEX CONCURRENTLY``, ``VACUUM FULL``) run
    outside the revision's transaction and must be bounded too.
    """

    def __init__(self, *, lock_timeout_ms: int) -> None:
        self.lock_timeout_ms = int(lock_timeout_ms)

    @classmethod
    def set_ddl_timeouts(cls, operations: Operations, *, lock_timeout_ms: int) -> Any:
        """Make every later lock wait of this session give up after ``lock_timeout_ms``."""
        return operations.invoke(cls(lock_timeout_ms=lock_timeout_ms))

    def reverse(self) -> ResetDDLTimeoutsOp:
        return ResetDDLTimeoutsOp()


@Operations.register_operation("reset_ddl_timeouts")
class ResetDDLTimeoutsOp(MigrateOperation):
    """``RESET lock_timeout``: back to the session's default (PostgreSQL; nothing on SQLite)."""

    @classmethod
    def reset_ddl_timeouts(cls, operations: Operations) -> Any:
        """Undo ``set_ddl_timeouts``, so a connection handed in by the caller is left as it was."""
        return operations.invoke(cls())

    def reverse(self) -> MigrateOperation:
        return self  # nothing to restore: the next set_ddl_timeouts sets its own value


@Operations.implementation_for(SetDDLTimeoutsOp)
def _set_ddl_timeouts(operations: Operations, op: SetDDLTimeoutsOp) -> None:
    if operations.get_context().dialect.name == "postgresql":
        operations.execute(f"SET lock_timeout = '{op.lock_timeout_ms}ms'")


@Operations.implementation_for(ResetDDLTimeoutsOp)
def _reset_ddl_timeouts(operations: Operations, op: ResetDDLTimeoutsOp) -> None:
    if operations.get_context().dialect.name == "postgresql":
        operations.execute("RESET lock_timeout")


@renderers.dispatch_for(SetDDLTimeoutsOp)
def _render_set_timeouts(autogen_context: AutogenContext, op: SetDDLTimeoutsOp) -> str:
    return f"op.set_ddl_timeouts(lock_timeout_ms={op.lock_timeout_ms})"


@renderers.dispatch_for(ResetDDLTimeoutsOp)
def _render_reset_timeouts(autogen_context: AutogenContext, op: ResetDDLTimeoutsOp) -> str:
    return "op.reset_ddl_timeouts()"


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

    def __init__(
        self,
        index: str,
        table: str,
        column: str,
        *,
        schema: str | None = None,
        unique: bool = False,
    ) -> None:
        self.index, self.table, self.column, self.schema = index, table, column, schema
        self.unique = unique  # step 5's unique_token: the plaintext's UNIQUE moves to the token


@Operations.register_operation("create_search_index")
class CreateSearchIndexOp(_SearchIndexOp):
    """Index a search-token column; ``CREATE INDEX CONCURRENTLY`` on PostgreSQL.

    On PostgreSQL the build is retried after a lock timeout or deadlock, and is
    idempotent: a failed concurrent build leaves an INVALID index behind, which
    is dropped before the next attempt; a valid index of the name is kept.
    """

    @classmethod
    def create_search_index(
        cls,
        operations: Operations,
        index: str,
        table: str,
        column: str,
        *,
        schema: str | None = None,
        unique: bool = False,
    ) -> Any:
        """Create the index; on PostgreSQL concurrently, outside the transaction."""
        return operations.invoke(cls(index, table, column, schema=schema, unique=unique))

    def reverse(self) -> DropSearchIndexOp:
        return DropSearchIndexOp(
            self.index, self.table, self.column, schema=self.schema, unique=self.unique
        )


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
        return CreateSearchIndexOp(
            self.index, self.table, self.column, schema=self.schema, unique=self.unique
        )


@Operations.implementation_for(CreateSearchIndexOp)
def _create_search_index(operations: Operations, op: CreateSearchIndexOp) -> None:
    context = operations.get_context()
    if context.dialect.name != "postgresql":
        operations.create_index(op.index, op.table, [op.column], schema=op.schema, unique=op.unique)
        return
    # A plain CREATE INDEX holds a SHARE lock that blocks every write for the
    # whole build; CONCURRENTLY does not, but refuses to run in a transaction.
    with context.autocommit_block():
        if context.as_sql:
            # Offline there is no catalog to look at: no IF NOT EXISTS, which would
            # silently keep an INVALID leftover; the reviewer drops it by hand.
            index = qualified(context.dialect, op.index, op.schema)
            context.impl.static_output(
                sql_comment(
                    f"If an earlier attempt left an INVALID index {index} (\\d shows it),\n"
                    f"drop it first: DROP INDEX CONCURRENTLY {index};"
                )
            )
            operations.create_index(
                op.index,
                op.table,
                [op.column],
                schema=op.schema,
                unique=op.unique,
                postgresql_concurrently=True,
            )
            return
        # The revision's earlier statements were committed when the autocommit block
        # began: re-running the whole revision would trip over them, so the build is
        # retried here, each attempt on its own.
        config = context.config
        retries = MigrationSettings().ddl_retries
        if config is not None:
            retries = config.attributes.get(DDL_RETRIES_ATTRIBUTE, retries)
        tree = _partition_tree(operations, op.table, op.schema)
        if tree:
            _create_partitioned_index(operations, op, tree, int(retries))
            return
        for attempt in ddl_retrying(int(retries), log=logger, what=f"index {op.index}"):
            with attempt:
                _drop_invalid_index(operations, op)
                operations.create_index(
                    op.index,
                    op.table,
                    [op.column],
                    schema=op.schema,
                    unique=op.unique,
                    postgresql_concurrently=True,
                    if_not_exists=True,
                )


class _Partition(NamedTuple):
    """One table of a partition tree: its schema, name, parent (None for the root), kind."""

    schema: str
    name: str
    parent: tuple[str, str] | None
    leaf: bool


def _partition_tree(operations: Operations, table: str, schema: str | None) -> list[_Partition]:
    """The tables of ``table``'s partition tree, root first; [] for a table not partitioned."""
    dialect = operations.get_context().dialect
    rows = (
        operations.get_bind()
        .execute(
            sa.text(
                "SELECT n.nspname, c.relname, pn.nspname, p.relname, t.isleaf "
                "FROM pg_partition_tree(to_regclass(:table)) AS t "
                "JOIN pg_class c ON c.oid = t.relid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_class p ON p.oid = t.parentrelid "
                "LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace "
                "ORDER BY t.level"
            ),
            {"table": qualified(dialect, table, schema)},
        )
        .all()
    )
    if len(rows) <= 1 and (not rows or rows[0][4]):
        return []  # a plain table is its own one-leaf tree
    return [
        _Partition(r[0], r[1], (r[2], r[3]) if r[3] is not None else None, bool(r[4])) for r in rows
    ]


def _partition_index_name(index: str, partition: str) -> str:
    """A partition's index name: at most 40 + 1 + 10 + 1 + 10 = 62 bytes."""
    digest = hashlib.sha256(f"{index}/{partition}".encode()).hexdigest()[:10]
    return f"{truncate_utf8(index, 40)}_{truncate_utf8(partition, 10)}_{digest}"


def _create_partitioned_index(
    operations: Operations, op: CreateSearchIndexOp, tree: list[_Partition], retries: int
) -> None:
    """A search index on a partitioned table, without blocking writes.

    PostgreSQL refuses ``CREATE INDEX CONCURRENTLY`` on a partitioned table. The
    documented way: an index ``ON ONLY`` each partitioned table (no data is read;
    it stays invalid), a concurrent build on each leaf partition, and ``ATTACH
    PARTITION`` of each child's index to its parent's; the parent's index becomes
    valid once every child's is attached. Each step is idempotent, so a retry or a
    re-run after a failure picks up where it stopped.
    """
    dialect = operations.get_context().dialect
    column = quote(dialect, op.column)
    kind = "UNIQUE INDEX" if op.unique else "INDEX"
    names: dict[tuple[str, str], str] = {}
    for part in tree:
        is_root = part.parent is None
        index = op.index if is_root else _partition_index_name(op.index, part.name)
        names[(part.schema, part.name)] = index
        target = qualified(dialect, part.name, part.schema)
        if part.leaf:
            child = CreateSearchIndexOp(index, part.name, op.column, schema=part.schema)
            for attempt in ddl_retrying(retries, log=logger, what=f"index {index}"):
                with attempt:
                    _drop_invalid_index(operations, child)
                    operations.execute(
                        verbatim(
                            f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {quote(dialect, index)} "
                            f"ON {target} ({column})"
                        )
                    )
        else:
            operations.execute(
                verbatim(
                    f"CREATE {kind} IF NOT EXISTS {quote(dialect, index)} "
                    f"ON ONLY {target} ({column})"
                )
            )
    for part in tree:
        if part.parent is None:
            continue
        parent_index = qualified(dialect, names[part.parent], part.parent[0])
        child_index = qualified(dialect, names[(part.schema, part.name)], part.schema)
        for attempt in ddl_retrying(retries, log=logger, what=f"attach {child_index}"):
            with attempt:
                operations.execute(
                    verbatim(f"ALTER INDEX {parent_index} ATTACH PARTITION {child_index}")
                )


def _drop_invalid_index(operations: Operations, op: CreateSearchIndexOp) -> None:
    """Drop ``op.index`` when an interrupted concurrent build left it INVALID.

    Such an index is never used for reads but is kept up to date on every write;
    ``IF NOT EXISTS`` alone would keep it for good.
    """
    dialect = operations.get_context().dialect
    found = (
        operations.get_bind()
        .execute(
            sa.text(
                "SELECT c.oid::regclass::text FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :index AND i.indrelid = to_regclass(:table) "
                "AND NOT i.indisvalid"
            ),
            {"index": op.index, "table": qualified(dialect, op.table, op.schema)},
        )
        .scalar()
    )
    if found is not None:
        logger.info("dropping the INVALID index %s left by an interrupted build", found)
        operations.execute(verbatim(f"DROP INDEX CONCURRENTLY IF EXISTS {found}"))


@Operations.implementation_for(DropSearchIndexOp)
def _drop_search_index(operations: Operations, op: DropSearchIndexOp) -> None:
    context = operations.get_context()
    if context.dialect.name == "postgresql":
        if not context.as_sql and _partition_tree(operations, op.table, op.schema):
            # DROP INDEX CONCURRENTLY refuses a partitioned index; dropping it drops
            # the partitions' indexes with it (a brief lock on each).
            operations.drop_index(op.index, op.table, schema=op.schema, if_exists=True)
            return
        with context.autocommit_block():
            operations.drop_index(
                op.index, op.table, schema=op.schema, postgresql_concurrently=True
            )
    else:
        operations.drop_index(op.index, op.table, schema=op.schema)


@renderers.dispatch_for(CreateSearchIndexOp)
def _render_create_index(autogen_context: AutogenContext, op: CreateSearchIndexOp) -> str:
    unique = ", unique=True" if op.unique else ""
    return (
        f"op.create_search_index({op.index!r}, {op.table!r}, {op.column!r}"
        f"{_schema_kw(op.schema)}{unique})"
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

    def q(name: str) -> str:
        return quote(dialect, name)

    selected = ",\n    ".join(
        q(source) if source == name else f"{q(source)} AS {q(name)}" for name, source in op.columns
    )
    operations.execute(
        verbatim(
            f"CREATE VIEW {qualified(dialect, op.view, op.schema)} AS\nSELECT\n    {selected}\n"
            f"FROM {qualified(dialect, op.table, op.schema)}"
        )
    )


@Operations.implementation_for(DropSecureViewOp)
def _drop_secure_view(operations: Operations, op: DropSecureViewOp) -> None:
    dialect = operations.get_context().dialect
    operations.execute(verbatim(f"DROP VIEW IF EXISTS {qualified(dialect, op.view, op.schema)}"))


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
        operations.execute(verbatim(check_statement(dialect, op.table, op.columns, op.schema)))
        return
    query = missing_rows_query(dialect, op.table, op.columns, op.schema)
    if context.as_sql:
        # SQLite has no RAISE outside triggers: offline, the reviewer runs the check.
        # sql_comment: a name holding a line break must not turn the rest into SQL.
        context.impl.static_output(
            sql_comment(
                "encmigrate: SQLite cannot abort a script by itself. Before running the\n"
                "statements below, this query must return no row:\n"
                f"{query};"
            )
        )
        return
    # exec_driver_sql: SQLite's driver takes no % formatting, and text() would parse ":name".
    found = operations.get_bind().exec_driver_sql(query + " LIMIT 1").first()
    if found is not None:
        shown = f"{op.schema}.{op.table}" if op.schema else op.table
        raise RefusedError(
            f"{shown} has rows with plaintext and no ciphertext; run encmigrate migrate-data "
            "and encmigrate verify, then upgrade again"
        )


@renderers.dispatch_for(CheckEncryptedOp)
def _render_check(autogen_context: AutogenContext, op: CheckEncryptedOp) -> str:
    return f"op.check_encrypted({op.table!r}, {op.columns!r}{_schema_kw(op.schema)})"
