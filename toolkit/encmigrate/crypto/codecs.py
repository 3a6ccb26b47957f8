"""How each field type turns into the bytes that get encrypted, and back.

The encodings are part of the on-disk format (docs/FORMAT.md): changing one
changes every ciphertext, and the frozen vectors in tests/vectors/ fail.

=========  =====================================================================
type       encoding
=========  =====================================================================
string     UTF-8 (``text`` is the same codec under another name)
integer    signed big-endian two's complement, minimal length (``bigint`` too)
float      IEEE 754 binary64, big-endian, 8 bytes
numeric    ``str(Decimal)`` in ASCII: exact, ``Decimal("10.20")`` stays ``10.20``
boolean    one byte, ``0x00`` or ``0x01``
date       ISO 8601 ``YYYY-MM-DD`` in ASCII
datetime   ``datetime.isoformat()`` in ASCII; an offset is kept, naive stays naive
time       ``time.isoformat()`` in ASCII
binary     the bytes themselves
json       compact JSON (``,`` and ``:`` separators, key order kept) in UTF-8
=========  =====================================================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from encmigrate.errors import ValueTypeError

__all__ = ["CODECS", "JSON_NULL", "TYPE_NAMES", "Codec", "codec_for"]

_FLOAT = struct.Struct(">d")


@dataclass(frozen=True, slots=True)
class Codec:
    """Encoder and decoder of one field type.

    ``encode`` raises :class:`ValueTypeError` for a value of the wrong Python
    type, naming the types only; so does :meth:`decode` for bytes that are not
    an encoding of the type. ``parse`` is ``decode`` without that wrapping:
    its errors may quote the bytes (``Invalid isoformat string: '...'``), so
    only callers that replace every exception with their own may use it (the
    ciphers do, on their per-value paths).

    ``tag`` is the name bound into format-2 envelopes (docs/FORMAT.md): the
    type name, except that types sharing an encoding share a tag (``text``
    is tagged ``string``, ``bigint`` is tagged ``integer``), so that widening
    a column from one to the other reads its values as they are.
    """

    name: str
    encode: Callable[[Any], bytes]
    parse: Callable[[bytes], Any]
    accepts: str
    tag: str
    bulk_encode: Callable[[Any], bytes] | None = None
    """A C-level encoder of the usual values, for batches: it may raise on others."""

    def decode(self, data: bytes) -> Any:
        """The value ``data`` encodes; :class:`ValueTypeError` (naming the type only) if none."""
        try:
            return self.parse(data)
        except Exception:
            error = ValueTypeError(f"{self.name} payload does not decode as a {self.name} value")
        # Raised outside the handler: the parser's exception, whose message can quote
        # the bytes, must not even ride along as ``__context__``.
        raise error

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"


def _refuse(type_name: str, accepts: str, value: object) -> ValueTypeError:
    return ValueTypeError(f"{type_name} field expects {accepts}, got {type(value).__name__}")


def _encode_string(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _refuse("string", "str", value)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        error = ValueTypeError("string field expects valid Unicode text (lone surrogate found)")
    raise error  # outside the handler: UnicodeEncodeError holds the whole text


# ``bytes.decode`` itself (UTF-8, strict): a C call per value on the batch paths, where a
# function of ours would add a Python frame to each string read.
_decode_string: Callable[[bytes], str] = bytes.decode


def _encode_integer(value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse("integer", "int", value)
    # Minimal length: -128 is one byte 0x80, not 0xff80 (``~value`` for negatives, since the
    # bit length of abs(value) overcounts by one at negative powers of two).
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def _decode_integer(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _encode_float(value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise _refuse("float", "float", value)
    try:
        # float() first: struct.pack turns float()'s OverflowError into a bare struct.error.
        return _FLOAT.pack(float(value))
    except OverflowError:
        raise ValueTypeError("float field: integer too large for a 64-bit float") from None


def _decode_float(data: bytes) -> float:
    value: float = _FLOAT.unpack(data)[0]
    return value


def _encode_numeric(value: Any) -> bytes:
    if type(value) is decimal.Decimal:  # the usual case, without a copy
        return str(value).encode("ascii")
    if isinstance(value, bool) or not isinstance(value, decimal.Decimal | int):
        raise _refuse("numeric", "Decimal or int (a float is inexact)", value)
    return str(decimal.Decimal(value)).encode("ascii")


def _decode_numeric(data: bytes) -> decimal.Decimal:
    return decimal.Decimal(data.decode("ascii"))


def _encode_boolean(value: Any) -> bytes:
    if not isinstance(value, bool):
        raise _refuse("boolean", "bool", value)
    return b"\x01" if value else b"\x00"


def _decode_boolean(data: bytes) -> bool:
    if data == b"\x01":
        return True
    if data == b"\x00":
        return False
    raise ValueError("boolean payload must be one byte 0x00 or 0x01")


def _encode_date(value: Any) -> bytes:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise _refuse("date", "datetime.date (not a datetime)", value)
    return value.isoformat().encode("ascii")


def _decode_date(data: bytes) -> dt.date:
    return dt.date.fromisoformat(data.decode("ascii"))


def _whole_second_offset(type_name: str, value: dt.datetime | dt.time) -> None:
    """Refuse a UTC offset with a fraction of a second.

    No real zone has one, and ``fromisoformat`` reads some of them back wrong
    (``+00:00:00.000001`` comes back as UTC), so they could not round-trip.
    """
    offset = value.utcoffset()
    if offset is not None and offset.microseconds:
        raise ValueTypeError(f"{type_name} field: a UTC offset must be a whole number of seconds")


def _encode_datetime(value: Any) -> bytes:
    if not isinstance(value, dt.datetime):
        raise _refuse("datetime", "datetime.datetime", value)
    _whole_second_offset("datetime", value)
    return value.isoformat().encode("ascii")


def _decode_datetime(data: bytes) -> dt.datetime:
    return dt.datetime.fromisoformat(data.decode("ascii"))


def _encode_time(value: Any) -> bytes:
    if not isinstance(value, dt.time):
        raise _refuse("time", "datetime.time", value)
    _whole_second_offset("time", value)
    return value.isoformat().encode("ascii")


def _decode_time(data: bytes) -> dt.time:
    return dt.time.fromisoformat(data.decode("ascii"))


def _encode_binary(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _refuse("binary", "bytes", value)
    return bytes(value)


def _decode_binary(data: bytes) -> bytes:
    return bytes(data)


class _JsonNull:
    """A JSON ``null`` stored in a column (not SQL NULL): encrypted as the text ``null``.

    Python reads both as None, so the migrator hands this marker over when the
    column's text says ``null``; decrypting gives None back.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL: Any = _JsonNull()


def _encode_json(value: Any) -> bytes:
    if value is JSON_NULL:
        return b"null"
    if value is None or not isinstance(value, dict | list | str | int | float):
        raise _refuse("json", "a JSON value (dict, list, str, number, bool)", value)
    # The errors are raised outside their handlers: json's messages, and the text a
    # UnicodeEncodeError holds, can quote the value; ours must not, not even as __context__.
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        error = ValueTypeError("json field expects valid Unicode text (lone surrogate found)")
    except (TypeError, ValueError) as exc:
        error = ValueTypeError(f"json field: value is not JSON-serialisable ({type(exc).__name__})")
    raise error


def _decode_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def _codec(
    name: str,
    encode: Callable[[Any], bytes],
    parse: Callable[[bytes], Any],
    accepts: str,
    tag: str | None = None,
) -> Codec:
    # str.encode raises TypeError on anything but a str (a str subclass encodes alike)
    # and UnicodeEncodeError on a lone surrogate, as _encode_string refuses both.
    bulk = str.encode if encode is _encode_string else None
    return Codec(
        name=name, encode=encode, parse=parse, accepts=accepts, tag=tag or name, bulk_encode=bulk
    )


CODECS: dict[str, Codec] = {
    "string": _codec("string", _encode_string, _decode_string, "str"),
    "text": _codec("text", _encode_string, _decode_string, "str", tag="string"),
    "integer": _codec("integer", _encode_integer, _decode_integer, "int"),
    "bigint": _codec("bigint", _encode_integer, _decode_integer, "int", tag="integer"),
    "float": _codec("float", _encode_float, _decode_float, "float"),
    "numeric": _codec("numeric", _encode_numeric, _decode_numeric, "Decimal"),
    "boolean": _codec("boolean", _encode_boolean, _decode_boolean, "bool"),
    "date": _codec("date", _encode_date, _decode_date, "datetime.date"),
    "datetime": _codec("datetime", _encode_datetime, _decode_datetime, "datetime.datetime"),
    "time": _codec("time", _encode_time, _decode_time, "datetime.time"),
    "binary": _codec("binary", _encode_binary, _decode_binary, "bytes"),
    "json": _codec("json", _encode_json, _decode_json, "dict or list"),
}

TYPE_NAMES: tuple[str, ...] = tuple(CODECS)


def codec_for(type_name: str) -> Codec:
    """The codec for a type name, or ``ValueError`` naming the valid ones."""
    found = CODECS.get(type_name) if isinstance(type_name, str) else None
    if found is None:
        # The name given is not repeated: a misplaced argument could be a value.
        raise ValueError(f"type must be one of {', '.join(TYPE_NAMES)}")
    return found
