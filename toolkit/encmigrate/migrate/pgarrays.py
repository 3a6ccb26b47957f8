"""One-dimensional ``bytea[]`` and ``text[]`` parameters in PostgreSQL's binary array format.

psycopg dumps a Python list element by element through its generic array
dumper, written in Python: for a batch of 1,000 rows and three shadow columns
that was a sixth of the migrator's client time (cProfile, bench/bench_migrate.py).
Our arrays are simple: one dimension, elements that are already bytes (or
short ASCII text such as ctids), NULLs allowed. A psycopg ``Dumper`` registered
for the two wrapper types below frames them with two ``struct`` calls and one
``bytes.join`` (the format is the server's ``array_send``: a header, then a
length-prefixed value or -1 per element).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg.adapt import AdaptersMap

__all__ = ["ByteaArray", "TextArray", "register"]

_BYTEA_OID = 17
_BYTEA_ARRAY_OID = 1001
_TEXT_OID = 25
_TEXT_ARRAY_OID = 1009

_HEADER = struct.Struct("!iiIii")  # ndim, has-nulls flag, element oid, length, lower bound
_NULL = b"\xff\xff\xff\xff"
_length = struct.Struct("!i").pack


class ByteaArray(list[bytes | None]):
    """A list sent as one binary ``bytea[]`` parameter."""


class TextArray(list[str | None]):
    """A list sent as one binary ``text[]`` parameter (UTF-8 elements)."""


def _frame(values: Sequence[bytes | None], element_oid: int) -> bytes:
    if not values:
        return struct.pack("!iiI", 0, 0, element_oid)
    parts: list[bytes] = [b""]
    append = parts.append
    nulls = 0
    for value in values:
        if value is None:
            append(_NULL)
            nulls = 1
        else:
            append(_length(len(value)))
            append(value)
    parts[0] = _HEADER.pack(1, nulls, element_oid, len(values), 1)
    return b"".join(parts)


@functools.cache
def _dumpers() -> tuple[type, type]:
    """The two dumper classes (psycopg is imported on first use, not with this module)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class ByteaArrayDumper(Dumper):
        format = Format.BINARY
        oid = _BYTEA_ARRAY_OID

        def dump(self, obj: Any) -> bytes:
            return _frame(obj, _BYTEA_OID)

    class TextArrayDumper(Dumper):
        format = Format.BINARY
        oid = _TEXT_ARRAY_OID

        def dump(self, obj: Any) -> bytes:
            return _frame([None if v is None else v.encode() for v in obj], _TEXT_OID)

    return ByteaArrayDumper, TextArrayDumper


def register(adapters: AdaptersMap) -> None:
    """Use the dumpers above for :class:`ByteaArray` and :class:`TextArray` parameters."""
    bytea_dumper, text_dumper = _dumpers()
    adapters.register_dumper(ByteaArray, bytea_dumper)
    adapters.register_dumper(TextArray, text_dumper)
