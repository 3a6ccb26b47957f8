"""Search-token indexes: ``op.create_search_index`` and ``op.drop_search_index``.

On PostgreSQL both run ``CONCURRENTLY`` (outside the revision's transaction), so
that building an index never blocks the application's writes; the build is
retried after a lock failure and leaves no INVALID index behind. A partitioned
table, which refuses a concurrent build, gets one built partition by partition.
On MariaDB both are online (``ALGORITHM=INPLACE LOCK=NONE``) and can run again
(``IF NOT EXISTS`` / ``IF EXISTS``): MySQL DDL is not transactional, and a
revision that failed halfway is finished by running it again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.identifiers import truncate_utf8
from encmigrate.plan import MigrationSettings
from encmigrate.revisions.ops.locks import DDL_RETRIES_ATTRIBUTE, ddl_retrying
from encmigrate.revisions.ops.text import schema_kw
from encmigrate.revisions.sqltext import qualified, quote, sql_comment, verbatim

__all__ = ["CreateSearchIndexOp", "DropSearchIndexOp"]

# The retries and the INVALID leftovers are logged under the name the operations have
# always used, which the operator's logging configuration may name.
logger = logging.getLogger("encmigrate.revisions.ops")


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
    if context.dialect.name in MYSQL_DIALECTS:
        operations.execute(verbatim(_mysql_create_index(context.dialect, op)))
        return
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
    elif context.dialect.name in MYSQL_DIALECTS:
        target = qualified(context.dialect, op.table, op.schema)
        operations.execute(
            verbatim(
                # DROP INDEX IF EXISTS takes no ALGORITHM/LOCK clause; ALTER TABLE does.
                f"ALTER TABLE {target} DROP INDEX IF EXISTS {quote(context.dialect, op.index)}, "
                "ALGORITHM=INPLACE, LOCK=NONE"
            )
        )
    else:
        operations.drop_index(op.index, op.table, schema=op.schema)


def _mysql_create_index(dialect: Any, op: CreateSearchIndexOp) -> str:
    """MariaDB: an online build that can run again (``IF NOT EXISTS``).

    ``ALGORITHM=INPLACE, LOCK=NONE`` makes the server refuse rather than fall
    back to a build that blocks writes; concurrent writes go on during the
    build (InnoDB logs them and applies them at the end). The exclusive
    metadata lock is taken only briefly at the start and the end, but it
    waits behind any open transaction on the table (``lock_wait_timeout``).
    """
    unique = "UNIQUE " if op.unique else ""
    return (
        f"CREATE {unique}INDEX IF NOT EXISTS {quote(dialect, op.index)} "
        f"ON {qualified(dialect, op.table, op.schema)} ({quote(dialect, op.column)}) "
        "ALGORITHM=INPLACE LOCK=NONE"
    )


@renderers.dispatch_for(CreateSearchIndexOp)
def _render_create_index(autogen_context: AutogenContext, op: CreateSearchIndexOp) -> str:
    unique = ", unique=True" if op.unique else ""
    return (
        f"op.create_search_index({op.index!r}, {op.table!r}, {op.column!r}"
        f"{schema_kw(op.schema)}{unique})"
    )


@renderers.dispatch_for(DropSearchIndexOp)
def _render_drop_index(autogen_context: AutogenContext, op: DropSearchIndexOp) -> str:
    return f"op.drop_search_index({op.index!r}, {op.table!r}, {op.column!r}{schema_kw(op.schema)})"
