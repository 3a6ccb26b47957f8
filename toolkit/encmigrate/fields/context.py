"""How an encrypted column type learns its column, its context and its keyring.

A type instance is a SQLAlchemy :class:`~sqlalchemy.sql.base.SchemaEventTarget`
(as ``Enum`` is): ``Column`` hands it the column it belongs to, and the type
derives the default context from that column the first time it encrypts or
decrypts, exactly as docs/FORMAT.md (section 2) defines it:
``<table>.<column>`` or ``<schema>.<table>.<column>``, the column's database
name, case kept (for a ``<column>_encrypted`` shadow column, the planned
column's name). The migrator derives the same string from the plan, so a
value written by the ORM and one written by ``migrate-data`` are alike.

Three rules follow from that:

* The context is resolved lazily (first bind or first result), not when the
  model is defined: declarative names a column and attaches it to its table
  only after the class body has run.
* A type instance shared by two columns would otherwise end up with one
  context for both. The second column gets its own copy of the type, so each
  column encrypts under its own context.
* A type used outside a table column (``literal(v, EncryptedString())``)
  without ``context=`` raises :class:`ConfigError` at first use instead of
  silently sharing the library's ``"default"`` context with every other
  unbound value.

Keys: ``keyring=None`` means :func:`encmigrate.keys.default_keyring`, resolved
at first use and re-resolved when it changes: at most once a second
(:data:`REFRESH_SECONDS`), or at once after
:func:`encmigrate.keys.reset_default_keyring`. ``default_keyring`` itself
rereads the environment and the keyring file, which costs far too much to do
per value. The ciphers ``get_cipher()`` builds without a keyring share the
same follower (:data:`encmigrate.api.DEFAULT_KEYRING`).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Column, Table
from sqlalchemy.sql.base import SchemaEventTarget

from encmigrate.api import DEFAULT_KEYRING, REFRESH_SECONDS
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.hotpath import HotPath
from encmigrate.errors import ConfigError, DecryptionError
from encmigrate.keys.keyring import Keyring
from encmigrate.spec import VIEW_SUFFIX, ColumnSpec, default_context, planned_name

__all__ = [
    "REFRESH_SECONDS",
    "VIEW_OF",
    "ColumnBound",
    "column_context",
    "current_default_keyring",
    "view_hint",
]

VIEW_OF = "encmigrate_view_of"
"""The ``Table.info`` key of a model mapped on a view: the name of the table the view shows.

The view is in the table's schema, so the value is the table's name only:
``{"schema": "sales", "info": {VIEW_OF: "customer"}}`` gives contexts
``sales.customer.<column>``, as the plan ``table = "sales.customer"`` does.
"""


def column_context(column: Column[Any]) -> str:
    """The default context of ``column``: ``[<schema>.]<table>.<column>``.

    A column named ``<name>_encrypted`` is the shadow column of the planned
    column ``<name>`` (``add-columns``, step 1), and ``migrate-data`` encrypts into
    it under the planned column's context, ``<table>.<name>``. The suffix is
    dropped here too, so a model mapped onto the shadow columns reads what
    the migrator wrote, and the migrator's ``verify`` reads what the model
    wrote.
    """
    table = getattr(column, "table", None)
    if not isinstance(table, Table):
        raise ConfigError(
            f"encrypted column {column.name!r} is not part of a Table: "
            "pass context='...' to its type"
        )
    return default_context(
        _context_table(table), planned_name(str(column.name)), schema=table.schema
    )


def _context_table(table: Table) -> str:
    """The table whose contexts ``table``'s columns use: itself, or the one its view shows."""
    shows = table.info.get(VIEW_OF)
    if shows is None:
        return str(table.name)
    if not isinstance(shows, str) or not shows:
        raise ConfigError(
            f"{table.name!r}: info[{VIEW_OF!r}] must be the name of the table the view "
            "shows (a non-empty string, without the schema)"
        )
    return shows


def view_hint(column: Column[Any] | None) -> str:
    """What to add when a value read through ``column`` does not decrypt, or ``""``.

    Only for a column whose context was derived from a table named like the
    step-4 views (``<table>_secure``) that does not say which table it shows:
    reading such a view under its own name is the likely mistake.
    """
    table = getattr(column, "table", None)
    if not isinstance(table, Table) or VIEW_OF in table.info:
        return ""
    name = str(table.name)
    if not name.endswith(VIEW_SUFFIX) or len(name) == len(VIEW_SUFFIX):
        return ""
    base = name[: -len(VIEW_SUFFIX)]
    return (
        f"if {name!r} is the view of table {base!r}, give its model "
        f"__table_args__ = {{'info': {{{VIEW_OF!r}: {base!r}}}}} so that its columns "
        "use the table's contexts"
    )


def current_default_keyring() -> Keyring:
    """The keyring types with ``keyring=None`` use right now."""
    return DEFAULT_KEYRING.keyring()


class ColumnBound(SchemaEventTarget):
    """Mixin for types that derive their context from the column they belong to.

    Subclasses set ``context`` (explicit or None) and ``_keyring`` in
    ``__init__`` and implement :meth:`_make_cipher`.
    """

    context: str | None
    _keyring: Keyring | None
    _column: Column[Any] | None = None
    _resolved_context: str | None = None
    _cipher_state: tuple[Keyring, HotPath] | None = None

    def _set_parent(self, parent: SchemaEventTarget, outer: bool = False, **kw: Any) -> None:
        if not isinstance(parent, Column):
            return
        bound = self._column
        if bound is None or bound is parent:
            self._bind(parent)
        elif bound.type is cast(Any, self):
            # One instance given to two columns: the first keeps it, the
            # second gets a copy, so each encrypts under its own context.
            own = self._unbound_copy()
            parent.type = cast(Any, own)
            own._set_parent_with_dispatch(parent)
        else:
            # A copy made for this column (Column._copy, declarative mixins).
            self._bind(parent)

    def _bind(self, column: Column[Any]) -> None:
        self._column = column
        self._resolved_context = None
        self._cipher_state = None

    def _unbound_copy(self) -> ColumnBound:
        copy = self.__class__.__new__(self.__class__)
        copy.__dict__.update(self.__dict__)
        copy._column = None
        copy._resolved_context = None
        copy._cipher_state = None
        return copy

    def resolve_context(self) -> str:
        """The context this type encrypts under (explicit, or from its column)."""
        found = self._resolved_context
        if found is not None:
            return found
        if self.context is not None:
            found = self.context
        elif self._column is None:
            raise ConfigError(
                f"{type(self).__name__} is not attached to a table column: "
                "pass context='...' to use it elsewhere"
            )
        else:
            found = column_context(self._column)
        self._resolved_context = found
        return found

    def explained(self, error: DecryptionError) -> DecryptionError:
        """``error``, saying what to add when the column's model seems to map a view as a table."""
        hint = "" if self.context is not None else view_hint(self._column)
        if not hint:
            return error
        reason = f"{error.reason}; {hint}" if error.reason else hint
        return DecryptionError(error.context, error.version, reason, cause=error.cause)

    def keyring(self) -> Keyring:
        """The keyring in force for this type (explicit, or the default one now)."""
        return self._keyring if self._keyring is not None else DEFAULT_KEYRING.keyring()

    def cipher(self) -> FieldCipher:
        """This column's cipher under the keyring in force, built once per keyring."""
        return self.hot().cipher

    def hot(self) -> HotPath:
        """The per-value path of this column under the keyring in force (see hotpath.py)."""
        ring = self._keyring if self._keyring is not None else DEFAULT_KEYRING.keyring()
        state = self._cipher_state
        if state is not None and state[0] is ring:
            return state[1]
        hot = HotPath(self._make_cipher(ring))
        self._cipher_state = (ring, hot)
        return hot

    def spec(self) -> ColumnSpec:
        """This column's :class:`~encmigrate.spec.ColumnSpec` (its context resolved)."""
        raise NotImplementedError

    def _make_cipher(self, keyring: Keyring) -> FieldCipher:
        return self.spec().cipher(keyring.derived_keys)

    def _cache_fields(self) -> tuple[Any, ...]:
        """What makes two instances encrypt differently, for SQLAlchemy's statement cache."""
        return (self.context, id(self._keyring))

    @property
    def _static_cache_key(self) -> tuple[Any, ...]:
        # SQLAlchemy's default key only covers positional ``__init__`` arguments;
        # ours are keyword-only, and a compiled statement carries the bind
        # processors of the type it was compiled with. Two types that differ
        # in context or keyring must never share one. ``id`` is safe: a cached
        # statement keeps its type, and so its keyring, alive.
        return (type(self), *self._cache_fields())
