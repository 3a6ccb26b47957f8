"""What step 5 reads from the database before it writes anything: refusals and notes.

The drop cannot be undone without ``decrypt-back``, so every reason to refuse
is found up front, while the plaintext is still there: columns not verified
clean, objects that depend on a plaintext column in a way the drop would break
or silently lose (:mod:`encmigrate.dependents`), and search tokens a unique
index could not be built on. The notes say what a rollback would not give back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from encmigrate.dependents import Dependent, refusal_line
from encmigrate.errors import RefusedError
from encmigrate.plan import ColumnPhase, ColumnPlan
from encmigrate.revisions.schema import LiveTable
from encmigrate.revisions.sqltext import qualified, quote
from encmigrate.roundtrip import respelled_values
from encmigrate.tracking import MigrationStatus, migrations

__all__ = [
    "dependent_notes",
    "require_distinct_tokens",
    "require_no_blockers",
    "require_verified",
    "rollback_limits",
]


def require_verified(connection: sa.Connection, columns: Sequence[ColumnPlan]) -> None:
    """Refuse unless a full, clean verify marked every one of ``columns`` ``verified``."""
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


def require_no_blockers(dependents: Sequence[Dependent], allow: bool) -> list[Dependent]:
    """Refuse while a dependent blocks the drop; the unique ones ``allow`` lets through."""
    blocking = [d for d in dependents if d.blocking]
    refused = [d for d in blocking if not (allow and d.droppable)]
    if not refused:
        return blocking
    count = len(refused)
    lines = [f"  - {refusal_line(d)}" for d in refused]
    hint = ""
    if not allow and any(d.droppable for d in refused):
        hint = (
            "\nUnique indexes and constraints can also be dropped with their column: "
            "--allow-dropping-constraints (their uniqueness is then no longer enforced)."
        )
    raise RefusedError(
        f"refusing to drop plaintext: {count} "
        f"{'object depends' if count == 1 else 'objects depend'} on the planned columns "
        "and would break the drop or be lost with it (nothing was written):\n"
        + "\n".join(lines)
        + hint
        + "\nDeal with each, check with `encmigrate plan check`, then run drop-unencrypted again."
    )


def require_distinct_tokens(connection: sa.Connection, columns: Sequence[ColumnPlan]) -> None:
    """Refuse when a unique_token column already has a token on several rows.

    The unique index would fail to build in the middle of the upgrade; here the
    operator gets the count and the query that finds them, before any file.
    """
    problems = []
    dialect = connection.dialect
    for column in columns:
        if not (column.unique_token and column.search_column):
            continue
        target = sa.table(
            column.table_name, sa.column(column.search_column), schema=column.schema_name
        )
        token = target.c[column.search_column]
        shared = (
            sa.select(token).where(token.is_not(None)).group_by(token).having(sa.func.count() > 1)
        ).subquery()
        count = connection.execute(sa.select(sa.func.count()).select_from(shared)).scalar()
        if count:
            problems.append(
                f"{column.table}.{column.search_column}: {count} search tokens are each shared "
                "by several rows (equal values after normalization under the same key version); "
                f"find them with SELECT {quote(dialect, column.search_column)}, count(*) FROM "
                f"{qualified(dialect, column.table_name, column.schema_name)} "
                "GROUP BY 1 HAVING count(*) > 1, resolve the duplicates, or remove unique_token"
            )
    if problems:
        raise RefusedError(
            "refusing to drop plaintext: unique_token cannot build its unique index: "
            + "; ".join(problems)
        )


def rollback_limits(connection: sa.Connection, table: LiveTable) -> list[str]:
    """What a rollback of this drop (downgrade + decrypt-back) will not give back, said
    while the plaintext is still there: NOT NULL, the column order, and the spelling of
    values stored as text (roundtrip.py). Counts and names only, never a value."""
    dropping = [c for c in table.plan.columns if c.phase is ColumnPhase.SHADOWED]
    order = list(table.columns)
    shown = table.plan.table
    notes: list[str] = []
    not_null = [c.column for c in dropping if not table.columns[c.column]["nullable"]]
    if not_null:
        notes.append(
            f"rollback: `alembic downgrade -1` re-adds {shown}.{', '.join(not_null)} without "
            "NOT NULL (they are empty until decrypt-back); restore it after decrypt-back "
            + (
                "with ALTER TABLE ... ALTER COLUMN ... SET NOT NULL"
                if connection.dialect.name == "postgresql"
                else "by rebuilding the table (SQLite cannot add NOT NULL to a column)"
            )
        )
    names = {c.column for c in dropping}
    if [n for n in order if n not in names] + [c.column for c in dropping] != order:
        notes.append(
            f"rollback: the re-added columns of {shown} come after its other columns: "
            "the column order changes (SELECT * and INSERT without column names see it)"
        )
    target = sa.table(table.name, schema=table.schema)
    for column in dropping:
        differ = respelled_values(
            connection, target, column.column, table.columns[column.column]["type"], column.type
        )
        if differ:
            notes.append(
                f"rollback: {differ} value(s) of {shown}.{column.column} are stored as text "
                "spelled otherwise than decrypt-back writes them back (the value is the same, "
                "the bytes differ; docs/application-writes.md, 'After the drop, and rolling "
                "it back')"
            )
    return notes


def dependent_notes(dependents: Sequence[Dependent], allowed: Sequence[Dependent]) -> list[str]:
    """What the drop takes with it (``allowed``) or leaves to the operator, one line each."""
    notes = [
        f"{d.kind} {d.name} on {d.table}.{d.column} is dropped with the column "
        "(--allow-dropping-constraints): its uniqueness is no longer enforced"
        for d in allowed
    ]
    notes += [
        f"{d.kind} {d.name} on {d.table}.{d.column}: {d.effect}; {d.action}"
        for d in dependents
        if not d.blocking and d.action != "nothing to do"
    ]
    return notes
