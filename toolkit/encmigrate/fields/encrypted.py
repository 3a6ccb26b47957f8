"""The base of the encrypted column types: storage, processors, comparisons, repr.

Every type stores the envelope (docs/FORMAT.md) of its value, encoded by
the crypto core's codec of the same type name, in ``bytea``/``BLOB`` or, with
``storage="text"``, as standard base64 in a text column. On MariaDB/MySQL
the columns are ``LONGBLOB`` and ``LONGTEXT`` (ASCII): a ciphertext is its
plaintext plus 33 bytes, so a ``TEXT`` plaintext (65,535 bytes) can outgrow
a ``BLOB``, and ``VARBINARY(n)`` would need a length per column and count
against the 65,535-byte row limit. ``LONGBLOB`` costs what ``BLOB`` costs
(InnoDB stores both alike; 2 more length bytes), and these columns are never
indexed. The bytes are those
``encmigrate.get_cipher(context, type=<type name>)`` produces, so the ORM, the
batch migrator and ``decrypt_field`` read each other's values.

Speed: the bind and result processors are written out by hand rather than
through ``process_bind_param``: each is one closure over the column's hot
path (hotpath.py: one key derivation per keyring, version and context, no
object per row), so a value costs its encoding and its AES-GCM call; and
``bytes`` go to psycopg, sqlite3, PyMySQL and asyncmy as they are (see
NATIVE_BYTES_DRIVERS).
bench/bench_orm.py measures both against a bare AES-GCM floor.

Comparison: ciphertexts are randomised, so ``column == value`` could never
match; it raises :class:`ValueTypeError` pointing at ``.search``, and so does
``.search`` on a column that is not searchable. ``IS NULL`` works as usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from sqlalchemy import LargeBinary, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.sql.operators import OperatorType
from sqlalchemy.types import TypeDecorator, TypeEngine

from encmigrate.api import DEFAULT_KEYRING
from encmigrate.crypto.envelope import envelope_from_text, envelope_to_text
from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import DecryptionError, ValueTypeError
from encmigrate.fields.context import ColumnBound
from encmigrate.keys.keyring import Keyring
from encmigrate.spec import ColumnSpec, Storage, check_storage, planned_name

__all__ = ["NATIVE_BYTES_DRIVERS", "Check", "EncryptedType", "is_mysql"]

_T = TypeVar("_T")
Check = Callable[[Any], None]

# Comparisons that would compare a fresh ciphertext with stored ones.
_VALUE_COMPARISONS = frozenset(
    {
        operators.eq,
        operators.ne,
        operators.in_op,
        operators.not_in_op,
        operators.lt,
        operators.le,
        operators.gt,
        operators.ge,
        operators.like_op,
        operators.ilike_op,
        operators.startswith_op,
        operators.endswith_op,
        operators.contains_op,
        operators.between_op,
    }
)


NATIVE_BYTES_DRIVERS = frozenset(
    {"psycopg", "psycopg_async", "pysqlite", "aiosqlite", "asyncpg", "pymysql", "asyncmy"}
)
"""Drivers that take ``bytes`` for a bytea/BLOB parameter as they are.

``LargeBinary`` wraps every value in ``dbapi.Binary``; for psycopg 3 that
object switches the parameter to binary format, which measured slower than
plain ``bytes`` by 1.5-3 us a value (most of what an encrypted column cost
over a plaintext one in bench/bench_orm.py's inserts), for sqlite3 it
is a ``memoryview`` copy and for PyMySQL and asyncmy a ``bytes`` copy. Other
drivers keep SQLAlchemy's wrapping.
"""
_MYSQL_CIPHERTEXT = mysql.LONGBLOB()
_MYSQL_TEXT = mysql.LONGTEXT(charset="ascii", collation="ascii_bin")


def is_mysql(dialect: Dialect) -> bool:
    """Whether ``dialect`` speaks to MariaDB or MySQL (``mysql://`` and ``mariadb://`` URLs)."""
    return dialect.name in MYSQL_DIALECTS


class EncryptedType(ColumnBound, TypeDecorator[_T]):
    """Base of the encrypted types; ``type_name`` is the type name (as in the plan).

    ``context`` defaults to the column's ``[<schema>.]<table>.<column>``;
    ``keyring`` defaults to the configured keyring (resolved at first use).
    The keyring never takes part in ``repr`` (nor, being an object, in
    Alembic's rendering of the type).
    """

    impl = LargeBinary
    cache_ok = True
    type_name: ClassVar[str] = "string"

    class Comparator(TypeDecorator.Comparator[Any]):
        """Refuses comparisons that can never match a randomised ciphertext."""

        def operate(self, op: OperatorType, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            if op in _VALUE_COMPARISONS and _has_plain_value(other):
                raise ValueTypeError(
                    f"{_describe(self.expr)} is encrypted: comparing it with a value never "
                    "matches (ciphertexts are randomised); use .search on a searchable "
                    "column (EncryptedSearchableString + SearchTokenIndex)"
                )
            return super().operate(op, *other, **kwargs)

        @property
        def search(self) -> Any:
            raise ValueTypeError(
                f"{_describe(self.expr)} is not searchable: declare it with an "
                "EncryptedSearchable* type and a SearchTokenIndex column"
            )

    comparator_factory = Comparator

    def __init__(
        self,
        *,
        context: str | None = None,
        keyring: Keyring | None = None,
        storage: Storage = "binary",
    ) -> None:
        super().__init__()
        if context is not None and (not isinstance(context, str) or not context):
            raise ValueError("context must be a non-empty string")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise TypeError(f"keyring must be a Keyring, got {type(keyring).__name__}")
        self.context = context
        self.storage = check_storage(storage)
        self._keyring = keyring

    # -- SQLAlchemy ------------------------------------------------------

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        text = self.storage == "text"
        if is_mysql(dialect):
            return dialect.type_descriptor(_MYSQL_TEXT if text else _MYSQL_CIPHERTEXT)
        return dialect.type_descriptor(Text() if text else LargeBinary())

    # The processors below are each one closure that does, per value, only the
    # envelope's work: the current version's header, associated data, AES-GCM
    # instance and codec (crypto/hotpath.py) are fetched at the first value (not
    # at compile time: compiling a statement must neither need the context nor
    # derive keys) and kept in the closure's cells, so a value costs its
    # encoding, a nonce and one AES-GCM call, inline, without a call per layer.
    # With an explicit keyring they never change (keyrings are immutable). With
    # the default keyring the keyring in force is asked for per value (a clock
    # read and an identity check, context.py) and the parts are fetched again
    # when it changed. Values under another header, and every failure, go to the
    # hot path's ``open``, which checks everything and raises the one error. Reading
    # bytes under an explicit keyring, the common case, takes a leaner closure still
    # (``_bytes_result_processor``: 15 ns less per value, about 2%).

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        impl_process = (
            None
            if dialect.driver in NATIVE_BYTES_DRIVERS
            else self.impl_instance.bind_processor(dialect)
        )
        finish: Callable[[bytes], Any] | None = (
            envelope_to_text if self.storage == "text" else impl_process
        )
        check = self._value_check()
        hot = self.hot
        in_force = None if self._keyring is not None else DEFAULT_KEYRING.keyring
        nonces = os.urandom
        ring: object = None
        header = aad = b""
        encrypt: Callable[[bytes, bytes, bytes], bytes] | None = None
        encode: Callable[[Any], bytes] = bytes

        def process(value: Any) -> Any:
            nonlocal ring, header, aad, encrypt, encode
            if value is None:
                return None
            if check is not None:
                check(value)
            if in_force is not None:
                current = in_force()
                if current is not ring:
                    ring, encrypt = current, None
            if encrypt is None:
                header, aad, encrypt, encode = hot().sealing
            nonce = nonces(12)
            blob = header + nonce + encrypt(nonce, encode(value), aad)
            return blob if finish is None else finish(blob)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        impl_process = self.impl_instance.result_processor(dialect, coltype)
        start: Callable[[Any], Any] | None = _from_text if self.storage == "text" else impl_process
        if start is None and self._keyring is not None:
            return self._bytes_result_processor()
        hot = self.hot
        explained = self.explained
        in_force = None if self._keyring is not None else DEFAULT_KEYRING.keyring
        ring: object = None
        header = aad = b""
        decrypt: Callable[[bytes, bytes, bytes], bytes] | None = None
        decode: Callable[[bytes], Any] = bytes

        def process(value: Any) -> Any:
            nonlocal ring, header, aad, decrypt, decode
            if start is not None:
                value = start(value)
            if value is None:
                return None
            if in_force is not None:
                current = in_force()
                if current is not ring:
                    ring, decrypt = current, None
            if decrypt is None:
                header, decrypt, aad, decode = hot().opening
            # Literal offsets (the header is 5 bytes, the nonce 12): this runs per value.
            try:
                if value[:5] == header:
                    return decode(decrypt(value[5:17], value[17:], aad))
            except Exception:  # noqa: S110 - the full path below names the failure
                pass
            try:
                return hot().open(value)
            except DecryptionError as error:
                raise explained(error) from None

        return process

    def _bytes_result_processor(self) -> Callable[[Any], Any]:
        """The result processor of the commonest case, with nothing per value but the envelope.

        Bytes from the driver as they are, under an explicit keyring (which never
        changes): no driver conversion, no keyring check. The parts are fetched
        by the first value's detour through ``slow``, so the per-value path holds
        no "fetched yet?" test either: until then ``header`` is None, which no
        value's first five bytes equal.
        """
        hot = self.hot
        explained = self.explained
        header: bytes | None = None
        decrypt: Any = None
        aad: Any = None
        decode: Any = None

        def process(value: Any) -> Any:
            if value is None:
                return None
            # Literal offsets (the header is 5 bytes, the nonce 12): this runs per value.
            try:
                if value[:5] == header:
                    return decode(decrypt(value[5:17], value[17:], aad))
            except Exception:  # noqa: S110 - the full path below names the failure
                pass
            return slow(value)

        def slow(value: Any) -> Any:
            nonlocal header, decrypt, aad, decode
            if header is None:
                current, decrypt, aad, decode = hot().opening
                header = current  # last: a thread that sees the header sees the rest
                return process(value)
            try:
                return hot().open(value)
            except DecryptionError as error:
                raise explained(error) from None

        return process

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Used only by SQLAlchemy paths that bypass :meth:`bind_processor` (literals)."""
        process = self.bind_processor(dialect)
        return process(value) if process is not None else value

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        raise ValueTypeError(
            f"{type(self).__name__} values cannot be rendered as SQL literals "
            "(that would put plaintext or ciphertext into the statement text)"
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            return self.cipher().decrypt(value)
        except DecryptionError as error:
            raise self.explained(error) from None

    def copy(self, **kw: Any) -> EncryptedType[_T]:
        copy = self._unbound_copy()
        copy._column = self._column
        return copy  # type: ignore[return-value]

    def coerce_compared_value(self, op: OperatorType | None, value: Any) -> TypeEngine[Any]:
        return self

    # -- encmigrate --------------------------------------------------------

    def spec(self) -> ColumnSpec:
        return ColumnSpec(
            self.resolve_context(), self.type_name, storage=self.storage, column=self._planned()
        )

    def _planned(self) -> str | None:
        """The planned column this type's column stands for (None outside a table column)."""
        return None if self._column is None else planned_name(str(self._column.name))

    def _value_check(self) -> Check | None:
        """A check of what the codec cannot know (ranges, time zones), or None."""
        return None

    def _cache_fields(self) -> tuple[Any, ...]:
        return (*super()._cache_fields(), self.storage, *self._repr_args())

    def _repr_args(self) -> list[str]:
        args = []
        if self.context is not None:
            args.append(f"context={self.context!r}")
        if self.storage != "binary":
            args.append(f"storage={self.storage!r}")
        return args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_args())})"


def _from_text(value: Any) -> Any:
    """Envelope bytes of base64 text; text that is not base64 goes on as is, to be refused."""
    if value is None:
        return None
    return envelope_from_text(value) or value


def _has_plain_value(other: tuple[Any, ...]) -> bool:
    """Whether a comparison involves a Python value (not NULL, not a SQL expression).

    Column-to-column comparisons must keep working: SQLAlchemy itself uses
    ``==`` between columns (dictionary lookups of annotated columns).
    """
    for item in other:
        items = item if isinstance(item, list | tuple | set) else (item,)
        for value in items:
            if (
                value is not None
                and not hasattr(value, "__clause_element__")
                and not (isinstance(value, ClauseElement))
            ):
                return True
    return False


def _describe(expr: Any) -> str:
    table = getattr(expr, "table", None)
    name = getattr(expr, "name", None) or "column"
    table_name = getattr(table, "name", None)
    return f"{table_name}.{name}" if table_name else str(name)
