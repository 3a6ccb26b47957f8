"""One planned column at work: its plaintext turned into shadow values, and back.

The ciphertext is the same envelope ``encmigrate.get_cipher(context,
type=...)`` produces, and the token the same as the ORM types write, so a
value written by the application and one written by the migrator are
indistinguishable.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import JSON_NULL, codec_for
from encmigrate.crypto.envelope import envelope_to_text
from encmigrate.crypto.search import SearchableCipher
from encmigrate.errors import ValueTypeError
from encmigrate.keys.keyring import Keyring
from encmigrate.plan import ColumnPlan

__all__ = ["ColumnWork", "Sealed"]

_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


def _to_integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueTypeError("integer field expects int, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueTypeError(f"integer field expects int, got {type(value).__name__}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueTypeError("float field expects float, got bool")
    if isinstance(value, float | int | decimal.Decimal):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueTypeError(f"float field expects float, got {type(value).__name__}")


def _to_numeric(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise ValueTypeError("numeric field expects Decimal, got bool")
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, float):  # SQLite REAL: the shortest repr is what the column shows
        return decimal.Decimal(repr(value))
    if isinstance(value, str):
        return decimal.Decimal(value.strip())
    raise ValueTypeError(f"numeric field expects Decimal, got {type(value).__name__}")


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueTypeError("boolean field: text is not a boolean word")
    raise ValueTypeError(f"boolean field expects bool, got {type(value).__name__}")


def _parsed(parse: Callable[[str], Any], kind: type) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value.strip())
        return value  # the codec checks the type

    coerce.__name__ = f"to_{kind.__name__}"
    return coerce


def _to_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    parsed = json.loads(value)
    return JSON_NULL if parsed is None else parsed  # a stored JSON null is a value


def _to_binary(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


_COERCE: dict[str, Callable[[Any], Any]] = {
    "integer": _to_integer,
    "bigint": _to_integer,
    "float": _to_float,
    "numeric": _to_numeric,
    "boolean": _to_boolean,
    "date": _parsed(dt.date.fromisoformat, dt.date),
    "datetime": _parsed(dt.datetime.fromisoformat, dt.datetime),
    "time": _parsed(dt.time.fromisoformat, dt.time),
    "json": _to_json,
    "binary": _to_binary,
}


# The Python type a driver returns for a column that already has the plan's type: a batch
# made only of these (and None) needs no coercion, which is most of a batch's Python work
# for such a column after the encryption itself.
_NATIVE: dict[str, type] = {
    "integer": int,
    "bigint": int,
    "float": float,
    "numeric": decimal.Decimal,
    "boolean": bool,
    "date": dt.date,
    "datetime": dt.datetime,
    "time": dt.time,
}


@dataclass(frozen=True, slots=True)
class Sealed:
    """Shadow values of one batch for one column; ``failures`` maps a row index to its reason."""

    ciphertexts: list[Any]
    tokens: list[Any] | None
    failures: dict[int, str]


class ColumnWork:
    """Encrypts, tokenises and decrypts the values of one planned column."""

    def __init__(self, plan: ColumnPlan, keyring: Keyring) -> None:
        self.plan = plan
        codec = codec_for(plan.type)
        keys = keyring.derived_keys
        self.cipher: FieldCipher = (
            SearchableCipher(keys, plan.context, codec, normalize=plan.normalize)
            if plan.searchable
            else FieldCipher(keys, plan.context, codec)
        )
        self._codec = codec
        self._coerce = _COERCE.get(plan.type)
        self._native = _NATIVE.get(plan.type)
        self._text = plan.storage == "text"

    def __repr__(self) -> str:
        return f"ColumnWork({self.plan.table}.{self.plan.column}, {self.cipher!r})"

    @property
    def searchable(self) -> bool:
        return isinstance(self.cipher, SearchableCipher)

    def coerce(self, value: Any) -> Any:
        """A database value as the plan's type (text columns are parsed per value)."""
        if value is None or self._coerce is None:
            return value
        return self._coerce(value)

    def seal(self, values: Sequence[Any]) -> Sealed:
        """Ciphertexts (and tokens) of ``values``; values that do not fit become failures.

        A failed value's shadows stay NULL and its reason names the type
        problem, never the value.
        """
        failures: dict[int, str] = {}
        prepared = list(values) if self._is_native(values) else [self._safe(v) for v in values]
        try:
            ciphertexts = self.cipher.batch_encrypt(prepared)
        except (ValueTypeError, ValueError, TypeError, OverflowError):
            prepared, failures = self._screen(prepared)
            ciphertexts = self.cipher.batch_encrypt(prepared)
        tokens: list[Any] | None = None
        if isinstance(self.cipher, SearchableCipher):
            tokens = self.cipher.batch_tokens(prepared)
        if self._text:
            return Sealed(_texts(ciphertexts), None if tokens is None else _texts(tokens), failures)
        return Sealed(list(ciphertexts), tokens, failures)

    def _is_native(self, values: Sequence[Any]) -> bool:
        if self._coerce is None:
            return True
        native = self._native
        return native is not None and all(v is None or type(v) is native for v in values)

    def _safe(self, value: Any) -> Any:
        try:
            return self.coerce(value)
        except (ValueTypeError, ValueError, TypeError, ArithmeticError, json.JSONDecodeError):
            return _Unparsable(self.plan.type)

    def _screen(self, prepared: list[Any]) -> tuple[list[Any], dict[int, str]]:
        failures: dict[int, str] = {}
        clean: list[Any] = []
        for index, value in enumerate(prepared):
            if isinstance(value, _Unparsable):
                failures[index] = f"value does not parse as {self.plan.type}"
                clean.append(None)
                continue
            try:
                if value is not None:
                    self._codec.encode(value)
                clean.append(value)
            except (ValueTypeError, ValueError, TypeError, OverflowError) as exc:
                failures[index] = _reason(exc)
                clean.append(None)
        return clean, failures

    def token_of(self, value: Any, version: int) -> Any:
        """The token ``value`` has under key ``version`` (for verify)."""
        assert isinstance(self.cipher, SearchableCipher)
        token = self.cipher.token_under(value, version)
        return envelope_to_text(token) if self._text and token is not None else token


def _texts(blobs: Sequence[bytes | None]) -> list[str | None]:
    return [None if b is None else envelope_to_text(b) for b in blobs]


class _Unparsable:
    """Marks a value that did not parse as the column's type (never holds the value)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<unparsable {self.type_name}>"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueTypeError):
        return str(exc)
    return f"value does not fit the declared type ({type(exc).__name__})"
