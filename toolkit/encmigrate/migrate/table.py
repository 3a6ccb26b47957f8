"""One planned table at work: its reflected schema, its columns' ciphers, its SQL.

Every selected column of a row is written by the same UPDATE: a row gets one
new version per batch, not one per column (PostgreSQL writes a whole new
tuple for each UPDATE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import ConfigError, DatabaseError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate.columns import ColumnWork
from encmigrate.migrate.keyset import Cursor, KeyCodec, after, at_most
from encmigrate.migrate.pending_read import PendingRead
from encmigrate.plan import TablePlan

__all__ = ["TableWork", "read_expression"]


@dataclass(frozen=True, slots=True)
class ShadowColumns:
    """The live columns of one planned column."""

    work: ColumnWork
    plaintext: sa.Column[Any] | None  # None once step 5 dropped it
    ciphertext: sa.Column[Any]
    search: sa.Column[Any] | None


class TableWork:
    """Reflected table + the ciphers of its selected columns."""

    def __init__(
        self,
        engine: sa.Engine,
        plan: TablePlan,
        keyring: Keyring,
        *,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.plan = plan
        self.name = plan.table
        try:
            self.table = sa.Table(
                plan.table_name, sa.MetaData(), schema=plan.schema_name, autoload_with=engine
            )
        except sa.exc.NoSuchTableError:
            raise ConfigError(f"table {plan.table!r} does not exist in the database") from None
        except sa.exc.OperationalError as exc:
            raise DatabaseError(f"cannot reflect table {plan.table!r}: {exc.orig}") from None
        self.primary_key = list(self.table.primary_key.columns)
        if not self.primary_key:
            raise ConfigError(f"table {plan.table!r} has no primary key; keyset batches need one")
        self.keys = KeyCodec(self.primary_key)
        wanted = [c for c in plan.columns if columns is None or c.column in columns]
        if columns is not None:
            unknown = sorted(set(columns) - {c.column for c in plan.columns})
            if unknown:
                raise ConfigError(
                    f"column(s) {', '.join(unknown)} of {plan.table!r} are not in the plan"
                )
        self.shadows = [self._shadow(c.column, ColumnWork(c, keyring)) for c in wanted]
        self.dialect = engine.dialect.name
        # The batch SELECT compiled once for the driver's cursor (pending_read.py).
        self.pending_read = PendingRead(self)

    def _shadow(self, name: str, work: ColumnWork) -> ShadowColumns:
        found = self.table.c
        encrypted = work.plan.encrypted_column
        if encrypted not in found:
            raise ConfigError(
                f"{self.name}.{encrypted} does not exist: "
                "run `encmigrate add-columns --apply` first"
            )
        search_name = work.plan.search_column
        if search_name is not None and search_name not in found:
            raise ConfigError(
                f"{self.name}.{search_name} does not exist: run `encmigrate add-columns --apply`"
            )
        return ShadowColumns(
            work=work,
            plaintext=found.get(name),
            ciphertext=found[encrypted],
            search=found[search_name] if search_name else None,
        )

    @property
    def column_names(self) -> list[str]:
        return [s.work.plan.column for s in self.shadows]

    def require_plaintext(self, why: str) -> None:
        """ConfigError naming the plaintext columns step 5 dropped, followed by ``why``."""
        missing = [s for s in self.shadows if s.plaintext is None]
        if missing:
            names = ", ".join(f"{self.name}.{s.work.plan.column}" for s in missing)
            raise ConfigError(f"plaintext column(s) {names} do not exist: {why}")

    # -- SQL ----------------------------------------------------------------

    def needs_work(self) -> sa.ColumnElement[bool]:
        """Rows with a plaintext and no ciphertext in any selected column."""
        return sa.or_(
            *(
                sa.and_(s.plaintext.is_not(None), s.ciphertext.is_(None))
                for s in self.shadows
                if s.plaintext is not None
            )
        )

    def key_range(
        self, lower: Cursor | None, upper: Cursor | None, *, named: bool = False
    ) -> list[sa.ColumnElement[bool]]:
        """Keys after ``lower`` and up to ``upper``; ``named``: parameters ``lo<i>``/``hi<i>``."""
        conditions: list[sa.ColumnElement[bool]] = []
        if lower is not None:
            conditions.append(after(self.primary_key, lower, name="lo" if named else None))
        if upper is not None:
            conditions.append(at_most(self.primary_key, upper, name="hi" if named else None))
        return conditions

    def select_pending(
        self,
        lower: Cursor | None,
        upper: Cursor | None,
        limit: int,
        *,
        lock: bool,
        named: bool = False,
    ) -> sa.Select[Any]:
        """The next batch of rows needing work, in key order, locked for the batch.

        ``named``: every parameter has a fixed name (``lo<i>``, ``hi<i>``, ``lim``), for
        the statement :class:`~encmigrate.migrate.pending_read.PendingRead` compiles once.
        """
        wanted: list[Any] = list(self.primary_key)
        for s in self.shadows:
            assert s.plaintext is not None
            wanted += [read_expression(s), s.ciphertext.is_(None).label(f"_need_{len(wanted)}")]
        if self.dialect == "postgresql":
            # The row's physical address: the batch's UPDATE finds each locked row with a
            # TID scan instead of a primary-key probe. A locked row cannot move (only an
            # UPDATE makes a new version, and ours is the only one allowed). A ctid is
            # unique only inside one physical table: partitions and inheritance children
            # repeat them, so the address is (tableoid, ctid), never the ctid alone.
            wanted.append(sa.literal_column("tableoid::text", sa.Text).label("_tableoid"))
            wanted.append(sa.literal_column("ctid", sa.Text).label("_ctid"))
        query = (
            sa.select(*wanted)
            .where(*self.key_range(lower, upper, named=named), self.needs_work())
            .order_by(*self.primary_key)
            .limit(sa.bindparam("lim", limit, type_=sa.Integer) if named else limit)
        )
        if lock and self.dialect == "postgresql":
            # FOR NO KEY UPDATE: blocks writers of these rows (an UPDATE between our read and
            # our write would leave a stale ciphertext) but not inserts of referencing rows.
            query = query.with_for_update(key_share=True)
        elif lock and self.dialect in MYSQL_DIALECTS:
            # InnoDB has no FOR NO KEY UPDATE; READ COMMITTED keeps it to record locks.
            query = query.with_for_update()
        return query

    def count_pending(self) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(self.table).where(self.needs_work())


def read_expression(shadow: ShadowColumns) -> Any:
    """The plaintext as every reader that compares or encrypts it must select it.

    * json as its text, so a stored JSON null (which the driver would turn
      into None, like SQL NULL) stays a value, and jsonb gives its canonical
      form rather than a value the driver re-parsed its own way;
    * on SQLite, a text value as its bytes: the driver decodes every text
      value of a fetch as UTF-8 and one value that is not UTF-8 fails the
      whole fetch, so a batch could never get past it. ``ColumnWork`` decodes
      per value and turns a bad one into that row's failure. Values of other
      storage classes (numbers in a JSON or untyped column, blobs) come as
      they are.

    Textual, json and date/time columns are wrapped: SQLite keeps whatever a
    writer stored in a DATE/DATETIME/TIME column (a number, say), and
    SQLAlchemy's result processing for those types raised on such a value and
    stopped the whole run; read as stored, ``ColumnWork`` parses each value and
    turns one that does not parse into that row's failure (PostgreSQL's driver
    returns its native date and time objects either way). Other types keep the
    result processing of their SQL type (SQLite numerics need it).
    """
    column = shadow.plaintext
    assert column is not None
    if shadow.work.plan.type == "json":
        return _JsonRead(column)
    if isinstance(column.type, (sa.String, sa.types.NullType, *_DATE_TIME_TYPES)):
        return _TextRead(column)
    return column


_DATE_TIME_TYPES = (sa.Date, sa.DateTime, sa.Time)


class _TextRead(FunctionElement[Any]):
    """A plaintext read as stored: the column itself; on SQLite, text as bytes."""

    name = "encmigrate_text_read"
    inherit_cache = True


class _JsonRead(FunctionElement[Any]):
    """A json plaintext: its text; on SQLite, text as bytes."""

    name = "encmigrate_json_read"
    inherit_cache = True


@compiles(_TextRead)
def _text_read(element: _TextRead, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_JsonRead)
def _json_read(element: _JsonRead, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


@compiles(_JsonRead, "mysql")
@compiles(_JsonRead, "mariadb")
def _mysql_json_read(element: _JsonRead, compiler: Any, **kw: Any) -> str:
    # MariaDB's JSON is LONGTEXT: the column is its text already (MySQL's own JSON
    # type would return its normalised text; there is no CAST ... AS TEXT).
    return str(compiler.process(element.clauses, **kw))


@compiles(_TextRead, "sqlite")
@compiles(_JsonRead, "sqlite")
def _sqlite_read(element: _TextRead | _JsonRead, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"CASE WHEN typeof({value}) = 'text' THEN CAST({value} AS BLOB) ELSE {value} END"
