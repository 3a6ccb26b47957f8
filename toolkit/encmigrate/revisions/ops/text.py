"""Operations that write text as it is, and the spelling every operation's renderer shares.

``NoteOp`` is a comment in the revision file and in ``--sql`` output;
``op.execute_verbatim`` runs a statement without parsing it for bind
parameters. :func:`schema_kw` is how each operation writes its optional
``schema=`` argument into a revision file, so that all of them read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from encmigrate.revisions.sqltext import printable, sql_comment, verbatim

__all__ = ["ExecuteVerbatimOp", "NoteOp", "schema_kw"]


def schema_kw(schema: str | None) -> str:
    """``, schema='s'`` for a revision file's call, or nothing for the default schema."""
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
