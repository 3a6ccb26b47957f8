"""The token column of a searchable column (``SearchTokenIndex``) and which columns pair up.

A searchable column's blind-index tokens live in a column of their own,
``<column>_search`` as ``add-columns`` names it. :class:`SearchTokenIndex` is
that column's type: it stores 32-byte tokens (or their base64), indexes itself
(on MariaDB/MySQL as ``BINARY(32)``, or ``VARCHAR(44)`` ASCII with a binary
collation: a ``BLOB``/``TEXT`` column cannot be indexed without a prefix
length, and a case-insensitive collation would match base64 of other tokens)
and finds the searchable column it belongs to; :func:`pairs_of` lists a
table's (searchable, token) pairs, which the token writers (tokens.py) and
``.search`` (search.py) use.
"""

from __future__ import annotations

import base64
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BINARY, Column, FetchedValue, Index, LargeBinary, Table, Text, event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import SchemaEventTarget
from sqlalchemy.sql.naming import conv
from sqlalchemy.types import TypeDecorator, TypeEngine

from encmigrate.errors import ConfigError, ValueTypeError
from encmigrate.fields.context import ColumnBound
from encmigrate.fields.encrypted import NATIVE_BYTES_DRIVERS, is_mysql
from encmigrate.identifiers import index_name
from encmigrate.spec import SHADOW_SUFFIX, Storage, check_storage

if TYPE_CHECKING:
    from encmigrate.fields.search import Searchable

__all__ = ["SearchTokenIndex", "TokenPair", "TokenSource", "pair_of", "pairs_of", "where"]

TOKEN_BYTES = 32
_MYSQL_TOKEN = BINARY(TOKEN_BYTES)
_MYSQL_TEXT_TOKEN = mysql.VARCHAR(44, charset="ascii", collation="ascii_bin")  # base64 of 32 bytes


class TokenSource:
    """Marks a column type whose column has a token column: the searchable types."""


def where(column: Column[Any]) -> str:
    table = getattr(column, "table", None)
    return f"{table.name}.{column.name}" if isinstance(table, Table) else str(column.name)


class SearchTokenIndex(ColumnBound, TypeDecorator[bytes]):
    """The token column of the searchable column named ``source`` (its key or name).

    Holds 32-byte HMAC tokens; with ``storage="text"`` as base64. ``storage``
    defaults to the source column's storage. ``source`` may name the planned
    column (``"email"``) of a model mapped on the shadow column
    ``email_encrypted``.

    The column gets an index (lookups are ``token IN (...)``) unless the
    column says ``index=False`` or ``unique=True`` (its constraint is an
    index), or the type says ``index=False``: the form Alembic revisions are
    rendered with, since they create the index with ``op.create_index``.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, source: str, *, storage: Storage | None = None, index: bool = True) -> None:
        super().__init__()
        if not isinstance(source, str) or not source:
            raise ValueError("source must be the name of the searchable column")
        if not isinstance(index, bool):
            raise ValueError("index must be True or False")
        self.source = source
        self.storage = None if storage is None else check_storage(storage)
        self.index = index
        self.context = None
        self._keyring = None

    def _set_parent(self, parent: SchemaEventTarget, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer, **kw)
        if isinstance(parent, Column) and parent.type is self:
            # Imported here: tokens.py needs this module's pairs and types.
            from encmigrate.fields.tokens import install_token_writers

            install_token_writers()
            event.listen(parent, "after_parent_attach", _token_column_attached)

    def source_column(self) -> Column[Any]:
        """The searchable column this token column indexes.

        ``source`` is matched against each column's attribute key and database
        name. The planned column's name finds its shadow column too: in a
        table with ``email_encrypted`` (with or without the plaintext ``email``
        beside it), ``SearchTokenIndex("email")`` indexes ``email_encrypted``,
        the column that ``add-columns`` made the token column's partner.
        """
        column = self._column
        table = getattr(column, "table", None)
        if column is None or not isinstance(table, Table):
            raise ConfigError("SearchTokenIndex is not attached to a table column")
        named = [c for c in table.columns if c is not column and self.source in (c.key, c.name)]
        shadow = f"{self.source}{SHADOW_SUFFIX}"
        shadows = [c for c in table.columns if c is not column and shadow in (c.key, c.name)]
        for candidate in (*named, *shadows):
            if isinstance(candidate.type, TokenSource):
                return cast("Column[Any]", candidate)
        if named:
            raise ConfigError(
                f"{where(column)} indexes {where(named[0])}, which is not an "
                "EncryptedSearchable* column"
            )
        raise ConfigError(
            f"{where(column)} indexes {self.source!r}, which is not in the table: name the "
            "searchable column by its attribute or column name"
        )

    def resolved_storage(self) -> Storage:
        if self.storage is not None:
            return self.storage
        try:
            source_type = self.source_column().type
        except ConfigError:
            return "binary"
        if not isinstance(source_type, TokenSource):
            return "binary"
        return cast("Searchable", source_type).storage

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        text = self.resolved_storage() == "text"
        if is_mysql(dialect):
            return dialect.type_descriptor(_MYSQL_TEXT_TOKEN if text else _MYSQL_TOKEN)
        return dialect.type_descriptor(Text() if text else LargeBinary(TOKEN_BYTES))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        as_text = self.resolved_storage() == "text"
        impl_process = (
            None
            if as_text or dialect.driver in NATIVE_BYTES_DRIVERS
            else self.impl_instance.bind_processor(dialect)
        )

        def process(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ValueTypeError(f"search token expects bytes, got {type(value).__name__}")
            if as_text:
                return base64.b64encode(value).decode("ascii")
            return value if impl_process is None else impl_process(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if self.resolved_storage() == "binary" and dialect.driver in NATIVE_BYTES_DRIVERS:
            return None  # these drivers return bytea/BLOB as bytes already

        def process(value: Any) -> bytes | None:
            if value is None:
                return None
            if isinstance(value, str):
                return base64.b64decode(value)
            return bytes(value)

        return process

    def _cache_fields(self) -> tuple[Any, ...]:
        return (self.source, self.storage)

    def copy(self, **kw: Any) -> SearchTokenIndex:
        copy = self._unbound_copy()
        copy._column = self._column
        assert isinstance(copy, SearchTokenIndex)
        return copy

    def __repr__(self) -> str:
        return self._constructor_call(self.index)

    def migration_repr(self) -> str:
        """The constructor call an Alembic revision gets: ``index=False``.

        Autogenerate renders the column's index as an ``op.create_index`` of
        its own; the column in ``op.create_table``/``op.add_column`` must not
        create it a second time.
        """
        return self._constructor_call(False)

    def _constructor_call(self, index: bool) -> str:
        storage = f", storage={self.storage!r}" if self.storage is not None else ""
        unindexed = "" if index else ", index=False"
        return f"SearchTokenIndex({self.source!r}{storage}{unindexed})"


def _token_column_attached(column: Column[Any], table: Any) -> None:
    """Index the token, mark it as the database's business, forget the table's cached pairs."""
    if column.server_default is None:
        FetchedValue()._set_parent_with_dispatch(column)
    if column.server_onupdate is None:
        FetchedValue(for_update=True)._set_parent_with_dispatch(column)
    type_ = column.type
    indexed = isinstance(type_, SearchTokenIndex) and type_.index
    if isinstance(table, Table) and indexed and column.index is None and not column.unique:
        _index_token_column(table, column)
    _PAIRS.pop(table, None)


def _index_token_column(table: Table, column: Column[Any]) -> None:
    """The index every lookup needs.

    Named as ``add-columns`` names it, so a model of a migrated table gives
    Alembic autogenerate nothing to change. Flagged as the column's own index
    (as ``index=True`` would be): ``Table.to_metadata()`` and declarative
    mixins copy the column, whose copy indexes itself, and not the index.
    """
    if any(list(index.columns) == [column] for index in table.indexes):
        return
    Index(conv(index_name(str(table.name), str(column.name))), column, _column_flag=True)


# -- which columns pair up -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenPair:
    """A searchable column and its token column, in one table."""

    source: Column[Any]
    token: Column[Any]

    @property
    def searchable(self) -> Searchable:
        type_ = self.source.type
        assert isinstance(type_, TokenSource)
        return cast("Searchable", type_)


_PAIRS: weakref.WeakKeyDictionary[Table, tuple[TokenPair, ...]] = weakref.WeakKeyDictionary()


def pairs_of(table: Table) -> tuple[TokenPair, ...]:
    """Every (searchable, token) column pair of ``table``."""
    found = _PAIRS.get(table)
    if found is None:
        pairs = []
        for column in table.columns:
            if isinstance(column.type, SearchTokenIndex):
                pairs.append(TokenPair(column.type.source_column(), column))
        found = tuple(pairs)
        _PAIRS[table] = found
    return found


def pair_of(column: Column[Any]) -> TokenPair | None:
    """The pair ``column`` is the searchable column of, if any."""
    table = getattr(column, "table", None)
    if not isinstance(table, Table):
        return None
    return next((p for p in pairs_of(table) if p.source is column), None)
