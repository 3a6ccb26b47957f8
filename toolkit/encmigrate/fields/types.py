"""The encrypted column types, one per type name (the plan's and ``type=``'s).

Each adds to :class:`~encmigrate.fields.encrypted.EncryptedType` its type
name (which codec encodes its values), its ``python_type``, and the checks
the codec cannot make: a string's declared length, an integer's 32- or 64-bit
range, whether a datetime or time must be aware or naive.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, ClassVar, TypeVar

from encmigrate.errors import ValueTypeError
from encmigrate.fields.encrypted import Check, EncryptedType
from encmigrate.keys.keyring import Keyring
from encmigrate.spec import Storage

_T = TypeVar("_T")


# -- strings and bytes ------------------------------------------------------


class EncryptedString(EncryptedType[str]):
    """``str``; ``length`` (optional) is checked in characters before encrypting."""

    cache_ok = True

    type_name = "string"

    def __init__(
        self,
        length: int | None = None,
        *,
        context: str | None = None,
        keyring: Keyring | None = None,
        storage: Storage = "binary",
    ) -> None:
        super().__init__(context=context, keyring=keyring, storage=storage)
        if length is not None and (isinstance(length, bool) or length < 1):
            raise ValueError("length must be a positive number of characters")
        self.length = length

    @property
    def python_type(self) -> type[Any]:
        return str

    def _value_check(self) -> Check | None:
        limit = self.length
        if limit is None:
            return None
        name = self.type_name

        def check(value: Any) -> None:
            if isinstance(value, str) and len(value) > limit:
                raise ValueTypeError(f"{name} field: value longer than {limit} characters")

        return check

    def _repr_args(self) -> list[str]:
        head = [repr(self.length)] if self.length is not None else []
        return head + super()._repr_args()


class EncryptedText(EncryptedString):
    """``str`` of any length (type name ``text``, the same encoding as ``string``)."""

    cache_ok = True

    type_name = "text"


class EncryptedBinary(EncryptedType[bytes]):
    """``bytes``, stored as they are."""

    cache_ok = True

    type_name = "binary"

    @property
    def python_type(self) -> type[Any]:
        return bytes


class EncryptedJSON(EncryptedType[Any]):
    """A JSON document (dict, list, str, number, bool) as compact JSON.

    Python ``None`` is SQL NULL, not JSON ``null``. In-place changes to a
    loaded dict are not tracked: assign a new value.
    """

    cache_ok = True

    type_name = "json"

    @property
    def python_type(self) -> type[Any]:
        return dict


# -- numbers ------------------------------------------------------------------


def _range_check(type_name: str, bits: int) -> Check:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            raise ValueTypeError(f"{type_name} field: value out of range for a {bits}-bit integer")

    return check


class EncryptedInteger(EncryptedType[int]):
    """``int`` in the 32-bit signed range, like SQL ``INTEGER``."""

    cache_ok = True

    type_name = "integer"
    bits: ClassVar[int] = 32

    @property
    def python_type(self) -> type[Any]:
        return int

    def _value_check(self) -> Check | None:
        return _range_check(self.type_name, self.bits)


class EncryptedBigInteger(EncryptedInteger):
    """``int`` in the 64-bit signed range, like SQL ``BIGINT``."""

    cache_ok = True

    type_name = "bigint"
    bits = 64


class EncryptedFloat(EncryptedType[float]):
    """``float`` (IEEE 754 binary64); an ``int`` is accepted and read back as float."""

    cache_ok = True

    type_name = "float"

    @property
    def python_type(self) -> type[Any]:
        return float


class EncryptedNumeric(EncryptedType[decimal.Decimal]):
    """``Decimal``, exact: ``Decimal("10.20")`` reads back as ``10.20``. Floats are refused."""

    cache_ok = True

    type_name = "numeric"

    @property
    def python_type(self) -> type[Any]:
        return decimal.Decimal


class EncryptedBoolean(EncryptedType[bool]):
    """``bool`` (only ``True``/``False``; ``1`` and ``0`` are refused)."""

    cache_ok = True

    type_name = "boolean"

    @property
    def python_type(self) -> type[Any]:
        return bool


# -- dates and times ------------------------------------------------------------


class EncryptedDate(EncryptedType[dt.date]):
    """``datetime.date`` (a ``datetime`` is refused)."""

    cache_ok = True

    type_name = "date"

    @property
    def python_type(self) -> type[Any]:
        return dt.date


def _zone_check(type_name: str, timezone: bool) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, dt.datetime | dt.time):
            return  # the codec reports the wrong type
        aware = value.utcoffset() is not None
        if timezone and not aware:
            raise ValueTypeError(f"{type_name} field declared timezone=True received a naive value")
        if aware and not timezone:
            raise ValueTypeError(
                f"{type_name} field declared timezone=False received a timezone-aware value"
            )

    return check


class _Zoned(EncryptedType[_T]):
    """A date/time type that is either always aware or always naive, as declared."""

    cache_ok = True

    def __init__(
        self,
        timezone: bool = False,
        *,
        context: str | None = None,
        keyring: Keyring | None = None,
        storage: Storage = "binary",
    ) -> None:
        super().__init__(context=context, keyring=keyring, storage=storage)
        self.timezone = bool(timezone)

    def _value_check(self) -> Check | None:
        return _zone_check(self.type_name, self.timezone)

    def _repr_args(self) -> list[str]:
        head = ["timezone=True"] if self.timezone else []
        return head + super()._repr_args()


class EncryptedDateTime(_Zoned[dt.datetime]):
    """``datetime.datetime``, aware with ``timezone=True``, naive otherwise.

    An aware value keeps its offset (``isoformat``); it is not converted to UTC.
    """

    cache_ok = True

    type_name = "datetime"

    @property
    def python_type(self) -> type[Any]:
        return dt.datetime


class EncryptedTime(_Zoned[dt.time]):
    """``datetime.time``, aware with ``timezone=True``, naive otherwise."""

    cache_ok = True

    type_name = "time"

    @property
    def python_type(self) -> type[Any]:
        return dt.time
