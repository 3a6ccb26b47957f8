"""The batch's locking SELECT on PostgreSQL: compiled once, run on the driver's own cursor.

Every batch runs the same statement with other keys. Through SQLAlchemy each
run costs a cache lookup and a ``Row`` object per row, whose processing was the
largest share of the migrator's client time after the AES calls (py-spy,
bench/bench_migrate.py). Here the statement is compiled once per shape (with
or without a lower and an upper key), its parameters named, and run on the
psycopg cursor of the batch's own transaction; rows come back as tuples,
indexed exactly as SQLAlchemy's rows were.

What SQLAlchemy would do to a value on its way out is done here too: the
result processors of the selected columns' types, for the column types the
server sent, applied per value only where there is one. A statement whose key
parameters SQLAlchemy would convert on their way in is not taken over: the
caller falls back to SQLAlchemy (:meth:`PendingRead.rows` returns None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from encmigrate.migrate.database import driver_cursor
from encmigrate.migrate.keyset import Cursor

if TYPE_CHECKING:
    from encmigrate.migrate.table import TableWork

__all__ = ["PendingRead"]

_Shape = tuple[bool, bool]  # (has a lower key, has an upper key)
_Processor = Callable[[Any], Any] | None


class _Compiled:
    """One shape's SQL, its selected columns' types, and (once known) their result processors."""

    def __init__(self, sql: str, types: list[sa.types.TypeEngine[Any]]) -> None:
        self.sql = sql
        self.types = types
        self.processors: list[_Processor] | None = None


class PendingRead:
    """``work.select_pending(..., lock=True)`` on the raw psycopg cursor, where that is exact."""

    def __init__(self, work: TableWork) -> None:
        self.work = work
        self._compiled: dict[_Shape, _Compiled | None] = {}

    def rows(
        self, conn: sa.Connection, lower: Cursor | None, upper: Cursor | None, limit: int
    ) -> list[tuple[Any, ...]] | None:
        """The locked rows, or None when this statement must go through SQLAlchemy."""
        if conn.dialect.name != "postgresql":
            return None
        shape = (lower is not None, upper is not None)
        if shape not in self._compiled:
            self._compiled[shape] = self._compile(conn.dialect, lower, upper, limit)
        compiled = self._compiled[shape]
        if compiled is None:
            return None
        params: dict[str, Any] = {"lim": limit}
        if lower is not None:
            params.update({f"lo{i}": v for i, v in enumerate(lower)})
        if upper is not None:
            params.update({f"hi{i}": v for i, v in enumerate(upper)})
        with driver_cursor(conn) as cursor:
            cursor.execute(compiled.sql, params)
            found: list[tuple[Any, ...]] = cursor.fetchall()
            described = cursor.description
            if compiled.processors is None and described is not None:
                # What SQLAlchemy would apply, for the column types the server sent (a
                # numeric result processor depends on the column's actual type).
                compiled.processors = [
                    t.result_processor(conn.dialect, d.type_code)
                    for t, d in zip(compiled.types, described, strict=True)
                ]
        processors = compiled.processors or []
        if any(p is not None for p in processors):
            return [
                tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))
                for row in found
            ]
        return found

    def _compile(
        self, dialect: sa.Dialect, lower: Cursor | None, upper: Cursor | None, limit: int
    ) -> _Compiled | None:
        statement = self.work.select_pending(lower, upper, limit, lock=True, named=True)
        compiled = statement.compile(dialect=dialect)
        binds = (b.type.dialect_impl(dialect) for b in compiled.binds.values())
        if any(t.bind_processor(dialect) is not None for t in binds):
            return None  # a key type SQLAlchemy converts on the way in: leave it to SQLAlchemy
        types = [c.type.dialect_impl(dialect) for c in statement.selected_columns]
        return _Compiled(str(compiled), types)
