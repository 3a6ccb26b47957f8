"""One planned column at work: its plaintext turned into shadow values, and back.

The ciphertext is the same envelope ``encmigrate.get_cipher(context,
type=...)`` produces, and the token the same as the ORM types write, so a
value written by the application and one written by the migrator are
indistinguishable.

``same_value`` is the one comparison of a plaintext with a decrypted shadow
value: ``verify`` uses it to find mismatches and a repair pass the rows to
re-encrypt, so the two can never disagree about which rows are wrong.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import JSON_NULL
from encmigrate.crypto.envelope import envelope_from_text, envelope_to_text
from encmigrate.crypto.search import SearchableCipher
from encmigrate.errors import ValueTypeError
from encmigrate.keys.keyring import Keyring
from encmigrate.plan import ColumnPlan

__all__ = ["NOT_UTF8", "ColumnWork", "ShadowValues"]

NOT_UTF8 = "plaintext is not valid UTF-8"

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
    "string": str,
    "text": str,
    "integer": int,
    "bigint": int,
    "float": float,
    "numeric": decimal.Decimal,
    "boolean": bool,
    "date": dt.date,
    "datetime": dt.datetime,
    "time": dt.time,
}


_TEXT_AS_BYTES = (bytes, bytearray, memoryview)


def _same_float(expected: Any, found: Any) -> bool:
    """Bit-for-bit but for NaN's payload: NaN equals NaN, -0.0 is not 0.0."""
    if type(found) is not float or type(expected) is not float:
        return False
    if math.isnan(expected):
        return math.isnan(found)
    return expected == found and math.copysign(1.0, expected) == math.copysign(1.0, found)


def _same_numeric(expected: Any, found: Any) -> bool:
    """The same exact text (the codec's encoding): 1.10 is not 1.1; NaN equals NaN."""
    if not isinstance(expected, decimal.Decimal) or not isinstance(found, decimal.Decimal):
        return False
    if expected.is_nan():
        return found.is_nan()
    return str(expected) == str(found)


def _same_json(expected: Any, found: Any) -> bool:
    """The same JSON document, object keys in any order; true is not 1, "1" is not 1.

    jsonb keeps no key order (it stores its own canonical form) and a json
    column's whitespace and key order are not part of the value.
    """
    if expected is JSON_NULL:
        expected = None
    try:
        return _same_document(expected, found)
    except RecursionError:  # nesting deeper than Python recurses: try the C encoder
        text = _canonical_json(expected)
        return text is not None and text == _canonical_json(found)


def _same_document(expected: Any, found: Any) -> bool:
    # Python's == alone would take True for 1 and 1 for 1.0. Walking both documents is
    # about twice as fast as comparing their canonical encodings, the costliest part of
    # verifying a json column.
    kind = type(expected)
    if kind is not type(found):
        return False
    if kind is dict:
        return expected.keys() == found.keys() and all(
            _same_document(value, found[key]) for key, value in expected.items()
        )
    if kind is list:
        return len(expected) == len(found) and all(map(_same_document, expected, found))
    if kind is float:
        return _same_float(expected, found)
    return bool(expected == found)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_json(value: Any) -> str | None:
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None


def _same_plain(expected: Any, found: Any) -> bool:
    """The same type and ``==``: for aware datetimes and times that is the same instant
    (a timestamptz keeps no offset: the reading session's time zone picks the one shown)."""
    return type(expected) is type(found) and bool(expected == found)


_SAME: dict[str, Callable[[Any, Any], bool]] = {
    "float": _same_float,
    "numeric": _same_numeric,
    "json": _same_json,
}


@dataclass(frozen=True, slots=True)
class ShadowValues:
    """Shadow values of one batch for one column; ``failures`` maps a row index to its reason."""

    ciphertexts: list[Any]
    tokens: list[Any] | None
    failures: dict[int, str]


class ColumnWork:
    """Encrypts, tokenises and decrypts the values of one planned column."""

    def __init__(self, plan: ColumnPlan, keyring: Keyring) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.cipher: FieldCipher = self.spec.cipher(keyring.derived_keys)
        self._codec = self.spec.codec
        self._coerce = _COERCE.get(self.spec.type_name)
        self._native = _NATIVE.get(self.spec.type_name)
        self._same = _SAME.get(self.spec.type_name, _same_plain)
        # Text read as bytes (table.read_expression on SQLite, or a driver that does not
        # decode) is decoded here, one value at a time; only a binary plan keeps bytes.
        self._decode = self.spec.type_name != "binary"
        self._text = self.spec.text_storage

    def __repr__(self) -> str:
        return f"ColumnWork({self.plan.table}.{self.plan.column}, {self.cipher!r})"

    @property
    def searchable(self) -> bool:
        return self.spec.searchable

    def coerce(self, value: Any) -> Any:
        """A database value as the plan's type (text columns are parsed per value).

        Raises :class:`ValueTypeError` naming the problem (never the value) for
        text that is not UTF-8 or does not parse as the plan's type.
        """
        found = self._prepare(value)
        if isinstance(found, _Unparsable):
            raise ValueTypeError(found.reason)
        return found

    def undecodable(self, plaintext: Any) -> bool:
        """Whether ``plaintext`` is text the database holds but that is not valid UTF-8."""
        if not self._decode or not isinstance(plaintext, _TEXT_AS_BYTES):
            return False
        return isinstance(_utf8(plaintext), _Unparsable)

    def same_value(self, plaintext: Any, decrypted: Any) -> bool:
        """Whether ``decrypted`` holds exactly what ``migrate-data`` encrypts for ``plaintext``.

        ``plaintext`` is the column's value read the way the backfill reads it
        (``table.read_expression``: json as its text, SQLite text as bytes);
        ``decrypted`` is the shadow value opened by :attr:`cipher`. The
        plaintext goes through the backfill's own preparation (decode, parse,
        a stored JSON ``null`` kept as a value), then is compared as the codec
        sees values, not as Python's ``==`` does:

        * float: bit for bit, except that NaN equals NaN; ``-0.0`` is not ``0.0``;
        * numeric: the exact text the codec encrypts, so ``1.10`` is not ``1.1``
          and ``NaN`` equals ``NaN`` (``Infinity`` and ``-Infinity`` likewise);
        * json: the same document with object keys in any order (jsonb stores
          its own canonical order, a json column keeps the writer's), types
          kept apart: ``true`` is not ``1``, ``"1"`` is not ``1``;
        * datetime and time: the same instant when both are aware (a
          ``timestamptz`` keeps no offset: the reading session's time zone
          picks it), equal when both are naive, never equal across the two;
        * any other type: the same Python type and equal values.

        Plaintext that is not UTF-8 or does not parse as the plan's type is
        never the same as anything. A NULL plaintext is the same only as
        None; as a JSON ``null`` decrypts to None too, a caller tells a NULL
        ciphertext apart itself (``verify`` counts those rows separately).
        """
        if plaintext is None:
            return decrypted is None
        expected = self._prepare(plaintext)
        if isinstance(expected, _Unparsable):
            return False
        return self._same(expected, decrypted)

    def seal(self, values: Sequence[Any], *, decrypted: bool = False) -> ShadowValues:
        """Ciphertexts (and tokens) of ``values``; values that do not fit become failures.

        A failed value's shadows stay NULL and its reason names the type
        problem, never the value. ``values`` are database values, prepared as
        the backfill prepares them, unless ``decrypted``: values this column's
        cipher decrypted (rewrap) are already of the plan's type and are sealed
        as they are. (Prepared again, a JSON string would be parsed as JSON
        text: ``"1"`` would become the number 1, ``"hello"`` would fail.)
        """
        failures: dict[int, str] = {}
        if decrypted or self._is_native(values):
            prepared = list(values)
        else:
            prepared = [self._prepare(v) for v in values]
        try:
            ciphertexts = self.cipher.batch_encrypt(prepared)
        except (ValueTypeError, ValueError, TypeError, OverflowError):
            prepared, failures = self._screen(prepared)
            ciphertexts = self.cipher.batch_encrypt(prepared)
        tokens: list[Any] | None = None
        if isinstance(self.cipher, SearchableCipher):
            tokens = self.cipher.batch_tokens(prepared)
        if self._text:
            return ShadowValues(
                _texts(ciphertexts), None if tokens is None else _texts(tokens), failures
            )
        return ShadowValues(list(ciphertexts), tokens, failures)

    def _is_native(self, values: Sequence[Any]) -> bool:
        native = self._native
        return native is not None and set(map(type, values)) <= {native, type(None)}

    def _prepare(self, value: Any) -> Any:
        """``value`` as the backfill encrypts it, or an :class:`_Unparsable` naming why not."""
        if value is None:
            return None
        if self._decode and isinstance(value, _TEXT_AS_BYTES):
            value = _utf8(value)
            if isinstance(value, _Unparsable):
                return value
        if self._coerce is None:
            return value
        try:
            return self._coerce(value)
        except (ValueTypeError, ValueError, TypeError, ArithmeticError):
            return _Unparsable(f"value does not parse as {self.plan.type}")

    def _screen(self, prepared: list[Any]) -> tuple[list[Any], dict[int, str]]:
        failures: dict[int, str] = {}
        clean: list[Any] = []
        for index, value in enumerate(prepared):
            if isinstance(value, _Unparsable):
                failures[index] = value.reason
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

    def token_matches(self, plaintext: Any, token: Any, version: int) -> bool:
        """Whether ``token`` is the search token of ``plaintext`` under key ``version``.

        The other half of :meth:`same_value`, for a plaintext that passed it:
        ``verify`` flags a row whose token fails it, and a repair re-seals it.
        Tokens are compared as bytes (a base64 token is decoded first).
        """
        if token is None:
            return False
        return _token_bytes(token) == _token_bytes(self.token_of(self.coerce(plaintext), version))


def _token_bytes(token: Any) -> bytes | None:
    return envelope_from_text(token) if isinstance(token, str) else bytes(token)


def _texts(blobs: Sequence[bytes | None]) -> list[str | None]:
    return [None if b is None else envelope_to_text(b) for b in blobs]


class _Unparsable:
    """Marks a value that did not decode or parse; holds the reason, never the value."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unparsable: {self.reason}>"


_UNDECODABLE = _Unparsable(NOT_UTF8)


def _utf8(value: bytes | bytearray | memoryview) -> Any:
    """The text of ``value``, or the undecodable marker.

    The UnicodeDecodeError is dropped here, not re-raised: its message and its
    ``object`` attribute carry the offending bytes, which must reach no log.
    """
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return _UNDECODABLE


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueTypeError):
        return str(exc)
    return f"value does not fit the declared type ({type(exc).__name__})"
