"""Searchable encrypted columns: a blind-index token column kept beside the ciphertext.

The idiom (the seed guide's)::

    email = Column(EncryptedSearchableString(normalize="lower"))
    email_search = Column(SearchTokenIndex("email"))   # indexed; index=False opts out

or the short form, which adds the indexed ``email_search`` column itself::

    email = Column(EncryptedSearchableString(normalize="lower", token_column=True))

and the query::

    select(Customer).where(Customer.email.search == "Alice@Example.com")
    select(Customer).where(Customer.email.search.in_(["a@x.org", "b@x.org"]))

``.search == v`` compares the token column with ``lookup_tokens(v)``: the
token of ``v`` under every key version the keyring can still read, so rows
written before and after a ``rotate`` are both found until ``rewrap`` has
moved them; rows under a disabled or destroyed version are no longer found.

The token column is filled on every write by :mod:`.tokens`.
"""

from __future__ import annotations

import base64
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Column, FetchedValue, Index, LargeBinary, Table, Text, event
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import false
from sqlalchemy.sql.base import SchemaEventTarget
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.naming import conv
from sqlalchemy.types import TypeDecorator, TypeEngine

from encmigrate.crypto.search import Normalize, SearchableCipher
from encmigrate.errors import ConfigError, ValueTypeError
from encmigrate.fields.context import ColumnBound
from encmigrate.fields.encrypted import NATIVE_BYTES_DRIVERS, EncryptedType
from encmigrate.fields.types import (
    EncryptedBigInteger,
    EncryptedBinary,
    EncryptedDate,
    EncryptedInteger,
    EncryptedString,
    EncryptedText,
)
from encmigrate.identifiers import index_name
from encmigrate.keys.keyring import Keyring
from encmigrate.spec import SHADOW_SUFFIX, ColumnSpec, Storage, check_storage


class SearchLookup:
    """What ``Model.column.search`` returns: ``== value`` and ``.in_(values)``."""

    __slots__ = ("_expr", "_type")

    def __init__(self, expr: ColumnElement[Any], type_: Searchable) -> None:
        self._expr = expr
        self._type = type_

    def __eq__(self, value: object) -> ColumnElement[bool]:  # type: ignore[override]
        if value is None:
            return self._expr.is_(None)
        return self._match(self._type.hot().lookup_tokens(value))

    def in_(self, values: Iterable[Any]) -> ColumnElement[bool]:
        """Rows whose value equals any of ``values`` (``None`` is ignored)."""
        lookup_tokens = self._type.hot().lookup_tokens
        tokens: list[bytes] = []
        for value in values:
            tokens.extend(lookup_tokens(value))
        return self._match(tokens)

    __hash__ = None  # type: ignore[assignment]

    def _match(self, tokens: list[bytes]) -> ColumnElement[bool]:
        if not tokens:
            return false()
        token_column = self._type.token_column_for(self._expr)
        if len(tokens) == 1:
            # One readable version: a plain equality keeps the plan simple.
            return token_column == tokens[0]
        return token_column.in_(tokens)

    def __repr__(self) -> str:
        return f"SearchLookup({getattr(self._expr, 'key', '?')!r})"


class Searchable(EncryptedType[Any]):
    """Mixin: an encrypted type whose column has a companion token column."""

    cache_ok = True

    normalize: str
    token_column: bool | str

    class Comparator(EncryptedType.Comparator):
        @property
        def search(self) -> SearchLookup:
            type_ = self.type
            assert isinstance(type_, Searchable)
            return SearchLookup(self.expr, type_)

    comparator_factory = Comparator

    def _init_search(self, normalize: Normalize | str, token_column: bool | str) -> None:
        try:
            mode = Normalize(normalize)
        except ValueError:
            choices = ", ".join(m.value for m in Normalize)
            raise ValueError(f"normalize must be one of {choices}") from None
        if mode is not Normalize.NONE and self.type_name not in ("string", "text"):
            raise ValueError(f"normalize applies to string fields, not {self.type_name}")
        if not isinstance(token_column, bool | str) or token_column == "":
            raise ValueError("token_column must be True, False or a column name")
        self.normalize = mode.value
        self.token_column = token_column

    def spec(self) -> ColumnSpec:
        return replace(super().spec(), searchable=True, normalize=Normalize(self.normalize))

    def search_cipher(self) -> SearchableCipher:
        cipher = self.cipher()
        assert isinstance(cipher, SearchableCipher)
        return cipher

    def token_column_for(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """The token column beside ``expr`` (in the same table or alias)."""
        column = self._column
        if column is None:
            raise ConfigError(f"{type(self).__name__} is not attached to a table column")
        pair = _pair_of(column)
        if pair is None:
            raise ConfigError(
                f"{where(column)} is searchable but its table has no SearchTokenIndex("
                f"{column.key!r}) column (or pass token_column=True)"
            )
        selectable = getattr(expr, "table", None)
        columns = getattr(selectable, "c", None)
        if columns is not None and pair.token.key in columns:
            found: ColumnElement[Any] = columns[pair.token.key]
            return found
        return pair.token

    def _set_parent(self, parent: SchemaEventTarget, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer, **kw)
        if isinstance(parent, Column) and parent.type is self and self.token_column:
            event.listen(parent, "after_parent_attach", _add_token_column)

    def _repr_args(self) -> list[str]:
        args = super()._repr_args()
        if self.normalize != Normalize.NONE.value:
            args.append(f"normalize={self.normalize!r}")
        if self.token_column:
            args.append(f"token_column={self.token_column!r}")
        return args


def where(column: Column[Any]) -> str:
    table = getattr(column, "table", None)
    return f"{table.name}.{column.name}" if isinstance(table, Table) else str(column.name)


def _add_token_column(column: Column[Any], table: Any) -> None:
    """The short form: append ``<name>_search`` (indexed) when the column joins a table."""
    if not isinstance(table, Table) or not isinstance(column.type, Searchable):
        return
    wanted = column.type.token_column
    name = wanted if isinstance(wanted, str) else f"{column.name}_search"
    if name in table.c:
        return  # to_metadata() and mixin copies bring it along already
    storage = column.type.storage
    table.append_column(Column(name, SearchTokenIndex(column.key, storage=storage)))


class EncryptedSearchableString(Searchable, EncryptedString):
    """A searchable :class:`EncryptedString`; ``normalize`` applies to tokens only."""

    cache_ok = True

    def __init__(
        self,
        length: int | None = None,
        *,
        normalize: Normalize | str = Normalize.NONE,
        token_column: bool | str = False,
        context: str | None = None,
        keyring: Keyring | None = None,
        storage: Storage = "binary",
    ) -> None:
        super().__init__(length, context=context, keyring=keyring, storage=storage)
        self._init_search(normalize, token_column)


class EncryptedSearchableText(EncryptedSearchableString, EncryptedText):
    """A searchable :class:`EncryptedText`."""

    cache_ok = True

    type_name = "text"


class _SearchableScalar(Searchable):
    cache_ok = True

    def __init__(
        self,
        *,
        token_column: bool | str = False,
        context: str | None = None,
        keyring: Keyring | None = None,
        storage: Storage = "binary",
    ) -> None:
        super().__init__(context=context, keyring=keyring, storage=storage)
        self._init_search(Normalize.NONE, token_column)


class EncryptedSearchableInteger(_SearchableScalar, EncryptedInteger):
    """A searchable :class:`EncryptedInteger` (equality only)."""

    cache_ok = True


class EncryptedSearchableBigInteger(_SearchableScalar, EncryptedBigInteger):
    """A searchable :class:`EncryptedBigInteger` (equality only)."""

    cache_ok = True


class EncryptedSearchableDate(_SearchableScalar, EncryptedDate):
    """A searchable :class:`EncryptedDate` (equality only)."""

    cache_ok = True


class EncryptedSearchableBinary(_SearchableScalar, EncryptedBinary):
    """A searchable :class:`EncryptedBinary` (equality of the exact bytes)."""

    cache_ok = True


# -- the token column ------------------------------------------------------------


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
            if isinstance(candidate.type, Searchable):
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
        return source_type.storage if isinstance(source_type, Searchable) else "binary"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        text = self.resolved_storage() == "text"
        return dialect.type_descriptor(Text() if text else LargeBinary(32))

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
        assert isinstance(type_, Searchable)
        return type_


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


def _pair_of(column: Column[Any]) -> TokenPair | None:
    table = getattr(column, "table", None)
    if not isinstance(table, Table):
        return None
    return next((p for p in pairs_of(table) if p.source is column), None)
