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

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sqlalchemy import Column, Table, event
from sqlalchemy.sql import false
from sqlalchemy.sql.base import SchemaEventTarget
from sqlalchemy.sql.elements import ColumnElement

from encmigrate.crypto.search import Normalize, SearchableCipher
from encmigrate.errors import ConfigError
from encmigrate.fields.encrypted import EncryptedType
from encmigrate.fields.token_index import SearchTokenIndex, TokenSource, pair_of, where
from encmigrate.fields.types import (
    EncryptedBigInteger,
    EncryptedBinary,
    EncryptedDate,
    EncryptedInteger,
    EncryptedString,
    EncryptedText,
)
from encmigrate.keys.keyring import Keyring
from encmigrate.spec import SEARCH_SUFFIX, ColumnSpec, Storage, normalize_mode


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


class Searchable(TokenSource, EncryptedType[Any]):
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
        mode = normalize_mode(normalize)
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
        pair = pair_of(column)
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


def _add_token_column(column: Column[Any], table: Any) -> None:
    """The short form: append ``<name>_search`` (indexed) when the column joins a table."""
    if not isinstance(table, Table) or not isinstance(column.type, Searchable):
        return
    wanted = column.type.token_column
    name = wanted if isinstance(wanted, str) else f"{column.name}{SEARCH_SUFFIX}"
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
